"""Figures of a finetuning run, read from its `validation/` folder; each function returns an
`sdlab.plotting.Figure` (a matplotlib Figure that a notebook shows as an image).

`progression_figure` is the report's Fig. 13 (rows prompts, columns steps), `before_after_figure` its
Figs. 11-12 (first and last validation side by side), `tradeoff_figure` the measured version of the
report's fidelity-vs-style argument.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from PIL import Image

from ..plotting import Figure
from .validation import read_csv


def _records(run):
    folder = Path(run) / "validation"
    rows = read_csv(folder / "metrics.csv")
    if not rows:
        raise FileNotFoundError(f"{folder}/metrics.csv has no validation images: run with validate_every > 0")
    return folder, rows


def _grid(folder: Path, rows: list[dict], steps: list[int], title: str, cell: float = 1.3) -> Figure:
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
                ax.set_title(f"step {step}", fontsize=8)
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


def before_after_figure(run) -> Figure:
    """The first and the last validation of each prompt side by side."""
    folder, rows = _records(run)
    steps = sorted({r["step"] for r in rows})
    return _grid(folder, rows, [steps[0], steps[-1]] if len(steps) > 1 else steps, "before / after finetuning")


def tradeoff_figure(run) -> Figure:
    """Probe fidelity and style against steps (in-domain prompts dashed): where to stop."""
    summary = read_csv(Path(run) / "validation" / "tradeoff.csv")
    if not summary or "probe_fidelity" not in summary[0]:
        raise FileNotFoundError(f"{run}/validation/tradeoff.csv has no measurements (metrics were skipped)")
    steps = [r["step"] for r in summary]
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, [r["probe_fidelity"] for r in summary], "o-", color="tab:blue", label="probe fidelity")
    ax.plot(steps, [r["probe_style"] for r in summary], "s-", color="tab:red", label="probe style")
    if "prompt_style" in summary[0]:
        ax.plot(steps, [r["prompt_fidelity"] for r in summary], "o--", color="tab:blue", alpha=0.4,
                label="in-domain fidelity")
        ax.plot(steps, [r["prompt_style"] for r in summary], "s--", color="tab:red", alpha=0.4,
                label="in-domain style")
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("score (0 to 1)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("fidelity to the prompt vs. style of the dataset")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
