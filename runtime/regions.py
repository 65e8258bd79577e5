"""Which frame rectangles the kept tokens cover: a kept index mapped back through preprocessing.

A kept index names a token of the tower's sequence (0 is CLIP's CLS token, which
covers no patch). Its patch is a square of the S x S model input, mapped back to
the frame through the preprocessing: centre pad, resize, centre crop. On
Qwen2.5-VL a kept index names a merged token, a 28 px cell of the resized frame
in raster order of the merged grid. On an any-res bundle (LLaVA-NeXT, OneVision)
each view has its own kept indices: the base view's patches cover the whole frame
(squashed to S x S), a crop's patches its cell of the grid (crop patches on the
black padding cover nothing). The live page draws these.
"""

from __future__ import annotations

import numpy as np

from zipvlm.bundle.format import Bundle, PreprocessSpec
from zipvlm.runtime.preprocess import output_size
from zipvlm.runtime.preprocess_anyres import frame_geometry

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in frame pixels


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


def token_cells(bundle: Bundle) -> tuple[int, int, int]:
    """(cell side in model-input pixels, cells per row, index of the first cell's token)."""
    if bundle.qwen is not None:
        grid = bundle.qwen.grid
        return grid.cell, grid.merged_w, 0
    vision = bundle.vision
    return vision.patch_size, vision.image_size // vision.patch_size, int(vision.has_cls)


def kept_boxes(keep: np.ndarray, bundle: Bundle, height: int, width: int) -> list[Box]:
    """Frame rectangles (x0, y0, x1, y1) of the kept patches (merged tokens); the CLS token has none.
    `keep` is one image's keep_indices: (D,), or (V, D) on an any-res bundle."""
    if bundle.anyres is not None:
        return _view_boxes(np.asarray(keep), bundle, height, width)
    scale_x, scale_y, offset_x, offset_y = model_to_frame(bundle.preprocess, height, width)
    cell, columns, first = token_cells(bundle)
    boxes = []
    for token in np.asarray(keep).reshape(-1).tolist():
        if token < first:
            continue
        row, col = divmod(token - first, columns)
        x0, y0 = col * cell, row * cell
        boxes.append(
            (
                round(x0 * scale_x + offset_x),
                round(y0 * scale_y + offset_y),
                round((x0 + cell) * scale_x + offset_x),
                round((y0 + cell) * scale_y + offset_y),
            )
        )
    return boxes


def _view_boxes(keep: np.ndarray, bundle: Bundle, height: int, width: int) -> list[Box]:
    """Per view, through the views the frame was cut into (resized to the camera's size first
    when the bundle's graph does not fit the frame's own size)."""
    geometry = frame_geometry(bundle, height, width)
    scale_x, scale_y = width / geometry.width, height / geometry.height
    first = int(bundle.vision.has_cls)
    boxes = []
    for view, tokens in enumerate(keep.tolist()):
        for token in tokens:
            box = geometry.patch_box(view, token - first) if token >= first else None
            if box is not None:
                x0, y0, x1, y1 = box
                boxes.append(
                    (round(x0 * scale_x), round(y0 * scale_y), round(x1 * scale_x), round(y1 * scale_y))
                )
    return boxes
