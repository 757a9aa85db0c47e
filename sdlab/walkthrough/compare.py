"""Walkthroughs side by side: tables (data that prints as text and shows as markdown in a notebook) and a
figure of the UNet's resolution ladder with the places where cross-attention runs.

    walks = [walkthrough(SD15), walkthrough(SD21_BASE), walkthrough(spec_from_pipeline(pipe))]
    parameter_table(walks); shape_table(walks, parts=("UNet",)); unet_ladder(walks)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..plotting import Figure, subplots
from .trace import Walkthrough, dims

NAMES = {"unet": "UNet", "vae": "VAE", "text_encoder": "text encoder", "text_encoder_2": "text encoder 2"}


@dataclass
class Table:
    """Rows of strings under a header. `str()` aligns the columns; a notebook shows it as a markdown table."""

    header: list
    rows: list

    def __str__(self) -> str:
        widths = [max(len(str(row[i])) for row in [self.header] + self.rows) for i in range(len(self.header))]
        lines = [self.header, ["-" * w for w in widths]] + self.rows
        return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        lines = [self.header, ["---"] * len(self.header)] + self.rows
        return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines)

    def column(self, name: str) -> list:
        """The cells under `name`, top to bottom."""
        return [row[self.header.index(name)] for row in self.rows]


def _check(walks) -> list:
    walks = [walks] if isinstance(walks, Walkthrough) else list(walks)
    if not walks or not all(isinstance(w, Walkthrough) for w in walks):
        raise TypeError("pass Walkthrough objects, e.g. [walkthrough(SD15), walkthrough(spec_from_pipeline(pipe))]")
    return walks


def millions(n: int) -> str:
    """A parameter count in millions: "859.5 M", "5.93 M"."""
    return f"{n / 1e6:.1f} M" if n >= 1e7 else f"{n / 1e6:.2f} M"


def times(a: int, b: int) -> str:
    """`a` as a multiple of `b`: "150×", "1×", "0.33×"."""
    return f"{a / b:.0f}×" if a >= b else f"{a / b:.2g}×"


def parameter_table(walks) -> Table:
    """Parameters per component and in all, one column per model; with two models or more, the first's size
    as a multiple of the last's. A component only some models have (SDXL's second text encoder) is "—" in the
    others."""
    walks = _check(walks)
    ratio = len(walks) > 1
    header = ["component", "class"] + [w.name for w in walks] + ([f"{walks[0].name} ÷ {walks[-1].name}"] if ratio else [])
    rows = []
    for part, label in NAMES.items():
        having = [w for w in walks if part in w.parameters]
        if not having:
            continue
        counts = [w.parameters.get(part, 0) for w in walks]
        both = counts[0] and counts[-1]
        rows.append([label, having[0].classes[part]] + [millions(n) if n else "—" for n in counts]
                    + ([times(counts[0], counts[-1]) if both else "—"] if ratio else []))
    totals = [w.total_parameters for w in walks]
    rows.append(["all", ""] + [millions(n) for n in totals] + ([times(totals[0], totals[-1])] if ratio else []))
    return Table(header, rows)


def _merged_keys(lists) -> list:
    """The union of several ordered key lists, each list's order kept (a key new to one list goes right after
    the key before it there)."""
    keys = []
    for items in lists:
        at = -1
        for key in items:
            if key in keys:
                at = keys.index(key)
            else:
                at += 1
                keys.insert(at, key)
    return keys


def shape_table(walks, parts=None, *, encoder: bool = False) -> Table:
    """The generation (or with `encoder=True`, an image through the VAE encoder) step by step: one row per
    step, one column per model with the output's shape and, after "·", the grid side where cross-attention
    runs inside that step. `parts`: keep only these parts ("UNet", "VAE decoder", ...). Steps one model lacks
    (SD's fourth down block in the toy model) are empty."""
    walks = _check(walks)
    by_model = [{(s.part, s.step): s for s in (w.encoder if encoder else w.stages)} for w in walks]
    keys = _merged_keys([list(stages) for stages in by_model])
    if parts is not None:
        parts = [parts] if isinstance(parts, str) else list(parts)
        known = {part for part, _ in keys}
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise ValueError(f"no part named {unknown}; the parts are {sorted(known)}")
        keys = [k for k in keys if k[0] in parts]
    rows = []
    for key in keys:
        cells = []
        for stages in by_model:
            stage = stages.get(key)
            cells.append("" if stage is None else dims(stage.shape) + (f" · {stage.attention}²" if stage.attention else ""))
        rows.append(list(key) + cells)
    return Table(["part", "step"] + [w.name for w in walks], rows)


def cross_attention_table(walks) -> Table:
    """Where the UNet's cross-attention layers run: per model and grid side, how many layers on the way down,
    in the middle and on the way up, the attention map per head (image tokens × text tokens), heads and the
    text states' width."""
    rows = []
    for w in _check(walks):
        for side in w.cross_attention_resolutions:
            here = [c for c in w.cross_attention if c.resolution == side]
            where = [(place, sum(c.layer.startswith(place) for c in here)) for place in ("down", "mid", "up")]
            first = here[0]
            rows.append([w.name, f"{side}×{side}", ", ".join(f"{p} {n}" for p, n in where if n),
                         f"{first.queries}×{first.keys}", "/".join(sorted({str(c.heads) for c in here})),
                         str(first.context_dim)])
    return Table(["model", "grid", "layers", "map per head", "heads", "text width"], rows)


def padding_table(walks) -> Table:
    """Every stride-2 downsampling: the VAE encoder's pads right and bottom by one pixel itself (F.pad
    (0, 1, 0, 1), then a convolution without padding); the UNet's uses the convolution's symmetric padding."""
    rows = []
    for w in _check(walks):
        for p in w.downsampling:
            rows.append([w.name, p.layer, str(p.pad) if p.pad else "—", str(p.conv_padding),
                         f"{dims(p.before[-2:])} → {dims(p.padded[-2:])} → {dims(p.after[-2:])}"])
    return Table(["model", "layer", "F.pad", "conv padding", "height×width: in → padded → out"], rows)


def unet_ladder(walks, *, size: float = 4.2) -> Figure:
    """One panel per model: the UNet's blocks left to right, each at the grid side of its output (the "U"),
    labelled with its channels; red marks where cross-attention runs inside a block, at its grid side."""
    walks = _check(walks)
    fig, axes = subplots(1, len(walks), figsize=(size * len(walks), 3.4), squeeze=False)
    for ax, w in zip(axes[0], walks):
        stages = [s for s in w.stages if s.part == "UNet" and len(s.shape) == 4 and s.step != "guidance batch"]
        x = np.arange(len(stages))
        sides = [s.shape[-1] for s in stages]
        ax.plot(x, sides, "o-", color="0.3", zorder=2, label="block output")
        for xi, s in zip(x, stages):
            ax.annotate(str(s.shape[1]), (xi, s.shape[-1]), textcoords="offset points", xytext=(0, -13),
                        ha="center", fontsize=7, color="0.3")
        attn = [(xi, s.attention) for xi, s in zip(x, stages) if s.attention]
        if attn:
            ax.scatter(*zip(*attn), marker="x", s=60, color="tab:red", zorder=3, label="cross-attention")
        ticks = sorted({*sides, *(a for _, a in attn)})
        ax.set_yscale("log", base=2)
        ax.set_yticks(ticks, [f"{t}×{t}" for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(min(ticks) / 1.6, max(ticks) * 1.4)
        ax.set_xticks(x, [s.step.split(" →")[0].replace(" block", "") for s in stages], rotation=60, fontsize=7)
        ax.set_title(f"{w.name}: UNet {millions(w.parameters['unet'])}, {w.image_size}² images", fontsize=9)
        ax.legend(fontsize=7, loc="upper center")
    axes[0][0].set_ylabel("latent grid (channels below each block)")
    return fig
