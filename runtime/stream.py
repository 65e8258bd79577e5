"""The stream loop: ask the same question about the newest frame, one inference at a time.

Frames captured while an answer is being generated are dropped (the grabber
counts them); `every_s` paces questions. Each answer carries the frame's capture
time and its age when the answer was complete: how old the world it describes is.
A backend error on one frame is reported on that answer and the loop goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from zipvlm.runtime.answer import BundlePipeline, GenerationOptions
from zipvlm.runtime.grabber import FrameGrabber

FRAME_WAIT_S = 0.5  # how often a waiting loop checks for a stop request


@dataclass(frozen=True)
class StreamOptions:
    prompt: str
    every_s: float = 0.0  # minimum seconds between questions; 0: as fast as answers come
    max_frames: int | None = None  # stop after this many answers
    generation: GenerationOptions = field(default_factory=GenerationOptions)


@dataclass
class StreamAnswer:
    text: str
    frame_index: int
    frame_time: float  # wall clock when the frame was captured
    frame_age_ms: float  # capture -> answer complete
    num_image_tokens: int
    timings_ms: dict[str, float]
    dropped_frames: int  # dropped by the grabber so far
    error: str | None = None

    def to_json(self) -> dict:
        record = {"text": self.text, "frame_index": self.frame_index,
                  "frame_time": round(self.frame_time, 3),
                  "frame_age_ms": round(self.frame_age_ms, 1), "num_image_tokens": self.num_image_tokens,
                  "timings_ms": self.timings_ms, "dropped_frames": self.dropped_frames}
        if self.error is not None:
            record["error"] = self.error
        return record


def stream_answers(pipeline: BundlePipeline, grabber: FrameGrabber, options: StreamOptions,
                   stop: threading.Event) -> Iterator[StreamAnswer]:
    """Answers until the source ends, `max_frames` answers were given, or `stop` is set."""
    options.generation.validate()
    ids = pipeline.prompt_ids(options.prompt, None)
    answered, next_question = 0, time.monotonic()
    while not stop.is_set() and (options.max_frames is None or answered < options.max_frames):
        if stop.wait(max(0.0, next_question - time.monotonic())):
            break
        frame = grabber.take(timeout=FRAME_WAIT_S)
        if frame is None:
            if grabber.finished:
                break
            continue
        next_question = time.monotonic() + options.every_s
        try:
            answer = pipeline.ask(frame.image, ids, options.generation)
            text, tokens, timings, error = answer.text, answer.num_image_tokens, answer.timings_ms, None
        except Exception as exc:  # noqa: BLE001 - one frame's failure must not end the stream
            text, tokens, timings = "", pipeline.num_image_tokens, {}
            error = f"{type(exc).__name__}: {exc}"
        answered += 1
        yield StreamAnswer(text, frame.index, frame.capture_time, frame.age_ms(), tokens, timings,
                           grabber.stats.dropped, error)
