"""Real Stable Diffusion's architecture, written down: the published configs of SD 1.5, SD 2.1-base and SDXL
base 1.0, and building any such model on PyTorch's `meta` device (every module and parameter shape, no
weights, no memory).

The values are those of the diffusers folders on the Hugging Face hub, file by file:

- SD 1.5, `runwayml/stable-diffusion-v1-5` (now `stable-diffusion-v1-5/stable-diffusion-v1-5`):
  `unet/config.json` (block_out_channels [320, 640, 1280, 1280], layers_per_block 2, attention_head_dim 8,
  cross_attention_dim 768, sample_size 64, use_linear_projection false), `vae/config.json` (block_out_channels
  [128, 256, 512, 512], layers_per_block 2, latent_channels 4, sample_size 512, scaling_factor 0.18215) and
  `text_encoder/config.json` (CLIP ViT-L/14's text tower: hidden_size 768, 12 layers, 12 heads,
  intermediate_size 3072, vocab_size 49408, max_position_embeddings 77, hidden_act quick_gelu). SD 1.4
  (`CompVis/stable-diffusion-v1-4`) has the same three configs.
- SD 2.1-base, `stabilityai/stable-diffusion-2-1-base` (512x512; SD 2.0-base has the same configs):
  `unet/config.json` (attention_head_dim [5, 10, 20, 20], cross_attention_dim 1024, use_linear_projection
  true, otherwise as SD 1.5), `vae/config.json` (as SD 1.5; no scaling_factor key, so diffusers' default
  0.18215) and `text_encoder/config.json` (OpenCLIP ViT-H/14's text tower as a `CLIPTextModel`: hidden_size
  1024, 16 heads, intermediate_size 4096, hidden_act gelu, and 23 layers, not 24: SD 2 reads the penultimate
  layer, so the diffusers export drops the last). The 768x768 `stabilityai/stable-diffusion-2-1` differs only
  in the UNet's sample_size (96) and in predicting v instead of the noise.
- SDXL base 1.0, `stabilityai/stable-diffusion-xl-base-1.0` (1024x1024): `unet/config.json`
  (block_out_channels [320, 640, 1280], down blocks DownBlock2D then two CrossAttnDownBlock2D, up blocks the
  mirror image, transformer_layers_per_block [1, 2, 10], attention_head_dim [5, 10, 20], cross_attention_dim
  2048, use_linear_projection true, addition_embed_type "text_time", addition_time_embed_dim 256,
  projection_class_embeddings_input_dim 2816 = 1280 pooled + 6 time ids x 256, sample_size 128), `vae/config.json`
  (as SD 1.5's but sample_size 1024, scaling_factor 0.13025, force_upcast true), `text_encoder/config.json` (CLIP
  ViT-L/14's text tower, as SD 1.5's) and `text_encoder_2/config.json` (OpenCLIP ViT-bigG/14's text tower as a
  `CLIPTextModelWithProjection`: hidden_size 1280, 32 layers, 20 heads, intermediate_size 5120, hidden_act
  gelu, projection_dim 1280). SDXL reads the penultimate layer of both encoders.

Published sizes these reproduce (parameters): SD 1.5 UNet 859,520,964, VAE 83,653,863, text encoder
123,060,480; SD 2.1 UNet 865,910,724, text encoder 340,387,840; SDXL UNet 2,567,463,684, second text encoder
694,659,840.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

_SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)

_SD_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
)


@dataclass(frozen=True)
class ModelSpec:
    """A Stable Diffusion architecture as its three configs: enough to build it, nothing to run it with."""

    name: str
    """What tables and figures call it, e.g. "SD 1.5"."""
    source: str
    """Where the values come from (a published model's config files, or a loaded pipeline)."""
    unet: dict
    """`UNet2DConditionModel` config (keyword arguments of its constructor)."""
    vae: dict
    """`AutoencoderKL` config."""
    text_encoder: dict
    """`CLIPTextConfig` keyword arguments for the `CLIPTextModel`."""
    text_encoder_2: dict | None = None
    """SDXL's second text encoder, a `CLIPTextModelWithProjection` (its `CLIPTextConfig` keyword arguments);
    None for SD 1.x / 2.x."""


SD15 = ModelSpec(
    name="SD 1.5",
    source="runwayml/stable-diffusion-v1-5: unet/, vae/, text_encoder/config.json",
    unet=dict(_SD_UNET, attention_head_dim=8, cross_attention_dim=768, use_linear_projection=False),
    vae=_SD_VAE,
    text_encoder=dict(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ),
)
"""Stable Diffusion 1.5 (and 1.4): CLIP ViT-L/14 text encoder, 860 M UNet, f = 8 VAE."""

SD21_BASE = ModelSpec(
    name="SD 2.1-base",
    source="stabilityai/stable-diffusion-2-1-base: unet/, vae/, text_encoder/config.json",
    unet=dict(_SD_UNET, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True),
    vae=_SD_VAE,
    text_encoder=dict(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    ),
)
"""Stable Diffusion 2.1-base (and 2.0-base), 512x512: OpenCLIP ViT-H/14 text encoder (penultimate layer)."""

_CLIP_L = SD15.text_encoder

SDXL = ModelSpec(
    name="SDXL",
    source="stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder/, text_encoder_2/config.json",
    unet=dict(
        _SD_UNET, sample_size=128, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ),
    vae=dict(_SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    text_encoder=_CLIP_L,
    text_encoder_2=dict(
        _CLIP_L, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        hidden_act="gelu", projection_dim=1280,
    ),
)
"""SDXL base 1.0, 1024x1024: CLIP ViT-L and OpenCLIP ViT-bigG text encoders side by side (2048 wide), 2.6 B UNet
with cross-attention at its two lower levels only, conditioned on the pooled text and the image size too."""

PUBLISHED = (SD15, SD21_BASE, SDXL)


def spec_from_pipeline(pipe, name: str = "toy model") -> ModelSpec:
    """The `ModelSpec` of a loaded `StableDiffusionPipeline` (e.g. `sdlab.load_pipeline()`'s toy model), read
    from its components' configs, so that it goes through the same walkthrough as the published models."""
    missing = [part for part in ("unet", "vae", "text_encoder") if getattr(pipe, part, None) is None]
    if missing:
        raise ValueError(f"spec_from_pipeline needs a Stable Diffusion pipeline with a UNet, a VAE and a text "
                         f"encoder; {type(pipe).__name__} has no {', '.join(missing)}")
    return ModelSpec(
        name=name,
        source=f"the loaded {type(pipe).__name__}'s configs",
        unet={k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")},
        vae={k: v for k, v in dict(pipe.vae.config).items() if not k.startswith("_")},
        text_encoder=pipe.text_encoder.config.to_diff_dict(),
        text_encoder_2=(pipe.text_encoder_2.config.to_diff_dict()
                        if getattr(pipe, "text_encoder_2", None) is not None else None),
    )


@dataclass
class MetaModel:
    """A `ModelSpec` built on the meta device: real diffusers / transformers modules whose tensors have shapes
    and dtypes but no storage. Parameters count; forward passes on meta inputs compute output shapes only."""

    spec: ModelSpec
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection | None = None


def build_on_meta(spec: ModelSpec) -> MetaModel:
    """Build `spec`'s UNet, VAE and text encoder on the `meta` device: no weights are allocated or downloaded,
    so SD 1.5's 1.07 billion parameters cost nothing and take well under a second."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_on_meta takes a ModelSpec (e.g. SD15, SD21_BASE, SDXL or spec_from_pipeline(pipe)), "
                        f"not {type(spec).__name__}")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(spec.unet)
        vae = AutoencoderKL.from_config(spec.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text_encoder))
        text_encoder_2 = None
        if spec.text_encoder_2 is not None:
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**spec.text_encoder_2)).eval()
    return MetaModel(spec, unet.eval(), vae.eval(), text_encoder.eval(), text_encoder_2)
