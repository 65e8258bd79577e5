"""numpy preprocessing reproduces the folder's Hugging Face image processor (PIL backend).

Stated tolerance: resizing is bit-identical to Pillow's uint8 result; pixel_values
differ from the processor's by float32 rounding only (atol 1e-6).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAMILIES
from images import photo

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.export.manifest import preprocess_spec
from zipvlm.runtime.preprocess import FILTERS, preprocess, resize

ATOL = 1e-6
SIZES = [
    (480, 640),
    (1080, 1920),
    (720, 1280),
    (640, 480),
    (500, 375),
    (336, 336),
    (100, 150),
    (2000, 300),
    (300, 2000),
]


@pytest.fixture(scope="module")
def setups(tiny_folders):
    from transformers import AutoImageProcessor

    out = {}
    for family, folder in tiny_folders.items():
        pre = json.loads((folder / "preprocessor_config.json").read_text())
        out[family] = (AutoImageProcessor.from_pretrained(folder), preprocess_spec(pre, 336))
    return out


def hf_pixels(processor, image_rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return processor(Image.fromarray(image_rgb), return_tensors="np")["pixel_values"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_matches_the_hf_processor(setups, family, height, width):
    processor, spec = setups[family]
    bgr = photo(height, width, seed=height % 7)
    want = hf_pixels(processor, np.ascontiguousarray(bgr[:, :, ::-1]))
    got = preprocess(bgr, spec)
    assert got.shape == want.shape == (1, 3, 336, 336) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_grayscale_and_alpha_are_converted_like_the_processor(setups, family):
    processor, spec = setups[family]
    bgr = photo(240, 320, seed=3)
    gray = bgr[:, :, 1].copy()
    np.testing.assert_allclose(preprocess(gray, spec), hf_pixels(processor, gray), atol=ATOL, rtol=0)
    alpha = np.broadcast_to((np.arange(320) * 255 // 319).astype(np.uint8), (240, 320))
    bgra = np.dstack([bgr, alpha])  # fully transparent to opaque, left to right
    rgba = np.ascontiguousarray(bgra[:, :, [2, 1, 0, 3]])
    np.testing.assert_allclose(preprocess(bgra, spec), hf_pixels(processor, rgba), atol=ATOL, rtol=0)


def test_resize_is_bit_identical_to_pillow_in_every_direction():
    from PIL import Image

    rng = np.random.default_rng(1)
    for _ in range(40):
        height, width, out_h, out_w = (int(v) for v in rng.integers(8, 260, 4))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        want = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BICUBIC))
        np.testing.assert_array_equal(resize(image, out_h, out_w), want)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "8-bit"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "shape"),
    ],
)
def test_unusable_arrays_are_refused(setups, image, message):
    with pytest.raises(ZipvlmError, match=message):
        preprocess(image, setups["clip-llama"][1])


def test_every_resample_filter_the_format_allows_is_implemented():
    from zipvlm.bundle.format import RESAMPLE_FILTERS

    assert set(FILTERS) == set(RESAMPLE_FILTERS)
