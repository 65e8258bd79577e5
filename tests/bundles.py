"""Bundles written by hand, for tests of the format and of what reads it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zipvlm.bundle.format import (
    AnyresSection,
    Bundle,
    LanguageSection,
    PreprocessSpec,
    QwenSection,
    SelectionSection,
    VisionSection,
)
from zipvlm.models.tiny import CLIP_MEAN, CLIP_STD, NEXT_GRIDS


def sample_bundle(path: Path) -> Bundle:
    """The description of a tiny CLIP + Llama export with D = 54, C = 10 (files not hashed yet)."""
    return Bundle(
        path=Path(path),
        model_family="llava/clip/llama",
        source_model="tiny-clip-llama",
        vision=VisionSection("clip", True, 336, 14, 577, -2, 1),
        selection=SelectionSection(True, 54, 10, 64),
        preprocess=PreprocessSpec(
            336,
            True,
            False,
            {"shortest_edge": 336},
            "bicubic",
            {"height": 336, "width": 336},
            1 / 255,
            CLIP_MEAN,
            CLIP_STD,
        ),
        language=LanguageSection("llama", 64, 4, (2,), None),
        graphs={"vision.onnx": {"dtype": "float32", "quantization": "none"}},
    )


def rehash(path: Path) -> Bundle:
    """Re-write a bundle's manifest after a test changed its files on purpose."""
    return Bundle.open(path, verify_hashes=False).write()


def sample_qwen_bundle(
    path: Path, camera: tuple[int, int] = (640, 480), dominant: int | None = 36, contextual: int | None = 7
) -> Bundle:
    """The description of a tiny Qwen2.5-VL export for camera frames of (width, height), resized as
    its processor does (640x480 -> 644x476); D = C = None: --no-zip."""
    from zipvlm.bundle.grid import PatchGrid, smart_resize

    min_pixels, max_pixels = 56 * 56, 28 * 28 * 1280  # the tiny folder's (the processor's defaults)
    height, width = smart_resize(camera[1], camera[0], 28, min_pixels, max_pixels)
    merged = PatchGrid(height, width, 14, 2).num_merged
    enabled = dominant is not None
    return Bundle(
        path=Path(path),
        model_family="qwen2_5_vl",
        source_model="tiny-qwen2.5-vl",
        vision=VisionSection("qwen2_5_vl", False, 0, 14, merged, -1, 3),
        selection=SelectionSection(
            enabled, dominant, contextual, dominant + contextual if enabled else merged
        ),
        preprocess=PreprocessSpec(
            0, True, False, {"height": height, "width": width}, "bicubic", None, 1 / 255, CLIP_MEAN, CLIP_STD
        ),
        language=LanguageSection("qwen2_5_vl_text", 64, 5, (0, 1), None),
        graphs={"vision.onnx": {"dtype": "float32", "quantization": "none"}},
        qwen=QwenSection(*camera, width, height, 14, 2, 2, min_pixels, max_pixels, 112, 3, (2, 3, 3), 3, 4),
    )


def sample_anyres_bundle(path: Path) -> Bundle:
    """A tiny LLaVA-NeXT export for a 640x480 camera: 5 views, D = 54, C = 10 per view (not hashed yet)."""
    bundle = sample_bundle(path)
    return dataclasses.replace(
        bundle,
        model_family="llava_next/clip/llama",
        selection=SelectionSection(True, 54, 10, 320),
        anyres=AnyresSection(
            "llava_next",
            (640, 480),
            tuple((rows * 336, cols * 336) for rows, cols in NEXT_GRIDS),
            None,
            (2, 2),
            5,
            "visionzip",
            0,
            54,
        ),
    )
