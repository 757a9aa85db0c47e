"""Rendering a `Scene` to a 64x64 RGB picture, deterministically.

Everything is drawn at 4x (256x256) with PIL and box-filtered down, so edges are anti-aliased the same way
every time. The object is one color (its pattern a darker shade of it); backgrounds have their own
textures; the road's bumps are a graded texture whose strength is `Scene.bumpiness`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .scene import BACKGROUNDS, COLORS, Scene

SIZE = 64
"""Side of a toy-world picture in pixels."""
_S = 4  # supersampling factor
PATTERN_SHADE = 0.6
"""A striped or dotted object's pattern is its color times this factor."""
PASTEL = 0.55
"""The creature style mixes the background this much with white."""
OUTLINE = (15, 15, 15)

Shape = list  # list of ("poly", [(x, y), ...]) or ("ellipse", (cx, cy, rx, ry)) in the unit box [-0.5, 0.5]^2


def _star(n=5, outer=0.5, inner=0.21):
    pts = []
    for i in range(2 * n):
        r = outer if i % 2 == 0 else inner
        a = -math.pi / 2 + i * math.pi / n
        pts.append((r * math.cos(a), r * math.sin(a) + 0.04))
    return pts


SHAPES: dict[str, Shape] = {
    "cat": [
        ("ellipse", (0.0, 0.1, 0.38, 0.36)),
        ("poly", [(-0.38, -0.02), (-0.32, -0.5), (-0.04, -0.2)]),
        ("poly", [(0.38, -0.02), (0.32, -0.5), (0.04, -0.2)]),
    ],
    "dog": [
        ("ellipse", (0.0, -0.02, 0.28, 0.38)),
        ("ellipse", (-0.34, 0.06, 0.15, 0.3)),
        ("ellipse", (0.34, 0.06, 0.15, 0.3)),
        ("ellipse", (0.0, 0.3, 0.16, 0.14)),
    ],
    "fish": [
        ("ellipse", (0.1, 0.0, 0.38, 0.25)),
        ("poly", [(-0.16, 0.0), (-0.5, -0.27), (-0.5, 0.27)]),
    ],
    "bird": [
        ("ellipse", (0.0, 0.12, 0.17, 0.15)),
        ("poly", [(0.02, 0.1), (-0.5, -0.34), (-0.32, -0.38), (-0.08, -0.02)]),
        ("poly", [(-0.02, 0.1), (0.5, -0.34), (0.32, -0.38), (0.08, -0.02)]),
        ("poly", [(-0.09, 0.22), (0.0, 0.46), (0.09, 0.22)]),
    ],
    "house": [
        ("poly", [(-0.38, -0.04), (0.38, -0.04), (0.38, 0.5), (-0.38, 0.5)]),
        ("poly", [(-0.5, 0.0), (0.0, -0.5), (0.5, 0.0)]),
    ],
    "tree": [
        ("poly", [(-0.09, 0.2), (0.09, 0.2), (0.09, 0.5), (-0.09, 0.5)]),
        ("poly", [(-0.42, 0.28), (0.0, -0.5), (0.42, 0.28)]),
    ],
    "car": [
        ("poly", [(-0.5, -0.06), (0.5, -0.06), (0.5, 0.22), (-0.5, 0.22)]),
        ("poly", [(-0.3, -0.04), (-0.18, -0.34), (0.2, -0.34), (0.32, -0.04)]),
        ("ellipse", (-0.27, 0.24, 0.14, 0.14)),
        ("ellipse", (0.27, 0.24, 0.14, 0.14)),
    ],
    "star": [("poly", _star())],
}
"""Silhouettes of the objects in a unit box centred on the object (y points down)."""


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, cx: float, cy: float, size: float, fill=255):
    def to_px(x, y):
        return ((cx + x * size) * _S, (cy + y * size) * _S)

    for kind, geom in shape:
        if kind == "poly":
            draw.polygon([to_px(x, y) for x, y in geom], fill=fill)
        else:
            ex, ey, rx, ry = geom
            x0, y0 = to_px(ex - rx, ey - ry)
            x1, y1 = to_px(ex + rx, ey + ry)
            draw.ellipse([x0, y0, x1, y1], fill=fill)


def object_mask(scene: Scene, scale: int = 1) -> np.ndarray:
    """The object's silhouette as a float array in [0, 1] of shape (64*scale, 64*scale) (ground truth)."""
    big = Image.new("L", (SIZE * _S, SIZE * _S), 0)
    _draw_shape(ImageDraw.Draw(big), SHAPES[scene.object], scene.x, scene.y, scene.size)
    side = SIZE * scale
    return np.asarray(big.resize((side, side), Image.BOX), dtype=np.float32) / 255.0


def background_color(scene: Scene) -> np.ndarray:
    """The background's base color in this scene's style (pastel for creatures)."""
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    if scene.style == "creature":
        base = (1 - PASTEL) * base + PASTEL * 255.0
    return base


def _background(scene: Scene, rng: np.random.RandomState) -> np.ndarray:
    n = SIZE * _S
    img = np.empty((n, n, 3), dtype=np.float32)
    img[:] = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    yy = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None, None]
    layer = Image.new("L", (n, n), 128)
    draw = ImageDraw.Draw(layer)
    bg = scene.background
    if bg == "sky":
        img += (yy - 0.5) * np.array([50, 35, 12], dtype=np.float32)
    elif bg == "grass":
        for _ in range(220):
            x, y = rng.uniform(0, n, 2)
            h = rng.uniform(6, 16)
            draw.line([(x, y), (x + rng.uniform(-3, 3), y - h)], fill=int(rng.choice([90, 170])), width=3)
    elif bg in ("sand", "snow"):
        amp = 10 if bg == "sand" else 5
        noise = rng.uniform(-amp, amp, (n // 8, n // 8)).astype(np.float32)
        img += np.kron(noise, np.ones((8, 8), dtype=np.float32))[:, :, None]
    elif bg == "night":
        for _ in range(14):
            x, y = rng.uniform(4, n - 4, 2)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=255)
    elif bg == "road":
        y_line = rng.uniform(0.7, 0.85) * n
        for x in range(0, n, 48):
            draw.rectangle([x, y_line - 3, x + 26, y_line + 3], fill=255)
        bumps = int(round(40 * scene.bumpiness))
        for _ in range(bumps):
            x, y = rng.uniform(0, n, 2)
            rx, ry = rng.uniform(10, 18), rng.uniform(6, 10)
            draw.ellipse([x - rx, y - ry, x + rx, y], fill=128 + int(70 * scene.bumpiness))
            draw.ellipse([x - rx, y, x + rx, y + ry], fill=128 - int(70 * scene.bumpiness))
    delta = np.asarray(layer, dtype=np.float32)[:, :, None] - 128.0
    if bg == "night":
        img += delta / 127.0 * (255.0 - img)
    elif bg == "road":
        line = np.asarray(layer, dtype=np.float32) == 255
        img += np.where(line[:, :, None], 150.0, delta * 0.5)
    else:
        img += delta * 0.35
    if scene.style == "creature":
        img = (1 - PASTEL) * img + PASTEL * 255.0
    return img


def _pattern(scene: Scene) -> np.ndarray:
    """1 where the object's pattern darkens it, at 4x resolution."""
    n = SIZE * _S
    layer = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(layer)
    period = 8 * _S
    if scene.pattern == "striped":
        x0 = scene.x * _S - period / 2
        for k in range(-8, 9):
            left = x0 + k * period
            draw.rectangle([left, 0, left + 3 * _S - 1, n], fill=255)
    elif scene.pattern == "dotted":
        for i in range(-5, 6):
            for j in range(-5, 6):
                cx = scene.x * _S + i * period + (period / 2 if j % 2 else 0)
                cy = scene.y * _S + j * period * 0.87
                r = 2.0 * _S
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    return np.asarray(layer, dtype=np.float32)[:, :, None] / 255.0


def _eyes(draw: ImageDraw.ImageDraw, scene: Scene):
    s = scene.size
    for side in (-1, 1):
        cx, cy = (scene.x + side * 0.14 * s) * _S, (scene.y - 0.02 * s) * _S
        r, p = 0.095 * s * _S, 0.05 * s * _S
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 250, 250))
        draw.ellipse([cx - p, cy - p + r * 0.25, cx + p, cy + p + r * 0.25], fill=OUTLINE)


def render(scene: Scene) -> Image.Image:
    """Draw `scene` as a 64x64 RGB `PIL.Image`; the same scene always gives the same pixels."""
    rng = np.random.RandomState(scene.texture_seed % (2**32))
    n = SIZE * _S
    img = _background(scene, rng)
    silhouette = Image.new("L", (n, n), 0)
    _draw_shape(ImageDraw.Draw(silhouette), SHAPES[scene.object], scene.x, scene.y, scene.size)
    mask = np.asarray(silhouette, dtype=np.float32)[:, :, None] / 255.0
    color = np.array(COLORS[scene.color], dtype=np.float32)
    obj = color * (1.0 - (1.0 - PATTERN_SHADE) * _pattern(scene))
    if scene.style == "watercolor":
        # pigment bleeds around the shape, edges soften, paper grain shows through
        halo = np.asarray(silhouette.filter(ImageFilter.GaussianBlur(5 * _S)), dtype=np.float32)[:, :, None] / 255.0
        img = img + (color - img) * np.clip(halo * 1.2, 0, 0.55)
        mask = np.asarray(silhouette.filter(ImageFilter.GaussianBlur(0.8 * _S)), dtype=np.float32)[:, :, None] / 255.0
        grain = np.kron(rng.uniform(0.9, 1.1, (n // 4, n // 4)), np.ones((4, 4)))[:, :, None]
        obj = obj * grain
    if scene.style == "creature":
        ring = silhouette.filter(ImageFilter.MaxFilter(2 * 2 * _S + 1))
        ring_mask = np.asarray(ring, dtype=np.float32)[:, :, None] / 255.0
        img = img * (1 - ring_mask) + np.array(OUTLINE, dtype=np.float32) * ring_mask
    img = img * (1 - mask) + obj * mask
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if scene.style == "creature":
        _eyes(ImageDraw.Draw(out), scene)
    return out.resize((SIZE, SIZE), Image.BOX)


def render_many(scenes) -> list[Image.Image]:
    return [render(s) for s in scenes]
