"""The shipped toy model: loads without sdlab, meets the quality bar, same seed gives the same image."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

import sdlab
from sdlab.models import TOY_MODEL_DIR
from sdlab.toymodel.config import ToyTrainConfig
from sdlab.toymodel.quality import HELD_OUT_SEED, generate, score_model, trained_world, vae_reconstructions
from sdlab.toyworld import evaluate, sample_scenes

pytestmark = pytest.mark.skipif(
    not (TOY_MODEL_DIR / "model_index.json").is_file(), reason="the toy model is not trained yet (sdlab train-toy --ship)"
)


@pytest.fixture(scope="module")
def pipe():
    p = sdlab.load_pipeline(device="cpu")
    p.set_progress_bar_config(disable=True)
    return p


def test_diffusers_loads_it_without_sdlab_and_it_is_small():
    pipe = StableDiffusionPipeline.from_pretrained(TOY_MODEL_DIR)
    assert pipe.safety_checker is None
    assert pipe.vae.config.scaling_factor != 1.0
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    size = sum(p.stat().st_size for p in TOY_MODEL_DIR.rglob("*.safetensors"))
    assert size <= 25 * 2**20
    assert not [p for p in TOY_MODEL_DIR.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt", ".pkl")]


WORLD = trained_world()
"""The shipped model is measured on held-out scenes of the world it was trained on."""


@pytest.fixture(scope="module")
def held_out_metrics(pipe):
    """Held-out scenes of the model's world, guidance 7.5, 25 DDIM steps: 64 on world 1 (the first model's bar);
    128 on world 2 (issue 11's bar), scored separately for the one-object and the two-object scenes."""
    scenes = sample_scenes(64 if WORLD == 1 else 128, HELD_OUT_SEED, world=WORLD)
    images, _ = score_model(pipe, scenes, seed=HELD_OUT_SEED, steps=25, guidance=7.5)
    metrics = {}
    for name, two in (("one", False), ("two", True)):
        idx = [i for i, s in enumerate(scenes) if (s.second is not None) == two]
        if idx:
            metrics[name] = evaluate([images[i] for i in idx], [scenes[i] for i in idx])
            print(f"toy model on {len(idx)} held-out {name}-object scenes of world {WORLD}:",
                  {k: round(v, 3) for k, v in metrics[name].items() if isinstance(v, float)})
    return metrics


@pytest.mark.slow
def test_quality_bar_one_object(held_out_metrics):
    one = held_out_metrics["one"]
    if WORLD == 1:
        assert one["color"] >= 0.90 and one["object"] >= 0.80 and one["background"] >= 0.90, one
    else:
        assert one["color"] >= 0.92 and one["object"] >= 0.90 and one["background"] >= 0.98, one


@pytest.mark.slow
@pytest.mark.skipif(WORLD != 2, reason="world 1 has no two-object scenes")
def test_quality_bar_two_objects(held_out_metrics):
    two = held_out_metrics["two"]
    assert len(held_out_metrics) == 2 and two["n"] >= 30, "too few two-object scenes among the held-out ones"
    assert two["object_color"] >= 0.80, two  # class and color right, per object
    assert two["both"] >= 0.65, two  # both objects right, per scene


def test_train_toy_defaults_are_the_shipped_recipe():
    """`sdlab train-toy` with no options trains what ships (the run's own config ships beside the weights)."""
    shipped = json.loads((TOY_MODEL_DIR / "train_config.json").read_text())
    where_and_when = {"output", "device", "checkpoint_minutes"}
    recipe = {k: v for k, v in shipped.items() if k not in where_and_when}
    assert recipe == {k: v for k, v in asdict(ToyTrainConfig()).items() if k not in where_and_when}


def test_same_seed_same_image_bit_for_bit(pipe):
    prompts = ["a red cat on grass", "a blue car on a road"]
    a = generate(pipe, prompts, [3, 4], steps=5)
    b = generate(pipe, prompts, [3, 4], steps=5)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    # batching does not change an image beyond batch-size-dependent CPU kernels (another seed differs by far more)
    c = generate(pipe, prompts[::-1], [4, 3], steps=5, batch_size=1)
    assert np.abs(np.asarray(a[0], dtype=float) - np.asarray(c[1], dtype=float)).max() <= 2
    d = generate(pipe, prompts[:1], [5], steps=5)
    assert np.abs(np.asarray(a[0], dtype=float) - np.asarray(d[0], dtype=float)).mean() > 5


def test_vae_keeps_edges(pipe):
    _, _, psnr = vae_reconstructions(pipe.vae, sample_scenes(16, HELD_OUT_SEED, world=WORLD))
    assert psnr.mean() >= 24.0
