"""The one denoising loop: the pipeline's own `__call__`, with a controller installed and told each step's end.

`generate` is what capture and every edit call. It draws one initial latent from `seed` (on the CPU, so a
seed gives the same picture on every device), shares it across all prompts, and hands it to the pipeline
with `latents=`; `callback_on_step_end` advances the controller and lets it change the latents (LocalBlend), and
the controller's `finish` sees the decoded output last (LocalBlend's `pixels=True`).
An SDXL pipeline computes its pooled embeddings and micro-conditioning (`add_time_ids`) itself, from the same
prompts.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..toymodel.tokenizer import check_prompts
from .compiling import compile_pipeline, is_compiled
from .control import Controller, Run, control
from .pipelines import check_pipeline, is_sdxl


@dataclass
class Generation:
    images: list
    """One output per prompt (PIL images by default; a latent tensor for `output_type="latent"`)."""
    latent: torch.Tensor
    """The shared initial latent `(1, channels, h, w)`."""
    prompts: list


def initial_latent(pipe, seed: int, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """The seeded starting noise `(1, channels, height/f, width/f)`, drawn on the CPU in float32."""
    f = pipe.vae_scale_factor
    height = height or pipe.unet.config.sample_size * f
    width = width or pipe.unet.config.sample_size * f
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of {f} (the VAE's downsampling); got {height}x{width}")
    shape = (1, pipe.unet.config.in_channels, height // f, width // f)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))


def generate(
    pipe,
    prompts: list[str],
    controller: Controller | None = None,
    *,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 7.5,
    latent: torch.Tensor | None = None,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    output_type: str = "pil",
    null_embeds: torch.Tensor | None = None,
    step_hook=None,
    compile: bool = False,
) -> Generation:
    """Generate one image per prompt from one shared initial latent, under `controller` if given.

    `latent` (1, c, h, w) overrides `seed`. Guidance `<= 1` runs without classifier-free guidance.

    `null_embeds` (steps, tokens, dim): the unconditional embedding of every step (null-text inversion, see
    `sdlab.inversion`), in place of the negative prompt's, for every prompt. Row 0 goes in as
    `negative_prompt_embeds`; at the end of step i the callback returns the pipeline's `prompt_embeds` (the
    [unconditional, conditional] batch the pipeline concatenated under guidance) with row i + 1 in the
    unconditional half. A row is read just before its step, after `step_hook`, so a hook may fill it as the run
    goes. Unused at guidance `<= 1`. `step_hook(i, t, latents)` is called after step i (after the controller)
    and may return changed latents.

    `compile=True` compiles the pipeline's UNet first (`sdlab.compile`: kept for later calls; eager with a
    warning where torch cannot compile). A run on a compiled UNet is static (`Run.static`).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    check_pipeline(pipe, prompts)  # and, for SDXL, both tokenizers read the prompts as the same words
    if compile:
        compile_pipeline(pipe)
    check_prompts(pipe, prompts)  # the toy model warns about words it never saw
    if latent is None:
        latent = initial_latent(pipe, seed, height, width)
    elif latent.ndim != 4 or latent.shape[0] != 1 or latent.shape[1] != pipe.unet.config.in_channels:
        raise ValueError(f"latent must be (1, {pipe.unet.config.in_channels}, h, w); got {tuple(latent.shape)}")
    device, dtype = pipe._execution_device, pipe.unet.dtype
    latents = latent.to(device=device, dtype=dtype).repeat(len(prompts), 1, 1, 1)
    h, w = latents.shape[-2:]
    f = pipe.vae_scale_factor
    kwargs = dict(
        prompt=prompts,
        negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
        latents=latents,
        height=h * f,
        width=w * f,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type=output_type,
    )
    pipe.scheduler.set_timesteps(steps)
    n_steps, n = len(pipe.scheduler.timesteps), len(prompts)
    swap = null_embeds is not None and guidance > 1
    if null_embeds is not None:
        if negative_prompt is not None:
            raise ValueError("give negative_prompt or null_embeds (per-step unconditional embeddings), not both")
        if is_sdxl(pipe):
            raise ValueError(f"null_embeds (null-text inversion) runs on SD 1.x / 2.x pipelines only; this "
                             f"{type(pipe).__name__}'s unconditional input also has pooled embeddings")
        dim = pipe.text_encoder.config.hidden_size
        if null_embeds.ndim != 3 or null_embeds.shape[0] != n_steps or null_embeds.shape[2] != dim:
            raise ValueError(f"null_embeds must be (steps={n_steps}, tokens, {dim}), one row per denoising step; "
                             f"got {tuple(null_embeds.shape)}")
        if swap:
            kwargs["negative_prompt_embeds"] = null_embeds[:1].to(device, dtype).expand(n, -1, -1)
    if controller is None and step_hook is None and not swap:
        out = pipe(**kwargs)
    else:
        run = Run(tuple(prompts), n_steps, (h, w), device, dtype, tokens=pipe.tokenizer.model_max_length,
                  static=is_compiled(pipe.unet))

        def step_end(pipeline, i, t, tensors):
            latents = tensors["latents"]
            if controller is not None:
                latents = controller.step_end(i, latents)
                controller.set_step(i + 1)
            if step_hook is not None:
                changed = step_hook(i, t, latents)
                latents = latents if changed is None else changed
            if not swap or i + 1 >= n_steps:
                return {"latents": latents}
            embeds = tensors["prompt_embeds"]
            null = null_embeds[i + 1 : i + 2].to(embeds).expand(n, -1, -1)
            return {"latents": latents, "prompt_embeds": torch.cat([null, embeds[n:]])}

        with control(pipe.unet, controller, run) if controller is not None else nullcontext():
            out = pipe(**kwargs, callback_on_step_end=step_end,
                       callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    images = out.images if controller is None else controller.finish(out.images, output_type)
    if output_type == "latent":
        images = list(images)
    return Generation(images=images, latent=latent.detach().cpu(), prompts=prompts)
