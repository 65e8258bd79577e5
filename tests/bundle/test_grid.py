"""The processor's rounding of a frame size to a patch grid, and the grid's merged tokens."""

from __future__ import annotations

import pytest

from zipvlm.bundle.grid import PatchGrid, smart_resize

BOUNDS = [(56 * 56, 28 * 28 * 1280), (3136, 12845056), (200 * 28 * 28, 400 * 28 * 28)]
SIZES = [
    (480, 640),
    (448, 448),
    (720, 1280),
    (1080, 1920),
    (517, 333),
    (40, 50),
    (14, 2800),
    (6, 28),
    (98, 98),
]


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("low", "high"), BOUNDS)
def test_smart_resize_equals_the_processors(height, width, low, high):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    assert smart_resize(height, width, 28, low, high) == hf_smart_resize(height, width, 28, low, high)


def test_halves_round_to_even_as_python_does():
    assert smart_resize(462, 462, 28, 56 * 56, 10**8) == (448, 448)  # 16.5 -> 16
    assert smart_resize(490, 490, 28, 56 * 56, 10**8) == (504, 504)  # 17.5 -> 18


def test_an_aspect_ratio_above_200_is_refused():
    with pytest.raises(ValueError, match="aspect ratio 201 is above 200"):
        smart_resize(10, 2010, 28, 56 * 56, 10**8)


def test_the_grid_counts_patches_and_merged_tokens():
    grid = PatchGrid(height=476, width=644, patch_size=14, merge_size=2)
    assert (grid.grid_h, grid.grid_w, grid.num_patches) == (34, 46, 1564)
    assert (grid.merged_h, grid.merged_w, grid.num_merged, grid.cell) == (17, 23, 391, 28)
