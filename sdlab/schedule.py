"""Edit schedules: which denoising steps each window of a prompt-to-prompt edit touches.

Every window (cross_steps, a word's own cross_steps, self_steps, and LocalBlend from `start` to the
end) is a pair of fractions (start, end) of the T denoising steps, a single tau meaning (0, tau), and one rule
turns it into steps: step i (0-based) is in the window iff start*T <= i < end*T in exact rational arithmetic,
i.e. the steps range(ceil(start*T), ceil(end*T)). A float is read as the decimal it prints as (0.6 is exactly
3/5, so cross_steps=0.6 at 25 steps edits steps 0..14, 15 steps). The reference implementation takes
int(fraction*T) in floating point for each bound: the same steps where fraction*T is whole (up to its rounding),
a bound one step earlier where it is not. The bounds are computed once per run (`schedule`, kept as
`EditResult.schedule`, whose `edited_steps` counts them); per step the controller tests plain ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational, Real

DEFAULT_CROSS, DEFAULT_SELF = 0.8, 0.4


def fraction(x: Real) -> Fraction:
    """`x` as an exact fraction: an int or a Fraction as it is, a float as the decimal it prints as (0.6 -> 3/5,
    not the binary 0.59999999999999997780 nor float32's 0.60000002384)."""
    if isinstance(x, Rational):
        return Fraction(x)
    try:
        return Fraction(str(x))
    except ValueError:  # a Real whose str() is not a plain number
        return Fraction(float(x))


def window(value, name: str) -> tuple[Fraction, Fraction]:
    """A schedule as exact (start, end) fractions of the steps: tau means [0, tau); a pair is [start, end)."""
    pair = (0, value) if isinstance(value, Real) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(
        isinstance(x, Real) and not isinstance(x, bool) for x in pair
    ):
        raise TypeError(f"{name} must be a fraction of the steps like 0.8, or a (start, end) pair; got {value!r}")
    if not all(math.isfinite(x) for x in pair):
        raise ValueError(f"{name}={value!r} is outside [0, 1]: schedules are fractions of the denoising steps")
    start, end = fraction(pair[0]), fraction(pair[1])
    if not (0 <= start <= 1 and 0 <= end <= 1):
        raise ValueError(f"{name}={value!r} is outside [0, 1]: schedules are fractions of the denoising steps")
    if start > end:
        raise ValueError(f"{name}={value!r} starts after it ends; give (start, end) with start <= end")
    return start, end


def steps_in(pair: tuple[Fraction, Fraction], steps: int) -> range:
    """The steps of a window (start, end) in a run of `steps` steps: i with start*steps <= i < end*steps."""
    start, end = pair
    return range(math.ceil(start * steps), math.ceil(end * steps))


def cross_windows(value, name="cross_steps") -> dict:
    """cross_steps as {"default_": (start, end), word: (start, end), ...}."""
    if isinstance(value, dict):
        out = {"default_": window(value.get("default_", DEFAULT_CROSS), f"{name}['default_']")}
        for word, v in value.items():
            if word != "default_":
                if not isinstance(word, str):
                    raise TypeError(f"{name} keys must be words or 'default_', got {word!r}")
                out[word] = window(v, f"{name}[{word!r}]")
        return out
    return {"default_": window(value, name)}


@dataclass(frozen=True)
class Schedule:
    """The steps an edit touches in one run of `steps` steps, as ranges of step indices (0 = the first step);
    see "Schedules" in the module docstring for the rule. `len(schedule.cross)` is the number of edited steps."""

    steps: int
    cross: range
    """Steps whose cross-attention is edited (tokens of words with a window of their own excepted)."""
    words: dict
    """word -> the steps of that word's own cross-attention window (`cross_steps={"dog": (0.2, 0.5)}`)."""
    self_attention: range
    """Steps at which the targets' self-attention is the source's."""
    local_blend: range | None
    """Steps after which the targets' latents are blended with the source's; None without LocalBlend."""

    @property
    def edited_steps(self) -> dict[str, int]:
        """Number of steps per window: {"cross": 20, "cross 'dog'": 8, "self": 10, "local_blend": 20}."""
        out = {"cross": len(self.cross), **{f"cross {w!r}": len(r) for w, r in self.words.items()}}
        out["self"] = len(self.self_attention)
        if self.local_blend is not None:
            out["local_blend"] = len(self.local_blend)
        return out

    def __str__(self) -> str:
        return ", ".join(f"{k} {n}/{self.steps}" for k, n in self.edited_steps.items()) + " steps"


def schedule(edit, steps: int) -> Schedule:
    """The whole-step windows of `edit` (Replace, Refine or Reweight) in a run of `steps` denoising steps."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise TypeError(f"steps must be a whole number of denoising steps, got {steps!r}")
    cross = cross_windows(edit.cross_steps)
    blend = edit.local_blend
    return Schedule(
        steps=steps,
        cross=steps_in(cross["default_"], steps),
        words={w: steps_in(pair, steps) for w, pair in cross.items() if w != "default_"},
        self_attention=steps_in(window(edit.self_steps, "self_steps"), steps),
        local_blend=None if blend is None else steps_in(window((blend.start, 1), "LocalBlend start"), steps),
    )
