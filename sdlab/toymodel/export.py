"""Turning a toy training run into pipeline folders: the final one, one from a checkpoint, the shipped copy."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from .architecture import TINY, TOY, build_pipeline
from .config import ToyTrainConfig, TrainingError
from .dataset import encode_latents, render_dataset
from .runfolder import reached_phase


def save_pipeline(pipe, unet, out: Path) -> Path:
    """Save `pipe` with `unet` (the EMA) as a diffusers folder, atomically (write aside, then rename)."""
    pipe.unet = unet.eval()
    pipe.register_modules(unet=pipe.unet)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.to("cpu").save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def shipped_weights(cfg: ToyTrainConfig, annealed: bool) -> tuple[str, str]:
    """Which UNet and text encoder a run ships, as checkpoint keys: the EMA of the UNet (and of the text encoder
    if `cfg.ema_text_encoder`), or, once the anneal phase has begun, the annealed weights themselves."""
    if annealed:
        return "unet", "text_encoder"
    return "ema", "ema_text_encoder" if cfg.ema_text_encoder else "text_encoder"


def export_checkpoint(output: str | Path) -> Path:
    """Turn the latest checkpoint of the run in `output` (UNet phase) into a pipeline folder, without training.

    The UNet is the checkpoint's EMA (its last weights once the anneal phase has begun, as the final pipeline);
    the VAE's scaling factor is the one training computed (stored in the checkpoint).
    Returns `output/pipeline-PHASE-stepN`.
    """
    run_dir = Path(output)
    ckpt = run_dir / "checkpoint" / "state.pt"
    if not ckpt.is_file():
        raise TrainingError(f"there is no checkpoint in {ckpt.parent} to export")
    cfg = ToyTrainConfig(**json.loads((run_dir / "config.json").read_text()))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    if state["phase"] == "vae" or "ema" not in state:
        raise TrainingError(f"the checkpoint in {ckpt.parent} is still in the VAE phase: nothing to sample with yet")
    pipe = build_pipeline(TOY if cfg.arch == "toy" else TINY, seed=cfg.seed)
    pipe.vae.load_state_dict(state["vae"])
    unet_key, text_key = shipped_weights(cfg, annealed=reached_phase(state, "anneal"))
    pipe.unet.load_state_dict(state[unet_key])
    pipe.text_encoder.load_state_dict(state[text_key])
    scaling = state.get("scaling")
    if scaling is None:  # checkpoints written before the factor was stored: recompute it as training did
        images, _, _ = render_dataset(cfg)
        encoder = copy.deepcopy(pipe.vae)  # the VAE from before phase 5: its latents are the UNet's
        encoder.load_state_dict(state.get("vae_anchor", state["vae"]))
        *_, scaling = encode_latents(encoder.eval(), images, torch.device("cpu"))
    pipe.vae.register_to_config(scaling_factor=scaling)
    pipe.text_encoder.eval()
    return save_pipeline(pipe, pipe.unet, run_dir / f"pipeline-{state['phase']}-step{state['step']}")


def ship_pipeline(pipeline_dir, run_dir=None) -> Path:
    """Copy a trained pipeline into the package as the default toy model, weights stored as float16 (half the
    bytes; `load_pipeline` upcasts to float32 on the CPU), with the run's training log and config beside it."""
    from ..models import TOY_MODEL_DIR, load_pipeline

    pipe = load_pipeline(pipeline_dir, device="cpu", dtype=torch.float16)
    save_pipeline(pipe, pipe.unet, TOY_MODEL_DIR)
    if run_dir is not None:
        shutil.copy(Path(run_dir) / "log.csv", TOY_MODEL_DIR / "training_log.csv")
        shutil.copy(Path(run_dir) / "config.json", TOY_MODEL_DIR / "train_config.json")
    return TOY_MODEL_DIR
