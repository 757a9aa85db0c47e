"""The toy model's tokenizer: a CLIP-format BPE over the toy world's vocabulary.

Every toy-world word is a single token ("cat</w>"); the byte-level alphabet and the merge pieces are in the
vocabulary too, as in CLIP, so any text tokenizes. Words outside the toy world become sub-word pieces that
the toy model never saw in training: `unknown_words` names them so callers can warn.
"""

from __future__ import annotations

import json
import re
import warnings

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from ..toyworld import vocabulary

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def build_tokenizer() -> CLIPTokenizer:
    """Train the BPE merges on the toy world's words and wrap them in transformers' `CLIPTokenizer`."""
    words = vocabulary()
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(words)] * 4, trainer=trainer)
    vocab = bpe.get_vocab()
    # every alphabet symbol also as a word end, so any single-letter word is in the vocabulary
    for symbol in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(symbol + "</w>", len(vocab))
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
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
