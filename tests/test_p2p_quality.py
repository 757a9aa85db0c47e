"""Prompt-to-prompt on the shipped toy model, measured with the toy world's evaluator: issue 11's bars for a model
trained on world 2 (the first model, trained on world 1, has its own in `test_p2p_quality_world1.py`).

Guidance 7.5, 50 DDIM steps, 32 held-out world-2 scenes per kind of edit, default `Replace()` / `Refine()`;
every number comes from `sdlab.toymodel.edit_quality` (the same code that fills the README's model card).
Run with -s to see the numbers.
"""

import pytest

import sdlab
from sdlab.models import TOY_MODEL_DIR
from sdlab.toymodel import edit_quality as eq
from sdlab.toymodel.quality import trained_world

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (TOY_MODEL_DIR / "model_index.json").is_file(),
        reason="the shipped toy model is not there yet (sdlab/toymodel/weights/model_index.json; `sdlab train-toy --ship`)",
    ),
    pytest.mark.skipif(trained_world() != 2, reason="world 2's bars; the shipped toy model is trained on world 1 "
                       "(its bars: test_p2p_quality_world1.py)"),
]

N = 32
STEPS = 50


@pytest.fixture(scope="module")
def pipe():
    p = sdlab.load_pipeline(device="cpu")
    p.set_progress_bar_config(disable=True)
    return p


def measured(name, m):
    print(f"{name}: {m}")
    return m


@pytest.fixture(scope="module")
def replaced(pipe):
    return measured("replace, one object", eq.replace_one(pipe, N, steps=STEPS))


@pytest.fixture(scope="module")
def replaced_pair(pipe):
    return measured("replace, two objects", eq.replace_pair(pipe, N, steps=STEPS))


@pytest.mark.parametrize("two", [False, True], ids=["one-object", "two-objects"])
def test_capture_object_words_map_onto_their_objects(pipe, two):
    m = measured(f"capture ({'two' if two else 'one'} objects)", eq.capture_iou(pipe, N, two=two, steps=STEPS))
    assert m["map_iou"] >= 0.6


def test_replace_without_p2p_moves_the_object_and_with_p2p_keeps_it(replaced):
    assert replaced["box_iou_without"] <= 0.35
    assert replaced["box_iou_with"] >= 0.6


def test_replace_changes_at_most_half_as_much(replaced):
    assert replaced["change_with"] <= 0.5 * replaced["change_without"]


def test_replace_keeps_what_is_outside_the_objects(replaced):
    assert replaced["outside_with"] <= replaced["outside_without"] / 3


def test_replace_shows_the_target_object(replaced):
    assert replaced["target_seen_with"] >= 0.85


def test_replace_in_a_pair_leaves_the_other_object_alone(replaced_pair):
    assert replaced_pair["untouched_mask_iou"] >= 0.8
    assert replaced_pair["untouched_color"] >= 0.9


def test_local_blend_keeps_the_rest_of_a_pair(replaced_pair):
    assert replaced_pair["outside_edited_blend"] <= 0.5 * replaced_pair["outside_edited"]


def test_refine_adds_the_attribute_and_keeps_the_object(pipe):
    m = measured("refine", eq.refine(pipe, N, steps=STEPS))
    assert m["attribute_with"] >= 0.85
    assert m["mask_iou_with"] >= 0.7


def test_reweight_bumpy_rises_with_weight(pipe):
    m = measured("reweight 'bumpy'", eq.reweight_bumpy(pipe, N, steps=STEPS))
    means = [m[f"w={w:g}"] for w in eq.REWEIGHTS]
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert m["w=0"] <= m["smooth_generated"]  # "bumpy" x0: no rougher than the model's own smooth roads
    assert m["w=4"] >= m["bumpy_renders"]
