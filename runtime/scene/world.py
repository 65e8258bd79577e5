"""What a scene is: a backdrop (horizon, floor, road, clutter, sensor) and 1 to 4 flat objects.

Geometry is in *view* units: the unit square that a CLIP processor's
resize-shortest-edge + centre crop keeps of a frame. A square image is the view
itself; a 640x480 camera frame is the 480x480 view, centred, with floor and road
carried on into the side margins, which hold no objects, so the answers stay exact
after the crop. y grows downwards; the horizon is a y.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 215, 35),
    "green": (35, 170, 60),
    "blue": (35, 80, 225),
    "purple": (145, 55, 200),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
REGIONS: tuple[str, ...] = ("left", "center", "right")  # thirds of the view, by an object's centre
NUMBERS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
MAX_OBJECTS = 4

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class SceneObject:
    """One object: centre (x, y) and radius in view units, angle in degrees."""

    shape: str
    colour: str
    x: float
    y: float
    radius: float
    angle: float = 0.0
    shade: float = 1.0  # brightness factor of its colour

    @property
    def region(self) -> str:
        return REGIONS[min(2, int(self.x * 3))]


@dataclass(frozen=True)
class Clutter:
    """A small desaturated speck ('dot') or stroke ('line'); view units."""

    kind: str
    x: float
    y: float
    size: float
    angle: float
    rgb: Rgb


@dataclass(frozen=True)
class Backdrop:
    """Everything but the objects: horizon, floor, road, clutter and the sensor's gain and noise."""

    horizon: float  # y of the horizon
    sky: Rgb
    floor: Rgb
    road: Rgb
    road_bottom: float  # half width of the road at the view's bottom edge
    road_top: float  # half width at the horizon
    lane_line: bool
    clutter: tuple[Clutter, ...]
    gain: float
    bias: float
    noise: float  # std of Gaussian pixel noise, 0..255 scale
    noise_seed: int

    def road_half_width(self, y: float) -> float:
        """Half width of the road at height y (it narrows linearly to the horizon)."""
        t = (y - self.horizon) / (1 - self.horizon)
        return self.road_top + (self.road_bottom - self.road_top) * t


@dataclass(frozen=True)
class Scene:
    """Objects in painting order: later (nearer, larger y) ones cover earlier ones."""

    objects: tuple[SceneObject, ...]
    backdrop: Backdrop
