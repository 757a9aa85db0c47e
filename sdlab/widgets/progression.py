"""The progression explorer: a step slider over a finetuning run's validation images.

    explorer = ProgressionExplorer("runs/06_finetuning/run")
    explorer            # in a notebook: the widget
    explorer.step = 150; explorer.refresh(); explorer.image

It reads what `sdlab.finetune` writes under `RUN/validation/` (`metrics.csv`, one row per image, and the PNGs
it names; see `sdlab.finetune.validation`), again on every refresh, so a run that is still training gains
steps as it validates (the reload button rereads). Each panel is one prompt's first seed at the chosen step,
with its measured fidelity and style where the run measured them.
"""

from __future__ import annotations

import math
from pathlib import Path

import ipywidgets as widgets
from PIL import Image

from ..finetune.validation import read_csv
from .base import Explorer
from .images import panels, png, put

KINDS = (("all", None), ("prompts", "prompt"), ("probes", "probe"))


class ProgressionExplorer(Explorer):
    """A finetuning run folder -> its validation images at one step (`step=None`: the latest)."""

    debounce = 0.05

    def __init__(self, run, *, step: int | None = None, kind: str | None = None, size: int = 112,
                 columns: int | None = None):
        super().__init__()
        self.run = Path(run)
        self.step, self.kind, self.size, self.columns = step, kind, size, columns
        self.steps: list[int] = []
        """The validated steps found at the last refresh."""
        self.rows: list[dict] = []
        """The `metrics.csv` rows shown (first seed of each prompt at `step`)."""
        self.image: bytes | None = None
        """PNG: one panel per prompt, captioned with the prompt and its measurements."""
        self.shown_step: int | None = None

        self.step_box = widgets.SelectionSlider(options=[0], description="step", continuous_update=False,
                                                disabled=True)
        self.step_box.add_class("sdlab-step")
        self.step_box.observe(self._step_changed, names="value")
        kind_box = self.control("kind", widgets.ToggleButtons(options=KINDS, description="show"))
        kind_box.add_class("sdlab-kind")
        reload = widgets.Button(description="reload", tooltip="reread the run folder (a run still training)")
        reload.on_click(lambda _: self.request())
        self.image_box = widgets.Image(format="png")
        self.image_box.add_class("sdlab-image")
        self.widget = widgets.VBox([widgets.HBox([self.step_box, reload]), kind_box, self.status, self.image_box])
        self.widget.add_class("sdlab-progression-explorer")
        self.refresh()

    def _step_changed(self, change):
        if not self.quiet() and not self.step_box.disabled:
            self.step = change["new"]
            self.request()

    def compute(self) -> None:
        folder = self.run / "validation"
        rows = read_csv(folder / "metrics.csv")
        if not rows:
            raise FileNotFoundError(f"no validation images in {folder} yet: finetune with validate_every > 0 "
                                    "(notebook 06 makes such a run), or wait for the run's first validation")
        if self.kind not in dict(KINDS).values():
            raise ValueError(f"kind must be None, 'prompt' or 'probe'; got {self.kind!r}")
        self.steps = sorted({r["step"] for r in rows})
        step = self.steps[-1] if self.step is None else self.step
        if step not in self.steps:
            raise ValueError(f"step {step!r} was not validated in {self.run}; its validated steps are "
                             f"{', '.join(map(str, self.steps))}")
        shown = [r for r in rows if r["step"] == step and r.get("sample", 0) == 0
                 and (self.kind is None or r["kind"] == self.kind)]
        if not shown:
            raise ValueError(f"the run has no {self.kind} images at step {step}")
        images = []
        for r in shown:
            with Image.open(folder / r["image"]) as img:
                images.append(img.convert("RGB"))
        captions = []
        for r in shown:
            caption = ("[probe] " if r["kind"] == "probe" else "") + r["prompt"]
            if not math.isnan(r.get("fidelity", math.nan)):
                caption += f" · fidelity {r['fidelity']:.2f} style {r.get('style', math.nan):.2f}"
            captions.append(caption)
        self.rows, self.shown_step = shown, step
        self.image = png(panels(images, captions, size=self.size, columns=self.columns))

    def show(self) -> None:
        with self.quietly():
            if self.steps:
                if list(self.step_box.options) != self.steps:
                    self.step_box.options = self.steps
                self.step_box.disabled = False
                if self.error is None:
                    self.step_box.value = self.shown_step
        put(self.image_box, self.image)
