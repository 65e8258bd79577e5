"""Frame sources: a camera index, a video file, an RTSP/HTTP URL, a GStreamer pipeline,
a folder of images, or `synthetic[:SEED]` (the scene world's moving camera, runtime/scene).

A reader opens a source and returns frames one by one, paced like the camera it
stands for: a file plays at its own frame rate, a folder and the synthetic
pattern at `fps`. `read()` gives a frame, END when a finite source is over, or
raises SourceLost when the device or connection failed (the grabber reopens it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from zipvlm.bundle.errors import ArgumentError, ZipvlmError
from zipvlm.runtime.scene.moving import SceneCamera

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://")
END = None  # read(): a finite source is over


class SourceLost(ZipvlmError):
    """The source stopped giving frames (unplugged camera, dropped stream, missing file)."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # camera | file | url | gstreamer | folder | synthetic
    target: str
    loop: bool = False  # files and folders: start again at the end
    fps: float = 30.0  # pace of folders and the synthetic camera (files use their own)

    def describe(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic scene {self.synthetic_seed}"
        return f"{self.kind} {self.target}"

    @property
    def synthetic_seed(self) -> int:
        """The scene world of `synthetic:SEED` (`synthetic` is world 0)."""
        return int(self.target.partition(":")[2] or 0)


def parse_source(text: str, loop: bool = False, fps: float = 30.0) -> SourceSpec:
    """What SRC names, decided from its form; one clear line when it names nothing."""
    if fps <= 0:
        raise ArgumentError(f"--fps must be positive, got {fps}")
    if text == "synthetic" or text.startswith("synthetic:"):
        seed = text.partition(":")[2]
        if text != "synthetic" and not seed.isdigit():
            raise ArgumentError(
                f"--source {text}: the synthetic scene's seed must be a number, e.g. synthetic:3"
            )
        return SourceSpec("synthetic", text, loop, fps)
    if text.isdigit():
        return SourceSpec("camera", text, loop, fps)
    if text.lower().startswith(URL_SCHEMES):
        return SourceSpec("url", text, loop, fps)
    if "!" in text:
        return SourceSpec("gstreamer", text, loop, fps)
    path = Path(text)
    if path.is_dir():
        return SourceSpec("folder", text, loop, fps)
    if path.is_file():
        return SourceSpec("file", text, loop, fps)
    raise ArgumentError(
        f"--source {text}: not a camera index, video file, image folder, "
        "rtsp/http URL, GStreamer pipeline (with '!') or 'synthetic[:SEED]'"
    )


class FrameReader(Protocol):
    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...


class Pacer:
    """Sleeps so that successive frames are 1/fps apart, as a real camera delivers them."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next = time.monotonic()

    def wait(self) -> None:
        # A late reader gets its frame at once and the next one a period later: no bursts.
        self.next = max(self.next + self.period, time.monotonic())
        delay = self.next - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class OpenCVReader:
    """cv2.VideoCapture on a camera, a file, a URL or a GStreamer pipeline."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.capture: cv2.VideoCapture | None = None
        self.pacer: Pacer | None = None

    def open(self) -> None:
        spec = self.spec
        if spec.kind == "gstreamer" and not _opencv_has("GStreamer"):
            raise ArgumentError(
                "--source is a GStreamer pipeline, but this OpenCV was built without "
                "GStreamer (on Jetson use the system python3-opencv or a "
                "jetson-containers image)"
            )
        if spec.kind == "file" and not Path(spec.target).is_file():
            raise SourceLost(f"video file {spec.target} is missing")
        # Our SourceLost says what failed; OpenCV's own warnings would only repeat it.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        backend = {"gstreamer": cv2.CAP_GSTREAMER, "camera": cv2.CAP_V4L2}.get(spec.kind, cv2.CAP_FFMPEG)
        target = int(spec.target) if spec.kind == "camera" else spec.target
        capture = cv2.VideoCapture(target, backend)
        if not capture.isOpened():
            capture.release()
            raise SourceLost(f"cannot open {spec.describe()}")
        self.capture = capture
        if spec.kind == "file":  # a file would otherwise be read as fast as it decodes
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.pacer = Pacer(fps if 0 < fps < 1000 else spec.fps)

    @property
    def opened(self) -> cv2.VideoCapture:
        """The open capture (SourceLost once closed)."""
        if self.capture is None:
            raise SourceLost(f"{self.spec.describe()} is not open")
        return self.capture

    def read(self) -> np.ndarray | None:
        if self.pacer:
            self.pacer.wait()
        ok, frame = self.opened.read()
        if ok:
            return frame
        if self.spec.kind == "file":
            if not self.spec.loop:
                return END
            self.close()
            self.open()  # from the start; SourceLost if the file went away
            ok, frame = self.opened.read()
            if ok:
                return frame
        raise SourceLost(f"{self.spec.describe()} stopped giving frames")

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


class FolderReader:
    """The images of a folder in name order; an unreadable file gives an empty frame."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.files: list[Path] = []
        self.position = 0
        self.pacer = Pacer(spec.fps)

    def open(self) -> None:
        folder = Path(self.spec.target)
        if not folder.is_dir():
            raise SourceLost(f"image folder {folder} is missing")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceLost(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.position = 0

    def read(self) -> np.ndarray | None:
        self.pacer.wait()
        if self.position == len(self.files):
            if not self.spec.loop:
                return END
            self.position = 0
        path = self.files[self.position]
        self.position += 1
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return frame if frame is not None else np.empty((0, 0, 3), np.uint8)

    def close(self) -> None:
        self.files = []


class SyntheticReader:
    """The scene world's moving camera (runtime/scene/moving.py): 640x480 BGR frames, frame i
    showing the scene at t = i / fps, so `scene(i)` is the truth behind the i-th frame read."""

    def __init__(self, spec: SourceSpec, height: int = 480, width: int = 640):
        self.pacer = Pacer(spec.fps)
        self.camera = SceneCamera(spec.synthetic_seed, spec.fps, width, height)
        self.scene = self.camera.scene
        self.count = 0

    def open(self) -> None:
        self.count = 0

    def read(self) -> np.ndarray | None:
        self.pacer.wait()
        frame = self.camera.frame(self.count)
        self.count += 1
        return frame

    def close(self) -> None:
        pass


def open_reader(spec: SourceSpec) -> FrameReader:
    if spec.kind == "synthetic":
        return SyntheticReader(spec)
    if spec.kind == "folder":
        return FolderReader(spec)
    return OpenCVReader(spec)


def _opencv_has(feature: str) -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith(f"{feature}:"):
            return "YES" in line
    return False
