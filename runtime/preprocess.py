"""Image preprocessing that reproduces a Hugging Face image processor with numpy alone.

`pixel_values(image, bundle)` is the one entry: LLaVA bundles take the processor's
resize / crop / pad steps to a square (`preprocess`); Qwen2.5-VL bundles resize to
their fixed patch grid (`grid_preprocess`).

Hugging Face's processors (PIL backend) resize with Pillow, whose resampling is a
separable filter with its support stretched by the downscale factor (antialiased)
and fixed-point coefficients (22 fractional bits), rounding to uint8 after each
pass. OpenCV's INTER_CUBIC is a different filter, so the resize is written out
here with Pillow's arithmetic: the result is bit-identical to Pillow's uint8
image, and the float output matches the processor to float32 rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache

import numpy as np

from zipvlm.bundle.errors import ZipvlmError
from zipvlm.bundle.format import Bundle, PreprocessSpec, QwenSection
from zipvlm.bundle.grid import smart_resize

log = logging.getLogger(__name__)

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point coefficient precision for 8-bit images


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5  # Pillow's bicubic parameter
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


@lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int, resample: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's per-output-pixel taps: (first input index, int32 weights) for one axis."""
    kernel, support = FILTERS[resample]
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    centers = (np.arange(out_size) + 0.5) * scale
    starts = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    stops = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    taps = int((stops - starts).max())
    offsets = np.arange(taps)
    positions = starts[:, None] + offsets[None, :]
    valid = offsets[None, :] < (stops - starts)[:, None]
    weights = np.where(valid, kernel((positions - centers[:, None] + 0.5) * (1.0 / filter_scale)), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.where(totals != 0, weights / np.where(totals == 0, 1, totals), 0.0)
    fixed = np.where(weights < 0, -0.5, 0.5) + weights * (1 << PRECISION_BITS)
    return positions.clip(max=in_size - 1), fixed.astype(np.int64)


def _resample_axis(image: np.ndarray, out_size: int, axis: int, resample: str) -> np.ndarray:
    """One Pillow pass along `axis` (0 = rows, 1 = columns) of an (H, W, 3) uint8 image.

    Pillow accumulates in 32-bit integers, which never overflow for these weights.
    Each tap gathers whole rows (contiguous memory), so a column pass runs on the
    transposed image.
    """
    if axis == 1:
        flipped = np.ascontiguousarray(image.transpose(1, 0, 2))
        return np.ascontiguousarray(_resample_axis(flipped, out_size, 0, resample).transpose(1, 0, 2))
    positions, weights = _coefficients(image.shape[0], out_size, resample)
    total = np.full((out_size, *image.shape[1:]), 1 << (PRECISION_BITS - 1), np.int32)
    for tap in range(positions.shape[1]):
        total += image[positions[:, tap]] * weights[:, tap, None, None].astype(np.int32)
    return np.clip(total >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize(image: np.ndarray, height: int, width: int, resample: str = "bicubic") -> np.ndarray:
    """Pillow-identical resize of an (H, W, 3) uint8 RGB image.

    The uint8 rounding between the passes makes their order visible: Pillow 13
    resamples rows first when the height shrinks by more than twice as many pixels
    as the width does, columns first otherwise.
    """
    shrink_rows, shrink_cols = image.shape[0] - height, image.shape[1] - width
    axes = (0, 1) if shrink_rows > 0 and shrink_rows > 2 * shrink_cols else (1, 0)
    for axis in axes:
        size = height if axis == 0 else width
        if image.shape[axis] != size:
            image = _resample_axis(image, size, axis, resample)
    return image


def to_rgb(image: np.ndarray, channel_order: str = "BGR") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) RGB.

    Transparency is composited onto white, as transformers' convert_to_rgb does.
    """
    if image.dtype != np.uint8:
        raise ZipvlmError(f"expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
        raise ZipvlmError(f"expected an image of shape (H, W[, 1|3|4]), got {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    color = image[:, :, :3][:, :, ::-1] if channel_order == "BGR" else image[:, :, :3]
    if image.shape[2] == 4:
        return _composite_on_white(color, image[:, :, 3])
    return color


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Pillow's integer alpha_composite of `rgb` over opaque white (7-bit precision)."""
    a = alpha.astype(np.uint32)[:, :, None]
    mixed = rgb.astype(np.uint32) * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7)
    out = (((mixed >> 8) + mixed) >> 8) >> 7  # Pillow's rounded division by 255
    return np.where(a == 0, 255, out).astype(np.uint8)


def output_size(height: int, width: int, resize_rule: Mapping[str, int]) -> tuple[int, int]:
    if "shortest_edge" in resize_rule:
        short = resize_rule["shortest_edge"]
        if height <= width:
            return short, int(short * width / height)
        return int(short * height / width), short
    return resize_rule["height"], resize_rule["width"]


def _pad_square(image: np.ndarray, mean: tuple[float, float, float]) -> np.ndarray:
    """Centre the image on a square canvas filled with the mean colour (LLaVA's 'pad')."""
    height, width = image.shape[:2]
    side = max(height, width)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = [int(c * 255) for c in mean]
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def preprocess(image: np.ndarray, spec: PreprocessSpec, channel_order: str = "BGR") -> np.ndarray:
    """A decoded image (OpenCV's BGR by default) -> pixel_values (1, 3, S, S) float32."""
    rgb = to_rgb(image, channel_order)
    if spec.pad_to_square:
        rgb = _pad_square(rgb, spec.mean)
    return model_input(rgb, spec)[None]


def model_input(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The processor's per-image steps on (H, W, 3) uint8 RGB -> (3, S, S) float32: resize,
    centre crop, rescale and normalise."""
    if spec.resize is not None:
        height, width = rgb.shape[:2]
        rgb = resize(rgb, *output_size(height, width, spec.resize), spec.resample)
    if spec.center_crop is not None:
        crop_h, crop_w = spec.center_crop["height"], spec.center_crop["width"]
        top, left = (rgb.shape[0] - crop_h) // 2, (rgb.shape[1] - crop_w) // 2
        rgb = rgb[max(top, 0) : max(top, 0) + crop_h, max(left, 0) : max(left, 0) + crop_w]
    if rgb.shape[:2] != (spec.image_size, spec.image_size):
        raise ZipvlmError(
            f"preprocessing gave {rgb.shape[:2]}, the vision graph takes "
            f"{spec.image_size}x{spec.image_size}: check the manifest's preprocess"
        )
    return normalise(rgb, spec)


def normalise(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32: the rescale in float64 cast to float32, as
    transformers does (a float32 rescale differs by an ulp), then the normalisation in float32."""
    scaled = (rgb.astype(np.float64) * spec.rescale_factor).astype(np.float32)
    normalised = (scaled - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def grid_preprocess(image: np.ndarray, bundle: Bundle, channel_order: str = "BGR") -> np.ndarray:
    """Qwen2VLImageProcessor's steps to the bundle's fixed grid -> pixel_values (1, 3, H, W) float32.

    A frame of the exported camera size (any size the processor rounds to the grid)
    gets exactly the processor's pixels: Pillow's bicubic resize, the rescale in
    float64 cast to float32, then the normalisation in float32. Frames of another
    size are resized straight to the grid (the processor would give them another
    grid, which a static graph cannot take); that is logged once per size.
    """
    spec, qwen = bundle.preprocess, bundle.qwen
    assert qwen is not None, "a grid bundle has a qwen section"
    rgb = to_rgb(image, channel_order)
    _note_other_size(*rgb.shape[:2], qwen)
    rgb = resize(rgb, qwen.image_height, qwen.image_width, spec.resample)
    return normalise(rgb, spec)[None]


@lru_cache(maxsize=16)
def _note_other_size(height: int, width: int, qwen: QwenSection) -> None:
    """Log once per frame size that the processor would have resized it to another grid."""
    try:
        resized = smart_resize(height, width, qwen.grid.cell, qwen.min_pixels, qwen.max_pixels)
    except ValueError:
        resized = None
    if resized != (qwen.image_height, qwen.image_width):
        log.warning(
            "%dx%d frames are resized to this bundle's fixed %dx%d grid (exported for %dx%d frames); "
            "the model's own processor would give them %s",
            width,
            height,
            qwen.image_width,
            qwen.image_height,
            qwen.camera_width,
            qwen.camera_height,
            f"a {resized[1]}x{resized[0]} grid" if resized else "no grid (aspect ratio above 200)",
        )


def pixel_values(image: np.ndarray, bundle: Bundle, channel_order: str = "BGR") -> np.ndarray:
    """A decoded frame -> the vision graph's input, by the rule of the bundle's model family."""
    if bundle.qwen is not None:
        return grid_preprocess(image, bundle, channel_order)
    if bundle.anyres is not None:
        from zipvlm.runtime.preprocess_anyres import anyres_pixel_values  # it imports this module

        return anyres_pixel_values(image, bundle, channel_order)
    return preprocess(image, bundle.preprocess, channel_order)
