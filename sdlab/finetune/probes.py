"""What validation samples: in-domain prompts, and probes that play the report's "yoda".

The report finetunes on pokemon and watches "yoda", a prompt the data never shows, take on the pokemon style
and then stop being yoda. The toy world's version: finetune on creature-style renders of the creature-like
objects only (`export_narrow`: cats, dogs, fish and birds with eyes and an outline), and probe with the things
that data never shows (a house, a tree, a car, a star). The toy evaluator then reads, at every validation,
how much creature style the probes took on (style) and whether they are still the object, color and
background they asked for (fidelity).

`default_prompts` picks both from the dataset's captions; `calibrate_probes` keeps the probes the base model
draws right to begin with (yoda must be yoda before finetuning), so the choice holds for whichever toy model
ships: it is measured on the model, not assumed.
"""

from __future__ import annotations

import re
import warnings

from ..toyworld import OBJECTS, sample_scenes, write_imagefolder
from .config import FinetuneError
from .metrics import parse_toy_prompt

CREATURE_OBJECTS = ("cat", "dog", "fish", "bird")
"""The toy world's creature-like objects: what the narrow finetuning dataset shows."""

TOY_PROBE_CANDIDATES = (
    "a red house on grass", "a blue tree on sand", "a red car on sand", "a purple star in the sky",
    "a pink house in the snow", "a purple tree on grass", "a pink car in the snow", "an orange star on sand",
    "a blue house on sand", "a red tree in the snow", "a purple car on grass", "a red star on grass",
    "an orange tree in the sky", "a yellow car on a road", "a yellow star at night", "a yellow house on a road",
)
"""Probe prompts for the toy model in order of preference: one of each non-creature object in turn, every one
a caption both toy worlds draw (one object, a color that stands out from its background). The dark grounds come
last: on a road or at night the creature style turns the whole picture pastel, so a probe there loses its
background to the style itself, and its fidelity would measure the style as well as the prompt."""
REAL_PROMPTS = ("girl with a pearl earring", "cute Obama creature", "Donald Trump")
"""The report's before/after prompts (Figs. 11-12), for real Stable Diffusion weights."""
REAL_PROBES = ("yoda",)
"""The report's out-of-domain probe (Fig. 13)."""
TOY_SIZE = 64
CALIBRATION_SEED = 1000
"""First seed of `calibrate_probes`: far from the validation seeds, so step 0 of a run is measured on seeds the
probes were not chosen on."""


def narrow_scenes(n: int, seed: int, objects=CREATURE_OBJECTS, *, style: str = "creature", world: int = 2) -> list:
    """The first `n` scenes of `sample_scenes(..., seed, style=style, world=world)` whose objects (all of them,
    in world 2's pairs too) are in `objects`: a finetuning set narrower than the base world."""
    unknown = [o for o in objects if o not in OBJECTS]
    if not objects or unknown:
        raise ValueError(f"objects must name toy-world objects ({', '.join(OBJECTS)}); got {list(objects)}")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    drawn = 2 * n * len(OBJECTS) // len(objects) + 16
    while True:  # sample_scenes is a stream: its first k scenes never depend on how many are drawn
        kept = [s for s in sample_scenes(drawn, seed, style=style, world=world)
                if all(t.object in objects for t in s.things)]
        if len(kept) >= n:
            return kept[:n]
        drawn *= 2


def export_narrow(path, n: int, seed: int, objects=CREATURE_OBJECTS, *, style: str = "creature", world: int = 2,
                  overwrite: bool = False):
    """`narrow_scenes` rendered into an image folder (`sdlab.toyworld.write_imagefolder`); returns the folder."""
    return write_imagefolder(path, narrow_scenes(n, seed, objects, style=style, world=world), overwrite=overwrite)


def toy_probes(captions, n: int = 4, candidates=TOY_PROBE_CANDIDATES) -> tuple:
    """The first `n` candidates whose object no caption of the data shows (the yoda role).

    When the data shows every candidate's object there is no yoda among them: then the candidates whose
    (object, color, background) the data never shows stand in, with a warning that says so.
    """
    shown = {o for c in captions for o in named_objects(c)}
    outside = tuple(p for p in candidates if not named_objects(p) & shown)
    if outside:
        return outside[:n]
    combos = {tuple(parse_toy_prompt(c).values()) for c in captions if parse_toy_prompt(c)}
    warnings.warn(
        f"the dataset shows every object the probe candidates name ({', '.join(sorted(shown))}), so no probe is out "
        "of its domain and the probes' fidelity will barely move; finetune on a narrower dataset "
        "(sdlab.finetune.probes.export_narrow) or pass probe_prompts", stacklevel=2)
    return tuple(p for p in candidates if tuple(parse_toy_prompt(p).values()) not in combos)[:n]


def named_objects(caption: str) -> set:
    """The toy-world objects a caption names (world 2's captions may name two)."""
    words = set(re.findall(r"[a-z]+", caption.lower()))
    return {o for o in OBJECTS if o in words}


def default_prompts(resolution: int, captions: list[str], n_prompts: int = 3, n_probes: int = 4):
    """(prompts, probes). For the toy model (64x64): the first distinct captions of the data as in-domain
    prompts, and `toy_probes`. For any other model: the report's prompts and "yoda"."""
    if resolution != TOY_SIZE:
        return REAL_PROMPTS, REAL_PROBES
    prompts = tuple(dict.fromkeys(c for c in captions if parse_toy_prompt(c)))[:n_prompts]
    return prompts, toy_probes(captions, n_probes)


def calibrate_probes(pipe, candidates, n: int, *, seeds=(CALIBRATION_SEED, CALIBRATION_SEED + 1), steps: int = 25,
                     guidance: float = 7.5, metrics=None) -> tuple[tuple, int]:
    """(probes, how many of them the base model draws right): the first `n` of `candidates` that `pipe` draws
    right (object, color and background read back by the toy evaluator) on every one of `seeds`. If fewer than
    `n` are, the rest are those it draws best (mean fidelity over the seeds), and the count says so."""
    from ..attention import generate
    from .metrics import ToyWorldMetrics

    candidates = list(candidates)
    check_toy_probes(candidates)
    metrics = metrics or ToyWorldMetrics()
    scores, size = {}, max(n, 1)
    for start in range(0, len(candidates), size):  # in chunks of n, until n are right: the same answer as
        chunk = candidates[start:start + size]     # scoring them all, since order decides among the right ones
        for seed in seeds:
            images = generate(pipe, chunk, seed=seed, steps=steps, guidance=guidance).images
            for prompt, row in zip(chunk, metrics.measure(images, chunk)):
                scores.setdefault(prompt, []).append(row["fidelity"])
        if sum(min(v) == 1.0 for v in scores.values()) >= n:
            break
    right = [p for p in scores if min(scores[p]) == 1.0]
    rest = sorted((p for p in scores if p not in right), key=lambda p: -sum(scores[p]))  # stable: order kept
    return tuple((right + rest)[:n]), min(len(right), n)


def check_toy_probes(prompts) -> None:
    """A clear error for a probe the toy evaluator cannot score (it needs one object, color and background)."""
    bad = [p for p in prompts if parse_toy_prompt(p) is None]
    if bad:
        raise FinetuneError(
            f"the toy-world metrics cannot score {bad}: a toy prompt names one object, one color and one place "
            "(e.g. 'a red house on grass'); rephrase it, or pass metrics='clip' or 'none'")
