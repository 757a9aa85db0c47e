"""`sdlab train-toy`: train the toy Stable Diffusion on the toy world, from scratch.

Three phases on one fixed, seeded dataset of rendered scenes:
1. the VAE (L1 + image-gradient L1 + a small KL), then its `scaling_factor` from the latents' std;
2. the UNet and the text encoder jointly on cached latents (epsilon loss with min-SNR weighting,
   10% empty captions for classifier-free guidance, AdamW with warmup, an EMA of the UNet);
3. the VAE decoder alone, on the frozen encoder's latents: sharper colors and edges, same latent space.

Checkpoints are written every few minutes (atomically); `--resume` continues a stopped run and reaches the
same weights as an uninterrupted one. The result is a diffusers pipeline folder (safetensors).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm
from transformers import CLIPTokenizer

from ..models import pick_device
from ..toyworld import render, sample_scenes
from .architecture import SCHEDULER_CONFIG, TINY, TOY, build_pipeline


@dataclass
class ToyTrainConfig:
    """What `train_toy` does. Defaults are the shipped model's recipe."""

    output: str = "runs/toy"
    """Run folder: checkpoints, log.csv, config.json, and the final pipeline in `pipeline/`."""
    arch: str = "toy"
    """"toy" (the shipped size) or "tiny" (a seconds-fast model for tests)."""
    n_images: int = 20000
    """Size of the fixed training set of rendered scenes."""
    watercolor: float = 0.15
    """Share of watercolor paintings in the training set."""
    vae_creature: float = 0.15
    """Share of extra creature-style images the VAE (only) sees, so finetuning on creatures finds a VAE that draws them."""
    vae_steps: int = 1200
    vae_lr: float = 2e-3
    unet_steps: int = 5000
    lr: float = 5e-4
    warmup: int = 200
    batch_size: int = 32
    cfg_dropout: float = 0.1
    """Share of empty captions, for classifier-free guidance."""
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str | None = None
    """None: cuda if present, else cpu."""
    decoder_steps: int = 2000
    """Phase 3: refine the VAE decoder alone on the frozen encoder's latents (the UNet's latent space stays)."""
    decoder_lr: float = 5e-4
    checkpoint_minutes: float = 3.0
    """Write a checkpoint at least this often (and at the end of each phase)."""


class TrainingError(RuntimeError):
    pass


def _render_dataset(cfg: ToyTrainConfig):
    scenes = sample_scenes(cfg.n_images, cfg.seed, watercolor=cfg.watercolor)
    images = np.stack([np.asarray(render(s)) for s in tqdm(scenes, desc="render", leave=False)])
    captions = [s.caption for s in scenes]
    n_creature = int(cfg.n_images * cfg.vae_creature)
    extra = np.stack([np.asarray(render(s)) for s in sample_scenes(max(n_creature, 1), cfg.seed + 1, style="creature")])
    to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # noqa: E731
    return to_tensor(images), captions, to_tensor(extra[:n_creature])


def _grad_l1(a, b):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def _lr_lambda(warmup):
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


class _Run:
    """A run folder: config, log, atomic checkpoints."""

    def __init__(self, cfg: ToyTrainConfig, resume: bool, overwrite: bool):
        self.dir = Path(cfg.output)
        self.ckpt = self.dir / "checkpoint"
        config_path = self.dir / "config.json"
        if resume:
            if not (self.ckpt / "state.pt").is_file():
                raise TrainingError(f"--resume: there is no checkpoint in {self.ckpt} to resume from; start without --resume")
            saved = asdict(cfg) | json.loads(config_path.read_text())  # fields added since the run: defaults
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


def _rng_state(gen: torch.Generator, np_rng: np.random.Generator):
    return {"torch": gen.get_state(), "numpy": np_rng.bit_generator.state}


def _set_rng_state(gen, np_rng, state):
    gen.set_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]


def train_toy(cfg: ToyTrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True):
    """Train the toy pipeline; returns the path of the saved pipeline folder."""
    run = _Run(cfg, resume, overwrite)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    pipe = build_pipeline(TOY if cfg.arch == "toy" else TINY, seed=cfg.seed)
    saved_tokenizer = run.dir / "tokenizer"
    if resume and saved_tokenizer.is_dir():  # token ids must be those the run started with
        pipe.tokenizer = CLIPTokenizer.from_pretrained(saved_tokenizer)
        pipe.register_modules(tokenizer=pipe.tokenizer)
    else:
        pipe.tokenizer.save_pretrained(saved_tokenizer)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    state = run.load() if resume else {"phase": "vae", "step": 0}
    images, captions, creatures = _render_dataset(cfg)
    vae_images = torch.cat([images, creatures])
    gen = torch.Generator().manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    t0 = time.time()

    # ---- phase 1: the VAE -------------------------------------------------------------------------------
    vae.to(device)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae_sched = torch.optim.lr_scheduler.LambdaLR(vae_opt, _lr_lambda(cfg.warmup))
    if state["phase"] == "vae":
        if resume and state["step"] > 0:
            vae.load_state_dict(state["vae"])
            vae_opt.load_state_dict(state["vae_opt"])
            vae_sched.load_state_dict(state["vae_sched"])
            _set_rng_state(gen, np_rng, state["rng"])
        vae.train()
        bar = tqdm(range(state["step"], cfg.vae_steps), desc="vae", disable=not progress, initial=state["step"], total=cfg.vae_steps)
        for step in bar:
            idx = torch.randint(len(vae_images), (cfg.batch_size,), generator=gen)
            x = vae_images[idx].to(device)
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
            rec = vae.decode(z).sample
            loss = (rec - x).abs().mean() + _grad_l1(rec, x) + 1e-6 * post.kl().mean()
            _check_finite(loss, "vae", step, run)
            vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            vae_opt.step()
            vae_sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % 50 == 0:
                run.log("vae", step, loss.item(), vae_sched.get_last_lr()[0], time.time() - t0)
            done = step + 1 == cfg.vae_steps
            if done or time.time() - run.last_save > cfg.checkpoint_minutes * 60:
                state = {"phase": "vae", "step": step + 1, "vae": vae.state_dict(), "vae_opt": vae_opt.state_dict(),
                         "vae_sched": vae_sched.state_dict(), "rng": _rng_state(gen, np_rng)}
                if done:
                    state = {"phase": "unet", "step": 0, "vae": vae.state_dict(), "rng": _rng_state(gen, np_rng)}
                run.save(state)
    else:
        vae.load_state_dict(state["vae"])
    del vae_opt, vae_sched
    vae.eval().requires_grad_(False)

    # ---- latents and their scale -----------------------------------------------------------------------
    lat_mean, lat_std, scaling = _encode_latents(vae, images, device)
    vae.register_to_config(scaling_factor=scaling)

    # ---- phase 2: UNet + text encoder ------------------------------------------------------------------
    with torch.no_grad():
        ids = tokenizer(captions + [""], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
    caption_ids, empty_ids = ids[:-1], ids[-1:]
    unet.to(device).train()
    text_encoder.to(device).train()
    ema = copy.deepcopy(unet).requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup))
    noise_sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
    alphas = noise_sched.alphas_cumprod.to(device)
    start = 0
    if state["phase"] == "unet" and state["step"] > 0:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
    if state["phase"] != "vae":
        _set_rng_state(gen, np_rng, state["rng"])
    if state["phase"] in ("done", "decoder", "finished"):
        start = cfg.unet_steps
        unet.load_state_dict(state["unet"]); text_encoder.load_state_dict(state["text_encoder"]); ema.load_state_dict(state["ema"])  # noqa: E702
    bar = tqdm(range(start, cfg.unet_steps), desc="unet", disable=not progress, initial=start, total=cfg.unet_steps)
    for step in bar:
        idx = torch.randint(len(lat_mean), (cfg.batch_size,), generator=gen)
        z0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)).to(device) * scaling
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cfg_dropout
        tok = torch.where(drop[:, None], empty_ids, caption_ids[idx]).to(device)
        zt = noise_sched.add_noise(z0, noise, t)
        pred = unet(zt, t, encoder_hidden_states=text_encoder(tok)[0]).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        _check_finite(loss, "unet", step, run)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 50 == 0:
            run.log("unet", step, loss.item(), sched.get_last_lr()[0], time.time() - t0)
        done = step + 1 == cfg.unet_steps
        if done or time.time() - run.last_save > cfg.checkpoint_minutes * 60:
            run.save({"phase": "done" if done else "unet", "step": step + 1, "vae": vae.state_dict(),
                      "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "ema": ema.state_dict(),
                      "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": _rng_state(gen, np_rng)})

    # ---- phase 3: the decoder alone, on the frozen encoder's latents ----------------------------------------
    decoder = torch.nn.ModuleList([vae.decoder, vae.post_quant_conv])
    dec_opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.decoder_lr, weight_decay=0.0)
    dec_sched = torch.optim.lr_scheduler.LambdaLR(dec_opt, _lr_lambda(cfg.warmup))
    start = {"decoder": state["step"], "finished": cfg.decoder_steps}.get(state["phase"], 0)
    if state["phase"] == "decoder":
        vae.load_state_dict(state["vae"])
        dec_opt.load_state_dict(state["dec_opt"])
        dec_sched.load_state_dict(state["dec_sched"])
    if state["phase"] == "finished":
        vae.load_state_dict(state["vae"])
    decoder.train().requires_grad_(True)
    bar = tqdm(range(start, cfg.decoder_steps), desc="decoder", disable=not progress, initial=start, total=cfg.decoder_steps)
    for step in bar:
        idx = torch.randint(len(vae_images), (cfg.batch_size,), generator=gen)
        x = vae_images[idx].to(device)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + _grad_l1(rec, x)
        _check_finite(loss, "decoder", step, run)
        dec_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        dec_opt.step()
        dec_sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 50 == 0:
            run.log("decoder", step, loss.item(), dec_sched.get_last_lr()[0], time.time() - t0)
        done = step + 1 == cfg.decoder_steps
        if done or time.time() - run.last_save > cfg.checkpoint_minutes * 60:
            run.save({"phase": "finished" if done else "decoder", "step": step + 1, "vae": vae.state_dict(),
                      "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "ema": ema.state_dict(),
                      "dec_opt": dec_opt.state_dict(), "dec_sched": dec_sched.state_dict(),
                      "rng": _rng_state(gen, np_rng)})
    vae.eval().requires_grad_(False)
    text_encoder.eval()
    return _save_pipeline(pipe, ema, run.dir / "pipeline")


@torch.no_grad()
def _encode_latents(vae, images, device):
    """Posterior means and stds of every training image, and the scaling factor 1 / std(latents)."""
    means, stds = [], []
    for chunk in torch.split(images, 256):
        post = vae.encode(chunk.to(device)).latent_dist
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
    lat_mean, lat_std = torch.cat(means), torch.cat(stds)
    return lat_mean, lat_std, float(1.0 / lat_mean.std())


def _save_pipeline(pipe, unet, out: Path) -> Path:
    """Save `pipe` with `unet` (the EMA) as a diffusers folder, atomically (write aside, then rename)."""
    pipe.unet = unet.eval()
    pipe.register_modules(unet=pipe.unet)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.to("cpu").save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def export_checkpoint(output: str | Path) -> Path:
    """Turn the latest checkpoint of the run in `output` (UNet phase) into a pipeline folder, without training.

    The UNet is the checkpoint's EMA; the VAE's scaling factor is recomputed exactly as training computed it.
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
    pipe.text_encoder.load_state_dict(state["text_encoder"])
    pipe.unet.load_state_dict(state["ema"])
    images, _, _ = _render_dataset(cfg)
    *_, scaling = _encode_latents(pipe.vae.eval(), images, torch.device("cpu"))
    pipe.vae.register_to_config(scaling_factor=scaling)
    pipe.text_encoder.eval()
    return _save_pipeline(pipe, pipe.unet, run_dir / f"pipeline-{state['phase']}-step{state['step']}")


def _check_finite(loss, phase, step, run):
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{phase} loss became {loss.item()} at step {step}; stopped. The last good checkpoint is in "
            f"{run.ckpt} (resume with --resume, perhaps with a lower learning rate)"
        )


def ship_pipeline(pipeline_dir, run_dir=None) -> Path:
    """Copy a trained pipeline into the package as the default toy model, weights stored as float16 (half the
    bytes; `load_pipeline` upcasts to float32 on the CPU), with the run's training log and config beside it."""
    from ..models import TOY_MODEL_DIR, load_pipeline

    pipe = load_pipeline(pipeline_dir, device="cpu", dtype=torch.float16)
    _save_pipeline(pipe, pipe.unet, TOY_MODEL_DIR)
    if run_dir is not None:
        shutil.copy(Path(run_dir) / "log.csv", TOY_MODEL_DIR / "training_log.csv")
        shutil.copy(Path(run_dir) / "config.json", TOY_MODEL_DIR / "train_config.json")
    return TOY_MODEL_DIR


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sdlab train-toy", description=__doc__.split("\n\n")[0])
    for f in fields(ToyTrainConfig):
        kind = {"int": int, "float": float}.get(str(f.type), str)
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default)
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    parser.add_argument("--ship", action="store_true", help="copy the final pipeline to the package's toy model folder")
    parser.add_argument("--export-checkpoint", action="store_true",
                        help="only turn the latest checkpoint in --output into a pipeline folder (no training)")
    args = vars(parser.parse_args(argv))
    resume, overwrite, ship = args.pop("resume"), args.pop("overwrite"), args.pop("ship")
    export = args.pop("export_checkpoint")
    cfg = ToyTrainConfig(**args)
    try:
        out = export_checkpoint(cfg.output) if export else train_toy(cfg, resume=resume, overwrite=overwrite)
    except TrainingError as e:
        parser.exit(1, f"sdlab train-toy: {e}\n")
    print(f"saved the pipeline to {out}")
    if ship:
        print(f"shipped to {ship_pipeline(out, cfg.output)}")
    return 0
