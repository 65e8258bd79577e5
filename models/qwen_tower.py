"""Qwen2.5-VL's vision tower for one fixed grid, batched and static, with VisionZip's probe.

`QwenVisionTower` runs the tower's own modules and weights (norms, qkv, proj, MLPs,
merger) and replaces only what transformers computes from `grid_thw` at run time
(models/qwen_layout.py):

- patch embedding: a still image fills the temporal patch of 2 with two equal frames,
  so the Conv3d is a Conv2d with its two temporal kernel slices summed, stride 14, on
  the image itself ([B, 3, H, W]);
- the window order: one constant Gather from raster patches to the tower's sequence;
- window attention: the windows, contiguous runs of the sequence, attend as a batch
  of windows (a reshape when all are full, else a constant Gather into windows padded
  to the longest, a key mask for the pad, and a Gather back);
- full attention: one image per batch row, no mask;
- rotary cos/sin: the tower's own rotary module evaluated once, constants in sequence
  order;
- after the merger, a constant Gather back to raster order of the merged grid.

The last full-attention block also yields VisionZip's signals per merged token (see
`MergedProbe`). A tower with more outputs per merged token (Qwen3-VL's deepstack
features) adds them to `MergedProbe`; the selection picks every stream by one plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zipvlm.models.qwen_layout import TowerLayout


@dataclass
class MergedProbe:
    """The tower's output and VisionZip's signals, per merged token in raster order."""

    hidden: torch.Tensor  # (B, M, H_llm): the merger's outputs = transformers' image features
    scores: torch.Tensor  # (B, M): attention its patches receive in the probe block
    keys: torch.Tensor  # (B, M, head_dim): the probe block's keys before rotary, mean over heads, patches


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class QwenVisionTower(nn.Module):
    """pixel_values (B, 3, H, W), normalised -> `MergedProbe`, for one fixed grid."""

    def __init__(self, visual: Any, layout: TowerLayout, probe_block: int):
        super().__init__()
        config = visual.config
        self.grid = layout.grid
        self.width = int(config.hidden_size)
        self.heads = int(config.num_heads)
        self.head_dim = self.width // self.heads
        self.merge_unit = int(config.spatial_merge_size) ** 2
        self.full_blocks = frozenset(config.fullatt_block_indexes)
        self.probe_block = probe_block
        self.blocks = visual.blocks
        self.merger = visual.merger
        weight = visual.patch_embed.proj.weight.detach()  # (C, 3, T, p, p): Conv3d, no bias
        self.register_buffer("patch_weight", weight.sum(dim=2).clone(), persistent=False)
        self.register_buffer("patch_order", torch.from_numpy(layout.patch_order), persistent=False)
        self.register_buffer("reverse_index", torch.from_numpy(layout.reverse_index), persistent=False)
        rows_cols = torch.from_numpy(layout.patch_rows_cols)  # (N, 2)
        cos, sin = visual.rotary_pos_emb(rows_cols, rows_cols)  # (N, head_dim) each, sequence order
        self.register_buffer("cos", cos[:, None, :].clone(), persistent=False)  # (N, 1, head_dim)
        self.register_buffer("sin", sin[:, None, :].clone(), persistent=False)
        self.num_windows = layout.num_windows
        self.uniform_windows = layout.uniform_windows
        if not self.uniform_windows:
            gather, valid, scatter = layout.padded_windows()
            pad = torch.where(torch.from_numpy(valid), 0.0, float("-inf"))
            self.window_len = int(gather.shape[1])
            self.register_buffer("window_gather", torch.from_numpy(gather.reshape(-1)), persistent=False)
            self.register_buffer("window_scatter", torch.from_numpy(scatter), persistent=False)
            self.register_buffer("window_pad", pad[:, None, None, :], persistent=False)  # (W, 1, 1, L)

    def forward(self, pixel_values: torch.Tensor) -> MergedProbe:
        batch = pixel_values.shape[0]
        x = F.conv2d(pixel_values, self.patch_weight, stride=self.grid.patch_size)  # (B, C, gh, gw)
        x = x.flatten(2).transpose(1, 2).index_select(1, self.patch_order)  # (B, N, C), sequence order
        signals: tuple[torch.Tensor, torch.Tensor] | None = None
        for index, block in enumerate(self.blocks):
            attended, probe = self._attention(block, block.norm1(x), index)
            signals = probe or signals
            x = x + attended
            x = x + block.mlp(block.norm2(x))
        assert signals is not None, "the probe block is a full-attention block"
        scores, keys = signals
        tokens = x.shape[1] // self.merge_unit
        merged = self.merger.mlp(self.merger.ln_q(x).reshape(batch, tokens, self.merge_unit * self.width))
        # Patch signals -> merged tokens (m*m consecutive patches) -> raster order of the merged grid.
        token_scores = scores.reshape(batch, tokens, self.merge_unit).sum(dim=-1)
        token_keys = keys.reshape(batch, tokens, self.merge_unit, self.head_dim).mean(dim=2)
        order = self.reverse_index
        return MergedProbe(
            merged.index_select(1, order),
            token_scores.index_select(1, order),
            token_keys.index_select(1, order),
        )

    def _attention(
        self, block: Any, hidden: torch.Tensor, index: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """One block's attention on (B, N, C); the probe block also returns (scores, keys) per patch."""
        batch, tokens, _ = hidden.shape
        qkv = block.attn.qkv(hidden).reshape(batch, tokens, 3, self.heads, self.head_dim)
        query, key, value = qkv.unbind(2)  # (B, N, h, hd)
        rot_query = query * self.cos + _rotate_half(query) * self.sin
        rot_key = key * self.cos + _rotate_half(key) * self.sin
        probe = None
        if index in self.full_blocks:
            q, k, v = (t.transpose(1, 2) for t in (rot_query, rot_key, value))  # (B, h, N, hd)
            probs = F.softmax(torch.matmul(q, k.transpose(2, 3)) * self.head_dim**-0.5, dim=-1)
            context = torch.matmul(probs, v).transpose(1, 2)  # (B, N, h, hd)
            if index == self.probe_block:
                # The attention each patch receives: summed over heads, averaged over queries.
                probe = probs.sum(dim=1).mean(dim=1), key.mean(dim=2)
        else:
            context = self._window_attention(rot_query, rot_key, value)
        return block.attn.proj(context.reshape(batch, tokens, self.width)), probe

    def _window_attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Attention inside each window, the windows as a batch: (B, N, h, hd) -> (B, N, h, hd)."""
        batch, tokens = query.shape[:2]
        length = tokens // self.num_windows if self.uniform_windows else self.window_len

        def split(t: torch.Tensor) -> torch.Tensor:
            if not self.uniform_windows:
                t = t.index_select(1, self.window_gather)
            return t.reshape(batch, self.num_windows, length, self.heads, self.head_dim).transpose(2, 3)

        q, k, v = split(query), split(key), split(value)  # (B, W, h, L, hd)
        logits = torch.matmul(q, k.transpose(3, 4)) * self.head_dim**-0.5
        if not self.uniform_windows:
            logits = logits + self.window_pad
        context = torch.matmul(F.softmax(logits, dim=-1), v).transpose(2, 3)  # (B, W, L, h, hd)
        context = context.reshape(batch, self.num_windows * length, self.heads, self.head_dim)
        return context if self.uniform_windows else context.index_select(1, self.window_scatter)


class QwenVisionGraph(nn.Module):
    """The module exported as vision.onnx: the tower, then the token selection.

    pixel_values (B, 3, H, W) -> image_embeds (B, K, H_llm), keep_indices (B, D) int64.
    The merger already projects to the language model's width: no projector follows.
    """

    def __init__(self, tower: QwenVisionTower, selector: nn.Module):
        super().__init__()
        self.tower = tower
        self.selector = selector

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probe = self.tower(pixel_values)
        return self.selector(probe.hidden, probe.scores, probe.keys)
