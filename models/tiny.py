"""Tiny random-weight LLaVA folders, laid out exactly as a downloaded one.

Families name the tower, then the language model: CLIP + Llama (LLaVA-1.5 style,
feature layer -2, 'default' selection), SigLIP + Qwen2 (llava-interleave style,
feature layer -1, 'full' selection) and CLIP + Qwen2 (the benchmark's pairing);
Mistral as in LLaVA-NeXT-Mistral. The architecture is LLaVA-1.5's, LLaVA-NeXT's or
LLaVA-OneVision's (any-res views, the real pinpoints scaled to the view size).
The same factory writes real-size random folders for the benchmark.
Each folder has config.json, generation_config.json, model.safetensors, a real
fast tokenizer (tokenizer.json, `<image>` special) with a chat template, and
preprocessor/processor configs. Nothing is downloaded; the same seed gives the
same folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

# A family is "<tower>-<language model>"; the tests build the two upstream pairings.
TOWERS, LANGUAGE_MODELS = ("clip", "siglip"), ("llama", "qwen2", "mistral")
FAMILIES = ("clip-llama", "siglip-qwen2")
ARCHITECTURES = ("llava", "llava_next", "llava_onevision")
# Pinpoints in views (rows, cols): LLaVA-NeXT's five (336 px views) and OneVision's 36 (384 px).
NEXT_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))
ONEVISION_GRIDS = tuple((rows, cols) for rows in range(1, 7) for cols in range(1, 7))

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% elif message['role'] "
    "== 'assistant' %}ASSISTANT: {% endif %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A few sentences so byte-level BPE learns some merges; any text would do.
CORPUS = [
    "What is in the image? A robot arm picks up a red cup from the table.",
    "Describe the scene. A car stops at a crossing while people walk by.",
    "Is the door open? Yes, the door on the left is open and the light is on.",
    "How many boxes are on the shelf? There are three boxes and one bottle.",
] * 8


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny LLaVA; defaults give a 577-token CLIP / 576-token SigLIP tower."""

    family: str = "clip-llama"
    architecture: str = "llava"  # or "llava_next", "llava_onevision": any-res views
    image_size: int = 336
    patch_size: int = 14
    vision_width: int = 64
    vision_heads: int = 4
    vision_layers: int = 3
    vision_intermediate: int | None = None  # None: 4 x vision_width
    text_width: int = 64
    text_heads: int = 4
    text_kv_heads: int = 2
    text_layers: int = 2
    text_intermediate: int | None = None  # None: 3 x text_width
    vocab_size: int = 384  # BPE vocabulary learned from CORPUS, specials included
    # Rows of the LM's embedding table and head; None: the tokenizer's size. A real
    # vocabulary size (151936 for Qwen2) gives the benchmark the real head cost.
    text_vocab_size: int | None = None
    max_positions: int = 2048
    seed: int = 0
    # Scales the vision q/k weights: random init gives near-uniform attention whose
    # scores sit within float noise of each other; real towers attend sharply.
    attention_sharpness: float = 4.0
    # Init std of the language model. 0.02 (HF's default) gives near-flat logits, where
    # any quantization flips the argmax; a larger one gives the peaked logits of a
    # trained model, for judging quantization.
    text_init_range: float = 0.02
    # Redraws only the language model's weights with this std after init (text_init_range also
    # sets the vision tower's): peaked logits, so greedy answers depend on the image's tokens.
    language_std: float | None = None
    sliding_window: int | None = None  # Mistral's attention window (None: full attention)

    @property
    def pinpoints(self) -> list[list[int]]:
        """image_grid_pinpoints (height, width) of an any-res architecture: the real grids."""
        grids = NEXT_GRIDS if self.architecture == "llava_next" else ONEVISION_GRIDS
        return [[rows * self.image_size, cols * self.image_size] for rows, cols in grids]


def build_tiny_llava(out_dir: Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a tiny random LLaVA folder to `out_dir` and return it."""
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    tower, _, language = spec.family.partition("-")
    if tower not in TOWERS or language not in LANGUAGE_MODELS or spec.architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown family {spec.family!r} or architecture {spec.architecture!r}: expected "
            f"<{'|'.join(TOWERS)}>-<{'|'.join(LANGUAGE_MODELS)}> and one of {', '.join(ARCHITECTURES)}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(spec)
    clip = spec.family.startswith("clip")
    anyres = {}
    if spec.architecture != "llava":
        anyres["image_grid_pinpoints"] = spec.pinpoints
    if spec.architecture == "llava_onevision":
        anyres.update(
            vision_aspect_ratio="anyres_max_9", video_token_index=tokenizer.convert_tokens_to_ids("<video>")
        )
    config = AutoConfig.for_model(
        spec.architecture,
        vision_config=_vision_config(spec),
        text_config=_text_config(spec, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2 if clip else -1,
        vision_feature_select_strategy="default" if clip else "full",
        projector_hidden_act="gelu",
        **anyres,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    _sharpen_attention(model.model.vision_tower, spec.attention_sharpness)
    if spec.language_std is not None:
        _redraw_language_model(model, spec.language_std, spec.seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    hf_logging.disable_progress_bar()  # "Writing model shards" bars for a 1 MB file
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _write_processor_files(out_dir, spec, clip)
    return out_dir


def _vision_config(spec: TinySpec):
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    common = dict(
        hidden_size=spec.vision_width,
        intermediate_size=spec.vision_intermediate or spec.vision_width * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    if spec.family.startswith("clip"):
        return CLIPVisionConfig(projection_dim=spec.vision_width, **common)
    return SiglipVisionConfig(**common)


def _text_config(spec: TinySpec, tokenizer):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    language = spec.family.partition("-")[2]
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[language]
    window = {"sliding_window": spec.sliding_window} if language == "mistral" else {}
    return cls(
        hidden_size=spec.text_width,
        intermediate_size=spec.text_intermediate or spec.text_width * 3,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        vocab_size=spec.text_vocab_size or len(tokenizer),
        max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=spec.text_init_range,
        **window,
    )


def _sharpen_attention(tower, factor: float) -> None:
    with torch.no_grad():
        for layer in tower.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(factor)
            layer.self_attn.k_proj.weight.mul_(factor)


def _redraw_language_model(model, std: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in [*model.model.language_model.modules(), model.lm_head]:
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)


def _build_tokenizer(spec: TinySpec):
    """The family's tokenizer: Llama's specials (Mistral too) or Qwen's, and its image tokens."""
    llama = not spec.family.endswith("qwen2")  # Llama and Mistral share the SentencePiece specials
    video = ["<video>"] if spec.architecture == "llava_onevision" else []
    if llama:
        specials = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
        return train_tokenizer(spec.vocab_size, specials, ["<image>", *video], LLAVA_TEMPLATE)
    specials = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return train_tokenizer(spec.vocab_size, specials, ["<|im_start|>", "<image>", *video], QWEN_TEMPLATE)


def train_tokenizer(vocab_size: int, specials: dict[str, str], extra: list[str], template: str):
    """A byte-level BPE fast tokenizer trained on CORPUS, wrapped as transformers saves it:
    `specials` are its named special tokens, `extra` further special tokens (the image token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=specials.get("unk_token")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials.values()) + extra,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=extra, **specials)
    fast.chat_template = template
    return fast


PROCESSOR_CLASSES = {
    "llava": "LlavaProcessor",
    "llava_next": "LlavaNextProcessor",
    "llava_onevision": "LlavaOnevisionProcessor",
}


IMAGE_PROCESSORS = {
    "llava_next": "LlavaNextImageProcessor",
    "llava_onevision": "LlavaOnevisionImageProcessor",
}


def _write_processor_files(out_dir: Path, spec: TinySpec, clip: bool) -> None:
    """preprocessor_config.json and processor_config.json as llava-hf folders ship them."""
    if clip:
        image = {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": spec.image_size},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": spec.image_size, "width": spec.image_size},
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
        }
    else:
        image = {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": True,
            "size": {"height": spec.image_size, "width": spec.image_size},
            "resample": 3,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        }
    processor_class = PROCESSOR_CLASSES[spec.architecture]
    image.update(
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        do_convert_rgb=True,
        processor_class=processor_class,
    )
    processor = {
        "processor_class": processor_class,
        "image_token": "<image>",
        "vision_feature_select_strategy": "default" if clip else "full",
    }
    if spec.architecture == "llava_onevision":
        processor.update(
            num_image_tokens=(spec.image_size // spec.patch_size) ** 2,
            vision_aspect_ratio="anyres_max_9",
            video_token="<video>",
        )
    else:
        processor.update(patch_size=spec.patch_size, num_additional_image_tokens=1 if clip else 0)
    if spec.architecture != "llava":  # the crops are padded black; the pinpoints pick the grid
        image.update(
            image_processor_type=IMAGE_PROCESSORS[spec.architecture],
            do_pad=True,
            image_grid_pinpoints=spec.pinpoints,
        )
    (out_dir / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    (out_dir / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
