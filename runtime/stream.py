"""The stream loop: ask the same question about the newest frame, one inference at a time.

With a window of N (video mode) the compressed tokens of the last N sampled frames
are kept and asked about together, oldest first, as one multi-image prompt: each
frame runs through the vision graph once, and the prompt holds N x K image tokens.

Frames captured while an answer is being generated are dropped (the grabber
counts them); `every_s` paces questions. Each answer carries the frame's capture
time and its age when the answer was complete: how old the world it describes is.
A backend error on one frame is reported on that answer and the loop goes on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from zipvlm.bundle.errors import ArgumentError
from zipvlm.runtime.generation import Answer, GenerationOptions, Timings
from zipvlm.runtime.grabber import Frame, FrameGrabber
from zipvlm.runtime.pipeline import BundlePipeline, EmbeddedImage

FRAME_WAIT_S = 0.5  # how often a waiting loop checks for a stop request


@dataclass(frozen=True)
class StreamOptions:
    prompt: str
    every_s: float = 0.0  # minimum seconds between questions; 0: as fast as answers come
    max_frames: int | None = None  # stop after this many answers
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    window: int = 1  # frames asked about together (video mode)
    system: str | None = None  # system prompt: its KV cache is computed once for every frame

    def validate(self) -> None:
        self.generation.validate()
        if self.window < 1:
            raise ArgumentError(f"--window must be at least 1, got {self.window}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ArgumentError(f"--max-frames must be at least 1, got {self.max_frames}")
        if self.every_s < 0:
            raise ArgumentError(f"--every must not be negative, got {self.every_s}")


class FrameWindow:
    """The image embeddings of the last `size` sampled frames, and questions about them."""

    def __init__(self, pipeline: BundlePipeline, size: int, system: str | None = None):
        self.pipeline, self.system = pipeline, system
        self.frames: deque[np.ndarray] = deque(maxlen=size)  # (1, K, hidden) each, oldest first
        self.keeps: deque[np.ndarray] = deque(maxlen=size)  # (1, D) each: the frames' keep_indices

    def add(self, image: np.ndarray) -> EmbeddedImage:
        """Run one frame through preprocessing and the vision graph."""
        seen = self.pipeline.embed_image(image)
        self.frames.append(seen.embeds)
        self.keeps.append(seen.keep_indices)
        return seen

    def prompt_ids(self, question: str) -> list[int]:
        prompts, images = self.pipeline.prompts, len(self.frames)
        return prompts.encode(prompts.chat_text(question, images, self.system), images)

    def ask(self, question: str, options: GenerationOptions) -> Answer:
        """The question about the window's frames; the prompt's text before the first image
        comes from the KV cache every frame shares, so only the rest is prefilled."""
        ids = self.prompt_ids(question)
        positions = self.pipeline.positions(ids, np.concatenate(self.keeps))
        return self.pipeline.prefix_generator.generate(
            ids, np.concatenate(self.frames), options, positions=positions
        )

    def answer(
        self, frame: Frame, question: str, options: GenerationOptions, grabber: FrameGrabber
    ) -> StreamAnswer:
        """Add a frame and ask about the window; a failure becomes that answer's error."""
        waited_ms = frame.age_ms()  # captured -> taken
        try:
            seen = self.add(frame.image)
            answer = self.ask(question, options)
            timings = answer.timings.with_image(seen.preprocess_ms, seen.vision_ms)
            timings = dataclasses.replace(timings, frame_to_first_token=waited_ms + timings.first_token)
            text, tokens, cached, error = answer.text, answer.num_image_tokens, answer.cached_tokens, None
            keep = seen.keep_indices[0]
        except Exception as exc:  # noqa: BLE001 - one frame's failure must not end the stream
            text, tokens, cached, timings = "", self.pipeline.num_image_tokens * len(self.frames), 0, None
            error, keep = f"{type(exc).__name__}: {exc}", None
        return StreamAnswer(
            text,
            frame.index,
            frame.capture_time,
            frame.age_ms(),
            tokens,
            timings,
            grabber.stats.dropped,
            cached,
            error,
            question,
            keep,
        )


@dataclass
class StreamAnswer:
    text: str
    frame_index: int
    frame_time: float  # wall clock when the frame was captured
    frame_age_ms: float  # capture -> answer complete
    num_image_tokens: int
    timings: Timings | None  # None when the answer failed
    dropped_frames: int  # dropped by the grabber so far
    cached_prompt_tokens: int = 0  # prompt tokens taken from the shared prefix's KV cache
    error: str | None = None
    prompt: str = ""  # the question asked (the live page's prompt can change between frames)
    keep_indices: np.ndarray | None = None  # (D,), or (V, D) per view: tokens kept of this frame

    @property
    def timings_ms(self) -> dict[str, float]:
        return self.timings.to_json() if self.timings is not None else {}

    def to_json(self) -> dict:
        record = {
            "text": self.text,
            "frame_index": self.frame_index,
            "frame_time": round(self.frame_time, 3),
            "frame_age_ms": round(self.frame_age_ms, 1),
            "num_image_tokens": self.num_image_tokens,
            "timings_ms": self.timings_ms,
            "dropped_frames": self.dropped_frames,
            "cached_prompt_tokens": self.cached_prompt_tokens,
        }
        if self.error is not None:
            record["error"] = self.error
        return record

    def line(self) -> str:
        """One readable line: when the frame was taken, how old it is, the answer, the costs."""
        clock = time.strftime("%H:%M:%S", time.localtime(self.frame_time))
        head = f"[{clock} frame {self.frame_index} age {self.frame_age_ms:.0f} ms]"
        if self.error:
            return f"{head} error: {self.error}"
        t = self.timings_ms
        cached = f", {self.cached_prompt_tokens} prompt tokens cached" if self.cached_prompt_tokens else ""
        return (
            f"{head} {self.text!r}  ({self.num_image_tokens} image tokens{cached}, first token "
            f"{t['first_token']:.0f} ms, {t['decode_tokens_per_s']:.1f} tok/s, "
            f"{self.dropped_frames} dropped)"
        )


def stream_answers(
    pipeline: BundlePipeline,
    grabber: FrameGrabber,
    options: StreamOptions,
    stop: threading.Event,
    question: Callable[[], str] | None = None,
    model_lock: AbstractContextManager | None = None,
) -> Iterator[StreamAnswer]:
    """Answers until the source ends, `max_frames` answers were given, or `stop` is set.

    `question` gives each frame's prompt when it can change (the live page; default:
    the options' prompt); `model_lock` is held while a frame is answered when the
    pipeline is shared (the server's API requests).
    """
    options.validate()
    pipeline.prompts.chat_text(options.prompt, system=options.system)  # an empty prompt fails here
    question = question or (lambda: options.prompt)
    model_lock = model_lock or nullcontext()
    window = FrameWindow(pipeline, options.window, options.system)
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
        answered += 1
        with model_lock:
            answer = window.answer(frame, question(), options.generation, grabber)
        yield answer
