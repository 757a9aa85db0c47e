"""Progression: fixed prompts, fixed seeds, sampled at step 0 and every V steps; PNGs and measurements.

Sampling goes through `sdlab.attention.generate`, the one denoising loop every part of sdlab uses: sample k
of every prompt starts from the same noise (seed `validation_seed + k`), so one batch per seed draws them all
and the prompts of one column differ only by their words.

Layout under `OUTPUT/validation/`:
    step-000120/00-prompt.png ...   one image per validation prompt and seed: 00-prompt.png (sample 0),
                                    00-prompt-1.png (sample 1), ...; probes are NN-probe.png
    metrics.csv                     one row per image: step, kind, index, sample, prompt, seed, image, measurements
    tradeoff.csv                    one row per step: for the probes and for the in-domain prompts, the mean of
                                    every measurement over their prompt x seed pairs, its standard deviation
                                    (`_sd`) and the number of pairs (`_n`), e.g. probe_fidelity, probe_fidelity_sd,
                                    probe_object, probe_color, probe_background, probe_style, probe_n
    prompts.json                    the prompts and probes (a resumed run samples the same ones)
    progression.png, before_after.png, tradeoff.png   written when the run ends (`sdlab.finetune.plots`)
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from pathlib import Path

import torch

PROMPTS_FILE = "prompts.json"
BATCH = 8
"""Prompts per `generate` call (one seed each call)."""


def read_csv(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if v not in ("", None) and (k in ("step", "index", "sample", "seed") or k.endswith("_n")):
                row[k] = int(v)  # counts read back as written: a resumed run rewrites them unchanged
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
        w.writeheader()  # NaN and None both as "": what read_csv reads as NaN, so a rewrite changes nothing
        w.writerows({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows)
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


def summarize(rows: list[dict], columns) -> dict:
    """Mean, standard deviation (`_sd`) and count (`_n`) of each measurement over `rows`, per kind:
    {"probe_fidelity": ..., "probe_fidelity_sd": ..., "probe_n": 8, ...}; "_ok" is dropped from the names
    (object_ok -> probe_object). NaN measurements are left out of their column's mean."""
    out = {}
    for kind in ("probe", "prompt"):
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        out[f"{kind}_n"] = len(mine)
        for key in columns:
            values = [float(r[key]) for r in mine if key in r and not math.isnan(float(r[key]))]
            name = f"{kind}_{key.removesuffix('_ok')}"
            out[name] = statistics.fmean(values) if values else float("nan")
            out[f"{name}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else float("nan")
    return out


def recorded_prompts(folder) -> tuple[tuple, tuple] | None:
    """(prompts, probes) a run recorded in `validation/prompts.json`, or None."""
    path = Path(folder) / PROMPTS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return tuple(data["prompts"]), tuple(data["probes"])


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

        out = self.folder / f"step-{step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        prompts = [p for _, p in self.items]
        records, images = [], []
        for k in range(self.samples):
            seed = self.seed + k
            for start in range(0, len(prompts), BATCH):
                chunk = prompts[start:start + BATCH]
                images += generate(pipe, chunk, seed=seed, steps=self.inference_steps,
                                   guidance=self.guidance_scale).images
            for i, (kind, prompt) in enumerate(self.items):
                name = f"{i:02d}-{kind}.png" if k == 0 else f"{i:02d}-{kind}-{k}.png"
                records.append({"step": step, "kind": kind, "index": i, "sample": k, "prompt": prompt,
                                "seed": seed, "image": f"{out.name}/{name}"})
        measured = self.metrics.measure(images, [r["prompt"] for r in records]) if self.metrics else [{}] * len(images)
        for record, image, m in zip(records, images, measured):
            image.save(self.folder / record["image"])
            record.update(m)
        self.rows = [r for r in self.rows if r["step"] != step] + records
        summary = {"step": step, **(extra or {}), **summarize(records, self.metrics.columns if self.metrics else ())}
        self.summary = sorted([r for r in self.summary if r["step"] != step] + [summary], key=lambda r: r["step"])
        self.save()
        return summary

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_csv(self.folder / "metrics.csv", self.rows)
        _write_csv(self.folder / "tradeoff.csv", self.summary)
        items = {"prompts": [p for k, p in self.items if k == "prompt"],
                 "probes": [p for k, p in self.items if k == "probe"]}
        tmp = self.folder / (PROMPTS_FILE + ".tmp")
        tmp.write_text(json.dumps(items, indent=1))
        os.replace(tmp, self.folder / PROMPTS_FILE)
