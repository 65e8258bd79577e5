"""The bundle's description of its source folder: preprocessing, tokens, template.

The runtime reproduces the folder's image processor from `preprocess` alone, so
every field it needs is spelled out here rather than left to a processor class.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from zipvlm.bundle.errors import ModelFolderError
from zipvlm.bundle.format import (
    AnyresSection,
    Bundle,
    LanguageSection,
    PreprocessSpec,
    SelectionSection,
    VisionSection,
)
from zipvlm.models.llava import LlavaFolder
from zipvlm.models.visionzip import VisionZipConfig

# Files copied verbatim from the model folder when present (tokenizer.json is required).
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def copy_model_files(folder: Path, out: Path) -> list[str]:
    """Copy tokenizer and processor files into the bundle; return their names."""
    if not (folder / "tokenizer.json").is_file():
        raise ModelFolderError(
            f"{folder} has no tokenizer.json: the runtime needs a fast tokenizer "
            "(save one with AutoTokenizer.from_pretrained(dir).save_pretrained(dir))"
        )
    copied = []
    for name in COPIED_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / name)
            copied.append(name)
    return copied


def preprocess_spec(pre: dict[str, Any], image_size: int) -> PreprocessSpec:
    """The image processor's steps as plain data: resize, crop, pad, rescale, normalise."""
    size = pre.get("size", {"height": image_size, "width": image_size})
    crop = pre.get("crop_size") if pre.get("do_center_crop") else None
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    normalize = pre.get("do_normalize", True)
    return PreprocessSpec(
        image_size=image_size,
        convert_rgb=bool(pre.get("do_convert_rgb", True)),
        pad_to_square=bool(pre.get("do_pad", False)),
        resize=size if pre.get("do_resize", True) else None,
        resample=PIL_RESAMPLE.get(pre.get("resample", 3), "bicubic"),
        center_crop=crop,
        rescale_factor=pre.get("rescale_factor", 1 / 255) if pre.get("do_rescale", True) else 1.0,
        mean=pre.get("image_mean", [0.0] * 3) if normalize else [0.0] * 3,
        std=pre.get("image_std", [1.0] * 3) if normalize else [1.0] * 3,
    )


def chat_template(folder: Path) -> str | None:
    """The chat template, wherever this transformers version saved it."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = folder / name
        if file.is_file():
            template = json.loads(file.read_text()).get("chat_template")
            if template:
                return template
    return None


def eos_token_ids(folder: Path, text_config: Any) -> list[int]:
    """End-of-sequence ids: generation_config.json first, then the text config."""
    eos = None
    gen = folder / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
    if eos is None:
        eos = getattr(text_config, "eos_token_id", None)
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def describe_bundle(
    directory: Path,
    folder: LlavaFolder,
    zip_config: VisionZipConfig | None,
    num_image_tokens: int,
    eos_ids: list[int],
    graphs: dict[str, dict[str, Any]],
    anyres: AnyresSection | None = None,
) -> Bundle:
    """The bundle written to `directory` (its files are hashed by `Bundle.write`)."""
    tower = folder.tower
    text = folder.config.text_config
    preprocess = preprocess_spec(folder.preprocessor, tower.image_size)
    if anyres is not None:  # do_pad pads the crops (the any-res rule), not the whole image
        preprocess = dataclasses.replace(preprocess, pad_to_square=False)
    return Bundle(
        path=directory,
        model_family=f"{folder.model_type}/{tower.family}/{text.model_type}",
        source_model=str(folder.path.resolve()),
        vision=VisionSection(
            tower=tower.family,
            has_cls=tower.has_cls,
            image_size=tower.image_size,
            patch_size=tower.patch_size,
            num_tokens=tower.num_tokens,
            feature_layer=tower.feature_layer,
            layer_index=tower.layer_index,
        ),
        selection=SelectionSection(
            enabled=zip_config is not None,
            dominant=zip_config.dominant if zip_config else None,
            contextual=zip_config.contextual if zip_config else None,
            num_image_tokens=num_image_tokens,
        ),
        preprocess=preprocess,
        language=LanguageSection(
            model_type=text.model_type,
            hidden_size=folder.llm_hidden_size,
            image_token_id=folder.config.image_token_id,
            eos_token_ids=tuple(eos_ids),
            chat_template=chat_template(folder.path),
        ),
        graphs=graphs,
        anyres=anyres,
    )
