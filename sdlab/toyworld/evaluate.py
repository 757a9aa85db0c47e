"""Reading a toy-world picture back from its pixels: what is in it, where, and in what style.

`analyze(image)` measures one 64x64 image (a render or a model's generation) with a fixed heuristic, no
training: the background from a vote of the lower picture's pixels, a horizon where the rows above it read as
sky, each object as one of the (at most two) largest chromatic blobs that differ from the background (the
unnamed detail is achromatic and small, so it is left out), its color by a vote over its pixels, its kind by
silhouette matching against `render.SHAPES` (mirrored too), and the pattern, style and road bumps from simple
texture statistics. `evaluate(images, scenes)` scores a batch against the scenes that should have produced
it, matching the objects it reads to the ones the caption names. Generations are blurrier than renders, so
every decision is a median, a vote or a best match rather than an exact color test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import permutations

import numpy as np
from PIL import Image
from scipy import ndimage

from .render import PASTEL, PASTEL_GROUNDS, PATTERN_SHADE, SIZE, object_mask, object_masks, render
from .scene import BACKGROUNDS, COLORS, GROUNDS, OBJECTS, Scene

OBJECT_DISTANCE = 60.0
"""RGB distance from the background estimate above which a pixel may belong to the object."""
DARK = (60.0, 30.0)
"""A pixel is "dark" (a creature's pupils, a render's outline) if its brightest channel is below the first number and
its channels spread less than the second."""
TEMPLATE = 24
"""Side of the square crops on which silhouettes are compared."""
WATERCOLOR = 0.05
"""`watercolor_score` above which a picture reads as a watercolor painting."""
BACKGROUND_DISTANCE = 45.0
"""RGB distance from a background's color within which a pixel votes for that background."""
HORIZON_EVIDENCE = 64
"""Sky-minus-ground pixel votes above a row needed to read a horizon there (one row is 64 pixels)."""
CHROMA = 35.0
"""Channel spread from which a pixel counts as colored: objects are, the unnamed detail is not."""
OUTLINE_PIXEL = (100.0, 30.0, 80.0)
"""A pixel is part of a creature's outline if its brightest channel is below the first number, its channels
spread less than the second, and it is darker than the background around it by more than the third (on the
mean of the channels): black in a render, and still so where a generation blurs it to gray (a 2-pixel black
line blurred by a Gaussian of 1 pixel peaks near 80)."""
TINTED_OUTLINE = 0.45
"""A pixel near an object's edge counts toward `ObjectReading.outline_score` if it is darker (mean of the
channels) than this share of the object's fill (the upper quartile of its pixels), and darker than the background
by half `OUTLINE_PIXEL`'s margin: darker than any shade a render draws (patterns are `PATTERN_SHADE` = 0.6 of the
color), as dark as a generation's black outline blended with the fill (dark red around a red car)."""
ALONG_EDGE, MIN_OUTLINE = 0.75, 12
"""A dark piece counts toward `outline_score` if this share of it lies within 4 pixels inside the object's edge
and it has at least this many pixels: an outline runs along the edge, a pattern's stripes and dots do not."""
OUTLINE_DARK = 40.0
"""Brightest channel below which a gray pixel may still belong to an object (a creature's outline)."""
MIN_AREA = 30
"""Least area in pixels (after an opening) of a blob that is read as an object."""
BUMP_SCALE = 6.2
"""Texture strength of a plain road with `Scene.bumpiness` 1 (calibrates `Reading.bumpiness` to read about 1)."""
BUMPY_READING = 0.4
"""`Reading.bumpiness` from which a road counts as bumpy: between the smooth roads `sample_scenes` draws
(bumpiness <= 0.2) and the bumpy ones (>= 0.5)."""

_BG_NAMES = [name for name in BACKGROUNDS for _ in range(2)]
_BG_PROTOS = np.array(
    [c for rgb in BACKGROUNDS.values() for c in (rgb, tuple((1 - PASTEL) * v + PASTEL * 255 for v in rgb))],
    dtype=np.float32,
)  # each background as drawn plain, then pastel (creature style on the dark grounds; the sky above their horizon)
_COLOR_NAMES = [name for name in COLORS for _ in range(2)]
_COLOR_PROTOS = np.array(
    [c for rgb in COLORS.values() for c in (rgb, tuple(PATTERN_SHADE * v for v in rgb))], dtype=np.float32
)  # each color and its pattern shade


@dataclass(frozen=True, eq=False)
class ObjectReading:
    """One object as `analyze` reads it.

    Attributes:
        object: the best-matching silhouette in `OBJECTS`.
        color: the nearest name in `COLORS`.
        pattern: "plain", "striped" or "dotted".
        mask: bool array (64, 64), True on the object's pixels (creature outline excluded).
        box: (x0, y0, x1, y1) of the mask, x1 and y1 exclusive.
        watercolor_score: how far the ring just around the object is pulled toward the object's color
            (0 = not at all, 1 = fully), 3-4 pixels out; about 0 for plain renders, 0.07 to 0.3 for watercolor.
        creature_score: fraction of the object's border that is a dark outline, in [0, 1].
        outline_score: the same fraction with dark pixels of the object's own hue counted too, in pieces that
            run along the edge (`TINTED_OUTLINE`, `ALONG_EDGE`): how much a generation drew the creature style's
            outline, also where the outline blends with the fill. It is the style that finetuning on creatures
            brings (`sdlab.finetune.metrics`); the style read (`Reading.style`) keeps to `creature_score`, since
            a generation's dark stripes can still look like such an outline now and then.
        silhouette: bool array (64, 64), what `object` is read from: `mask`, with the outline for an object
            drawn in creature style (a generation may draw part of the shape, a star's arms, as outline).
    """

    object: str
    color: str
    pattern: str
    mask: np.ndarray
    box: tuple
    watercolor_score: float
    creature_score: float
    silhouette: np.ndarray | None = None
    outline_score: float = 0.0


@dataclass(frozen=True, eq=False)
class Reading:
    """What `analyze` reads from one picture.

    The object fields (color, object, pattern, box and the two style scores) are those of the largest object
    read; `objects` has each object, largest first; `mask` covers all of them.

    Attributes:
        background: the nearest name in `BACKGROUNDS`.
        color: the nearest name in `COLORS` ("" if no object was found).
        object: the best-matching silhouette in `OBJECTS` ("" if no object was found).
        pattern: "plain", "striped" or "dotted".
        style: "plain", "watercolor" or "creature", from the style scores of the objects.
        mask: bool array (64, 64), True on the objects' pixels (creature outline excluded).
        box: (x0, y0, x1, y1) of the largest object's mask, x1 and y1 exclusive; (0, 0, 0, 0) if nothing was found.
        watercolor_score, creature_score, outline_score: the largest object's (see `ObjectReading`); 0 if nothing
            was found.
        bumpiness: texture strength of the ground outside the objects, scaled so that a plain road with
            `Scene.bumpiness` b reads about b; meaningful on roads (other backgrounds have textures of
            their own).
        objects: every object read (at most two), largest first.
        horizon: the height in pixels of the horizon read (sky above, ground below), 0 for none.
    """

    background: str
    color: str
    object: str
    pattern: str
    style: str
    mask: np.ndarray
    box: tuple
    watercolor_score: float
    creature_score: float
    bumpiness: float
    objects: tuple = ()
    horizon: float = 0.0
    outline_score: float = 0.0


def as_rgb_array(image) -> np.ndarray:
    """`image` (PIL image or HxWxC / HxW array) as a float32 array (64, 64, 3) in 0..255.

    Other modes (RGBA, L, P) are converted to RGB with a warning; a size other than 64x64 is an error, since
    every threshold here is in toy-world pixels.
    """
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            warnings.warn(f"converting a {image.mode} image to RGB for the toy-world evaluator", stacklevel=3)
            image = image.convert("RGB")
        arr = np.asarray(image, dtype=np.float32)
    elif isinstance(image, np.ndarray):
        arr = image.astype(np.float32)
        if arr.ndim == 2:
            warnings.warn("converting a grayscale array to RGB for the toy-world evaluator", stacklevel=3)
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"expected an image array of shape (64, 64, 3), got {image.shape}")
        if arr.shape[2] == 4:
            warnings.warn("dropping the alpha channel for the toy-world evaluator", stacklevel=3)
            arr = arr[:, :, :3]
        if np.issubdtype(image.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0  # floats in [0, 1], as diffusers' output_type="np" gives
    else:
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if arr.shape[:2] != (SIZE, SIZE):
        raise ValueError(
            f"the toy-world evaluator reads {SIZE}x{SIZE} images, got {arr.shape[1]}x{arr.shape[0]}; "
            f"resize it first (e.g. image.resize(({SIZE}, {SIZE}))) if that is what you mean"
        )
    return arr


def iou(mask_a, mask_b) -> float:
    """Intersection over union of two boolean masks of the same shape (1.0 if both are empty)."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _border(width: int) -> np.ndarray:
    ring = np.ones((SIZE, SIZE), dtype=bool)
    ring[width:-width, width:-width] = False
    return ring


def _nearest(pixels: np.ndarray, protos: np.ndarray) -> np.ndarray:
    return np.argmin(((pixels[..., None, :] - protos) ** 2).sum(-1), axis=-1)


_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: diagonal neighbours touch


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def _walk(start: np.ndarray, through: np.ndarray, steps: int) -> np.ndarray:
    """Pixels of `through` reachable from `start` in at most `steps` 8-connected steps (plus `start`)."""
    out = start
    for _ in range(steps):
        out = out | (ndimage.binary_dilation(out, structure=_EIGHT) & through)
    return out


def _blob(raw: np.ndarray, weak: np.ndarray | None = None, main: np.ndarray | None = None) -> np.ndarray:
    """The object's blob in a thresholded picture: the largest part after an opening (which removes lane
    lines, stars, grass blades), with the thin edges the opening shaved off, rejoined with the parts it or a
    dark stripe cut off at thin joints (a bird's wings): parts within 5 pixels through `weak` (a lower
    threshold), with the bridge between them; holes filled. `main` picks another part than the largest."""
    opened = ndimage.binary_opening(raw)
    main = _largest_component(opened) if main is None else main & opened
    if not main.any():
        return main
    weak = raw if weak is None else (weak | raw)
    reach = _walk(main, weak, 5)
    labels, _ = ndimage.label(opened & ~main, structure=_EIGHT)
    touched = np.unique(labels[reach])
    parts = np.isin(labels, touched[touched > 0])
    keep = main | parts | (_walk(main, raw, 2) & raw)
    if parts.any():
        keep |= reach & _walk(parts, weak, 5) & raw  # the joint
    return ndimage.binary_fill_holes(keep)


def _crop(mask: np.ndarray) -> np.ndarray:
    """The mask's square bounding crop (aspect kept), resized to TEMPLATE x TEMPLATE, as floats."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    half = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) / 2
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    crop = img.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return np.asarray(crop.resize((TEMPLATE, TEMPLATE), Image.BILINEAR), dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, np.ndarray]:
    """Silhouette templates (object, variant, TEMPLATE, TEMPLATE), each cropped like a measured mask, then the
    same mirrored. For masks: each object's ground-truth mask, and the mask this evaluator measures on its
    watercolor renders (the halo fills a star's notches), averaged over a few sizes and colors. For outlined
    silhouettes: the silhouette it measures on its creature renders, outline included, one per size (a 2-pixel
    outline fattens a small object more than a large one), averaged over two colors."""
    colors = (("red", "sky"), ("yellow", "night"))

    def measured(name, style, field, sizes):
        return np.mean([_crop(getattr(_read(np.asarray(render(Scene(name, c, bg, style=style, size=s)), np.float32))
                                      .objects[0], field)) for s in sizes for c, bg in colors], axis=0)

    masks, outlined = [], []
    for name in OBJECTS:
        truth = np.mean([_crop(object_mask(Scene(name, "red", "sky", size=s)) > 0.5) for s in (30.0, 36.0, 42.0)],
                        axis=0)
        variants = [truth, measured(name, "watercolor", "mask", (30.0, 36.0, 42.0))]
        masks.append(variants + [v[:, ::-1] for v in variants])
        variants = [measured(name, "creature", "silhouette", (s,)) for s in (18.0, 24.0, 30.0, 38.0, 46.0)]
        outlined.append(variants + [v[:, ::-1] for v in variants])
    return np.array(masks), np.array(outlined)


def _classify_shape(mask: np.ndarray, silhouette: np.ndarray | None = None) -> str:
    """The object whose templates best overlap (IoU of the crops) `mask` or, for an outlined object,
    `silhouette` (`_templates`)."""
    masks, outlined = _templates()
    pairs = [(_crop(mask), masks)] + ([(_crop(silhouette), outlined)] if silhouette is not None else [])
    scores = [(np.minimum(t, c).sum(axis=(2, 3)) / np.maximum(t, c).sum(axis=(2, 3))).max(axis=1) for c, t in pairs]
    return OBJECTS[int(np.argmax(np.max(scores, axis=0)))]


def _pattern(arr: np.ndarray, mask: np.ndarray, skip: np.ndarray, depth: int = 1) -> str:
    """Plain, striped or dotted, from the darker pixels at least `depth` pixels inside the object (`skip`:
    pixels to ignore, e.g. eyes)."""
    inner = ndimage.binary_erosion(mask, iterations=depth) & ~skip
    if inner.sum() < 20:
        return "plain"
    lum = arr.mean(axis=2)
    bright = np.percentile(lum[inner], 80)
    dark = (lum < bright * (0.5 + PATTERN_SHADE / 2)) & inner
    if dark.sum() < 0.08 * inner.sum():
        return "plain"
    # stripes are vertical bands: dark fraction varies much more across columns than across rows
    cols = [dark[:, j].sum() / inner[:, j].sum() for j in range(SIZE) if inner[:, j].sum() >= 4]
    rows = [dark[i, :].sum() / inner[i, :].sum() for i in range(SIZE) if inner[i, :].sum() >= 4]
    if not cols or not rows:  # a sliver (generated pictures draw some): no bands to compare
        return "plain"
    return "striped" if np.std(cols) > 1.6 * np.std(rows) else "dotted"


_YX = np.stack(np.mgrid[0:SIZE, 0:SIZE], axis=-1).astype(np.float32) / SIZE - 0.5


def _background_field(arr: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The background as a linear ramp per channel (the sky's gradient), fitted to `region`; the 10% of
    pixels farthest from a first fit (lane lines, stars) are left out of the second."""
    design = np.concatenate([np.ones((SIZE, SIZE, 1), np.float32), _YX], axis=-1)
    a, b = design[region], arr[region]
    for _ in range(2):
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        err = np.abs(a @ coef - b).sum(axis=1)
        keep = err <= np.percentile(err, 90)
        a, b = a[keep], b[keep]
    return design @ coef


def _drop_specks(mask: np.ndarray, least: int = 6) -> np.ndarray:
    """`mask` without its 8-connected parts of fewer than `least` pixels (the outline's blended outer edge)."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return np.isin(labels, 1 + np.flatnonzero(sizes >= least))


def _is_outline(arr: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Where `arr` is a creature's outline (`OUTLINE_PIXEL`), against the background estimate `field`."""
    top = arr.max(axis=2)
    spread = top - arr.min(axis=2)
    darker = arr.mean(axis=2) < field.mean(axis=2) - OUTLINE_PIXEL[2]
    return (top < OUTLINE_PIXEL[0]) & (spread < OUTLINE_PIXEL[1]) & darker


def _is_dark(pixels: np.ndarray) -> np.ndarray:
    return (pixels.max(axis=-1) < DARK[0]) & (pixels.max(axis=-1) - pixels.min(axis=-1) < DARK[1])


def _color(arr: np.ndarray, mask: np.ndarray, depth: int = 1) -> str:
    """Vote of the pixels at least `depth` pixels inside the object (pupils left out) for the nearest color
    or pattern shade."""
    inner = ndimage.binary_erosion(mask, iterations=depth)
    pix = arr[inner if inner.sum() >= 10 else mask]
    pix = pix[~_is_dark(pix)] if (~_is_dark(pix)).any() else pix
    votes = np.bincount(_nearest(pix, _COLOR_PROTOS), minlength=len(_COLOR_PROTOS))
    return _COLOR_NAMES[int(np.argmax(votes[0::2] + votes[1::2])) * 2]


def _bumpiness(arr: np.ndarray, blob: np.ndarray, pastel: bool, margin: int = 5, ground=None) -> float:
    """Road texture strength: mean absolute luminance deviation of the background away from the object
    from its local median, lane lines and stars (and the pixels next to them) left out, on a square-root
    scale so that it grows about like `Scene.bumpiness` (bumps get both more numerous and stronger). Only
    `ground` counts (the rows below a horizon), if given."""
    rest = ~ndimage.binary_dilation(blob, iterations=margin)
    if ground is not None:
        rest &= ndimage.binary_erosion(ground, iterations=7, border_value=1)  # the median filter's reach
    if rest.sum() < 100:
        rest = ~ndimage.binary_dilation(blob, iterations=2)
    if not rest.any():
        return 0.0
    contrast = (1 - PASTEL) if pastel else 1.0
    lum = arr.mean(axis=2)
    lum = np.where(ndimage.binary_dilation(blob, iterations=2), np.median(lum[rest]), lum)
    # bumps are a few pixels wide: smooth away pixel noise, subtract slow shading (a watercolor halo, the sky)
    deviation = np.abs(ndimage.uniform_filter(lum, size=3) - ndimage.median_filter(lum, size=13))
    marks = ndimage.binary_dilation(deviation > 80 * contrast, iterations=2, structure=_EIGHT)
    texture = deviation[rest & ~marks]
    return float(np.sqrt(texture.mean() / (BUMP_SCALE * contrast))) if texture.size else 0.0


def analyze(image) -> Reading:
    """Read background, horizon, objects (kind, color, pattern, mask), style and road bumps from one 64x64
    picture."""
    reading = _read(as_rgb_array(image))
    if not reading.objects:
        return reading
    objects = tuple(replace(o, object=_classify_shape(o.mask, o.silhouette)) for o in reading.objects)
    return replace(reading, objects=objects, object=objects[0].object)


def _ground(arr: np.ndarray) -> tuple[str, float]:
    """The background's name, by a vote of the lower third's pixels that lie near a background's color, and
    the horizon's height (0 for none): the row above which pixels read as sky, where the ground is not sky."""
    near = _nearest(arr, _BG_PROTOS)
    close = np.linalg.norm(arr - _BG_PROTOS[near], axis=2) < BACKGROUND_DISTANCE
    names = np.array([_BG_NAMES.index(n) for n in _BG_NAMES])[near]  # index of the plain prototype's name
    low = close[SIZE * 2 // 3 :]
    votes = np.bincount(names[SIZE * 2 // 3 :][low], minlength=len(_BG_NAMES)) if low.any() else None
    if votes is None or not votes.any():
        return _BG_NAMES[int(_nearest(np.median(arr[_border(2)], axis=0), _BG_PROTOS))], 0.0
    name = _BG_NAMES[int(np.argmax(votes))]
    if name not in GROUNDS:
        return name, 0.0
    sky, ground = _BG_NAMES.index("sky"), _BG_NAMES.index(name)
    score = ((names == sky) & close).sum(axis=1) - ((names == ground) & close).sum(axis=1)  # per row
    gain = np.concatenate([[0], np.cumsum(score)])  # gain[h]: rows 0..h-1 read as sky rather than ground
    h = int(np.argmax(gain))
    return name, float(h) if gain[h] >= HORIZON_EVIDENCE else 0.0


def _objects(raw: np.ndarray, weak: np.ndarray, arr: np.ndarray) -> list[np.ndarray]:
    """The blobs of at most two objects in a thresholded picture, largest first. Candidates are the parts left
    after an opening (which removes lane lines, stars, grass blades) that are large and hold colored pixels
    (the detail is gray or white); each object is the largest candidate not yet taken, with the parts `_blob`
    rejoins to it, kept 3 px away from the object taken before it."""
    opened = ndimage.binary_opening(raw)
    labels, n = ndimage.label(opened, structure=_EIGHT)
    if n == 0:
        return []
    chroma = arr.max(axis=2) - arr.min(axis=2) >= CHROMA
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(opened, labels, index=index)
    colored = ndimage.sum(chroma & opened, labels, index=index)
    candidates = sorted(((int(a), i) for a, c, i in zip(sizes, colored, index) if a >= MIN_AREA and c >= 0.3 * a),
                        reverse=True)
    blobs, taken = [], np.zeros_like(raw)
    for _, i in candidates:
        part = labels == i
        if (part & taken).any():
            continue
        fence = ndimage.binary_dilation(taken, iterations=3) if blobs else taken
        blob = _blob(raw & ~fence, weak=weak & ~fence, main=part & ~fence)
        if not blob.any():  # nothing of it is left beyond the fence: a fringe of the object taken before it
            continue
        blobs.append(blob)
        taken |= blob
        if len(blobs) == 2:
            break
    return blobs


def _read(arr: np.ndarray) -> Reading:
    """Everything `analyze` reads but the objects' kinds (left "")."""
    background, horizon = _ground(arr)
    sky_rows = np.arange(SIZE)[:, None] < horizon
    region = np.broadcast_to(sky_rows, (SIZE, SIZE))
    if horizon:
        sky_c = np.median(arr[region], axis=0)
        ground_c = np.median(arr[~region], axis=0)
        bg = np.where(region[:, :, None], sky_c, ground_c)
    else:
        bg = np.broadcast_to(np.median(arr[_border(2)], axis=0), arr.shape)
    dist = np.linalg.norm(arr - bg, axis=2)
    # no object color is near-white: white far brighter than the background is lane paint or a star
    glare = (arr.mean(axis=2) > bg.mean(axis=2) + 110) & (arr.max(axis=2) - arr.min(axis=2) < 40)
    # objects are colored, or as dark as a creature's outline; gray bumps, rocks and white clouds are not
    outline = arr.max(axis=2) < OUTLINE_DARK
    eyes = (arr.min(axis=2) > 200) & ndimage.binary_dilation(outline, iterations=2)  # white next to the outline
    colored = (arr.max(axis=2) - arr.min(axis=2) >= CHROMA) | outline | eyes
    raw = (dist > OBJECT_DISTANCE) & ~glare & colored
    weak = (dist > 0.6 * OBJECT_DISTANCE) & ~glare & colored
    blobs = _objects(raw, weak, arr)
    anything = np.logical_or.reduce(blobs) if blobs else np.zeros((SIZE, SIZE), dtype=bool)
    far = ~ndimage.binary_dilation(anything, iterations=8)
    field = np.array(bg, dtype=arr.dtype)  # sky and ground each refined from everything well away from the
    for part in ([region, ~region] if horizon else [np.ones((SIZE, SIZE), dtype=bool)]):  # objects (and any halo)
        if (far & part).sum() >= 100:
            field[part] = _background_field(arr, far & part)[part]
    objects = [o for o in (_read_object(arr, blob, field, others=anything & ~blob) for blob in blobs) if o is not None]
    creature = any(o.creature_score > 0.5 for o in objects)
    watercolor = not creature and any(o.watercolor_score > WATERCOLOR for o in objects)
    margin = 9 if watercolor else 5  # beyond most halo
    pastel = creature and background in PASTEL_GROUNDS
    bumpiness = _bumpiness(arr, anything, pastel=pastel, margin=margin, ground=~region)
    if not objects:
        empty = np.zeros((SIZE, SIZE), dtype=bool)
        return Reading(background, "", "", "plain", "plain", empty, (0, 0, 0, 0), 0.0, 0.0, bumpiness,
                       (), horizon)
    first = objects[0]
    return Reading(
        background=background,
        color=first.color,
        object="",
        pattern=first.pattern,
        style="creature" if creature else "watercolor" if watercolor else "plain",
        mask=np.logical_or.reduce([o.mask for o in objects]),
        box=first.box,
        watercolor_score=first.watercolor_score,
        creature_score=first.creature_score,
        bumpiness=bumpiness,
        objects=tuple(objects),
        horizon=horizon,
        outline_score=first.outline_score,
    )


def _read_object(arr: np.ndarray, blob: np.ndarray, field: np.ndarray, others: np.ndarray) -> ObjectReading | None:
    """Color, pattern, mask and style scores of the object whose blob is `blob` (None if it is too small);
    `others`: the other objects' blobs, whose outlines are not this object's."""
    # creature: the object's edge runs along a dark outline. A generation may draw the outline around an inside
    # too pale to pass the thresholds (a pink house washed out on snow), of which the blob is only a part: the
    # object is then what the blob and the outline's pieces that touch it enclose (`outlined`, outline included)
    rim = _is_outline(arr, field)
    labels, _ = ndimage.label(rim & ~ndimage.binary_dilation(others, iterations=3), structure=_EIGHT)
    touching = np.unique(labels[ndimage.binary_dilation(blob, iterations=2) & rim])
    pieces = np.isin(labels, touching[touching > 0])
    outlined = blob
    if pieces.any():  # what they enclose, also once gaps of a few pixels are bridged (not the notches that fills)
        drawn = blob | pieces
        closed = ndimage.binary_closing(drawn, structure=_EIGHT, iterations=2)
        outlined = _largest_component(ndimage.binary_fill_holes(drawn) | (ndimage.binary_fill_holes(closed) & ~closed))
    edge = outlined & ~ndimage.binary_erosion(outlined)
    creature_score = float((edge & ndimage.binary_dilation(rim)).sum() / max(edge.sum(), 1))
    creature = creature_score > 0.5
    level = arr.mean(axis=2)
    fill = np.percentile(level[blob], 75)  # the fill's level, not its shade, eyes or outline (on a thin bird too)
    dark = rim | ((level < TINTED_OUTLINE * fill) & (level < field.mean(axis=2) - OUTLINE_PIXEL[2] / 2))
    # an outline runs along the edge, a pattern's dark stripes and dots across or inside: keep the dark pieces
    # that lie mostly in the band of 4 pixels inside the edge (a blurred outline's core sits up to there)
    band = outlined & ~ndimage.binary_erosion(outlined, iterations=4)
    labels, n = ndimage.label(dark & ndimage.binary_dilation(outlined), structure=_EIGHT)
    inside = ndimage.sum(band, labels, index=np.arange(1, n + 1))
    size = ndimage.sum(labels > 0, labels, index=np.arange(1, n + 1))
    along = np.isin(labels, 1 + np.flatnonzero((inside >= ALONG_EDGE * size) & (size >= MIN_OUTLINE)))
    outline_score = float((edge & ndimage.binary_dilation(along, iterations=3)).sum() / max(edge.sum(), 1))
    # the object is what the outline encloses (all of it, or the part a generation drew: from a quarter of the
    # border on; below that, dark pixels at the edge are more likely a dark pattern than an outline)
    drawn_outline = creature_score >= 0.25
    mask = _drop_specks(ndimage.binary_fill_holes(outlined & ~rim)) if drawn_outline else blob
    if mask.sum() < 10:
        return None
    color = _color(arr, mask)

    # watercolor: pigment bleeds past the edge, so the ring 3-4 px outside the blob leans to the object color
    # (far enough out that a blurry generation's soft edge does not count)
    rgb = np.array(COLORS[color], dtype=np.float32)
    axis = rgb - field
    pull = ((arr - field) * axis).sum(axis=2) / np.maximum((axis * axis).sum(axis=2), 1.0)
    ring = ndimage.binary_dilation(blob, iterations=4) & ~ndimage.binary_dilation(blob, iterations=2)
    watercolor_score = float(np.clip(np.median(pull[ring]), 0.0, 1.0)) if ring.any() else 0.0
    watercolor = watercolor_score > WATERCOLOR and not creature
    if watercolor:  # the halo is not the object
        core = pull > 0.65
        # pattern pixels (the color's shade) count where the core closes over them: stripes and dots inside,
        # not the halo's rim, which on a dark background can look just like the shade
        shade = np.linalg.norm(arr - PATTERN_SHADE * rgb, axis=2) < 35
        shade &= ndimage.binary_closing(core, iterations=2)
        refined = _blob(mask & (core | shade), weak=mask)
        mask = refined if refined.sum() >= 10 else mask
        color = _color(arr, mask, depth=2)  # away from the halo's blend with the background
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    white = (arr.min(axis=2) > 200) & (arr.max(axis=2) - arr.min(axis=2) < 40)
    eyes = ndimage.binary_dilation(_is_dark(arr) | white) & blob if creature else np.zeros_like(mask)
    return ObjectReading(
        object="",
        color=color,
        pattern=_pattern(arr, mask, skip=eyes, depth=2 if watercolor else 1),
        mask=mask,
        box=box,
        watercolor_score=watercolor_score,
        creature_score=creature_score,
        silhouette=outlined | mask if drawn_outline else mask,
        outline_score=outline_score,
    )


def _match(objects, things) -> list:
    """For each named thing, the object read that stands for it (or None): the assignment that gets the most
    kinds and colors right; among equals, the one that takes the larger objects read, in caption order."""
    best, best_key = None, None
    slots = list(objects) + [None] * len(things)
    for perm in permutations(range(len(slots)), len(things)):
        pick = [slots[i] for i in perm]
        right = sum((o.object == t.object) + (o.color == t.color) for o, t in zip(pick, things) if o is not None)
        key = (right, -sum(perm))
        if best_key is None or key > best_key:
            best, best_key = pick, key
    return best


def evaluate(images, scenes) -> dict:
    """Score `images` against the `scenes` they should show (one scene per image, same order).

    The objects read in each image are matched to the scene's named objects (`_match`); a named object with
    no match counts as wrong. Returns a dict of floats: "n"; per named object the accuracies "color",
    "object", "pattern", "object_color" (kind and color both right) and "mask_iou" (mean IoU of its matched
    mask with its silhouette: meaningful when the images should keep the scenes' layout, e.g. renders,
    reconstructions or edits); per image "background",
    "style", "count" (as many objects read as named), "joint" (every named object's color and kind and the
    background right) and "both" (both objects' color and kind right, over two-object scenes; NaN if none);
    "horizon" (a horizon read where there is one and none where there is none, within 4 px, over ground
    scenes; NaN if none); "bumpy" (bumpy vs smooth on road scenes, NaN if none); the means of
    "watercolor_score", "creature_score", "outline_score" and "bumpiness".
    """
    images, scenes = list(images), list(scenes)
    if len(images) != len(scenes):
        raise ValueError(f"got {len(images)} images but {len(scenes)} scenes: pass one scene per image")
    if not images:
        raise ValueError("nothing to evaluate: images and scenes are empty")
    bad = [type(s).__name__ for s in scenes if not isinstance(s, Scene)]
    if bad:
        raise TypeError(f"scenes must be toyworld Scene objects, got {bad[0]}")
    readings = [analyze(image) for image in images]
    matched = [_match(r.objects, s.things) for r, s in zip(readings, scenes)]
    pairs = [(o, t, m) for ms, s in zip(matched, scenes) for o, t, m in zip(ms, s.things, object_masks(s))]

    def mean(values):
        values = [float(v) for v in values]
        return float(np.mean(values)) if values else float("nan")

    def right(o, t, field):
        return o is not None and getattr(o, field) == getattr(t, field)

    out = {"n": float(len(images))}
    for field in ("color", "object", "pattern"):
        out[field] = mean(right(o, t, field) for o, t, _ in pairs)
    out["object_color"] = mean(right(o, t, "color") and right(o, t, "object") for o, t, _ in pairs)
    out["background"] = mean(r.background == s.background for r, s in zip(readings, scenes))
    out["style"] = mean(r.style == s.style for r, s in zip(readings, scenes))
    out["count"] = mean(len(r.objects) == len(s.things) for r, s in zip(readings, scenes))
    named = [all(right(o, t, "color") and right(o, t, "object") for o, t in zip(m, s.things))
             for m, s in zip(matched, scenes)]
    out["joint"] = mean(ok and r.background == s.background for ok, r, s in zip(named, readings, scenes))
    out["both"] = mean(ok for ok, s in zip(named, scenes) if s.second is not None)
    out["horizon"] = mean(
        abs(r.horizon - s.horizon) <= 4 if s.horizon else r.horizon == 0
        for r, s in zip(readings, scenes) if s.background in GROUNDS
    )
    out["bumpy"] = mean(
        (r.bumpiness >= BUMPY_READING) == s.bumpy for r, s in zip(readings, scenes) if s.background == "road"
    )
    out["mask_iou"] = mean(iou(o.mask, m > 0.5) if o is not None else 0.0 for o, _, m in pairs)
    for field in ("watercolor_score", "creature_score", "outline_score", "bumpiness"):
        out[field] = mean(getattr(r, field) for r in readings)
    return out
