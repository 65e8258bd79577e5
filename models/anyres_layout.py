"""The order of an any-res image's tokens, as static ONNX: constant indices, no data-dependent shape.

Both layouts take the projected tokens of every view, (B, V, T, H), and give the
image's tokens in the order the language model reads them, (B, K, H), K fixed by
the camera's size (docs/design.md, "LLaVA-NeXT / LLaVA-OneVision").

`TransformersLayout` (`--no-zip`) is transformers' `pack_image_features`: the base
view's g*g tokens; the crops' patch grid (rows*g x cols*g, crops side by side) cut to
unpad_image's rectangle, on OneVision bilinearly downscaled above anyres_max_N; the
image_newline row after every grid row. The camera's size fixes every index: one
Gather with constant indices, two constant MatMuls for the downscale (bilinear is
separable), a constant newline column.

`VisionZipLayout` is the VisionZip authors' order of per-view VisionZip tokens: the
base view's D + C as they are; the crops' dominant patches in raster order of the
whole crop grid; the crops' CLS tokens (CLIP) crop by crop; the crops' contextual
tokens crop by crop. The raster order depends on the data: each kept index is mapped
to its raster cell through a constant table (GatherElements), the cells are flagged
on a whole-grid mask whose CumSum numbers them in raster order, and each patch is
scattered to its number (ScatterElements). No TopK, so no limit on crops x D (TensorRT
caps TopK's K: 3840 on TensorRT 10).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zipvlm.bundle.anyres import AnyresGeometry


def crop_grid_index(geometry: AnyresGeometry, row: int, col: int, tokens_per_view: int) -> int:
    """Index into the flattened (V * T) tokens of crop-grid cell (row, col); view 0 is the base."""
    g = geometry.side
    view = 1 + (row // g) * geometry.grid[1] + col // g
    return view * tokens_per_view + (row % g) * g + col % g


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of torch's 1-D linear interpolation, align_corners=False, in float32
    like its CPU kernel: src = (dst + 0.5) * in / out - 0.5, clamped at 0."""
    scale = np.float32(in_size) / np.float32(out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    for dst in range(out_size):
        src = max((np.float32(dst) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0.0))
        lower = min(int(src), in_size - 1)
        upper = min(lower + 1, in_size - 1)
        frac = np.float32(src - np.float32(lower))
        matrix[dst, lower] += np.float32(1.0) - frac
        matrix[dst, upper] += frac
    return matrix


class TransformersLayout(nn.Module):
    """transformers' packing (unpad, anyres_max downscale, image_newline) as constant gathers."""

    def __init__(self, geometry: AnyresGeometry, image_newline: torch.Tensor, tokens_per_view: int):
        super().__init__()
        if tokens_per_view != geometry.side**2:
            raise ValueError(f"a view has {tokens_per_view} tokens, the geometry {geometry.side}^2")
        self.tokens_per_view = tokens_per_view
        box = geometry.unpadded_box
        self.box_shape = (box.height, box.width)
        cells = [
            crop_grid_index(geometry, row, col, tokens_per_view)
            for row in range(box.top, box.top + box.height)
            for col in range(box.left, box.left + box.width)
        ]
        self.register_buffer("cells", torch.tensor(cells), persistent=False)
        down = geometry.downscaled_grid
        self.downscale = down is not None
        if down is not None:
            rows = torch.from_numpy(bilinear_matrix(box.height, down[0]))
            self.register_buffer("rows_matrix", rows, persistent=False)
            self.register_buffer(
                "cols_matrix", torch.from_numpy(bilinear_matrix(box.width, down[1])), persistent=False
            )
        self.register_buffer("newline", image_newline.detach().float().clone(), persistent=False)

    def forward(self, views: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """views (B, V, T, H) -> (B, K, H) in transformers' order (`keep` is constant here)."""
        batch, _, _, width = views.shape
        flat = views.flatten(1, 2)  # (B, V*T, H)
        grid = torch.index_select(flat, 1, self.cells).unflatten(1, self.box_shape)  # (B, h, w, H)
        if self.downscale:  # (h', h) @ rows, then (w', w) @ columns: no Resize, no Einsum
            grid = torch.matmul(self.rows_matrix, grid.flatten(2)).unflatten(2, (self.box_shape[1], width))
            grid = torch.matmul(self.cols_matrix, grid)  # (B, h', w', H)
        newline = self.newline.expand(batch, grid.shape[1], 1, width)
        rows = torch.cat([grid, newline], dim=2).flatten(1, 2)  # (B, h' * (w' + 1), H)
        return torch.cat([flat[:, : self.tokens_per_view], rows], dim=1)


def raster_cells(geometry: AnyresGeometry, num_tokens: int, has_cls: bool) -> np.ndarray:
    """(crops, N) int64: each crop token's cell in the whole crop grid, raster order (CLS: 0, unused)."""
    g, cols = geometry.side, geometry.grid[1]
    width = cols * g
    table = np.zeros((geometry.num_crops, num_tokens), np.int64)
    patch = np.arange(g * g)
    for crop in range(geometry.num_crops):
        crop_row, crop_col = divmod(crop, cols)
        rows, columns = crop_row * g + patch // g, crop_col * g + patch % g
        table[crop, int(has_cls) :] = rows * width + columns
    return table


class VisionZipLayout(nn.Module):
    """The VisionZip authors' order of per-view VisionZip tokens (see the module docstring)."""

    def __init__(self, geometry: AnyresGeometry, dominant: int, num_tokens: int, has_cls: bool):
        super().__init__()
        self.dominant, self.has_cls = dominant, has_cls
        self.grid_cells = geometry.crop_grid[0] * geometry.crop_grid[1]
        self.register_buffer(
            "cells", torch.from_numpy(raster_cells(geometry, num_tokens, has_cls)), persistent=False
        )

    def forward(self, views: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """views (B, V, D+C, H) VisionZip's tokens per view, keep (B, V, D) ascending -> (B, K, H)."""
        batch, _, _, width = views.shape
        first = int(self.has_cls)  # a CLIP view keeps its CLS token first (index 0)
        crops = views[:, 1:]  # (B, crops, D+C, H)
        patches = crops[:, :, first : self.dominant].flatten(1, 2)  # (B, M, H), M = crops * (D - first)
        cells = torch.gather(self.cells.expand(batch, -1, -1), 2, keep[:, 1:, first:]).flatten(1)  # (B, M)
        flags = torch.zeros(batch, self.grid_cells, dtype=views.dtype, device=views.device)
        flags = flags.scatter(1, cells, torch.ones_like(cells, dtype=views.dtype))
        number = (torch.cumsum(flags, dim=1) - 1).to(torch.int64)  # raster rank of every flagged cell
        slot = torch.gather(number, 1, cells).unsqueeze(-1).expand(-1, -1, width)  # (B, M, H)
        ordered = torch.zeros_like(patches).scatter(1, slot, patches)
        parts = [views[:, 0], ordered]
        if self.has_cls:
            parts.append(crops[:, :, 0])  # (B, crops, H)
        parts.append(crops[:, :, self.dominant :].flatten(1, 2))  # contextual, crop by crop
        return torch.cat(parts, dim=1)
