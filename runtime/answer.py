"""Ask a bundle about an image: preprocess, vision graph, prompt, generation, with per-stage timings.

Generation runs on onnxruntime-genai's "decoder-pipeline" (embed.onnx ->
decoder.onnx) with the image embeddings bound as `visual_embeds`. One generator
per question: genai binds extra inputs at the first `append_tokens` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from zipvlm.runtime.bundle import load_manifest
from zipvlm.runtime.errors import ArgumentError, ZipvlmError
from zipvlm.runtime.preprocess import PreprocessSpec, preprocess
from zipvlm.runtime.prompt import PromptBuilder, PromptSpec


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

    def __init__(self, bundle: Path, threads: int = 2):
        import onnxruntime as ort

        try:
            import onnxruntime_genai as og
        except ImportError:
            raise ZipvlmError("onnxruntime-genai is not installed: pip install onnxruntime-genai "
                              "(on Jetson build it from source or use a jetson-containers image)"
                              ) from None
        self._og = og
        manifest = load_manifest(bundle)
        self.manifest = manifest
        self.num_image_tokens = manifest["visionzip"]["num_image_tokens"]
        self.preprocess_spec = PreprocessSpec.from_manifest(manifest["preprocess"])
        self.prompts = PromptBuilder(bundle, PromptSpec(
            manifest["image_token_id"], self.num_image_tokens, manifest["chat_template"]))
        self.eos_ids = set(manifest["eos_token_ids"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.vision = ort.InferenceSession(str(Path(bundle) / "vision.onnx"), options,
                                           providers=["CPUExecutionProvider"])
        self.model = og.Model(str(bundle))

    def prompt_ids(self, prompt: str | None, raw_prompt: str | None) -> list[int]:
        text = self.prompts.chat_text(prompt) if raw_prompt is None else raw_prompt
        return self.prompts.encode(text)

    def ask(self, image: np.ndarray, ids: list[int], options: GenerationOptions = GenerationOptions(),
            on_text: Callable[[str], None] | None = None) -> Answer:
        """Answer one question about one image; `on_text` receives text as it is generated."""
        options.validate()
        clock = time.perf_counter
        start = clock()
        pixels = preprocess(image, self.preprocess_spec)
        after_preprocess = clock()
        image_embeds = self.vision.run(["image_embeds"], {"pixel_values": pixels})[0]
        after_vision = clock()

        generator, keep_alive = self._generator(ids, image_embeds, options)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))  # prefill
        after_prefill = clock()
        tokens: list[int] = []
        streamed = ""
        first_token = None
        while not generator.is_done() and len(tokens) < options.max_new_tokens:
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            first_token = first_token or clock()
            if token in self.eos_ids:
                break
            tokens.append(token)
            if on_text is not None:
                text = self.prompts.tokenizer.decode(tokens, skip_special_tokens=True)
                if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                    on_text(text[len(streamed):])
                    streamed = text
        end = clock()
        del keep_alive
        first_token = first_token or end
        decode_seconds = end - first_token
        timings = {
            "preprocess": (after_preprocess - start) * 1000,
            "vision": (after_vision - after_preprocess) * 1000,
            "prefill": (after_prefill - after_vision) * 1000,
            "first_token": (first_token - start) * 1000,
            "decode_tokens_per_s": (len(tokens) - 1) / decode_seconds if len(tokens) > 1 else 0.0,
        }
        text = self.prompts.tokenizer.decode(tokens, skip_special_tokens=True)
        if on_text is not None and text != streamed:
            on_text(text[len(streamed):])
        return Answer(text, tokens, self.num_image_tokens,
                      {k: round(v, 2) for k, v in timings.items()})

    def _generator(self, ids: list[int], image_embeds: np.ndarray, options: GenerationOptions):
        og = self._og
        params = og.GeneratorParams(self.model)
        search = {"max_length": len(ids) + options.max_new_tokens, "do_sample": False}
        if options.temperature > 0:
            search.update(do_sample=True, temperature=float(options.temperature),
                          top_p=float(options.top_p), top_k=0)
            if options.seed is not None:
                search["random_seed"] = int(options.seed)
        params.set_search_options(**search)
        generator = og.Generator(self.model, params)
        visual = np.ascontiguousarray(image_embeds, dtype=np.float32)  # genai does not copy it
        generator.set_model_input("visual_embeds", visual)
        return generator, visual
