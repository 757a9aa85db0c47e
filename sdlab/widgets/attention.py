"""The attention explorer: a prompt's picture, which pixels each word drives, and how the picture segments.

    explorer = AttentionExplorer(pipe, "a red cat on grass", steps=20)
    explorer            # in a notebook: the widget
    explorer.word = "cat"; explorer.refresh(); explorer.image   # PNG bytes, for scripts and tests

The maps come from `sdlab.attention.capture` (cross-attention averaged over steps, heads and the layers at the
capture's default resolution, and the self-attention there); the capture is kept, so choosing another word
or another number of components redraws without generating again.
"""

from __future__ import annotations

import ipywidgets as widgets

from .. import align, viz
from ..attention import capture
from .base import Explorer, check_prompts
from .images import colorize, panels, png, put

EVERY_WORD = "every word"


class AttentionExplorer(Explorer):
    """Prompt, seed, steps and a word -> the picture and the word's cross-attention map over it (every word's
    with `word=None`), plus the top self-attention components."""

    def __init__(self, pipe, prompt: str = "a red cat on grass", *, seed: int = 0, steps: int = 20,
                 guidance: float = 7.5, word: str | None = None, components: int = 6, size: int = 128):
        super().__init__()
        self.pipe = pipe
        self.prompt, self.seed, self.steps, self.guidance = prompt, seed, steps, guidance
        self.word = word
        """The word whose map is shown (as the tokenizer reads it), or None for every word of the prompt."""
        self.components, self.size = components, size
        self.capture = None
        """The last `sdlab.attention.Capture`."""
        self.image: bytes | None = None
        """PNG: the picture, then the word's map laid over it (one panel per word with `word=None`)."""
        self.components_image: bytes | None = None
        """PNG: the top `components` SVD components of the self-attention maps."""
        self._captured = None

        text = dict(continuous_update=False, layout=widgets.Layout(width="32em"))
        prompt_box = self.control("prompt", widgets.Text(description="prompt", **text))
        seed = self.control("seed", widgets.IntSlider(min=0, max=999, description="seed", continuous_update=False))
        steps = self.control("steps", widgets.IntSlider(min=1, max=100, description="steps", continuous_update=False))
        self.word_box = widgets.Dropdown(description="word", options=[(EVERY_WORD, "")])
        self._offer_words()
        self.control("word", self.word_box, lambda word: word or "", lambda value: value or None)
        comps = self.control("components", widgets.IntSlider(min=1, max=12, description="components",
                                                               continuous_update=False))
        for box, name in ((prompt_box, "prompt"), (seed, "seed"), (steps, "steps"), (self.word_box, "word"),
                          (comps, "components")):
            box.add_class(f"sdlab-{name}")
        self.image_box = widgets.Image(format="png")
        self.image_box.add_class("sdlab-image")
        self.components_box = widgets.Image(format="png")
        self.components_box.add_class("sdlab-components")
        self.widget = widgets.VBox([
            prompt_box, widgets.HBox([seed, steps]), widgets.HBox([self.word_box, comps]),
            self.status, self.progress, self.image_box, widgets.HTML("<b>self-attention components</b>"),
            self.components_box,
        ])
        self.widget.add_class("sdlab-attention-explorer")
        self.refresh()

    def show_values(self) -> None:
        self._offer_words()
        super().show_values()

    def _offer_words(self, words=None) -> None:
        """The word menu: every word, the prompt's words, and the chosen word even if the prompt lacks it (the
        error then says so)."""
        if words is None:
            words = self.capture.words() if self.capture is not None else []
        options = [(EVERY_WORD, "")] + [(w, w) for w in dict.fromkeys(words)]  # "" stands for None: a Dropdown
        if self.word is not None and self.word not in words:                   # whose value is None shows nothing
            options.append((self.word, self.word))
        if list(self.word_box.options) != options:
            with self.quietly():
                self.word_box.options = options
                self.word_box.value = self.word or ""

    def compute(self) -> None:
        check_prompts(self.pipe, [self.prompt])
        self._offer_words([w for w, _ in align.words(self.pipe.tokenizer, self.prompt)])
        key = (self.prompt, self.seed, self.steps, self.guidance)
        if key != self._captured:
            with self.generating(self.pipe, self.steps, "capture"):
                self.capture = capture(self.pipe, self.prompt, seed=self.seed, steps=self.steps,
                                       guidance=self.guidance)
            self._captured = key
        cap, size = self.capture, self.size
        comps = cap.self_components(self.components)
        self.components_image = png(panels([colorize(c) for c in comps],
                                           [f"component {i + 1}" for i in range(len(comps))], size=size * 3 // 4))
        image = cap.images[0]
        maps = cap.word_maps() if self.word is None else {self.word: cap.word_map(self.word)}
        self.image = png(panels([image] + [viz.heat_overlay(image, m) for m in maps.values()],
                                [f"seed {self.seed}", *maps], size=size))

    def show(self) -> None:
        put(self.image_box, self.image)
        put(self.components_box, self.components_image)
