"""Invert a real picture into the model: DDIM inversion, and null-text inversion (Mokady et al. 2022).

`invert(pipe, image, caption)` returns an `Inversion`: the noise latent z_T that guided DDIM sampling of the
caption starts from, and the per-step unconditional ("null") embeddings that make it land on the picture again.
`p2p.edit(pipe, caption, targets, edit, inversion=inv)` then edits the picture as if the model had made it.
Every pass below is the one denoising loop (`sdlab.attention.generate`, the pipeline's own `__call__`):

1. Encode: the VAE encoder's mean latent of the picture, times `scaling_factor`: z*_0.
2. DDIM inversion: the loop run with diffusers' `DDIMInverseScheduler` (the mirror of `DDIMScheduler`: the same
   timesteps, ascending), on the caption alone (guidance 1): z*_0 -> z*_T, every z*_k kept. Each step evaluates
   the UNet at the step's target timestep on the current latent, the usual approximation eps(z_t, t) ~ eps(z_{t-1}, t).
3. Null-text optimisation: the loop run with `DDIMScheduler` from z*_T, guidance w, caption as the prompt. Before
   step i, the null embedding n_i (started from n_{i-1}'s result; n_0 from the empty caption's) is optimised with
   Adam for at most `inner_steps` iterations so that one guided DDIM step from the loop's current latent lands
   on z*_{T-i-1} (loss: MSE); then the pipeline takes the step with n_i (swapped in through
   `callback_on_step_end`, see `generate`'s `null_embeds`). The optimisation of step i + 1 runs in step i's
   step-end hook, step 0's before the call. As in the paper's code: lr * (1 - i / (2T)) (1e-2 * (1 - i/100) at
   50 steps) and an early stop once the loss is below `tolerance + i * 2e-5`.

With `null_text=False` the null embedding is the empty caption's at every step: DDIM inversion alone, which at
guidance > 1 drifts away from the picture (the paper's motivation). Both passes use DDIM whatever scheduler the
pipeline carries (with `clip_sample=False`, as SD's latents need); the pipeline's own is restored afterwards.
Epsilon and v-prediction work through the scheduler's own `step`. A NaN or inf stops the run with an error
naming the step. Deterministic on the CPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .attention import Generation, check_pipeline, generate, is_sdxl
from .toymodel.tokenizer import check_prompts


@dataclass
class Inversion:
    """A picture inverted into a pipeline; `replay` (or `p2p.edit(..., inversion=)`) samples from it."""

    image: Image.Image
    """The picture that was inverted (resized if `invert` was asked to)."""
    caption: str
    latent: torch.Tensor = field(repr=False)
    """z_T, (1, channels, h, w), float32 on the CPU: where sampling starts."""
    null_embeds: torch.Tensor = field(repr=False)
    """(steps, tokens, dim) float32: the unconditional embedding of each step (the empty caption's at every step
    without null-text optimisation)."""
    reconstruction: Image.Image
    """The caption sampled from `latent` with `null_embeds` at `guidance`: what the source row of an edit shows."""
    error: torch.Tensor = field(repr=False)
    """(steps,): MSE between the reconstruction's latent after step i and the DDIM inversion's at that noise level."""
    vae_roundtrip: Image.Image
    """The picture through the VAE alone (encode, decode): the best any inversion can reconstruct."""
    steps: int
    guidance: float
    null_text: bool
    inner_iterations: list = field(default_factory=list, repr=False)
    """Adam iterations run at each step (early stopping makes them fewer than `inner_steps`)."""

    @property
    def psnr(self) -> float:
        """PSNR (dB) of the reconstruction against the picture."""
        return psnr(self.image, self.reconstruction)

    def replay(self, pipe, prompts, controller=None, *, output_type: str = "pil", **fixed) -> Generation:
        """Sample `prompts` from this inversion (its latent, null embeddings, steps and guidance; DDIM), under
        `controller` if given. The first prompt must be the caption, whose picture the null embeddings reproduce.
        `fixed`: generate's arguments that the inversion fixes (steps, guidance, latent, height, width,
        negative_prompt), each None or equal to the inversion's, else a clear error."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or prompts[0] != self.caption:
            raise ValueError(f"the first (source) prompt must be the inverted caption {self.caption!r}, got "
                             f"{prompts[0] if prompts else None!r}: the null embeddings reproduce the picture for it only")
        own = dict(steps=self.steps, guidance=self.guidance)
        for name, value in fixed.items():
            if name not in (*own, "latent", "height", "width", "negative_prompt"):
                raise TypeError(f"replay got an unexpected argument {name!r}")
            if value is not None and name not in own:
                raise ValueError(f"{name} is fixed by the inversion (its latent and null embeddings); leave it unset")
            if value is not None and value != own[name]:
                raise ValueError(f"{name}={value!r}, but the inversion was made with {name}={own[name]}; leave "
                                 f"{name} unset")
        with ddim_scheduler(pipe):
            return generate(pipe, prompts, controller, steps=self.steps, guidance=self.guidance, latent=self.latent,
                            null_embeds=self.null_embeds, output_type=output_type)


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB of two same-size RGB pictures (8-bit range)."""
    x, y = (np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im, dtype=np.float64) for im in (a, b))
    if x.shape != y.shape:
        raise ValueError(f"psnr needs two pictures of one size; got {x.shape} and {y.shape}")
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@contextmanager
def ddim_scheduler(pipe, inverse: bool = False):
    """Give `pipe` a DDIM scheduler (or the inverse one) built from its own scheduler's config for the duration
    of the block (`clip_sample=False`: SD latents are not in [-1, 1]); restore the original after."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    original = pipe.scheduler
    scheduler = (DDIMInverseScheduler if inverse else DDIMScheduler).from_config(original.config, clip_sample=False)
    spacing = scheduler.config.timestep_spacing  # a value the config took by default is DDIM's default here
    if spacing not in ("leading", "trailing"):
        raise ValueError(f"the pipeline's scheduler spaces its timesteps {spacing!r}; DDIM inversion needs 'leading' "
                         "or 'trailing' (DDIMInverseScheduler). Load a scheduler config with one of those.")
    pipe.scheduler = scheduler
    try:
        yield pipe.scheduler
    finally:
        pipe.scheduler = original


def invert(pipe, image, caption: str, *, steps: int = 50, guidance: float = 7.5, null_text: bool = True,
           inner_steps: int = 10, lr: float = 1e-2, tolerance: float = 1e-5, resize: bool = False,
           progress: bool = True) -> Inversion:
    """Invert `image` (an RGB `PIL.Image`) described by `caption`; see the module docstring.

    The image must have the pipeline's size (`unet.config.sample_size * vae_scale_factor` square) unless
    `resize=True`, which crops it to the centre square and resizes it (Lanczos). `null_text=False`: DDIM inversion
    alone. `inner_steps`, `lr`, `tolerance`: the null-text optimisation per step. `progress`: a tqdm bar over
    the optimisation's steps x inner steps.
    """
    check_pipeline(pipe)
    if is_sdxl(pipe):
        raise ValueError(f"inversion runs on SD 1.x / 2.x pipelines (StableDiffusionPipeline) only; this "
                         f"{type(pipe).__name__} (SDXL) also needs pooled null embeddings, which sdlab does not "
                         "optimise")
    image = _check_image(pipe, image, resize)
    _check_caption(pipe, caption)
    if null_text and guidance <= 1:
        raise ValueError(f"null-text inversion optimises the unconditional embedding, which guidance {guidance} "
                         "(<= 1) never uses; invert with null_text=False, or at the guidance you will edit with")
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
        raise ValueError(f"inner_steps must be a whole number >= 1, got {inner_steps!r}")
    device, dtype = pipe._execution_device, pipe.unet.dtype
    with torch.no_grad():
        z0 = _encode(pipe, image)
        vae_roundtrip = _decode(pipe, z0)
        cond, empty = pipe.encode_prompt(caption, device, 1, True, "")

    trajectory = [z0]

    def record(i, t, latents):
        _check_finite(latents, "DDIM inversion", i, t)
        trajectory.append(latents.detach().clone())

    with ddim_scheduler(pipe, inverse=True):
        generate(pipe, [caption], steps=steps, guidance=1.0, latent=z0, output_type="latent", step_hook=record)
    n_steps = len(trajectory) - 1
    nulls = empty.detach().float().expand(n_steps, -1, -1).clone()
    error = torch.zeros(n_steps)
    opt = _NullText(pipe, cond, trajectory, nulls, guidance, inner_steps, lr, tolerance, progress) if null_text else None

    def track(i, t, latents):
        _check_finite(latents, "reconstruction", i, t)
        error[i] = F.mse_loss(latents.float(), trajectory[n_steps - 1 - i].float()).item()
        if opt is not None and i + 1 < n_steps:
            opt.optimise(i + 1, latents)

    with ddim_scheduler(pipe), _frozen(pipe.unet):
        pipe.scheduler.set_timesteps(steps)
        try:
            if opt is not None:
                opt.optimise(0, trajectory[-1].to(device, dtype))
            gen = generate(pipe, [caption], steps=steps, guidance=guidance, latent=trajectory[-1], null_embeds=nulls,
                           step_hook=track)
        finally:
            if opt is not None:
                opt.bar.close()
    return Inversion(image, caption, trajectory[-1].float().cpu(), nulls.cpu(), gen.images[0], error, vae_roundtrip,
                     n_steps, float(guidance), bool(null_text), opt.iterations if opt is not None else [])


class _NullText:
    """Optimises the null embedding of one step at a time (see step 3 of the module docstring)."""

    def __init__(self, pipe, cond, trajectory, nulls, guidance, inner_steps, lr, tolerance, progress):
        from tqdm.auto import tqdm

        self.pipe, self.cond, self.trajectory, self.nulls = pipe, cond, trajectory, nulls
        self.guidance, self.inner_steps, self.lr, self.tolerance = guidance, inner_steps, lr, tolerance
        self.steps = len(nulls)
        self.iterations = []
        self.bar = tqdm(total=self.steps * inner_steps, desc="null-text inversion", disable=not progress)

    def eps(self, z, t, embeds):
        unet = self.pipe.unet
        return unet(self.pipe.scheduler.scale_model_input(z, t), t, encoder_hidden_states=embeds.to(unet.dtype)).sample

    def optimise(self, i: int, z: torch.Tensor) -> None:
        """Fill `nulls[i]`: the null embedding with which the guided step i from `z` lands on the inverted latent."""
        t = self.pipe.scheduler.timesteps[i]
        target = self.trajectory[self.steps - 1 - i].float()
        z = z.detach()
        null = self.nulls[max(i - 1, 0)].clone()[None].requires_grad_(True)
        adam = torch.optim.Adam([null], lr=self.lr * (1 - i / (2 * self.steps)))
        with torch.enable_grad():
            with torch.no_grad():
                eps_cond = self.eps(z, t, self.cond)
            for j in range(self.inner_steps):
                eps_null = self.eps(z, t, null)
                eps = eps_null + self.guidance * (eps_cond - eps_null)
                landed = self.pipe.scheduler.step(eps, t, z).prev_sample
                loss = F.mse_loss(landed.float(), target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"null-text optimisation diverged at step {i} of {self.steps} (timestep {int(t)}), inner "
                        f"iteration {j}: the loss is {loss.item()}; lower lr (now {self.lr}) or check the picture")
                (null.grad,) = torch.autograd.grad(loss, [null])
                adam.step()
                self.bar.update()
                if loss.item() < self.tolerance + i * 2e-5:
                    break
        self.bar.update(self.inner_steps - 1 - j)
        self.iterations.append(j + 1)
        if not torch.isfinite(null).all():
            raise FloatingPointError(f"null-text optimisation diverged at step {i} (timestep {int(t)}): the null "
                                     f"embedding is not finite; lower lr (now {self.lr})")
        self.nulls[i] = null.detach()[0]


@contextmanager
def _frozen(module):
    """No gradients into `module`'s weights for the duration: the optimiser needs the null embedding's only, and
    the backward does less work without them (10-35% less CPU time on the toy UNet); each flag is restored."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _check_finite(latents, what, i, t):
    if not torch.isfinite(latents).all():
        raise FloatingPointError(f"{what} diverged at step {i} (timestep {int(t)}): the latent holds NaN or inf. "
                                 "Check the picture and the model (a float16 pipeline on the CPU overflows; use float32)")


def _check_image(pipe, image, resize: bool) -> Image.Image:
    """`image` as the RGB picture of the pipeline's size, or a clear error about what is wrong with it."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image (e.g. Image.open(path).convert('RGB')), got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        raise ValueError(f"the image has an alpha channel (mode {image.mode!r}); Stable Diffusion reads RGB. Flatten "
                         "it onto a background first, e.g. Image.alpha_composite(Image.new('RGBA', im.size, 'white'), "
                         "im.convert('RGBA')).convert('RGB')")
    if image.mode in ("L", "1", "I", "I;16", "F"):
        raise ValueError(f"the image is grayscale (mode {image.mode!r}); Stable Diffusion reads RGB: pass "
                         "image.convert('RGB') (the model then sees a gray picture)")
    if image.mode != "RGB":
        raise ValueError(f"the image is in mode {image.mode!r}; pass an RGB picture: image.convert('RGB')")
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if image.size != (side, side):
        if not resize:
            raise ValueError(f"the image is {image.size[0]}x{image.size[1]} but this pipeline works at {side}x{side}; "
                             f"pass resize=True to crop the centre square and resize it, or resize it yourself")
        image = ImageOps.fit(image, (side, side), Image.LANCZOS)
    return image


def _check_caption(pipe, caption) -> None:
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a string, got {type(caption).__name__}")
    if not caption.strip():
        raise ValueError("the caption is empty: inversion needs what the picture shows (e.g. 'a red cat on grass'); "
                         "its words are what the edits then replace, refine or reweight")
    ids = pipe.tokenizer(caption, truncation=False).input_ids
    limit = pipe.tokenizer.model_max_length
    if len(ids) > limit:
        raise ValueError(f"the caption has {len(ids) - 2} tokens but the text encoder reads {limit - 2}; the model "
                         f"would not see {pipe.tokenizer.decode(ids[limit - 1:-1])!r}. Shorten it.")
    check_prompts(pipe, [caption])  # the toy model warns about words it never saw


def _encode(pipe, image: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    x = x.to(pipe._execution_device, pipe.vae.dtype)
    return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


def _decode(pipe, z: torch.Tensor) -> Image.Image:
    x = pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(x, output_type="pil")[0]
