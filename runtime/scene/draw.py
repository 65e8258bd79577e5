"""Pixels, masks and the geometry answers depend on.

`render` draws a scene into a frame of any size (RGB; OpenCV camera frames are
BGR, the camera reader converts) and returns each object's visible coverage mask,
from which `patch_coverage` gives each ViT patch's share of an object. `scene_facts`
measures visibility and road cover on a fixed raster, so an answer never depends on
the size an image is rendered at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from zipvlm.runtime.scene.world import COLOURS, Backdrop, Clutter, Scene, SceneObject

ANALYSIS_SIZE = 224  # raster side of the view for the answers' geometry
SUPERSAMPLE = 2  # frames under 320 px are drawn at this multiple, then area-resized
SUBPIXEL_BITS = 4  # cv2 fixed-point shift: polygons are placed to 1/16 pixel
Offset = tuple[float, float]


def shape_polygon(obj: SceneObject, side: float) -> np.ndarray:
    """The object's outline, float (x, y) vertices in pixels of a view `side` pixels wide."""
    r = obj.radius
    if obj.shape == "circle":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        points = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif obj.shape == "square":
        a = 0.85 * r
        points = np.array([[-a, -a], [a, -a], [a, a], [-a, a]])
    elif obj.shape == "triangle":
        t = np.deg2rad(np.array([-90.0, 30.0, 150.0]))
        points = np.stack([np.cos(t), np.sin(t)], 1) * 1.3 * r
        points[:, 1] += 0.15 * r  # its centre of area at the object's centre
    elif obj.shape == "cross":
        a, w = r, 0.36 * r
        points = np.array(
            [
                [-w, -a],
                [w, -a],
                [w, -w],
                [a, -w],
                [a, w],
                [w, w],
                [w, a],
                [-w, a],
                [-w, w],
                [-a, w],
                [-a, -w],
                [-w, -w],
            ]
        )
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    c, s = math.cos(math.radians(obj.angle)), math.sin(math.radians(obj.angle))
    points = points @ np.array([[c, s], [-s, c]])
    return (points + [obj.x, obj.y]) * side


def road_polygon(backdrop: Backdrop, side: float, bottom: float = 1.0) -> np.ndarray:
    """The road trapezoid in pixels, from the horizon down to y = `bottom` (view units)."""
    h, top = backdrop.horizon, backdrop.road_top
    low = backdrop.road_half_width(bottom)
    return np.array([[0.5 - top, h], [0.5 + top, h], [0.5 + low, bottom], [0.5 - low, bottom]]) * side


def fill(canvas: np.ndarray, points: np.ndarray, value, offset: Offset = (0.0, 0.0)) -> None:
    """Fill a float polygon with sub-pixel placement."""
    fixed = np.round((points + offset) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], value, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)


def visible_masks(
    scene: Scene, side: int, offset: Offset = (0.0, 0.0), frame: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(whole, visible) bool masks (n, H, W) of each object; later objects cover earlier ones."""
    height, width = frame or (side, side)
    whole = np.zeros((len(scene.objects), height, width), np.uint8)
    for i, obj in enumerate(scene.objects):
        fill(whole[i], shape_polygon(obj, side), 1, offset)
    full = whole.astype(bool)
    visible = full.copy()
    covered = np.zeros((height, width), bool)
    for i in reversed(range(len(scene.objects))):
        visible[i] &= ~covered
        covered |= full[i]
    return full, visible


@dataclass(frozen=True)
class Facts:
    """Per object: the share of it left visible, and the share of its visible part on the road."""

    visible: np.ndarray  # (n,)
    on_road: np.ndarray  # (n,)


def scene_facts(scene: Scene) -> Facts:
    """Visibility and road cover of each object, measured on the ANALYSIS_SIZE raster."""
    full, visible = visible_masks(scene, ANALYSIS_SIZE)
    road = np.zeros((ANALYSIS_SIZE, ANALYSIS_SIZE), np.uint8)
    fill(road, road_polygon(scene.backdrop, ANALYSIS_SIZE), 1)
    n = len(scene.objects)
    whole_px = full.reshape(n, -1).sum(1)
    visible_px = visible.reshape(n, -1).sum(1)
    road_px = (visible & road.astype(bool)).reshape(n, -1).sum(1)
    return Facts(visible_px / np.maximum(whole_px, 1), road_px / np.maximum(visible_px, 1))


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (n, H, W) float32: visible coverage of each object, 0..1
    view: tuple[int, int, int]  # (x0, y0, side) of the view square in the frame


def render(scene: Scene, width: int, height: int | None = None) -> Rendered:
    """The scene drawn into a width x height frame (the view is the centred square)."""
    height = height or width
    scale = SUPERSAMPLE if min(width, height) < 320 else 1
    big_w, big_h = width * scale, height * scale
    side, offset = view_of(big_w, big_h)
    image = draw_backdrop(scene.backdrop, big_w, big_h)
    draw_objects(image, scene, scale)
    _, visible = visible_masks(scene, side, offset, (big_h, big_w))
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    masks = np.zeros((len(visible), height, width), np.float32)
    for i, mask in enumerate(visible):
        masks[i] = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    image = sensor(image, scene.backdrop, _gaussian(image.shape, scene.backdrop))
    view_side = min(width, height)
    return Rendered(image, masks, ((width - view_side) // 2, (height - view_side) // 2, view_side))


def view_of(width: int, height: int) -> tuple[int, Offset]:
    """(side, offset) of the centred view square in a width x height frame."""
    side = min(width, height)
    return side, ((width - side) / 2, (height - side) / 2)


def draw_objects(image: np.ndarray, scene: Scene, line_width: int = 1) -> None:
    """Paint the objects far to near, each with a darker outline, into `image` (in place)."""
    side, offset = view_of(image.shape[1], image.shape[0])
    for obj in scene.objects:
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) * obj.shade, 0, 255))
        points = shape_polygon(obj, side)
        fill(image, points, rgb, offset)
        edge = np.round((points + offset) * (1 << SUBPIXEL_BITS)).astype(np.int32)
        outline = tuple(int(v * 0.55) for v in rgb)
        cv2.polylines(image, [edge], True, outline, line_width, cv2.LINE_8, SUBPIXEL_BITS)


def draw_backdrop(bd: Backdrop, width: int, height: int) -> np.ndarray:
    """Sky, a floor shaded darker towards the horizon, the road, lane marks and clutter (RGB)."""
    side, offset = view_of(width, height)
    horizon_px = int(round(offset[1] + bd.horizon * side))
    rows = np.empty((height, 1, 3), np.float32)
    rows[:horizon_px] = bd.sky
    shading = np.linspace(0.85, 1.05, height - horizon_px, dtype=np.float32)[:, None, None]
    rows[horizon_px:] = np.asarray(bd.floor, np.float32) * shading
    image = np.ascontiguousarray(np.broadcast_to(np.clip(rows, 0, 255).astype(np.uint8), (height, width, 3)))
    fill(image, road_polygon(bd, side, bottom=(height - offset[1]) / side), bd.road, offset)
    if bd.lane_line:
        colour = tuple(min(255, int(v * 1.9) + 30) for v in bd.road)
        ys = np.linspace(bd.horizon, 1.0, 9)
        for y0, y1 in zip(ys[::2], ys[1::2], strict=False):
            w0, w1 = (0.004 + 0.008 * (y - bd.horizon) / (1 - bd.horizon) for y in (y0, y1))
            dash = np.array([[0.5 - w0, y0], [0.5 + w0, y0], [0.5 + w1, y1], [0.5 - w1, y1]]) * side
            fill(image, dash, colour, offset)
    for item in bd.clutter:
        _clutter(image, item, side, offset)
    return image


def _clutter(image: np.ndarray, item: Clutter, side: int, offset: Offset) -> None:
    one = 1 << SUBPIXEL_BITS
    cx, cy = item.x * side + offset[0], item.y * side + offset[1]
    if item.kind == "dot":
        radius = max(1, int(item.size * side * one))
        cv2.circle(image, (int(cx * one), int(cy * one)), radius, item.rgb, -1, cv2.LINE_8, SUBPIXEL_BITS)
        return
    dx = math.cos(math.radians(item.angle)) * item.size * side
    dy = math.sin(math.radians(item.angle)) * item.size * side
    start, end = (int((cx - dx) * one), int((cy - dy) * one)), (int((cx + dx) * one), int((cy + dy) * one))
    cv2.line(image, start, end, item.rgb, max(1, side // 160), cv2.LINE_8, SUBPIXEL_BITS)


def sensor(image: np.ndarray, bd: Backdrop, noise: np.ndarray | None) -> np.ndarray:
    """The backdrop's gain and bias, plus `noise` (float32, the image's shape, 0..255 scale)."""
    out = image.astype(np.float32) * np.float32(bd.gain) + np.float32(bd.bias)
    if noise is not None:
        out += noise
    return np.clip(out, 0, 255).astype(np.uint8)


def _gaussian(shape: tuple[int, ...], bd: Backdrop) -> np.ndarray | None:
    """The backdrop's seeded Gaussian pixel noise, or None without noise."""
    if bd.noise <= 0:
        return None
    return np.random.default_rng(bd.noise_seed).standard_normal(shape, dtype=np.float32) * np.float32(
        bd.noise
    )


def patch_coverage(masks: np.ndarray, patch: int) -> np.ndarray:
    """(n, S, S) coverage masks of a square view -> (n, S/patch, S/patch) mean coverage per patch."""
    n, height, width = masks.shape
    return masks.reshape(n, height // patch, patch, width // patch, patch).mean(axis=(2, 4))


def centre_cells(scene: Scene, grid: int) -> list[int]:
    """Raster index of the grid cell holding each object's centre (the view as grid x grid)."""
    return [min(grid - 1, int(o.y * grid)) * grid + min(grid - 1, int(o.x * grid)) for o in scene.objects]
