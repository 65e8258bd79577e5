"""A loaded bundle: its vision backend, prompts and decoders, created once and reused.

`BundlePipeline` owns what every answering command needs: the verified `Bundle`,
the vision graph on the chosen backend, the prompt builder, and (lazily) the two
decoder drivers: onnxruntime-genai's pipeline for conversations, and onnxruntime
driven directly for the stream's reused prompt prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from zipvlm.bundle.errors import ArgumentError, ZipvlmError
from zipvlm.bundle.format import Bundle
from zipvlm.runtime.backends import open_vision_backend
from zipvlm.runtime.generation import DEFAULT_OPTIONS, Answer, GenerationOptions
from zipvlm.runtime.mrope import RopePositions, bundle_positions
from zipvlm.runtime.prefix_cache import DirectDecoder, PrefixCachedGenerator
from zipvlm.runtime.preprocess import pixel_values
from zipvlm.runtime.prompt import PromptBuilder
from zipvlm.runtime.providers import check_provider, genai_model


def read_image(path: Path) -> np.ndarray:
    """An image file as OpenCV decodes it (BGR, gray or BGRA), 8-bit."""
    if not Path(path).is_file():
        raise ZipvlmError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ZipvlmError(
            f"cannot read {path} as an image (not an image file, or a format OpenCV cannot decode)"
        )
    if image.dtype == np.uint16:
        image = np.right_shift(image, 8).astype(np.uint8)
    return image


@dataclass(frozen=True)
class EmbeddedImage:
    """One image through preprocessing and the vision graph."""

    embeds: np.ndarray  # (1, K, hidden)
    keep_indices: np.ndarray  # (1, D), or (1, V, D) per view: the tokens the graph kept
    preprocess_ms: float
    vision_ms: float


class BundlePipeline:
    """A loaded bundle: sessions are created once and reused for every question."""

    def __init__(
        self,
        bundle: Bundle,
        threads: int = 2,
        provider: str = "cpu",
        backend: str = "ort",
        target: str | None = None,
        vision_graph: str = "float",
    ):
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise ZipvlmError(
                "onnxruntime-genai is not installed: pip install onnxruntime-genai "
                "(on Jetson build it from source or use a jetson-containers image)"
            ) from None
        self._og = og
        check_provider(og, provider)
        self.bundle, self.provider, self.threads = bundle, provider, threads
        self.prompts = PromptBuilder(bundle)
        self.vision = open_vision_backend(bundle, backend, provider, threads, target, vision_graph)

    @classmethod
    def open(cls, path: Path, **options) -> BundlePipeline:
        """Open and verify the bundle at `path`, then load it."""
        return cls(Bundle.open(path), **options)

    @property
    def num_image_tokens(self) -> int:
        return self.bundle.selection.num_image_tokens

    @property
    def eos_ids(self) -> set[int]:
        return set(self.bundle.language.eos_token_ids)

    @property
    def context_length(self) -> int:
        return self.bundle.decoder.context_length

    @cached_property
    def model(self):
        """genai's decoder pipeline, loaded at the first question that needs it (the stream
        does not: it runs the decoder itself, from a reused prompt prefix)."""
        return genai_model(self._og, self.bundle.path, self.provider)

    @cached_property
    def prefix_generator(self) -> PrefixCachedGenerator:
        """The decoder run by onnxruntime itself, reusing the KV cache of the prompt's prefix."""
        return PrefixCachedGenerator(
            DirectDecoder(self.bundle, self.provider, self.threads), self.prompts, self.eos_ids
        )

    def prompt_ids(self, prompt: str | None, raw_prompt: str | None) -> list[int]:
        """Ids of a question (the chat template applied) or of a raw prompt (verbatim)."""
        if raw_prompt is not None:
            return self.prompts.encode(raw_prompt)
        if prompt is None:
            raise ArgumentError("give a question (--prompt) or a raw prompt (--raw-prompt)")
        return self.prompts.encode(self.prompts.chat_text(prompt))

    def ask(
        self,
        image: np.ndarray,
        ids: list[int],
        options: GenerationOptions = DEFAULT_OPTIONS,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer one question (already tokenised) about one image."""
        from zipvlm.runtime.conversation import Session

        return Session(self, image, options, context=len(ids) + options.max_new_tokens).ask_ids(ids, on_text)

    def embed_image(self, image: np.ndarray) -> EmbeddedImage:
        """One decoded image through preprocessing and the vision graph, timed."""
        clock = time.perf_counter
        start = clock()
        pixels = pixel_values(image, self.bundle)
        after_preprocess = clock()
        embeds, keep = self.vision(pixels)
        return EmbeddedImage(
            embeds, keep, (after_preprocess - start) * 1000, (clock() - after_preprocess) * 1000
        )

    def positions(self, ids: list[int], keep_indices: np.ndarray | None) -> RopePositions | None:
        """The 3D positions of a prompt about images whose `keep_indices` rows (images, D) are
        given in prompt order; None where the decoder counts positions itself (LLaVA)."""
        if self.bundle.qwen is None:
            return None
        if keep_indices is None:
            raise ValueError("a bundle with 3D positions needs the images' keep_indices")
        return bundle_positions(self.bundle, ids, list(keep_indices))

    def generator(
        self,
        image_embeds: np.ndarray,
        options: GenerationOptions,
        context: int,
        min_length: int = 0,
        positions: RopePositions | None = None,
    ) -> tuple[Any, tuple[np.ndarray, ...]]:
        """A genai generator with the image (and the prompt's 3D positions) bound, and the
        arrays bound to it: genai keeps pointers to them, so keep them alive with it.

        `min_length` (total tokens) holds back end-of-sequence until then: the
        benchmark uses it to decode a fixed number of tokens from random weights.
        """
        og = self._og
        params = og.GeneratorParams(self.model)
        search: dict[str, Any] = {"max_length": context, "min_length": min_length, "do_sample": False}
        if options.temperature > 0:
            search.update(
                do_sample=True, temperature=float(options.temperature), top_p=float(options.top_p), top_k=0
            )
            if options.seed is not None:
                search["random_seed"] = int(options.seed)
        params.set_search_options(**search)
        generator = og.Generator(self.model, params)
        inputs = {"visual_embeds": np.ascontiguousarray(image_embeds, dtype=np.float32)}
        if positions is not None:
            # positions.onnx: prompt tokens take these, later ones their index + rope_delta.
            inputs["prompt_positions"] = np.ascontiguousarray(positions.prompt[:, None, :], dtype=np.int64)
            inputs["rope_delta"] = np.array([[positions.rope_delta]], np.int64)
        for name, value in inputs.items():
            generator.set_model_input(name, value)
        return generator, tuple(inputs.values())
