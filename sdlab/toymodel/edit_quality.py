"""Prompt-to-prompt on a toy-world model, measured with the toy world's evaluator.

Each function edits held-out world-2 scenes on a pipeline and returns an `EditMeasure`: the summary numbers
(`.summary`, a dict of floats) and one row per scene with its pictures and readings (`.rows`, for figures).
The edit tests, notebooks 03-05 and the model card all take their numbers from here, so a number in the README
is the number a test checks.

Conventions (every function):
- scene i is edited with seed `seed + i`; "without p2p" is the target caption generated from the same initial
  latent with no control (what plain regeneration after a word change gives);
- change = mean absolute pixel difference in 0..255 (over all pixels, or over the pixels a mask selects);
- an object's box and mask are the evaluator's reading of it, matched to the caption (`toyworld.evaluate`);
  an object that is not found gets box IoU 0 and mask IoU 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..toyworld import OBJECTS, Scene, analyze, iou, object_masks, render, sample_scenes
from ..toyworld.evaluate import _match

EDIT_SEED = 1_000_021
"""Seed of the held-out scenes that the edits start from (the training set is drawn from seed 0)."""
REWEIGHTS = (-2, 0, 1, 2, 4, 8)
"""Weights of "bumpy" that `reweight_bumpy` sweeps."""
MASK_THRESHOLD = 0.5
"""Level at which a word's normalised attention map becomes a mask (`Capture.word_mask`)."""
BLEND_DILATE = 1
"""`LocalBlend(dilate=...)` of `replace_pair`'s "blend_dilated" edit: one latent pixel, a sixteenth of the toy
model's 16x16 latent, the extent of the paper's one map cell on SD at 512 (its 8x8 maps' cells are twice as wide)."""


@dataclass
class EditMeasure:
    summary: dict
    rows: list = field(default_factory=list, repr=False)

    def __getitem__(self, key):
        return self.summary[key]

    def __str__(self):
        return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.summary.items())


def edit_scenes(n: int, *, two: bool = False, seed: int = EDIT_SEED, background: str | None = None) -> list[Scene]:
    """`n` held-out plain world-2 scenes (no pattern, no watercolor) with one object, or two if `two`;
    on `background` if given (a road then stays smooth)."""
    pool = sample_scenes(max(4 * n, 64), seed, world=2, patterned=0.0, watercolor=0.0, bumpy=0.0,
                         pairs=1.0 if two else 0.0)
    if background is not None:
        from ..toyworld import GROUNDS

        pool = [dataclasses.replace(s, background=background, horizon=s.horizon if background in GROUNDS else 0.0)
                for s in pool if (s.color, background) != ("green", "grass")]
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} held-out scenes fit; ask for fewer than {n}")
    return pool[:n]


def swap_object(obj: str, avoid: str | None = None) -> str:
    """The object a replacement puts in place of `obj`: three places further in `OBJECTS` (cat -> bird,
    fish -> tree, car -> dog: mostly another layout), skipping `avoid` (the other object of a pair)."""
    i = OBJECTS.index(obj)
    for step in (3, 4, 5, 2, 1):
        new = OBJECTS[(i + step) % len(OBJECTS)]
        if new != avoid:
            return new
    raise AssertionError("unreachable")


def change(a, b, where=None) -> float:
    """Mean absolute pixel change (0-255), over the pixels of the bool mask `where` if given."""
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean(axis=2)
    if where is None:
        return float(d.mean())
    return float(d[where].mean()) if where.any() else 0.0


def box_iou(a, b) -> float:
    """IoU of two (x0, y0, x1, y1) boxes; 0 if either is missing."""
    if a is None or b is None:
        return 0.0
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def read(image, scene: Scene) -> list:
    """The evaluator's reading of each of `scene`'s objects in `image` (caption order; None if not found)."""
    return _match(analyze(image).objects, scene.things)


def _mask(o):
    return o.mask if o is not None else np.zeros((64, 64), dtype=bool)


def _box(o):
    return o.box if o is not None else None


def _edit_rows(pipe, scenes, make_target, make_edit, *, seed, steps, guidance, plain=True):
    from .. import attention, p2p

    rows = []
    for i, s in enumerate(scenes):
        t = make_target(s)
        res = p2p.edit(pipe, s.caption, [t.caption], make_edit(s, t), seed=seed + i, steps=steps, guidance=guidance)
        row = dict(scene=s, target=t, src=res.images[0], tgt=res.images[1])
        if plain:
            row["without"] = attention.generate(pipe, [t.caption], seed=seed + i, steps=steps,
                                                guidance=guidance).images[0]
        for key, sc in (("src", s), ("tgt", t), ("without", t)):
            if key in row:
                row[f"read_{key}"] = read(row[key], sc)
        rows.append(row)
    return rows


def _target_seen(rows, key) -> float:
    """Share of rows whose picture `key` shows the target's (first) object, as the evaluator reads it."""
    return float(np.mean([r[f"read_{key}"][0] is not None and r[f"read_{key}"][0].object == r["target"].object
                          for r in rows]))


def replace_one(pipe, n=32, *, steps=50, guidance=7.5, seed=EDIT_SEED) -> EditMeasure:
    """One-object scenes, the object word replaced (`swap_object`) with the default `Replace()`."""
    from ..p2p import Replace

    scenes = edit_scenes(n, seed=seed)
    rows = _edit_rows(pipe, scenes, lambda s: dataclasses.replace(s, object=swap_object(s.object)),
                      lambda s, t: Replace(), seed=seed, steps=steps, guidance=guidance)
    out = {}
    for key, name in (("tgt", "with"), ("without", "without")):
        out[f"box_iou_{name}"] = np.mean([box_iou(_box(r["read_src"][0]), _box(r[f"read_{key}"][0])) for r in rows])
        out[f"change_{name}"] = np.mean([change(r["src"], r[key]) for r in rows])
        out[f"outside_{name}"] = np.mean([
            change(r["src"], r[key], ~(analyze(r["src"]).mask | analyze(r[key]).mask)) for r in rows])
        out[f"target_seen_{name}"] = _target_seen(rows, key)
    out["change_ratio"] = out["change_with"] / out["change_without"]
    out["outside_ratio"] = out["outside_with"] / out["outside_without"]
    return EditMeasure({k: float(v) for k, v in out.items()}, rows)


def replace_pair(pipe, n=32, *, steps=50, guidance=7.5, seed=EDIT_SEED + 1) -> EditMeasure:
    """Two-object scenes, the first object's word replaced: what happens to the other one, and what
    `LocalBlend` on the edited words buys outside the edited object ("blend_ratio"; with `pixels=True`:
    "blend_pixels_ratio"; with `pixels=True` and the mask made at the latent's resolution, `dilate=BLEND_DILATE`:
    "blend_dilated_ratio")."""
    from ..p2p import LocalBlend, Replace

    scenes = edit_scenes(n, two=True, seed=seed)

    def target(s):
        return dataclasses.replace(s, object=swap_object(s.object, avoid=s.second.object))

    rows = _edit_rows(pipe, scenes, target, lambda s, t: Replace(), seed=seed, steps=steps, guidance=guidance,
                      plain=False)
    for key, blend in (("blend", {}), ("blend_pixels", dict(pixels=True)),
                       ("blend_dilated", dict(pixels=True, dilate=BLEND_DILATE))):
        blended = _edit_rows(pipe, scenes, target,
                             lambda s, t: Replace(local_blend=LocalBlend([s.object, t.object], **blend)),
                             seed=seed, steps=steps, guidance=guidance, plain=False)
        for r, b in zip(rows, blended):
            r[key], r[f"read_{key}"] = b["tgt"], b["read_tgt"]

    def outside_edited(r, key):
        return change(r["src"], r[key], ~(_mask(r["read_src"][0]) | _mask(r[f"read_{key}"][0])))

    out = {
        "untouched_mask_iou": np.mean([iou(_mask(r["read_src"][1]), _mask(r["read_tgt"][1])) for r in rows]),
        "untouched_color": np.mean([r["read_tgt"][1] is not None and r["read_tgt"][1].color == r["scene"].second.color
                                    for r in rows]),
        "untouched_object": np.mean([r["read_tgt"][1] is not None
                                     and r["read_tgt"][1].object == r["scene"].second.object for r in rows]),
        "target_seen": _target_seen(rows, "tgt"),
        "target_seen_blend": _target_seen(rows, "blend"),
        "outside_edited": np.mean([outside_edited(r, "tgt") for r in rows]),
        "outside_edited_blend": np.mean([outside_edited(r, "blend") for r in rows]),
        "outside_edited_blend_pixels": np.mean([outside_edited(r, "blend_pixels") for r in rows]),
        "outside_edited_blend_dilated": np.mean([outside_edited(r, "blend_dilated") for r in rows]),
        "target_seen_blend_dilated": _target_seen(rows, "blend_dilated"),
    }
    for key in ("blend", "blend_pixels", "blend_dilated"):
        out[f"{key}_ratio"] = out[f"outside_edited_{key}"] / out["outside_edited"]
    return EditMeasure({k: float(v) for k, v in out.items()}, rows)


def replace_ceiling(n=32, *, seed=EDIT_SEED) -> EditMeasure:
    """What `replace_one` would measure as box IoU with p2p if the replacement were perfect: each scene's target
    (`swap_object`) drawn by the renderer with the source's layout (place, size, facing) and both renders read
    by the evaluator, the scale for `replace_one`'s "box_iou_with" (silhouettes differ: a fish's box is wide, a
    tree's tall). No model is run."""
    rows = []
    for s in edit_scenes(n, seed=seed):
        t = dataclasses.replace(s, object=swap_object(s.object))
        src, tgt = render(s), render(t)
        a, b = read(src, s)[0], read(tgt, t)[0]
        rows.append(dict(scene=s, target=t, src=src, tgt=tgt, box_iou=box_iou(_box(a), _box(b))))
    return EditMeasure({"box_iou": float(np.mean([r["box_iou"] for r in rows]))}, rows)


def refine_target(s: Scene, i: int) -> Scene:
    """Scene i's refinement: "striped", "dotted" or a watercolor painting, in turn (birds stay plain-patterned)."""
    kind = ("striped", "dotted", "watercolor")[i % 3]
    if kind == "watercolor" or s.object == "bird":
        return dataclasses.replace(s, style="watercolor")
    return dataclasses.replace(s, pattern=kind)


def refine(pipe, n=32, *, steps=50, guidance=7.5, seed=EDIT_SEED + 2) -> EditMeasure:
    """One-object scenes refined with the default `Refine()`: a pattern word or "watercolor painting of" added."""
    from ..p2p import Refine

    scenes = edit_scenes(n, seed=seed)
    index = {id(s): i for i, s in enumerate(scenes)}
    rows = _edit_rows(pipe, scenes, lambda s: refine_target(s, index[id(s)]), lambda s, t: Refine(), seed=seed,
                      steps=steps, guidance=guidance)

    def added(r, key):
        t, o = r["target"], r[f"read_{key}"][0]
        if t.style == "watercolor":
            return analyze(r[key]).style == "watercolor"
        return o is not None and o.pattern == t.pattern

    out = {
        "attribute_with": np.mean([added(r, "tgt") for r in rows]),
        "attribute_without": np.mean([added(r, "without") for r in rows]),
        "mask_iou_with": np.mean([iou(_mask(r["read_src"][0]), _mask(r["read_tgt"][0])) for r in rows]),
        "mask_iou_without": np.mean([iou(_mask(r["read_src"][0]), _mask(r["read_without"][0])) for r in rows]),
        "object_kept": np.mean([r["read_tgt"][0] is not None and r["read_tgt"][0].object == r["scene"].object
                                for r in rows]),
        "change_with": np.mean([change(r["src"], r["tgt"]) for r in rows]),
        "change_without": np.mean([change(r["src"], r["without"]) for r in rows]),
    }
    out["change_ratio"] = out["change_with"] / out["change_without"]
    return EditMeasure({k: float(v) for k, v in out.items()}, rows)


def reweight_bumpy(pipe, n=32, *, weights=REWEIGHTS, steps=50, guidance=7.5, seed=EDIT_SEED + 3) -> EditMeasure:
    """Smooth-road scenes refined into "... on a bumpy road" with "bumpy" reweighted by each of `weights`.

    Summary: the mean road bumpiness read at each weight ("w=-2", ...); for scale, the mean reading of the
    sources (the model's own smooth roads, "smooth_generated"), of the smooth renders of the same scenes
    ("smooth_renders") and of the same scenes rendered bumpy with bumpiness 0.5 to 1 as `sample_scenes`
    draws them ("bumpy_renders")."""
    from ..p2p import Refine, Reweight

    scenes = edit_scenes(n, seed=seed, background="road")
    rng = np.random.RandomState(seed)
    bumpy = [dataclasses.replace(s, bumpiness=float(rng.uniform(0.5, 1.0))) for s in scenes]
    from .. import p2p

    rows = []
    for i, (s, b) in enumerate(zip(scenes, bumpy)):
        res = p2p.edit(pipe, s.caption, [b.caption] * len(weights),
                       Reweight({"bumpy": list(weights)}, base=Refine()), seed=seed + i, steps=steps, guidance=guidance)
        rows.append(dict(scene=s, target=b, src=res.images[0], edits=res.images[1:],
                         bumpiness=[analyze(im).bumpiness for im in res.images[1:]],
                         source_bumpiness=analyze(res.images[0]).bumpiness))
    means = np.mean([r["bumpiness"] for r in rows], axis=0)
    out = {f"w={w:g}": float(m) for w, m in zip(weights, means)}
    out["smooth_generated"] = float(np.mean([r["source_bumpiness"] for r in rows]))
    out["smooth_renders"] = float(np.mean([analyze(render(s)).bumpiness for s in scenes]))
    out["bumpy_renders"] = float(np.mean([analyze(render(b)).bumpiness for b in bumpy]))
    return EditMeasure(out, rows)


def capture_iou(pipe, n=32, *, two=False, steps=50, guidance=7.5, seed=EDIT_SEED + 4) -> EditMeasure:
    """Mean IoU of each object word's attention mask (`MASK_THRESHOLD`) with the object the evaluator reads
    for that word (one- or two-object scenes)."""
    from ..attention import capture

    scenes = edit_scenes(n, two=two, seed=seed)
    rows = []
    for i, s in enumerate(scenes):
        cap = capture(pipe, s.caption, seed=seed + i, steps=steps, guidance=guidance, self_attention=False)
        found = read(cap.images[0], s)
        ious = [iou(cap.word_mask(t.object, threshold=MASK_THRESHOLD).numpy(), _mask(o))
                for t, o in zip(s.things, found)]
        rows.append(dict(scene=s, image=cap.images[0], capture=cap, ious=ious))
    return _map_iou(rows)


def capture_ceiling(n=32, *, two=False, res=8, seed=EDIT_SEED + 4) -> EditMeasure:
    """What `capture_iou` would measure on the same scenes if every object word's map were its object exactly:
    the object's silhouette on its render, pooled to `res` x `res` (the toy model captures at 8x8, its default
    level), then made a mask as `Capture.word_mask` makes one (bilinear to 64x64, above `MASK_THRESHOLD` of its
    maximum) and scored against the evaluator's reading of the render: what a map that is exactly its object
    scores at that resolution, the scale for `capture_iou`'s numbers. No model is run."""
    import torch
    import torch.nn.functional as F

    from ..attention.capture import map_mask

    rows = []
    for s in edit_scenes(n, two=two, seed=seed):
        image = render(s)
        ious = [iou(map_mask(F.adaptive_avg_pool2d(torch.from_numpy(m)[None], res)[0], m.shape, MASK_THRESHOLD).numpy(),
                    _mask(o)) for m, o in zip(object_masks(s), read(image, s))]
        rows.append(dict(scene=s, image=image, ious=ious))
    return _map_iou(rows)


def _map_iou(rows) -> EditMeasure:
    return EditMeasure({"map_iou": float(np.mean([v for r in rows for v in r["ious"]]))}, rows)
