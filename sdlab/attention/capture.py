"""Capture attention maps: which pixels each word drives, and how pixels attend to each other.

Maps are averaged over steps, heads and the chosen layers as running sums: memory is one map per prompt,
whatever the number of steps. Only the layers at the chosen resolution materialise probabilities; the rest
of the UNet runs its own processors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import align
from .control import Controller, Run
from .processor import LayerInfo, probabilities, sdpa
from .pipelines import check_pipeline
from .run import generate


def default_level(layers: list[LayerInfo]) -> int:
    """Level of the second-lowest resolution that has cross-attention (SD 1.x at 512: 16x16; toy model: 8x8)."""
    levels = sorted({layer.level for layer in layers if layer.is_cross})
    return levels[-2] if len(levels) > 1 else levels[-1]


def level_for(res: int | None, layers: list[LayerInfo], run: Run, what: str) -> int:
    """The level whose maps are `res` high (None: `default_level`), or a clear error listing the choices."""
    if res is None:
        return default_level(layers)
    sizes = {layer.map_shape(run.latent_hw)[0]: layer.level for layer in layers if layer.is_cross}
    if res not in sizes:
        raise ValueError(f"no attention layers at resolution {res} for {what}; this run has {sorted(sizes)}")
    return sizes[res]


class CaptureController(Controller):
    """Running sums of cross-attention (and optionally self-attention) maps at one resolution."""

    def __init__(self, res=None, self_res=None, places=("down", "mid", "up"), self_attention=True):
        self.res, self.self_res, self.places, self.self_attention = res, self_res, tuple(places), self_attention

    def start(self, run, layers):
        super().start(run, layers)
        self.level = level_for(self.res, layers, run, "capture")
        self.self_level = level_for(self.self_res, layers, run, "self-attention capture") if self.self_res else self.level
        chosen = [layer for layer in layers if self.wants(layer)]
        if not any(layer.is_cross for layer in chosen):
            raise ValueError(f"no cross-attention layers at level {self.level} in places {self.places}")
        self.shape = next(layer.map_shape(run.latent_hw) for layer in chosen if layer.is_cross)
        self.self_shape = next((l.map_shape(run.latent_hw) for l in chosen if not l.is_cross), None)
        # running sums and head counts are tensors added to in place: a compiled UNet reads the same tensors at
        # every step (see sdlab.attention.compiling)
        pixels = math.prod(self.shape)
        zeros = lambda *shape: torch.zeros(shape, device=run.device)  # noqa: E731
        self.cross_sum, self.cross_count = zeros(run.n, pixels, run.tokens), zeros()
        self.self_sum, self.self_count = None, zeros()
        if self.self_shape is not None:
            self.self_sum = zeros(run.n, math.prod(self.self_shape), math.prod(self.self_shape))

    def wants(self, layer):
        if layer.place not in self.places:
            return False
        if layer.is_cross:
            return layer.level == self.level
        return self.self_attention and layer.level == self.self_level

    def attend(self, layer, q, k, v):
        c = self.cond_offset(layer, q.shape[0])
        p = probabilities(q[c:], k[c:]).sum(1)  # (n, queries, keys), summed over heads
        if layer.is_cross:
            self.cross_sum.add_(p)
            self.cross_count.add_(layer.heads)
        else:
            self.self_sum.add_(p)
            self.self_count.add_(layer.heads)
        return sdpa(q, k, v)


def map_mask(m: torch.Tensor, size, threshold: float = 0.5) -> torch.Tensor:
    """Bool mask where the (h, w) map `m`, upsampled (bilinear) to `size` and divided by its maximum, exceeds
    `threshold` (what `Capture.word_mask` makes of a word's map)."""
    m = torch.nn.functional.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    return m / m.max().clamp_min(1e-12) > threshold


@dataclass
class Capture:
    """Averaged attention of one generation. Maps are float32 CPU tensors."""

    images: list
    prompts: list
    tokenizer: object = field(repr=False)
    cross: torch.Tensor = field(repr=False)
    """(prompts, h, w, tokens): cross-attention probability of each token at each map pixel."""
    self_maps: torch.Tensor | None = field(repr=False)
    """(prompts, h*w, h*w) at `self_shape`, or None."""
    self_shape: tuple | None
    latent: torch.Tensor = field(repr=False)

    def words(self, prompt: int = 0) -> list[str]:
        return [w for w, _ in align.words(self.tokenizer, self.prompts[prompt])]

    def word_map(self, word: str | int, prompt: int = 0) -> torch.Tensor:
        """(h, w) attention on `word` (its sub-tokens summed; every occurrence summed) in prompt `prompt`."""
        idx = align.word_indices(self.tokenizer, self.prompts[prompt], word)
        return self.cross[prompt][..., idx].sum(-1)

    def word_mask(self, word: str | int, prompt: int = 0, threshold: float = 0.5, size=None) -> torch.Tensor:
        """Bool mask where `word`'s map, upsampled (bilinear) to `size` (default: the image's) and divided by its
        maximum, exceeds `threshold`: the pixels the word drives."""
        if size is None:
            image = self.images[prompt]
            size = image.size[::-1] if hasattr(image, "size") and not callable(image.size) else image.shape[-2:]
        return map_mask(self.word_map(word, prompt), size, threshold)

    def word_maps(self, prompt: int = 0) -> dict[str, torch.Tensor]:
        """Every word's map, in prompt order (a repeated word appears once, its occurrences summed)."""
        return {w: self.word_map(w, prompt) for w in self.words(prompt)}

    def self_components(self, k: int = 6, prompt: int = 0) -> torch.Tensor:
        """Top `k` SVD components of the self-attention matrix (rows centred), each as an (h, w) map."""
        if self.self_maps is None:
            raise ValueError("this capture has no self-attention maps; capture with self_attention=True")
        a = self.self_maps[prompt].double()
        _, _, vh = torch.linalg.svd(a - a.mean(dim=1, keepdim=True))
        return vh[:k].float().reshape(-1, *self.self_shape)


def capture(
    pipe,
    prompts,
    *,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 7.5,
    res: int | None = None,
    self_res: int | None = None,
    self_attention: bool = True,
    places=("down", "mid", "up"),
    latent=None,
    height=None,
    width=None,
    compile: bool = False,
) -> Capture:
    """Generate `prompts` (one string or a list) and capture their attention maps.

    `res`: height of the maps whose layers are averaged (default: the second-lowest resolution with
    cross-attention). `self_res`: the same for self-attention (default: `res`). `places`: which of the
    "down", "mid", "up" blocks to average. `compile=True`: compile the UNet first (`sdlab.compile`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    check_pipeline(pipe, prompts)
    for p in prompts:
        align.tokenize(pipe.tokenizer, p)  # warns on truncation
    ctl = CaptureController(res, self_res, places, self_attention)
    gen = generate(pipe, prompts, ctl, seed=seed, steps=steps, guidance=guidance, latent=latent, height=height,
                   width=width, compile=compile)
    cross = (ctl.cross_sum / ctl.cross_count).float().cpu().reshape(len(prompts), *ctl.shape, -1)
    self_maps = None
    if ctl.self_sum is not None:
        self_maps = (ctl.self_sum / ctl.self_count).float().cpu()
    return Capture(gen.images, prompts, pipe.tokenizer, cross, self_maps, ctl.self_shape, gen.latent)
