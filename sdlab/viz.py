"""Figures for attention and prompt-to-prompt: image rows, per-word heat maps, self-attention components,
source-vs-edit comparisons.

Every function returns an `sdlab.plotting.Figure`, a matplotlib `Figure` that is never registered with pyplot
and displays itself as an image: a notebook shows it by ending a cell with it, a script saves it with
`fig.savefig(path)`. `subplots` makes an empty one for plots of a notebook's own.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image

from .plotting import Figure, subplots

__all__ = ["Figure", "subplots", "to_array", "heat_overlay", "image_row", "image_grid", "word_heat_maps",
           "self_attention_components", "edit_comparison", "with_without", "strength_curve"]


def to_array(image) -> np.ndarray:
    """A PIL image, (h, w, 3) array or (3, h, w) tensor in [0, 1] as an (h, w, 3) float array in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.max() > 1.0:
        a = a / 255.0
    return a


def heat_overlay(image, attention, alpha: float = 0.6, cmap: str = "jet") -> np.ndarray:
    """`attention` (h', w') upsampled to the image, normalised to [0, 1], colored and laid over the image."""
    img = to_array(image)
    m = np.asarray(attention.detach().cpu() if hasattr(attention, "detach") else attention, dtype=np.float32)
    m = np.asarray(Image.fromarray(m).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    heat = colormaps[cmap](m)[..., :3]
    return np.clip((1 - alpha) * img + alpha * heat, 0.0, 1.0)


def _row(panels: list[np.ndarray], captions, size: float, title: str | None = None, cmap=None) -> Figure:
    n = len(panels)
    fig = Figure(figsize=(size * n, size + 0.45 + (0.3 if title else 0)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel, caption in zip(axes, panels, captions or [None] * n):
        ax.imshow(panel, cmap=cmap, interpolation="nearest" if panel.ndim == 2 else "antialiased")
        ax.set_xticks([]), ax.set_yticks([])
        if caption:
            ax.set_title(caption, fontsize=9, wrap=True)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def image_row(images, captions=None, *, size: float = 2.0, title: str | None = None) -> Figure:
    """Images side by side, each with its caption (e.g. its prompt) above it."""
    return _row([to_array(im) for im in images], captions, size, title)


def image_grid(rows, row_labels=None, captions=None, *, size: float = 1.8, title: str | None = None) -> Figure:
    """A grid: `rows` is a list of image lists; `row_labels` name the rows, `captions` the columns."""
    nr, nc = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(size * nc + (1.0 if row_labels else 0), size * nr + 0.5), layout="constrained")
    axes = fig.subplots(nr, nc, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(row):
                ax.imshow(to_array(row[j]))
            else:
                ax.axis("off")
            if i == 0 and captions:
                ax.set_title(captions[j], fontsize=9)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def word_heat_maps(capture, prompt: int = 0, words=None, *, size: float = 1.6, overlay: bool = True) -> Figure:
    """The seed's Fig. 5: the generated image, then one heat map per word of the prompt over it.

    `capture` is an `sdlab.attention.Capture`; `words` picks words (default: all of the prompt's).
    """
    maps = capture.word_maps(prompt) if words is None else {w: capture.word_map(w, prompt) for w in words}
    image = capture.images[prompt]
    panels = [to_array(image)] + [
        heat_overlay(image, m) if overlay else np.asarray(m, dtype=np.float32) for m in maps.values()
    ]
    return _row(panels, ["image", *maps], size, title=repr(capture.prompts[prompt]), cmap=None if overlay else "jet")


def self_attention_components(capture, k: int = 6, prompt: int = 0, *, size: float = 1.6) -> Figure:
    """The top `k` SVD components of the self-attention maps (the reference's `show_self_attention_comp`)."""
    comps = capture.self_components(k, prompt).numpy()
    panels = [to_array(capture.images[prompt])] + [(c - c.min()) / max(float(np.ptp(c)), 1e-12) for c in comps]
    return _row(panels, ["image"] + [f"component {i + 1}" for i in range(len(comps))], size,
                title=f"self-attention components at {comps.shape[1]}x{comps.shape[2]}", cmap="viridis")


def edit_comparison(result, labels=None, *, size: float = 2.0, title: str | None = None) -> Figure:
    """Source then targets of an `EditResult` (or any object with `.images` and `.prompts`), captioned."""
    captions = labels or [f"source: {result.prompts[0]}"] + list(result.prompts[1:])
    return image_row(result.images, captions, size=size, title=title)


def with_without(without, with_, *, size: float = 2.0, title: str | None = None) -> Figure:
    """The seed's Figs. 6-7 in one figure: the same edit without prompt-to-prompt (top row, plain generation
    from the shared latent) and with it (bottom row). Both are `EditResult`s of the same prompts."""
    return image_grid([without.images, with_.images], ["without p2p", "with p2p"],
                      [f"source: {without.prompts[0]}", *without.prompts[1:]], size=size, title=title)


def strength_curve(weights, values, *, label: str = "", ylabel: str = "measured strength", size=(4.0, 3.0)) -> Figure:
    """A line of a measured strength against reweighting weights (e.g. road bumpiness against `bumpy`'s weight)."""
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    ax.plot(list(weights), list(values), "o-", label=label or None)
    ax.set_xlabel("weight"), ax.set_ylabel(ylabel)
    if label:
        ax.legend()
    return fig
