"""Read a Hugging Face folder's config.json and selected tensors of its safetensors checkpoint.

Checkpoints name the same weight differently across transformers versions
(`vision_tower.vision_model.encoder...` in older llava-hf files,
`model.vision_tower.encoder...` in transformers 5); callers pass the prefixes to
strip, longest first, and get module-relative names back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zipvlm.bundle.errors import ModelFolderError

# Every family zipvlm exports, as one clause of an error message.
SUPPORTED_FOLDERS = (
    "supported: LLaVA ('llava': LLaVA-1.5 with a CLIP tower, llava-interleave / SigLIP LLaVAs), "
    "LLaVA-NeXT ('llava_next'), LLaVA-OneVision ('llava_onevision'), Qwen2.5-VL ('qwen2_5_vl')"
)


@dataclass
class VisionTensors:
    tower: dict[str, torch.Tensor]  # names relative to the vision tower module
    projector: dict[str, torch.Tensor]  # names relative to the projector module


def read_config(folder: Path) -> dict[str, Any]:
    """A model folder's config.json, with one clear line for a wrong path or a broken file."""
    if not folder.is_dir():
        raise ModelFolderError(f"model folder not found: {folder}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{folder} has no config.json: point --model at a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{config_file} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{config_file} is not a JSON object")
    return config


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder, sharded or not."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    if any(folder.glob("*.bin")):
        raise ModelFolderError(
            f"{folder} holds PyTorch .bin weights only; save it with safetensors "
            "(model.save_pretrained(dir, safe_serialization=True))"
        )
    raise ModelFolderError(f"{folder} has no *.safetensors weights")


def read_tensors(
    folder: Path, tower_prefixes: tuple[str, ...], projector_prefixes: tuple[str, ...]
) -> VisionTensors:
    """Load only tensors under the given prefixes, lazily, file by file."""
    from safetensors import safe_open

    found = VisionTensors(tower={}, projector={})
    for file in checkpoint_files(Path(folder)):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                for prefixes, target in (
                    (tower_prefixes, found.tower),
                    (projector_prefixes, found.projector),
                ):
                    name = _strip(key, prefixes)
                    if name is not None:
                        target[name] = handle.get_tensor(key)
                        break
    return found


def _strip(key: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return None


def read_tensor(folder: Path, names: tuple[str, ...]) -> torch.Tensor:
    """The one tensor stored under any of `names` (naming differs across transformers versions)."""
    from safetensors import safe_open

    for file in checkpoint_files(Path(folder)):
        with safe_open(str(file), framework="pt") as handle:
            for name in names:
                if name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    return handle.get_tensor(name)
    raise ModelFolderError(f"{folder}: the checkpoint has no {names[-1]} tensor")
