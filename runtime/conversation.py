"""A conversation about one image on onnxruntime-genai's decoder pipeline (run, chat, serve).

Generation runs on genai's "decoder-pipeline" (embed.onnx -> decoder.onnx) with the
image embeddings bound as `visual_embeds`. One generator per conversation: genai
binds extra inputs at the first `append_tokens` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zipvlm.runtime.generation import (
    DEFAULT_OPTIONS,
    Answer,
    GenerationOptions,
    TextStream,
    check_context,
    decode,
    generation_timings,
)
from zipvlm.runtime.pipeline import BundlePipeline

MAX_SESSION_CONTEXT = 4096  # default KV-cache size of a conversation, in tokens


class Session:
    """A conversation about one image: the KV cache of the image and earlier turns is kept.

    A follow-up prefills only its own tokens when the previous answer ended on the
    end-of-sequence token (genai then holds exactly the conversation so far). After
    an answer cut by --max-new-tokens genai's cache lacks the last sampled token, so
    the next turn re-prefills the whole conversation in a fresh generator instead.
    """

    def __init__(
        self,
        pipeline: BundlePipeline,
        image: np.ndarray | None,
        options: GenerationOptions = DEFAULT_OPTIONS,
        context: int | None = None,
        image_embeds: np.ndarray | None = None,
        keep_indices: np.ndarray | None = None,
    ):
        options.validate()
        self.pipeline = pipeline
        self.options = options
        # Tokens the KV cache is sized for: genai allocates it once per generator.
        self.context = min(context or MAX_SESSION_CONTEXT, pipeline.context_length)
        self.image = image
        # (images, K, hidden) and (images, D); given, or computed from `image` at the first question
        self.image_embeds, self.keep_indices = image_embeds, keep_indices
        self.history: list[int] = []  # every token of the conversation so far
        self._generator: Any = None  # onnxruntime_genai.Generator
        self._bound: tuple[np.ndarray, ...] = ()  # keeps the arrays bound to the generator alive
        self._cache_is_current = False

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Answer:
        """The first question gets the image and the chat template; later ones continue it."""
        prompts = self.pipeline.prompts
        images = 1 if self.image_embeds is None else len(self.image_embeds)
        ids = (
            prompts.encode(prompts.chat_text(question, images), images)
            if not self.history
            else prompts.continuation(question)
        )
        return self.ask_ids(ids, on_text)

    def ask_ids(self, ids: list[int], on_text: Callable[[str], None] | None = None) -> Answer:
        pipeline = self.pipeline
        start = time.perf_counter()
        seen, embeds = None, self.image_embeds
        if embeds is None:
            assert self.image is not None, "a conversation holds an image or its embeddings"
            seen = pipeline.embed_image(self.image)
            embeds = self.image_embeds = seen.embeds
            self.keep_indices = seen.keep_indices
        check_context(len(self.history) + len(ids), self.options.max_new_tokens, self.context, "conversation")
        feed = ids
        if not self._cache_is_current:
            feed = self.history + ids
            positions = pipeline.positions(feed, self.keep_indices)
            self._generator, self._bound = pipeline.generator(
                embeds, self.options, self.context, positions=positions
            )
        before_prefill = time.perf_counter()
        generator = self._generator
        generator.append_tokens(np.asarray(feed, dtype=np.int32))
        after_prefill = time.perf_counter()

        def next_token() -> int:
            generator.generate_next_token()
            return int(generator.get_next_tokens()[0])

        decoded = decode(
            next_token,
            lambda _token: not generator.is_done(),
            self.options.max_new_tokens,
            pipeline.eos_ids,
            TextStream(pipeline.prompts.tokenizer, on_text),
        )
        self.history += ids + decoded.token_ids
        self._cache_is_current = decoded.ended_on_eos
        image_ms = {"preprocess": seen.preprocess_ms, "vision": seen.vision_ms} if seen else {}
        timings = generation_timings(start, before_prefill, after_prefill, decoded, **image_ms)
        text = pipeline.prompts.tokenizer.decode(decoded.token_ids, skip_special_tokens=True)
        images, per_image = embeds.shape[:2]
        return Answer(text, decoded.token_ids, images * per_image, timings, prefill_tokens=len(feed))
