"""Controllers and the context manager that puts them into a UNet.

A controller is a small object that decides, at each denoising step, which attention layers it needs, and
computes their output when it does (`attend`). It never sees the pipeline: the loop (`sdlab.attention.run`)
tells it what the run looks like (`Run`) and when a step ends. `control(unet, controller, run)` installs
`ControlledProcessor`s on the layers the controller wants through `unet.set_attn_processor`, and restores
the UNet's own processors on exit, also when the run raises. One UNet serves one controller at a time.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .compiling import uncompiled
from .processor import SUPPORTED_PROCESSORS, ControlledProcessor, LayerInfo, describe_layers

_IN_USE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""UNets under control now -> the controller that holds them."""


@dataclass(frozen=True)
class Run:
    """What a controller may know about the run it serves."""

    prompts: tuple
    """The conditional batch, in order (for an edit: the source, then the targets)."""
    steps: int
    """Number of denoising steps (UNet evaluations) the scheduler takes."""
    latent_hw: tuple
    """(height, width) of the latent."""
    device: torch.device
    dtype: torch.dtype
    tokens: int = 77
    """Length of the text encoder's sequence: the keys of every cross-attention layer."""
    static: bool = False
    """The UNet is compiled (`sdlab.attention.compiling`): installed processors stay active at every step, and
    what changes between steps lives in tensors the controller updates in place (`StepTable`)."""
    n: int = field(init=False)
    """Number of prompts. A plain int, so code compiled in a UNet reads no prompt text (new prompts reuse the
    compiled graph)."""

    def __post_init__(self):
        object.__setattr__(self, "n", len(self.prompts))


class Controller:
    """Base class: subclasses choose layers (`wants`, `active`) and compute their attention (`attend`)."""

    run: Run | None = None
    step: int = 0

    def start(self, run: Run, layers: list[LayerInfo]) -> None:
        """Called once before the run, with every attention layer of the UNet."""
        self.run = run

    def wants(self, layer: LayerInfo) -> bool:
        """Whether to install a processor on `layer` for this run."""
        return False

    def active(self, layer: LayerInfo, step: int) -> bool:
        """Whether `layer` needs `attend` at `step`; inactive layers run their original processor. Not asked on a
        compiled UNet (`Run.static`), where every installed layer is active at every step."""
        return True

    def attend(self, layer: LayerInfo, q, k, v) -> torch.Tensor:
        """Attention output `(batch, heads, queries, head_dim)` from `(batch, heads, tokens, head_dim)` inputs."""
        raise NotImplementedError

    def step_end(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        """Called after the scheduler's step `step`; may return changed latents."""
        return latents

    def finish(self, images, output_type: str):
        """Called with the run's output (`output_type` as the pipeline returned it); may return changed images."""
        return images

    def cond_offset(self, layer: LayerInfo, batch: int) -> int:
        """Index of the first conditional row: the guidance batch is [unconditional..., conditional...]."""
        n = self.run.n
        if batch == 2 * n:
            return n
        if batch == n:
            return 0
        raise RuntimeError(f"{layer.name} got a batch of {batch} for {n} prompts; expected {n} or {2 * n}")

    # --- driven by `control` and the loop ---------------------------------------------------------------
    _processors: tuple = ()

    def set_step(self, step: int) -> None:
        self.step = step
        for proc in self._processors:
            proc.active = self.run.static or self.active(proc.layer, step)


class StepTable:
    """A value that changes between steps, for a compiled UNet: every step's value is stacked once per run
    (`table`, one row per distinct value) and `now` holds the current one, copied in place by `set(row)`, so the
    compiled graph reads one tensor whose storage never changes."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.now = table[0].clone()

    def set(self, row: int) -> None:
        self.now.copy_(self.table[row])


def check_unet(unet) -> list[LayerInfo]:
    """The UNet's attention layers, or a clear error if it has no cross-attention (no text conditioning)."""
    unet = uncompiled(unet)
    if not hasattr(unet, "attn_processors") or not hasattr(unet, "set_attn_processor"):
        raise TypeError(f"{type(unet).__name__} is not a diffusers UNet with attention processors")
    layers = describe_layers(unet)
    if not any(layer.is_cross for layer in layers):
        raise ValueError(
            f"this {type(unet).__name__} has no cross-attention layers, so no word steers any pixel: capture "
            "and prompt-to-prompt need a text-conditioned UNet (SD 1.x/2.x, SDXL, or the toy model)"
        )
    return layers


@contextmanager
def control(unet, controller: Controller, run: Run):
    """Install `controller` on `unet` for the duration of the `with` block; restore the original processors
    on exit and on any exception. Refuses a second controller on a UNet that is already controlled. A compiled
    `unet` gets the processors on the module it wraps (they run inside its graph)."""
    unet = uncompiled(unet)
    layers = check_unet(unet)
    holder = _IN_USE.get(unet)
    if holder is not None:
        raise RuntimeError(
            f"this UNet is already controlled by a running {type(holder).__name__}; finish that capture or edit "
            "before starting another on the same pipeline (or load a second pipeline)"
        )
    controller.start(run, layers)
    originals = unet.attn_processors
    chosen = {}
    for layer in layers:
        if controller.wants(layer):
            original = originals[layer.name + ".processor"]
            module = unet.get_submodule(layer.name)
            kind = type(original).__name__
            if kind not in SUPPORTED_PROCESSORS or getattr(module, "fused_projections", False):
                raise ValueError(
                    f"{layer.name} uses {kind}{' with fused projections' if kind in SUPPORTED_PROCESSORS else ''}, "
                    "which sdlab cannot take over; call `unet.set_default_attn_processor()` (or "
                    "`unet.unfuse_qkv_projections()`) first"
                )
            chosen[layer.name + ".processor"] = ControlledProcessor(original, layer, controller)
    _IN_USE[unet] = controller
    try:
        unet.set_attn_processor({**originals, **chosen})
        controller._processors = tuple(chosen.values())
        controller.set_step(0)
        yield controller
    finally:
        controller._processors = ()
        unet.set_attn_processor(dict(originals))
        del _IN_USE[unet]
