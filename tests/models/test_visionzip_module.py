"""The PyTorch VisionZip module equals the slow reference: same indices, features 1e-4."""

from __future__ import annotations

import pytest
import torch
from cases import cases_for
from conftest import FAMILIES, pixels, reference_model
from reference import reference_visionzip

from zipvlm.models.llava import load_vision_graph, open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig, contextual_targets

ATOL = 1e-4
ALL_CASES = [(family, d, c) for family in FAMILIES for d, c in cases_for(family)]


def run_module(folder, dominant, contextual, images):
    graph = load_vision_graph(
        open_llava_folder(folder), VisionZipConfig(dominant, contextual), attn_implementation="eager"
    )  # the reference's kernel
    with torch.no_grad():
        return graph(images)


@pytest.mark.parametrize(("family", "dominant", "contextual"), ALL_CASES)
def test_module_matches_reference(tiny_folders, family, dominant, contextual):
    images = pixels(3, seed=dominant + contextual)  # batch 3, different images
    embeds, keep = run_module(tiny_folders[family], dominant, contextual, images)
    ref = reference_visionzip(reference_model(tiny_folders[family]), images, dominant, contextual)
    assert keep.tolist() == ref.keep_indices
    assert embeds.shape == (3, dominant + contextual, 64)
    torch.testing.assert_close(embeds, ref.image_embeds, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_kept_indices_are_ascending_and_clip_keeps_cls(tiny_folders, family):
    _, keep = run_module(tiny_folders[family], 54, 10, pixels(2, seed=7))
    assert (keep[:, 1:] > keep[:, :-1]).all()
    assert (keep[:, 0] == 0).all() == (family == "clip-llama")


@pytest.mark.parametrize("family", FAMILIES)
def test_ties_keep_lower_indices_and_join_first_target(tied_folders, family):
    dominant, contextual = 54, 10
    images = pixels(2, seed=3)
    embeds, keep = run_module(tied_folders[family], dominant, contextual, images)
    ref = reference_visionzip(reference_model(tied_folders[family]), images, dominant, contextual)
    assert keep.tolist() == [list(range(dominant))] * 2
    assert keep.tolist() == ref.keep_indices
    first_target = 0  # targets start at position 0 of the remaining tokens
    assert all(len(groups[first_target]) > 0 for groups in ref.assignment)
    assert all(not members for groups in ref.assignment for t, members in groups.items() if t != first_target)
    torch.testing.assert_close(embeds, ref.image_embeds, atol=ATOL, rtol=0)


def test_images_in_a_batch_are_independent(tiny_folders):
    images = pixels(3, seed=11)
    batch_embeds, batch_keep = run_module(tiny_folders["clip-llama"], 54, 10, images)
    one_embeds, one_keep = run_module(tiny_folders["clip-llama"], 54, 10, images[1:2])
    assert batch_keep[1].tolist() == one_keep[0].tolist()
    torch.testing.assert_close(batch_embeds[1], one_embeds[0], atol=ATOL, rtol=0)
    assert batch_keep[0].tolist() != batch_keep[1].tolist()


def test_contextual_targets_follow_the_step_rule():
    assert contextual_targets(523, 10) == [0, 52, 104, 156, 208, 260, 312, 364, 416, 468]
    assert contextual_targets(77, 76) == list(range(76))
    assert contextual_targets(100, 1) == [0]
