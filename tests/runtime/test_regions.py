"""Kept tokens mapped back to rectangles of the camera frame, through each preprocessing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from bundles import sample_bundle, sample_qwen_bundle

from zipvlm.bundle.format import Bundle, PreprocessSpec, VisionSection
from zipvlm.runtime.regions import kept_boxes, model_to_frame


def described(preprocess: PreprocessSpec, vision: VisionSection) -> Bundle:
    return dataclasses.replace(sample_bundle(Path("unused")), preprocess=preprocess, vision=vision)


CLIP = PreprocessSpec(
    336,
    True,
    False,
    {"shortest_edge": 336},
    "bicubic",
    {"height": 336, "width": 336},
    1 / 255,
    (0.5,) * 3,
    (0.5,) * 3,
)
SIGLIP = PreprocessSpec(
    384, True, False, {"height": 384, "width": 384}, "bicubic", None, 1 / 255, (0.5,) * 3, (0.5,) * 3
)
PADDED = PreprocessSpec(
    336,
    True,
    True,
    {"shortest_edge": 336},
    "bicubic",
    {"height": 336, "width": 336},
    1 / 255,
    (0.5,) * 3,
    (0.5,) * 3,
)


def test_clip_patches_map_into_the_centre_crop_of_the_frame():
    # 640x480 -> shortest edge 336 -> 448x336 -> crop 56 px each side -> x in [80, 560] of the frame
    assert model_to_frame(CLIP, 480, 640) == pytest.approx((640 / 448, 480 / 336, 80.0, 0.0))
    bundle = described(CLIP, VisionSection("clip", True, 336, 14, 577, -2, 1))
    assert kept_boxes(np.array([0, 1, 24, 25, 576]), bundle, 480, 640) == [  # CLS has no patch
        (80, 0, 100, 20),
        (540, 0, 560, 20),
        (80, 20, 100, 40),
        (540, 460, 560, 480),
    ]


def test_siglip_and_padded_frames_map_back_through_resize_and_padding():
    bundle = described(SIGLIP, VisionSection("siglip", False, 384, 14, 729, -1, 26))
    assert kept_boxes(np.array([0]), bundle, 480, 640) == [(0, 0, 23, 18)]
    # pad 640x480 to 640x640 (80 px bars top and bottom), resize to 336: patch 0 starts at y = -80
    scale = 640 / 336
    assert model_to_frame(PADDED, 480, 640) == pytest.approx((scale, scale, 0.0, -80.0))


def test_qwen_merged_tokens_map_to_28_px_cells_of_the_resized_frame():
    # 640x480 frames resize to 644x476: 23 x 17 merged tokens of 28 px, scaled back by 640/644, 480/476.
    bundle = sample_qwen_bundle(Path("unused"))
    sx, sy = 640 / 644, 480 / 476
    assert model_to_frame(bundle.preprocess, 480, 640) == pytest.approx((sx, sy, 0.0, 0.0))
    assert kept_boxes(np.array([0, 22, 23, 390]), bundle, 480, 640) == [
        (0, 0, round(28 * sx), round(28 * sy)),  # token 0: the top-left cell (no CLS on Qwen)
        (round(616 * sx), 0, 640, round(28 * sy)),  # token 22: the end of the first row
        (0, round(28 * sy), round(28 * sx), round(56 * sy)),  # token 23: the second row
        (round(616 * sx), round(448 * sy), 640, 480),  # the last token: the bottom-right cell
    ]
