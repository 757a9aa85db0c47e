"""Rendering a `Scene` to a 64x64 RGB picture, deterministically.

Everything is drawn at 4x (256x256) with PIL and box-filtered down, so edges are anti-aliased the same way
every time. Each object is one color (its pattern a darker shade of it); backgrounds have their own
textures; the road's bumps are graded bumps whose number and contrast grow with `Scene.bumpiness`. Unnamed
detail (clouds, flowers, rocks, sparkles and a moon) is achromatic, kept 3 px away from the objects, and
placed from the scene's `texture_seed`, so the same scene always gets the same detail.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from .scene import BACKGROUNDS, COLORS, Scene, Thing

SIZE = 64
"""Side of a toy-world picture in pixels."""
_S = 4  # supersampling factor
PATTERN_SHADE = 0.6
"""A striped or dotted object's pattern is its color times this factor."""
PASTEL = 0.55
"""On the dark grounds (`PASTEL_GROUNDS`) the creature style mixes the whole picture this much with white."""
PASTEL_GROUNDS = ("road", "night")
"""Backgrounds too dark for the creature style's black outline to stand out: only these turn pastel. Elsewhere
the creature style changes the objects alone (eyes and outline), so finetuning on creatures does not first learn
a global shift to white that washes the colors out of every prompt (measured: notebook 06's closing notes)."""
OUTLINE = (15, 15, 15)
OUTLINE_WIDTH = 2
"""Width in pixels of the creature style's outline, drawn outside the silhouette (0: none)."""
BUMPS = 28
"""Bumps on a road of `Scene.bumpiness` 1 (fewer in proportion below)."""
BUMP_CONTRAST = 50
"""Luminance by which a bump of `Scene.bumpiness` 1 lights its upper half and shades its lower half."""

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


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, cx: float, cy: float, size: float, fill=255, facing=1):
    def to_px(x, y):
        return ((cx + facing * x * size) * _S, (cy + y * size) * _S)

    for kind, geom in shape:
        if kind == "poly":
            draw.polygon([to_px(x, y) for x, y in geom], fill=fill)
        else:
            ex, ey, rx, ry = geom
            (x0, y0), (x1, y1) = to_px(ex - rx, ey - ry), to_px(ex + rx, ey + ry)
            draw.ellipse([min(x0, x1), y0, max(x0, x1), y1], fill=fill)


def _silhouette(thing: Thing) -> Image.Image:
    """One object's silhouette at 4x, as an "L" image."""
    big = Image.new("L", (SIZE * _S, SIZE * _S), 0)
    _draw_shape(ImageDraw.Draw(big), SHAPES[thing.object], thing.x, thing.y, thing.size, facing=thing.facing)
    return big


def object_masks(scene: Scene, scale: int = 1) -> list[np.ndarray]:
    """Each object's silhouette (caption order) as a float array in [0, 1] of shape (64*scale, 64*scale)."""
    side = SIZE * scale
    return [
        np.asarray(_silhouette(t).resize((side, side), Image.BOX), dtype=np.float32) / 255.0 for t in scene.things
    ]


def object_mask(scene: Scene, scale: int = 1) -> np.ndarray:
    """The silhouette of all the scene's objects as a float array in [0, 1] of shape (64*scale, 64*scale)."""
    return np.maximum.reduce(object_masks(scene, scale))


def pastel(scene: Scene) -> float:
    """How much `scene` is mixed with white: `PASTEL` for creatures on `PASTEL_GROUNDS`, else 0."""
    return PASTEL if scene.style == "creature" and scene.background in PASTEL_GROUNDS else 0.0


def background_color(scene: Scene) -> np.ndarray:
    """The background's base color in this scene's style (pastel for creatures on dark grounds)."""
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    return (1 - pastel(scene)) * base + pastel(scene) * 255.0


def _texture(bg: str, scene: Scene, rng: np.random.RandomState) -> np.ndarray:
    """The background `bg` filled over the whole picture at 4x, with its texture (float RGB)."""
    n = SIZE * _S
    img = np.empty((n, n, 3), dtype=np.float32)
    img[:] = np.array(BACKGROUNDS[bg], dtype=np.float32)
    yy = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None, None]
    layer = Image.new("L", (n, n), 128)
    draw = ImageDraw.Draw(layer)
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
        b = scene.bumpiness
        top = scene.horizon * _S
        for _ in range(int(round(BUMPS * b * (1 - top / n)))):  # a bump: lit upper half, shaded lower half
            x, y = rng.uniform(0, n), rng.uniform(top, n)  # on the road, below any horizon
            rx, ry = rng.uniform(12, 22), rng.uniform(7, 11)
            draw.ellipse([x - rx, y - ry, x + rx, y], fill=128 + int(BUMP_CONTRAST * b))
            draw.ellipse([x - rx, y, x + rx, y + ry], fill=128 - int(BUMP_CONTRAST * b))
    delta = np.asarray(layer, dtype=np.float32)[:, :, None] - 128.0
    if bg == "night":
        img += delta / 127.0 * (255.0 - img)
    elif bg == "road":
        line = np.asarray(layer, dtype=np.float32) == 255
        img += np.where(line[:, :, None], 150.0, delta)
    else:
        img += delta * 0.35
    return img


def _background(scene: Scene, rng: np.random.RandomState) -> np.ndarray:
    """The background at 4x: its texture, the sky above the horizon if there is one, and the detail."""
    img = _texture(scene.background, scene, rng)
    if scene.horizon:
        rows = (np.arange(SIZE * _S, dtype=np.float32)[:, None, None] + 0.5) / _S
        above = np.clip(scene.horizon - rows + 0.5, 0.0, 1.0)
        img = above * _texture("sky", scene, rng) + (1 - above) * img
    if scene.details:
        img = _details(img, scene)
    return (1 - pastel(scene)) * img + pastel(scene) * 255.0


DETAIL = {
    "cloud": (248, 250, 252),
    "flower": (250, 250, 245),
    "rock": (118, 116, 112),
    "sparkle": (250, 250, 250),
    "moon": (240, 236, 212),
}
"""Colors of the unnamed detail: all achromatic (no object color), so it never reads as an object."""


def _details(img: np.ndarray, scene: Scene) -> np.ndarray:
    """`scene.details` pieces of detail, each chosen by where it lands (sky: a cloud; grass: a flower; sand,
    snow: a rock; night: a moon first, then sparkles; a road has only its lane line and bumps), never within
    3 px of an object nor on another piece."""
    n = SIZE * _S
    rng = np.random.RandomState((scene.texture_seed + 7919) % (2**32))
    near = ndimage.binary_dilation(object_mask(scene) > 0, iterations=3)
    taken = np.kron(near, np.ones((_S, _S), dtype=bool))
    out = img.copy()
    placed = 0
    for _ in range(40):  # tries
        if placed == scene.details:
            break
        x, y = rng.uniform(4, 60) * _S, rng.uniform(4, 60) * _S
        sky = scene.background == "sky" or (scene.horizon and y < scene.horizon * _S - 6 * _S)
        if scene.background == "night":
            kind = "moon" if placed == 0 else "sparkle"
        elif sky:
            kind = "cloud"
        elif scene.background == "road" or (scene.horizon and y < scene.horizon * _S + 4 * _S):
            continue  # a road's own marks are its lane line and bumps; nothing sits on the horizon line
        else:
            kind = "flower" if scene.background == "grass" else "rock"
        x0, y0 = int(x) - 14 * _S, int(y) - 14 * _S  # every piece fits in a 28 px square around (x, y)
        piece = Image.new("L", (28 * _S, 28 * _S), 0)
        _draw_detail(ImageDraw.Draw(piece), kind, x - x0, y - y0, rng)
        mask = np.zeros((n, n), dtype=bool)
        local = np.asarray(piece) > 0
        ys, xs = np.nonzero(local)
        ys, xs = ys + y0, xs + x0
        inside = (ys >= 0) & (ys < n) & (xs >= 0) & (xs < n)
        mask[ys[inside], xs[inside]] = True
        if (mask & taken).any():
            continue
        taken |= mask
        out[mask] = DETAIL[kind]
        placed += 1
    return out


def _draw_detail(draw: ImageDraw.ImageDraw, kind: str, x: float, y: float, rng: np.random.RandomState):
    if kind == "cloud":
        w = rng.uniform(4, 7) * _S
        for dx in (-w, 0.0, w):
            r = rng.uniform(2.2, 3.2) * _S
            draw.ellipse([x + dx - r * 1.3, y - r, x + dx + r * 1.3, y + r], fill=255)
    elif kind == "flower":
        for a in range(5):
            ang = a * 2 * math.pi / 5
            px, py = x + 1.6 * _S * math.cos(ang), y + 1.6 * _S * math.sin(ang)
            draw.ellipse([px - 1.3 * _S, py - 1.3 * _S, px + 1.3 * _S, py + 1.3 * _S], fill=255)
    elif kind == "rock":
        rx, ry = rng.uniform(3, 4.5) * _S, rng.uniform(2, 3) * _S
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=255)
    elif kind == "moon":
        r = rng.uniform(3.5, 5) * _S
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    else:  # sparkle: a four-pointed star
        r, w = rng.uniform(2.5, 3.5) * _S, 0.6 * _S
        draw.polygon([(x, y - r), (x + w, y - w), (x + r, y), (x + w, y + w), (x, y + r), (x - w, y + w),
                      (x - r, y), (x - w, y - w)], fill=255)


def _pattern(thing: Thing) -> np.ndarray:
    """1 where the object's pattern darkens it, at 4x resolution."""
    n = SIZE * _S
    layer = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(layer)
    period = 8 * _S
    if thing.pattern == "striped":
        x0 = thing.x * _S - period / 2
        for k in range(-8, 9):
            left = x0 + k * period
            draw.rectangle([left, 0, left + 3 * _S - 1, n], fill=255)
    elif thing.pattern == "dotted":
        for i in range(-5, 6):
            for j in range(-5, 6):
                cx = thing.x * _S + i * period + (period / 2 if j % 2 else 0)
                cy = thing.y * _S + j * period * 0.87
                r = 2.0 * _S
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    return np.asarray(layer, dtype=np.float32)[:, :, None] / 255.0


def _eyes(draw: ImageDraw.ImageDraw, thing: Thing):
    s = thing.size
    for side in (-1, 1):
        cx, cy = (thing.x + side * 0.14 * s) * _S, (thing.y - 0.02 * s) * _S
        r, p = 0.095 * s * _S, 0.05 * s * _S
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 250, 250))
        draw.ellipse([cx - p, cy - p + r * 0.25, cx + p, cy + p + r * 0.25], fill=OUTLINE)


def render(scene: Scene) -> Image.Image:
    """Draw `scene` as a 64x64 RGB `PIL.Image`; the same scene always gives the same pixels."""
    rng = np.random.RandomState(scene.texture_seed % (2**32))
    img = _background(scene, rng)
    for thing in scene.things:
        img = _draw_thing(img, thing, scene.style, rng)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if scene.style == "creature":
        for thing in scene.things:
            _eyes(ImageDraw.Draw(out), thing)
    return out.resize((SIZE, SIZE), Image.BOX)


def _draw_thing(img: np.ndarray, thing: Thing, style: str, rng: np.random.RandomState) -> np.ndarray:
    """`img` (4x, float RGB) with `thing` painted on it in `style`."""
    n = SIZE * _S
    silhouette = _silhouette(thing)
    mask = np.asarray(silhouette, dtype=np.float32)[:, :, None] / 255.0
    color = np.array(COLORS[thing.color], dtype=np.float32)
    obj = color * (1.0 - (1.0 - PATTERN_SHADE) * _pattern(thing))
    if style == "watercolor":
        # pigment bleeds around the shape, edges soften, paper grain shows through
        halo = np.asarray(silhouette.filter(ImageFilter.GaussianBlur(5 * _S)), dtype=np.float32)[:, :, None] / 255.0
        img = img + (color - img) * np.clip(halo * 1.2, 0, 0.55)
        mask = np.asarray(silhouette.filter(ImageFilter.GaussianBlur(0.8 * _S)), dtype=np.float32)[:, :, None] / 255.0
        grain = np.kron(rng.uniform(0.9, 1.1, (n // 4, n // 4)), np.ones((4, 4)))[:, :, None]
        obj = obj * grain
    if style == "creature" and OUTLINE_WIDTH:
        ring_mask = _dilate(silhouette, 2 * OUTLINE_WIDTH * _S + 1).astype(np.float32)[:, :, None] / 255.0
        img = img * (1 - ring_mask) + np.array(OUTLINE, dtype=np.float32) * ring_mask
    return img * (1 - mask) + obj * mask


def _dilate(mask: Image.Image, size: int) -> np.ndarray:
    """`mask` dilated by a size x size square: what `mask.filter(ImageFilter.MaxFilter(size))` gives (edges
    replicated), pixel for pixel, but separable and about 60x faster at the 4x drawing size."""
    return ndimage.maximum_filter(np.asarray(mask), size=size, mode="nearest")


def render_many(scenes) -> list[Image.Image]:
    return [render(s) for s in scenes]
