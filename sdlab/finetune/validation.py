"""Progression: fixed prompts, fixed seeds, sampled at step 0 and every V steps; PNGs, measurements, grids.

Sampling goes through `sdlab.attention.generate`, the one denoising loop every part of sdlab uses.

Layout under `OUTPUT/validation/`:
    step-000120/00-prompt.png ...   one image per validation prompt (seed = validation_seed + index), and
                                    with `samples` > 1 also 00-prompt-1.png ... (more seeds, averaged)
    metrics.csv                     one row per image: step, kind, index, sample, prompt, seed, image, measurements
    tradeoff.csv                    one row per step: mean fidelity and style of the probes and of the prompts
    progression.png, before_after.png, tradeoff.png   written when the run ends
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

TOY_PROBE_CANDIDATES = (
    "a photo of a red car on a road", "a purple house in the snow", "a yellow star in the sky",
    "a blue tree on sand", "a picture of an orange car at night", "a pink house on grass",
    "a brown star on a road", "a photo of a green tree in the snow", "a blue car on sand",
    "a yellow house at night", "a red tree in the sky", "a purple star on grass",
)
"""Out-of-domain probes for the toy model, in order of preference: the first ones whose (object, color,
background) the finetuning data does not contain play the report's "yoda"."""
REAL_PROMPTS = ("girl with a pearl earring", "cute Obama creature", "Donald Trump")
"""The report's before/after prompts (Figs. 11-12), for real Stable Diffusion weights."""
REAL_PROBES = ("yoda",)
"""The report's out-of-domain probe (Fig. 13)."""
TOY_SIZE = 64


def default_prompts(resolution: int, captions: list[str], n_prompts: int = 3, n_probes: int = 4):
    """(prompts, probes). For the toy model (64x64): the first distinct captions of the data as in-domain
    prompts, and probes whose object-color-background combination the data never shows. Else the report's."""
    from .metrics import parse_toy_prompt

    if resolution != TOY_SIZE:
        return REAL_PROMPTS, REAL_PROBES
    prompts = tuple(dict.fromkeys(c for c in captions if parse_toy_prompt(c)))[:n_prompts]
    seen = {tuple(parse_toy_prompt(c).values()) for c in captions if parse_toy_prompt(c)}
    probes = tuple(p for p in TOY_PROBE_CANDIDATES if tuple(parse_toy_prompt(p).values()) not in seen)[:n_probes]
    return prompts, probes


def read_csv(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if k in ("step", "index", "sample", "seed"):
                row[k] = int(v)
            elif k not in ("kind", "prompt", "image"):
                row[k] = float(v) if v not in ("", None) else float("nan")
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


class Scalars:
    """Training curves to tensorboard under `folder` when tensorboard is installed; otherwise nothing."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(str(folder))

    def add(self, step: int, values: dict) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def suggest_stop(summary: list[dict]) -> int | None:
    """The validated step that best balances probe fidelity and style (their harmonic mean), or None."""
    scored = [(2 * r["probe_fidelity"] * r["probe_style"] / (r["probe_fidelity"] + r["probe_style"]), r["step"])
              for r in summary if r.get("probe_fidelity", 0) + r.get("probe_style", 0) > 0]
    return max(scored)[1] if scored else None


class Progression:
    """Samples the validation prompts with fixed seeds and records images and measurements per step."""

    def __init__(self, folder: Path, prompts, probes, *, seed: int, inference_steps: int, guidance_scale: float,
                 metrics=None, samples: int = 1):
        self.folder = Path(folder)
        self.items = [("prompt", p) for p in prompts] + [("probe", p) for p in probes]
        self.seed, self.inference_steps, self.guidance_scale = seed, inference_steps, guidance_scale
        self.samples = samples
        self.metrics = metrics
        self.rows = read_csv(self.folder / "metrics.csv")
        self.summary = read_csv(self.folder / "tradeoff.csv")

    def forget_after(self, step: int) -> None:
        """Drop records of steps after `step` (a resumed run redoes them)."""
        self.rows = [r for r in self.rows if r["step"] <= step]
        self.summary = [r for r in self.summary if r["step"] <= step]

    def done(self, step: int) -> bool:
        return any(r["step"] == step for r in self.summary)

    @torch.no_grad()
    def run(self, step: int, pipe, extra: dict | None = None) -> dict:
        """Sample every prompt at this step with `pipe`, save PNGs and measurements; return the step's summary."""
        from ..attention import generate  # the one denoising loop of sdlab

        n = len(self.items)
        jobs = [(k, i, kind, prompt, self.seed + i + k * n)  # sample k of prompt i has its own fixed seed
                for k in range(self.samples) for i, (kind, prompt) in enumerate(self.items)]
        images = [generate(pipe, [prompt], seed=seed, steps=self.inference_steps,
                           guidance=self.guidance_scale).images[0] for _, _, _, prompt, seed in jobs]
        out = self.folder / f"step-{step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        prompts = [prompt for _, _, _, prompt, _ in jobs]
        measured = self.metrics.measure(images, prompts) if self.metrics else [{} for _ in images]
        self.rows = [r for r in self.rows if r["step"] != step]
        for (k, i, kind, prompt, seed), image, m in zip(jobs, images, measured):
            name = f"{i:02d}-{kind}.png" if k == 0 else f"{i:02d}-{kind}-{k}.png"
            image.save(out / name)
            self.rows.append({"step": step, "kind": kind, "index": i, "sample": k, "prompt": prompt, "seed": seed,
                              "image": f"{out.name}/{name}", **m})
        summary = {"step": step, **(extra or {})}
        for kind in ("probe", "prompt"):
            mine = [m for (_, _, job_kind, _, _), m in zip(jobs, measured) if job_kind == kind]
            for key in (self.metrics.columns if self.metrics else ()):
                if key in ("fidelity", "style") and mine:
                    summary[f"{kind}_{key}"] = sum(m[key] for m in mine) / len(mine)
        self.summary = [r for r in self.summary if r["step"] != step] + [summary]
        self.summary.sort(key=lambda r: r["step"])
        self.save()
        return summary

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_csv(self.folder / "metrics.csv", self.rows)
        _write_csv(self.folder / "tradeoff.csv", self.summary)

    def write_figures(self) -> None:
        """progression.png, before_after.png and (with measurements) tradeoff.png next to the CSVs."""
        from . import plots

        run = self.folder.parent
        if not self.rows:
            return
        for name, fig in (("progression", plots.progression_figure(run)), ("before_after", plots.before_after_figure(run))):
            fig.savefig(self.folder / f"{name}.png", dpi=100, bbox_inches="tight")
        if any("probe_fidelity" in r for r in self.summary):
            plots.tradeoff_figure(run).savefig(self.folder / "tradeoff.png", dpi=100, bbox_inches="tight")
