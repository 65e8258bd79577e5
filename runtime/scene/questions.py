"""The five kinds of question about a scene, their wordings, and their exact answers.

    colour  what color is the <shape>?                 red | orange | yellow | green | blue | purple
    count   how many <colour> objects are there?       zero | one | two | three | four
    side    is there a <shape> on the <left|right>?    yes | no
    path    is the path ahead clear?                   yes | no
    where   where is the <colour> <shape>?             left | center | right

An answer is None when the scene does not decide it: an object less than 60 %
visible; a relevant centre within 0.03 of x = 1/3 or 2/3; a path neither clearly
blocked (some object with >= 30 % of its visible area on the road) nor clearly clear
(every object <= 2 %); a colour or where question whose object is not unique.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zipvlm.runtime.scene.draw import Facts, scene_facts
from zipvlm.runtime.scene.world import COLOURS, NUMBERS, SHAPES, Scene

KINDS: tuple[str, ...] = ("colour", "count", "side", "path", "where")
THIRD_MARGIN = 0.03  # a centre this close to x = 1/3 or 2/3 is ambiguous
BLOCKED_MIN, CLEAR_MAX = 0.30, 0.02  # road share of an object's visible area
MIN_VISIBLE = 0.60  # an object hidden more than this by others is ambiguous

TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("what color is the {shape}?", "what colour is the {shape}?"),
    "count": ("how many {colour} objects are there?", "how many {colour} objects do you see?"),
    "side": ("is there a {shape} on the {side}?", "is there a {shape} on the {side} side?"),
    "path": ("is the path ahead clear?", "is the road ahead clear?"),
    "where": ("where is the {colour} {shape}?", "where is the {colour} {shape} located?"),
}
ANSWERS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "count": NUMBERS,
    "side": ("yes", "no"),
    "path": ("yes", "no"),
    "where": ("left", "center", "right"),
}


@dataclass(frozen=True)
class Question:
    """A question in structured form."""

    kind: str
    shape: str | None = None
    colour: str | None = None
    side: str | None = None

    @property
    def text(self) -> str:
        """The canonical wording."""
        return self.phrase(0)

    def phrase(self, variant: int) -> str:
        """One of the kind's wordings (variant modulo their number)."""
        forms = TEMPLATES[self.kind]
        return forms[variant % len(forms)].format(shape=self.shape, colour=self.colour, side=self.side)


def path_state(facts: Facts) -> str | None:
    """'yes' (clear), 'no' (blocked) or None (neither, clearly)."""
    if (facts.on_road >= BLOCKED_MIN).any():
        return "no"
    if (facts.on_road <= CLEAR_MAX).all():
        return "yes"
    return None


def near_third(x: float) -> bool:
    return min(abs(x - 1 / 3), abs(x - 2 / 3)) < THIRD_MARGIN


def answer(scene: Scene, question: Question, facts: Facts | None = None) -> str | None:
    """The exact answer, or None when the scene does not decide it."""
    facts = facts if facts is not None else scene_facts(scene)
    objects = scene.objects
    if question.kind == "path":
        return path_state(facts)
    if (facts.visible < MIN_VISIBLE).any():
        return None
    if question.kind == "count":
        return NUMBERS[sum(o.colour == question.colour for o in objects)]
    if question.kind == "colour":
        found = [o for o in objects if o.shape == question.shape]
        return found[0].colour if len(found) == 1 else None
    same_shape = [o for o in objects if o.shape == question.shape]
    if question.kind == "side":
        if any(near_third(o.x) for o in same_shape):
            return None
        return "yes" if any(o.region == question.side for o in same_shape) else "no"
    if question.kind == "where":
        found = [o for o in same_shape if o.colour == question.colour]
        return found[0].region if len(found) == 1 and not near_third(found[0].x) else None
    raise ValueError(f"unknown question kind {question.kind!r}")


def questions_about(scene: Scene) -> list[Question]:
    """Every question that names what the scene holds, each kind in KINDS order."""
    shapes = sorted({o.shape for o in scene.objects}, key=SHAPES.index)
    colours = sorted({o.colour for o in scene.objects}, key=list(COLOURS).index)
    return [
        *(Question("colour", shape=s) for s in shapes),
        *(Question("count", colour=c) for c in colours),
        *(Question("side", shape=s, side=side) for s in shapes for side in ("left", "right")),
        Question("path"),
        *(Question("where", colour=o.colour, shape=o.shape) for o in scene.objects),
    ]


_PATTERNS = (
    ("colour", re.compile(r"what colou?r is the (\w+)")),
    ("count", re.compile(r"how many (\w+) objects")),
    ("side", re.compile(r"is there an? (\w+) on the (left|right)")),
    ("path", re.compile(r"is the (?:path|road) ahead clear")),
    ("where", re.compile(r"where is the (\w+) (\w+)")),
)


def parse_question(text: str) -> Question | None:
    """The structured form of a question in one of TEMPLATES' wordings (any case), else None."""
    low = text.lower().strip()
    for kind, pattern in _PATTERNS:
        found = pattern.search(low)
        if found is None:
            continue
        words = found.groups()
        if kind == "colour" and words[0] in SHAPES:
            return Question(kind, shape=words[0])
        if kind == "count" and words[0] in COLOURS:
            return Question(kind, colour=words[0])
        if kind == "side" and words[0] in SHAPES:
            return Question(kind, shape=words[0], side=words[1])
        if kind == "path":
            return Question(kind)
        if kind == "where" and words[0] in COLOURS and words[1] in SHAPES:
            return Question(kind, colour=words[0], shape=words[1])
    return None
