"""The toy model's tokenizer: a CLIP-format BPE over the toy world's vocabulary.

Every toy-world word is a single token ("cat</w>"); the byte-level alphabet and the merge pieces are in the
vocabulary too, as in CLIP, so any text tokenizes. Words outside the toy world become sub-word pieces that
the toy model never saw in training: `unknown_words` names them so callers can warn.
"""

from __future__ import annotations

import re
import warnings

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer

from ..toyworld import vocabulary

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE on `words` (each counted once) until every word is one symbol; ties broken by order."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for seq in seqs:
            for pair in zip(seq, seq[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for k, seq in enumerate(seqs):
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[k] = out


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP-format BPE tokenizer whose merges make every toy-world word one token (deterministic)."""
    words = vocabulary()
    merges = _learn_merges(words)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = [BOS, EOS] + alphabet + [a + "</w>" for a in alphabet] + [a + b for a, b in merges]
    vocab = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    for word in words:
        ids = tok(word, add_special_tokens=False).input_ids
        if len(ids) != 1:  # pragma: no cover - a broken merge table is a bug, not an input error
            raise RuntimeError(f"toy tokenizer splits {word!r} into {ids}")
    return tok


def unknown_words(prompt: str) -> list[str]:
    """Words of `prompt` (lower-cased, punctuation dropped) that the toy world does not know."""
    known = set(vocabulary())
    return [w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known]


def warn_unknown_words(prompts) -> None:
    """Warn once per prompt that holds words the toy model never saw."""
    for prompt in [prompts] if isinstance(prompts, str) else prompts:
        unknown = unknown_words(prompt)
        if unknown:
            warnings.warn(
                f"the toy model does not know {', '.join(map(repr, unknown))} in {prompt!r}: they become sub-word "
                f"tokens it never saw in training. Known words: {', '.join(vocabulary())}",
                stacklevel=3,
            )


def is_toy_tokenizer(tokenizer) -> bool:
    """True for a tokenizer built by `build_tokenizer` (every toy-world word one token, a small vocabulary)."""
    if len(tokenizer) > 2000:
        return False
    return all(len(tokenizer(w, add_special_tokens=False).input_ids) == 1 for w in vocabulary())


def check_prompts(pipe, prompts) -> None:
    """Warn about words the toy model never saw, when `pipe` is a toy-world model; real models pass through."""
    if is_toy_tokenizer(pipe.tokenizer):
        warn_unknown_words(prompts)
