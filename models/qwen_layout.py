"""What a fixed patch grid makes constant in Qwen2.5-VL's vision tower (numpy).

transformers computes these per call from `grid_thw` (`get_vision_window_index`,
`cu_window_seqlens`, the rotary position ids); with the camera size fixed at
export they are constants of the graph:

- the tower's sequence order: merged tokens (m x m patch blocks) in window order,
  each block's patches consecutive, row by row;
- the windows: contiguous runs of that sequence, one per window of the merged grid
  (full windows of `window_size` pixels from the top-left, the last row and column
  of windows partial when the grid does not divide);
- each patch's (row, col), for the axial rotary;
- `reverse_index`: merged tokens from window order back to raster order of the
  merged grid (the order of transformers' image features).

Index conventions: patch raster index r = row * grid_w + col; merged raster index
u = merged_row * merged_w + merged_col; sequence index s = position in the tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zipvlm.bundle.grid import PatchGrid


@dataclass(frozen=True)
class TowerLayout:
    """The constants of one fixed grid."""

    grid: PatchGrid
    window_index: np.ndarray  # (M,) merged raster index of the s-th merged token in window order
    reverse_index: np.ndarray  # (M,) window-order position of merged token u (argsort of window_index)
    window_sizes: np.ndarray  # (windows,) patches per window, in sequence order
    patch_order: np.ndarray  # (N,) patch raster index at sequence position s
    patch_rows_cols: np.ndarray  # (N, 2) row and column of the patch at sequence position s

    @property
    def num_windows(self) -> int:
        return len(self.window_sizes)

    @property
    def uniform_windows(self) -> bool:
        """All windows the same size: window attention is a reshape of the sequence."""
        return bool((self.window_sizes == self.window_sizes[0]).all())

    def padded_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows padded to the largest, for batched window attention when sizes differ.

        Returns gather (windows, L): the sequence index of each slot (pad slots read
        index 0); valid (windows, L) bool; scatter (N,): the flat slot of each sequence
        position.
        """
        longest = int(self.window_sizes.max())
        starts = np.concatenate([[0], np.cumsum(self.window_sizes)[:-1]])
        offsets = np.arange(longest)
        valid = offsets[None, :] < self.window_sizes[:, None]
        gather = np.where(valid, starts[:, None] + offsets[None, :], 0).astype(np.int64)
        scatter = np.empty(int(self.window_sizes.sum()), np.int64)
        scatter[gather[valid]] = np.flatnonzero(valid.reshape(-1))
        return gather, valid, scatter


def window_partition(merged_h: int, merged_w: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Merged tokens in window order, and the merged tokens per window.

    Windows of `side` x `side` merged tokens tile the merged grid from its top-left
    corner, in raster order; tokens inside a window in raster order.
    """
    order: list[int] = []
    sizes: list[int] = []
    for top in range(0, merged_h, side):
        for left in range(0, merged_w, side):
            rows = range(top, min(top + side, merged_h))
            cols = range(left, min(left + side, merged_w))
            order.extend(r * merged_w + c for r in rows for c in cols)
            sizes.append(len(rows) * len(cols))
    return np.array(order, np.int64), np.array(sizes, np.int64)


def tower_layout(grid: PatchGrid, window_size: int) -> TowerLayout:
    """The constants for `grid` and the tower's `window_size` (pixels; 112 in Qwen2.5-VL)."""
    m = grid.merge_size
    window_index, tokens_per_window = window_partition(grid.merged_h, grid.merged_w, window_size // grid.cell)
    token_rows, token_cols = np.divmod(window_index, grid.merged_w)
    dy, dx = np.divmod(np.arange(m * m), m)  # a merged token's patches, row by row
    rows = (token_rows[:, None] * m + dy[None, :]).reshape(-1)
    cols = (token_cols[:, None] * m + dx[None, :]).reshape(-1)
    return TowerLayout(
        grid=grid,
        window_index=window_index,
        reverse_index=np.argsort(window_index),
        window_sizes=tokens_per_window * m * m,
        patch_order=rows * grid.grid_w + cols,
        patch_rows_cols=np.stack([rows, cols], axis=1),
    )
