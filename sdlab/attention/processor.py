"""The attention processor sdlab installs through diffusers' processor API, and what it knows about a layer.

A `ControlledProcessor` wraps the layer's original processor. While its controller leaves it inactive (the
layer is not edited or captured at this step) it hands the call to the original untouched, so uncontrolled
layers and steps cost one attribute test. When active it projects queries, keys and values as diffusers'
`AttnProcessor2_0` does, asks the controller for the attention output `(batch, heads, tokens, head_dim)`,
and applies the output projection.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

sdpa = F.scaled_dot_product_attention

SUPPORTED_PROCESSORS = {"AttnProcessor", "AttnProcessor2_0", "XFormersAttnProcessor", "AttnProcessorNPU"}
"""Processors that compute plain softmax attention from `to_q`, `to_k`, `to_v`; sdlab can take their place."""


@dataclass(frozen=True)
class LayerInfo:
    """One attention layer of a UNet."""

    name: str
    """Module path, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2"."""
    place: str
    """"down", "mid" or "up"."""
    level: int
    """How many times the latent was halved before this layer: its map is latent_size / 2**level wide."""
    is_cross: bool
    """Cross-attention (keys from the text) or self-attention (keys from the image)."""
    heads: int

    def map_shape(self, latent_hw) -> tuple[int, int]:
        """(height, width) of this layer's attention map for a latent of `latent_hw`."""
        return tuple(math.ceil(s / 2**self.level) for s in latent_hw)


def describe_layers(unet) -> list[LayerInfo]:
    """Every attention layer of a diffusers `UNet2DConditionModel`, in module order."""
    n_down = len(unet.down_blocks)
    n_up = len(unet.up_blocks)
    layers = []
    for name, module in unet.named_modules():
        if not hasattr(module, "set_processor") or not hasattr(module, "to_q"):
            continue
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.|mid_block\.", name)
        if m is None:
            place, level = "other", 0
        elif m.group(1) == "down_blocks":
            place, level = "down", int(m.group(2))
        elif m.group(1) == "up_blocks":
            place, level = "up", n_up - 1 - int(m.group(2))
        else:
            place, level = "mid", n_down - 1
        layers.append(LayerInfo(name, place, level, bool(module.is_cross_attention), module.heads))
    return layers


def probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) in float32: `(batch, heads, queries, keys)`. Only for maps that are asked for."""
    scale = q.shape[-1] ** -0.5
    return torch.softmax(q.float() @ k.float().transpose(-1, -2) * scale, dim=-1)


class ControlledProcessor:
    """Runs one attention layer for a controller; see the module docstring."""

    def __init__(self, original, layer: LayerInfo, controller):
        self.original = original
        self.layer = layer
        self.controller = controller
        self.active = False

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if not self.active:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if attention_mask is not None:
            raise NotImplementedError(
                f"{self.layer.name}: sdlab's attention control does not support attention masks "
                "(Stable Diffusion 1.x/2.x and SDXL pipelines pass none)"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states
        if encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, heads = q.shape[0], attn.heads
        d = k.shape[-1] // heads
        q = q.view(batch, -1, heads, d).transpose(1, 2)
        k = k.view(batch, -1, heads, d).transpose(1, 2)
        v = v.view(batch, -1, heads, d).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        out = self.controller.attend(self.layer, q, k, v)

        out = out.transpose(1, 2).reshape(batch, -1, heads * d).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
