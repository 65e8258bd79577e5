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

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zipvlm.runtime.errors import ArgumentError
from zipvlm.runtime.providers import ort_providers


@dataclass(frozen=True)
class KVCache:
    values: tuple  # onnxruntime OrtValues: past key/value of every layer, in the decoder's input order
    length: int  # tokens the cache holds


class DirectDecoder:
    """The bundle's embed.onnx and decoder.onnx as plain onnxruntime sessions."""

    def __init__(self, bundle: Path, provider: str = "cpu", threads: int = 2):
        import onnxruntime as ort

        config = json.loads((Path(bundle) / "genai_config.json").read_text())["model"]
        decoder = config["decoder"]
        self.context_length = int(config["context_length"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # The decoder's attention op is not one TensorRT's provider takes: CUDA runs it.
        providers = ort_providers("cuda" if provider == "tensorrt" else provider)
        self.embed = ort.InferenceSession(str(Path(bundle) / "embed.onnx"), options, providers=providers)
        self.decoder = ort.InferenceSession(str(Path(bundle) / decoder["filename"]), options,
                                            providers=providers)
        self.device = "cpu" if provider == "cpu" else "cuda"
        names = decoder["inputs"], decoder["outputs"]
        layers = range(decoder["num_hidden_layers"])
        self.past_names = [names[0][key] % i for i in layers
                           for key in ("past_key_names", "past_value_names")]
        self.present_names = [names[1][key] % i for i in layers
                              for key in ("present_key_names", "present_value_names")]
        empty = np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]), np.float32)
        self.empty = KVCache(tuple(ort.OrtValue.ortvalue_from_numpy(empty, self.device, 0)
                                   for _ in self.past_names), 0)

    def forward(self, ids: Sequence[int], visual: np.ndarray, cache: KVCache) -> tuple[np.ndarray, KVCache]:
        """Prefill `ids` after `cache`: the logits of the last position (vocab,) and the longer
        cache. `visual` (images, K, hidden) fills the image-token positions of `ids`, in order."""
        embeds = self.embed.run(["inputs_embeds"], {"input_ids": np.asarray([ids], np.int64),
                                                    "visual_embeds": visual})[0]
        binding = self.decoder.io_binding()
        binding.bind_cpu_input("inputs_embeds", embeds)
        binding.bind_cpu_input("attention_mask", np.ones((1, cache.length + len(ids)), np.int64))
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


@dataclass(frozen=True)
class Generated:
    token_ids: list[int]  # generated ids, end-of-sequence excluded
    timings_ms: dict[str, float]  # prefill, first_token (from the call), decode_tokens_per_s
    prefill_tokens: int  # prompt tokens this call prefilled (the prefix too, when it was new)
    cached_tokens: int  # prompt tokens taken from the prefix cache


class PrefixCachedGenerator:
    """Answers prompts that share their text before the first image, prefilling that text once.

    The cache follows the prompt: a new question (the live page's prompt box) with
    another prefix is computed once more and then reused in its turn.
    """

    def __init__(self, decoder: DirectDecoder, image_token_id: int, eos_ids: set[int]):
        self.decoder = decoder
        self.image_token_id = image_token_id
        self.eos_ids = eos_ids
        self._prefix: tuple[int, ...] = ()
        self._prefix_cache = decoder.empty

    def prefix_cache(self, prefix: Sequence[int], visual: np.ndarray) -> tuple[KVCache, bool]:
        """The KV cache of `prefix` (image-free ids), and whether it was computed just now."""
        if not prefix:
            return self.decoder.empty, False
        if tuple(prefix) == self._prefix:
            return self._prefix_cache, False
        _, self._prefix_cache = self.decoder.forward(prefix, visual, self.decoder.empty)
        self._prefix = tuple(prefix)
        return self._prefix_cache, True

    def generate(self, ids: list[int], visual: np.ndarray, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> Generated:
        """Up to `max_new_tokens` ids after `ids`, whose image tokens take the rows of `visual`."""
        if len(ids) + max_new_tokens > self.decoder.context_length:
            raise ArgumentError(f"the prompt ({len(ids)} tokens) and --max-new-tokens "
                                f"{max_new_tokens} exceed the decoder's {self.decoder.context_length}"
                                "-token context")
        visual = np.ascontiguousarray(visual, dtype=np.float32)
        split = ids.index(self.image_token_id) if self.image_token_id in ids else 0
        clock, rng = time.perf_counter, np.random.default_rng(seed)
        start = clock()
        cache, computed = self.prefix_cache(ids[:split], visual)
        logits, cache = self.decoder.forward(ids[split:], visual, cache)
        after_prefill = clock()
        tokens: list[int] = []
        first_token = None
        while len(tokens) < max_new_tokens:
            token = next_token(logits, temperature, top_p, rng)
            first_token = first_token or clock()
            if token in self.eos_ids:
                break
            tokens.append(token)
            if len(tokens) < max_new_tokens:
                logits, cache = self.decoder.forward([token], visual, cache)
        end = clock()
        first_token = first_token or end
        timings = {"prefill": (after_prefill - start) * 1000,
                   "first_token": (first_token - start) * 1000,
                   "decode_tokens_per_s": (len(tokens) - 1) / (end - first_token) if len(tokens) > 1
                   else 0.0}
        cached = 0 if computed else split
        return Generated(tokens, {k: round(v, 2) for k, v in timings.items()}, len(ids) - cached, cached)
