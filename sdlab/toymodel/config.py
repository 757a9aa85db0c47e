"""Configuration of `sdlab train-toy`: one dataclass, its defaults the shipped model's recipe."""

from __future__ import annotations

from dataclasses import dataclass


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
    unet_steps: int = 5500
    lr: float = 5e-4
    warmup: int = 200
    batch_size: int = 32
    cfg_dropout: float = 0.1
    """Share of empty captions, for classifier-free guidance."""
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    """EMA of the UNet and the text encoder (both, so the shipped pair was averaged over the same steps)."""
    pad_dropout: float = 0.5
    """Share of captions whose padding positions (after the end token) get the empty caption's states instead.
    The causal text encoder copies the whole prompt into the ~70 padding states; without this the UNet reads the
    prompt from them, its cross-attention spreads over all 77 tokens and scaling one word's attention (reweighting)
    does nothing. The pipeline at inference is unchanged."""
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
