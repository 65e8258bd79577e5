"""Any-res geometry for a fixed frame size: grids, padding, token counts, kept tokens on the frame.

The token counts are what transformers feeds LLaVA-NeXT-7B (CLIP-336/14) and
LLaVA-OneVision (SigLIP-384/14, anyres_max_9); tests/models/test_anyres_graph.py checks
the same geometry against transformers' own packing on the tiny models.
"""

from __future__ import annotations

import pytest

from zipvlm.bundle.anyres import VISIONZIP_LAYOUT, AnyresGeometry, Box, max_crops_area, select_best_resolution
from zipvlm.bundle.errors import ModelFolderError
from zipvlm.models.tiny import NEXT_GRIDS, ONEVISION_GRIDS

NEXT_PINPOINTS = tuple((r * 336, c * 336) for r, c in NEXT_GRIDS)
ONEVISION_PINPOINTS = tuple((r * 384, c * 384) for r, c in ONEVISION_GRIDS)


def next_at(width: int, height: int) -> AnyresGeometry:
    return AnyresGeometry(width, height, 336, 14, NEXT_PINPOINTS)


def onevision_at(width: int, height: int) -> AnyresGeometry:
    return AnyresGeometry(width, height, 384, 14, ONEVISION_PINPOINTS, 9)


@pytest.mark.parametrize(
    ("size", "grid", "tokens"),
    [
        ((672, 672), (2, 2), 576 + 48 * 48 + 48),  # the paper's 2,880 = 5 x 576, plus 48 newlines
        ((640, 480), (2, 2), 576 + 36 * 48 + 36),
        ((1280, 720), (2, 2), 576 + 28 * 48 + 28),  # 27.4 rows of padding, rounded: 28 kept
        ((480, 640), (2, 2), 576 + 48 * 36 + 48),
        ((1008, 336), (1, 3), 576 + 24 * 72 + 24),
        ((336, 336), (1, 2), 576 + 24 * 24 + 24),  # unpad drops the empty half
    ],
)
def test_llava_next_grids_and_transformers_token_counts(size, grid, tokens):
    geometry = next_at(*size)
    assert geometry.grid == grid and geometry.num_views == 1 + grid[0] * grid[1]
    assert geometry.downscaled_grid is None
    assert geometry.num_full_tokens(576) == tokens


@pytest.mark.parametrize(
    ("size", "views", "tokens", "downscaled"),
    [
        ((640, 480), 5, 2929, None),
        ((672, 672), 5, 3699, None),
        ((1280, 720), 9, 5967, None),
        ((1920, 1080), 16, 7269, (60, 108)),  # 75 x 135 crop tokens are over 1.1 x 9 views: bilinear
        ((300, 200), 2, 729 + 19 * 27 + 19, None),  # one crop; unpad keeps 27 - 2 * 4 rows, not 18
    ],
)
def test_onevision_views_anyres_max_9_and_token_counts(size, views, tokens, downscaled):
    geometry = onevision_at(*size)
    assert geometry.num_views == views
    assert geometry.downscaled_grid == downscaled
    assert geometry.num_full_tokens(729) == tokens


def test_the_frame_is_resized_into_its_pinpoint_and_padded_black_evenly():
    geometry = next_at(640, 480)  # 672x672 pinpoint; 672x504 inside it; 84 px black above and below
    assert geometry.best_resolution == (672, 672)
    assert geometry.placement == Box(84, 0, 504, 672)
    assert [geometry.crop_box(i) for i in (0, 3)] == [Box(0, 0, 336, 336), Box(336, 336, 336, 336)]
    assert onevision_at(1280, 720).placement == Box(0, 85, 768, 1366)  # the odd pixel goes right


def test_on_equal_effective_and_wasted_area_the_first_pinpoint_wins():
    assert select_best_resolution(100, 100, ((336, 672), (672, 336))) == (336, 672)
    assert select_best_resolution(100, 100, ((672, 336), (336, 672))) == (672, 336)


def test_the_visionzip_graph_fits_every_size_of_its_grid_and_transformers_only_its_own_box():
    camera = next_at(640, 480)
    assert camera.same_graph(next_at(1280, 720), VISIONZIP_LAYOUT)  # same 2x2 grid
    assert not camera.same_graph(next_at(1280, 720), "transformers")  # 28 rows, not 36
    assert camera.same_graph(next_at(1280, 960), "transformers")  # same aspect: same unpadded box
    assert not camera.same_graph(next_at(1008, 336), VISIONZIP_LAYOUT)  # a 1x3 grid


def test_kept_patches_map_to_the_whole_frame_or_their_crop_cell():
    geometry = next_at(640, 480)  # the frame is 672x504 on the canvas, from y = 84: 1 canvas px = 640/672
    scale = 640 / 672
    assert geometry.patch_box(0, 0) == pytest.approx((0, 0, 640 / 24, 480 / 24))  # view 0: squashed frame
    assert geometry.patch_box(1, 5 * 24) is None  # crop 0's rows 0-5 lie on the black bar above the frame
    assert geometry.patch_box(1, 6 * 24) == pytest.approx((0, 0, 14 * scale, 14 * scale))
    # crop 3 (bottom right), row 11, column 23: canvas y 490..504, x 658..672
    assert geometry.patch_box(4, 11 * 24 + 23) == pytest.approx(
        (658 * scale, (490 - 84) * scale, 640, (504 - 84) * scale)
    )


def test_visionzip_rows_follow_the_authors_order():
    geometry = AnyresGeometry(56, 28, 28, 14, ((28, 56),))  # 1x2 crops of 2x2 patches, CLIP
    keep = [[0, 2], [0, 4], [0, 1]]  # per view: CLS + one patch, D = 2, C = 1
    rows = geometry.visionzip_rows(keep, has_cls=True, per_view=3)
    # base: rows 0, 1 (2 is its contextual); crop patches by raster cell of the 2x4 grid:
    # crop 0 patch 3 -> cell (1, 1) = 5, crop 1 patch 0 -> cell (0, 2) = 2: crop 1's first
    assert rows == {(0, 0): 0, (0, 2): 1, (2, 1): 3, (1, 4): 4, (1, 0): 5, (2, 0): 6}


def test_anyres_max_must_name_a_positive_number():
    assert max_crops_area(None) == 9 and max_crops_area("anyres_max_4") == 4
    for bad in ("anyres", "anyres_max_x", "anyres_max_0"):
        with pytest.raises(ModelFolderError, match="anyres_max_N"):
            max_crops_area(bad)
