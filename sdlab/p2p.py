"""Prompt-to-prompt editing (Hertz et al. 2022): edit a generated image by editing its prompt.

The source and every target start from one latent and are denoised together; during the first steps each
target's cross-attention is taken (through a token mapping) from the source's, so the layout stays while the
words change. Every edit reduces, per target, to a token mapping `M` (source -> target), a per-token alpha `a`
(1 where the target token has a source token) and an equalizer `e` (Reweight's scales). The paper's edited map
is then, with `w` the time window of each token (1 while it is controlled),

    P' = w * (P_src M diag(a) + P_tgt diag(1 - a)) diag(e) + (1 - w) * P_tgt,

and its output `P' V` is computed without materialising P as

    SDPA(q_src, k_src, M diag(a e w) V) + SDPA(q_tgt, k_tgt, diag((1 - a) e w + 1 - w) V).

Self-attention injection (the target attends as the source did) is SDPA(q_src, k_src, v_tgt). Edits touch the
conditional half of the guidance batch only.

On a compiled UNet (`edit(..., compile=True)`, `sdlab.attention.compiling`) the controlled layers run at every
step: cross-attention always takes the second form above, with the step's `M diag(a e w)` and
`(1 - a) e w + 1 - w` in tensors updated in place (a closed window gives 0 and 1: plain attention), and
self-attention picks the source's queries and keys for the targets through a flag tensor.

Schedules (which steps each window edits, by one exact rule) are in `sdlab.schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import align
from .attention import (Controller, StepTable, check_pipeline, compile_pipeline, default_level, generate,
                        probabilities, sdpa)
from .attention.capture import level_for
from .schedule import DEFAULT_CROSS, DEFAULT_SELF, Schedule, cross_windows, schedule, window


def _is_whole(value, least: int) -> bool:
    """Whether `value` is a whole number (an int, not a bool) of at least `least`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass
class LocalBlend:
    """Keep the target equal to the source outside the pixels of `words` (the paper's local editing).

    After each step i with start*T <= i (exactly, as every window; see `sdlab.schedule`), the targets' latents
    are blended with the source's through a mask: the cross-attention of `words` (summed over every prompt that
    holds them; a word needs to be in one prompt at least) at resolution `res` (default: the capture default),
    max-pooled 3x3, normalised, above `threshold`.

    `pixels=True` also composites the decoded images with the last step's mask (upsampled, unchanged): outside
    it each target's pixels are the source's, exactly. A latent blend alone still moves every pixel a little,
    since the VAE decoder's normalisation and mid-block attention see the whole latent. Decoded outputs only;
    with `output_type="latent"` the latents are blended as always.

    `dilate` (None: the paper's mask, above) makes the mask at the latent's resolution instead: the map upsampled
    bilinearly to the latent (as `Capture.word_mask` upsamples), max-pooled `dilate` latent pixels each way,
    normalised, above `threshold`. The paper's one map cell each way is a sixteenth of the picture's side on SD
    at 512 (16x16 maps; `dilate=4` there is about the same extent, with smooth edges); on a model whose maps are
    coarser (the toy model's are 8x8, one cell an eighth of the side) it keeps a wide ring of the background in
    the mask, and `dilate=1` (a sixteenth of its 16x16 latent) keeps the paper's extent.
    """

    words: str | list = ()
    threshold: float = 0.3
    start: float = 0.2
    res: int | None = None
    pixels: bool = False
    dilate: int | None = None

    def __post_init__(self):
        self.words = [self.words] if isinstance(self.words, str) else list(self.words)
        if not self.words or not all(isinstance(w, str) and w.strip() for w in self.words):
            raise ValueError(f"LocalBlend needs one or more words, e.g. LocalBlend(['cat', 'dog']); got {self.words!r}")
        window((self.threshold, self.threshold), "LocalBlend threshold")
        window((self.start, self.start), "LocalBlend start")
        if not isinstance(self.pixels, bool):
            raise TypeError(f"LocalBlend pixels must be True or False, got {self.pixels!r}")
        if self.dilate is not None and not _is_whole(self.dilate, 0):
            raise ValueError(f"LocalBlend dilate must be None (the paper's mask) or a whole number of latent pixels "
                             f">= 0, e.g. 1; got {self.dilate!r}")


@dataclass(kw_only=True)
class _Edit:
    cross_steps: float | tuple | dict | None = None
    """Fraction of steps (or (start, end), or {"default_": .., word: ..}) during which cross-attention is edited;
    step i of T is edited iff start*T <= i < end*T exactly (see `sdlab.schedule`)."""
    self_steps: float | tuple | None = None
    """Fraction of steps (or (start, end)) during which the targets' self-attention is the source's; same rule."""
    local_blend: LocalBlend | None = None
    self_max_res: int | None = None
    """Inject self-attention only in layers whose maps are at most this high (default: the capture default
    resolution and below: 16x16 and 8x8 on SD at 512, as the paper's code; 8x8 and 4x4 on the toy model, whose
    16x16 maps are its highest, as SD's 64x64). On the toy model the 16x16 self-attention holds the layout and the
    silhouette: injecting it (`self_max_res=16`) keeps the object's place and size, and the source's shape with it
    (README model card)."""

    def __post_init__(self):
        self.cross_steps = DEFAULT_CROSS if self.cross_steps is None else self.cross_steps
        self.self_steps = DEFAULT_SELF if self.self_steps is None else self.self_steps
        cross_windows(self.cross_steps), window(self.self_steps, "self_steps")
        if self.self_max_res is not None and not _is_whole(self.self_max_res, 1):
            raise ValueError(f"self_max_res must be None (the capture resolution and below) or the side of the largest "
                             f"self-attention maps to inject, e.g. 16; got {self.self_max_res!r}")
        if self.local_blend is not None and not isinstance(self.local_blend, LocalBlend):
            raise TypeError(f"local_blend must be a LocalBlend, got {self.local_blend!r}")


@dataclass(kw_only=True)
class Replace(_Edit):
    """Swap words one for one ("a red cat" -> "a red dog"); the prompts need the same number of words."""

    def mapping(self, tokenizer, source, target, index=0, n_targets=1):
        """(M (L, L), a (L,), e (L,)) for target number `index` of `n_targets`; see the module docstring."""
        m = align.replacement_mapper(tokenizer, source, target)
        return m, torch.ones(len(m)), torch.ones(len(m))


@dataclass(kw_only=True)
class Refine(_Edit):
    """Add or remove words ("a cat" -> "a striped cat"); shared tokens keep the source's attention."""

    def mapping(self, tokenizer, source, target, index=0, n_targets=1):
        mapper, alpha = align.refinement_alignment(tokenizer, source, target)
        m = torch.zeros(len(mapper), len(mapper))
        hit = mapper >= 0
        m[mapper[hit], torch.nonzero(hit).squeeze(1)] = 1.0
        return m, alpha, torch.ones(len(mapper))


@dataclass(kw_only=True)
class Reweight(_Edit):
    """Scale the attention on words: `Reweight({"bumpy": 4.0})`; a weight may be a list, one per target.

    Without `base` each target must be the source prompt itself (the source's attention is reweighted); with
    `base=Replace(...)` or `base=Refine(...)` the base maps the tokens first. Schedules left unset come from
    the base, else the paper's defaults.
    """

    weights: dict = field(kw_only=False)
    base: Replace | Refine | None = None

    def __post_init__(self):
        if self.base is not None and not isinstance(self.base, (Replace, Refine)):
            raise TypeError(f"Reweight's base must be Replace(...), Refine(...) or None; got {self.base!r}")
        for name in ("cross_steps", "self_steps", "local_blend", "self_max_res"):
            if getattr(self, name) is None and self.base is not None:
                setattr(self, name, getattr(self.base, name))
        super().__post_init__()
        if not isinstance(self.weights, dict) or not self.weights:
            raise TypeError(f"Reweight needs a dict word -> weight, e.g. Reweight({{'bumpy': 4.0}}); got {self.weights!r}")
        for word, value in self.weights.items():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                align.check_weight(word, v)

    def weights_for(self, index: int, n_targets: int) -> dict:
        out = {}
        for word, value in self.weights.items():
            if isinstance(value, (list, tuple)):
                if len(value) != n_targets:
                    raise ValueError(f"the weights of {word!r} are {len(value)} values for {n_targets} targets")
                value = value[index]
            out[word] = value
        return out

    def mapping(self, tokenizer, source, target, index=0, n_targets=1):
        if self.base is None:
            if align.tokenize(tokenizer, source) != align.tokenize(tokenizer, target):
                raise ValueError(
                    f"Reweight without a base reweights the source's own attention, so the target must be the "
                    f"source prompt; {target!r} differs from {source!r}. Pass base=Refine() or base=Replace()."
                )
            L = tokenizer.model_max_length
            m, a = torch.eye(L), torch.ones(L)
        else:
            m, a, _ = self.base.mapping(tokenizer, source, target, index)
        return m, a, align.equalizer(tokenizer, target, self.weights_for(index, n_targets))


class EditController(Controller):
    """Runs one edit over [source, *targets]; see the module docstring for the arithmetic and the schedules."""

    def __init__(self, edit, tokenizer, source: str, targets: list[str]):
        self.edit = edit
        n_t = len(targets)
        maps = [edit.mapping(tokenizer, source, target, j, n_t) for j, target in enumerate(targets)]
        self.M = torch.stack([m for m, _, _ in maps])  # (targets, L, L): M[s, t]
        self.a = torch.stack([a for _, a, _ in maps])  # (targets, L)
        self.e = torch.stack([e for _, _, e in maps])
        self.word_tokens = []  # (word, target index, token positions) of each word with a cross window of its own
        for word in cross_windows(edit.cross_steps):
            if word == "default_":
                continue
            found = False
            for j, target in enumerate(targets):
                try:
                    self.word_tokens.append((word, j, align.word_indices(tokenizer, target, word)))
                    found = True
                except ValueError:
                    continue
            if not found:
                raise ValueError(f"cross_steps names {word!r}, which is in none of the targets {targets!r}")
        self.blend = edit.local_blend
        if self.blend is not None:
            prompts = [source, *targets]
            tokens = torch.zeros(len(prompts), tokenizer.model_max_length)
            for word in self.blend.words:
                hits = 0
                for i, p in enumerate(prompts):
                    try:
                        tokens[i, align.word_indices(tokenizer, p, word)] = 1.0
                        hits += 1
                    except ValueError:
                        pass
                if not hits:
                    raise ValueError(f"LocalBlend word {word!r} is in none of the prompts {prompts!r}")
            self.blend_tokens = tokens

    def start(self, run, layers):
        super().start(run, layers)

        base = default_level(layers)
        res = self.edit.self_max_res
        self.self_ok = {
            layer.name: (layer.level >= base if res is None else layer.map_shape(run.latent_hw)[0] <= res)
            for layer in layers
        }
        self.blend_level, self.blend_sum, self.blend_mask = None, None, None
        if self.blend is not None:
            self.blend_level = level_for(self.blend.res, layers, run, "LocalBlend")
            self._blend_tokens = self.blend_tokens.to(run.device, torch.float32)
            self.blend_sum = torch.zeros(run.n, math.prod(self.blend_shape()), device=run.device)
        self._index = {}
        self.schedule = schedule(self.edit, run.steps)
        self._cross_states(run)
        if run.static:
            self._static_tables(run)

    def _cross_states(self, run):
        """The cross-attention operands of every step, built once per run: one state per distinct set of open
        windows (they change only where a window opens or closes), and per step the index of its state."""
        sched = self.schedule
        windows = [sched.cross] + [sched.words[word] for word, _, _ in self.word_tokens]
        self._states, self._state_at, keys = [], [], {}
        for step in range(run.steps + 1):  # set_step(steps) follows the last step
            key = tuple(step in r for r in windows)
            if key not in keys:
                keys[key] = len(self._states)
                aw = torch.full(self.a.shape, float(key[0]))
                for (_, j, idx), is_open in zip(self.word_tokens, key[1:]):
                    aw[j, idx] = float(is_open)
                a_s = self.a * self.e * aw
                beta = (1 - self.a) * self.e * aw + (1 - aw)
                cross_on = bool((a_s != 0).any() or (beta != 1).any())
                W = (self.M * a_s[:, None, :]).to(run.device, run.dtype)
                self._states.append((cross_on, W, None if bool((beta == 0).all()) else beta.to(run.device, run.dtype)))
            self._state_at.append(keys[key])

    def _static_tables(self, run):
        """The per-step operands as `StepTable`s, for a compiled UNet: W and beta of every state (beta None, all
        zeros, becomes zeros) and whether self-attention is injected (one row per step)."""
        zeros = torch.zeros(self.a.shape, device=run.device, dtype=run.dtype)
        self._W_now = StepTable(torch.stack([W for _, W, _ in self._states]))
        self._beta_now = StepTable(torch.stack([zeros if beta is None else beta for _, _, beta in self._states]))
        inject = [step in self.schedule.self_attention for step in range(run.steps + 1)]
        self._self_now = StepTable(torch.tensor(inject, device=run.device))

    def wants(self, layer):
        return layer.is_cross or self.self_ok[layer.name]

    def set_step(self, step):
        state = self._state_at[min(step, self.run.steps)]
        self.cross_on, self._W, self._beta = self._states[state]
        self.self_on = step in self.schedule.self_attention
        if self.run.static:
            self._W_now.set(state), self._beta_now.set(state), self._self_now.set(min(step, self.run.steps))
        super().set_step(step)

    def active(self, layer, step):
        if layer.is_cross:
            return self.cross_on or layer.level == self.blend_level
        return self.self_on

    def index(self, c, device):
        """Rows [0 .. c] then the source row c once per target: the batch with targets read from the source."""
        if c not in self._index:
            rows = list(range(c + 1)) + [c] * (self.run.n - 1)
            self._index[c] = torch.tensor(rows, device=device)
        return self._index[c]

    def attend(self, layer, q, k, v):
        c = self.cond_offset(layer, q.shape[0])
        if not layer.is_cross:
            if self.run.static:
                return self._self_static(q, k, v, c)
            idx = self.index(c, q.device)
            return sdpa(q[idx], k[idx], v)
        if layer.level == self.blend_level:
            p = probabilities(q[c:], k[c:])
            self.blend_sum.add_(torch.einsum("bhnl,bl->bn", p, self._blend_tokens))
        if self.run.static:
            return self._cross(q, k, v, c, self._W_now.now, self._beta_now.now)
        if not self.cross_on:
            return sdpa(q, k, v)
        if self._beta is None:
            idx = self.index(c, q.device)
            return sdpa(q[idx], k[idx], torch.cat([v[: c + 1], self._W[:, None] @ v[c + 1 :]]))
        return self._cross(q, k, v, c, self._W, self._beta)

    def _cross(self, q, k, v, c, W, beta):
        """The edited cross-attention output (module docstring, second form) for operands W (targets, L, L) and
        beta (targets, L)."""
        wv = W[:, None] @ v[c + 1 :]  # (targets, heads, L, d): M diag(a e w) V_tgt
        n_t, batch = self.run.n - 1, q.shape[0]
        qq = torch.cat([q, q[c : c + 1].expand(n_t, -1, -1, -1)])
        kk = torch.cat([k, k[c : c + 1].expand(n_t, -1, -1, -1)])
        vv = torch.cat([v[: c + 1], v[c + 1 :] * beta[:, None, :, None], wv])
        o = sdpa(qq, kk, vv)
        out = o[:batch]
        out[c + 1 :] += o[batch:]
        return out

    def _self_static(self, q, k, v, c):
        """Self-attention on a compiled UNet: the targets take the source's queries and keys where the step's
        flag says so, else their own."""
        n_t, inject = self.run.n - 1, self._self_now.now
        qq = torch.cat([q[: c + 1], torch.where(inject, q[c : c + 1].expand(n_t, -1, -1, -1), q[c + 1 :])])
        kk = torch.cat([k[: c + 1], torch.where(inject, k[c : c + 1].expand(n_t, -1, -1, -1), k[c + 1 :])])
        return sdpa(qq, kk, v)

    def step_end(self, step, latents):
        if self.blend is None or step not in self.schedule.local_blend:
            return latents
        h, w = self.blend_shape()
        maps = self.blend_sum.view(-1, 1, h, w)
        k = self.blend.dilate
        if k is None:  # the paper: one map cell each way, then up to the latent
            maps = F.interpolate(F.max_pool2d(maps, 3, 1, padding=1), size=tuple(latents.shape[-2:]))
        else:
            maps = F.interpolate(maps, size=tuple(latents.shape[-2:]), mode="bilinear", align_corners=False)
            maps = F.max_pool2d(maps, 2 * k + 1, 1, padding=k) if k else maps
        maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        mask = maps > self.blend.threshold
        self.blend_mask = mask[:1] | mask[1:]  # (targets, 1, h, w): the source's or the target's words
        mask = self.blend_mask.to(latents.dtype)
        out = latents.clone()
        out[1:] = latents[:1] + mask * (latents[1:] - latents[:1])
        return out

    def finish(self, images, output_type):
        """`LocalBlend(pixels=True)`: the decoded [source, *targets] with each target's pixels outside the last
        blend mask taken from the source, for `output_type` "pil" (a list of images), "np" (an (n, H, W, 3)
        array) or "pt" (an (n, 3, H, W) tensor); latents are returned as they are."""
        if self.blend is None or not self.blend.pixels or self.blend_mask is None or output_type == "latent":
            return images
        if output_type == "pt":
            keep = F.interpolate(self.blend_mask.float(), size=images.shape[-2:]).bool().to(images.device)
            return torch.cat([images[:1], torch.where(keep, images[1:], images[:1])])
        arrays = [np.asarray(im) for im in images]
        keep = F.interpolate(self.blend_mask.float().cpu(), size=arrays[0].shape[:2]).bool()[:, 0, :, :, None]
        out = [arrays[0]] + [np.where(k.numpy(), a, arrays[0]) for k, a in zip(keep, arrays[1:])]
        if output_type == "np":
            return np.stack(out)
        return [images[0]] + [Image.fromarray(a) for a in out[1:]]

    def blend_shape(self):
        return tuple(math.ceil(s / 2**self.blend_level) for s in self.run.latent_hw)


@dataclass
class EditResult:
    images: list
    """[source, *targets]."""
    prompts: list
    latent: torch.Tensor
    """The shared initial latent (1, c, h, w)."""
    edit: object
    schedule: Schedule | None = None
    """The steps the edit touched in this run (`schedule.edited_steps`: how many, per window)."""

    @property
    def edited_steps(self) -> dict[str, int]:
        """Number of edited steps per window, e.g. {"cross": 20, "self": 10}; see `Schedule`."""
        return self.schedule.edited_steps


def edit(pipe, source: str, targets, edit, *, seed=0, steps=None, guidance=None, latent=None, height=None,
         width=None, negative_prompt=None, output_type="pil", inversion=None, compile=False) -> EditResult:
    """Generate `source` and edit it into each of `targets` with `edit` (Replace, Refine or Reweight).

    Steps and guidance default to 50 and 7.5. With `inversion` (an `sdlab.inversion.Inversion` whose caption is
    `source`) the run starts from the inverted latent with its per-step null embeddings, steps and guidance (seed
    unused): the source row reproduces the real picture and the targets are edited from it. `compile=True`
    compiles the UNet first (`sdlab.compile`, kept for later edits; eager with a warning where torch cannot
    compile); the images are the eager ones within float tolerance.
    """
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("edit needs at least one target prompt, e.g. edit(pipe, 'a red cat', ['a red dog'], Replace())")
    check_pipeline(pipe, [source, *targets])  # and, for SDXL, both tokenizers read them as the same words
    if compile:
        compile_pipeline(pipe)
    if not isinstance(edit, (Replace, Refine, Reweight)):
        raise TypeError(f"edit must be Replace(...), Refine(...) or Reweight(...); got {edit!r}")
    ctl = EditController(edit, pipe.tokenizer, source, targets)
    if inversion is not None:  # the real picture's latent and null embeddings fix the run (sdlab.inversion)
        gen = inversion.replay(pipe, [source, *targets], ctl, output_type=output_type, steps=steps, guidance=guidance,
                               latent=latent, height=height, width=width, negative_prompt=negative_prompt)
    else:
        gen = generate(pipe, [source, *targets], ctl, seed=seed, steps=50 if steps is None else steps,
                       guidance=7.5 if guidance is None else guidance, latent=latent, height=height, width=width,
                       negative_prompt=negative_prompt, output_type=output_type)
    return EditResult(gen.images, gen.prompts, gen.latent, edit, ctl.schedule)
