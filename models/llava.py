"""A user's local LLaVA folder -> the vision graph module (tower to layer L, VisionZip, projector).

Only the vision tower's first L+1 layers and the projector are read from the
checkpoint, tensor by tensor, so a 7B LLaVA's vision graph loads in a few GB of RAM.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zipvlm.bundle.errors import ModelFolderError
from zipvlm.models.checkpoint import SUPPORTED_FOLDERS, read_config, read_tensors
from zipvlm.models.encoders import EncoderTrunk, TowerSpec, tower_spec
from zipvlm.models.visionzip import AllTokens, VisionZip, VisionZipConfig

# LLaVA-1.5 style; LLaVA-NeXT and LLaVA-OneVision (any-resolution views, models/anyres.py).
SUPPORTED_MODEL_TYPES = ("llava", "llava_next", "llava_onevision")
TOWER_PREFIXES = (
    "model.vision_tower.vision_model.",
    "model.vision_tower.",
    "vision_tower.vision_model.",
    "vision_tower.",
)
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")


@dataclass(frozen=True)
class LlavaFolder:
    """A validated LLaVA folder: its config and the files the bundle copies."""

    path: Path
    config: Any  # transformers' LlavaConfig, LlavaNextConfig or LlavaOnevisionConfig
    tower: TowerSpec
    preprocessor: dict[str, Any]

    @property
    def model_type(self) -> str:
        """'llava', or 'llava_next' / 'llava_onevision' (any-resolution views)."""
        return self.config.model_type

    @property
    def llm_hidden_size(self) -> int:
        return self.config.text_config.hidden_size

    @property
    def select_strategy(self) -> str:
        """'default' drops the CLS token from the full selection, 'full' keeps it."""
        return self.config.vision_feature_select_strategy


def open_llava_folder(path: Path) -> LlavaFolder:
    """Validate a local Hugging Face LLaVA folder without loading weights."""
    path = Path(path)
    model_type = read_config(path).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelFolderError(f"{path} holds a '{model_type}' model; {SUPPORTED_FOLDERS}")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    feature_layer = config.vision_feature_layer
    if not isinstance(feature_layer, int):
        raise ModelFolderError(
            f"vision_feature_layer {feature_layer} concatenates several layers; VisionZip "
            "needs a single feature layer"
        )
    tower = tower_spec(config.vision_config, feature_layer)
    pre_file = path / "preprocessor_config.json"
    if not pre_file.is_file():
        raise ModelFolderError(f"{path} has no preprocessor_config.json (the image preprocessing)")
    return LlavaFolder(path, config, tower, json.loads(pre_file.read_text()))


def build_tower_and_projector(folder: LlavaFolder, attn_implementation: str) -> tuple[nn.Module, nn.Module]:
    """Instantiate the vision tower and projector with the folder's weights, in float32."""
    from transformers import AutoModel

    projector_class = _projector_class(folder.model_type)
    vision_config = copy.deepcopy(folder.config.vision_config)
    vision_config._attn_implementation = attn_implementation
    with torch.device("meta"):
        tower = AutoModel.from_config(vision_config)
        projector = projector_class(folder.config)
    needed_tower = _names_up_to_layer(tower, folder.tower.layer_index)
    tensors = read_tensors(folder.path, TOWER_PREFIXES, PROJECTOR_PREFIXES)
    _assign(tower, needed_tower, tensors.tower, "vision tower", folder.path)
    _assign(
        projector,
        [name for name, _ in projector.named_parameters()],
        tensors.projector,
        "projector",
        folder.path,
    )
    return tower.eval(), projector.eval()


def _projector_class(model_type: str) -> type[nn.Module]:
    """The projector transformers builds for this family (the same two linear layers today)."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector
    from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionMultiModalProjector

    return {
        "llava": LlavaMultiModalProjector,
        "llava_next": LlavaNextMultiModalProjector,
        "llava_onevision": LlavaOnevisionMultiModalProjector,
    }[model_type]


def _names_up_to_layer(tower: nn.Module, layer_index: int) -> list[str]:
    """Parameter names that the trunk uses: embeddings, pre-norm, layers 0..L."""
    used = []
    for name, _ in tower.named_parameters():
        if name.startswith("encoder.layers."):
            if int(name.split(".")[2]) > layer_index:
                continue
        elif not name.startswith(("embeddings.", "pre_layrnorm.")):
            continue
        used.append(name)
    return used


def _assign(
    module: nn.Module, names: list[str], tensors: dict[str, torch.Tensor], what: str, path: Path
) -> None:
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ModelFolderError(
            f"{path}: the checkpoint lacks {len(missing)} {what} weights (first: {missing[0]})"
        )
    state = {name: tensors[name].to(torch.float32) for name in names}
    module.load_state_dict(state, strict=False, assign=True)
    # Buffers (e.g. position ids) are not in checkpoints; rebuild them off the meta device.
    for owner in module.modules():
        for buffer_name, buffer in list(owner.named_buffers(recurse=False)):
            if buffer.is_meta:
                owner.register_buffer(
                    buffer_name, _rebuild_buffer(owner, buffer_name, buffer), persistent=False
                )


def _rebuild_buffer(owner: nn.Module, name: str, buffer: torch.Tensor) -> torch.Tensor:
    if name == "position_ids":
        return torch.arange(buffer.shape[-1]).expand(buffer.shape)
    raise ModelFolderError(f"cannot rebuild buffer '{name}' of {type(owner).__name__}")


def image_token_count(folder: LlavaFolder, zip_config: VisionZipConfig | None) -> int:
    """K visual tokens per image: D + C with VisionZip, else the model's own full selection."""
    if zip_config is not None:
        return zip_config.num_output_tokens
    tower = folder.tower
    return tower.num_tokens - int(tower.has_cls and folder.select_strategy == "default")


class VisionGraph(nn.Module):
    """pixel_values (B, 3, S, S) -> image_embeds (B, K, H_llm), keep_indices (B, D).

    The module exported as `vision.onnx`: tower to layer L, token selection
    (VisionZip, or all tokens for a full-token baseline), projector.
    """

    def __init__(self, tower: nn.Module, projector: nn.Module, spec: TowerSpec, selector: nn.Module):
        super().__init__()
        self.trunk = EncoderTrunk(tower, spec)
        self.selector = selector
        self.projector = projector

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probe = self.trunk(pixel_values)
        tokens, keep = self.selector(probe.hidden, probe.scores, probe.keys)
        return self.projector(tokens), keep


def load_vision_graph(
    folder: LlavaFolder, zip_config: VisionZipConfig | None, attn_implementation: str = "sdpa"
) -> VisionGraph:
    """Validate (D, C) against the tower, load weights, and build the graph module.

    `zip_config=None` keeps every token the way the model itself selects them.
    """
    spec = folder.tower
    if zip_config is None:
        selector: nn.Module = AllTokens(spec.num_tokens, spec.has_cls and folder.select_strategy == "default")
    else:
        selector = VisionZip(zip_config, spec.num_tokens, spec.has_cls)
    tower, projector = build_tower_and_projector(folder, attn_implementation)
    return VisionGraph(tower, projector, spec, selector).eval()
