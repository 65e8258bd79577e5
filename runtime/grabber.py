"""Capture in its own thread, keeping only the newest frame.

The stream loop takes the newest frame when it is ready for one; every frame
captured meanwhile and replaced before anyone took it is dropped and counted.
A lost source is reopened with capped exponential backoff (the frame it left
untaken is dropped: it is stale by then); after `max_attempts`
consecutive failed reopenings the grabber gives up and says why. A frame that is
not an 8-bit image (empty, wrong shape, wrong dtype) is skipped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.runtime.sources import END, FrameReader, SourceLost

log = logging.getLogger("zipvlm.stream")


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    index: int  # count of good frames before this one
    capture_time: float  # wall clock (time.time()) when it was read
    captured_at: float  # time.monotonic() when it was read, for ages

    def age_ms(self) -> float:
        return (time.monotonic() - self.captured_at) * 1000


@dataclass(frozen=True)
class RetryPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_attempts: int = 5  # consecutive failed openings before giving up

    def delay(self, attempt: int) -> float:
        """Seconds to wait before opening attempt `attempt` (1-based) after a loss."""
        return min(self.first_delay_s * 2 ** (attempt - 1), self.max_delay_s)


@dataclass
class CaptureStats:
    frames: int = 0  # good frames captured
    bad_frames: int = 0  # skipped: empty, wrong shape or dtype, undecodable
    dropped: int = 0  # captured, then replaced by a newer frame before being taken
    reconnects: int = 0  # successful reopenings after a loss


def is_image(frame: object) -> bool:
    """An 8-bit gray, BGR or BGRA image with at least one pixel."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.size == 0:
        return False
    return frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))


class FrameGrabber:
    """Runs a FrameReader in a daemon thread; `take()` hands out the newest frame once."""

    def __init__(self, reader: FrameReader, retry: RetryPolicy = RetryPolicy()):
        self.reader = reader
        self.retry = retry
        self.stats = CaptureStats()
        self.error: str | None = None  # why capture gave up, if it did
        self._latest: Frame | None = None
        self._taken = True  # the latest frame has been handed out
        self._finished = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zipvlm-capture", daemon=True)

    def start(self) -> FrameGrabber:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> FrameGrabber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not handed out yet; None once capture has ended (or on timeout)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._taken or self._finished, timeout)
            if self._taken:
                return None
            self._taken = True
            return self._latest

    def peek(self) -> Frame | None:
        """The newest frame, taken or not (for previews; does not count as taking it)."""
        with self._changed:
            return self._latest

    @property
    def finished(self) -> bool:
        return self._finished

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(image, self.stats.frames, time.time(), time.monotonic())
        with self._changed:
            if not self._taken:
                self.stats.dropped += 1
            self._latest, self._taken = frame, False
            self.stats.frames += 1
            self._changed.notify_all()

    def _discard_pending(self) -> None:
        """A frame from before a loss is stale by the time the source is back: drop it."""
        with self._changed:
            if not self._taken:
                self._taken = True
                self.stats.dropped += 1

    def _run(self) -> None:
        try:
            self._capture()
        except ZipvlmError as exc:  # e.g. a GStreamer pipeline on an OpenCV without GStreamer
            self.error = str(exc)
        finally:
            self.reader.close()
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def _capture(self) -> None:
        opened, lost, failures = False, False, 0
        while not self._stop.is_set():
            if not opened:
                try:
                    self.reader.open()
                except SourceLost as exc:
                    failures += 1
                    if failures > self.retry.max_attempts:
                        self.error = f"{exc}; gave up after {self.retry.max_attempts} retries"
                        return
                    delay = self.retry.delay(failures)
                    log.warning(
                        "%s; retrying in %.1f s (%d of %d)", exc, delay, failures, self.retry.max_attempts
                    )
                    self._stop.wait(delay)
                    continue
                opened, failures = True, 0
                if lost:
                    self.stats.reconnects += 1
                    log.warning("source reopened")
            try:
                image = self.reader.read()
            except SourceLost as exc:
                log.warning("%s", exc)
                self.reader.close()
                self._discard_pending()
                opened, lost = False, True
                continue
            if image is END:
                return
            if is_image(image):
                self._publish(image)
            else:
                self.stats.bad_frames += 1
