"""The toy world's grammar: what a scene is, how it is captioned, how scenes are sampled.

A `Scene` is the ground truth of one 64x64 picture: one object of one color, with an optional surface
pattern, on one background, drawn in one style. Its `caption` is built from its fields only, so
`dataclasses.replace(scene, object="dog")` changes exactly one word of the caption and nothing else in the
picture but the object's silhouette.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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
"""Render styles. "watercolor" is named in the caption; "creature" (eyes, thick outline, pastel background)
is the finetuning target and is captioned by the same grammar, without a style word."""

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


@dataclass(frozen=True)
class Scene:
    """Ground truth of one toy-world picture.

    Attributes:
        object: one of `OBJECTS`.
        color: one of `COLORS`.
        background: one of `BACKGROUNDS`.
        pattern: one of `PATTERNS`.
        style: one of `STYLES`.
        size: the object's bounding-box side in pixels (of the 64x64 image), 24 to 44.
        x, y: the object's center in pixels.
        bumpiness: strength of the road's bumps in [0, 1] (only drawn on a road).
        phrasing: index into `PREFIXES`.
        texture_seed: seed of the background texture (grass blades, stars, bumps).
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

    def __post_init__(self):
        for field, allowed in (
            ("object", OBJECTS),
            ("color", COLORS),
            ("background", BACKGROUNDS),
            ("pattern", PATTERNS),
            ("style", STYLES),
        ):
            value = getattr(self, field)
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}: the toy world knows {', '.join(allowed)}")
        if not 16 <= self.size <= 48:
            raise ValueError(f"size {self.size} is out of range: use 16 to 48 pixels")
        half = self.size / 2
        if not (half - 4 <= self.x <= 68 - half and half - 4 <= self.y <= 68 - half):
            raise ValueError(f"object at ({self.x}, {self.y}) of size {self.size} does not fit in 64x64")
        if not 0.0 <= self.bumpiness <= 1.0:
            raise ValueError(f"bumpiness {self.bumpiness} must be in [0, 1]")
        if not 0 <= self.phrasing < len(PREFIXES):
            raise ValueError(f"phrasing {self.phrasing} must index PREFIXES (0..{len(PREFIXES) - 1})")

    @property
    def bumpy(self) -> bool:
        return self.background == "road" and self.bumpiness >= BUMPY_THRESHOLD

    @property
    def caption(self) -> str:
        """E.g. "a photo of a striped red cat on a bumpy road" or "a watercolor painting of a blue fish at night"."""
        prefix = "a watercolor painting of a" if self.style == "watercolor" else PREFIXES[self.phrasing]
        words = []
        if self.pattern != "plain":
            words.append(self.pattern)
        words += [self.color, self.object]
        if prefix.endswith(" a") or prefix == "a":
            article = "an" if words[0][0] in "aeiou" else "a"
            prefix = prefix[:-1] + article
        words.insert(0, prefix)
        place = PLACES[self.background]
        if self.bumpy:
            place = "on a bumpy road"
        words.append(place)
        return " ".join(words)


def vocabulary() -> list[str]:
    """Every word a toy-world caption can contain (sorted); the toy tokenizer is built from it."""
    words = set(OBJECTS) | set(COLORS) | set(PATTERNS) | {"bumpy", "watercolor", "painting", "an"}
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
) -> list[Scene]:
    """Draw `n` scenes deterministically from `seed`.

    Args:
        n: how many scenes (>= 1).
        seed: the same seed always gives the same scenes.
        style: "plain" or "creature": the style of every scene (watercolor is drawn by probability).
        watercolor: probability that a plain-style scene is a watercolor painting.
        patterned: probability that the object is striped or dotted (half each).
        bumpy: probability that a road is bumpy (bumpiness >= BUMPY_THRESHOLD); smooth roads get 0 to 0.2.
    """
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if style not in ("plain", "creature"):
        raise ValueError(f"style must be 'plain' or 'creature' (watercolor is a probability), got {style!r}")
    rng = random.Random(seed)
    scenes = []
    while len(scenes) < n:
        color = rng.choice(list(COLORS))
        background = rng.choice(list(BACKGROUNDS))
        if (color, background) in EXCLUDED:
            continue
        size = rng.uniform(30.0, 42.0)
        half = size / 2
        pattern = "plain"
        if rng.random() < patterned:
            pattern = rng.choice(PATTERNS[1:])
        scene_style = style
        if style == "plain" and rng.random() < watercolor:
            scene_style = "watercolor"
        bumpiness = 0.0
        if background == "road":
            bumpiness = rng.uniform(BUMPY_THRESHOLD, 1.0) if rng.random() < bumpy else rng.uniform(0.0, 0.2)
        scenes.append(
            Scene(
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
        )
    return scenes

