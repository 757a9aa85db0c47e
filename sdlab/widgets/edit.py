"""The edit explorer: a source prompt and its prompt-to-prompt edit, side by side.

    explorer = EditExplorer(pipe, "a red cat on grass", "a red dog on grass")
    explorer            # in a notebook: the widget
    explorer.mode = "Refine"; explorer.target = "a red striped cat on grass"; explorer.refresh()
    explorer.image, explorer.error, explorer.result.edited_steps

The edit is built from the attributes by `make_edit` and run by `sdlab.p2p.edit`: `mode` picks Replace, Refine
or Reweight; `cross_steps` and `self_steps` are the fractions of the steps whose cross- and self-attention are
edited; `weights` scale words' attention (any mode; Replace and Refine then become `Reweight(weights,
base=...)`, and Reweight reweights the source prompt itself, so its target box is not used); `blend` names the
words whose pixels may change (`LocalBlend`), everything else stays the source's (in the latents; with
`blend_pixels` in the decoded pixels too, exactly), through the paper's mask or, with `blend_dilate`, one made at the
latent's resolution; `self_max_res` picks the layers whose self-attention is injected (the highest-resolution
self-attention holds the layout and the silhouette: injecting it keeps where the object stands, and its shape).
"""

from __future__ import annotations

import re

import ipywidgets as widgets

from .. import p2p
from ..attention.capture import default_level
from ..attention.processor import describe_layers
from .base import Explorer, check_prompts
from .images import panels, png, put

MODES = ("Replace", "Refine", "Reweight")


def self_attention_sizes(pipe) -> tuple[list[int], int]:
    """(the side of each self-attention map of `pipe` at its default size, largest first; the side of the largest
    maps the edits inject by default): what `self_max_res` picks from, the layers whose maps are at most that
    high."""
    latent = pipe.unet.config.sample_size
    latent = latent[0] if isinstance(latent, (list, tuple)) else latent
    layers = describe_layers(pipe.unet)
    side = lambda layer: layer.map_shape((latent, latent))[0]  # noqa: E731
    base = default_level(layers)  # the edits inject this level and the lower ones (`EditController.start`)
    default = next(side(layer) for layer in layers if layer.level == base)
    return sorted({side(layer) for layer in layers if not layer.is_cross}, reverse=True), default


def _none_from_menu(value):
    """A control's -1 as None (the default), any other value as it is."""
    return None if value == -1 else value


def parse_weights(value) -> dict:
    """{word: weight} from a dict, or from text like "red=2, grass=0.5" (what the weights box holds)."""
    if value is None or isinstance(value, dict):
        return dict(value or {})
    if not isinstance(value, str):
        raise TypeError(f"weights must be a dict word -> weight or text like 'red=2, grass=0.5'; got {value!r}")
    out = {}
    for item in filter(None, (part.strip() for part in re.split(r"[,;]", value))):
        match = re.fullmatch(r"(.+?)\s*[=:]\s*(\S+)", item)
        if not match:
            raise ValueError(f"weights are word=weight pairs like 'red=2, grass=0.5'; cannot read {item!r}")
        word, number = match.groups()
        try:
            out[word] = float(number)
        except ValueError:
            raise ValueError(f"the weight of {word!r} must be a number such as 2.0, got {number!r}") from None
    return out


def format_weights(value) -> str:
    """The weights box's text for a dict (text stays as it is)."""
    if isinstance(value, dict):
        return ", ".join(f"{word}={weight:g}" for word, weight in value.items())
    return value or ""


def parse_words(value) -> list[str]:
    """Words from a list, or from text separated by spaces or commas ("cat dog")."""
    if value is None:
        return []
    if isinstance(value, str):
        return [w for w in re.split(r"[\s,;]+", value) if w]
    return list(value)


class EditExplorer(Explorer):
    """Source and target prompts, an edit and its schedules -> the source and the edited target side by side."""

    def __init__(self, pipe, source: str = "a red cat on grass", target: str = "a red dog on grass", *,
                 mode: str = "Replace", cross_steps: float = p2p.DEFAULT_CROSS, self_steps: float = p2p.DEFAULT_SELF,
                 weights: dict | str | None = None, blend: list | str = "", blend_pixels: bool = False,
                 blend_dilate: int | None = None, self_max_res: int | None = None, seed: int = 0, steps: int = 20,
                 guidance: float = 7.5, size: int = 192):
        super().__init__()
        self.pipe = pipe
        self.source, self.target, self.mode = source, target, mode
        self.cross_steps, self.self_steps = cross_steps, self_steps
        self.weights = weights or {}
        """{word: weight} or text "red=2, grass=0.5"; words of the target (of the source for Reweight)."""
        self.blend = blend
        """LocalBlend words, a list or text "cat dog"; empty: no LocalBlend."""
        self.blend_pixels = blend_pixels
        """`LocalBlend(..., pixels=True)`: outside the blend mask the target's decoded pixels are the source's."""
        self.blend_dilate = blend_dilate
        """`LocalBlend(..., dilate=...)`: None, the paper's mask (the map max-pooled one cell each way); a number, the
        mask made at the latent's resolution, dilated that many latent pixels. Its slider shows None as -1."""
        self.self_max_res = self_max_res
        """The edit's `self_max_res`: self-attention injected in the layers whose maps are at most this high; None,
        the default (the capture resolution and below, as the paper's 16x16 and 8x8 on SD at 512). Its menu shows
        None as -1."""
        self.seed, self.steps, self.guidance, self.size = seed, steps, guidance, size
        self.edit = None
        """The sdlab edit of the last good computation."""
        self.result = None
        """Its `sdlab.p2p.EditResult` (images, prompts, the steps each window edited)."""
        self.image: bytes | None = None
        """PNG: the source, then the edited target."""

        text = dict(continuous_update=False, layout=widgets.Layout(width="32em"))
        fraction = dict(min=0.0, max=1.0, step=0.05, continuous_update=False, readout_format=".2f")
        boxes = {
            "source": widgets.Text(description="source", **text),
            "target": widgets.Text(description="target", **text),
            "mode": widgets.ToggleButtons(options=MODES, description="edit"),
            "cross_steps": widgets.FloatSlider(description="cross steps", **fraction),
            "self_steps": widgets.FloatSlider(description="self steps", **fraction),
            "self_max_res": self._self_menu(pipe),
            "weights": widgets.Text(description="weights", placeholder="word=weight, e.g. red=2", **text),
            "blend": widgets.Text(description="local blend", placeholder="words that may change, e.g. cat dog", **text),
            "blend_pixels": widgets.Checkbox(description="blend pixels too", indent=False),
            "blend_dilate": widgets.IntSlider(min=-1, max=8, description="blend dilate", continuous_update=False,
                                              tooltip="-1: the paper's mask (the map max-pooled one cell each way); "
                                                      "k >= 0: made at the latent's resolution, k latent pixels wider"),
            "seed": widgets.IntSlider(min=0, max=999, description="seed", continuous_update=False),
            "steps": widgets.IntSlider(min=1, max=100, description="steps", continuous_update=False),
        }
        self.boxes = boxes
        convert = {"cross_steps": (None, lambda v: round(v, 6)), "self_steps": (None, lambda v: round(v, 6)),
                   "weights": (format_weights, None), "blend": (lambda v: v if isinstance(v, str) else " ".join(v), None),
                   "blend_dilate": (lambda v: -1 if v is None else v, _none_from_menu),
                   "self_max_res": (self._self_option, _none_from_menu)}
        for name, box in boxes.items():
            self.control(name, box, *convert.get(name, (None, None)))
            box.add_class(f"sdlab-{name.replace('_', '-')}")
        self.image_box = widgets.Image(format="png")
        self.image_box.add_class("sdlab-image")
        self.widget = widgets.VBox([
            boxes["source"], boxes["target"], boxes["mode"],
            widgets.HBox([boxes["cross_steps"], boxes["self_steps"], boxes["self_max_res"]]), boxes["weights"],
            widgets.HBox([boxes["blend"], boxes["blend_pixels"], boxes["blend_dilate"]]),
            widgets.HBox([boxes["seed"], boxes["steps"]]), self.status, self.progress, self.image_box,
        ])
        self.widget.add_class("sdlab-edit-explorer")
        self.refresh()

    @staticmethod
    def _self_menu(pipe):
        sizes, default = self_attention_sizes(pipe)
        options = [(f"default ({default}x{default})", -1)] + [(f"{side}x{side}", side) for side in sizes]
        return widgets.Dropdown(description="self up to", options=options,
                                tooltip="self-attention injected in the layers whose maps are at most this high")

    def _self_option(self, value) -> int:
        """The menu's value for `self_max_res` (None: -1), added to the menu if a script set another."""
        value = -1 if value is None else value
        box = self.boxes["self_max_res"]
        if value not in [v for _, v in box.options]:
            box.options = [*box.options, (f"{value}x{value}", value)]
        return value

    def targets(self) -> list[str]:
        return [self.source] if self.mode == "Reweight" else [self.target]

    def make_edit(self):
        """The sdlab edit the attributes describe (a clear error for a mode, weight or word it cannot take)."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        words = parse_words(self.blend)
        common = dict(cross_steps=self.cross_steps, self_steps=self.self_steps, self_max_res=self.self_max_res,
                      local_blend=p2p.LocalBlend(words, pixels=bool(self.blend_pixels), dilate=self.blend_dilate)
                      if words else None)
        weights = parse_weights(self.weights)
        if self.mode == "Reweight":
            return p2p.Reweight(weights, **common)
        base = (p2p.Replace if self.mode == "Replace" else p2p.Refine)(**common)
        return p2p.Reweight(weights, base=base) if weights else base

    def compute(self) -> None:
        targets = self.targets()
        check_prompts(self.pipe, [self.source, *targets])
        edit = self.make_edit()
        with self.generating(self.pipe, self.steps, self.mode.lower()):
            result = p2p.edit(self.pipe, self.source, targets, edit, seed=self.seed, steps=self.steps,
                              guidance=self.guidance)
        self.edit, self.result = edit, result
        label = self.mode.lower() + (" + reweight" if self.mode != "Reweight" and isinstance(edit, p2p.Reweight) else "")
        self.image = png(panels(result.images, [f"source: {self.source}", f"{label}: {targets[0]}"], size=self.size))

    def show(self) -> None:
        self.boxes["target"].disabled = self.mode == "Reweight"
        put(self.image_box, self.image)
