"""The weights of validated steps, kept so that the suggested stop can be loaded as a pipeline.

At every validation the run saves what trains (the full UNet's parameters, or only the LoRA adapters; the text
encoder's too when it trains), EMA weights when EMA is on, as `RUN/snapshots/step-NNNNNN/trained_I.safetensors`
with a marker written last. It then deletes every snapshot but those the stop rule needs
(`sdlab.finetune.stop.keep_steps`): at most two at a time. `build_pipeline` puts a snapshot on the base model,
fuses LoRA, and returns an ordinary diffusers pipeline. Step 0 needs no snapshot: it is the base model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FOLDER = "snapshots"
MARKER = "snapshot.json"
_NAME = re.compile(r"^step-(\d+)$")


def _folder(run, step: int) -> Path:
    return Path(run) / FOLDER / f"step-{step:06d}"


def kept_steps(run) -> list[int]:
    """Steps with a complete snapshot, in order."""
    root = Path(run) / FOLDER
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / MARKER).is_file())


def save(run, step: int, weights: list[dict]) -> Path:
    """Write the snapshot of `step` (one {name: tensor} per trained model) atomically."""
    final = _folder(run, step)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, tensors in enumerate(weights):
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / f"trained_{i}.safetensors"))
    (tmp / MARKER).write_text(json.dumps({"step": step, "models": len(weights)}))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def load(run, step: int) -> list[dict] | None:
    """The snapshot of `step`, or None if it was not kept."""
    folder = _folder(run, step)
    if not (folder / MARKER).is_file():
        return None
    n = json.loads((folder / MARKER).read_text())["models"]
    return [load_file(str(folder / f"trained_{i}.safetensors")) for i in range(n)]


def prune(run, keep) -> None:
    """Delete every snapshot whose step is not in `keep`, and leftovers of interrupted saves."""
    root = Path(run) / FOLDER
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if p.name.startswith(".tmp-") or (m and int(m.group(1)) not in keep):
            shutil.rmtree(p, ignore_errors=True)


def forget_after(run, step: int) -> None:
    """Delete snapshots of steps after `step` (a resumed run validates them again)."""
    prune(run, {s for s in kept_steps(run) if s <= step})


def build_pipeline(config, weights: list[dict] | None):
    """The base model of `config` with `weights` (a snapshot; None = the base model itself) in place, LoRA fused:
    a plain float32 `StableDiffusionPipeline` on the CPU."""
    from ..models import load_pipeline
    from .config import TEXT_LORA_TARGETS
    from .modules import _add_lora, fuse_lora

    from diffusers import DDIMScheduler

    pipe = load_pipeline(config.model, device="cpu", dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # as the run's own output
    if weights is None:
        return pipe
    models = [pipe.unet] + ([pipe.text_encoder] if config.train_text_encoder else [])
    if len(weights) != len(models):
        raise ValueError(f"the snapshot holds {len(weights)} model(s), the run's config trains {len(models)}")
    for i, (model, tensors) in enumerate(zip(models, weights)):
        if config.lora_rank:
            _add_lora(model, config, config.seed + i, config.lora_targets if i == 0 else TEXT_LORA_TARGETS)
        named = dict(model.named_parameters())
        missing = [n for n in tensors if n not in named]
        if missing:
            raise ValueError(f"the snapshot does not fit {type(model).__name__}: no parameter {missing[0]!r}")
        with torch.no_grad():
            for n, t in tensors.items():
                named[n].copy_(t)
        model.requires_grad_(False)
    if config.lora_rank:
        pipe.unet = fuse_lora(pipe.unet)
        if config.train_text_encoder:
            pipe.text_encoder = fuse_lora(pipe.text_encoder)
    return pipe.to("cpu")
