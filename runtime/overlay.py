"""The kept-token overlay: which patches of a frame VisionZip kept, drawn on the frame.

A kept index names a token of the tower's sequence (0 is CLIP's CLS token, which
covers no patch). Its patch is a square of the S x S model input, mapped back to
the frame through the preprocessing: centre pad, resize, centre crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from zipvlm.runtime.preprocess import PreprocessSpec, output_size

KEPT_COLOUR = (40, 220, 255)  # BGR amber


@dataclass(frozen=True)
class PatchGrid:
    image_size: int  # S: the model input side
    patch_size: int
    has_cls: bool

    @classmethod
    def from_manifest(cls, vision: dict) -> PatchGrid:
        return cls(vision["image_size"], vision["patch_size"], vision["has_cls"])

    @property
    def side(self) -> int:
        return self.image_size // self.patch_size


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


def kept_boxes(keep: np.ndarray, grid: PatchGrid, spec: PreprocessSpec, height: int, width: int
               ) -> list[tuple[int, int, int, int]]:
    """Frame rectangles (x0, y0, x1, y1) of the kept patches; the CLS token has none."""
    scale_x, scale_y, offset_x, offset_y = model_to_frame(spec, height, width)
    boxes = []
    for token in np.asarray(keep).reshape(-1).tolist():
        patch = token - 1 if grid.has_cls else token
        if patch < 0:
            continue
        row, col = divmod(patch, grid.side)
        x0, y0 = col * grid.patch_size, row * grid.patch_size
        x1, y1 = x0 + grid.patch_size, y0 + grid.patch_size
        boxes.append((round(x0 * scale_x + offset_x), round(y0 * scale_y + offset_y),
                      round(x1 * scale_x + offset_x), round(y1 * scale_y + offset_y)))
    return boxes


def draw_kept(frame: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A BGR copy of the frame with the kept patches tinted and outlined."""
    bgr = frame if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(
        frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 or frame.shape[2] == 1 else cv2.COLOR_BGRA2BGR)
    tint = bgr.copy()
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(tint, (x0, y0), (x1 - 1, y1 - 1), KEPT_COLOUR, -1)
    out = cv2.addWeighted(tint, 0.35, bgr, 0.65, 0)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), KEPT_COLOUR, 1)
    return out
