"""Ask a bundle about an image: preprocess, vision graph, prompt, generation, with per-stage timings.

Generation runs on onnxruntime-genai's "decoder-pipeline" (embed.onnx ->
decoder.onnx) with the image embeddings bound as `visual_embeds`. One generator
per image (a Session): genai binds extra inputs at the first `append_tokens` only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from zipvlm.runtime.backends import open_vision_runner
from zipvlm.runtime.bundle import load_manifest
from zipvlm.runtime.errors import ArgumentError, ZipvlmError
from zipvlm.runtime.prefix_cache import DirectDecoder, PrefixCachedGenerator
from zipvlm.runtime.preprocess import PreprocessSpec, preprocess
from zipvlm.runtime.prompt import PromptBuilder, PromptSpec
from zipvlm.runtime.providers import check_provider, genai_model

MAX_SESSION_CONTEXT = 4096  # default KV-cache size of a conversation, in tokens


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


@dataclass
class Answer:
    text: str
    token_ids: list[int]  # generated ids only
    num_image_tokens: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    prefill_tokens: int = 0  # tokens this answer's prefill ran (a follow-up: only its own)
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused instead of prefilled


def with_image_timings(answer_ms: dict[str, float], image_ms: dict[str, float]) -> dict[str, float]:
    """An answer's timings when its image(s) went through the vision graph beforehand: the
    preprocess and vision ms added, and the first token counted from before them."""
    timings = {**answer_ms, **{stage: round(ms, 2) for stage, ms in image_ms.items()}}
    timings["first_token"] = round(answer_ms["first_token"] + sum(image_ms.values()), 2)
    return timings


def read_image(path: Path) -> np.ndarray:
    """An image file as OpenCV decodes it (BGR, gray or BGRA), 8-bit."""
    if not Path(path).is_file():
        raise ZipvlmError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ZipvlmError(f"cannot read {path} as an image (not an image file, or a format "
                          "OpenCV cannot decode)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    return image


class BundlePipeline:
    """A loaded bundle: sessions are created once and reused for every question."""

    def __init__(self, bundle: Path, threads: int = 2, provider: str = "cpu", backend: str = "ort",
                 target: str | None = None, vision_graph: str = "float"):
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise ZipvlmError("onnxruntime-genai is not installed: pip install onnxruntime-genai "
                              "(on Jetson build it from source or use a jetson-containers image)"
                              ) from None
        self._og = og
        check_provider(og, provider)
        manifest = load_manifest(bundle)
        self.manifest = manifest
        self.num_image_tokens = manifest["visionzip"]["num_image_tokens"]
        self.preprocess_spec = PreprocessSpec.from_manifest(manifest["preprocess"])
        self.prompts = PromptBuilder(bundle, PromptSpec(
            manifest["image_token_id"], self.num_image_tokens, manifest["chat_template"]))
        self.eos_ids = set(manifest["eos_token_ids"])
        self.vision = open_vision_runner(Path(bundle), backend, provider, threads, target, vision_graph)
        self.bundle, self.provider, self.threads = Path(bundle), provider, threads
        genai_config = json.loads((Path(bundle) / "genai_config.json").read_text())
        self.context_length = int(genai_config["model"]["context_length"])

    @cached_property
    def model(self):
        """genai's decoder pipeline, loaded at the first question that needs it (the stream
        does not: it runs the decoder itself, from a reused prompt prefix)."""
        return genai_model(self._og, self.bundle, self.provider)

    @cached_property
    def prefix_generator(self) -> PrefixCachedGenerator:
        """The decoder run by onnxruntime itself, reusing the KV cache of the prompt's prefix."""
        return PrefixCachedGenerator(DirectDecoder(self.bundle, self.provider, self.threads),
                                     self.prompts.spec.image_token_id, self.eos_ids)

    def prompt_ids(self, prompt: str | None, raw_prompt: str | None) -> list[int]:
        text = self.prompts.chat_text(prompt) if raw_prompt is None else raw_prompt
        return self.prompts.encode(text)

    def ask(self, image: np.ndarray, ids: list[int], options: GenerationOptions = GenerationOptions(),
            on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer one question (already tokenised) about one image."""
        return Session(self, image, options, context=len(ids) + options.max_new_tokens
                       ).ask_ids(ids, on_text)

    def embed_image(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Image embeddings (1, K, hidden) of one image, and the ms of preprocess and vision."""
        clock = time.perf_counter
        start = clock()
        pixels = preprocess(image, self.preprocess_spec)
        after_preprocess = clock()
        embeds = self.vision(pixels)
        return embeds, {"preprocess": (after_preprocess - start) * 1000,
                        "vision": (clock() - after_preprocess) * 1000}

    def generator(self, image_embeds: np.ndarray, options: GenerationOptions, context: int,
                  min_length: int = 0):
        """A genai generator with the image bound; genai keeps a pointer, so keep `visual`.

        `min_length` (total tokens) holds back end-of-sequence until then: the
        benchmark uses it to decode a fixed number of tokens from random weights.
        """
        og = self._og
        params = og.GeneratorParams(self.model)
        search = {"max_length": context, "min_length": min_length, "do_sample": False}
        if options.temperature > 0:
            search.update(do_sample=True, temperature=float(options.temperature),
                          top_p=float(options.top_p), top_k=0)
            if options.seed is not None:
                search["random_seed"] = int(options.seed)
        params.set_search_options(**search)
        generator = og.Generator(self.model, params)
        visual = np.ascontiguousarray(image_embeds, dtype=np.float32)
        generator.set_model_input("visual_embeds", visual)
        return generator, visual


class Session:
    """A conversation about one image: the KV cache of the image and earlier turns is kept.

    A follow-up prefills only its own tokens when the previous answer ended on the
    end-of-sequence token (genai then holds exactly the conversation so far). After
    an answer cut by --max-new-tokens genai's cache lacks the last sampled token, so
    the next turn re-prefills the whole conversation in a fresh generator instead.
    """

    def __init__(self, pipeline: BundlePipeline, image: np.ndarray | None,
                 options: GenerationOptions = GenerationOptions(), context: int | None = None,
                 image_embeds: np.ndarray | None = None):
        options.validate()
        self.pipeline = pipeline
        self.options = options
        # Tokens the KV cache is sized for: genai allocates it once per generator.
        self.context = min(context or MAX_SESSION_CONTEXT, pipeline.context_length)
        self.image = image
        # (images, K, hidden); given, or computed from `image` at the first question
        self.image_embeds = image_embeds
        self.history: list[int] = []  # every token of the conversation so far
        self._generator = None
        self._visual = None  # keeps genai's visual_embeds buffer alive
        self._cache_is_current = False

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Answer:
        """The first question gets the image and the chat template; later ones continue it."""
        prompts = self.pipeline.prompts
        images = 1 if self.image_embeds is None else len(self.image_embeds)
        ids = (prompts.encode(prompts.chat_text(question, images), images) if not self.history
               else prompts.continuation(question))
        return self.ask_ids(ids, on_text)

    def ask_ids(self, ids: list[int], on_text: Callable[[str], None] | None = None) -> Answer:
        pipeline, clock = self.pipeline, time.perf_counter
        start = clock()
        timings = {"preprocess": 0.0, "vision": 0.0}
        if self.image_embeds is None:
            self.image_embeds, timings = pipeline.embed_image(self.image)
        if len(self.history) + len(ids) + self.options.max_new_tokens > self.context:
            raise ArgumentError(f"the conversation would exceed its {self.context}-token context")
        feed = ids
        if not self._cache_is_current:
            self._generator, self._visual = pipeline.generator(self.image_embeds, self.options,
                                                               self.context)
            feed = self.history + ids
        before_prefill = clock()
        self._generator.append_tokens(np.asarray(feed, dtype=np.int32))
        after_prefill = clock()
        tokens, ended_on_eos, first_token = self._decode(on_text)
        end = clock()
        self.history += ids + tokens
        self._cache_is_current = ended_on_eos
        first_token = first_token or end
        timings.update(
            prefill=(after_prefill - before_prefill) * 1000,
            first_token=(first_token - start) * 1000,
            decode_tokens_per_s=(len(tokens) - 1) / (end - first_token) if len(tokens) > 1 else 0.0,
        )
        text = pipeline.prompts.tokenizer.decode(tokens, skip_special_tokens=True)
        images, per_image = self.image_embeds.shape[:2]
        return Answer(text, tokens, images * per_image,
                      {k: round(v, 2) for k, v in timings.items()}, prefill_tokens=len(feed))

    def _decode(self, on_text: Callable[[str], None] | None) -> tuple[list[int], bool, float | None]:
        """Generate up to max_new_tokens; returns (tokens, ended on EOS, first-token time)."""
        generator, tokenizer = self._generator, self.pipeline.prompts.tokenizer
        tokens: list[int] = []
        streamed, first_token = "", None
        while len(tokens) < self.options.max_new_tokens:
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            first_token = first_token or time.perf_counter()
            if token in self.pipeline.eos_ids:
                return tokens, True, first_token
            tokens.append(token)
            if on_text is not None:
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                    on_text(text[len(streamed):])
                    streamed = text
            if generator.is_done():
                break
        if on_text is not None:
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if text != streamed:
                on_text(text[len(streamed):])
        return tokens, False, first_token
