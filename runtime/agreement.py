"""How closely two vision graphs agree on the same frames: kept-token IoU and feature cosine.

The fp16 check at export and the INT8 report of calib quantize compare a graph with
vision.onnx the same way. Dominant rows follow keep order, so one swapped token
shifts every later row: features are compared on the tokens both graphs kept,
matched by token index.
"""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def keep_iou(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of one image's two kept-index sets."""
    return len(np.intersect1d(a, b)) / len(np.union1d(a, b))


def shared_token_cosine(
    ref_embeds: np.ndarray, ref_keep: np.ndarray, embeds: np.ndarray, keep: np.ndarray
) -> float:
    """Cosine of one image's dominant-token rows (K, H), over the tokens both graphs kept."""
    shared = np.intersect1d(ref_keep, keep)
    return cosine(ref_embeds[np.searchsorted(ref_keep, shared)], embeds[np.searchsorted(keep, shared)])
