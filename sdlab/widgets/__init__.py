"""ipywidgets explorers: attention maps, prompt-to-prompt edits, a finetuning run's progression.

    from sdlab.widgets import AttentionExplorer, EditExplorer, ProgressionExplorer
    EditExplorer(pipe, "a red cat on grass", "a red dog on grass")   # a notebook cell that ends with it shows it

Each explorer holds its state in plain attributes and its results in `image` (PNG bytes) and `error` (sdlab's
message, or None): set attributes, call `refresh()`, read them, no browser needed. In a notebook the controls
set the same attributes and refresh in a worker thread, one computation at a time (see `base`).
"""

from .attention import AttentionExplorer
from .base import Explorer, check_prompts
from .edit import MODES, EditExplorer, format_weights, parse_weights, parse_words
from .progression import ProgressionExplorer

__all__ = ["AttentionExplorer", "EditExplorer", "Explorer", "MODES", "ProgressionExplorer", "check_prompts",
           "format_weights", "parse_weights", "parse_words"]
