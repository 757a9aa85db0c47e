"""`finetune(config)`: train a Stable Diffusion pipeline's UNet (full or LoRA) on captioned images with accelerate.

The recipe follows diffusers' examples/text_to_image: frozen VAE (and text encoder unless asked), noise added
at a uniformly drawn timestep, an epsilon or v target taken from the scheduler config, optional min-SNR
weighting and noise offset, AdamW with warmup and gradient clipping, optional EMA. What sdlab adds: every
random draw is seeded by (seed, step, micro-batch, rank) so a resumed run is bit-identical to an uninterrupted
one; checkpoints are atomic; validation measures the fidelity-vs-style tradeoff as training goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cpu_memory import reuse_freed_memory
from ..models import load_pipeline
from . import checkpoints, modules, plots, snapshots, stop
from .config import FinetuneConfig, FinetuneError
from .data import BatchOrder, TrainItems, collate, open_dataset
from .validation import Scalars


@dataclass
class FinetuneResult:
    """What a finished run returns."""

    output: Path
    """The run folder; it is also the finetuned diffusers pipeline (`sdlab.load_pipeline(output)`)."""
    steps: int
    """Optimizer steps done in total (including those before a resume)."""
    resumed_from: int
    """Step this invocation started at (0 for a fresh run)."""
    images_per_second: float
    """Training throughput of this invocation (all processes, excluding validation)."""
    tradeoff: list
    """One dict per validation: step, probe/prompt fidelity and style (empty without validation)."""
    skipped_images: int
    """Unreadable images skipped."""
    step_seconds: list
    """Wall time of each optimizer step of this invocation (data, forward, backward, update; no validation)."""
    suggestion: object = None
    """The suggested stop (`sdlab.finetune.stop.Suggestion`; its pipeline is `output / "suggested"`), or None
    without probe measurements."""


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def diffusion_loss(unet, noise_scheduler, latents, text_embeddings, generator, *, noise_offset=0.0,
                   snr_gamma=None) -> torch.Tensor:
    """The denoising loss of one micro-batch (MSE to the scheduler's target, optionally min-SNR weighted)."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(latents.shape[:2] + (1, 1), generator=generator,
                                                   device=generator.device).to(device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator,
                      device=generator.device).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        raise FinetuneError(f"unsupported prediction_type {kind!r} in the scheduler config (epsilon or v_prediction)")
    pred = unet(noisy, t, text_embeddings).sample
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, t)
    weights = torch.minimum(snr, torch.full_like(snr, snr_gamma))
    weights = weights / snr if kind == "epsilon" else weights / (snr + 1)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weights).mean()


def check_resolution(resolution: int, pipe) -> None:
    """Raise if `resolution` is not a size the VAE and the UNet can both downsample evenly."""
    down_unet = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    factor = pipe.vae_scale_factor * down_unet
    if not isinstance(resolution, int) or resolution < factor or resolution % factor:
        lower = resolution // factor * factor if isinstance(resolution, int) else 0
        near = f"{lower} or {lower + factor}" if lower else f"{factor}"
        raise FinetuneError(
            f"resolution {resolution} does not fit this model: the VAE downsamples by {pipe.vae_scale_factor} and "
            f"the UNet by {down_unet} more, so use a multiple of {factor} (e.g. {near})"
        )


def _accelerator(config: FinetuneConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    gpu = torch.cuda.is_available() and not config.cpu
    precision = config.mixed_precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "no"
    elif precision != "no" and not gpu:
        raise FinetuneError(f"mixed precision {precision} needs a GPU; on CPU use mixed_precision='no' (float32)")
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=False)]
    return Accelerator(mixed_precision=precision, cpu=not gpu, kwargs_handlers=kwargs)


def _weights_digest(models) -> str:
    h = hashlib.sha256()
    for m in models:
        for name, p in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _train_step(parts, accelerator, config: FinetuneConfig, step: int, batches, seen: list, out: Path) -> float:
    """One optimizer step over `gradient_accumulation` micro-batches; returns the mean loss of all processes."""
    A, rank, device = config.gradient_accumulation, accelerator.process_index, accelerator.device
    total = 0.0
    for k in range(A):
        batch = next(batches)
        seen.append(batch["indices"])
        gen = torch.Generator(device if device.type == "cuda" else "cpu").manual_seed(
            _seed_of(config.seed, step, k, rank))
        with contextlib.ExitStack() as sync:
            if k < A - 1:  # gradients are all-reduced once, on the last micro-batch
                for m in parts.trained:
                    sync.enter_context(accelerator.no_sync(m))
            with accelerator.autocast():
                latents = parts.encode_images(batch["pixel_values"].to(device), gen)
                emb = parts.encode_text(batch["captions"])
                loss = diffusion_loss(parts.unet, parts.noise_scheduler, latents, emb, gen,
                                      noise_offset=config.noise_offset, snr_gamma=config.snr_gamma)
            value = accelerator.gather(loss.detach().float().reshape(1))
            if not torch.isfinite(value).all():
                bad = value[~torch.isfinite(value)][0].item()
                raise FinetuneError(
                    f"loss is {bad} at step {step + 1} (micro-batch {k + 1} of {A}); training stopped and nothing "
                    f"was saved after it. Last good checkpoint: {checkpoints.latest_checkpoint(out) or 'none'}. "
                    "Lower the learning rate or check the data, then resume from it."
                )
            accelerator.backward(loss / A)
        total += value.mean().item() / A
    accelerator.clip_grad_norm_(parts.params, config.max_grad_norm)
    parts.optimizer.step()
    parts.lr_scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None:
        parts.ema.step(parts.params)
    return total


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Run (or resume) a finetuning run as `config` says; see `FinetuneConfig` for every option."""
    config.check()
    accelerator = _accelerator(config)
    main, device = accelerator.is_main_process, accelerator.device
    if device.type == "cpu":
        reuse_freed_memory()  # activation buffers from the heap, not fresh pages every step (cpu_memory.py)
    resume_dir, wipe = checkpoints.check_output(config)
    pipe = load_pipeline(config.model, device="cpu", dtype=torch.float32)
    if type(pipe).__name__ != "StableDiffusionPipeline":  # load_pipeline also loads SDXL base
        raise FinetuneError(f"sdlab finetune trains StableDiffusionPipeline models (SD 1.x / 2.x, the toy model); "
                            f"{config.model} is a {type(pipe).__name__}")
    resolution = config.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    check_resolution(resolution, pipe)
    data = open_dataset(config.dataset, config.image_column, config.caption_column).scan(config.strict)
    BatchOrder(len(data), config.batch_size, accelerator.num_processes, 0, config.seed, 0, 0)  # raises if too small
    accelerator.wait_for_everyone()  # all inputs checked on every process before the main one writes anything
    if main:
        checkpoints.take_output(config, resume_dir, wipe)
    accelerator.wait_for_everyone()
    out = Path(config.output).expanduser()

    parts = modules.TrainParts(pipe, config, accelerator)
    start, start_loss = 0, None
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        marker = checkpoints.read_marker(resume_dir)
        start, start_loss = marker["step"], marker.get("loss")
        if main:
            print(f"sdlab finetune: resumed from {resume_dir} at step {start}")

    world, rank, A, B = accelerator.num_processes, accelerator.process_index, config.gradient_accumulation, config.batch_size
    order = BatchOrder(len(data), B, world, rank, config.seed, start * A, config.max_steps * A)
    items = TrainItems(data, resolution, config.center_crop, config.random_flip, config.caption_dropout, config.seed)
    loader = torch.utils.data.DataLoader(items, batch_sampler=order, collate_fn=collate, num_workers=config.num_workers)

    progression = None
    if config.validate_every:
        progression = parts.progression(out / "validation", resolution, data, resumed=resume_dir is not None)
        progression.forget_after(start)
        if main:
            snapshots.forget_after(out, start)
        if start % config.validate_every == 0 and not progression.done(start):
            _validate(parts, progression, out, start, loss=start_loss)  # killed between checkpoint and validation

    from tqdm.auto import tqdm

    scalars = Scalars(out / "tensorboard", enabled=main)

    bar = tqdm(total=config.max_steps, initial=start, disable=not (main and config.progress), desc="finetune",
               dynamic_ncols=True, mininterval=1.0)  # few redraws: a notebook's output channel drops a flood
    seen, batches, t_train, n_images, last_loss, times = [], iter(loader), 0.0, 0, float("nan"), []
    for step in range(start, config.max_steps):
        t0 = time.perf_counter()
        total = _train_step(parts, accelerator, config, step, batches, seen, out)
        dt = time.perf_counter() - t0
        t_train, n_images, last_loss = t_train + dt, n_images + A * B * world, total
        times.append(dt)
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}", img_s=f"{n_images / max(t_train, 1e-9):.1f}", refresh=False)
        scalars.add(step + 1, {"train/loss": total, "train/lr": parts.lr_scheduler.get_last_lr()[0]})
        done = step + 1
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.max_steps:
            checkpoints.save_checkpoint(accelerator, config, done, loss=last_loss)
        if progression is not None and (done % config.validate_every == 0 or done == config.max_steps):
            _validate(parts, progression, out, done, loss=last_loss)
            if main:
                scalars.add(done, {f"validation/{k}": v for k, v in progression.summary[-1].items() if k != "step"})
    bar.close()
    scalars.close()

    accelerator.wait_for_everyone()
    log = out / "logs"
    log.mkdir(exist_ok=True)
    (log / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": world, "start_step": start, "steps": config.max_steps,
        "weights_sha256": _weights_digest([accelerator.unwrap_model(m) for m in parts.trained]),
        "samples_seen": seen,
    }))
    suggestion = None
    if main:
        _save_pipeline(parts.final_pipeline(), out)
        if progression is not None:
            plots.write_figures(out)
        print(f"sdlab finetune: {config.max_steps} steps ({n_images / max(t_train, 1e-9):.1f} images/s); the finetuned "
              f"pipeline is {out}: sdlab.load_pipeline({str(out)!r})")
        if progression is not None and stop.measured(progression.summary):
            suggestion = _suggest(out, progression.summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return FinetuneResult(out, config.max_steps, start, n_images / max(t_train, 1e-9),
                          list(progression.summary) if progression else [], len(data.skipped), times, suggestion)


def _validate(parts, progression, out: Path, step: int, loss: float | None = None) -> None:
    """Validate `step`; on the main process keep its weights if the stop rule may suggest it, drop the rest."""
    parts.validate(progression, step, loss=loss)
    if not parts.accelerator.is_main_process:
        return
    latest = checkpoints.latest_checkpoint(out)
    keep = stop.keep_steps(progression.summary, parts.config.stop_threshold,
                           checkpoints.read_marker(latest)["step"] if latest else None)
    if step in keep and step > 0:  # step 0 is the base model: nothing to keep
        snapshots.save(out, step, parts.trained_weights())
    snapshots.prune(out, keep)


def _suggest(out: Path, table: list):
    """Write and print the suggested stop; a failure is reported, and the finished run stands."""
    try:
        suggestion = stop.write_suggestion(out)
    except FinetuneError as e:
        print(f"sdlab finetune: no suggested checkpoint: {e}")
        return None
    print("sdlab finetune: " + stop.report(out, suggestion, table))
    return suggestion


def _save_pipeline(pipe, out: Path) -> None:
    """`save_pretrained` into a temporary folder, then move its parts in; model_index.json last."""
    tmp = out / ".tmp-pipeline"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    names = sorted(p.name for p in tmp.iterdir() if p.name != "model_index.json") + ["model_index.json"]
    for name in names:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        (tmp / name).replace(target)
    tmp.rmdir()
