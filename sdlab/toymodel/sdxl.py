"""SDXL-shaped pipelines of random weights: SDXL's classes (two CLIP text encoders, the second with a projection,
a UNet with "text_time" micro-conditioning) built from configs, with the toy tokenizer in both places.

`build_sdxl_pipeline(TINY_XL)` is a seconds-fast `StableDiffusionXLPipeline` for unit tests (the way diffusers'
own fast tests build one); `bench/p2p_overhead.py --sdxl-shape` passes SDXL's published configs instead
(`sdlab.walkthrough.SDXL`). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .architecture import SCHEDULER_CONFIG
from .tokenizer import MAX_LENGTH, build_tokenizer


@dataclass(frozen=True)
class XLConfigs:
    """The four model configs of an SDXL pipeline (keyword arguments of each class's constructor)."""

    unet: dict
    """`UNet2DConditionModel`: `addition_embed_type="text_time"`, `cross_attention_dim` = the two text widths
    summed, `projection_class_embeddings_input_dim` = the pooled width + 6 x `addition_time_embed_dim`."""
    vae: dict
    """`AutoencoderKL` (`force_upcast` True, as SDXL's: it overflows in float16)."""
    text_encoder: dict
    """`CLIPTextConfig` of the `CLIPTextModel` (SDXL: CLIP ViT-L, its penultimate layer)."""
    text_encoder_2: dict
    """`CLIPTextConfig` of the `CLIPTextModelWithProjection` (SDXL: OpenCLIP bigG; its pooled, projected output
    conditions the UNet next to the time ids)."""


def _text(hidden: int, **extra) -> dict:
    return dict(vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=MAX_LENGTH, bos_token_id=0, eos_token_id=2,
                pad_token_id=1, **extra)


TINY_XL = XLConfigs(
    unet=dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4), use_linear_projection=True,
        cross_attention_dim=32 + 32, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8, norm_num_groups=8,
    ),
    vae=dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=64, scaling_factor=0.13025, force_upcast=True,
    ),
    text_encoder=_text(32),
    text_encoder_2=_text(32, projection_dim=32, hidden_act="gelu"),
)
"""SDXL's layout at unit-test size: 64x64 images, a 16x16 latent, cross-attention at 8x8 and 4x4 (SDXL at 1024²:
64x64 and 32x32; none at the first level), the mid block's transformer deepest, as in SDXL."""


def _scheduler() -> EulerDiscreteScheduler:
    """SDXL's sampler (Euler) on SD's noise schedule; its tables live on the CPU whatever the default device."""
    with torch.device("cpu"):
        return EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                                         if k not in ("clip_sample", "set_alpha_to_one")})


def build_sdxl_pipeline(configs: XLConfigs = TINY_XL, seed: int = 0, tokenizer_2=None) -> StableDiffusionXLPipeline:
    """A `StableDiffusionXLPipeline` of these configs with freshly initialised (seeded) weights on the current
    default device. Both tokenizers are the toy tokenizer (the second pads with "!", as SDXL's second does)
    unless `tokenizer_2` is given. Euler scheduler with SD's noise schedule, as SDXL ships."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    if tokenizer_2 is None:
        tokenizer_2 = build_tokenizer()
        tokenizer_2.pad_token = "!"
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**configs.vae),
        text_encoder=CLIPTextModel(CLIPTextConfig(**configs.text_encoder)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**configs.text_encoder_2)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=UNet2DConditionModel(**configs.unet),
        scheduler=_scheduler(),
        add_watermarker=False,
    )
