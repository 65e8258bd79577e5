"""Qwen2.5-VL's 3D positions: transformers' get_rope_index unpruned, the unpruned ones kept when pruned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import sample_bundle, sample_qwen_bundle

from zipvlm.bundle.grid import PatchGrid
from zipvlm.bundle.token_order import image_token_order
from zipvlm.runtime.mrope import bundle_positions, rope_positions

IMAGE = 5  # the tiny tokenizer's <|image_pad|>
GRID = PatchGrid(476, 644, 14, 2)  # 17 x 23 merged tokens
M = GRID.num_merged


@pytest.fixture(scope="module")
def rope_index(qwen_folder):
    """transformers' get_rope_index of the tiny model: (ids, images) -> (positions (3, S), next)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_folder).model

    def positions(ids: list[int], images: int) -> tuple[np.ndarray, int]:
        input_ids = torch.tensor([ids])
        grids = torch.tensor([[1, GRID.grid_h, GRID.grid_w]] * images)
        with torch.no_grad():
            found, delta = model.get_rope_index(input_ids, (input_ids == IMAGE).int(), grids)
        return found[:, 0].numpy(), len(ids) + int(delta[0, 0])

    return positions


def prompt(runs: list[int]) -> list[int]:
    """Text, then per image <|vision_start|>, `run` image tokens, <|vision_end|> and some text."""
    ids = [2, 17, 9]
    for run in runs:
        ids += [3, *([IMAGE] * run), 4, 30, 31]
    return ids + [40, 41, 42]


@pytest.mark.parametrize("images", [1, 2, 3])
def test_unpruned_positions_equal_get_rope_index(rope_index, images):
    ids = prompt([M] * images)
    ours = rope_positions(ids, IMAGE, [np.arange(M)] * images, GRID)
    want, next_position = rope_index(ids, images)
    np.testing.assert_array_equal(ours.prompt, want)
    assert ours.next_position == next_position


def test_an_image_at_the_end_of_the_prompt(rope_index):
    ids = [2, 17, 3, *([IMAGE] * M)]
    ours = rope_positions(ids, IMAGE, [np.arange(M)], GRID)
    want, next_position = rope_index(ids, 1)
    np.testing.assert_array_equal(ours.prompt, want)
    assert ours.next_position == next_position == 3 + max(GRID.merged_h, GRID.merged_w)


@pytest.mark.parametrize(("dominant", "contextual"), [(36, 7), (1, 1), (M - 2, 1), (200, 100)])
def test_pruned_tokens_keep_their_unpruned_positions(rope_index, dominant, contextual):
    rng = np.random.default_rng(dominant)
    keeps = [np.sort(rng.choice(M, dominant, replace=False)) for _ in range(2)]
    rows = [image_token_order(keep, M, contextual) for keep in keeps]
    full_ids, ids = prompt([M, M]), prompt([dominant + contextual] * 2)
    full, next_position = rope_index(full_ids, 2)
    pruned = rope_positions(ids, IMAGE, rows, GRID)
    full_image = np.asarray(full_ids) == IMAGE
    starts = np.flatnonzero(full_image)[::M]  # the first column of each unpruned image
    # Text: the unpruned text positions, in order; a row: the unpruned column of its merged token.
    is_image = np.asarray(ids) == IMAGE
    np.testing.assert_array_equal(pruned.prompt[:, ~is_image], full[:, ~full_image])
    columns = np.concatenate([start + row for start, row in zip(starts, rows, strict=True)])
    np.testing.assert_array_equal(pruned.prompt[:, is_image], full[:, columns])
    assert pruned.next_position == next_position


def test_contextual_rows_take_their_targets_positions():
    keep = np.array([0, 5, 9])
    rows = image_token_order(keep, 20, 4)
    rest = [i for i in range(20) if i not in keep]  # 17 tokens: step 4 -> slots 0, 4, 8, 12
    assert rows.tolist() == [0, 5, 9, rest[0], rest[4], rest[8], rest[12]]
    assert image_token_order(keep, 20, 0).tolist() == [0, 5, 9]


def test_tokens_after_the_prompt_continue_the_unpruned_sequence():
    ids = prompt([10])
    positions = rope_positions(ids, IMAGE, [np.arange(10)], GRID)
    assert positions.next_position == positions.length - 10 + max(GRID.merged_h, GRID.merged_w)
    span = positions.span(positions.length - 2, positions.length + 3)
    np.testing.assert_array_equal(span[:, :2], positions.prompt[:, -2:])
    np.testing.assert_array_equal(span[:, 2:], np.tile(positions.next_position + np.arange(3), (3, 1)))


def test_image_rows_must_match_the_prompts_image_tokens():
    with pytest.raises(ValueError, match="holds 10 image tokens, the images 9 rows"):
        rope_positions(prompt([10]), IMAGE, [np.arange(9)], GRID)


def test_bundle_positions_follow_the_bundles_selection():
    assert bundle_positions(sample_bundle(Path("unused")), [1, 2], [np.arange(3)]) is None
    zipped = sample_qwen_bundle(Path("unused"))  # D = 36, C = 7 on 644x476
    keep = np.arange(0, 72, 2)
    ids = prompt([43])
    got = bundle_positions(zipped, ids, [keep])
    want = rope_positions(ids, IMAGE, [image_token_order(keep, M, 7)], GRID)
    np.testing.assert_array_equal(got.prompt, want.prompt)
    full = sample_qwen_bundle(Path("unused"), dominant=None, contextual=None)
    got = bundle_positions(full, prompt([M]), [np.arange(M)])
    np.testing.assert_array_equal(got.prompt, rope_positions(prompt([M]), IMAGE, [np.arange(M)], GRID).prompt)
