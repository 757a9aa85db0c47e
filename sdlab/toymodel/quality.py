"""Measuring a toy-world text-to-image model: generate the captions of held-out scenes, read the pixels back.

Used by the model card notebook, the quality tests and the benchmarks, for the shipped model or any
pipeline trained on the toy world.
"""

from __future__ import annotations

import numpy as np
import torch

from ..toyworld import Scene, evaluate, render
from .tokenizer import check_prompts

HELD_OUT_SEED = 1_000_003
"""Seed of the held-out scenes (the training set is drawn from seed 0)."""


def trained_world(folder=None) -> int:
    """The toy world (1 or 2) a toy-model folder was trained on, from the `train_config.json` that ships beside
    its weights (default: the shipped model); 1 for a folder without one or from before worlds existed. A model
    is measured on held-out scenes of its own world."""
    import json
    from pathlib import Path

    from ..models import TOY_MODEL_DIR

    path = Path(folder if folder is not None else TOY_MODEL_DIR) / "train_config.json"
    if not path.is_file():
        return 1
    world = json.loads(path.read_text()).get("world", 1)
    if world not in (1, 2):
        raise ValueError(f"{path} names world {world!r}; the toy world has worlds 1 and 2")
    return world


def generate(pipe, prompts, seeds, *, steps=25, guidance=7.5, batch_size=16, output_type="pil"):
    """One image per (prompt, seed); image i depends only on prompts[i] and seeds[i], not on the batching.
    `output_type="latent"`: one (n, c, h, w) tensor of the final latents instead."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    check_prompts(pipe, prompts)
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[chunk]]
        out = pipe(
            list(prompts[chunk]), num_inference_steps=steps, guidance_scale=guidance, generator=generators,
            output_type=output_type,
        )
        images += list(out.images)
    return torch.stack(images) if output_type == "latent" else images


def score_model(pipe, scenes: list[Scene], *, seed=0, steps=25, guidance=7.5, batch_size=16):
    """Generate each scene's caption (seed + i) and read the attributes back with the evaluator.

    Returns (images, metrics) where metrics is `toyworld.evaluate`'s dict.
    """
    images = generate(pipe, [s.caption for s in scenes], [seed + i for i in range(len(scenes))],
                      steps=steps, guidance=guidance, batch_size=batch_size)
    return images, evaluate(images, scenes)


@torch.no_grad()
def vae_reconstructions(vae, scenes: list[Scene]):
    """Round-trip renders through the VAE; returns (originals, reconstructions, PSNR in dB per image)."""
    originals = [render(s) for s in scenes]
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    x = torch.from_numpy(np.stack([np.asarray(im) for im in originals])).permute(0, 3, 1, 2)
    x = x.to(device=device, dtype=dtype) / 127.5 - 1.0
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    rec_u8 = ((rec + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    from PIL import Image

    reconstructions = [Image.fromarray(a) for a in rec_u8]
    orig = np.stack([np.asarray(im, dtype=np.float64) for im in originals])
    mse = ((orig - rec_u8.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
    return originals, reconstructions, psnr
