"""Shared fixtures: tiny LLaVA and Qwen2.5-VL folders and their bundles, built once per session, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from zipvlm.models.tiny import TinySpec, build_tiny_llava

FAMILIES = ("clip-llama", "siglip-qwen2")
# Any-res folders: LLaVA-NeXT (CLIP-336 + Llama) and LLaVA-OneVision (SigLIP-384 + Qwen2), the real
# view sizes and pinpoints, tiny widths; long enough contexts for transformers' 2,000+ image tokens;
# a peaked language model, so that greedy answers depend on the image's tokens and their order.
ANYRES_SPECS = {
    "llava-next": TinySpec(
        family="clip-llama", architecture="llava_next", max_positions=8192, language_std=0.25
    ),
    "llava-onevision": TinySpec(
        family="siglip-qwen2",
        architecture="llava_onevision",
        image_size=384,
        max_positions=8192,
        language_std=0.25,
    ),
}
ANYRES = tuple(ANYRES_SPECS)
CAMERA = (640, 480)  # the camera the any-res bundles are exported for: 2x2 crops + the whole frame
ANYRES_ZIP = (54, 10)  # per view: 5 x 64 = 320 image tokens


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_llava(root / family, TinySpec(family=family)) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_folders, tmp_path_factory) -> dict[str, Path]:
    """Each tiny folder exported once with the paper's (54, 10): vision, embed, float32 decoder."""
    from zipvlm.export.pipeline import ExportOptions, export_bundle
    from zipvlm.models.visionzip import VisionZipConfig

    root = tmp_path_factory.mktemp("bundles")
    return {
        family: export_bundle(
            ExportOptions(model=folder, out=root / family, zip=VisionZipConfig(54, 10), quant="none")
        ).out
        for family, folder in tiny_folders.items()
    }


# The Qwen2.5-VL bundles' cameras: 640x480 frames resize to 644x476 (17 x 23 = 391 merged tokens,
# windows of several sizes), the default 448x448 to 16 x 16 = 256 (full windows only).
QWEN_CAMERA, QWEN_ZIP = (640, 480), (36, 7)


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory) -> Path:
    from zipvlm.models.tiny_qwen import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen") / "qwen2.5-vl")


@pytest.fixture(scope="session")
def qwen_bundles(qwen_folder, tmp_path_factory) -> dict[str, Path]:
    """The tiny Qwen2.5-VL exported with a float32 decoder: "zip" keeps (36, 7) of 640x480 frames,
    "nozip" every merged token of the default 448x448 grid, its language side taken from "zip"."""
    from zipvlm.export.pipeline import ExportOptions, export_bundle
    from zipvlm.models.visionzip import VisionZipConfig

    root = tmp_path_factory.mktemp("qwen-bundles")
    zipped = export_bundle(
        ExportOptions(
            qwen_folder, root / "zip", VisionZipConfig(*QWEN_ZIP), quant="none", image_size=QWEN_CAMERA
        )
    ).out
    full = export_bundle(
        ExportOptions(qwen_folder, root / "nozip", None, quant="none", language_from=zipped)
    ).out
    return {"zip": zipped, "nozip": full}


@pytest.fixture(scope="session")
def anyres_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("anyres")
    return {name: build_tiny_llava(root / name, spec) for name, spec in ANYRES_SPECS.items()}


@pytest.fixture(scope="session")
def anyres_bundles(anyres_folders, tmp_path_factory) -> dict[str, Path]:
    """Each any-res folder exported once for the 640x480 camera, VisionZip (54, 10) per view."""
    from zipvlm.export.pipeline import ExportOptions, export_bundle
    from zipvlm.models.visionzip import VisionZipConfig

    root = tmp_path_factory.mktemp("anyres-bundles")
    return {
        name: export_bundle(
            ExportOptions(folder, root / name, VisionZipConfig(*ANYRES_ZIP), quant="none", image_size=CAMERA)
        ).out
        for name, folder in anyres_folders.items()
    }


@pytest.fixture(scope="session")
def tied_folders(tiny_folders, tmp_path_factory) -> dict[str, Path]:
    """Tiny folders whose layer L attends uniformly and has identical keys: all ties."""
    from transformers import LlavaForConditionalGeneration

    root = tmp_path_factory.mktemp("tied")
    out = {}
    for family, source in tiny_folders.items():
        model = LlavaForConditionalGeneration.from_pretrained(source)
        tower = model.model.vision_tower
        index = model.config.vision_feature_layer % (len(tower.encoder.layers) + 1) - 1
        attn = tower.encoder.layers[index].self_attn
        with torch.no_grad():
            attn.q_proj.weight.zero_()
            attn.q_proj.bias.zero_()  # zero logits -> uniform attention -> equal scores
            attn.k_proj.weight.zero_()
            attn.k_proj.bias.fill_(1.0)  # every key the same vector -> equal similarities
        target = root / family
        model.save_pretrained(target)
        for file in source.iterdir():
            if not (target / file.name).exists():
                shutil.copy2(file, target / file.name)
        out[family] = target
    return out


def reference_model(folder: Path):
    """The folder's Llava(Next|Onevision)ForConditionalGeneration with eager attention (maps available)."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()


def pixels(batch: int, seed: int, size: int = 336) -> torch.Tensor:
    """Different normalised-looking images per batch item."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
