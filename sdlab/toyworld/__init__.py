"""The toy world: a procedural, captioned 64x64 world whose ground truth is known.

It is the data the shipped toy model learns and the yardstick that measures generations and edits.
"""

from .scene import (
    BACKGROUNDS,
    BUMPY_THRESHOLD,
    COLORS,
    OBJECTS,
    PATTERNS,
    PLACES,
    PREFIXES,
    STYLES,
    Scene,
    sample_scenes,
    vocabulary,
)
from .render import SHAPES, SIZE, object_mask, render, render_many
from .evaluate import Reading, analyze, evaluate, iou
from .export import STYLE_MIXES, export_imagefolder, write_imagefolder

__all__ = [
    "BACKGROUNDS", "BUMPY_THRESHOLD", "COLORS", "OBJECTS", "PATTERNS", "PLACES", "PREFIXES", "STYLES",
    "SHAPES", "SIZE", "Scene", "object_mask", "render", "render_many", "sample_scenes", "vocabulary",
    "Reading", "analyze", "evaluate", "iou", "STYLE_MIXES", "export_imagefolder", "write_imagefolder",
]
