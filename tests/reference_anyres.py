"""A slow, obvious any-res VisionZip, written from docs/design.md alone, to check the graphs.

Per view, tests/reference.py's VisionZip (Hugging Face's eager tower, loops and
sorted()); then the image's tokens are laid out with loops over the whole crop grid,
every row tagged with where it came from, so the order itself is compared, not only
the features. Nothing here is shared with zipvlm.models.

`authors_restore` re-expresses what the VisionZip authors' `restore_image_features_sorted`
computes (a dense zero grid and a boolean mask per crop, crops permuted into one grid,
the masked rows read out, then the CLS rows, then the trailing contextual rows), as a
cross-check of the prose on CLIP towers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from reference import reference_visionzip


@dataclass(frozen=True)
class Origin:
    """Where a row of the image's tokens comes from."""

    view: int  # 0: the whole frame; 1 + crop otherwise
    kind: str  # "dominant" (index: token of the view, CLS = 0 on CLIP), "cls", "contextual" (index: slot)
    index: int


@dataclass
class AnyresReference:
    image_embeds: torch.Tensor  # (K, H_llm)
    origins: list[Origin]  # one per row
    keep_indices: list[list[int]]  # per view, ascending


def reference_anyres_visionzip(
    model, views: torch.Tensor, grid_cols: int, dominant: int, contextual: int
) -> AnyresReference:
    """One image's views (V, 3, S, S), base view first, crops in raster order of a grid with
    `grid_cols` columns; `model` is an eager-attention LlavaNext/LlavaOnevision model."""
    vision = model.config.vision_config
    has_cls = vision.model_type == "clip_vision_model"
    side = vision.image_size // vision.patch_size
    per_view = reference_visionzip(model, views, dominant, contextual)
    embeds, keeps = per_view.image_embeds, per_view.keep_indices  # (V, D + C, H), per view

    def tagged(view: int) -> list[tuple[Origin, torch.Tensor]]:
        rows = [(Origin(view, "dominant", token), embeds[view, i]) for i, token in enumerate(keeps[view])]
        rows += [(Origin(view, "contextual", j), embeds[view, dominant + j]) for j in range(contextual)]
        return rows

    ordered = tagged(0)
    placed = []  # ((row, column) in the whole crop grid, origin, token)
    for view in range(1, len(keeps)):
        crop_row, crop_col = divmod(view - 1, grid_cols)
        for origin, token in tagged(view):
            if origin.kind == "dominant" and not (has_cls and origin.index == 0):
                patch = origin.index - int(has_cls)
                cell = (crop_row * side + patch // side, crop_col * side + patch % side)
                placed.append((cell, origin, token))
    ordered += [(origin, token) for _, origin, token in sorted(placed, key=lambda item: item[0])]
    if has_cls:
        ordered += [(Origin(view, "cls", 0), embeds[view, 0]) for view in range(1, len(keeps))]
    for view in range(1, len(keeps)):
        ordered += [(origin, token) for origin, token in tagged(view) if origin.kind == "contextual"]
    return AnyresReference(torch.stack([t for _, t in ordered]), [o for o, _ in ordered], keeps)


def authors_restore(
    crops: torch.Tensor, keep: torch.Tensor, grid_cols: int, grid_rows: int, side: int
) -> torch.Tensor:
    """The authors' restore step for CLIP crops: crops (n, D + C, H) in VisionZip's per-view order,
    keep (n, D) in any order (theirs is top-k order; CLS = token 0) -> (n * (D + C), H).
    Their code fixes side = 24 (576 patches); here it is a parameter."""
    count, total, width = crops.shape
    kept = keep.shape[1]
    patch_ids = keep.sort(dim=1).values[:, 1:] - 1  # CLS dropped, 0-based patches
    dense = torch.zeros(count, side * side, width, dtype=crops.dtype)
    mask = torch.zeros(count, side * side, dtype=torch.bool)
    mask.scatter_(1, patch_ids, True)
    dense[mask] = crops[:, 1:kept].reshape(-1, width)  # row-major fill: ascending per crop
    grid = dense.view(grid_rows, grid_cols, side, side, width).permute(0, 2, 1, 3, 4)
    grid_mask = mask.view(grid_rows, grid_cols, side, side).permute(0, 2, 1, 3)
    whole = grid.reshape(grid_rows * side, grid_cols * side, width)
    whole_mask = grid_mask.reshape(grid_rows * side, grid_cols * side)
    contextual = crops[:, kept:].reshape(-1, width)
    return torch.cat([whole[whole_mask], crops[:, 0], contextual])
