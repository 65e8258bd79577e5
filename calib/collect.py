"""`zipvlm calib collect`: sample N distinct frames from a source into a frame set.

- A video file (known length): evenly spaced frame numbers, read in order with
  grab/retrieve, so every codec gives exactly those frames and the same ones twice.
- An image folder: evenly spaced files in name order.
- A live source (camera, URL, GStreamer, `synthetic`): frames at least --every seconds
  apart as they arrive, until N distinct ones are kept.

Near-duplicates are dropped: a frame whose 32x32 grayscale thumbnail differs from an
already kept frame's by a mean absolute difference below --min-diff (0..255 scale)
is skipped. When a file or folder has duplicates, the grid of candidates is refined
(2N, 4N, ... evenly spaced) until N distinct frames exist, then N of them are taken
evenly; a source with fewer than N distinct frames is an error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from zipvlm.bundle.errors import ArgumentError, ZipvlmError
from zipvlm.bundle.format import sha256_file
from zipvlm.calib.frames import (
    FRAMES_MANIFEST,
    Frame,
    is_frame_set,
    png_bytes,
    sha256_bytes,
    write_frame_manifest,
)
from zipvlm.runtime.sources import END, FolderReader, OpenCVReader, SourceSpec, open_reader, parse_source

log = logging.getLogger("zipvlm.calib")

THUMBNAIL = 32  # side of the gray thumbnail compared for near-duplicates
DEFAULT_MIN_DIFF = 1.5  # mean |difference| of thumbnails, 0..255; below it, a duplicate
DEFAULT_EVERY = 1.0  # live sources: seconds between candidate frames
LIVE_CANDIDATES_PER_FRAME = 10  # a live source gets 10 x N candidates to give N distinct frames
FRAME_NAME = re.compile(r"frame_\d{5}\.png")


class TooFewFramesError(ZipvlmError):
    """The source has fewer distinct frames than were asked for."""


@dataclass(frozen=True)
class CollectOptions:
    source: str  # SRC as `zipvlm stream` takes it
    frames: int  # N distinct frames wanted
    out: Path  # frame-set directory
    every: float | None = None  # live sources only: seconds between candidates (None: 1 s)
    min_diff: float = DEFAULT_MIN_DIFF

    def validate(self, spec: SourceSpec) -> None:
        if self.frames < 1:
            raise ArgumentError(f"--frames must be at least 1, got {self.frames}")
        if self.min_diff < 0:
            raise ArgumentError(f"--min-diff must not be negative, got {self.min_diff}")
        if self.every is not None:
            if spec.kind in ("file", "folder"):
                raise ArgumentError(
                    f"--every applies to live sources; a {spec.kind} is sampled evenly over its whole length"
                )
            if self.every < 0:
                raise ArgumentError(f"--every must not be negative, got {self.every}")


@dataclass(frozen=True)
class CollectResult:
    out: Path
    frames: int  # frames in the set
    candidates: int  # frames looked at
    written: int  # PNGs written (the others were already there, byte-identical)


class Deduplicator:
    """Keeps the thumbnails of accepted frames; rejects frames too close to any of them."""

    def __init__(self, min_diff: float):
        self.min_diff = min_diff
        self.kept: list[np.ndarray] = []

    def accept(self, image: np.ndarray) -> bool:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(gray, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA).astype(np.float32)
        if self.kept:
            diffs = np.abs(np.stack(self.kept) - thumb).mean(axis=(1, 2))
            if diffs.min() < self.min_diff:
                return False
        self.kept.append(thumb)
        return True


def usable(image: np.ndarray | None) -> bool:
    return image is not None and image.ndim == 3 and image.shape[2] == 3 and image.size > 0


def collect(options: CollectOptions) -> CollectResult:
    """Write the frame set; raise ZipvlmError (one line) on a bad source or too few frames."""
    spec = parse_source(options.source)
    options.validate(spec)
    prepare_out(options.out)
    if spec.kind in ("file", "folder"):
        return _collect_even(spec, options)
    return _collect_live(spec, options)


def sampling_rule(spec: SourceSpec, options: CollectOptions) -> dict[str, Any]:
    """The manifest's account of how the frames were picked."""
    rule = {
        "source_kind": spec.kind,
        "requested": options.frames,
        "dedup": f"mean |diff| of {THUMBNAIL}x{THUMBNAIL} gray thumbnails < min_diff",
        "min_diff": options.min_diff,
    }
    if spec.kind in ("file", "folder"):
        return {"rule": "evenly spaced over the source; grid refined 2x until N distinct", **rule}
    every = DEFAULT_EVERY if options.every is None else options.every
    return {"rule": "live: frames at least every_s apart as they arrive", "every_s": every, **rule}


# --- files and folders: evenly spaced ------------------------------------------------------------


class IndexedSource:
    """Random access by position: frame numbers of a video file, or files of a folder."""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        if spec.kind == "folder":
            reader = FolderReader(spec)
            reader.open()  # SourceLost (one line) if empty or missing
            self.files = reader.files
            self.length = len(self.files)
        else:
            self.length = _frame_count(spec)

    def read(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray | None]]:
        """(index, image or None) for ascending `indices`."""
        if self.spec.kind == "folder":
            for index in indices:
                yield index, cv2.imread(str(self.files[index]), cv2.IMREAD_COLOR)
            return
        reader = OpenCVReader(self.spec)
        reader.open()
        capture, position = reader.opened, 0
        try:
            for index in indices:
                while position < index and capture.grab():  # decode only; no colour conversion
                    position += 1
                ok = position == index and capture.grab()
                position += ok
                yield index, capture.retrieve()[1] if ok else None
                if not ok:
                    return  # the file is shorter than its header said
        finally:
            reader.close()


def _frame_count(spec: SourceSpec) -> int:
    """The file's frame count from its header, or by reading it through when the header has none."""
    reader = OpenCVReader(spec)
    reader.open()
    try:
        count = int(reader.opened.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            count = 0
            while reader.opened.grab():
                count += 1
        return count
    finally:
        reader.close()


def even_indices(length: int, count: int) -> list[int]:
    """`count` positions spread evenly over 0..length-1, first and last included, no repeats."""
    return sorted(set(np.linspace(0, length - 1, min(count, length)).round().astype(int).tolist()))


def _distinct(source: IndexedSource, indices: list[int], min_diff: float) -> list[int]:
    dedup = Deduplicator(min_diff)
    scan = tqdm(
        source.read(indices),
        total=len(indices),
        desc=f"scan {len(indices)} candidates",
        unit="frame",
        disable=None,
        leave=False,
    )
    return [index for index, image in scan if usable(image) and dedup.accept(image)]


def _collect_even(spec: SourceSpec, options: CollectOptions) -> CollectResult:
    source = IndexedSource(spec)
    wanted, grid = options.frames, options.frames
    while True:
        candidates = even_indices(source.length, grid)
        distinct = _distinct(source, candidates, options.min_diff)
        if len(distinct) >= wanted or len(candidates) >= source.length:
            break
        log.debug("%d of %d candidates distinct; refining to %d", len(distinct), len(candidates), grid * 2)
        grid *= 2
    if len(distinct) < wanted:
        raise TooFewFramesError(
            f"{spec.describe()} has only {len(distinct)} distinct usable frames of {source.length} "
            f"(near-duplicates: thumbnail diff < {options.min_diff}), {wanted} requested: "
            "lower --frames or --min-diff, or use a longer source"
        )
    chosen = [distinct[i] for i in even_indices(len(distinct), wanted)]
    frames, written = _write_frames(options.out, source.read(chosen), len(chosen))
    return _finish(options, spec, frames, written, len(candidates))


# --- live sources: spaced in time ------------------------------------------------------------------


class LiveSampler:
    """Distinct frames of a live source, at least `every` seconds apart, up to a candidate limit."""

    def __init__(self, reader, options: CollectOptions):
        self.reader = reader
        self.wanted = options.frames
        self.every = DEFAULT_EVERY if options.every is None else options.every
        self.limit = LIVE_CANDIDATES_PER_FRAME * options.frames
        self.dedup = Deduplicator(options.min_diff)
        self.candidates = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        last, kept, count = -np.inf, 0, 0
        while kept < self.wanted and self.candidates < self.limit:
            image = self.reader.read()
            if image is END:
                return
            count += 1
            if time.monotonic() - last < self.every or not usable(image):
                continue
            last = time.monotonic()
            self.candidates += 1
            if self.dedup.accept(image):
                kept += 1
                yield count - 1, image


def _collect_live(spec: SourceSpec, options: CollectOptions) -> CollectResult:
    reader = open_reader(spec)
    reader.open()
    try:
        sampler = LiveSampler(reader, options)
        frames, written = _write_frames(options.out, iter(sampler), options.frames)
    finally:
        reader.close()
    if len(frames) < options.frames:
        raise TooFewFramesError(
            f"{spec.describe()} gave only {len(frames)} distinct frames in {sampler.candidates} "
            f"candidates, {options.frames} requested: lower --frames or --min-diff "
            "(or point the camera at a changing scene)"
        )
    return _finish(options, spec, frames, written, sampler.candidates)


# --- writing ---------------------------------------------------------------------------------------


def prepare_out(out: Path) -> None:
    """--out may be new, empty, a frame set, or the PNGs of an interrupted collect."""
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {out} exists and is not a directory")
    if out.is_dir() and not is_frame_set(out):
        others = [p.name for p in out.iterdir() if not FRAME_NAME.fullmatch(p.name)]
        if others:
            raise ArgumentError(
                f"--out {out} holds other files ({others[0]}, ...) and is not a "
                "frame set; choose a new directory"
            )
    out.mkdir(parents=True, exist_ok=True)


def _write_frames(
    out: Path, images: Iterator[tuple[int, np.ndarray | None]], total: int
) -> tuple[list[Frame], int]:
    """Write PNGs as they come, skipping files already there byte for byte (a resumed collect)."""
    (out / FRAMES_MANIFEST).unlink(missing_ok=True)  # a set that fails half way is no set
    frames: list[Frame] = []
    written = 0
    for index, image in tqdm(images, total=total, desc=f"write {out.name}", unit="frame", disable=None):
        if not usable(image):
            raise ZipvlmError(f"frame {index} could be read once but not again: the source changed")
        name = f"frame_{len(frames):05d}.png"
        data = png_bytes(image)
        digest = sha256_bytes(data)
        target = out / name
        if not (target.is_file() and sha256_file(target) == digest):
            target.write_bytes(data)
            written += 1
        frames.append(Frame(name, index, digest))
    return frames, written


def _finish(
    options: CollectOptions, spec: SourceSpec, frames: list[Frame], written: int, candidates: int
) -> CollectResult:
    """Drop PNGs of an earlier, larger set, then write the manifest."""
    names = {f.file for f in frames}
    for stale in options.out.iterdir():
        if FRAME_NAME.fullmatch(stale.name) and stale.name not in names:
            stale.unlink()
    sampling = {**sampling_rule(spec, options), "candidates": candidates}
    write_frame_manifest(options.out, options.source, sampling, frames)
    log.info(
        "%d frames (%d written, %d candidates) -> %s",
        len(frames),
        written,
        candidates,
        options.out / FRAMES_MANIFEST,
    )
    return CollectResult(options.out, len(frames), candidates, written)
