"""A user's local Qwen2.5-VL folder -> its vision graph for one camera size (tower, VisionZip).

The camera's size fixes the patch grid: the frame is resized as the folder's image
processor resizes it (`smart_resize`: multiples of patch x merge = 28 px within the
folder's min/max pixels), so the window order, the windows and the rotary angles
are constants and the graph is static but for the batch. Only the vision tower is
read from the checkpoint, tensor by tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zipvlm.bundle.errors import ArgumentError, ModelFolderError
from zipvlm.bundle.grid import PatchGrid, smart_resize
from zipvlm.models.checkpoint import read_config, read_tensors
from zipvlm.models.qwen_layout import tower_layout
from zipvlm.models.qwen_tower import QwenVisionGraph, QwenVisionTower
from zipvlm.models.visionzip import AllTokens, VisionZip, VisionZipConfig

MODEL_TYPE = "qwen2_5_vl"
VISUAL_PREFIXES = ("model.visual.", "visual.")  # transformers 5 names, then the hub checkpoints'
DEFAULT_IMAGE_SIZE = (448, 448)  # (width, height) when export gets no --image-size
# The processor's bounds when preprocessor_config.json names none (Qwen2VLImageProcessor's defaults).
DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS = 56 * 56, 28 * 28 * 1280


@dataclass(frozen=True)
class QwenFolder:
    """A validated Qwen2.5-VL folder: its config and image processor settings."""

    path: Path
    config: Any  # transformers.Qwen2_5_VLConfig
    preprocessor: dict[str, Any]

    @property
    def vision(self) -> Any:
        return self.config.vision_config

    @property
    def llm_hidden_size(self) -> int:
        return self.config.text_config.hidden_size

    @property
    def probe_block(self) -> int:
        """The last full-attention block: VisionZip reads its attention and keys."""
        return max(self.vision.fullatt_block_indexes)

    @property
    def min_max_pixels(self) -> tuple[int, int]:
        """The processor's area bounds: min/max_pixels, or size's shortest/longest_edge (newer saves)."""
        pre, size = self.preprocessor, self.preprocessor.get("size") or {}
        low = pre.get("min_pixels", size.get("shortest_edge", DEFAULT_MIN_PIXELS))
        high = pre.get("max_pixels", size.get("longest_edge", DEFAULT_MAX_PIXELS))
        return int(low), int(high)

    @property
    def mrope_section(self) -> tuple[int, int, int]:
        text = self.config.text_config
        rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
        section = rope.get("mrope_section")
        if section is None or len(section) != 3:
            raise ModelFolderError(f"{self.path}: the text config names no 3-axis mrope_section")
        return int(section[0]), int(section[1]), int(section[2])

    def grid(self, image_size: tuple[int, int] | None) -> PatchGrid:
        """The patch grid of camera frames of (width, height), as the processor resizes them."""
        width, height = image_size or DEFAULT_IMAGE_SIZE
        patch, merge = int(self.vision.patch_size), int(self.vision.spatial_merge_size)
        low, high = self.min_max_pixels
        try:
            resized_h, resized_w = smart_resize(height, width, patch * merge, low, high)
        except ValueError as exc:
            raise ArgumentError(f"--image-size {width}x{height}: {exc}") from None
        return PatchGrid(resized_h, resized_w, patch, merge)


def open_qwen_folder(path: Path) -> QwenFolder:
    """Validate a local Qwen2.5-VL folder without loading weights."""
    from transformers import Qwen2_5_VLConfig

    path = Path(path)
    model_type = read_config(path).get("model_type")
    if model_type != MODEL_TYPE:
        raise ModelFolderError(f"{path} holds a '{model_type}' model, not Qwen2.5-VL ('{MODEL_TYPE}')")
    config = Qwen2_5_VLConfig.from_pretrained(path)
    pre_file = path / "preprocessor_config.json"
    if not pre_file.is_file():
        raise ModelFolderError(f"{path} has no preprocessor_config.json (the image preprocessing)")
    preprocessor = json.loads(pre_file.read_text())
    vision = config.vision_config
    for key, mine in (("patch_size", vision.patch_size), ("merge_size", vision.spatial_merge_size)):
        if int(preprocessor.get(key, mine)) != int(mine):
            raise ModelFolderError(
                f"{pre_file}: {key} {preprocessor[key]} differs from the vision config's {mine}"
            )
    if int(vision.temporal_patch_size) != 2 or int(vision.in_channels) != 3:
        raise ModelFolderError(f"{path}: expected a temporal patch of 2 RGB frames, got {vision}")
    return QwenFolder(path, config, preprocessor)


def load_visual(folder: QwenFolder) -> nn.Module:
    """The folder's vision tower (blocks and merger) in float32, read tensor by tensor."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
        Qwen2_5_VisionTransformerPretrainedModel,
        Qwen2_5_VLVisionRotaryEmbedding,
    )

    with torch.device("meta"):
        visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(folder.vision)
    tensors = read_tensors(folder.path, VISUAL_PREFIXES, ()).tower
    names = [name for name, _ in visual.named_parameters()]
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ModelFolderError(
            f"{folder.path}: the checkpoint lacks {len(missing)} vision tower weights (first: {missing[0]})"
        )
    visual.load_state_dict(
        {name: tensors[name].to(torch.float32) for name in names}, strict=False, assign=True
    )
    visual.rotary_pos_emb = Qwen2_5_VLVisionRotaryEmbedding(folder.vision)  # its buffers are not saved
    return visual.eval()


def load_vision_graph(
    folder: QwenFolder, grid: PatchGrid, zip_config: VisionZipConfig | None
) -> QwenVisionGraph:
    """Validate (D, C) against the merged tokens, load the tower, and build the graph module.

    `zip_config=None` keeps every merged token in raster order, exactly transformers' image tokens.
    """
    if zip_config is not None and zip_config.num_output_tokens >= grid.num_merged:
        raise ArgumentError(
            f"--dominant + --contextual must be below the {grid.num_merged} merged tokens of the "
            f"{grid.width}x{grid.height} grid ({grid.merged_w} x {grid.merged_h}), got "
            f"{zip_config.dominant} + {zip_config.contextual} = {zip_config.num_output_tokens}; "
            "a larger --image-size gives more"
        )
    selector: nn.Module = (
        AllTokens(grid.num_merged, drop_cls=False)
        if zip_config is None
        else VisionZip(zip_config, grid.num_merged, has_cls=False)
    )
    visual = load_visual(folder)
    tower = QwenVisionTower(visual, tower_layout(grid, int(folder.vision.window_size)), folder.probe_block)
    return QwenVisionGraph(tower, selector).eval()
