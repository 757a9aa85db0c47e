"""The explorers driven without a browser: attributes in, `image` / `error` out; the controls' worker thread."""

import io
import threading

import pytest
from PIL import Image

import sdlab
from sdlab import align, p2p
from sdlab.widgets import AttentionExplorer, EditExplorer, ProgressionExplorer, parse_weights, parse_words

STEPS = 3
LONG = "a red cat on grass " * 20  # 100 words: over the text encoder's 75


@pytest.fixture(scope="module")
def pipe():
    pipe = sdlab.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def is_png(data):
    return isinstance(data, bytes) and data.startswith(b"\x89PNG")


# -- attention explorer -------------------------------------------------------------------------------------
def test_attention_explorer_word_map_redraws_without_generating(pipe):
    ex = AttentionExplorer(pipe, "a red cat on grass", steps=STEPS)
    assert ex.error is None and is_png(ex.image) and is_png(ex.components_image)
    assert [v for _, v in ex.word_box.options] == ["", "a", "red", "cat", "on", "grass"]
    assert ex.word_box.label == "every word"
    every = ex.image
    ex.word = "cat"
    ex.refresh()
    assert ex.error is None and ex.image != every and ex.word_box.value == "cat"
    ex.word_box.value = ""  # the menu's "every word"
    ex.wait()
    assert ex.word is None and ex.image == every
    comps = ex.components_image
    ex.components = 2
    ex.refresh()
    assert ex.components_image != comps
    assert ex.generations == 1  # word and components reuse the capture
    ex.seed = 1
    ex.refresh()
    assert ex.generations == 2


def test_attention_explorer_unknown_word_shows_sdlab_message_and_lives(pipe):
    ex = AttentionExplorer(pipe, "a red cat on grass", steps=STEPS, word="cat")
    good = ex.image
    ex.prompt = "a blue dog on sand"
    ex.refresh()
    with pytest.raises(ValueError) as raised:
        align.word_indices(pipe.tokenizer, "a blue dog on sand", "cat")
    assert ex.error == str(raised.value)
    assert "its words are: a, blue, dog, on, sand" in ex.status.value
    assert ex.image == good  # the last good image stays
    ex.word = "dog"
    ex.refresh()
    assert ex.error is None and ex.image != good and "sdlab-error" not in ex.status.value


def test_attention_explorer_long_prompt_is_an_error_in_the_widget(pipe):
    ex = AttentionExplorer(pipe, "a red cat on grass", steps=STEPS)
    with pytest.warns(UserWarning) as warned:
        align.tokenize(pipe.tokenizer, LONG)
    ex.prompt = LONG
    ex.refresh()
    assert ex.error == str(warned[0].message) and "reads 75" in ex.error
    assert ex.generations == 1


# -- edit explorer ------------------------------------------------------------------------------------------
def test_edit_explorer_replace_then_refine_reweight_blend(pipe):
    ex = EditExplorer(pipe, "a red cat on grass", "a red dog on grass", steps=STEPS)
    assert ex.error is None and is_png(ex.image)
    assert isinstance(ex.edit, p2p.Replace) and ex.result.prompts == ["a red cat on grass", "a red dog on grass"]
    assert ex.image_box.value == ex.image and ex.image_box.width == str(Image.open(io.BytesIO(ex.image)).width)
    first = ex.image

    ex.target = "a red dog on the grass"  # 6 words against 5: Replace refuses with sdlab's message
    ex.refresh()
    with pytest.raises(ValueError) as raised:
        align.replacement_mapper(pipe.tokenizer, ex.source, ex.target)
    assert ex.error == str(raised.value) and ex.image == first

    ex.mode = "Refine"
    ex.refresh()
    assert ex.error is None and isinstance(ex.edit, p2p.Refine) and ex.image != first

    ex.weights = "grass=3"
    ex.blend = "cat dog"
    ex.cross_steps, ex.self_steps = 0.6, 0.2
    ex.refresh()
    assert ex.error is None
    assert isinstance(ex.edit, p2p.Reweight) and isinstance(ex.edit.base, p2p.Refine)
    assert ex.edit.weights == {"grass": 3.0} and ex.edit.local_blend.words == ["cat", "dog"]
    assert not ex.edit.local_blend.pixels
    latent_blend = ex.image
    ex.boxes["blend_pixels"].value = True  # the user ticks the box: the attribute follows, the edit reruns
    ex.wait()
    assert ex.blend_pixels and ex.edit.local_blend.pixels and ex.error is None and ex.image != latent_blend
    assert ex.edit.local_blend.dilate is None  # the paper's mask until the user picks another
    paper_mask = ex.image
    ex.boxes["blend_dilate"].value = 1
    ex.wait()
    assert ex.blend_dilate == 1 and ex.edit.local_blend.dilate == 1 and ex.error is None and ex.image != paper_mask
    assert ex.result.edited_steps == p2p.schedule(ex.edit, STEPS).edited_steps
    menu = ex.boxes["self_max_res"]
    assert menu.options[0] == ("default (8x8)", -1) and [v for _, v in menu.options[1:]] == [16, 8, 4]
    default_self = ex.image
    menu.value = 16  # the user injects the largest self-attention maps too
    ex.wait()
    assert ex.self_max_res == 16 and ex.edit.self_max_res == 16 and ex.error is None and ex.image != default_self
    ex.self_max_res = 12  # a script may name a size the menu lacks: it joins the menu
    ex.refresh()
    assert menu.value == 12 and ex.edit.self_max_res == 12 and ex.error is None
    assert ex.boxes["weights"].value == "grass=3" and ex.boxes["cross_steps"].value == 0.6

    ex.weights = {"zebra": 2.0}  # a weight on a word the target lacks
    ex.refresh()
    assert "'zebra' is not a word of the prompt" in ex.error


def test_edit_explorer_reweight_mode_reweights_the_source(pipe):
    ex = EditExplorer(pipe, "a red cat on grass", "ignored in this mode", mode="Reweight", steps=STEPS)
    assert "Reweight needs a dict" in ex.error  # no weights yet: sdlab's message
    ex.weights = {"red": 0.0}
    ex.refresh()
    assert ex.error is None and ex.edit.base is None and ex.result.prompts == ["a red cat on grass"] * 2
    assert ex.boxes["target"].disabled


def test_edit_explorer_unknown_word_and_long_prompt(pipe):
    ex = EditExplorer(pipe, steps=STEPS)
    ex.target = "a red dgo on grass"
    ex.refresh()
    assert ex.error.startswith("the toy model does not know 'dgo'")
    ex.target = LONG
    ex.refresh()
    assert "reads 75" in ex.error
    assert ex.generations == 1


def test_weights_and_words_text():
    assert parse_weights("red=2, grass: 0.5") == {"red": 2.0, "grass": 0.5}
    assert parse_weights("") == {} and parse_weights({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="word=weight"):
        parse_weights("red 2")
    with pytest.raises(ValueError, match="must be a number"):
        parse_weights("red=lots")
    assert parse_words("cat, dog  bird") == ["cat", "dog", "bird"] and parse_words(["bumpy road"]) == ["bumpy road"]


# -- the controls and the worker thread ---------------------------------------------------------------------
def test_a_control_change_sets_the_attribute_and_refreshes_once(pipe):
    ex = EditExplorer(pipe, steps=STEPS)
    before, runs = ex.image, ex.generations
    seen = []
    ex.progress.observe(lambda change: seen.append(change["new"]), names="value")
    ex.boxes["seed"].value = 5  # what the browser does
    assert ex.seed == 5
    ex.wait()
    assert ex.generations == runs + 1 and ex.image != before and ex.image_box.value == ex.image
    assert ex.progress.max == STEPS and seen[-1] == STEPS  # one tick per denoising step
    ex.boxes["target"].value = "a red dog on the grass"
    ex.wait()
    assert ex.error and "sdlab-error" in ex.status.value
    ex.boxes["mode"].value = "Refine"  # the widget is alive after the error
    ex.wait()
    assert ex.error is None


def test_changes_during_a_computation_make_exactly_one_more(pipe):
    ex = EditExplorer(pipe, steps=STEPS)
    started, release, seeds = threading.Event(), threading.Event(), []
    compute = ex.compute

    def slow_compute():
        seeds.append(ex.seed)
        started.set()
        release.wait(10)
        compute()

    ex.compute = slow_compute
    ex.debounce = 0.0
    count = ex.computations
    ex.boxes["seed"].value = 1
    assert started.wait(10)
    for seed in (2, 3, 4):  # three changes while the first one runs
        ex.boxes["seed"].value = seed
    release.set()
    ex.wait()
    assert seeds == [1, 4] and ex.computations == count + 2 and ex.result is not None


def test_rapid_changes_within_the_debounce_are_one_computation(pipe):
    ex = EditExplorer(pipe, steps=STEPS)
    ex.debounce = 0.5
    count = ex.computations
    ex.boxes["seed"].value = 7
    ex.boxes["steps"].value = 2
    ex.wait()
    assert ex.computations == count + 1 and ex.result.edited_steps["cross"] == p2p.schedule(ex.edit, 2).edited_steps["cross"]


def test_an_explorer_displays_as_its_widget(pipe):
    ex = AttentionExplorer(pipe, steps=STEPS)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id


# -- progression explorer -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_folder(pipe, tmp_path_factory):
    """A finetuning run's validation folder as `sdlab.finetune.validation` lays it out: per step a folder of
    PNGs, and metrics.csv with one row per image (another seed per step stands in for the training)."""
    import csv

    from sdlab.attention import generate

    run = tmp_path_factory.mktemp("run")
    items = [("prompt", "a red cat on grass"), ("probe", "a blue car on a road")]
    rows = []
    for step in (0, 10):
        images = generate(pipe, [p for _, p in items], seed=step, steps=2).images
        folder = run / "validation" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        for index, ((kind, prompt), image) in enumerate(zip(items, images)):
            image.save(folder / f"{index:02d}-{kind}.png")
            rows.append({"step": step, "kind": kind, "index": index, "sample": 0, "prompt": prompt, "seed": step,
                         "image": f"{folder.name}/{index:02d}-{kind}.png", "fidelity": 0.75, "style": 0.25})
    with open(run / "validation" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return run


def test_progression_explorer_steps_and_errors(run_folder):
    ex = ProgressionExplorer(run_folder)
    assert ex.error is None and ex.steps == [0, 10] and ex.shown_step == 10 and is_png(ex.image)
    assert list(ex.step_box.options) == [0, 10] and ex.step_box.value == 10
    assert [r["prompt"] for r in ex.rows] == ["a red cat on grass", "a blue car on a road"]
    last = ex.image
    ex.step_box.value = 0  # the slider
    ex.wait()
    assert ex.step == 0 and ex.image != last
    ex.kind = "probe"
    ex.refresh()
    assert [r["kind"] for r in ex.rows] == ["probe"]
    ex.step = 5
    ex.refresh()
    assert ex.error == f"step 5 was not validated in {run_folder}; its validated steps are 0, 10"


def test_progression_explorer_without_a_run_says_so(tmp_path):
    ex = ProgressionExplorer(tmp_path / "nothing")
    assert ex.image is None and ex.error.startswith("no validation images in") and ex.step_box.disabled
    assert ex.image_box.layout.display == "none"  # no broken-image icon
