"""Token alignment: words to token positions, the Replace mapper, the Refine alignment, the equalizer."""

from functools import lru_cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdlab import align
from sdlab.toymodel import build_tokenizer
from sdlab.toyworld import vocabulary

L = 77


@lru_cache(maxsize=1)
def tok():
    return build_tokenizer()


# words the toy vocabulary has (one token each) and words it splits into pieces
known = st.sampled_from(vocabulary())
unknown = st.text(alphabet="bcdfgkmpqvxz", min_size=2, max_size=7)
prompts = st.lists(st.one_of(known, known, unknown), min_size=1, max_size=12).map(" ".join)


def test_word_indices_basics():
    t = tok()
    assert align.word_indices(t, "a red cat on grass", "cat") == [3]
    assert align.word_indices(t, "A Red CAT on grass", "cat") == [3]
    assert align.word_indices(t, "a red cat, on grass", "on") == [5]  # the comma is its own word
    assert align.word_indices(t, "a cat on a bumpy road", "a") == [1, 4]
    assert align.word_indices(t, "a cat on a bumpy road", "bumpy road") == [5, 6]
    assert align.word_indices(t, "a red cat on grass", 2) == [3]


def test_multi_token_word():
    t = tok()
    ids = t("a watercolour cat", add_special_tokens=False).input_ids
    pieces = len(ids) - 2
    assert pieces > 1, "the toy tokenizer should split an unknown word"
    assert align.word_indices(t, "a watercolour cat", "watercolour") == list(range(2, 2 + pieces))
    assert align.word_indices(t, "a watercolour cat", "cat") == [2 + pieces]
    # a word is matched whole, never as the first pieces of a longer word
    with pytest.raises(ValueError):
        align.word_indices(t, "a watercolour cat", "water")


def test_missing_word_names_it_and_lists_words():
    with pytest.raises(ValueError, match=r"'dog' is not a word of the prompt 'a red cat on grass'.*a, red, cat, on, grass"):
        align.word_indices(tok(), "a red cat on grass", "dog")


def test_long_prompt_truncated_with_warning():
    long = " ".join(["red cat"] * 50)
    with pytest.warns(UserWarning, match="text encoder reads 75"):
        ids = align.tokenize(tok(), long)
    assert ids == tok()(long, padding="max_length", max_length=L, truncation=True).input_ids
    with pytest.warns(UserWarning):
        assert len(align.words(tok(), long)) == 75


@settings(max_examples=60, deadline=None)
@given(prompts)
def test_identical_prompts_map_to_identity(prompt):
    t = tok()
    assert torch.equal(align.replacement_mapper(t, prompt, prompt), torch.eye(L))
    mapper, alphas = align.refinement_alignment(t, prompt, prompt)
    assert torch.equal(mapper, torch.arange(L))
    assert torch.equal(alphas, torch.ones(L))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(known, unknown), st.one_of(known, unknown)), min_size=1, max_size=10))
def test_replacement_mapper_rows_sum_to_one(pairs):
    t = tok()
    source, target = " ".join(a for a, _ in pairs), " ".join(b for _, b in pairs)
    m = align.replacement_mapper(t, source, target)
    assert torch.allclose(m.sum(1), torch.ones(L))
    # each source word's weight lands on the target word at the same place, and only there
    for (_, s_pos), (_, t_pos) in zip(align.words(t, source), align.words(t, target)):
        assert torch.allclose(m[s_pos][:, t_pos].sum(1), torch.ones(len(s_pos)))


def test_replacement_with_different_token_counts():
    t = tok()
    source, target = "a red cat on grass", "a red watercolour on grass"
    n = len(align.word_indices(t, target, "watercolour"))
    m = align.replacement_mapper(t, source, target)
    assert torch.allclose(m[3, 3 : 3 + n], torch.full((n,), 1 / n))  # spread over the new word's tokens
    assert m[4, 3 + n] == 1 and m[5, 4 + n] == 1  # "on", "grass" still aligned after it
    assert m[6, 5 + n] == 1  # end token to end token
    # and the other way round: every piece of the long word gives all its weight to the short one
    back = align.replacement_mapper(t, target, source)
    assert torch.equal(back[3 : 3 + n, 3], torch.ones(n))
    assert back[3 + n, 4] == 1 and back[4 + n, 5] == 1


def test_replace_with_different_word_counts_says_use_refine():
    with pytest.raises(ValueError, match="has 5 words.*has 6.*Use Refine"):
        align.replacement_mapper(tok(), "a red cat on grass", "a red striped cat on grass")


def test_refinement_alignment_of_an_added_word():
    mapper, alphas = align.refinement_alignment(tok(), "a cat on grass", "a striped cat on grass")
    assert mapper[:7].tolist() == [0, 1, -1, 2, 3, 4, 5]
    assert alphas[:7].tolist() == [1, 1, 0, 1, 1, 1, 1]
    assert mapper[7:].tolist() == list(range(6, L - 1))  # padding follows in order
    assert (alphas[7:] == 1).all()


def lcs(x, y):
    d = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            d[i][j] = d[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(d[i - 1][j], d[i][j - 1])
    return d[-1][-1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=12), st.lists(st.integers(0, 4), max_size=12))
def test_global_align_matches_are_a_longest_common_subsequence(x, y):
    pairs = align.global_align(x, y)
    assert all(x[i] == y[j] for i, j in pairs)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(pairs, pairs[1:]))
    assert len(pairs) == lcs(x, y)  # with gap 0 and mismatch -1 the best score counts matches


@settings(max_examples=40, deadline=None)
@given(prompts, prompts)
def test_refinement_alignment_maps_equal_tokens(source, target):
    t = tok()
    mapper, alphas = align.refinement_alignment(t, source, target)
    src, tgt = align.tokenize(t, source), align.tokenize(t, target)
    for j in range(len(tgt)):
        if mapper[j] >= 0:
            assert src[mapper[j]] == tgt[j]
    assert torch.equal(alphas, (mapper >= 0).float())
    assert mapper.max() < L


def test_equalizer_several_words():
    t = tok()
    e = align.equalizer(t, "a red cat on a bumpy road", {"bumpy": 4.0, "red": 0.5, "cat": -1})
    expected = torch.ones(L)
    expected[6], expected[2], expected[3] = 4.0, 0.5, -1.0
    assert torch.equal(e, expected)


def test_equalizer_bad_weights():
    t = tok()
    with pytest.raises(TypeError, match="weight of 'bumpy' must be a finite number"):
        align.equalizer(t, "a bumpy road", {"bumpy": "lots"})
    with pytest.raises(TypeError, match="must be a finite number"):
        align.equalizer(t, "a bumpy road", {"bumpy": True})
    with pytest.raises(TypeError, match="non-empty dict"):
        align.equalizer(t, "a bumpy road", [("bumpy", 2)])
    with pytest.raises(ValueError, match="'dog' is not a word"):
        align.equalizer(t, "a bumpy road", {"dog": 2})
