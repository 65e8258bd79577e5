"""LLaVA-NeXT / LLaVA-OneVision folders -> the any-res vision graph for one camera size.

A camera's size fixes the grid of views (bundle/anyres.py), so the graph takes a
fixed number of views per image and stays static. Every view runs the same trunk
and selection as a LLaVA-1.5 image (VisionZip for its tower, or the model's own
selection for --no-zip); a layout (models/anyres_layout.py) then orders the tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from zipvlm.bundle.anyres import (
    ONEVISION,
    TRANSFORMERS_LAYOUT,
    VISIONZIP_LAYOUT,
    AnyresGeometry,
    max_crops_area,
)
from zipvlm.bundle.errors import ArgumentError, ModelFolderError
from zipvlm.bundle.format import AnyresSection
from zipvlm.models.anyres_layout import TransformersLayout, VisionZipLayout
from zipvlm.models.checkpoint import read_tensor
from zipvlm.models.llava import LlavaFolder, VisionGraph, build_tower_and_projector
from zipvlm.models.visionzip import AllTokens, VisionZip, VisionZipConfig

ANYRES_MODEL_TYPES = ("llava_next", "llava_onevision")
NEWLINE_NAMES = ("model.image_newline", "image_newline")


def is_anyres(folder: LlavaFolder) -> bool:
    return folder.model_type in ANYRES_MODEL_TYPES


def anyres_geometry(folder: LlavaFolder, image_size: tuple[int, int] | None) -> AnyresGeometry:
    """The views of a camera of `image_size` (width, height), checked against the folder."""
    if image_size is None:
        raise ArgumentError(
            f"{folder.path} is {folder.model_type}, whose views depend on the image's size: give the "
            "camera's frame size with --image-size WxH (e.g. 640x480)"
        )
    pinpoints = tuple(tuple(int(v) for v in pair) for pair in folder.config.image_grid_pinpoints)
    processor = folder.preprocessor.get("image_grid_pinpoints")
    if processor is not None and tuple(tuple(int(v) for v in pair) for pair in processor) != pinpoints:
        raise ModelFolderError(
            f"{folder.path}: image_grid_pinpoints differ between config.json and preprocessor_config.json "
            "(the processor and the model would pick different grids)"
        )
    side = folder.tower.image_size
    if not pinpoints or any(h % side or w % side for h, w in pinpoints):
        raise ModelFolderError(
            f"{folder.path}: image_grid_pinpoints {[list(p) for p in pinpoints]} are not multiples of the "
            f"tower's {side} px views"
        )
    if tokens_per_view(folder, None) != (side // folder.tower.patch_size) ** 2:
        raise ModelFolderError(
            f"{folder.path}: vision_feature_select_strategy '{folder.select_strategy}' on a "
            f"{folder.tower.family} tower does not give the patch grid the views are packed from"
        )
    crops_area = max_crops_area(folder.config.vision_aspect_ratio) if folder.model_type == ONEVISION else None
    width, height = image_size
    return AnyresGeometry(width, height, side, folder.tower.patch_size, pinpoints, crops_area)


def tokens_per_view(folder: LlavaFolder, zip_config: VisionZipConfig | None) -> int:
    """Tokens of each view after selection: D + C, else the model's own (no CLS under 'default')."""
    if zip_config is not None:
        return zip_config.num_output_tokens
    tower = folder.tower
    return tower.num_tokens - int(tower.has_cls and folder.select_strategy == "default")


def kept_per_view(folder: LlavaFolder, zip_config: VisionZipConfig | None) -> int:
    """Columns of keep_indices per view: D, else every selected token."""
    return zip_config.dominant if zip_config is not None else tokens_per_view(folder, None)


def anyres_token_count(
    folder: LlavaFolder, geometry: AnyresGeometry, zip_config: VisionZipConfig | None
) -> int:
    """K: views x (D + C) with VisionZip, else what transformers feeds for a camera-sized frame."""
    if zip_config is not None:
        return geometry.num_views * zip_config.num_output_tokens
    return geometry.num_full_tokens(tokens_per_view(folder, None))


def layout_name(zip_config: VisionZipConfig | None) -> str:
    return TRANSFORMERS_LAYOUT if zip_config is None else VISIONZIP_LAYOUT


class AnyresVisionGraph(VisionGraph):
    """pixel_values (B, V, 3, S, S) -> image_embeds (B, K, H_llm), keep_indices (B, V, D).

    The views of all images run as one batch through LLaVA-1.5's graph (trunk, selection,
    projector), then the layout puts each image's tokens in order.
    """

    def __init__(self, tower, projector, spec, selector: nn.Module, layout: nn.Module, num_views: int):
        super().__init__(tower, projector, spec, selector)
        self.layout = layout
        self.num_views = num_views

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, keep = super().forward(pixel_values.flatten(0, 1))  # (B*V, T, H), (B*V, D)
        embeds = embeds.unflatten(0, (-1, self.num_views))  # (B, V, T, H)
        keep = keep.unflatten(0, (-1, self.num_views))  # (B, V, D)
        return self.layout(embeds, keep), keep


def load_anyres_graph(
    folder: LlavaFolder,
    geometry: AnyresGeometry,
    zip_config: VisionZipConfig | None,
    attn_implementation: str = "sdpa",
) -> AnyresVisionGraph:
    """Validate (D, C) per view, load the weights (tower to layer L, projector, image_newline)."""
    spec = folder.tower
    if zip_config is None:
        drop_cls = spec.has_cls and folder.select_strategy == "default"
        selector: nn.Module = AllTokens(spec.num_tokens, drop_cls)
        newline = read_tensor(folder.path, NEWLINE_NAMES).to(torch.float32)
        layout: nn.Module = TransformersLayout(geometry, newline, tokens_per_view(folder, None))
    else:
        selector = VisionZip(zip_config, spec.num_tokens, spec.has_cls)
        layout = VisionZipLayout(geometry, zip_config.dominant, spec.num_tokens, spec.has_cls)
    tower, projector = build_tower_and_projector(folder, attn_implementation)
    return AnyresVisionGraph(tower, projector, spec, selector, layout, geometry.num_views).eval()


def anyres_section(
    folder: LlavaFolder, geometry: AnyresGeometry, zip_config: VisionZipConfig | None
) -> AnyresSection:
    """The bundle's `anyres` section for this camera."""
    return AnyresSection(
        family=folder.model_type,
        camera=(geometry.width, geometry.height),
        pinpoints=geometry.pinpoints,
        max_crops_area=geometry.max_crops_area,
        grid=geometry.grid,
        num_views=geometry.num_views,
        layout=layout_name(zip_config),
        newline_rows=0 if zip_config is not None else geometry.packed_grid[0],
        kept_per_view=kept_per_view(folder, zip_config),
    )
