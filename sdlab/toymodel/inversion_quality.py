"""Real-picture editing on a toy-world model, measured: held-out renders inverted, reconstructed and edited.

A toy-world render is a real picture whose ground truth is known. `invert_renders` inverts held-out one-object
renders of the shipped model's world (`held_out_scenes`) by DDIM alone and by null-text inversion
(`sdlab.inversion`) and scores each reconstruction against the render (PSNR), next to the VAE's own round trip,
the best any inversion can do. `replace_inverted` then swaps the object word on each null-text inversion
(`edit_quality.swap_object`; `p2p.Replace()`, and Replace with a pixel `LocalBlend` on the object words) and reads
the result with the evaluator. Both return an `edit_quality.EditMeasure`; `tests/test_inversion.py`,
`bench/inversion_bars.py` and notebook 08 share them, so a number in the notebook is the number a test checks.

Why the model's own world: a world-1 model's VAE has never seen world 2's horizons, clouds and road markings and
round-trips such renders at 14-16 dB (30 dB on its own world), so no inversion could be judged on them; once a
world-2 model ships, `held_out_scenes` draws world-2 scenes (`edit_quality.edit_scenes`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..inversion import invert, psnr
from ..toyworld import analyze, render, sample_scenes
from .edit_quality import EDIT_SEED, EditMeasure, change, edit_scenes, read, swap_object
from .quality import trained_world

INVERT_SEED = EDIT_SEED + 5
"""Seed of the held-out scenes that are inverted (the training set is drawn from seed 0)."""


def held_out_scenes(n: int, *, seed: int = INVERT_SEED, background: str | None = None, world: int | None = None):
    """`n` held-out plain one-object scenes of `world` (default: the shipped model's, `trained_world()`), on
    `background` if given: world 2's are `edit_quality.edit_scenes`; world 1's are drawn the same way (no
    pattern, no watercolor, smooth roads)."""
    world = trained_world() if world is None else world
    if world == 2:
        return edit_scenes(n, seed=seed, background=background)
    pool = sample_scenes(max(4 * n, 64), seed, world=1, patterned=0.0, watercolor=0.0, bumpy=0.0)
    if background is not None:
        pool = [dataclasses.replace(s, background=background) for s in pool
                if (s.color, background) != ("green", "grass")]
    return pool[:n]


def invert_renders(pipe, n: int = 16, *, steps: int = 50, guidance: float = 7.5, inner_steps: int = 10,
                   seed: int = INVERT_SEED, scenes=None, progress: bool = False) -> EditMeasure:
    """`n` held-out one-object renders (`held_out_scenes`, or the given `scenes`), each inverted by DDIM alone
    and by null-text inversion.

    Summary: mean PSNR (dB) against the render of the VAE round trip ("psnr_vae"), the DDIM-only and the
    null-text reconstructions, and the gaps "vae_minus_null_text" and "null_text_minus_ddim"; the lowest
    null-text PSNR ("psnr_null_text_min"). Rows: scene, image, ddim and null_text (`Inversion`s)."""
    rows = []
    for s in held_out_scenes(n, seed=seed) if scenes is None else scenes:
        image = render(s)
        kw = dict(steps=steps, guidance=guidance, progress=progress)
        ddim = invert(pipe, image, s.caption, null_text=False, **kw)
        null = invert(pipe, image, s.caption, inner_steps=inner_steps, **kw)
        rows.append(dict(scene=s, image=image, ddim=ddim, null_text=null))
    return EditMeasure(inversion_summary(rows), rows)


def inversion_summary(rows) -> dict:
    """`invert_renders`' summary of its rows (rows of several calls may be pooled)."""
    out = {
        "psnr_vae": np.mean([psnr(r["image"], r["null_text"].vae_roundtrip) for r in rows]),
        "psnr_ddim": np.mean([r["ddim"].psnr for r in rows]),
        "psnr_null_text": np.mean([r["null_text"].psnr for r in rows]),
        "psnr_null_text_min": np.min([r["null_text"].psnr for r in rows]),
    }
    out["vae_minus_null_text"] = out["psnr_vae"] - out["psnr_null_text"]
    out["null_text_minus_ddim"] = out["psnr_null_text"] - out["psnr_ddim"]
    return {k: float(v) for k, v in out.items()}


def replace_inverted(pipe, inverted: EditMeasure) -> EditMeasure:
    """The object word of each of `inverted`'s renders replaced on its null-text inversion, three ways.

    "with": `Replace()` (the paper's defaults); "blend": Replace with `LocalBlend([old, new], pixels=True)` on
    the two object words, the local edit for a real picture (outside the mask the source row, latents and then
    pixels); "without": the target caption sampled from the same inverted latent and null embeddings with no
    control (`Replace(cross_steps=0, self_steps=0)`). Changes outside the objects (the source's and the edit's, as
    the evaluator reads them) are measured against the source row, the reconstruction the edit starts from, as
    `edit_quality.replace_one` does for generated pictures: what the edit changed, not what the VAE already lost
    ("outside_with/blend/without"; "outside_ratio" = with / without, "blend_ratio" = blend / without); against
    the real render too ("outside_render_*", "outside_render_ratio", "blend_render_ratio"). Also
    target_seen_with/blend/without and the source row's PSNR against the render ("psnr_source", the
    reconstruction inside an edit batch)."""
    from ..p2p import LocalBlend, Replace, edit

    rows = []
    for r in inverted.rows:
        s, inv = r["scene"], r["null_text"]
        t = dataclasses.replace(s, object=swap_object(s.object))
        with_p2p = edit(pipe, s.caption, [t.caption], Replace(), inversion=inv)
        blend = edit(pipe, s.caption, [t.caption], Replace(local_blend=LocalBlend([s.object, t.object], pixels=True)),
                     inversion=inv)
        without = edit(pipe, s.caption, [t.caption], Replace(cross_steps=0, self_steps=0), inversion=inv)
        rows.append(dict(scene=s, target=t, image=r["image"], src=with_p2p.images[0], tgt=with_p2p.images[1],
                         blend=blend.images[1], without=without.images[1]))
    return EditMeasure(replace_summary(rows), rows)


def replace_summary(rows) -> dict:
    """`replace_inverted`'s summary of its rows (rows of several calls may be pooled)."""
    out = {"psnr_source": np.mean([psnr(r["image"], r["src"]) for r in rows])}
    for key, name in (("tgt", "with"), ("blend", "blend"), ("without", "without")):
        seen = [read(r[key], r["target"])[0] for r in rows]
        out[f"target_seen_{name}"] = np.mean([o is not None and o.object == r["target"].object
                                              for o, r in zip(seen, rows)])
        for ref, label in (("src", "outside"), ("image", "outside_render")):
            out[f"{label}_{name}"] = np.mean([
                change(r[ref], r[key], ~(analyze(r[ref]).mask | analyze(r[key]).mask)) for r in rows])
    out["outside_ratio"] = out["outside_with"] / out["outside_without"]
    out["blend_ratio"] = out["outside_blend"] / out["outside_without"]
    out["outside_render_ratio"] = out["outside_render_with"] / out["outside_render_without"]
    out["blend_render_ratio"] = out["outside_render_blend"] / out["outside_render_without"]
    return {k: float(v) for k, v in out.items()}

