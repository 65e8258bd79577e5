"""Generation from a reused prompt prefix: embed.onnx + decoder.onnx driven by onnxruntime itself.

The stream asks the same question frame after frame, and every prompt starts with
the same text before its first image (the system prompt, the opening of the user
turn). That prefix's KV cache is computed once and each frame prefills only what
follows it. genai cannot do this: it owns its cache and binds the image at the
first `append_tokens`, so a generation cannot start from a cache made earlier.
Here the past key/values are onnxruntime values handed from one call to the next
(on the provider's device), and the prefix's values are never written to, so one
prefix serves every frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from zipvlm.bundle.format import EMBED_GRAPH, MROPE_INPUT, Bundle
from zipvlm.runtime.generation import (
    Answer,
    GenerationOptions,
    TextStream,
    check_context,
    decode,
    generation_timings,
)
from zipvlm.runtime.mrope import RopePositions
from zipvlm.runtime.prompt import PromptBuilder
from zipvlm.runtime.providers import ort_session


@dataclass(frozen=True)
class KVCache:
    values: tuple  # onnxruntime OrtValues: past key/value of every layer, in the decoder's input order
    length: int  # tokens the cache holds


class DirectDecoder:
    """The bundle's embed.onnx and decoder.onnx as plain onnxruntime sessions."""

    def __init__(self, bundle: Bundle, provider: str = "cpu", threads: int = 2):
        import onnxruntime as ort

        contract = bundle.decoder
        self.context_length = contract.context_length
        # The decoder's attention op is not one TensorRT's provider takes: CUDA runs it.
        provider = "cuda" if provider == "tensorrt" else provider
        self.embed = ort_session(bundle.file(EMBED_GRAPH), provider, threads)
        self.decoder = ort_session(bundle.file(contract.filename), provider, threads)
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.past_names, self.present_names = contract.past_names, contract.present_names
        # Qwen2.5-VL's decoder takes 3D rotary positions; LLaVA's counts positions itself.
        self.takes_positions = MROPE_INPUT in {value.name for value in self.decoder.get_inputs()}
        empty = np.zeros((1, contract.num_kv_heads, 0, contract.head_size), np.float32)
        self.empty = KVCache(
            tuple(ort.OrtValue.ortvalue_from_numpy(empty, self.device, 0) for _ in self.past_names), 0
        )

    def forward(
        self, ids: Sequence[int], visual: np.ndarray, cache: KVCache, positions: RopePositions | None = None
    ) -> tuple[np.ndarray, KVCache]:
        """Prefill `ids` after `cache`: the logits of the last position (vocab,) and the longer
        cache. `visual` (images, K, hidden) fills the image-token positions of `ids`, in order;
        `positions` (the whole sequence's, a decoder with 3D positions only) places them."""
        embeds = self.embed.run(
            ["inputs_embeds"], {"input_ids": np.asarray([ids], np.int64), "visual_embeds": visual}
        )[0]
        binding = self.decoder.io_binding()
        binding.bind_cpu_input("inputs_embeds", embeds)
        binding.bind_cpu_input("attention_mask", np.ones((1, cache.length + len(ids)), np.int64))
        if self.takes_positions:
            if positions is None:
                raise ValueError("this decoder takes 3D positions: pass the sequence's RopePositions")
            span = positions.span(cache.length, cache.length + len(ids))[:, None, :]  # (3, 1, S)
            binding.bind_cpu_input(MROPE_INPUT, np.ascontiguousarray(span))
        for name, value in zip(self.past_names, cache.values, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device)
        self.decoder.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy()[0, -1], KVCache(tuple(present), cache.length + len(ids))


def next_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; otherwise a sample from the top-p nucleus of softmax(logits / T)."""
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    nucleus = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
    return int(rng.choice(nucleus, p=probs[nucleus] / probs[nucleus].sum()))


class PrefixCachedGenerator:
    """Answers prompts that share their text before the first image, prefilling that text once.

    The cache follows the prompt: a new question (the live page's prompt box) with
    another prefix is computed once more and then reused in its turn.
    """

    def __init__(self, decoder: DirectDecoder, prompts: PromptBuilder, eos_ids: set[int]):
        self.decoder = decoder
        self.prompts = prompts
        self.image_token_id = prompts.spec.image_token_id
        self.eos_ids = eos_ids
        self._prefix: tuple[int, ...] = ()
        self._prefix_cache = decoder.empty

    def prefix_cache(
        self, prefix: Sequence[int], visual: np.ndarray, positions: RopePositions | None = None
    ) -> tuple[KVCache, bool]:
        """The KV cache of `prefix` (image-free ids), and whether it was computed just now.

        Text before the first image sits at the same positions in every prompt (0, 1, 2, ...
        on every axis), so the cache is valid whatever images follow it."""
        if not prefix:
            return self.decoder.empty, False
        if tuple(prefix) == self._prefix:
            return self._prefix_cache, False
        _, self._prefix_cache = self.decoder.forward(prefix, visual, self.decoder.empty, positions)
        self._prefix = tuple(prefix)
        return self._prefix_cache, True

    def generate(
        self,
        ids: list[int],
        visual: np.ndarray,
        options: GenerationOptions,
        on_text: Callable[[str], None] | None = None,
        positions: RopePositions | None = None,
    ) -> Answer:
        """Up to `max_new_tokens` ids after `ids`, whose image tokens take the rows of `visual`
        (images, K, hidden); `positions` are the prompt's 3D positions where the bundle has them."""
        check_context(len(ids), options.max_new_tokens, self.decoder.context_length)
        visual = np.ascontiguousarray(visual, dtype=np.float32)
        split = ids.index(self.image_token_id) if self.image_token_id in ids else 0
        rng = np.random.default_rng(options.seed)
        start = time.perf_counter()
        cache, computed = self.prefix_cache(ids[:split], visual, positions)
        logits, cache = self.decoder.forward(ids[split:], visual, cache, positions)
        after_prefill = time.perf_counter()

        def advance(token: int) -> bool:
            nonlocal logits, cache
            logits, cache = self.decoder.forward([token], visual, cache, positions)
            return True

        decoded = decode(
            lambda: next_token(logits, options.temperature, options.top_p, rng),
            advance,
            options.max_new_tokens,
            self.eos_ids,
            TextStream(self.prompts.tokenizer, on_text),
        )
        cached = 0 if computed else split
        text = self.prompts.tokenizer.decode(decoded.token_ids, skip_special_tokens=True)
        return Answer(
            text,
            decoded.token_ids,
            visual.shape[0] * visual.shape[1],
            generation_timings(start, start, after_prefill, decoded),
            len(ids) - cached,
            cached,
        )
