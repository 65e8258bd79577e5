"""What both decoder drivers share: options, timings, the context check and the decode loop.

Two drivers generate (docs/design.md, "Why two decoder drivers"): onnxruntime-genai's
decoder pipeline for run, chat and serve (runtime/conversation.py), and onnxruntime
driven directly for the stream, whose prompt prefix's KV cache is reused from frame
to frame (runtime/prefix_cache.py). Each supplies a `next_token` and an `advance`;
the loop, the end-of-sequence rule, streamed text and the timings are this module's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zipvlm.bundle.errors import ArgumentError


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ArgumentError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ArgumentError("--temperature must be >= 0 and --top-p in (0, 1]")


DEFAULT_OPTIONS = GenerationOptions()


class ContextLengthError(ArgumentError):
    """The prompt and the tokens asked for do not fit the decoder's context."""


def check_context(prompt_tokens: int, max_new_tokens: int, context_length: int, what: str = "prompt") -> None:
    """Refuse, before any prefill, a prompt whose answer could not fit the KV cache."""
    if prompt_tokens + max_new_tokens > context_length:
        raise ContextLengthError(
            f"the {what} ({prompt_tokens} tokens) plus {max_new_tokens} new tokens "
            f"exceed the {context_length}-token context"
        )


@dataclass(frozen=True)
class Timings:
    """Milliseconds per stage of one answer; decode in tokens per second."""

    preprocess: float = 0.0
    vision: float = 0.0
    prefill: float = 0.0
    first_token: float = 0.0  # from the start of the answer; with_image adds the image stages
    decode_tokens_per_s: float = 0.0
    frame_to_first_token: float | None = None  # stream: frame captured -> first token

    def with_image(self, preprocess: float, vision: float) -> Timings:
        """The timings of an answer whose image(s) went through the vision graph beforehand:
        their ms added, and the first token counted from before them."""
        return dataclasses.replace(
            self,
            preprocess=self.preprocess + preprocess,
            vision=self.vision + vision,
            first_token=self.first_token + preprocess + vision,
        )

    def to_json(self) -> dict[str, float]:
        return {
            name: round(value, 2) for name, value in dataclasses.asdict(self).items() if value is not None
        }


@dataclass
class Answer:
    text: str
    token_ids: list[int]  # generated ids only
    num_image_tokens: int
    timings: Timings = field(default_factory=Timings)
    prefill_tokens: int = 0  # tokens this answer's prefill ran (a follow-up: only its own)
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused instead of prefilled

    @property
    def timings_ms(self) -> dict[str, float]:
        return self.timings.to_json()


class TextStream:
    """Hands out the answer's text as it grows, never half of a multi-byte character."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.streamed = ""

    def update(self, tokens: list[int], final: bool = False) -> None:
        if self.on_text is None:
            return
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        # Every token is reported (the server checks its deadline there), finally only a rest.
        if (text != self.streamed) if final else not text.endswith("\ufffd"):
            self.on_text(text[len(self.streamed) :])
            self.streamed = text


@dataclass(frozen=True)
class Decoded:
    token_ids: list[int]  # end-of-sequence excluded
    ended_on_eos: bool
    first_token_at: float  # perf_counter() when the first token was sampled (the end if none)
    end: float


def decode(
    next_token: Callable[[], int],
    advance: Callable[[int], bool],
    max_new_tokens: int,
    eos_ids: set[int],
    text: TextStream,
) -> Decoded:
    """The decode loop of both drivers, after their prefill.

    `next_token()` samples from the current logits; `advance(token)` feeds the token
    back and returns False when the driver can go no further. The end-of-sequence
    token ends the answer and is not part of it.
    """
    tokens: list[int] = []
    first_token_at = None
    ended_on_eos = False
    while len(tokens) < max_new_tokens:
        token = next_token()
        first_token_at = first_token_at or time.perf_counter()
        if token in eos_ids:
            ended_on_eos = True
            break
        tokens.append(token)
        text.update(tokens)
        if len(tokens) < max_new_tokens and not advance(token):
            break
    text.update(tokens, final=True)
    end = time.perf_counter()
    return Decoded(tokens, ended_on_eos, first_token_at or end, end)


def generation_timings(
    start: float, prefill_start: float, after_prefill: float, decoded: Decoded, **image_ms: float
) -> Timings:
    """Prefill ms, first-token ms from `start` (the answer's start, before any image work the
    caller did, given in `image_ms`), and the decode rate after the first token."""
    generated = len(decoded.token_ids)
    rate = (generated - 1) / (decoded.end - decoded.first_token_at) if generated > 1 else 0.0
    return Timings(
        prefill=(after_prefill - prefill_start) * 1000,
        first_token=(decoded.first_token_at - start) * 1000,
        decode_tokens_per_s=rate,
        **image_ms,
    )
