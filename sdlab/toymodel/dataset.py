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
    return _to_tensor(images), captions, _to_tensor(extra[:n_creature])


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 pictures as (N, 3, H, W) floats in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def render_anneal_set(cfg: ToyTrainConfig):
    """The anneal's own training set (`anneal_layout_spread`): images in [-1, 1] and their captions."""
    scenes = sample_scenes(cfg.n_images, cfg.seed + 2, watercolor=cfg.watercolor, world=cfg.world,
                           layout_spread=cfg.anneal_layout_spread)
    images = np.stack([np.asarray(render(s)) for s in tqdm(scenes, desc="render (anneal)", leave=False)])
    return _to_tensor(images), [s.caption for s in scenes]


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
