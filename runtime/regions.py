"""Which frame rectangles the kept tokens cover: a kept index mapped back through preprocessing.

A kept index names a token of the tower's sequence (0 is CLIP's CLS token, which
covers no patch). Its patch is a square of the S x S model input, mapped back to
the frame through the preprocessing: centre pad, resize, centre crop. The live
page draws these; a model family with another input geometry answers here.
"""

from __future__ import annotations

import numpy as np

from zipvlm.bundle.format import Bundle, PreprocessSpec
from zipvlm.runtime.preprocess import output_size


def model_to_frame(spec: PreprocessSpec, height: int, width: int) -> tuple[float, float, float, float]:
    """(scale_x, scale_y, offset_x, offset_y): frame = model_input * scale + offset."""
    pad_x = pad_y = 0.0
    h, w = height, width
    if spec.pad_to_square:
        side = max(h, w)
        pad_x, pad_y = (side - w) // 2, (side - h) // 2
        h = w = side
    scale_x = scale_y = 1.0
    if spec.resize is not None:
        out_h, out_w = output_size(h, w, spec.resize)
        scale_x, scale_y = w / out_w, h / out_h
        h, w = out_h, out_w
    crop_x = crop_y = 0.0
    if spec.center_crop is not None:
        crop_y = max((h - spec.center_crop["height"]) // 2, 0)
        crop_x = max((w - spec.center_crop["width"]) // 2, 0)
    return scale_x, scale_y, crop_x * scale_x - pad_x, crop_y * scale_y - pad_y


def kept_boxes(keep: np.ndarray, bundle: Bundle, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Frame rectangles (x0, y0, x1, y1) of the kept patches; the CLS token has none."""
    grid = bundle.vision
    scale_x, scale_y, offset_x, offset_y = model_to_frame(bundle.preprocess, height, width)
    boxes = []
    for token in np.asarray(keep).reshape(-1).tolist():
        patch = token - 1 if grid.has_cls else token
        if patch < 0:
            continue
        row, col = divmod(patch, grid.image_size // grid.patch_size)
        x0, y0 = col * grid.patch_size, row * grid.patch_size
        x1, y1 = x0 + grid.patch_size, y0 + grid.patch_size
        boxes.append(
            (
                round(x0 * scale_x + offset_x),
                round(y0 * scale_y + offset_y),
                round(x1 * scale_x + offset_x),
                round(y1 * scale_y + offset_y),
            )
        )
    return boxes
