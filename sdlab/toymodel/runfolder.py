"""A training run's folder: its config, its log, one atomic checkpoint, and the RNG states a resume restores."""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import ToyTrainConfig, TrainingError


class RunFolder:
    """A run folder: config, log, atomic checkpoints."""

    def __init__(self, cfg: ToyTrainConfig, resume: bool, overwrite: bool):
        self.dir = Path(cfg.output)
        self.ckpt = self.dir / "checkpoint"
        config_path = self.dir / "config.json"
        if resume:
            if not (self.ckpt / "state.pt").is_file():
                raise TrainingError(f"--resume: there is no checkpoint in {self.ckpt} to resume from; start without --resume")
            saved = asdict(cfg) | json.loads(config_path.read_text())  # fields added since the run: this call's values
            if saved != asdict(cfg) | {"device": saved.get("device")}:
                raise TrainingError(f"--resume: {config_path} holds a different configuration; use the same options")
        elif self.dir.exists() and any(self.dir.iterdir()):
            if not overwrite:
                raise TrainingError(
                    f"{self.dir} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                    "or choose another --output"
                )
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(asdict(cfg), indent=2))
        self.log_path = self.dir / "log.csv"
        if not resume:
            self.log_path.write_text("phase,step,loss,lr,seconds\n")
        self.last_save = time.time()

    def log(self, phase, step, loss, lr, seconds):
        with self.log_path.open("a", newline="") as f:
            csv.writer(f).writerow([phase, step, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.1f}"])

    def save(self, state: dict):
        tmp = self.dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(state, tmp / "state.pt")
        old = self.dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.ckpt.exists():
            self.ckpt.rename(old)
        tmp.rename(self.ckpt)
        shutil.rmtree(old, ignore_errors=True)
        self.last_save = time.time()

    def load(self) -> dict:
        return torch.load(self.ckpt / "state.pt", map_location="cpu", weights_only=False)


PHASES = ("vae", "unet", "done", "decoder", "finished", "anneal", "annealed", "vae_refine", "refined", "attribute_anneal",
          "attributes_annealed")
"""A checkpoint's `phase`, in order: "done", "finished", "annealed", "refined" and "attributes_annealed" mark
phases 2 to 6 complete."""


def reached_phase(state: dict, phase: str) -> bool:
    """Whether the checkpoint `state` is at `phase` of `PHASES` or later."""
    return PHASES.index(state["phase"]) >= PHASES.index(phase)


def rng_state(gen: torch.Generator, np_rng: np.random.Generator):
    return {"torch": gen.get_state(), "numpy": np_rng.bit_generator.state}


def set_rng_state(gen, np_rng, state):
    gen.set_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]


def check_finite(loss, phase, step, run):
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{phase} loss became {loss.item()} at step {step}; stopped. The last good checkpoint is in "
            f"{run.ckpt} (resume with --resume, perhaps with a lower learning rate)"
        )
