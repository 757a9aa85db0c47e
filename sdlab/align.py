"""Token alignment for prompt-to-prompt: words to token positions, and how a target prompt's tokens map onto
the source prompt's.

Pure functions of a tokenizer and prompts. Positions count the start token, as the text encoder sees them:
position 0 is `<|startoftext|>`, the prompt's first token is position 1. Prompts are truncated exactly as
the pipeline truncates them (start token, the first `max_length - 2` tokens, end token) with a warning.

A "word" is what the CLIP tokenizer splits before byte-pair encoding: a run of letters, a digit, or a run of
punctuation. Its tokens are the ones up to and including the token that ends in `</w>`, so a word the
vocabulary lacks ("watercolour" -> "water", "colour</w>") is still one word of several tokens.
"""

from __future__ import annotations

import warnings
from numbers import Real

import torch

def tokenize(tokenizer, prompt: str) -> list[int]:
    """Token ids of `prompt` with start and end tokens, without padding, truncated as the pipeline does."""
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}: {prompt!r}")
    ids = tokenizer(prompt).input_ids
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        dropped = tokenizer.decode(ids[limit - 1 : -1])
        warnings.warn(
            f"the prompt {prompt!r} has {len(ids) - 2} tokens but the text encoder reads {limit - 2}: "
            f"{dropped!r} is dropped (the pipeline truncates the same way). Shorten the prompt.",
            stacklevel=2,
        )
        ids = ids[: limit - 1] + [ids[-1]]
    return ids


def _groups(tokenizer, ids: list[int]) -> list[list[int]]:
    """Positions (into `ids`) of each word of a tokenized prompt; start and end tokens excluded."""
    tokens = tokenizer.convert_ids_to_tokens(ids)
    marks_ends = any(t.endswith("</w>") for t in tokens[1:-1])
    groups, current = [], []
    for pos in range(1, len(ids) - 1):
        current.append(pos)
        if not marks_ends or tokens[pos].endswith("</w>"):
            groups.append(current)
            current = []
    if current:  # truncation can cut a word in half
        groups.append(current)
    return groups


def words(tokenizer, prompt: str) -> list[tuple[str, list[int]]]:
    """`(word, token positions)` for each word of `prompt`, in order, as the tokenizer reads it (lower case)."""
    ids = tokenize(tokenizer, prompt)
    return [(tokenizer.decode([ids[p] for p in g]).strip(), g) for g in _groups(tokenizer, ids)]


def word_indices(tokenizer, prompt: str, word: str | int) -> list[int]:
    """Token positions of every occurrence of `word` in `prompt`.

    `word` is matched as the tokenizer reads it (case and spacing do not matter; "bumpy road" matches the two
    words in a row). An int picks the word at that index (0-based) of `words(tokenizer, prompt)`. A word that
    is not in the prompt raises a `ValueError` that lists the prompt's words.
    """
    found = words(tokenizer, prompt)
    if isinstance(word, bool) or not isinstance(word, (str, int)):
        raise TypeError(f"a word must be a string or a word index, got {type(word).__name__}: {word!r}")
    if isinstance(word, int):
        if not -len(found) <= word < len(found):
            raise IndexError(f"word index {word} is out of range: {prompt!r} has {len(found)} words")
        return list(found[word][1])
    ids = tokenize(tokenizer, prompt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wanted = tokenizer(word, add_special_tokens=False).input_ids
    n = len(wanted)
    starts = [g[0] for _, g in found]
    hits = [list(range(s, s + n)) for s in starts if n and ids[s : s + n] == wanted and (s + n == len(ids) - 1 or s + n in starts)]
    if not hits:
        names = ", ".join(w for w, _ in found)
        raise ValueError(f"{word!r} is not a word of the prompt {prompt!r}; its words are: {names}")
    return [p for h in hits for p in h]


def replacement_mapper(tokenizer, source: str, target: str) -> torch.Tensor:
    """The Replace mapper: a `(L, L)` matrix `M` (L = 77) with `M[s, t]` the share of source token s's attention
    that target token t receives, so the target's edited map is `P_source @ M`.

    Prompts must have the same number of words. Equal words map token to token; a swapped word of a different
    token count spreads each source token's weight evenly over the new word's tokens, and the tokens after it
    stay aligned. After the last word the end and padding tokens map in order; source padding that runs past
    the end maps onto the last position. Every row sums to 1, so attention stays normalised.
    """
    L = tokenizer.model_max_length
    src, tgt = tokenize(tokenizer, source), tokenize(tokenizer, target)
    gs, gt = _groups(tokenizer, src), _groups(tokenizer, tgt)
    if len(gs) != len(gt):
        raise ValueError(
            f"Replace swaps words one for one, but the source {source!r} has {len(gs)} words and the target "
            f"{target!r} has {len(gt)}. Use Refine to add or remove words."
        )
    m = torch.zeros(L, L)
    m[0, 0] = 1.0
    for s_pos, t_pos in zip(gs, gt):
        if len(s_pos) == len(t_pos):
            m[s_pos, t_pos] = 1.0
        else:
            for s in s_pos:
                m[s, t_pos] = 1.0 / len(t_pos)
    s_end, t_end = len(src) - 1, len(tgt) - 1  # positions of the end tokens
    for k in range(L - s_end):
        m[s_end + k, min(t_end + k, L - 1)] = 1.0
    return m


def global_align(x: list, y: list, weights: list[int] | None = None) -> list[tuple[int, int]]:
    """An order-preserving matching of equal elements of `x` and `y` with the most weight.

    Returns the matched pairs `(i, j)`, `x[i] == y[j]`, increasing in both, whose total weight (`weights[i]`
    for a matched `x[i]`; 1 each by default, i.e. a longest common subsequence) is the largest possible.
    Unequal elements are never paired. Ties are broken by one rule, walking both sequences from the front: at
    `(i, j)`, `x[i]` is matched to `y[j]` if some best matching of `x[i:]` and `y[j:]` does so; otherwise
    `y[j]` is left unmatched if a best matching allows it, otherwise `x[i]` is. So an element goes to the
    earliest equal partner that still allows a best matching: `[a, b]` against `[a, b, b]` pairs `b` with the
    first `b`, and `[a, a]` against `[a]` pairs the first `a`.
    """
    n, m = len(x), len(y)
    w = [1] * n if weights is None else [int(v) for v in weights]
    if len(w) != n or any(v <= 0 for v in w):
        raise ValueError(f"global_align needs one positive integer weight per element of x; got {weights!r}")
    best = [[0] * (m + 1) for _ in range(n + 1)]  # best[i][j]: the most weight matching x[i:] with y[j:]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            b = max(best[i + 1][j], best[i][j + 1])
            if x[i] == y[j]:
                b = max(b, w[i] + best[i + 1][j + 1])
            best[i][j] = b
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if x[i] == y[j] and w[i] + best[i + 1][j + 1] == best[i][j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j + 1] == best[i][j]:
            j += 1
        else:
            i += 1
    return pairs


def word_alignment(tokenizer, source: str, target: str) -> list[tuple[list[int], list[int]]]:
    """The words Refine carries over: `(source positions, target positions)` of each matched pair of words.

    Two words can match only if they are the same word (the same token ids). Among the order-preserving
    matchings of equal words, the one that keeps the most tokens is chosen (each word weighs its token count),
    ties broken as `global_align` breaks them (a word goes to the earliest equal word of the other prompt that
    still allows a best matching). Every other word of either prompt is matched to nothing.
    """
    return _word_pairs(tokenizer, tokenize(tokenizer, source), tokenize(tokenizer, target))


def _word_pairs(tokenizer, src: list[int], tgt: list[int]) -> list[tuple[list[int], list[int]]]:
    gs, gt = _groups(tokenizer, src), _groups(tokenizer, tgt)
    key_s = [tuple(src[p] for p in g) for g in gs]
    key_t = [tuple(tgt[p] for p in g) for g in gt]
    return [(gs[i], gt[j]) for i, j in global_align(key_s, key_t, [len(g) for g in gs])]


def refinement_alignment(tokenizer, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The Refine alignment: for each target position, the source position it copies attention from (or -1),
    and its alpha (1 where it copies, 0 for tokens of words the target adds). Both `(L,)`, L = 77.

    Words first, then tokens: the words of the two prompts are matched by `word_alignment`, and a matched
    target word copies its source word token by token (the two are the same tokens). A target word without a
    match gets -1 on all its tokens. So no token is ever aligned to a token of another word, even where a
    piece of a split word equals a token of the other prompt ("a cat" -> "a zebra cat": "zebra" is
    "z e b r a</w>", and "a" still maps to "a"). The start token maps to the start token, the end token to the
    end token, and the padding after it in order, clipped to the last position.
    """
    L = tokenizer.model_max_length
    src, tgt = tokenize(tokenizer, source), tokenize(tokenizer, target)
    n_src, n_tgt = len(src), len(tgt)
    mapper = torch.full((L,), -1, dtype=torch.long)
    mapper[0] = 0
    for s_pos, t_pos in _word_pairs(tokenizer, src, tgt):
        mapper[t_pos] = torch.tensor(s_pos)
    for t in range(n_tgt - 1, L):  # the end token, then padding
        mapper[t] = min(n_src - 1 + t - (n_tgt - 1), L - 1)
    return mapper, (mapper >= 0).float()


def check_weight(word, value) -> float:
    """`value` as a float, or a `TypeError` naming `word` if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real) or value != value or abs(value) == float("inf"):
        raise TypeError(f"the weight of {word!r} must be a finite number such as 2.0, got {value!r}")
    return float(value)


def equalizer(tokenizer, prompt: str, weights: dict) -> torch.Tensor:
    """Per-token attention scale `(L,)` for Reweight: `weights[word]` on each of the word's tokens, 1 elsewhere.

    Several words may carry different weights (`{"bumpy": 4.0, "red": 0.5}`); a weight may be negative.
    """
    if not isinstance(weights, dict) or not weights:
        raise TypeError(f"Reweight needs a non-empty dict word -> weight, e.g. {{'bumpy': 4.0}}; got {weights!r}")
    e = torch.ones(tokenizer.model_max_length)
    for word, value in weights.items():
        e[word_indices(tokenizer, prompt, word)] = check_weight(word, value)
    return e


def word_disagreement(tokenizer, other, prompt: str) -> str | None:
    """None when `other` reads `prompt` as the same words at the same token positions as `tokenizer` (as SDXL's
    two tokenizers must: the UNet reads their text states side by side, position by position); otherwise a
    sentence naming the first word where they part."""
    if tokenizer.model_max_length != other.model_max_length:
        return (f"the tokenizers read {tokenizer.model_max_length} and {other.model_max_length} tokens, so their "
                "positions cannot line up")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is warned about once, by the caller's own tokenize
        mine, theirs = words(tokenizer, prompt), words(other, prompt)
    for k, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return (f"word {k} of {prompt!r} is {a[0]!r} at token positions {a[1]} for the first tokenizer but "
                    f"{b[0]!r} at {b[1]} for the second")
    if len(mine) != len(theirs):
        return f"{prompt!r} has {len(mine)} words for the first tokenizer and {len(theirs)} for the second"
    return None
