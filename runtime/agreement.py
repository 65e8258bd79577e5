"""How closely two vision graphs agree on the same frames: kept-token IoU and feature cosine.

The fp16 check at export and the INT8 report of calib quantize compare a graph with
vision.onnx the same way. One swapped token moves later rows (dominant rows follow
keep order on LLaVA-1.5, raster order across crops on any-res bundles), so features
are compared on the tokens both graphs kept, each found at its own row. `KeptRows`
says where: it maps one image's keep_indices to {kept token: row of image_embeds}.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

from zipvlm.bundle.anyres import VISIONZIP_LAYOUT
from zipvlm.bundle.format import Bundle

KeptRows = Callable[[np.ndarray], dict[Hashable, int]]


def dominant_rows(keep: np.ndarray) -> dict[Hashable, int]:
    """One view: the i-th kept token is row i (dominant tokens come first, in keep order)."""
    return {int(token): row for row, token in enumerate(np.asarray(keep).reshape(-1))}


def kept_rows(bundle: Bundle) -> KeptRows:
    """Where the bundle's graph puts each kept token of an image."""
    section = bundle.anyres
    if section is None:
        return dominant_rows
    if section.layout != VISIONZIP_LAYOUT:  # every token, at fixed rows: compare them all
        count = bundle.selection.num_image_tokens
        return lambda keep: {row: row for row in range(count)}
    geometry = section.geometry(bundle.vision)
    per_view = bundle.selection.num_image_tokens // section.num_views
    has_cls = bundle.vision.has_cls
    return lambda keep: dict(geometry.visionzip_rows(np.asarray(keep).tolist(), has_cls, per_view))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def keep_iou(a: np.ndarray, b: np.ndarray, rows: KeptRows = dominant_rows) -> float:
    """|A ∩ B| / |A ∪ B| of one image's two kept-token sets."""
    kept_a, kept_b = rows(a).keys(), rows(b).keys()
    return len(kept_a & kept_b) / len(kept_a | kept_b)


def shared_token_cosine(
    ref_embeds: np.ndarray,
    ref_keep: np.ndarray,
    embeds: np.ndarray,
    keep: np.ndarray,
    rows: KeptRows = dominant_rows,
) -> float:
    """Cosine of one image's rows (K, H) of the dominant tokens both graphs kept."""
    ref_rows, our_rows = rows(ref_keep), rows(keep)
    shared = [token for token in ref_rows if token in our_rows]
    return cosine(ref_embeds[[ref_rows[t] for t in shared]], embeds[[our_rows[t] for t in shared]])
