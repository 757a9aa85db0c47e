"""Figures of a finetuning run, read from its folder; each function returns an `sdlab.plotting.Figure` (a
matplotlib Figure that a notebook shows as an image). This module owns the run's figures: `write_figures`
saves them next to the CSVs when a run ends.

`progression_figure` is the report's Fig. 13 (rows prompts, columns steps), `before_after_figure` its
Figs. 11-12 (first and last validation side by side), `tradeoff_figure` the measured version of the
report's fidelity-vs-style argument with the suggested stop marked, `stop_figure` the probes there,
`compare_figure` several runs (full UNet vs LoRA) on one axis.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from PIL import Image

from ..plotting import Figure
from .stop import run_threshold, suggest_stop, trend
from .validation import read_csv

BAND = 1.96
"""Bands are the mean +- BAND standard errors over a point's prompt x seed pairs (a 95% interval of the mean)."""
PARTS = (("object", "tab:purple"), ("color", "tab:orange"), ("background", "tab:green"))


def _records(run):
    folder = Path(run) / "validation"
    rows = read_csv(folder / "metrics.csv")
    if not rows:
        raise FileNotFoundError(f"{folder}/metrics.csv has no validation images: run with validate_every > 0")
    return folder, rows


def _grid(folder: Path, rows: list[dict], steps: list[int], title: str, cell: float = 1.3, names=None) -> Figure:
    rows = [r for r in rows if r.get("sample", 0) == 0]  # the first seed of each prompt
    prompts = sorted({(r["index"], r["kind"], r["prompt"]) for r in rows})
    fig = Figure(figsize=(cell * len(steps) + 2.2, cell * len(prompts) + 0.5), layout="constrained")
    axes = fig.subplots(len(prompts), len(steps), squeeze=False)
    by_key = {(r["index"], r["step"]): r for r in rows}
    for i, (index, kind, prompt) in enumerate(prompts):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            row = by_key.get((index, step))
            if row is not None:
                with Image.open(folder / row["image"]) as img:
                    ax.imshow(img.convert("RGB"))
                if "fidelity" in row and "style" in row and not math.isnan(row["fidelity"]):
                    ax.set_xlabel(f"fid {row['fidelity']:.2f}  sty {row['style']:.2f}", fontsize=6)
            if i == 0:
                ax.set_title((names or {}).get(step, f"step {step}"), fontsize=8)
            if j == 0:
                label = ("[probe] " if kind == "probe" else "") + prompt
                ax.set_ylabel("\n".join(textwrap.wrap(label, 18)), fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return fig


def dataset_figure(folder, n: int = 8, columns: int = 8) -> Figure:
    """The first `n` images of an imagefolder (metadata.jsonl) with their captions."""
    import json

    folder = Path(folder)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines() if line.strip()][:n]
    cols = min(columns, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(1.6 * cols, 1.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        with Image.open(folder / row["file_name"]) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_title("\n".join(textwrap.wrap(str(row.get("text", "")), 20)), fontsize=6)
    return fig


def progression_figure(run, kind: str | None = None, max_columns: int = 8) -> Figure:
    """Rows: validation prompts (or only `kind`, "probe" or "prompt"); columns: up to `max_columns` steps."""
    folder, rows = _records(run)
    if kind is not None:
        rows = [r for r in rows if r["kind"] == kind]
    steps = sorted({r["step"] for r in rows})
    if len(steps) > max_columns:  # evenly spaced, always first and last
        picks = {round(k * (len(steps) - 1) / (max_columns - 1)) for k in range(max_columns)}
        steps = [steps[k] for k in sorted(picks)]
    return _grid(folder, rows, steps, "progression (fixed prompts and seeds)")


def before_after_figure(run, kind: str | None = None) -> Figure:
    """The first and the last validation of each prompt (or only `kind`) side by side."""
    folder, rows = _records(run)
    if kind is not None:
        rows = [r for r in rows if r["kind"] == kind]
    steps = sorted({r["step"] for r in rows})
    return _grid(folder, rows, [steps[0], steps[-1]] if len(steps) > 1 else steps, "before / after finetuning")


def _table(run) -> list[dict]:
    summary = read_csv(Path(run) / "validation" / "tradeoff.csv")
    if not summary or "probe_fidelity" not in summary[0]:
        raise FileNotFoundError(f"{run}/validation/tradeoff.csv has no probe measurements (metrics were skipped)")
    return summary


def _suggestion(run, summary, threshold):
    return suggest_stop(summary, run_threshold(run) if threshold is None else threshold)


def _band(ax, steps, summary, key, color, label, style="-", marker="o"):
    """The mean of `key` with a band of +- BAND standard errors (from `key`_sd and the kind's `_n`)."""
    n = [r.get(key.split("_")[0] + "_n", float("nan")) for r in summary]
    mean = [r[key] for r in summary]
    ax.plot(steps, mean, style, marker=marker, ms=3, color=color, label=label)
    if f"{key}_sd" in summary[0]:
        half = [BAND * r[f"{key}_sd"] / math.sqrt(k) if k == k and k > 0 else 0.0 for r, k in zip(summary, n)]
        ax.fill_between(steps, [max(0.0, m - h) for m, h in zip(mean, half)],
                        [min(1.0, m + h) for m, h in zip(mean, half)], color=color, alpha=0.18, lw=0)


def tradeoff_figure(run, threshold: float | None = None) -> Figure:
    """Left: probe style and fidelity against steps (bands: 95% intervals of the mean over the probe x seed pairs;
    in-domain prompts dashed), the suggested stop and the fidelity floor marked. Right: the probes' fidelity split
    into object, color and background, to see what is lost first. `threshold`: the stop rule's (default: the
    run's `stop_threshold`)."""
    summary = _table(run)
    steps = [r["step"] for r in summary]
    suggestion = _suggestion(run, summary, threshold)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    _band(left, steps, summary, "probe_style", "tab:red", "probe style")
    _band(left, steps, summary, "probe_fidelity", "tab:blue", "probe fidelity", marker="s")
    left.plot(steps, trend(r["probe_fidelity"] for r in summary), color="tab:blue", lw=2.5, alpha=0.3,
              label="fidelity trend (the rule's fit)")
    if "prompt_style" in summary[0]:
        left.plot(steps, [r["prompt_style"] for r in summary], "--", color="tab:red", alpha=0.5,
                  label="in-domain style")
        left.plot(steps, [r["prompt_fidelity"] for r in summary], "--", color="tab:blue", alpha=0.5,
                  label="in-domain fidelity")
    left.axhline(suggestion.floor, color="tab:blue", lw=0.8, ls=":", label=f"fidelity floor ({suggestion.threshold:g} "
                 "x step 0)")
    for ax in (left, right):
        ax.axvline(suggestion.step, color="black", lw=1.2, alpha=0.7)
        ax.set_xlabel("finetuning step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    late = suggestion.step > (steps[0] + steps[-1]) / 2
    left.annotate(f"suggested stop\nstep {suggestion.step}", (suggestion.step, 0.5), xytext=(-4 if late else 4, 0),
                  textcoords="offset points", fontsize=7, ha="right" if late else "left")
    n = int(summary[0].get("probe_n", 0))
    left.set_title(f"style rises, fidelity falls (bands: 95% of the mean, {n} probe x seed pairs)", fontsize=8)
    left.set_ylabel("score (0 to 1)")
    left.legend(fontsize=6, loc="best")
    for part, color in PARTS:
        if f"probe_{part}" in summary[0]:
            _band(right, steps, summary, f"probe_{part}", color, f"probe {part} right")
    right.set_title("what the probes lose: fidelity by part", fontsize=8)
    right.legend(fontsize=6, loc="lower left")
    return fig


def stop_figure(run, threshold: float | None = None, kind: str = "probe") -> Figure:
    """The probes (or `kind`) before finetuning, at the suggested stop and at the last step, same seeds."""
    folder, rows = _records(run)
    summary = _table(run)
    suggestion = _suggestion(run, summary, threshold)
    rows = [r for r in rows if r["kind"] == kind]
    last = max(r["step"] for r in rows)
    steps = sorted({0, suggestion.step, last})
    names = {0: "step 0 (base)", suggestion.step: f"step {suggestion.step} (stop)", last: f"step {last} (last)"}
    if suggestion.step in (0, last):
        names[suggestion.step] = f"step {suggestion.step} (stop, {'base' if suggestion.step == 0 else 'last'})"
    return _grid(folder, rows, steps, "before, at the suggested stop, at the end", names=names)


def compare_figure(runs: dict, keys=("probe_style", "probe_object")) -> Figure:
    """Several runs on the same axes (e.g. {"full UNet": run, "LoRA r8": other}): the probes' `keys` (with bands)
    against steps, one panel per key: how fast each moves."""
    fig = Figure(figsize=(4.2 * len(keys), 3.3), layout="constrained")
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    colors = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    for (label, run), color in zip(runs.items(), colors):
        summary = _table(run)
        steps = [r["step"] for r in summary]
        for ax, key in zip(axes, keys):
            _band(ax, steps, summary, key, color, label)
    for ax, key in zip(axes, keys):
        ax.set_title(key.replace("_", " ") + (" right" if key.split("_")[1] in dict(PARTS) else ""), fontsize=8)
        ax.set_xlabel("finetuning step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def write_figures(run) -> None:
    """progression.png, before_after.png and (with probe measurements) tradeoff.png into `RUN/validation/`."""
    folder = Path(run) / "validation"
    if not read_csv(folder / "metrics.csv"):
        return
    figures = {"progression": progression_figure(run), "before_after": before_after_figure(run)}
    summary = read_csv(folder / "tradeoff.csv")
    if summary and all("probe_fidelity" in r for r in summary):
        figures["tradeoff"] = tradeoff_figure(run)
    for name, fig in figures.items():
        fig.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")

