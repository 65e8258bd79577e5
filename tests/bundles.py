"""Bundles written by hand, for tests of the format and of what reads it."""

from __future__ import annotations

from pathlib import Path

from zipvlm.bundle.format import (
    Bundle,
    LanguageSection,
    PreprocessSpec,
    SelectionSection,
    VisionSection,
)
from zipvlm.models.tiny import CLIP_MEAN, CLIP_STD


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
