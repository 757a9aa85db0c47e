"""Panels for the explorers: images and maps laid side by side with a caption above each, as PNG bytes.

Composed with PIL rather than matplotlib: a row of a few 64x64 images costs milliseconds here against a few
hundred for a matplotlib figure, which matters when a widget refreshes on every change. Images are enlarged
with nearest-neighbour sampling, so every pixel the model drew stays a visible square.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from ..viz import to_array

GAP = 6
"""Pixels between panels."""


def colorize(values, cmap: str = "viridis") -> np.ndarray:
    """A 2-D map normalised to [0, 1] and colored: an (h, w, 3) float array."""
    m = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"colorize takes a 2-D map, got shape {m.shape}")
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    return colormaps[cmap](m)[..., :3]


def _font(size: int):
    return ImageFont.load_default(size=size)


def _caption_lines(caption: str, width: int, font) -> list[str]:
    chars = max(4, int(width / max(font.getlength("n"), 1)))
    return textwrap.wrap(caption, chars)[:3] if caption else []


def panels(images, captions=None, *, size: int = 128, columns: int | None = None, font_size: int = 11) -> Image.Image:
    """`images` (PIL images or (h, w, 3) arrays in [0, 1]) as a grid of `size`-pixel panels, `columns` wide
    (default: one row), each under its caption (up to three wrapped lines)."""
    images = list(images)
    if not images:
        raise ValueError("panels needs at least one image")
    captions = list(captions) if captions is not None else [""] * len(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    font = _font(font_size)
    lines = [_caption_lines(c, size, font) for c in captions]
    line_h = font_size + 3
    head = line_h * max(len(x) for x in lines)
    sheet = Image.new("RGB", (columns * size + (columns - 1) * GAP, rows * (head + size + GAP) - GAP), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, text) in enumerate(zip(images, lines)):
        x, y = (k % columns) * (size + GAP), (k // columns) * (head + size + GAP)
        for i, line in enumerate(text):
            draw.text((x, y + i * line_h), line, fill="black", font=font)
        array = (np.clip(to_array(image), 0, 1) * 255).round().astype(np.uint8)
        sheet.paste(Image.fromarray(array).convert("RGB").resize((size, size), Image.NEAREST), (x, y + head))
    return sheet


def png(image: Image.Image) -> bytes:
    """PNG bytes of a PIL image (what `ipywidgets.Image` shows)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def put(box, data: bytes | None) -> None:
    """Show PNG `data` in the `ipywidgets.Image` `box` at its own size (no image: the box is hidden)."""
    if data is None:
        box.layout.display = "none"
        return
    box.value = data
    box.width = str(int.from_bytes(data[16:20], "big"))  # the PNG header's width: one image pixel, one screen pixel
    box.layout.display = None
