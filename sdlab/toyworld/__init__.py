"""The toy world: a procedural, captioned 64x64 world whose ground truth is known.

It is the data the shipped toy model learns and the yardstick that measures generations and edits.
"""

from .scene import (
    BACKGROUNDS,
    BUMPY_THRESHOLD,
    COLORS,
    GROUNDS,
    LAYOUT,
    OBJECTS,
    PATTERNS,
    PLACES,
    PREFIXES,
    STYLES,
    Scene,
    Thing,
    sample_scenes,
    vocabulary,
)
from .render import SHAPES, SIZE, object_mask, object_masks, render, render_many
from .evaluate import ObjectReading, Reading, analyze, evaluate, iou
from .export import STYLE_MIXES, export_imagefolder, write_imagefolder

__all__ = [
    "BACKGROUNDS", "BUMPY_THRESHOLD", "COLORS", "GROUNDS", "LAYOUT", "OBJECTS", "PATTERNS", "PLACES", "PREFIXES", "STYLES",
    "SHAPES", "SIZE", "Scene", "Thing", "object_mask", "object_masks", "render", "render_many", "sample_scenes", "vocabulary",
    "ObjectReading", "Reading", "analyze", "evaluate", "iou", "STYLE_MIXES", "export_imagefolder", "write_imagefolder",
]
