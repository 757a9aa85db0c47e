"""The toy model's architecture: Stable Diffusion's classes at a size a CPU trains in an hour.

`build_pipeline(TOY)` is the shipped model's shape with fresh weights; `build_pipeline(TINY)` is a
seconds-fast random model for unit tests. Both are ordinary diffusers `StableDiffusionPipeline`s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import MAX_LENGTH, build_tokenizer

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
"""Stable Diffusion 1.x's noise schedule (DDIM sampling, as in the prompt-to-prompt paper)."""


@dataclass(frozen=True)
class Architecture:
    """Sizes of the toy pipeline's parts."""

    image_size: int = 64
    """Side of the generated images in pixels."""
    vae_channels: tuple = (16, 32, 64)
    """AutoencoderKL block widths; len - 1 downsamplings (3 blocks: f = 4)."""
    vae_groups: int = 8
    latent_channels: int = 4
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    unet_channels: tuple = (64, 128, 128)
    """UNet block widths: cross-attention in the first two (16x16, 8x8) and in the mid block (4x4)."""
    unet_layers: int = 1
    unet_heads: int = 4
    unet_groups: int = 32


TOY = Architecture()
TINY = Architecture(
    vae_channels=(8, 16, 16), vae_groups=8, text_hidden=32, text_layers=2, text_heads=2,
    unet_channels=(16, 32, 32), unet_heads=2, unet_groups=8,
)


def build_pipeline(arch: Architecture = TOY, seed: int = 0) -> StableDiffusionPipeline:
    """A `StableDiffusionPipeline` of this architecture with freshly initialised (seeded) weights."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    n_vae = len(arch.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_vae,
        up_block_types=("UpDecoderBlock2D",) * n_vae,
        block_out_channels=arch.vae_channels,
        layers_per_block=1,
        latent_channels=arch.latent_channels,
        norm_num_groups=arch.vae_groups,
        sample_size=arch.image_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.text_hidden,
            intermediate_size=4 * arch.text_hidden,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=arch.text_heads,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    latent_size = arch.image_size // 2 ** (n_vae - 1)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=arch.unet_layers,
        attention_head_dim=arch.unet_heads,
        cross_attention_dim=arch.text_hidden,
        norm_num_groups=arch.unet_groups,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
