"""A frame set on disk: lossless PNG frames and a manifest that names where they came from.

Frames are stored as captured (BGR, the source's own size), not preprocessed: each
bundle applies its own preprocessing (runtime/preprocess.py) when it uses them, so
one frame set calibrates several bundles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.bundle.format import Bundle, sha256_file
from zipvlm.runtime.preprocess import pixel_values

FRAMES_MANIFEST = "manifest.json"
FRAMES_KIND = "zipvlm-frames"
FRAMES_VERSION = 1


class FrameSetError(ZipvlmError):
    """A frame set is missing, of another kind, or does not match its manifest."""


@dataclass(frozen=True)
class Frame:
    file: str  # PNG name inside the frame set
    index: int  # position in the source: frame number, file number or capture count
    sha256: str


@dataclass(frozen=True)
class FrameSet:
    root: Path
    source: str
    sampling: dict[str, Any]  # the rule and its parameters, as collect wrote them
    frames: tuple[Frame, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, frame: Frame) -> np.ndarray:
        """The frame as OpenCV decodes it: (H, W, 3) uint8 BGR."""
        image = cv2.imread(str(self.root / frame.file), cv2.IMREAD_COLOR)
        if image is None:
            raise FrameSetError(f"{self.root / frame.file} is not a readable image")
        return image

    def split(self, holdout: float) -> tuple[tuple[Frame, ...], tuple[Frame, ...]]:
        """(calibration, held-out): held-out frames are evenly spaced through the set.

        Spreading them over the whole source keeps both halves alike (no tail-only
        scenes); the rule depends only on the count, so it is deterministic.
        """
        if not 0 < holdout < 1:
            raise FrameSetError(f"--holdout must be between 0 and 1, got {holdout}")
        count = len(self.frames)
        wanted = max(1, round(holdout * count))
        if count - wanted < 1:
            raise FrameSetError(
                f"{self.root} has {count} frame(s): too few to keep {wanted} "
                "held out and calibrate on the rest; collect more frames"
            )
        held = set(np.linspace(0, count - 1, wanted).round().astype(int).tolist())
        calib = tuple(f for i, f in enumerate(self.frames) if i not in held)
        return calib, tuple(f for i, f in enumerate(self.frames) if i in held)

    def pixel_values(self, frames: tuple[Frame, ...], bundle: Bundle) -> Iterator[np.ndarray]:
        """The vision graph's input for each frame (batch 1), preprocessed as the bundle says."""
        for frame in frames:
            yield pixel_values(self.image(frame), bundle)


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding of a BGR frame (OpenCV's, deterministic for equal pixels)."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise FrameSetError(f"cannot encode a frame of shape {image.shape} as PNG")
    return data.tobytes()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_frame_manifest(root: Path, source: str, sampling: dict[str, Any], frames: list[Frame]) -> Path:
    body = {
        "kind": FRAMES_KIND,
        "version": FRAMES_VERSION,
        "source": source,
        "sampling": sampling,
        "count": len(frames),
        "frames": [vars(f) for f in frames],
    }
    path = root / FRAMES_MANIFEST
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def is_frame_set(root: Path) -> bool:
    try:
        return json.loads((root / FRAMES_MANIFEST).read_text()).get("kind") == FRAMES_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_frame_set(root: Path, verify_hashes: bool = True) -> FrameSet:
    """Read a frame set written by `zipvlm calib collect`; one clear line when it is unusable."""
    root = Path(root)
    path = root / FRAMES_MANIFEST
    if not root.is_dir():
        raise FrameSetError(f"frame set not found: {root} is not a directory")
    if not is_frame_set(root):
        raise FrameSetError(
            f"{root} is not a frame set (no {FRAMES_MANIFEST} of kind "
            f"'{FRAMES_KIND}'): write one with 'zipvlm calib collect'"
        )
    body = json.loads(path.read_text())
    if body.get("version") != FRAMES_VERSION:
        raise FrameSetError(
            f"{root} is frame-set version {body.get('version')!r}; this zipvlm "
            f"reads version {FRAMES_VERSION}: collect it again"
        )
    frames = tuple(Frame(**entry) for entry in body["frames"])
    if not frames:
        raise FrameSetError(f"{root} holds no frames")
    if verify_hashes:
        for frame in frames:
            file = root / frame.file
            if not file.is_file():
                raise FrameSetError(f"{root}: {frame.file} is listed in the manifest but missing")
            if sha256_file(file) != frame.sha256:
                raise FrameSetError(
                    f"{root}: {frame.file} does not match its sha256 (modified): collect the frame set again"
                )
    return FrameSet(root, body["source"], body["sampling"], frames)
