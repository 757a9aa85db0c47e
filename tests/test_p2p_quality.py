"""Prompt-to-prompt on the shipped toy model, measured with the toy world's evaluator: issue 11's bars for a model
trained on world 2, as the shipped one is.

Guidance 7.5, 50 DDIM steps, 32 held-out world-2 scenes per kind of edit, default `Replace()` / `Refine()`;
every number comes from `sdlab.toymodel.edit_quality` (the same code that fills the README's model card).
Where the shipped model misses a bar, the test is a strict xfail that names the measured number (`missed`).
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
    pytest.mark.skipif(trained_world() != 2, reason="world 2's bars; the toy model here is trained on world 1"),
]

N = 32
STEPS = 50


def missed(why: str):
    """A bar the shipped model measurably misses: a strict xfail that states the number (README model card), so
    a pass fails the suite and the marker goes when a model gets there."""
    return pytest.mark.xfail(strict=True, reason=f"missed by the shipped world-2 model: {why}")


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


@pytest.mark.parametrize("two", [
    pytest.param(False, id="one-object"),
    pytest.param(True, id="two-objects", marks=missed(
        "two-object scenes' mean map IoU 0.547 (one object: 0.704); a map that is exactly its object scores 0.666 "
        "at the 8x8 capture resolution (edit_quality.capture_ceiling)")),
])
def test_capture_object_words_map_onto_their_objects(pipe, two):
    m = measured(f"capture ({'two' if two else 'one'} objects)", eq.capture_iou(pipe, N, two=two, steps=STEPS))
    assert m["map_iou"] >= 0.6


def test_replace_without_p2p_moves_the_object(replaced):
    assert replaced["box_iou_without"] <= 0.35


@missed("box IoU with p2p 0.453 (without 0.255); the toy UNet still draws the new object where its layout prior "
        "puts it")
def test_replace_with_p2p_keeps_the_object_in_place(replaced):
    assert replaced["box_iou_with"] >= 0.6


@missed('change with / without p2p 0.572')
def test_replace_changes_at_most_half_as_much(replaced):
    assert replaced["change_with"] <= 0.5 * replaced["change_without"]


@missed('outside change with / without p2p 0.453')
def test_replace_keeps_what_is_outside_the_objects(replaced):
    assert replaced["outside_with"] <= replaced["outside_without"] / 3


def test_replace_shows_the_target_object(replaced):
    assert replaced["target_seen_with"] >= 0.85


def test_replace_in_a_pair_leaves_the_other_object_in_place(replaced_pair):
    assert replaced_pair["untouched_mask_iou"] >= 0.8


def test_replace_in_a_pair_leaves_the_other_object_its_color(replaced_pair):
    assert replaced_pair["untouched_color"] >= 0.9


def test_local_blend_keeps_the_rest_of_a_pair(replaced_pair):
    # LocalBlend([old, new], pixels=True, dilate=1): the mask made at the latent's resolution, the paper's extent
    assert replaced_pair["blend_dilated_ratio"] <= 0.5


@missed("the paper's LocalBlend mask: outside ratio 0.601 with pixels=True (outside change 2.46 with it, 4.09 "
        "without), 0.694 with the latent blend alone (2.84): what is left lies inside the mask, around the edited "
        "object (the word's 8x8 map max-pooled one cell each way covers far more than the object); LocalBlend(res=16) "
        "measured worse (0.969 vs 0.740 on 16 scenes, latent only)")
def test_local_blend_with_the_papers_mask_keeps_the_rest_of_a_pair(replaced_pair):
    assert replaced_pair["blend_pixels_ratio"] <= 0.5


def test_refine_adds_the_attribute_and_keeps_the_object(pipe):
    m = measured("refine", eq.refine(pipe, N, steps=STEPS))
    assert m["attribute_with"] >= 0.85
    assert m["mask_iou_with"] >= 0.7


@pytest.fixture(scope="module")
def reweighted(pipe):
    return measured("reweight 'bumpy'", eq.reweight_bumpy(pipe, N, steps=STEPS))


def test_reweight_bumpy_rises_with_weight(reweighted):
    means = [reweighted[f"w={w:g}"] for w in eq.REWEIGHTS]
    assert all(a < b for a, b in zip(means, means[1:])), means


@missed('"bumpy" x0 reads bumpiness 1.133, the model\'s own smooth roads 0.297 (x-2: 0.796)')
def test_reweight_bumpy_by_zero_leaves_a_smooth_road(reweighted):
    assert reweighted["w=0"] <= reweighted["smooth_generated"]  # no rougher than the model's own smooth roads


def test_reweight_bumpy_by_four_is_as_bumpy_as_a_bumpy_render(reweighted):
    assert reweighted["w=4"] >= reweighted["bumpy_renders"]
