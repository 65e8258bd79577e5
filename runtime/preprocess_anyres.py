"""Any-res preprocessing (LLaVA-NeXT, LLaVA-OneVision): one frame -> the views of a fixed grid.

The Hugging Face processors (PIL backend) cut an image into views; this does the same
with numpy, pixel for pixel (docs/design.md):

1. view 0: the whole frame resized to S x S (aspect not kept);
2. the frame resized, aspect kept, into the pinpoint the grid comes from, pasted on
   a black canvas of the pinpoint's size (bundle/anyres.py: `placement`), cut into
   S x S crops in raster order;
3. each view through the processor's per-image steps (runtime/preprocess.py:
   `model_input`), which on an S x S view are the rescale and normalisation.

The bundle's graph was laid out for its camera's size. A frame of another size is cut
by its own geometry when the graph is exact for it too (the same grid under the
VisionZip layout, or the same unpadded grid under transformers'); otherwise it is
first resized to the camera's size, with a warning once per frame size.
"""

from __future__ import annotations

import logging

import numpy as np

from zipvlm.bundle.anyres import AnyresGeometry
from zipvlm.bundle.format import Bundle
from zipvlm.runtime.preprocess import model_input, resize, to_rgb

log = logging.getLogger(__name__)

_warned: set[tuple[str, int, int]] = set()  # (bundle, width, height) already warned about


def frame_geometry(bundle: Bundle, height: int, width: int) -> AnyresGeometry:
    """How a frame of this size is cut into views: by its own geometry where the bundle's graph
    is exact for it, else by the camera's (after the frame is resized to the camera's size)."""
    section = bundle.anyres
    if section is None:
        raise ValueError(f"{bundle.path} is not an any-res bundle")
    camera = section.geometry(bundle.vision)
    own = camera.at_size(width, height)
    return own if camera.same_graph(own, section.layout) else camera


def split_views(rgb: np.ndarray, geometry: AnyresGeometry, resample: str) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB of the geometry's size -> [whole frame, crop 0, crop 1, ...] uint8."""
    size = geometry.view_size
    views = [resize(rgb, size, size, resample)]
    place = geometry.placement
    best_h, best_w = geometry.best_resolution
    canvas = np.zeros((best_h, best_w, 3), np.uint8)
    canvas[place.top : place.top + place.height, place.left : place.left + place.width] = resize(
        rgb, place.height, place.width, resample
    )
    for crop in range(geometry.num_crops):
        box = geometry.crop_box(crop)
        views.append(canvas[box.top : box.top + box.height, box.left : box.left + box.width])
    return views


def anyres_pixel_values(image: np.ndarray, bundle: Bundle, channel_order: str = "BGR") -> np.ndarray:
    """A decoded frame -> pixel_values (1, V, 3, S, S) float32, as the model's processor gives them."""
    spec = bundle.preprocess
    rgb = to_rgb(image, channel_order)
    height, width = rgb.shape[:2]
    geometry = frame_geometry(bundle, height, width)
    if (geometry.width, geometry.height) != (width, height):
        _warn_once(bundle, width, height, geometry)
        rgb = resize(rgb, geometry.height, geometry.width, spec.resample)
    views = split_views(rgb, geometry, spec.resample)
    return np.stack([model_input(view, spec) for view in views])[None]


def _warn_once(bundle: Bundle, width: int, height: int, camera: AnyresGeometry) -> None:
    key = (str(bundle.path), width, height)
    if key in _warned:
        return
    _warned.add(key)
    rows, cols = camera.grid
    log.warning(
        "frames of %dx%d do not fit %s's vision graph (laid out for %dx%d: %dx%d crops + the whole "
        "frame): resizing them to %dx%d; export with --image-size %dx%d for this camera",
        width,
        height,
        bundle.name,
        camera.width,
        camera.height,
        rows,
        cols,
        camera.width,
        camera.height,
        width,
        height,
    )
