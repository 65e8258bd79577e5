"""Qwen2.5-VL's fixed-grid tower equals transformers' tower, and its VisionZip the slow reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import sample_qwen_bundle
from images import photo
from reference_qwen import NEAR_TIE, probe_tower, reference_selection

from zipvlm.bundle.grid import PatchGrid
from zipvlm.models.qwen25vl import load_vision_graph, open_qwen_folder
from zipvlm.models.qwen_layout import tower_layout
from zipvlm.models.visionzip import VisionZipConfig
from zipvlm.runtime.preprocess import pixel_values

GRIDS = {"640x480": PatchGrid(476, 644, 14, 2), "448x448": PatchGrid(448, 448, 14, 2)}
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(qwen_folder):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_folder, attn_implementation="eager").eval()


def images(grid: PatchGrid, seeds: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Photos preprocessed for `grid`, (B, 3, H, W)."""
    bundle = sample_qwen_bundle(Path("unused"), camera=(grid.width, grid.height))
    return np.concatenate([pixel_values(photo(grid.height, grid.width, seed=s), bundle) for s in seeds])


@pytest.mark.parametrize(
    ("height", "width", "uniform"),
    [(476, 644, False), (448, 448, True), (728, 1288, False), (56, 56, True), (896, 896, True)],
)
def test_the_window_layout_equals_transformers(height, width, uniform):
    from transformers.vision_utils import get_vision_window_index

    grid = PatchGrid(height, width, 14, 2)
    layout = tower_layout(grid, 112)
    window_index, cu_seqlens = get_vision_window_index(
        torch.tensor([[1, grid.grid_h, grid.grid_w]]), spatial_merge_size=2, window_size=112, patch_size=14
    )
    assert layout.window_index.tolist() == window_index.tolist()
    assert np.cumsum(layout.window_sizes).tolist() == torch.unique_consecutive(cu_seqlens)[1:].tolist()
    assert layout.uniform_windows == uniform  # all windows full: attention in windows is a reshape


@pytest.mark.parametrize("camera", GRIDS)
def test_every_merged_token_equals_transformers_image_features(qwen_folder, model, camera):
    grid = GRIDS[camera]
    graph = load_vision_graph(open_qwen_folder(qwen_folder), grid, None)
    pixels = images(grid)
    with torch.no_grad():
        embeds, keep = graph(torch.from_numpy(pixels))
    for b in range(len(pixels)):
        _, _, hidden = probe_tower(model, pixels[b])
        np.testing.assert_allclose(embeds[b].numpy(), hidden, atol=ATOL, rtol=0)
        assert keep[b].tolist() == list(range(grid.num_merged))


@pytest.fixture(scope="module")
def probed(model) -> tuple[np.ndarray, list]:
    """Two 640x480 photos and the reference's probe of each (scores, keys, hidden)."""
    pixels = images(GRIDS["640x480"], seeds=(3, 4))
    return pixels, [probe_tower(model, image) for image in pixels]


@pytest.mark.parametrize(("dominant", "contextual"), [(36, 7), (54, 10), (100, 1), (300, 90)])
def test_visionzip_on_merged_tokens_equals_the_reference(qwen_folder, probed, dominant, contextual):
    pixels, probes = probed
    graph = load_vision_graph(
        open_qwen_folder(qwen_folder), GRIDS["640x480"], VisionZipConfig(dominant, contextual)
    )
    with torch.no_grad():
        embeds, keep = graph(torch.from_numpy(pixels))
    for b, probe in enumerate(probes):
        ref = reference_selection(*probe, dominant, contextual)
        assert ref.margin > NEAR_TIE, f"image {b}: near tie at rank D ({ref.margin:.1e}); pick another image"
        assert keep[b].tolist() == ref.keep
        np.testing.assert_allclose(embeds[b].numpy(), ref.tokens, atol=ATOL, rtol=0)


def test_equal_scores_and_keys_keep_the_lowest_indices(qwen_folder, tmp_path):
    """A probe block that attends uniformly with equal keys: every score ties, every similarity too."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tied = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_folder)
    attention = tied.model.visual.blocks[-1].attn.qkv
    width = attention.in_features
    with torch.no_grad():
        attention.weight[: 2 * width] = 0  # q and k rows: zero logits, keys = k bias
        attention.bias[:width] = 0
        attention.bias[width : 2 * width] = 1.0
    tied.save_pretrained(tmp_path)
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_text((qwen_folder / name).read_text())
    grid = GRIDS["448x448"]
    graph = load_vision_graph(open_qwen_folder(tmp_path), grid, VisionZipConfig(20, 4))
    with torch.no_grad():
        embeds, keep = graph(torch.from_numpy(images(grid)))
    assert keep.tolist() == [list(range(20))] * 2
    ref = reference_selection(*probe_tower(tied.eval(), images(grid)[0]), 20, 4)
    assert ref.keep == list(range(20)) and ref.margin == 0.0
    np.testing.assert_allclose(embeds[0].numpy(), ref.tokens, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("preprocessor", "grid_hw"),
    [
        ({}, (728, 1316)),  # the processor's class defaults: at most 1,003,520 px
        ({"min_pixels": 3136, "max_pixels": 12845056}, (1092, 1932)),  # the hub checkpoints'
        ({"size": {"shortest_edge": 3136, "longest_edge": 12845056}}, (1092, 1932)),  # newer saves
    ],
)
def test_the_grid_takes_the_folders_own_pixel_bounds(qwen_folder, tmp_path, preprocessor, grid_hw):
    import json
    import shutil

    folder = shutil.copytree(qwen_folder, tmp_path / "folder")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("min_pixels", "max_pixels")} | preprocessor
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    grid = open_qwen_folder(folder).grid((1920, 1080))
    assert (grid.height, grid.width) == grid_hw
