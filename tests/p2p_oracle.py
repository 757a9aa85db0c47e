"""The slow reference for prompt-to-prompt: softmax materialised in every layer, the paper's formulas literally.

It follows the structure of google/prompt-to-prompt's `AttentionControlEdit` (a per-kind
`replace_cross_attention`, a per-step word alpha blending it with the target's own map, self-attention copied
from the source in layers of at most `self_max_tokens` queries, the attention store and LocalBlend), with the
token mappings from `sdlab.align`. It plugs into the same loop as the fast path (`sdlab.attention.generate`),
so a parity test compares the attention arithmetic and nothing else.

Schedules follow sdlab's rule, not the reference's int(fraction * T): step i is controlled iff
start * T <= i < end * T, tested literally at every step on the exact fractions `sdlab.schedule.window` reads
(the fast path computes whole-step bounds once instead, so the two agree only if both implement the rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdlab import align
from sdlab.attention import Controller
from sdlab.p2p import Refine, Replace, Reweight
from sdlab.schedule import cross_windows, window


def sharpen(unet, factor: float = 3.0) -> None:
    """Scale every query and key projection so a random UNet's attention is peaked, not uniform: edits then
    change the output a lot and a broken edit cannot hide in near-uniform maps."""
    with torch.no_grad():
        for name, module in unet.named_modules():
            if hasattr(module, "to_q") and hasattr(module, "to_k"):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)


class OracleController(Controller):
    def __init__(self, edit, tokenizer, source, targets, self_max_tokens: int, blend_tokens: int | None = None):
        self.edit, self.tok, self.prompts = edit, tokenizer, [source, *targets]
        self.self_max_tokens, self.blend_tokens = self_max_tokens, blend_tokens
        self.n_t = len(targets)

    # --- the pieces, per kind, from sdlab.align ---------------------------------------------------------
    def base_pieces(self, kind, j):
        src, tgt = self.prompts[0], self.prompts[1 + j]
        if isinstance(kind, Replace):
            return {"mapper": align.replacement_mapper(self.tok, src, tgt)}
        if isinstance(kind, Refine):
            mapper, alphas = align.refinement_alignment(self.tok, src, tgt)
            return {"mapper": mapper, "alphas": alphas}
        raise TypeError(kind)

    def replace_cross_attention(self, kind, j, attn_base, att_replace):
        """attn_base (heads, pixels, tokens) of the source; att_replace the same of target j."""
        if isinstance(kind, Replace):
            return torch.einsum("hpw,wn->hpn", attn_base, self.pieces[j]["mapper"])
        if isinstance(kind, Refine):
            p = self.pieces[j]
            return attn_base[:, :, p["mapper"]] * p["alphas"] + att_replace * (1 - p["alphas"])
        # Reweight
        if kind.base is not None:
            attn_base = self.replace_cross_attention(kind.base, j, attn_base, att_replace)
        return attn_base * self.equalizer[j]

    def start(self, run, layers):
        super().start(run, layers)
        kind = self.edit.base if isinstance(self.edit, Reweight) else self.edit
        self.pieces = [self.base_pieces(kind, j) if kind is not None else {} for j in range(self.n_t)]
        if isinstance(self.edit, Reweight):
            self.equalizer = []
            for j in range(self.n_t):
                w = {k: (v[j] if isinstance(v, (list, tuple)) else v) for k, v in self.edit.weights.items()}
                self.equalizer.append(align.equalizer(self.tok, self.prompts[1 + j], w))
        T, L = run.steps, self.tok.model_max_length
        windows = cross_windows(self.edit.cross_steps)
        self.alpha = torch.zeros(T, self.n_t, L)
        for step in range(T):
            for j in range(self.n_t):
                for t in range(L):
                    s, e = windows["default_"]
                    for word, (ws, we) in windows.items():
                        if word != "default_":
                            try:
                                if t in align.word_indices(self.tok, self.prompts[1 + j], word):
                                    s, e = ws, we
                            except ValueError:
                                pass
                    self.alpha[step, j, t] = 1.0 if s * T <= step < e * T else 0.0
        self.self_window = window(self.edit.self_steps, "self_steps")
        self.store = None

    def wants(self, layer):
        return True

    def attend(self, layer, q, k, v):
        c = self.cond_offset(layer, q.shape[0])
        attn = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)  # (batch, heads, N, keys)
        attn = attn.clone()
        cond = attn[c:]
        if layer.is_cross and self.blend_tokens is not None and cond.shape[2] == self.blend_tokens:
            self.store = cond.clone() if self.store is None else self.store + cond  # the attention store
        T = self.run.steps
        s0, s1 = self.self_window
        if layer.is_cross:
            for j in range(self.n_t):
                alpha_words = self.alpha[self.step, j].to(cond)
                new = self.replace_cross_attention(self.edit, j, cond[0], cond[1 + j])
                cond[1 + j] = new * alpha_words + (1 - alpha_words) * cond[1 + j]
        elif s0 * T <= self.step < s1 * T and cond.shape[2] <= self.self_max_tokens:
            cond[1:] = cond[0]
        attn[c:] = cond
        return attn @ v

    def step_end(self, step, latents):
        blend = self.edit.local_blend
        if blend is None or not window((blend.start, 1), "start")[0] * self.run.steps <= step:
            return latents
        alpha_layers = torch.zeros(len(self.prompts), self.tok.model_max_length)
        for word in blend.words:
            for i, p in enumerate(self.prompts):
                try:
                    alpha_layers[i, align.word_indices(self.tok, p, word)] = 1
                except ValueError:
                    pass
        res = int(round(self.blend_tokens**0.5))
        maps = self.store.reshape(len(self.prompts), -1, 1, res, res, self.store.shape[-1])
        maps = (maps * alpha_layers[:, None, None, None, None, :]).sum(-1).mean(1)
        mask = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
        mask = F.interpolate(mask, size=latents.shape[2:])
        mask = mask / mask.max(2, keepdims=True)[0].max(3, keepdims=True)[0]
        mask = mask.gt(blend.threshold)
        mask = (mask[:1] + mask[1:]).float()
        out = latents.clone()  # the reference broadcasts one target only; row by row here
        out[1:] = latents[:1] + mask * (latents[1:] - latents[:1])
        return out
