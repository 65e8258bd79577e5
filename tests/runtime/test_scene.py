"""The synthetic scene world: seeded scenes, exact answers, pixels and masks, the moving camera."""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np
import pytest

from zipvlm.bundle.errors import ArgumentError
from zipvlm.runtime.scene.draw import patch_coverage, render, scene_facts
from zipvlm.runtime.scene.moving import MovingScene, SceneCamera
from zipvlm.runtime.scene.questions import KINDS, Question, answer, parse_question, questions_about
from zipvlm.runtime.scene.sampling import sample_backdrop, sample_example
from zipvlm.runtime.scene.world import COLOURS, Scene, SceneObject
from zipvlm.runtime.sources import open_reader, parse_source


def plain_backdrop(seed: int = 0):
    """A backdrop without clutter, gain, bias or noise: pixels are the drawn colours."""
    return replace(sample_backdrop(np.random.default_rng(seed), sensor=False), clutter=())


def scene_of(*objects: SceneObject) -> Scene:
    return Scene(tuple(sorted(objects, key=lambda o: o.y)), plain_backdrop())


RED_CIRCLE_LEFT = SceneObject("circle", "red", 0.15, 0.8, 0.08)
BLUE_SQUARE_ROAD = SceneObject("square", "blue", 0.5, 0.75, 0.08)
BLUE_CROSS_RIGHT = SceneObject("cross", "blue", 0.85, 0.6, 0.07)


def test_answers_of_a_known_scene():
    scene = scene_of(RED_CIRCLE_LEFT, BLUE_SQUARE_ROAD, BLUE_CROSS_RIGHT)
    asked = {
        Question("colour", shape="circle"): "red",
        Question("colour", shape="square"): "blue",
        Question("colour", shape="triangle"): None,  # no triangle: the question has no answer
        Question("count", colour="blue"): "two",
        Question("count", colour="green"): "zero",
        Question("side", shape="circle", side="left"): "yes",
        Question("side", shape="circle", side="right"): "no",
        Question("side", shape="cross", side="right"): "yes",
        Question("path"): "no",
        Question("where", colour="blue", shape="square"): "center",
        Question("where", colour="blue", shape="cross"): "right",
        Question("where", colour="red", shape="cross"): None,
    }
    assert {q: answer(scene, q) for q in asked} == asked
    assert answer(scene_of(RED_CIRCLE_LEFT, BLUE_CROSS_RIGHT), Question("path")) == "yes"


def test_ambiguous_scenes_have_no_answer():
    on_third = replace(RED_CIRCLE_LEFT, x=1 / 3 + 0.01)
    assert answer(scene_of(on_third), Question("where", colour="red", shape="circle")) is None
    assert answer(scene_of(on_third), Question("side", shape="circle", side="left")) is None
    # a circle right behind a bigger, nearer square: mostly hidden, so counting is not exact
    hidden = SceneObject("circle", "red", 0.5, 0.74, 0.05)
    cover = SceneObject("square", "blue", 0.5, 0.75, 0.1)
    assert scene_facts(scene_of(hidden, cover)).visible[0] < 0.6
    assert answer(scene_of(hidden, cover), Question("count", colour="red")) is None
    # an object with a few percent of itself on the road: neither clear nor blocked
    edge = replace(BLUE_SQUARE_ROAD, x=0.5 + plain_backdrop().road_half_width(0.75) + 0.07)
    facts = scene_facts(scene_of(edge))
    assert 0.02 < facts.on_road[0] < 0.3
    assert answer(scene_of(edge), Question("path")) is None


def test_pixels_and_masks_show_the_objects():
    scene = scene_of(RED_CIRCLE_LEFT, BLUE_SQUARE_ROAD)
    rendered = render(scene, 224)
    for obj, mask in zip(scene.objects, rendered.masks, strict=True):
        cx, cy = int(obj.x * 224), int(obj.y * 224)
        assert mask[cy, cx] == 1.0 and rendered.image[cy, cx].tolist() == list(COLOURS[obj.colour])
        area = mask.sum() / 224**2
        expected = np.pi * obj.radius**2 if obj.shape == "circle" else (1.7 * obj.radius) ** 2
        assert area == pytest.approx(expected, rel=0.05)
    cover = patch_coverage(rendered.masks, 28)  # 8 x 8 grid
    assert cover.shape == (2, 8, 8) and cover.max() <= 1.0
    assert cover.sum(axis=(1, 2)) * 28**2 == pytest.approx(rendered.masks.sum(axis=(1, 2)), rel=1e-5)


def test_a_camera_frame_holds_the_view_in_its_centre_crop():
    example = sample_example(np.random.default_rng(1))
    wide, square = render(example.scene, 640, 480), render(example.scene, 480)
    x0, y0, side = wide.view
    assert (x0, y0, side) == (80, 0, 480)
    assert wide.masks[:, :, :x0].sum() == 0 and wide.masks[:, :, x0 + side :].sum() == 0
    assert np.abs(wide.masks[:, :, x0 : x0 + side] - square.masks).max() < 1e-6


def test_same_seed_same_scene_and_pixels_other_seed_other():
    a, b = (sample_example(np.random.default_rng(3)) for _ in range(2))
    assert a == b and np.array_equal(render(a.scene, 112).image, render(b.scene, 112).image)
    assert sample_example(np.random.default_rng(4)) != a


def test_sampled_answers_are_exact_and_balanced():
    rng = np.random.default_rng(0)
    examples = [sample_example(rng) for _ in range(200)]
    for example in examples[:40]:
        assert tuple(answer(example.scene, q) for q in example.questions) == example.answers
    for k, kind in enumerate(KINDS):
        counts = collections.Counter(e.answers[k] for e in examples)
        assert len(counts) >= 2 and max(counts.values()) < 0.65 * len(examples), (kind, counts)
    assert {len(e.scene.objects) for e in examples} == {1, 2, 3, 4}


def test_every_wording_parses_back_and_others_do_not():
    example = sample_example(np.random.default_rng(2))
    for question in (*example.questions, *questions_about(example.scene)):
        for variant in range(2):
            assert parse_question(question.phrase(variant).upper()) == question
    for text in ("what is in the image?", "what color is the dog?", "how many pink objects are there?"):
        assert parse_question(text) is None


def test_moving_objects_move_and_stay_on_the_floor():
    world = MovingScene(seed=4)
    assert world.at(1.25, 7) == world.at(1.25, 7)
    first, later = world.at(0.0), world.at(2.0)
    assert {o.shape for o in first.objects} == {o.shape for o in later.objects}
    assert sorted(o.x for o in first.objects) != sorted(o.x for o in later.objects)
    for t in np.linspace(0, 60, 25):
        for obj in world.at(float(t)).objects:
            assert obj.radius <= obj.x <= 1 - obj.radius and world.backdrop.horizon < obj.y <= 1 - obj.radius
    assert len({o.shape for o in first.objects}) == len(first.objects)  # distinct: colour questions answer


def test_synthetic_source_is_the_scene_camera():
    spec = parse_source("synthetic:5", fps=1000)
    assert spec.synthetic_seed == 5 and spec.describe() == "synthetic scene 5"
    assert parse_source("synthetic").synthetic_seed == 0
    reader = open_reader(spec)
    reader.open()
    frames = [reader.read() for _ in range(3)]
    camera = SceneCamera(5, fps=1000)
    for index, frame in enumerate(frames):
        assert frame.shape == (480, 640, 3) and np.array_equal(frame, camera.frame(index))
    obj = camera.scene(2).objects[0]
    x, y = int(80 + obj.x * 480), int(obj.y * 480)
    expected_bgr = np.array(COLOURS[obj.colour][::-1], float)
    assert np.abs(frames[2][y, x].astype(float) - expected_bgr).max() < 25  # camera noise std 3
    with pytest.raises(ArgumentError, match="seed must be a number"):
        parse_source("synthetic:one")
