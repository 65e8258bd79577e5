"""Any-res preprocessing equals the folder's Hugging Face processor (PIL backend), pixel for pixel.

Stated tolerance: none (np.array_equal), on LLaVA-NeXT and LLaVA-OneVision, for several
camera sizes and grids; frames of another size follow the bundle's rule (their own views
where the graph is exact for them, else resized to the camera's size, warned once).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import ANYRES, CAMERA
from images import photo

from zipvlm.export.manifest import describe_bundle
from zipvlm.models.anyres import anyres_geometry, anyres_section, anyres_token_count
from zipvlm.models.llava import open_llava_folder
from zipvlm.models.visionzip import VisionZipConfig
from zipvlm.runtime import preprocess_anyres
from zipvlm.runtime.preprocess import pixel_values

SIZES = {
    "llava-next": [(640, 480), (672, 672), (1280, 720), (480, 640), (1008, 336), (300, 200)],
    "llava-onevision": [(640, 480), (1280, 720), (1920, 1080), (480, 640), (300, 200)],
}
CASES = [(name, size) for name in ANYRES for size in SIZES[name]]
ZIP = VisionZipConfig(54, 10)


def described(folder, camera: tuple[int, int], zip_config: VisionZipConfig | None = ZIP):
    """The bundle an export for this camera would describe (no graph is traced)."""
    llava = open_llava_folder(folder)
    geometry = anyres_geometry(llava, camera)
    section = anyres_section(llava, geometry, zip_config)
    tokens = anyres_token_count(llava, geometry, zip_config)
    return describe_bundle(folder, llava, zip_config, tokens, [2], {}, section)


@pytest.fixture(scope="module")
def processors(anyres_folders):
    from transformers import AutoImageProcessor

    return {name: AutoImageProcessor.from_pretrained(folder) for name, folder in anyres_folders.items()}


def hf_pixels(processor, bgr: np.ndarray) -> np.ndarray:
    from PIL import Image

    return processor(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])), return_tensors="np")[
        "pixel_values"
    ]


@pytest.fixture(autouse=True)
def forget_warnings():
    preprocess_anyres._warned.clear()


@pytest.mark.parametrize(("name", "size"), CASES)
def test_views_equal_the_hf_processor_for_the_camera_size(anyres_folders, processors, name, size):
    bundle = described(anyres_folders[name], size)
    bgr = photo(size[1], size[0], seed=size[0] % 7)
    got = pixel_values(bgr, bundle)
    want = hf_pixels(processors[name], bgr)
    views = bundle.anyres.num_views
    assert got.shape == want.shape == (1, views, 3, bundle.vision.image_size, bundle.vision.image_size)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_a_frame_of_another_size_on_the_same_grid_is_cut_exactly_for_its_own_size(
    anyres_folders, processors, caplog
):
    bundle = described(anyres_folders["llava-next"], CAMERA)
    bgr = photo(720, 1280, seed=2)  # 2x2 crops, like 640x480: the VisionZip layout is the same
    with caplog.at_level(logging.WARNING):
        got = pixel_values(bgr, bundle)
    assert np.array_equal(got, hf_pixels(processors["llava-next"], bgr)) and not caplog.records


@pytest.mark.parametrize(("name", "size"), [("llava-next", (1008, 336)), ("llava-onevision", (1280, 720))])
def test_a_frame_that_needs_another_grid_is_resized_to_the_camera_with_one_warning(
    anyres_folders, processors, caplog, name, size
):
    from PIL import Image

    bundle = described(anyres_folders[name], CAMERA)
    bgr = photo(size[1], size[0], seed=4)
    with caplog.at_level(logging.WARNING):
        first = pixel_values(bgr, bundle)
        again = pixel_values(bgr, bundle)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).resize(CAMERA, Image.BICUBIC))
    assert np.array_equal(first, hf_pixels(processors[name], np.ascontiguousarray(resized[:, :, ::-1])))
    assert np.array_equal(first, again)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, messages
    assert f"frames of {size[0]}x{size[1]}" in messages[0] and "resizing them to 640x480" in messages[0]
    assert "--image-size" in messages[0]


def test_a_no_zip_graph_fits_only_frames_with_its_unpadded_grid(anyres_folders, caplog):
    bundle = described(anyres_folders["llava-next"], CAMERA, zip_config=None)
    with caplog.at_level(logging.WARNING):
        same_aspect = pixel_values(photo(960, 1280, seed=1), bundle)  # 4:3 like the camera: exact
        assert not caplog.records
        wider = pixel_values(photo(720, 1280, seed=1), bundle)  # 2x2 too, but 28 token rows, not 36
    assert same_aspect.shape == wider.shape == (1, 5, 3, 336, 336)
    assert len(caplog.records) == 1 and "resizing them to 640x480" in caplog.records[0].getMessage()
