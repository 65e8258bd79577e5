"""Tiny random-weight Qwen2.5-VL folders, laid out exactly as a downloaded one.

The vision tower keeps every structural feature of the real one (a Conv3d patch
embedding over a temporal patch of 2, window attention with a 112 px window,
full-attention blocks, the 2x2 merger, axial rotary), only narrow and shallow;
the language model is a small Qwen2.5 with 3D rotary positions (mrope_section).
The folder has config.json, generation_config.json, model.safetensors, a real fast
tokenizer with Qwen's special tokens and chat template, and the processor configs.
The same factory writes real-size random folders for the benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from zipvlm.models.tiny import CLIP_MEAN, CLIP_STD, train_tokenizer

# Qwen2.5-VL's chat template for still images (its default system turn included).
QWEN_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
EXTRA_SPECIALS = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


@dataclass(frozen=True)
class TinyQwenSpec:
    """Sizes of a Qwen2.5-VL; the defaults are tiny (the tests'), `QWEN25VL_3B` is real size."""

    vision_width: int = 64
    vision_heads: int = 4  # head_dim 16: the axial rotary needs head_dim divisible by 4
    vision_depth: int = 4
    vision_intermediate: int = 128
    fullatt_block_indexes: tuple[int, ...] = (1, 3)
    text_width: int = 64
    text_heads: int = 4
    text_kv_heads: int = 2
    text_layers: int = 2
    text_intermediate: int = 192
    mrope_section: tuple[int, int, int] = (2, 3, 3)  # sums to the text head_dim / 2
    # The tokenizer's size. onnxruntime-genai's builder takes any Linear whose width is the
    # vocabulary size for the LM head, so it must differ from every layer's width.
    vocab_size: int = 384
    text_vocab_size: int | None = None  # rows of the LM's embedding and head; None: the tokenizer's
    tie_word_embeddings: bool = False
    max_positions: int = 4096
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    seed: int = 0
    # Scales the vision q/k weights: random init gives near-uniform attention whose scores
    # sit within float noise of each other; real towers attend sharply.
    attention_sharpness: float = 8.0
    # Scales the LM head: random init leaves logits flat, where float noise decides greedy ids.
    head_sharpness: float = 8.0
    # Scales the language model's q/k weights: random init attends almost uniformly, so the
    # rotary positions would hardly change the answer; tests of the positions need them to.
    text_attention_sharpness: float = 16.0
    dtype: str = "float32"  # of the saved weights (real checkpoints: bfloat16)


QWEN25VL_3B = TinyQwenSpec(
    vision_width=1280,
    vision_heads=16,
    vision_depth=32,
    vision_intermediate=3420,
    fullatt_block_indexes=(7, 15, 23, 31),
    text_width=2048,
    text_heads=16,
    text_kv_heads=2,
    text_layers=36,
    text_intermediate=11008,
    mrope_section=(16, 24, 24),
    text_vocab_size=151936,
    tie_word_embeddings=True,
    max_positions=32768,
    max_pixels=12845056,
    attention_sharpness=1.0,
    head_sharpness=1.0,
    text_attention_sharpness=1.0,
    dtype="bfloat16",
)


def build_tiny_qwen25vl(out_dir: Path, spec: TinyQwenSpec = TinyQwenSpec()) -> Path:
    """Write a random Qwen2.5-VL folder to `out_dir` and return it."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size, SPECIALS, EXTRA_SPECIALS, QWEN_VL_TEMPLATE)
    config = _config(spec, tokenizer)
    _check_builder_safe(config)
    torch.manual_seed(spec.seed)
    # Built in the saved dtype: a 3B model in float32 would take 15 GB before its bfloat16 copy.
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=getattr(torch, spec.dtype)).eval()
    with torch.no_grad():
        width = spec.vision_width
        for block in model.model.visual.blocks:
            block.attn.qkv.weight[: 2 * width] *= spec.attention_sharpness  # rows: q, k, v
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(spec.text_attention_sharpness)
            layer.self_attn.k_proj.weight.mul_(spec.text_attention_sharpness)
        if not spec.tie_word_embeddings:
            model.lm_head.weight.mul_(spec.head_sharpness)
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    hf_logging.disable_progress_bar()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _write_processor_files(out_dir, spec)
    return out_dir


def _config(spec: TinyQwenSpec, tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in EXTRA_SPECIALS}
    return Qwen2_5_VLConfig(
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_width,
            "intermediate_size": spec.vision_intermediate,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_width,
            "fullatt_block_indexes": list(spec.fullatt_block_indexes),
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            "vocab_size": spec.text_vocab_size or len(tokenizer),
            "hidden_size": spec.text_width,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": spec.max_positions,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": list(spec.mrope_section),
                "rope_theta": 1000000.0,
            },
            "bos_token_id": None,  # Qwen prompts start without one
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": spec.tie_word_embeddings,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def _check_builder_safe(config) -> None:
    """The genai builder's LM-head rule: no layer may be as wide as the vocabulary."""
    vision, text = config.vision_config, config.text_config
    widths = {
        vision.hidden_size,
        3 * vision.hidden_size,
        vision.intermediate_size,
        vision.hidden_size * vision.spatial_merge_size**2,
        vision.out_hidden_size,
        text.hidden_size,
        text.intermediate_size,
        text.num_key_value_heads * (text.hidden_size // text.num_attention_heads),
    }
    if text.vocab_size in widths:
        raise ValueError(
            f"vocab_size {text.vocab_size} equals a layer's width: the genai builder would misread it"
        )


def _write_processor_files(out_dir: Path, spec: TinyQwenSpec) -> None:
    """preprocessor_config.json and processor_config.json as Qwen2.5-VL folders ship them."""
    image = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "min_pixels": spec.min_pixels,
        "max_pixels": spec.max_pixels,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "do_convert_rgb": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "resample": 3,
        "processor_class": "Qwen2_5_VLProcessor",
    }
    processor = {"processor_class": "Qwen2_5_VLProcessor"}
    (out_dir / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    (out_dir / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
