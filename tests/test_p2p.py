"""Prompt-to-prompt edits: parity of the fused path with the slow oracle, plain generation, bad input."""

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from p2p_oracle import OracleController, sharpen

from sdlab import p2p
from sdlab.attention import generate
from sdlab.p2p import LocalBlend, Refine, Replace, Reweight
from sdlab.toymodel import TINY, build_pipeline

STEPS = 10
TOL = 1e-5


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline(TINY, seed=0)
    sharpen(p.unet, 3.0)  # peaked attention: an edit moves the output by several percent
    p.set_progress_bar_config(disable=True)
    return p


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def latents(pipe, prompts, controller, seed, guidance=7.5):
    gen = generate(pipe, prompts, controller, seed=seed, steps=STEPS, guidance=guidance, output_type="latent")
    return torch.stack(gen.images)


CASES = {
    "replace": ("a red cat on grass", ["a red dog on grass"], Replace()),
    "replace-words-2targets": (
        "a red cat on grass",
        ["a red dog on grass", "a blue cat on grass"],
        Replace(cross_steps={"default_": 0.8, "dog": (0.2, 0.5)}, self_steps=(0.1, 0.6)),
    ),
    "replace-token-counts": ("a red cat on grass", ["a red watercolour on grass"], Replace(self_steps=0)),
    "refine": ("a cat on grass", ["a striped cat on grass", "a cat on a bumpy road"], Refine()),
    "reweight": ("a bumpy road", ["a bumpy road"] * 3, Reweight({"bumpy": [-1, 2, 4]})),
    "reweight-refine": ("a road", ["a bumpy road"], Reweight({"bumpy": 4}, base=Refine())),
    "reweight-replace": ("a red cat on a road", ["a red dog on a road"], Reweight({"dog": 3, "red": 0.5}, base=Replace())),
    "self-only": ("a red cat on grass", ["a blue fish at night"], Replace(cross_steps=0, self_steps=0.6)),
    "local-blend": ("a red cat on grass", ["a red dog on grass"], Replace(local_blend=LocalBlend(["cat", "dog"]))),
    "local-blend-refine": (
        "a red cat on grass",
        ["a red dog on grass", "a striped red bird on grass"],
        Refine(local_blend=LocalBlend(["cat", "dog", "bird"], threshold=0.4, start=0.3)),
    ),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_oracle(pipe, case, seed):
    source, targets, edit = CASES[case]
    fast = latents(pipe, [source, *targets], p2p.EditController(edit, pipe.tokenizer, source, targets), seed)
    oracle = OracleController(edit, pipe.tokenizer, source, targets, self_max_tokens=8 * 8, blend_tokens=8 * 8)
    slow = latents(pipe, [source, *targets], oracle, seed)
    plain = latents(pipe, [source, *targets], None, seed)
    assert rel(fast, slow) < TOL
    assert rel(plain[1:], slow[1:]) > 100 * TOL  # the edit did something the parity had to reproduce
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)  # the source is never edited


def test_parity_without_guidance(pipe):
    source, targets, edit = CASES["reweight-refine"]
    fast = latents(pipe, [source, *targets], p2p.EditController(edit, pipe.tokenizer, source, targets), 0, guidance=1.0)
    oracle = OracleController(edit, pipe.tokenizer, source, targets, self_max_tokens=64)
    assert rel(fast, latents(pipe, [source, *targets], oracle, 0, guidance=1.0)) < TOL


def test_parity_v_prediction(pipe):
    sched = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    v_pipe = StableDiffusionPipeline(**{**pipe.components, "scheduler": sched})
    v_pipe.set_progress_bar_config(disable=True)
    source, targets, edit = CASES["replace"]
    fast = latents(v_pipe, [source, *targets], p2p.EditController(edit, pipe.tokenizer, source, targets), 4)
    slow = latents(v_pipe, [source, *targets], OracleController(edit, pipe.tokenizer, source, targets, 64), 4)
    assert rel(fast, slow) < TOL
    res = p2p.edit(v_pipe, source, targets, edit, steps=3)
    assert len(res.images) == 2


def test_no_control_is_plain_generation(pipe):
    res = p2p.edit(pipe, "a red cat on grass", ["a red dog on grass"], Replace(cross_steps=0, self_steps=0),
                   seed=8, steps=STEPS, output_type="latent")
    plain = generate(pipe, ["a red cat on grass", "a red dog on grass"], seed=8, steps=STEPS, output_type="latent")
    assert torch.equal(torch.stack(res.images), torch.stack(plain.images))
    assert res.latent.shape == (1, 4, 16, 16)


def test_uncontrolled_steps_use_original_processors(pipe):
    class Counting(p2p.EditController):
        def attend(self, layer, q, k, v):
            self.seen.add(self.step)
            return super().attend(layer, q, k, v)

    ctl = Counting(Replace(cross_steps=0.3, self_steps=0.2), pipe.tokenizer, "a red cat", ["a red dog"])
    ctl.seen = set()
    generate(pipe, ["a red cat", "a red dog"], ctl, steps=STEPS, output_type="latent")
    assert ctl.seen == {0, 1, 2}  # steps [0, 0.3 T); the rest ran diffusers' own processors


def test_processors_restored_after_edit(pipe):
    before = pipe.unet.attn_processors
    p2p.edit(pipe, "a red cat", ["a red dog"], Replace(), steps=2)
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())


def test_local_blend_keeps_source_outside_mask(pipe):
    res = p2p.edit(pipe, "a red cat on grass", ["a red dog on grass"],
                   Replace(local_blend=LocalBlend(["cat", "dog"], threshold=0.6, start=0.0)),
                   steps=STEPS, output_type="latent")
    same = (res.images[0] == res.images[1]).all(0)  # per latent pixel, over channels
    assert 0 < same.float().mean() < 1


def test_images_are_pil(pipe):
    res = p2p.edit(pipe, "a red cat", ["a red dog", "a red bird"], Replace(), steps=2)
    assert [im.size for im in res.images] == [(64, 64)] * 3 and res.prompts[0] == "a red cat"


# --- bad input: each names the problem and the fix ------------------------------------------------------


def test_replace_with_different_word_counts(pipe):
    with pytest.raises(ValueError, match="Use Refine"):
        p2p.edit(pipe, "a red cat", ["a red striped cat"], Replace(), steps=2)


def test_word_not_in_prompt(pipe):
    with pytest.raises(ValueError, match=r"'dog' is not a word of the prompt 'a bumpy road'; its words are: a, bumpy, road"):
        p2p.edit(pipe, "a bumpy road", ["a bumpy road"], Reweight({"dog": 2.0}), steps=2)
    with pytest.raises(ValueError, match="'tree' is in none of the prompts"):
        p2p.edit(pipe, "a red cat", ["a red dog"], Replace(local_blend=LocalBlend("tree")), steps=2)
    with pytest.raises(ValueError, match="'tree', which is in none of the targets"):
        p2p.edit(pipe, "a red cat", ["a red dog"], Replace(cross_steps={"tree": 0.5}), steps=2)


@pytest.mark.parametrize("weights", [{"bumpy": "4"}, {"bumpy": None}, {"bumpy": [1, "x"]}, {"bumpy": float("nan")}])
def test_weights_not_numbers(weights):
    with pytest.raises(TypeError, match="weight of 'bumpy' must be a finite number"):
        Reweight(weights)


def test_weights_not_a_dict():
    with pytest.raises(TypeError, match=r"dict word -> weight"):
        Reweight(4.0)


def test_weights_per_target_count(pipe):
    with pytest.raises(ValueError, match="3 values for 2 targets"):
        p2p.edit(pipe, "a bumpy road", ["a bumpy road"] * 2, Reweight({"bumpy": [1, 2, 3]}), steps=2)


def test_reweight_without_base_needs_same_prompt(pipe):
    with pytest.raises(ValueError, match="Pass base=Refine"):
        p2p.edit(pipe, "a road", ["a bumpy road"], Reweight({"bumpy": 2.0}), steps=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cross_steps=1.5), r"outside \[0, 1\]"),
        (dict(cross_steps=-0.1), r"outside \[0, 1\]"),
        (dict(self_steps=(0.6, 0.2)), "starts after it ends"),
        (dict(cross_steps={"default_": 0.8, "dog": (0.5, 0.1)}), "starts after it ends"),
        (dict(cross_steps="most"), "fraction of the steps"),
        (dict(self_steps=(0.1, 0.2, 0.3)), "fraction of the steps"),
    ],
)
def test_bad_schedules(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Replace(**kwargs)


def test_empty_targets(pipe):
    with pytest.raises(ValueError, match="at least one target prompt"):
        p2p.edit(pipe, "a red cat", [], Replace())


def test_not_an_edit(pipe):
    with pytest.raises(TypeError, match="Replace"):
        p2p.edit(pipe, "a red cat", ["a red dog"], "replace")


def test_long_prompt_warns(pipe):
    long = "a red cat on grass " + "on a red cat " * 30
    with pytest.warns(UserWarning, match="truncates the same way"):
        p2p.edit(pipe, long, [long.replace("cat", "dog", 1)], Replace(), steps=2)


def test_bad_local_blend():
    with pytest.raises(ValueError, match="one or more words"):
        LocalBlend([])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        LocalBlend("cat", threshold=2)


def test_comparison_figures(pipe):
    from sdlab import viz

    without = p2p.edit(pipe, "a red cat", ["a red dog", "a red bird"], Replace(cross_steps=0, self_steps=0), steps=2)
    with_ = p2p.edit(pipe, "a red cat", ["a red dog", "a red bird"], Replace(), steps=2)
    fig = viz.with_without(without, with_)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "source: a red cat"
    assert [ax.get_title() for ax in viz.edit_comparison(with_).axes] == ["source: a red cat", "a red dog", "a red bird"]
