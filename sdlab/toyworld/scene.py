"""The toy world's grammar: what a scene is, how it is captioned, how scenes are sampled.

A `Scene` is the ground truth of one 64x64 picture: one or two objects, each of one color with an optional
surface pattern, on one background, drawn in one style, with detail the caption does not name (a horizon,
clouds, flowers, rocks, stars). Its `caption` is built from its named fields only, so
`dataclasses.replace(scene, object="dog")` changes exactly one word of the caption and nothing else in the
picture but the object's silhouette.

Two worlds share this grammar. World 1 (the first shipped model's): one object placed uniformly at random on
a flat background. World 2: where an object stands and how big it is depends on what it is (birds and stars
small and high, cats, dogs and cars on the ground, houses and trees large), pictures hold one or two objects
and unnamed detail, so a plain regeneration after a word swap moves things and prompt-to-prompt has
something to keep. `sample_scenes(..., world=2)` draws it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

OBJECTS = ("cat", "dog", "fish", "bird", "house", "tree", "car", "star")
"""Object names; each has its own silhouette (see `render.SHAPES`). cat, dog, fish, bird are creature-like."""

COLORS = {
    "red": (220, 35, 35),
    "orange": (250, 140, 10),
    "yellow": (245, 215, 20),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "purple": (135, 50, 195),
    "pink": (250, 110, 185),
    "brown": (125, 75, 30),
}
"""Object colors as sRGB triples."""

BACKGROUNDS = {
    "grass": (120, 180, 95),
    "sky": (160, 205, 245),
    "sand": (230, 212, 170),
    "road": (95, 95, 100),
    "snow": (238, 242, 248),
    "night": (22, 28, 62),
}
"""Backgrounds as their base sRGB color; each also has its own texture (see `render`)."""

PATTERNS = ("plain", "striped", "dotted")
"""Surface patterns of the object; "plain" is not written in the caption (refinement adds the others)."""

STYLES = ("plain", "watercolor", "creature")
"""Render styles. "watercolor" is named in the caption; "creature" (eyes, thick outline; pastel on the
dark grounds) is the finetuning target and is captioned by the same grammar, without a style word."""

BUMPY_THRESHOLD = 0.5
"""A road with `bumpiness >= BUMPY_THRESHOLD` is captioned "bumpy"; the strength itself is graded."""

PLACES = {
    "grass": "on grass",
    "sky": "in the sky",
    "sand": "on sand",
    "road": "on a road",
    "snow": "in the snow",
    "night": "at night",
}
PREFIXES = ("a", "a photo of a", "a picture of a")
"""Phrasing variants of the caption's start (`Scene.phrasing` indexes them)."""

EXCLUDED = {("green", "grass")}
"""(color, background) pairs that `sample_scenes` never draws: too little contrast to see the object."""

GROUNDS = ("grass", "sand", "road", "snow")
"""Backgrounds that are ground: in world 2 they may have a horizon with sky above it."""

FACING = ("fish", "bird", "car")
"""Objects whose silhouette has a front: `facing` -1 mirrors them (world 1 draws them all facing +1)."""

MIN_GAP = 6.0
"""Least horizontal gap in pixels between the boxes of a scene's two objects."""

MAX_DETAILS = 6
"""Most pieces of unnamed detail (clouds, flowers, rocks, stars) in one picture."""

LAYOUT = {
    "bird": ((10, 26), (20, 30)),
    "star": ((10, 26), (20, 30)),
    "fish": ((22, 40), (22, 32)),
    "cat": ((38, 50), (24, 32)),
    "dog": ((38, 50), (24, 32)),
    "car": ((42, 50), (24, 32)),
    "house": ((32, 44), (34, 44)),
    "tree": ((32, 44), (34, 44)),
}
"""World 2's layout prior per object: (range of the center's height y, range of the box side), in pixels of
64. Neighbours overlap (fish and birds in height; a house in a pair is as large as a cat alone), but a bird never
stands where a cat does; `sample_scenes(layout_spread=...)` lends an object another object's prior now and then, so that
a layout forced on another object (a bird where a cat stood) stays within what a model has seen. Two-object
scenes scale the sides by `PAIR_SCALE`."""

PAIR_SCALE = 0.68
"""Side of each object in a two-object scene, relative to `LAYOUT`, and never below `PAIR_MIN`."""

PAIR_MIN = 21.0
"""Least side of an object in a two-object scene (a bird's wings thinner than this are hard to see)."""

PLAIN_ONLY = ("bird",)
"""Objects that world 2 never patterns: a bird's wings are too thin to show stripes or dots at its sizes."""

HORIZON = (14.0, 30.0)
"""Range of the horizon's height (pixels from the top) on world 2's grounds."""


def _check_choice(field: str, value, allowed):
    if value not in allowed:
        raise ValueError(f"unknown {field} {value!r}: the toy world knows {', '.join(allowed)}")


def _check_placement(size: float, x: float, y: float, facing: int):
    if not 16 <= size <= 48:
        raise ValueError(f"size {size} is out of range: use 16 to 48 pixels")
    half = size / 2
    if not (half - 4 <= x <= 68 - half and half - 4 <= y <= 68 - half):
        raise ValueError(f"object at ({x}, {y}) of size {size} does not fit in 64x64")
    if facing not in (1, -1):
        raise ValueError(f"facing {facing!r} must be 1 or -1 (mirrored; it matters for {', '.join(FACING)})")


@dataclass(frozen=True)
class Thing:
    """One object of a scene: what it is, its color and pattern, and where it stands (see `Scene`)."""

    object: str
    color: str
    pattern: str = "plain"
    size: float = 30.0
    x: float = 32.0
    y: float = 32.0
    facing: int = 1

    def __post_init__(self):
        for field, allowed in (("object", OBJECTS), ("color", COLORS), ("pattern", PATTERNS)):
            _check_choice(field, getattr(self, field), allowed)
        _check_placement(self.size, self.x, self.y, self.facing)

    @property
    def words(self) -> list[str]:
        """The words that name it: ["striped", "red", "cat"]."""
        return ([self.pattern] if self.pattern != "plain" else []) + [self.color, self.object]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of its square box."""
        h = self.size / 2
        return (self.x - h, self.y - h, self.x + h, self.y + h)


@dataclass(frozen=True)
class Scene:
    """Ground truth of one toy-world picture.

    Attributes:
        object: one of `OBJECTS`.
        color: one of `COLORS`.
        background: one of `BACKGROUNDS`.
        pattern: one of `PATTERNS`.
        style: one of `STYLES`.
        size: the object's bounding-box side in pixels (of the 64x64 image), 16 to 48.
        x, y: the object's center in pixels.
        bumpiness: strength of the road's bumps in [0, 1] (only drawn on a road).
        phrasing: index into `PREFIXES`.
        texture_seed: seed of the background texture and of where the detail goes.
        facing: 1, or -1 to mirror the object (fish, birds and cars have a front).
        second: a second object (`Thing`), named after the first ("a red cat and a blue dog on grass");
            its box keeps `MIN_GAP` pixels from the first's, left or right of it.
        horizon: height in pixels of a horizon with sky above it (on `GROUNDS` only), 0 for none.
        details: how many pieces of unnamed detail are drawn (clouds, flowers, rocks, stars, by background).
    """

    object: str
    color: str
    background: str
    pattern: str = "plain"
    style: str = "plain"
    size: float = 36.0
    x: float = 32.0
    y: float = 32.0
    bumpiness: float = 0.0
    phrasing: int = 0
    texture_seed: int = 0
    facing: int = 1
    second: Thing | None = None
    horizon: float = 0.0
    details: int = 0

    def __post_init__(self):
        for field, allowed in (
            ("object", OBJECTS),
            ("color", COLORS),
            ("background", BACKGROUNDS),
            ("pattern", PATTERNS),
            ("style", STYLES),
        ):
            _check_choice(field, getattr(self, field), allowed)
        _check_placement(self.size, self.x, self.y, self.facing)
        if not 0.0 <= self.bumpiness <= 1.0:
            raise ValueError(f"bumpiness {self.bumpiness} must be in [0, 1]")
        if not 0 <= self.phrasing < len(PREFIXES):
            raise ValueError(f"phrasing {self.phrasing} must index PREFIXES (0..{len(PREFIXES) - 1})")
        if self.second is not None:
            if not isinstance(self.second, Thing):
                raise TypeError(f"second must be a toyworld Thing or None, got {type(self.second).__name__}")
            first = self.things[0]
            gap = abs(first.x - self.second.x) - (first.size + self.second.size) / 2
            if gap < MIN_GAP:
                raise ValueError(
                    f"the two objects overlap or nearly touch (horizontal gap {gap:.1f} px between their boxes, "
                    f"at x={first.x} and x={self.second.x}): place them at least {MIN_GAP:g} px apart, side by side"
                )
        if self.horizon and (self.background not in GROUNDS or not HORIZON[0] - 4 <= self.horizon <= HORIZON[1] + 10):
            raise ValueError(
                f"horizon {self.horizon} on {self.background!r}: a horizon is drawn on {', '.join(GROUNDS)} only, "
                f"at {HORIZON[0] - 4:g} to {HORIZON[1] + 10:g} px from the top (0 for none)"
            )
        if not (isinstance(self.details, int) and 0 <= self.details <= MAX_DETAILS):
            raise ValueError(f"details {self.details!r} must be an integer from 0 to {MAX_DETAILS}")

    @property
    def things(self) -> tuple[Thing, ...]:
        """The scene's objects in caption order: the first (this scene's own fields), then `second`."""
        first = Thing(self.object, self.color, self.pattern, self.size, self.x, self.y, self.facing)
        return (first,) if self.second is None else (first, self.second)

    @property
    def bumpy(self) -> bool:
        return self.background == "road" and self.bumpiness >= BUMPY_THRESHOLD

    @property
    def caption(self) -> str:
        """E.g. "a photo of a striped red cat on a bumpy road", "a watercolor painting of a blue fish at night"
        or "an orange bird and a dotted green car on sand"."""
        prefix = "a watercolor painting of a" if self.style == "watercolor" else PREFIXES[self.phrasing]
        words = [prefix[: -len("a")] + _article(self.things[0].words[0])]
        words += self.things[0].words
        for other in self.things[1:]:
            words += ["and", _article(other.words[0])] + other.words
        words.append("on a bumpy road" if self.bumpy else PLACES[self.background])
        return " ".join(words)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def vocabulary() -> list[str]:
    """Every word a toy-world caption can contain (sorted); the toy tokenizer is built from it."""
    words = set(OBJECTS) | set(COLORS) | set(PATTERNS) | {"bumpy", "watercolor", "painting", "an", "and"}
    for text in list(PLACES.values()) + list(PREFIXES):
        words |= set(text.split())
    words.discard("plain")
    return sorted(words)


def sample_scenes(
    n: int,
    seed: int,
    *,
    style: str = "plain",
    watercolor: float = 0.0,
    patterned: float = 0.5,
    bumpy: float = 0.5,
    world: int = 2,
    pairs: float = 0.4,
    horizon: float = 0.7,
    layout_spread: float = 0.0,
) -> list[Scene]:
    """Draw `n` scenes deterministically from `seed`.

    Args:
        n: how many scenes (>= 1).
        seed: the same seed always gives the same scenes.
        style: "plain" or "creature": the style of every scene (watercolor is drawn by probability).
        watercolor: probability that a plain-style scene is a watercolor painting.
        patterned: probability that an object is striped or dotted (half each).
        bumpy: probability that a road is bumpy (bumpiness >= BUMPY_THRESHOLD); smooth roads get 0 to 0.2.
        world: 2 (the default, the shipped model's: layout by object from `LAYOUT`, one or two objects, a
            horizon, unnamed detail) or 1 (one object placed uniformly, no detail: the first model's world).
        pairs: world 2: probability of two objects (two different objects).
        horizon: world 2: probability that a ground background has a horizon.
        layout_spread: world 2: probability that an object is laid out by the `LAYOUT` prior of an object drawn
            at random (itself included) instead of its own (0 draws exactly the scenes it always drew).
    """
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if style not in ("plain", "creature"):
        raise ValueError(f"style must be 'plain' or 'creature' (watercolor is a probability), got {style!r}")
    if world not in (1, 2):
        raise ValueError(f"world must be 1 or 2, got {world!r}")
    for name, p in (("watercolor", watercolor), ("patterned", patterned), ("bumpy", bumpy), ("pairs", pairs),
                    ("horizon", horizon), ("layout_spread", layout_spread)):
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} is a probability and must lie in [0, 1], got {p!r}")
    rng = random.Random(seed)
    scenes = []
    while len(scenes) < n:
        color = rng.choice(list(COLORS))
        background = rng.choice(list(BACKGROUNDS))
        if (color, background) in EXCLUDED:
            continue
        size = rng.uniform(30.0, 42.0)
        half = size / 2
        pattern = _pattern(rng, patterned)
        scene_style = style
        if style == "plain" and rng.random() < watercolor:
            scene_style = "watercolor"
        bumpiness = 0.0
        if background == "road":
            bumpiness = rng.uniform(BUMPY_THRESHOLD, 1.0) if rng.random() < bumpy else rng.uniform(0.0, 0.2)
        scene = Scene(
            object=rng.choice(OBJECTS),
            color=color,
            background=background,
            pattern=pattern,
            style=scene_style,
            size=round(size, 2),
            x=round(rng.uniform(half + 2, 62 - half), 2),
            y=round(rng.uniform(half + 2, 62 - half), 2),
            bumpiness=round(bumpiness, 3),
            phrasing=rng.randrange(len(PREFIXES)),
            texture_seed=rng.randrange(2**31),
        )
        if world == 2:
            scene = _world2(scene, rng, patterned, pairs, horizon, layout_spread)
        scenes.append(scene)
    return scenes


def _pattern(rng: random.Random, patterned: float) -> str:
    return rng.choice(PATTERNS[1:]) if rng.random() < patterned else "plain"


def _world2(scene: Scene, rng: random.Random, patterned: float, pairs: float, horizon: float,
            spread: float = 0.0) -> Scene:
    """`scene` (drawn as in world 1) laid out again by world 2's rules, with a second object and detail; each
    object laid out by a random object's prior with probability `spread` (no draw at all when 0)."""
    objects = [scene.object]
    colors = [scene.color]
    if rng.random() < pairs:
        objects.append(rng.choice([o for o in OBJECTS if o != scene.object]))
        colors.append(rng.choice([c for c in COLORS if (c, scene.background) not in EXCLUDED]))
    scale = PAIR_SCALE if len(objects) == 2 else 1.0
    patterns = [scene.pattern if scene.object not in PLAIN_ONLY else "plain"]
    if len(objects) == 2:
        patterns.append(_pattern(rng, patterned) if objects[1] not in PLAIN_ONLY else "plain")
    layouts = [rng.choice(OBJECTS) if spread and rng.random() < spread else o for o in objects]
    sizes = [round(max(PAIR_MIN, rng.uniform(*LAYOUT[o][1]) * scale), 2) for o in layouts]
    ys = [round(min(max(rng.uniform(*LAYOUT[o][0]), s / 2 + 1), 63 - s / 2), 2) for o, s in zip(layouts, sizes)]
    facings = [rng.choice((1, -1)) if o in FACING else 1 for o in objects]
    if len(objects) == 1:
        xs = [round(rng.uniform(sizes[0] / 2 + 2, 62 - sizes[0] / 2), 2)]
    else:
        gap = rng.uniform(MIN_GAP + 0.5, max(MIN_GAP + 0.5, min(MIN_GAP + 10, 68 - sum(sizes))))
        slack = 64 - sum(sizes) - gap  # room left and right of the pair (>= -4: objects may cross the frame)
        left = rng.uniform(1, slack - 1) if slack >= 3 else slack / 2
        order = [0, 1] if rng.random() < 0.5 else [1, 0]  # which object stands left: random, not captioned
        a, b = (sizes[i] for i in order)
        xs_lr = [left + a / 2, left + a + gap + b / 2]
        xs = [round(xs_lr[order.index(i)], 2) for i in range(2)]
    second = None
    if len(objects) == 2:
        second = Thing(objects[1], colors[1], patterns[1], sizes[1], xs[1], ys[1], facings[1])
    h = round(rng.uniform(*HORIZON), 2) if scene.background in GROUNDS and rng.random() < horizon else 0.0
    return replace(
        scene, pattern=patterns[0], size=sizes[0], x=xs[0], y=ys[0], facing=facings[0], second=second, horizon=h,
        details=rng.randint(1, MAX_DETAILS - 1),
    )
