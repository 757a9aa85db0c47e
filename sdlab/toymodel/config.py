"""Configuration of `sdlab train-toy`: one dataclass, its defaults the shipped model's recipe."""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass


@dataclass
class ToyTrainConfig:
    """What `train_toy` does. Defaults are the shipped model's recipe."""

    output: str = "runs/toy"
    """Run folder: checkpoints, log.csv, config.json, and the final pipeline in `pipeline/`."""
    arch: str = "toy"
    """"toy" (the shipped size) or "tiny" (a seconds-fast model for tests)."""
    world: int = 2
    """Toy world the training set is drawn from (`toyworld.sample_scenes(world=...)`): 2 (the shipped
    model's), layout by object, one or two objects, a horizon and unnamed detail, or 1, one object placed
    anywhere on a flat background (the first model's)."""
    n_images: int = 20000
    """Size of the fixed training set of rendered scenes."""
    watercolor: float = 0.15
    """Share of watercolor paintings in the training set."""
    layout_spread: float = 0.0
    """World 2: share of objects laid out by a random object's `LAYOUT` prior instead of their own
    (`toyworld.sample_scenes(layout_spread=...)`), so that the model has seen a bird where cats stand and a star
    as large as a house, and a prompt-to-prompt replacement that keeps the source's layout asks the target word for
    something it can draw. 0 in the shipped recipe."""
    anneal_layout_spread: float = 0.0
    """`layout_spread` of the anneal's (phase 4's) own training set: phases 1-3 learn from `layout_spread`'s scenes,
    the anneal from a second set of `n_images` scenes (seed `seed + 2`) in which this share of the objects is laid
    out by a random object's prior, so the model first learns its objects where they belong and then learns to draw
    them where another object stood. Equal to `layout_spread` (both 0 in the shipped recipe): the anneal reads phase
    2's set; any other value, 0 included, gives it a set of its own (so `layout_spread` 0.25 with this 0 learns the
    objects on lent layouts, then anneals on the world's own)."""
    vae_creature: float = 0.15
    """Share of extra creature-style images the VAE (only) sees, so finetuning on creatures finds a VAE that draws them."""
    vae_steps: int = 1200
    vae_lr: float = 2e-3
    unet_steps: int = 5000
    lr: float = 5e-4
    warmup: int = 200
    lr_floor: float = 1.0
    """Each phase's learning rate decays along a cosine to this fraction of its peak by the phase's last step;
    1.0 keeps it constant after the warmup (the shipped recipe)."""
    batch_size: int = 32
    cfg_dropout: float = 0.1
    """Share of empty captions, for classifier-free guidance."""
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    ema_text_encoder: bool = False
    """Ship the EMA of the text encoder too (the UNet's EMA always ships); False ships the last text encoder."""
    pad_dropout: float = 0.0
    """Share of captions whose padding positions (after the end token) get the empty caption's states instead.
    The causal text encoder copies the whole prompt into the ~70 padding states, so the UNet can read the prompt
    from them, and scaling one word's attention (reweighting) then does little. Measured (README model card):
    0.5 from scratch makes "bumpy" x4 reweighting work, but costs color, pattern and the object word's map IoU;
    the shipped recipe applies it in the anneal only (`anneal_pad_dropout`). The pipeline at inference is
    unchanged."""
    object_isolation: float = 0.0
    """Share of captions whose object words are isolated in phase 2 (`isolate_objects`): every state but an object
    word's own is computed with the caption's object words drawn at random, and each object word's state with the
    *other* object words drawn at random, so the UNet can read an object only from its own word. The causal text
    encoder otherwise copies "cat" into every state after it ("on grass", the end token, the padding), and a
    prompt-to-prompt replacement that keeps the maps but not those states still moves the object where the new
    word's layout prior puts it. The pipeline at inference is unchanged."""
    anneal_object_isolation: float = 0.5
    """`object_isolation` during the anneal (phase 4) only (the shipped recipe). Measured on the world-2 model
    (README model card), against the same anneal without it: held-out object 87.5% -> 91.2%, prompt-to-prompt
    Replace keeps more outside the object (outside ratio 0.675 -> 0.453)."""
    anneal_attribute_isolation: float = 0.0
    """`attribute_isolation` during the anneal (phase 4): the attribute "bumpy" stated only at its own word
    (`isolate_attribute`) in the first anneal, from phase 2's weights; 0 in the shipped recipe. Phase 6 does the
    same as a second anneal, which costs objects (README model card). Measured at 0.5 from scratch: "bumpy" x0
    reads 0.36 bumpiness (its smooth roads 0.28, the shipped model 1.13), but held-out one-object scenes keep
    their object in 88.7% (below issue 11's 90%) and x-2 reads bumpier than x0, so it does not ship."""
    seed: int = 0
    device: str | None = None
    """None: cuda if present, else cpu."""
    decoder_steps: int = 1000
    """Phase 3: refine the VAE decoder alone on the frozen encoder's latents (the UNet's latent space stays)."""
    decoder_lr: float = 5e-4
    anneal_steps: int = 1000
    """Phase 4 (0 = none): continue the UNet and the text encoder from phase 2's last (not EMA) weights with a
    fresh AdamW at `lr`, a 5% warmup, then linear decay to 0; the annealed weights ship instead of the EMA.
    Measured on the first (world-1) model: with `anneal_pad_dropout` 0.5, 2,000 steps on its run raised held-out
    color from 86% to 94% (64 held-out scenes) and made reweighting work; 1,000 steps gave 87.5-90.6% (two
    runs); the whole recipe from scratch reached 95% color but flat reweighting."""
    anneal_pad_dropout: float = 0.5
    """`pad_dropout` during the anneal (phase 4) only: the UNet learns to read the words themselves, so scaling
    one word's attention (reweighting) acts, while phases 1-3 keep the plain recipe."""
    vae_refine_steps: int = 600
    """Phase 5 (0 = none): the whole VAE, the encoder too, with the encoder's latents of the world's scenes (not of
    the creatures) held where the UNet learned them by a squared-error anchor (`vae_refine_anchor`);
    `--refine-vae-of` runs it alone on a saved pipeline, to retrofit a VAE that never saw today's creature style
    (the shipped model's phase 5 was run so, on its phases 1-4). Without the held decoder
    (`vae_refine_generated` 0; README model card, 400 steps) creature round trips read style 73% -> 98%, but plain
    generations through the new decoder move enough for the two-object quality bar to be missed."""
    vae_refine_lr: float = 3e-4
    vae_refine_anchor: float = 1.0
    vae_refine_generated: int = 512
    """Phase 5 with the decoder held (0 = not held): the pipeline first generates this many latents of its own (the
    first training captions, 25 DDIM steps, guidance 7.5), and the decoder is held to its outputs from before phase
    5 on them (weight `vae_refine_hold`) and on the world's latents (its target there is its old output, not the
    picture), so only the creatures teach it anything new. Measured on the shipped model (README model card, 512
    latents, 600 steps at 3e-4): creature round trips 73% -> 96% style, the held-out quality bars kept."""
    vae_refine_hold: float = 0.3
    attribute_anneal_steps: int = 0
    """Phase 6 (0 = none, as in the shipped recipe): a second, short anneal of the UNet and the text encoder from
    their phase-4 weights (a fresh AdamW at `attribute_anneal_lr`, a 5% warmup, linear decay to 0; the anneal's
    padding dropout and object isolation) with the attribute "bumpy" isolated (`attribute_isolation`).
    `--anneal-attributes-of` runs it alone on a saved pipeline. Measured so on the shipped model (README model card,
    600 steps): "bumpy" x0 reweighting reads 1.13 -> 0.41 bumpiness (its smooth roads 0.28), but held-out
    one-object scenes lose objects (91.2% -> 87.5%, below issue 11's 90%), so it does not ship. The same second anneal
    without the isolation loses more (85.0%): the cost is the second anneal's, and `anneal_attribute_isolation`
    puts the isolation in the first."""
    attribute_anneal_lr: float = 2.5e-4
    attribute_isolation: float = 0.5
    """Share of the captions with "bumpy" whose other positions are stated with a filler in its place, and of the
    smooth-road captions whose context says "bumpy" (inserted before "road") while the word's own position does
    not and the picture stays smooth (`isolate_attribute`), in phase 6. The causal text encoder copies "bumpy" into
    "road", the end token and the padding, and the UNet reads the bumps there (measured on the phase-4 model: the
    word's own state alone 0.40 bumpiness, the context alone 1.47, smooth 0.32), so prompt-to-prompt reweighting
    cannot scale them with the word's attention. The pipeline at inference is unchanged."""
    checkpoint_minutes: float = 3.0
    """Write a checkpoint at least this often (and at the end of each phase)."""


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal that follows it in the class body),
    whitespace collapsed, by field name; fields without one are left out. `sdlab train-toy --help` shows them."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {a.target.id: " ".join(b.value.value.split()) for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)}


class TrainingError(RuntimeError):
    pass
