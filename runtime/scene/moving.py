"""A moving scene: objects gliding and bouncing over a fixed backdrop, a pure function of time.

`MovingScene(seed).at(t)` is the scene at t seconds; `SceneCamera` turns it into
camera frames (BGR, 640x480 by default), frame i showing the scene at t = i / fps
of simulated time, so the scene behind any frame can be recomputed from its index
and every answer about it checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from zipvlm.runtime.scene.draw import draw_backdrop, draw_objects, sensor
from zipvlm.runtime.scene.sampling import place, sample_backdrop
from zipvlm.runtime.scene.world import COLOURS, SHAPES, Scene, SceneObject

SPEED = (0.08, 0.18)  # view units per second
CAMERA_NOISE = 3.0  # std of the camera's pixel noise (0..255)
NOISE_FIELDS = 4


@dataclass(frozen=True)
class Mover:
    """An object at time 0 and its constant velocity (view units per second)."""

    start: SceneObject
    vx: float
    vy: float


def bounce(value: float, low: float, high: float) -> float:
    """`value` reflected into [low, high], as a ball bouncing between two walls."""
    span = high - low
    phase = (value - low) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


class MovingScene:
    """`num_objects` objects of distinct shapes (so "what color is the <shape>?" always
    has one answer) and distinct colours, moving over one backdrop."""

    def __init__(self, seed: int = 0, num_objects: int = 3):
        if not 1 <= num_objects <= len(SHAPES):
            raise ValueError(f"num_objects must be 1..{len(SHAPES)}, got {num_objects}")
        rng = np.random.default_rng(seed)
        self.backdrop = replace(sample_backdrop(rng), noise=CAMERA_NOISE, gain=1.0, bias=0.0)
        shapes = rng.permutation(len(SHAPES))[:num_objects]
        colours = rng.permutation(len(COLOURS))[:num_objects]
        movers = []
        for shape, colour in zip(shapes, colours, strict=True):
            radius = float(rng.uniform(0.08, 0.11))
            x, y = place(rng, self.backdrop, radius, "any")
            speed, heading = float(rng.uniform(*SPEED)), float(rng.uniform(0, 2 * np.pi))
            start = SceneObject(SHAPES[shape], list(COLOURS)[colour], x, y, radius)
            movers.append(Mover(start, speed * math.cos(heading), speed * math.sin(heading) * 0.5))
        self.movers = tuple(movers)

    def at(self, t: float, noise_seed: int = 0) -> Scene:
        """The scene at t seconds (objects sorted far to near), with its own sensor noise."""
        floor_top = self.backdrop.horizon
        objects = []
        for mover in self.movers:
            obj, r = mover.start, mover.start.radius
            x = bounce(obj.x + mover.vx * t, r, 1 - r)
            y = bounce(obj.y + mover.vy * t, floor_top + r + 0.02, 1 - r - 0.01)
            objects.append(replace(obj, x=x, y=y))
        objects.sort(key=lambda o: o.y)
        return Scene(tuple(objects), replace(self.backdrop, noise_seed=noise_seed))


class SceneCamera:
    """Frames of a MovingScene: frame i is the scene at t = i / fps, as BGR uint8.

    Drawn as `render` draws, but cheaply enough for a 30 fps source: the backdrop is
    drawn once, and the sensor noise comes from a fixed bank of NOISE_FIELDS fields
    (frame i takes field i mod NOISE_FIELDS).
    """

    def __init__(self, seed: int = 0, fps: float = 30.0, width: int = 640, height: int = 480):
        self.world = MovingScene(seed)
        self.fps = fps
        self.backdrop = draw_backdrop(self.world.backdrop, width, height)
        rng = np.random.default_rng(seed)
        shape = (NOISE_FIELDS, height, width, 3)
        self.noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(CAMERA_NOISE)

    def scene(self, index: int) -> Scene:
        """The scene behind frame `index`."""
        return self.world.at(index / self.fps, noise_seed=index)

    def frame(self, index: int) -> np.ndarray:
        image = self.backdrop.copy()
        scene = self.scene(index)
        draw_objects(image, scene)
        image = sensor(image, scene.backdrop, self.noise[index % NOISE_FIELDS])
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
