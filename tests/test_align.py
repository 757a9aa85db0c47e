"""Token alignment: words to token positions, the Replace mapper, the Refine alignment, the equalizer."""

from functools import cache, lru_cache

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sdlab import align
from sdlab.p2p import Refine
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


def test_refinement_never_maps_a_word_onto_a_piece_of_another():
    """The issue's cases: a piece of a split word ("a</w>" of "zebra", "on</w>" of "dragon") equals a token of
    the other prompt; the word-level alignment keeps each word on its own word."""
    t = tok()
    mapper, alphas = align.refinement_alignment(t, "a cat on grass", "a zebra cat on grass")
    zebra = align.word_indices(t, "a zebra cat on grass", "zebra")
    assert len(zebra) > 1 and t.convert_ids_to_tokens(align.tokenize(t, "a zebra cat on grass"))[zebra[-1]] == "a</w>"
    assert mapper[1] == 1  # "a" -> "a", not onto zebra's last piece
    assert (mapper[zebra] == -1).all() and (alphas[zebra] == 0).all()
    assert mapper[zebra[-1] + 1 : zebra[-1] + 5].tolist() == [2, 3, 4, 5]  # cat, on, grass, end
    # the reference's mirror-image case: "on" must map onto "on", not onto dragon's last piece "on</w>"
    mapper, _ = align.refinement_alignment(t, "a cat on grass", "a cat dragon on grass")
    dragon = align.word_indices(t, "a cat dragon on grass", "dragon")
    assert (mapper[dragon] == -1).all() and mapper[dragon[-1] + 1] == 3
    # and back: zebra's pieces in the source are dropped, not taken for "a"
    mapper, _ = align.refinement_alignment(t, "a zebra cat on grass", "a cat on grass")
    assert mapper[1:6].tolist() == [1, 2 + len(zebra), 3 + len(zebra), 4 + len(zebra), 5 + len(zebra)]


def test_refinement_ties_go_to_the_earliest_word():
    """The stated tie rule: a word goes to the earliest equal word that still allows a best alignment."""
    t = tok()
    mapper, _ = align.refinement_alignment(t, "a red cat", "a red red cat")
    assert mapper[1:5].tolist() == [1, 2, -1, 3]
    mapper, _ = align.refinement_alignment(t, "a red red cat", "a red cat")
    assert mapper[1:4].tolist() == [1, 2, 4]
    assert align.global_align(list("ab"), list("abb")) == [(0, 0), (1, 1)]
    assert align.global_align(list("aa"), list("a")) == [(0, 0)]
    # the most tokens win over the most words: one word of 3 tokens beats two words of 1
    assert align.global_align(["x", "y", "z"], ["y", "z", "x"], [3, 1, 1]) == [(0, 2)]
    assert align.global_align(["x", "y", "z"], ["y", "z", "x"]) == [(1, 0), (2, 1)]


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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=10), st.lists(st.integers(0, 4), max_size=10),
       st.lists(st.integers(1, 4), min_size=10, max_size=10))
def test_global_align_weighted_is_a_best_matching(x, y, w):
    w = w[: len(x)]
    pairs = align.global_align(x, y, w)
    assert all(x[i] == y[j] for i, j in pairs)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(pairs, pairs[1:]))

    @cache
    def best(i, j):  # the most weight of an order-preserving matching of x[i:] and y[j:], by plain recursion
        if i == len(x) or j == len(y):
            return 0
        b = max(best(i + 1, j), best(i, j + 1))
        return max(b, w[i] + best(i + 1, j + 1)) if x[i] == y[j] else b

    assert sum(w[i] for i, _ in pairs) == best(0, 0)


# words that split into several tokens, some of whose pieces are tokens of the toy vocabulary ("zcat" -> "z",
# "cat</w>"; "zebra" -> ..., "a</w>"; "redcat" -> "r", "e", "d", "cat</w>")
compound = st.builds(lambda a, b: a + b, st.text(alphabet="bcdfgkmpqvxz", min_size=1, max_size=3), known)
multi = st.one_of(known, known, unknown, compound, st.just("zebra"), st.just("dragon"))
word_lists = st.lists(multi, min_size=1, max_size=9)


def word_tokens(t, prompt):
    """(token ids, positions) of each word of `prompt`."""
    ids = align.tokenize(t, prompt)
    return [(tuple(ids[p] for p in g), g) for _, g in align.words(t, prompt)]


def check_refinement(t, source, target):
    """What every Refine alignment must be: the shapes and ranges the edit needs, whole words mapped onto equal
    whole words in order, and as many tokens kept as any such alignment keeps. Returns the mapper."""
    mapper, alphas = align.refinement_alignment(t, source, target)
    assert mapper.shape == (L,) and mapper.dtype == torch.long and alphas.shape == (L,)
    assert ((mapper >= -1) & (mapper < L)).all()
    assert torch.equal(alphas, (mapper >= 0).float())
    src, tgt = align.tokenize(t, source), align.tokenize(t, target)
    assert mapper[0] == 0 and mapper[len(tgt) - 1] == len(src) - 1  # start and end tokens
    assert mapper[len(tgt) :].tolist() == [min(len(src) + k, L - 1) for k in range(L - len(tgt))]  # padding
    hit = [v for v in mapper[: len(tgt)].tolist() if v >= 0]
    assert hit == sorted(set(hit))  # up to the end token: order-preserving, no source token used twice
    sw, tw = word_tokens(t, source), word_tokens(t, target)
    word_of_src = {p: k for k, (_, g) in enumerate(sw) for p in g}
    matched = []
    for ids, g in tw:
        m = mapper[g].tolist()
        if all(v == -1 for v in m):
            continue
        k = word_of_src.get(m[0])  # the source word of the first token: every token maps into that word,
        assert k is not None and m == sw[k][1] and ids == sw[k][0], (target, ids, m)  # its tokens in order
        matched.append(len(g))

    @cache
    def best(i, j):  # most tokens of an order-preserving matching of equal words, by plain recursion
        if i == len(sw) or j == len(tw):
            return 0
        b = max(best(i + 1, j), best(i, j + 1))
        return max(b, len(sw[i][1]) + best(i + 1, j + 1)) if sw[i][0] == tw[j][0] else b

    assert sum(matched) == best(0, 0)
    m = Refine().mapping(t, source, target)[0]  # the (L, L) matrix the edit uses: one source token per column
    assert m.shape == (L, L) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m.sum(0), alphas)
    return mapper


@settings(max_examples=150, deadline=None)
@given(word_lists, word_lists)
def test_refinement_alignment_keeps_words_whole(source_words, target_words):
    check_refinement(tok(), " ".join(source_words), " ".join(target_words))


@settings(max_examples=150, deadline=None)
@given(word_lists, st.lists(st.booleans(), min_size=9, max_size=9),
       st.lists(st.tuples(st.integers(0, 9), multi), max_size=4))
def test_shared_words_keep_their_alignment(source_words, keep, inserts):
    """Target = source with words dropped and words added. Where no added word equals a source word and no
    dropped word equals a word left in the target, the best alignment is unique: every kept word maps onto
    itself, token by token, and every added word onto nothing."""
    t = tok()
    kept = [k for k in range(len(source_words)) if keep[k]]
    target_words = [(source_words[k], k) for k in kept]
    for at, word in inserts:
        target_words.insert(min(at, len(target_words)), (word, None))
    assume(target_words)
    source, target = " ".join(source_words), " ".join(w for w, _ in target_words)
    sw, tw = word_tokens(t, source), word_tokens(t, target)
    assume(len(sw) == len(source_words) and len(tw) == len(target_words))  # each word one tokenizer word
    src_ids = {ids for ids, _ in sw}
    left_ids = {ids for ids, _ in tw}
    assume(all(tw[j][0] not in src_ids for j, (_, k) in enumerate(target_words) if k is None))
    assume(all(sw[k][0] not in left_ids for k in range(len(sw)) if k not in kept))
    mapper = check_refinement(t, source, target)
    for (_, k), (_, g) in zip(target_words, tw):
        assert mapper[g].tolist() == (sw[k][1] if k is not None else [-1] * len(g))


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
