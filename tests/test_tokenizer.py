"""The toy tokenizer: CLIP format, one token per toy-world word, deterministic, warns on unknown words."""

import warnings

import pytest
from transformers import CLIPTokenizer

from sdlab.toymodel import build_pipeline, TINY
from sdlab.toymodel.quality import generate
from sdlab.toymodel.tokenizer import build_tokenizer, check_prompts, is_toy_tokenizer, unknown_words
from sdlab.toyworld import sample_scenes, vocabulary


def test_every_word_is_one_token_and_captions_round_trip(tmp_path):
    tok = build_tokenizer()
    for scene in sample_scenes(50, 3, watercolor=0.3):
        ids = tok(scene.caption).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert len(ids) == len(scene.caption.split()) + 2
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("a striped red cat on a bumpy road").input_ids == tok("a striped red cat on a bumpy road").input_ids
    padded = again("a cat", padding="max_length", max_length=again.model_max_length).input_ids
    assert len(padded) == 77 and padded[3:] == [tok.pad_token_id] * 74


def test_build_is_deterministic():
    assert build_tokenizer().get_vocab() == build_tokenizer().get_vocab()


def test_unknown_words_are_named_in_a_warning():
    assert unknown_words("A Yoda cat, on grass!") == ["yoda"]
    pipe = build_pipeline(TINY)
    assert is_toy_tokenizer(pipe.tokenizer)
    with pytest.warns(UserWarning, match="'yoda'"):
        check_prompts(pipe, ["a red cat", "yoda on grass"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_prompts(pipe, "a red cat on grass")
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="'pikachu'"):
        generate(pipe, ["a pikachu"], [0], steps=1)


def test_vocabulary_covers_captions():
    words = set(vocabulary())
    for scene in sample_scenes(200, 5, watercolor=0.5):
        assert set(scene.caption.split()) <= words
