"""Qwen2.5-VL's 3D (t, h, w) rotary positions for prompts whose images VisionZip pruned.

transformers' `get_rope_index` for still images, restated: a text token sits at
(c, c, c) and advances c by one; an image whose merged grid is mh x mw, starting
at c, places its merged token u at (c, c + u // mw, c + u % mw) and then advances
c by max(mh, mw); the i-th generated token sits at c_end + i on all three axes.

With VisionZip an image holds K = D + C rows, not mh * mw: a kept row keeps its
merged token's position, a contextual row takes its target's, and c still
advances by max(mh, mw). So every text token, and every generated one, sits where
it sits in the unpruned sequence: pruning changes what the model attends to, not
where anything is (docs/design.md, "Qwen2.5-VL"). Images follow each other in the
prompt's order, each advancing c by its own grid, as several images do in
transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zipvlm.bundle.format import Bundle
from zipvlm.bundle.grid import PatchGrid
from zipvlm.bundle.token_order import image_token_order


@dataclass(frozen=True)
class RopePositions:
    """The positions of a prompt and of everything after it."""

    prompt: np.ndarray  # (3, P) int64: (t, h, w) of each prompt token
    next_position: int  # the first token after the prompt, on all three axes

    @property
    def length(self) -> int:
        return self.prompt.shape[1]

    @property
    def rope_delta(self) -> int:
        """What a token after the prompt adds to its 1D index (transformers' rope_deltas)."""
        return self.next_position - self.length

    def span(self, start: int, stop: int) -> np.ndarray:
        """(3, stop - start) int64: the positions of sequence indices start .. stop - 1, prompt
        tokens from `prompt`, later ones (answers, follow-ups) at index + rope_delta."""
        index = np.arange(start, stop)
        out = np.broadcast_to(index + self.rope_delta, (3, len(index))).copy()
        inside = index < self.length
        out[:, inside] = self.prompt[:, index[inside]]
        return out


def rope_positions(
    ids: Sequence[int], image_token_id: int, images: Sequence[np.ndarray], grid: PatchGrid
) -> RopePositions:
    """The positions of `ids`, whose image tokens hold `images` in order.

    `images[j]` is the merged-token index of each row of image j (its length is the
    number of image tokens that image takes in `ids`); every image has `grid`.
    """
    is_image = np.asarray(ids) == image_token_id
    positions = np.zeros((3, len(is_image)), np.int64)
    if int(is_image.sum()) != sum(len(rows) for rows in images):
        raise ValueError(
            f"the prompt holds {int(is_image.sum())} image tokens, the images "
            f"{sum(len(rows) for rows in images)} rows"
        )
    current, image, row = 0, 0, 0
    for i in range(len(is_image)):
        if not is_image[i]:
            positions[:, i] = current
            current += 1
            continue
        token = int(images[image][row])
        positions[:, i] = current, current + token // grid.merged_w, current + token % grid.merged_w
        row += 1
        if row == len(images[image]):
            current += max(grid.merged_h, grid.merged_w)
            image, row = image + 1, 0
    return RopePositions(positions, current)


def bundle_positions(
    bundle: Bundle, ids: Sequence[int], keep_indices: Sequence[np.ndarray]
) -> RopePositions | None:
    """The 3D positions of a prompt about images whose vision-graph `keep_indices` rows are given,
    in prompt order; None for a bundle whose language model counts positions itself (LLaVA)."""
    if bundle.qwen is None:
        return None
    grid, selection = bundle.qwen.grid, bundle.selection
    contextual = (selection.contextual or 0) if selection.enabled else 0
    rows = [image_token_order(keep, grid.num_merged, contextual) for keep in keep_indices]
    return rope_positions(ids, bundle.language.image_token_id, rows, grid)
