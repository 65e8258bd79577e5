"""Seeded random scenes, each with one question of every kind and its exact answer.

The sampler plans the answers before it places anything, so each kind's answers are
roughly balanced: the count of the asked colour is 0, 1, 2 or 3 with COUNT_PRIOR,
the path is blocked or clear half the time each, a side question's answer is yes or
no half the time each. Scenes whose answers would be ambiguous are drawn again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from zipvlm.runtime.scene.draw import scene_facts
from zipvlm.runtime.scene.questions import MIN_VISIBLE, Question, answer, near_third, path_state
from zipvlm.runtime.scene.world import (
    COLOURS,
    MAX_OBJECTS,
    REGIONS,
    SHAPES,
    Backdrop,
    Clutter,
    Rgb,
    Scene,
    SceneObject,
)

COUNT_PRIOR = (0.25, 0.30, 0.25, 0.20)  # P(the asked colour occurs 0, 1, 2, 3 times)
RADIUS = (0.06, 0.12)  # object radius range, view units
PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Example:
    """A scene with one question of each kind (KINDS order) and their answers."""

    scene: Scene
    questions: tuple[Question, ...]
    answers: tuple[str, ...]


def sample_backdrop(rng: np.random.Generator, sensor: bool = True) -> Backdrop:
    """A random horizon, muted sky/floor/road colours, clutter and (with `sensor`) gain and noise."""

    def muted(low: int, high: int, saturation: float) -> Rgb:
        base = rng.uniform(low, high)
        r, g, b = (int(np.clip(base + base * t, 0, 255)) for t in rng.normal(0, saturation, 3))
        return r, g, b

    clutter = tuple(
        Clutter(
            kind="dot" if rng.random() < 0.6 else "line",
            x=float(rng.uniform(-0.2, 1.2)),
            y=float(rng.uniform(0, 1)),
            size=float(rng.uniform(0.006, 0.02)),
            angle=float(rng.uniform(0, 180)),
            rgb=muted(30, 220, 0.08),
        )
        for _ in range(int(rng.integers(0, 13)))
    )
    return Backdrop(
        horizon=float(rng.uniform(0.2, 0.32)),
        sky=muted(150, 230, 0.08),
        floor=muted(90, 170, 0.1),
        road=muted(45, 85, 0.04),
        road_bottom=float(rng.uniform(0.17, 0.23)),
        road_top=float(rng.uniform(0.03, 0.05)),
        lane_line=bool(rng.random() < 0.6),
        clutter=clutter,
        gain=float(rng.uniform(0.85, 1.15)) if sensor else 1.0,
        bias=float(rng.uniform(-15, 15)) if sensor else 0.0,
        noise=float(rng.uniform(0, 8)) if sensor else 0.0,
        noise_seed=int(rng.integers(2**31)),
    )


def place(rng: np.random.Generator, backdrop: Backdrop, radius: float, where: str) -> tuple[float, float]:
    """A centre on the floor: 'road' (on the road), 'off' (clear of it) or 'any'."""
    y = float(rng.uniform(backdrop.horizon + radius + 0.02, 1 - radius - 0.01))
    half = backdrop.road_half_width(y)
    if where == "road":
        return 0.5 + float(rng.uniform(-1, 1)) * max(half - 0.3 * radius, 0.0), y
    if where == "off":
        low = 0.5 + half + radius * 1.2
        x = float(rng.uniform(low, 1 - radius)) if low < 1 - radius else 1 - radius
        return (1 - x if rng.random() < 0.5 else x), y
    return float(rng.uniform(radius, 1 - radius)), y


def sample_example(rng: np.random.Generator, max_objects: int = MAX_OBJECTS) -> Example:
    """A scene of 1..max_objects objects whose five questions all have exact answers."""
    while True:
        example = _try_example(rng, max_objects)
        if example is not None:
            return example


def examples(seed: int, max_objects: int = MAX_OBJECTS) -> Iterator[Example]:
    """An endless, reproducible stream of examples."""
    rng = np.random.default_rng(seed)
    while True:
        yield sample_example(rng, max_objects)


def _try_example(rng: np.random.Generator, max_objects: int) -> Example | None:
    backdrop = sample_backdrop(rng)
    colours = list(COLOURS)
    count = min(int(rng.choice(4, p=COUNT_PRIOR)), max_objects)
    n = int(rng.integers(max(count, 1), max_objects + 1))
    counted = colours[int(rng.integers(len(colours)))]
    others = [c for c in colours if c != counted]
    paint = [counted] * count + [others[int(rng.integers(len(others)))] for _ in range(n - count)]
    rng.shuffle(paint)
    shapes = [SHAPES[int(rng.integers(len(SHAPES)))] for _ in range(n)]
    blocked = bool(rng.random() < 0.5)
    blocker = int(rng.integers(n))
    for _ in range(PLACEMENT_TRIES):
        objects = []
        for i in range(n):
            radius = float(rng.uniform(*RADIUS))
            mode = "road" if blocked and i == blocker else ("any" if blocked else "off")
            x, y = place(rng, backdrop, radius, mode)
            angle, shade = float(rng.uniform(-10, 10)), float(rng.uniform(0.8, 1.1))
            objects.append(SceneObject(shapes[i], paint[i], x, y, radius, angle, shade))
        objects.sort(key=lambda o: o.y)  # painter's order: far first
        scene = Scene(tuple(objects), backdrop)
        facts = scene_facts(scene)
        if (facts.visible < MIN_VISIBLE).any() or path_state(facts) != ("no" if blocked else "yes"):
            continue
        if any(near_third(o.x) for o in objects):
            continue
        questions = _questions(rng, scene, counted)
        if questions is None:
            return None  # this content cannot ask every kind: draw a new scene
        answers = tuple(answer(scene, q, facts) for q in questions)
        if all(a is not None for a in answers):
            return Example(scene, questions, tuple(a for a in answers if a is not None))
    return None


def _questions(rng: np.random.Generator, scene: Scene, counted: str) -> tuple[Question, ...] | None:
    objects = scene.objects
    unique_shapes = [s for s in SHAPES if sum(o.shape == s for o in objects) == 1]
    pairs = [(o.colour, o.shape) for o in objects]
    unique_pairs = [p for p in pairs if pairs.count(p) == 1]
    if not unique_shapes or not unique_pairs:
        return None
    want_yes = rng.random() < 0.5
    occupied = [s for s in (REGIONS[0], REGIONS[2]) if any(o.region == s for o in objects)]
    if want_yes and not occupied:
        return None  # a "yes" needs an object on the left or the right
    if want_yes:
        side = occupied[int(rng.integers(len(occupied)))]
    else:
        side = REGIONS[0] if rng.random() < 0.5 else REGIONS[2]
    there = sorted({o.shape for o in objects if o.region == side})
    absent = [s for s in SHAPES if s not in there]
    pool = there if (want_yes and there) or not absent else absent
    colour, shape = unique_pairs[int(rng.integers(len(unique_pairs)))]
    return (
        Question("colour", shape=unique_shapes[int(rng.integers(len(unique_shapes)))]),
        Question("count", colour=counted),
        Question("side", shape=pool[int(rng.integers(len(pool)))], side=side),
        Question("path"),
        Question("where", colour=colour, shape=shape),
    )
