"""The kept-token overlay: the patches VisionZip kept (runtime/regions.py), drawn on the frame."""

from __future__ import annotations

import cv2
import numpy as np

KEPT_COLOUR = (40, 220, 255)  # BGR amber


def draw_kept(frame: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A BGR copy of the frame with the kept patches tinted and outlined."""
    bgr = (
        frame
        if frame.ndim == 3 and frame.shape[2] == 3
        else cv2.cvtColor(
            frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 or frame.shape[2] == 1 else cv2.COLOR_BGRA2BGR
        )
    )
    tint = bgr.copy()
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(tint, (x0, y0), (x1 - 1, y1 - 1), KEPT_COLOUR, -1)
    out = cv2.addWeighted(tint, 0.35, bgr, 0.65, 0)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), KEPT_COLOUR, 1)
    return out
