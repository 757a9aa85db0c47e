"""The toy model's fixed training set: rendered scenes, their captions, and their cached VAE latents."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..toyworld import render, sample_scenes
from .config import ToyTrainConfig


def render_dataset(cfg: ToyTrainConfig):
    """The fixed training set: images in [-1, 1], their captions, and the extra creature images the VAE sees."""
    scenes = sample_scenes(cfg.n_images, cfg.seed, watercolor=cfg.watercolor, world=cfg.world,
                           layout_spread=cfg.layout_spread)
    images = np.stack([np.asarray(render(s)) for s in tqdm(scenes, desc="render", leave=False)])
    captions = [s.caption for s in scenes]
    n_creature = int(cfg.n_images * cfg.vae_creature)
    extra = np.stack([np.asarray(render(s)) for s in sample_scenes(max(n_creature, 1), cfg.seed + 1, style="creature", world=cfg.world)])
    to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # noqa: E731
    return to_tensor(images), captions, to_tensor(extra[:n_creature])


@torch.no_grad()
def encode_latents(vae, images, device):
    """Posterior means and stds of every training image, and the scaling factor 1 / std(latents)."""
    means, stds = [], []
    for chunk in torch.split(images, 256):
        post = vae.encode(chunk.to(device)).latent_dist
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
    lat_mean, lat_std = torch.cat(means), torch.cat(stds)
    return lat_mean, lat_std, float(1.0 / lat_mean.std())
