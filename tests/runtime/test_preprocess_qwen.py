"""Qwen2.5-VL frames: the numpy preprocessing equals Qwen2VLImageProcessor bit for bit.

The processor (PIL backend) gives flattened patches (N, 1176); the vision graph takes
the image (1, 3, H, W), which patchifies to exactly those rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from bundles import sample_qwen_bundle
from images import photo
from reference_qwen import patchify

from zipvlm.runtime import preprocess
from zipvlm.runtime.preprocess import pixel_values

SIZES = [(480, 640), (448, 448), (720, 1280), (517, 333), (1080, 1920), (40, 50), (300, 2000)]


@pytest.fixture(scope="module")
def processor(qwen_folder):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(qwen_folder)


def bundle_for(processor, height: int, width: int):
    """A bundle exported for frames of height x width, whose processor is `processor`."""
    assert (processor.size["shortest_edge"], processor.size["longest_edge"]) == (56 * 56, 28 * 28 * 1280)
    return sample_qwen_bundle(Path("unused"), camera=(width, height))


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_equals_the_processor_bit_for_bit(processor, height, width):
    from PIL import Image

    bgr = photo(height, width, seed=height % 5)
    bundle = bundle_for(processor, height, width)
    want = processor(images=[Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))], return_tensors="np")
    got = pixel_values(bgr, bundle)
    qwen = bundle.qwen
    assert got.shape == (1, 3, qwen.image_height, qwen.image_width) and got.dtype == np.float32
    assert want["image_grid_thw"].tolist() == [[1, qwen.grid.grid_h, qwen.grid.grid_w]]
    np.testing.assert_array_equal(patchify(got[0]), want["pixel_values"])


def test_a_frame_of_another_size_is_resized_to_the_grid_and_said_once(processor, caplog):
    bundle = bundle_for(processor, 480, 640)  # 644x476
    frame = photo(720, 1280, seed=1)
    preprocess._note_other_size.cache_clear()  # said once per process: start from none said
    with caplog.at_level(logging.WARNING, logger="zipvlm.runtime.preprocess"):
        first = pixel_values(frame, bundle)
        again = pixel_values(frame, bundle)
        pixel_values(photo(480, 640, seed=1), bundle)  # the exported size: nothing to say
    assert first.shape == (1, 3, 476, 644) and np.array_equal(first, again)
    assert [record.getMessage() for record in caplog.records] == [
        "1280x720 frames are resized to this bundle's fixed 644x476 grid (exported for 640x480 "
        "frames); the model's own processor would give them a 1288x728 grid"
    ]


@pytest.mark.parametrize("channels", [None, 1, 4])
def test_gray_and_alpha_frames_are_converted(processor, channels):
    bgr = photo(480, 640, seed=2)
    frame = (
        bgr[:, :, 0]
        if channels is None
        else bgr[:, :, :1]
        if channels == 1
        else np.dstack([bgr, bgr[:, :, 0]])
    )
    assert pixel_values(frame, bundle_for(processor, 480, 640)).shape == (1, 3, 476, 644)
