"""A source streamed through the bundle in the background, for the server's live page.

A thread answers the current (editable) prompt about the newest frame, one answer
at a time, sharing the model with the API's requests. The page gets a preview of
the newest frame with the patches VisionZip kept for the last answered frame
tinted, and every answer as it is complete.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from zipvlm.bundle.errors import ArgumentError
from zipvlm.runtime.grabber import FrameGrabber
from zipvlm.runtime.pipeline import BundlePipeline
from zipvlm.runtime.regions import kept_boxes
from zipvlm.runtime.stream import StreamAnswer, StreamOptions, stream_answers
from zipvlm.serve.overlay import draw_kept

JPEG_QUALITY = 80


class LiveFeed:
    """The stream loop in a thread, its prompt editable, its answers published to the page.

    `on_answer` (called in the feed's thread) lets `zipvlm stream --serve` print each
    answer as it is published.
    """

    def __init__(
        self,
        pipeline: BundlePipeline,
        grabber: FrameGrabber,
        options: StreamOptions,
        model_lock: threading.Lock,
        on_answer: Callable[[StreamAnswer], None] | None = None,
    ):
        options.validate()
        self.pipeline, self.grabber, self.options = pipeline, grabber, options
        self._model_lock = model_lock
        self._on_answer = on_answer
        self._prompt = self._checked(options.prompt)
        self._keep: np.ndarray | None = None  # kept token indices of the last answered frame
        self.answers: deque[dict] = deque(maxlen=50)  # newest last
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zipvlm-live", daemon=True)

    def start(self) -> LiveFeed:
        self.grabber.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.grabber.stop()

    @property
    def prompt(self) -> str:
        return self._prompt

    def set_prompt(self, prompt: object) -> None:
        self._prompt = self._checked(prompt)

    def _checked(self, prompt: object) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ArgumentError("the prompt is empty")
        self.pipeline.prompts.chat_text(prompt, system=self.options.system)  # the template may refuse it
        return prompt.strip()

    def frame_jpeg(self) -> bytes | None:
        """The newest frame with the last kept patches tinted, as JPEG."""
        frame = self.grabber.peek()
        if frame is None:
            return None
        image = frame.image
        if self._keep is not None:
            image = draw_kept(image, kept_boxes(self._keep, self.pipeline.bundle, *image.shape[:2]))
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return jpeg.tobytes() if ok else None

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=100)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = {(loop, q) for loop, q in self._subscribers if q is not queue}

    def _publish(self, record: dict) -> None:
        self.answers.append(record)
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(_offer, queue, json.dumps(record))

    def wait(self, stop: threading.Event) -> None:
        """Until the feed ends (the source ended, --max-frames answers) or `stop` is set."""
        while self._thread.is_alive() and not stop.wait(0.2):
            pass

    def _run(self) -> None:
        for result in stream_answers(
            self.pipeline,
            self.grabber,
            self.options,
            self._stop,
            question=lambda: self._prompt,
            model_lock=self._model_lock,
        ):
            if result.keep_indices is not None:
                self._keep = result.keep_indices
            summary = (
                f'"{result.prompt}" - frame {result.frame_index}, age {result.frame_age_ms:.0f} '
                f"ms, first token {result.timings_ms.get('first_token', 0):.0f} ms, "
                f"{result.dropped_frames} dropped"
            )
            self._publish(
                {
                    **result.to_json(),
                    "prompt": result.prompt,
                    "summary": summary,
                    "answered_at": round(time.time(), 3),
                }
            )
            if self._on_answer is not None:
                self._on_answer(result)


def _offer(queue: asyncio.Queue, item: str) -> None:
    """Put without blocking; a subscriber too slow to keep up misses answers, not the server."""
    if not queue.full():
        queue.put_nowait(item)
