"""`sdlab train-toy`: train the toy Stable Diffusion on the toy world, from scratch.

Six phases (the shipped recipe runs the first five) on one fixed, seeded dataset of rendered scenes:
1. the VAE (L1 + image-gradient L1 + a small KL), then its `scaling_factor` from the latents' std;
2. the UNet and the text encoder jointly on cached latents (epsilon loss with min-SNR weighting,
   10% empty captions for classifier-free guidance, AdamW with warmup (optionally a cosine decay), an EMA;
   optionally blank padding states for a share of the captions, so the UNet reads the words themselves);
3. the VAE decoder alone, on the frozen encoder's latents: sharper colors and edges, same latent space;
4. an anneal of the UNet and the text encoder (`anneal_steps`; 0 skips it): from phase 2's last weights, a
   fresh AdamW whose learning rate decays linearly to 0 (a warmup-stable-decay tail), with blank padding
   states for half of the captions (`anneal_pad_dropout`); the annealed weights, not the EMA, then ship
   (optionally on a set of its own, its objects laid out with another spread than phase 2's, `anneal_layout_spread`);
5. the whole VAE, the encoder too (`vae_refine_steps`; 0 skips it), with the latents of the world's scenes held
   where the UNet learned them: what the decoder alone cannot learn to keep (the creature style's thin outline);
   optionally the decoder held to its old outputs on the world's latents and on latents the pipeline generates
   itself (`vae_refine_generated`), so plain generations keep their pictures. `--refine-vae-of` runs this phase
   alone on a saved pipeline;
6. a second, short anneal of the UNet and the text encoder (`attribute_anneal_steps`; 0, the default, skips it) with the
   attribute "bumpy" stated only at its own word (`isolate_attribute`), so reweighting the word scales the bumps.
   `--anneal-attributes-of` runs this phase alone on a saved pipeline.

Checkpoints are written every few minutes (atomically); `--resume` continues a stopped run and reaches the
same weights as an uninterrupted one. The result is a diffusers pipeline folder (safetensors).
The run folder is `runfolder.py`, the dataset `dataset.py`, the denoising loss `denoising.py`, exporting and
shipping `export.py`.
"""

from __future__ import annotations

import argparse
import copy
import functools
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPTokenizer

from ..models import pick_device
from .architecture import TINY, TOY, build_pipeline
from .config import ToyTrainConfig, TrainingError, field_docs
from .dataset import encode_latents, render_anneal_set, render_dataset
from .export import export_checkpoint, save_pipeline, ship_pipeline, shipped_weights
from .denoising import DenoisingLoss
from .runfolder import RunFolder, check_finite, reached_phase, rng_state, set_rng_state

__all__ = ["ToyTrainConfig", "TrainingError", "export_checkpoint", "main", "ship_pipeline", "train_toy"]


def _grad_l1(a, b):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def _lr_lambda(warmup: int, total: int, floor: float):
    """Linear warmup, then a cosine decay to `floor` times the peak at `total` steps."""

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress))

    return factor


def _anneal_lambda(total: int):
    """A short linear warmup (5% of `total`, which re-estimates AdamW's moments), then linear decay to 0."""
    warmup = max(1, total // 20)

    def factor(step):
        return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _after_step(run, cfg, bar, phase, step, total, loss, sched, t0, make_state) -> None:
    """Progress bar, a log row every 50 steps, a checkpoint every few minutes and at the phase's last step."""
    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)  # redrawn with the bar's own (throttled) updates
    if step % 50 == 0:
        run.log(phase, step, loss.item(), sched.get_last_lr()[0], time.time() - t0)
    done = step + 1 == total
    if done or time.time() - run.last_save > cfg.checkpoint_minutes * 60:
        run.save(make_state(done))


def _sample_posterior(vae, x, gen):
    post = vae.encode(x).latent_dist
    return post, post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(x.device)


def _optimizer_step(loss, opt, sched, params):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def _anneal(run, cfg, state, unet, text_encoder, loss_fn, phase, done_phase, steps, lr, t0, progress, models_state):
    """Phases 4 and 6: train the UNet and the text encoder from the weights they hold (the checkpoint's once `phase`
    has begun) for `steps` steps of `loss_fn()`, with a fresh AdamW at `lr` that warms up briefly and decays
    linearly to 0. The checkpoints are `phase`, then `done_phase`."""
    if not steps:
        return
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _anneal_lambda(steps))
    start = steps if reached_phase(state, done_phase) else state["step"] if state["phase"] == phase else 0
    if reached_phase(state, phase):
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
    if state["phase"] == phase:
        opt.load_state_dict(state[f"{phase}_opt"])
        sched.load_state_dict(state[f"{phase}_sched"])
    unet.train()
    text_encoder.train()
    bar = tqdm(range(start, steps), desc=phase.replace("_", " "), disable=not progress, initial=start, total=steps)
    for step in bar:
        loss = loss_fn()
        check_finite(loss, phase, step, run)
        _optimizer_step(loss, opt, sched, params)
        _after_step(run, cfg, bar, phase, step, steps, loss, sched, t0, lambda done, step=step: {
            "phase": done_phase if done else phase, "step": step + 1, **models_state(),
            f"{phase}_opt": opt.state_dict(), f"{phase}_sched": sched.state_dict()})


def _attribute_anneal(run, cfg, state, unet, text_encoder, unet_loss, t0, progress, models_state):
    """Phase 6: `_anneal` at `attribute_anneal_lr` with the anneal's padding dropout and object isolation, and
    the attribute isolated (`attribute_isolation`)."""
    _anneal(run, cfg, state, unet, text_encoder, functools.partial(
        unet_loss, unet, text_encoder, cfg.anneal_pad_dropout, cfg.anneal_object_isolation, cfg.attribute_isolation),
        "attribute_anneal", "attributes_annealed", cfg.attribute_anneal_steps, cfg.attribute_anneal_lr, t0, progress,
        models_state)


def _check(cfg: ToyTrainConfig):
    """Refuse options that would only fail hours into a run."""
    for name in ("layout_spread", "anneal_layout_spread"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise TrainingError(f"--{name.replace('_', '-')} is {value!r}: give a share of objects from 0 to 1, "
                                "e.g. 0.25")
    n = cfg.vae_refine_generated
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= cfg.n_images:
        raise TrainingError(f"--vae-refine-generated is {n!r}: give a whole number of latents to generate from "
                            f"0 (the decoder not held) to --n-images ({cfg.n_images}), e.g. 512")
    if not cfg.vae_refine_hold >= 0:
        raise TrainingError(f"--vae-refine-hold is {cfg.vae_refine_hold!r}: give a weight >= 0, e.g. 0.3")


def train_toy(cfg: ToyTrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True):
    """Train the toy pipeline; returns the path of the saved pipeline folder."""
    _check(cfg)
    run = RunFolder(cfg, resume, overwrite)
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
    reached = functools.partial(reached_phase, state)
    images, captions, creatures = render_dataset(cfg)
    vae_images = torch.cat([images, creatures])
    gen = torch.Generator().manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    t0 = time.time()

    # ---- phase 1: the VAE -------------------------------------------------------------------------------
    vae.to(device)
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae_sched = torch.optim.lr_scheduler.LambdaLR(vae_opt, _lr_lambda(cfg.warmup, cfg.vae_steps, cfg.lr_floor))
    if state["phase"] == "vae":
        if resume and state["step"] > 0:
            vae.load_state_dict(state["vae"])
            vae_opt.load_state_dict(state["vae_opt"])
            vae_sched.load_state_dict(state["vae_sched"])
            set_rng_state(gen, np_rng, state["rng"])
        vae.train()
        bar = tqdm(range(state["step"], cfg.vae_steps), desc="vae", disable=not progress, initial=state["step"], total=cfg.vae_steps)
        for step in bar:
            idx = torch.randint(len(vae_images), (cfg.batch_size,), generator=gen)
            x = vae_images[idx].to(device)
            post, z = _sample_posterior(vae, x, gen)
            rec = vae.decode(z).sample
            loss = (rec - x).abs().mean() + _grad_l1(rec, x) + 1e-6 * post.kl().mean()
            check_finite(loss, "vae", step, run)
            _optimizer_step(loss, vae_opt, vae_sched, vae.parameters())
            _after_step(run, cfg, bar, "vae", step, cfg.vae_steps, loss, vae_sched, t0, lambda done, step=step: (
                {"phase": "unet", "step": 0, "vae": vae.state_dict(), "rng": rng_state(gen, np_rng)} if done else
                {"phase": "vae", "step": step + 1, "vae": vae.state_dict(), "vae_opt": vae_opt.state_dict(),
                 "vae_sched": vae_sched.state_dict(), "rng": rng_state(gen, np_rng)}))
    else:  # from phase 5 on, the latents (and the UNet's latent space) are the encoder's from before phase 5
        vae.load_state_dict(state.get("vae_anchor", state["vae"]))
    del vae_opt, vae_sched
    vae.eval().requires_grad_(False)

    # ---- latents and their scale -----------------------------------------------------------------------
    lat_mean, lat_std, scaling = encode_latents(vae, images, device)
    vae.register_to_config(scaling_factor=scaling)

    # ---- phase 2: UNet + text encoder ------------------------------------------------------------------
    unet_loss = DenoisingLoss(cfg, tokenizer, captions, lat_mean, lat_std, scaling, device, gen)
    unet.to(device).train()
    text_encoder.to(device).train()
    ema, ema_text = (copy.deepcopy(m).requires_grad_(False) for m in (unet, text_encoder))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema_pairs = list(zip(list(ema.parameters()) + list(ema_text.parameters()), params))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup, cfg.unet_steps, cfg.lr_floor))
    start = 0
    if state["phase"] == "unet" and state["step"] > 0:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema.load_state_dict(state["ema"])
        ema_text.load_state_dict(state["ema_text_encoder"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
    if state["phase"] != "vae":
        set_rng_state(gen, np_rng, state["rng"])
    if reached("done"):
        start = cfg.unet_steps
        unet.load_state_dict(state["unet"]); text_encoder.load_state_dict(state["text_encoder"])  # noqa: E702
        ema.load_state_dict(state["ema"]); ema_text.load_state_dict(state["ema_text_encoder"])  # noqa: E702
    def models_state():
        """What every checkpoint from phase 2 on holds besides its phase, step and optimizer."""
        return {"vae": vae.state_dict(), "scaling": scaling, "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(), "ema": ema.state_dict(),
                "ema_text_encoder": ema_text.state_dict(), "rng": rng_state(gen, np_rng)}

    bar = tqdm(range(start, cfg.unet_steps), desc="unet", disable=not progress, initial=start, total=cfg.unet_steps)
    for step in bar:
        loss = unet_loss(unet, text_encoder, cfg.pad_dropout, cfg.object_isolation)
        check_finite(loss, "unet", step, run)
        _optimizer_step(loss, opt, sched, params)
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in ema_pairs:
                pe.lerp_(p, 1 - decay)
        _after_step(run, cfg, bar, "unet", step, cfg.unet_steps, loss, sched, t0, lambda done, step=step: {
            "phase": "done" if done else "unet", "step": step + 1, **models_state(),
            "opt": opt.state_dict(), "sched": sched.state_dict()})

    # ---- phase 3: the decoder alone, on the frozen encoder's latents ----------------------------------------
    decoder = torch.nn.ModuleList([vae.decoder, vae.post_quant_conv])
    dec_opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.decoder_lr, weight_decay=0.0)
    dec_sched = torch.optim.lr_scheduler.LambdaLR(dec_opt, _lr_lambda(cfg.warmup, cfg.decoder_steps, cfg.lr_floor))
    start = cfg.decoder_steps if reached("finished") else state["step"] if state["phase"] == "decoder" else 0
    if state["phase"] == "decoder":
        vae.load_state_dict(state["vae"])
        dec_opt.load_state_dict(state["dec_opt"])
        dec_sched.load_state_dict(state["dec_sched"])
    if reached("finished"):
        vae.load_state_dict(state["vae"])
    decoder.train().requires_grad_(True)
    bar = tqdm(range(start, cfg.decoder_steps), desc="decoder", disable=not progress, initial=start, total=cfg.decoder_steps)
    for step in bar:
        idx = torch.randint(len(vae_images), (cfg.batch_size,), generator=gen)
        x = vae_images[idx].to(device)
        with torch.no_grad():
            _, z = _sample_posterior(vae, x, gen)
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + _grad_l1(rec, x)
        check_finite(loss, "decoder", step, run)
        _optimizer_step(loss, dec_opt, dec_sched, decoder.parameters())
        _after_step(run, cfg, bar, "decoder", step, cfg.decoder_steps, loss, dec_sched, t0, lambda done, step=step: {
            "phase": "finished" if done else "decoder", "step": step + 1, **models_state(),
            "dec_opt": dec_opt.state_dict(), "dec_sched": dec_sched.state_dict()})
    vae.eval().requires_grad_(False)

    # ---- phase 4: anneal the UNet and the text encoder (learning rate to 0), from phase 2's last weights -----
    anneal_loss = unet_loss
    if cfg.anneal_layout_spread != cfg.layout_spread and cfg.anneal_steps and not reached("annealed"):
        anneal_images, anneal_captions = render_anneal_set(cfg)  # in phase 1's latent space (the encoder's)
        anneal_loss = DenoisingLoss(cfg, tokenizer, anneal_captions, *encode_latents(vae, anneal_images, device)[:2],
                                    scaling, device, gen)
    _anneal(run, cfg, state, unet, text_encoder, functools.partial(
        anneal_loss, unet, text_encoder, cfg.anneal_pad_dropout, cfg.anneal_object_isolation,
        cfg.anneal_attribute_isolation), "anneal", "annealed",
        cfg.anneal_steps, cfg.lr, t0, progress, models_state)

    # ---- phase 5: the whole VAE, the latents of the world's scenes held where the UNet learned them --------------
    modules = {"unet": unet, "text_encoder": text_encoder, "ema": ema, "ema_text_encoder": ema_text}
    unet_key, text_key = shipped_weights(cfg, annealed=bool(cfg.anneal_steps or cfg.attribute_anneal_steps))
    anchor = _refine_vae(vae, images, creatures, lat_mean, cfg, run, state, gen, t0, progress, models_state,
                         _sampler(pipe, modules[unet_key], modules[text_key], captions, cfg))

    # ---- phase 6: a second anneal, with the attribute word stated only at its own position --------------------
    _attribute_anneal(run, cfg, state, unet, text_encoder, unet_loss, t0, progress,
                      lambda: {**models_state(), **({"vae_anchor": anchor} if anchor else {})})
    pipe.text_encoder = modules[text_key].to("cpu").eval()
    pipe.register_modules(text_encoder=pipe.text_encoder)
    return save_pipeline(pipe, modules[unet_key], run.dir / "pipeline")


def _sampler(pipe, unet, text_encoder, captions, cfg):
    """`sample(n)`: the latents the pipeline (with this UNet and text encoder) generates for the first `n`
    training captions, seeds `cfg.seed + i`, 25 DDIM steps at guidance 7.5, divided by the scaling factor (what
    the decoder reads). Phase 5 holds the decoder to its old outputs on them."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .quality import generate

    def sample(n):
        gen_pipe = StableDiffusionPipeline(
            vae=pipe.vae, text_encoder=text_encoder.eval(), tokenizer=pipe.tokenizer, unet=unet.eval(),
            scheduler=DDIMScheduler.from_config(pipe.scheduler.config), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        gen_pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            latents = generate(gen_pipe, list(captions[:n]), [cfg.seed + i for i in range(n)], steps=25,
                               guidance=7.5, batch_size=32, output_type="latent")
        return latents.float().cpu() / pipe.vae.config.scaling_factor
    return sample


def _refine_vae(vae, images, creatures, lat_mean, cfg, run, state, gen, t0, progress, models_state, sample):
    """Phase 5: train the whole VAE on the phase-1 mix (a quarter of each batch creature-style renders) at
    `vae_refine_lr`, with a squared-error anchor (weight `vae_refine_anchor`) that holds the encoder's posterior
    means of the world's scenes at `lat_mean`, the latents the UNet learned on; the creatures are free. The
    checkpoints keep the VAE from before the phase (`vae_anchor`): a resume encodes the latents with it.

    With `vae_refine_generated` the decoder is held too: on the world's scenes its target is the old decoder's
    output for the same latent, and on the pipeline's own latents (`sample`, drawn once and kept in the
    checkpoints) it is held to the old decoder's outputs with weight `vae_refine_hold`.

    Returns the VAE's state from before the phase (None without the phase): later checkpoints keep it."""
    if not cfg.vae_refine_steps:
        return None
    if reached_phase(state, "refined"):  # the refined VAE is loaded already
        return state.get("vae_anchor")
    anchor_state = state.get("vae_anchor") or {k: v.detach().clone() for k, v in vae.state_dict().items()}
    reference, generated = None, None
    if cfg.vae_refine_generated:
        reference = copy.deepcopy(vae)
        reference.load_state_dict(anchor_state)
        reference.eval().requires_grad_(False)
        generated = state.get("vae_refine_latents")
        if generated is None:
            generated = sample(cfg.vae_refine_generated)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_refine_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(0, cfg.vae_refine_steps, cfg.lr_floor))
    start = 0
    if state["phase"] == "vae_refine":
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["refine_opt"])
        sched.load_state_dict(state["refine_sched"])
        start = state["step"]
    n_creatures = cfg.batch_size // 4 if len(creatures) else 0
    vae.train().requires_grad_(True)
    bar = tqdm(range(start, cfg.vae_refine_steps), desc="vae refine", disable=not progress, initial=start,
               total=cfg.vae_refine_steps)
    for step in bar:
        idx = torch.randint(len(images), (cfg.batch_size - n_creatures,), generator=gen)
        cidx = torch.randint(max(len(creatures), 1), (n_creatures,), generator=gen)
        x = torch.cat([images[idx], creatures[cidx]]).to(vae.device)
        post, z = _sample_posterior(vae, x, gen)
        rec = vae.decode(z).sample
        anchor = F.mse_loss(post.mean[: len(idx)], lat_mean[idx].to(vae.device))
        target = x
        if reference is not None:
            with torch.no_grad():
                target = torch.cat([reference.decode(z[: len(idx)]).sample, x[len(idx):]])
        loss = (rec - target).abs().mean() + _grad_l1(rec, target) + 1e-6 * post.kl().mean() \
            + cfg.vae_refine_anchor * anchor
        if reference is not None:
            zg = generated[torch.randint(len(generated), (cfg.batch_size // 2,), generator=gen)].to(vae.device)
            with torch.no_grad():
                held = reference.decode(zg).sample
            out = vae.decode(zg).sample
            loss = loss + cfg.vae_refine_hold * ((out - held).abs().mean() + _grad_l1(out, held))
        check_finite(loss, "vae_refine", step, run)
        _optimizer_step(loss, opt, sched, vae.parameters())
        _after_step(run, cfg, bar, "vae_refine", step, cfg.vae_refine_steps, loss, sched, t0, lambda done, step=step: {
            **models_state(), "phase": "refined" if done else "vae_refine", "step": step + 1,
            "vae_anchor": anchor_state, "refine_opt": opt.state_dict(), "refine_sched": sched.state_dict(),
            **({"vae_refine_latents": generated} if generated is not None else {})})
    vae.eval().requires_grad_(False)
    return anchor_state


def _from_saved(source, cfg: ToyTrainConfig, resume, overwrite, flag, steps, steps_flag, example, before):
    """What a phase run alone on a saved pipeline (`flag` PIPELINE) starts from: its run folder, its state (the
    checkpoint's, or a fresh one at phase `before`), the pipeline, the device, the dataset and the RNGs. Refuses a
    missing pipeline and `steps` 0 before anything is written, and a resume of a run that continued another source."""
    from ..models import load_pipeline

    source = Path(source)
    if not (source / "model_index.json").is_file():
        raise TrainingError(f"{flag}: {source} is not a pipeline folder (no model_index.json); "
                            "give the folder of a saved pipeline, e.g. a run's pipeline/ or the shipped model")
    if steps <= 0:
        raise TrainingError(f"{flag}: {steps_flag} is {steps}, so there is nothing to do; give the number of steps, "
                            f"e.g. {steps_flag} {example}")
    _check(cfg)
    run = RunFolder(cfg, resume, overwrite)
    state = run.load() if resume else {"phase": before, "step": 0}  # the phases before: the source's
    if resume and state.get("source") != str(source.resolve()):
        raise TrainingError(f"--resume: the run in {run.dir} continues {state.get('source')}, not {source}; "
                            f"give the same {flag}")
    if not resume and (source / "training_log.csv").is_file():
        run.log_path.write_text((source / "training_log.csv").read_text())
    gen = torch.Generator().manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    if resume:
        set_rng_state(gen, np_rng, state["rng"])
    return run, state, load_pipeline(source, device="cpu", dtype=torch.float32), pick_device(cfg.device), \
        render_dataset(cfg), gen, np_rng


def refine_pipeline_vae(source, cfg: ToyTrainConfig, *, resume: bool = False, overwrite: bool = False,
                        progress: bool = True):
    """Phase 5 alone on the pipeline saved in `source` (`sdlab train-toy --refine-vae-of`): its VAE refined on
    `cfg`'s dataset with the latents of the world's scenes held where its UNet learned them; UNet, text
    encoder, tokenizer and scheduler unchanged. The run folder's log starts with `source`'s
    `training_log.csv` (a shipped model's history) if it has one. Returns the saved pipeline's folder."""
    run, state, pipe, device, (images, captions, creatures), gen, np_rng = _from_saved(
        source, cfg, resume, overwrite, "--refine-vae-of", cfg.vae_refine_steps, "--vae-refine-steps", 400, "annealed")
    vae = pipe.vae.to(device)
    if "vae_anchor" in state:
        vae.load_state_dict(state["vae_anchor"])
    lat_mean, _, _ = encode_latents(vae.eval(), images, device)
    _refine_vae(vae, images, creatures, lat_mean, cfg, run, state, gen, time.time(), progress,
                lambda: {"vae": vae.state_dict(), "rng": rng_state(gen, np_rng), "source": str(Path(source).resolve())},
                _sampler(pipe, pipe.unet.to(device), pipe.text_encoder.to(device), captions, cfg))
    pipe.vae = vae.to("cpu")
    pipe.register_modules(vae=pipe.vae)
    return save_pipeline(pipe, pipe.unet, run.dir / "pipeline")


def anneal_pipeline_attributes(source, cfg: ToyTrainConfig, *, resume: bool = False, overwrite: bool = False,
                               progress: bool = True):
    """Phase 6 alone on the pipeline saved in `source` (`sdlab train-toy --anneal-attributes-of`): its UNet and
    text encoder annealed with the attribute isolated, on the latents its own VAE encodes of `cfg`'s dataset;
    VAE, tokenizer and scheduler unchanged. The log starts with `source`'s `training_log.csv` if it has one.
    Returns the saved pipeline's folder."""
    run, state, pipe, device, (images, captions, _), gen, np_rng = _from_saved(
        source, cfg, resume, overwrite, "--anneal-attributes-of", cfg.attribute_anneal_steps,
        "--attribute-anneal-steps", 600, "refined")
    lat_mean, lat_std, _ = encode_latents(pipe.vae.to(device).eval(), images, device)
    unet, text_encoder = pipe.unet.to(device), pipe.text_encoder.to(device)
    loss = DenoisingLoss(cfg, pipe.tokenizer, captions, lat_mean, lat_std, pipe.vae.config.scaling_factor, device, gen)
    _attribute_anneal(run, cfg, state, unet, text_encoder, loss, time.time(), progress, lambda: {
        "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "rng": rng_state(gen, np_rng),
        "source": str(Path(source).resolve())})
    pipe.text_encoder = text_encoder.to("cpu").eval()
    pipe.register_modules(text_encoder=pipe.text_encoder)
    return save_pipeline(pipe, unet.to("cpu"), run.dir / "pipeline")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sdlab train-toy", description=__doc__.split("\n\n")[0])
    docs = field_docs(ToyTrainConfig)
    for f in fields(ToyTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help = (docs.get(f.name, "") + f" (default: {f.default})").strip().replace("%", "%%")
        if str(f.type) == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help)
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(str(f.type), str), default=f.default,
                                help=help)
    parser.add_argument("--resume", action="store_true", help="continue the run in --output")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    parser.add_argument("--ship", action="store_true", help="copy the final pipeline to the package's toy model folder")
    parser.add_argument("--refine-vae-of", metavar="PIPELINE", default=None,
                        help="only refine the VAE of the pipeline saved in PIPELINE (phase 5) into --output")
    parser.add_argument("--anneal-attributes-of", metavar="PIPELINE", default=None,
                        help="only anneal the UNet and text encoder of the pipeline saved in PIPELINE with the "
                             "attribute isolated (phase 6) into --output")
    parser.add_argument("--export-checkpoint", action="store_true",
                        help="only turn the latest checkpoint in --output into a pipeline folder (no training)")
    args = vars(parser.parse_args(argv))
    resume, overwrite, ship = args.pop("resume"), args.pop("overwrite"), args.pop("ship")
    export, refine_of = args.pop("export_checkpoint"), args.pop("refine_vae_of")
    attributes_of = args.pop("anneal_attributes_of")
    cfg = ToyTrainConfig(**args)
    try:
        if export:
            out = export_checkpoint(cfg.output)
        elif refine_of:
            out = refine_pipeline_vae(refine_of, cfg, resume=resume, overwrite=overwrite)
        elif attributes_of:
            out = anneal_pipeline_attributes(attributes_of, cfg, resume=resume, overwrite=overwrite)
        else:
            out = train_toy(cfg, resume=resume, overwrite=overwrite)
    except TrainingError as e:
        parser.exit(1, f"sdlab train-toy: {e}\n")
    print(f"saved the pipeline to {out}")
    if ship:
        print(f"shipped to {ship_pipeline(out, cfg.output)}")
    return 0
