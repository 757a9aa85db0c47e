"""DDIM and null-text inversion of a real picture, and prompt-to-prompt on it.

Fast tests run a tiny random pipeline (a few steps, a few inner iterations): the wiring, determinism,
v-prediction, other schedulers, bad input. The slow tests run the shipped toy model on a few held-out toy-world
renders at guidance 7.5 with fewer steps and inner iterations than the issue's bars, so the file stays within a
few minutes on two CPU cores; `bench/inversion_bars.py` measures the bars themselves (16 renders, 50 DDIM
steps, 10 inner iterations) with the same code (`sdlab.toymodel.inversion_quality`). Run with -s to see the
numbers.
"""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

import sdlab
from sdlab import p2p
from sdlab.attention import generate
from sdlab.inversion import Inversion, invert, psnr
from sdlab.models import TOY_MODEL_DIR
from sdlab.toymodel import TINY, build_pipeline
from sdlab.toyworld import render, sample_scenes

STEPS, INNER = 4, 3


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline(TINY, seed=0)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def scene():
    return sample_scenes(1, 5)[0]


@pytest.fixture(scope="module")
def picture(scene):
    return render(scene)


@pytest.fixture(scope="module")
def inverted(pipe, picture, scene):
    return invert(pipe, picture, scene.caption, steps=STEPS, inner_steps=INNER, progress=False)


@pytest.fixture(scope="module")
def ddim_only(pipe, picture, scene):
    return invert(pipe, picture, scene.caption, steps=STEPS, null_text=False, progress=False)


def pixels(image):
    return np.asarray(image, dtype=np.float32)


def empty_embedding(pipe):
    return pipe.encode_prompt("", pipe.device, 1, False)[0][0]


def test_inversion_holds_latent_nulls_reconstruction_and_error(pipe, inverted, picture):
    side = TINY.image_size // pipe.vae_scale_factor
    assert isinstance(inverted, Inversion)
    assert inverted.latent.shape == (1, 4, side, side) and inverted.latent.dtype == torch.float32
    assert inverted.null_embeds.shape == (STEPS, pipe.tokenizer.model_max_length, TINY.text_hidden)
    assert inverted.error.shape == (STEPS,) and torch.isfinite(inverted.error).all()
    assert inverted.reconstruction.size == picture.size == inverted.vae_roundtrip.size
    assert (inverted.steps, inverted.guidance, inverted.null_text) == (STEPS, 7.5, True)
    assert len(inverted.inner_iterations) == STEPS and all(1 <= n <= INNER for n in inverted.inner_iterations)
    assert inverted.psnr == psnr(picture, inverted.reconstruction)


def test_null_text_retraces_the_inverted_trajectory_closer_than_ddim_alone(inverted, ddim_only):
    # same DDIM trajectory, same guidance: only the optimised null embeddings differ
    assert inverted.error.sum() < 0.8 * ddim_only.error.sum()
    assert inverted.error[-1] < ddim_only.error[-1]


def test_ddim_alone_uses_the_empty_caption_and_null_text_moves_it(pipe, inverted, ddim_only):
    empty = empty_embedding(pipe)
    assert torch.equal(ddim_only.null_embeds, empty.expand(STEPS, -1, -1))
    assert all(not torch.allclose(row, empty) for row in inverted.null_embeds)
    assert ddim_only.inner_iterations == []


def test_replay_is_the_reconstruction(pipe, inverted):
    again = inverted.replay(pipe, [inverted.caption])
    assert np.array_equal(pixels(again.images[0]), pixels(inverted.reconstruction))
    assert torch.equal(again.latent, inverted.latent)


def test_edit_with_inversion_keeps_the_picture_in_the_source_row(pipe, inverted, scene):
    target = inverted.caption.replace(scene.object, "dog" if scene.object != "dog" else "cat")
    processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    scheduler = pipe.scheduler
    res = p2p.edit(pipe, inverted.caption, [target], p2p.Replace(), inversion=inverted)
    assert res.prompts == [inverted.caption, target]
    assert np.abs(pixels(res.images[0]) - pixels(inverted.reconstruction)).max() <= 2  # batch of 2: float noise
    assert np.abs(pixels(res.images[1]) - pixels(res.images[0])).mean() > 1
    assert torch.equal(res.latent, inverted.latent)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors
    assert pipe.scheduler is scheduler


def test_generate_swaps_in_the_null_embedding_of_each_step(pipe):
    prompts = ["a red cat on grass", "a blue dog"]
    empty = empty_embedding(pipe).expand(STEPS, -1, -1).clone()
    plain = generate(pipe, prompts, seed=1, steps=STEPS, output_type="latent").images
    same = generate(pipe, prompts, seed=1, steps=STEPS, output_type="latent", null_embeds=empty).images
    assert all(torch.equal(a, b) for a, b in zip(plain, same))  # the empty caption is the default negative
    for step in (0, STEPS - 1):  # the first row goes in as negative_prompt_embeds, the others by the callback
        changed = empty.clone()
        changed[step] += 0.5
        out = generate(pipe, prompts, seed=1, steps=STEPS, output_type="latent", null_embeds=changed).images
        assert all(not torch.allclose(a, b) for a, b in zip(plain, out))
    unguided = generate(pipe, prompts, seed=1, steps=STEPS, guidance=1.0, output_type="latent").images
    ignored = generate(pipe, prompts, seed=1, steps=STEPS, guidance=1.0, output_type="latent",
                       null_embeds=changed).images
    assert all(torch.equal(a, b) for a, b in zip(unguided, ignored))


def test_generate_calls_the_step_hook_after_every_step(pipe):
    seen = []
    generate(pipe, ["a cat"], seed=0, steps=STEPS, output_type="latent",
             step_hook=lambda i, t, latents: seen.append((i, int(t), tuple(latents.shape))))
    pipe.scheduler.set_timesteps(STEPS)
    assert [(i, t) for i, t, _ in seen] == list(enumerate(pipe.scheduler.timesteps.tolist()))


def test_inversion_is_deterministic_on_cpu(pipe, picture, scene, inverted):
    again = invert(pipe, picture, scene.caption, steps=STEPS, inner_steps=INNER, progress=False)
    assert torch.equal(again.latent, inverted.latent)
    assert torch.equal(again.null_embeds, inverted.null_embeds)
    assert torch.equal(again.error, inverted.error)
    assert np.array_equal(pixels(again.reconstruction), pixels(inverted.reconstruction))


def test_v_prediction_and_a_non_ddim_scheduler(pipe, picture, scene, inverted):
    original = pipe.scheduler
    try:
        pipe.scheduler = EulerDiscreteScheduler.from_config(original.config, prediction_type="v_prediction")
        v_null = invert(pipe, picture, scene.caption, steps=STEPS, inner_steps=INNER, progress=False)
        v_ddim = invert(pipe, picture, scene.caption, steps=STEPS, null_text=False, progress=False)
        assert type(pipe.scheduler) is EulerDiscreteScheduler  # restored after each pass
        res = p2p.edit(pipe, scene.caption, [scene.caption], p2p.Replace(), inversion=v_null)
    finally:
        pipe.scheduler = original
    assert not torch.allclose(v_null.latent, inverted.latent)  # the prediction type reached the DDIM passes
    assert v_null.error.sum() < 0.8 * v_ddim.error.sum()
    assert np.abs(pixels(res.images[0]) - pixels(v_null.reconstruction)).max() <= 2


def test_progress_bar_counts_steps_times_inner_iterations(pipe, picture, scene, capsys):
    invert(pipe, picture, scene.caption, steps=2, inner_steps=INNER, progress=True)
    err = capsys.readouterr().err
    assert "null-text inversion" in err and f"{2 * INNER}/{2 * INNER}" in err


def test_resize_crops_and_resizes_to_the_pipeline_size(pipe, picture, scene):
    wide = picture.resize((96, 80))
    with pytest.raises(ValueError, match=r"96x80 but this pipeline works at 64x64; pass resize=True"):
        invert(pipe, wide, scene.caption, steps=2, null_text=False, progress=False)
    inv = invert(pipe, wide, scene.caption, steps=2, null_text=False, resize=True, progress=False)
    assert inv.image.size == inv.reconstruction.size == (64, 64)


@pytest.mark.parametrize("convert, error, match", [
    (lambda im: im.convert("L"), ValueError, r"grayscale \(mode 'L'\).*convert\('RGB'\)"),
    (lambda im: im.convert("RGBA"), ValueError, r"alpha channel \(mode 'RGBA'\)"),
    (lambda im: im.convert("LA"), ValueError, r"alpha channel"),
    (lambda im: im.convert("CMYK"), ValueError, r"mode 'CMYK'.*convert\('RGB'\)"),
    (lambda im: np.asarray(im), TypeError, r"PIL.Image.*ndarray"),
], ids=["grayscale", "rgba", "gray-alpha", "cmyk", "array"])
def test_bad_pictures_get_a_clear_error(pipe, picture, scene, convert, error, match):
    with pytest.raises(error, match=match):
        invert(pipe, convert(picture), scene.caption, steps=2, progress=False)


@pytest.mark.parametrize("caption, error, match", [
    ("", ValueError, "caption is empty"),
    ("   ", ValueError, "caption is empty"),
    ("a red cat on grass " * 20, ValueError, r"caption has \d+ tokens but the text encoder reads 75"),
    (None, TypeError, "caption must be a string"),
], ids=["empty", "blank", "too-long", "none"])
def test_bad_captions_get_a_clear_error(pipe, picture, caption, error, match):
    with pytest.raises(error, match=match):
        invert(pipe, picture, caption, steps=2, progress=False)


def test_bad_settings_get_a_clear_error(pipe, picture, scene):
    with pytest.raises(ValueError, match="guidance 1.0 .*null_text=False"):
        invert(pipe, picture, scene.caption, steps=2, guidance=1.0)
    with pytest.raises(ValueError, match="inner_steps must be a whole number"):
        invert(pipe, picture, scene.caption, steps=2, inner_steps=0)
    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config, timestep_spacing="linspace")
    try:
        with pytest.raises(ValueError, match="'linspace'.*'leading' or 'trailing'"):
            invert(pipe, picture, scene.caption, steps=2, progress=False)
    finally:
        pipe.scheduler = original


class Poison:
    """Makes the UNet's output NaN at one timestep, in the calls `which(sample, encoder_hidden_states)` picks."""

    def __init__(self, unet, timestep, which):
        self.timestep, self.which = timestep, which
        self.handle = unet.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        if int(args[1]) != self.timestep or not self.which(args[0], kwargs["encoder_hidden_states"]):
            return output
        if isinstance(output, tuple):
            return (output[0] * float("nan"),) + output[1:]
        output.sample = output.sample * float("nan")
        return output


@pytest.mark.parametrize("where, match", [
    ("inversion", r"DDIM inversion diverged at step 2 \(timestep {t}\)"),
    ("optimisation", r"null-text optimisation diverged at step 1 of 4 \(timestep {t}\), inner iteration 0"),
    ("reconstruction", r"reconstruction diverged at step 1 \(timestep {t}\)"),
], ids=["ddim-inversion", "optimisation", "reconstruction"])
def test_divergence_stops_with_an_error_naming_the_step(pipe, picture, scene, where, match):
    pipe.scheduler.set_timesteps(STEPS)
    down = pipe.scheduler.timesteps.tolist()  # sampling order; the inversion runs them backwards
    which = {  # the inversion runs one unguided row, the optimiser's null requires grad, sampling a guided pair
        "inversion": lambda x, e: x.shape[0] == 1 and not e.requires_grad,
        "optimisation": lambda x, e: e.requires_grad,
        "reconstruction": lambda x, e: x.shape[0] == 2,
    }[where]
    t = down[::-1][2] if where == "inversion" else down[1]
    scheduler, processors = pipe.scheduler, dict(pipe.unet.attn_processors)
    trainable = [p.requires_grad for p in pipe.unet.parameters()]
    poison = Poison(pipe.unet, t, which)
    try:
        with pytest.raises(FloatingPointError, match=match.format(t=t)):
            invert(pipe, picture, scene.caption, steps=STEPS, inner_steps=INNER, progress=False,
                   null_text=where == "optimisation")
    finally:
        poison.handle.remove()
    assert pipe.scheduler is scheduler and dict(pipe.unet.attn_processors) == processors
    assert [p.requires_grad for p in pipe.unet.parameters()] == trainable  # the optimiser's freeze is undone


def test_edit_refuses_arguments_the_inversion_fixes(pipe, inverted):
    src = inverted.caption
    with pytest.raises(ValueError, match="must be the inverted caption"):
        p2p.edit(pipe, "a green dog on sand", ["a green cat on sand"], p2p.Replace(), inversion=inverted)
    with pytest.raises(ValueError, match=f"steps=10, but the inversion was made with steps={STEPS}"):
        p2p.edit(pipe, src, [src], p2p.Replace(), inversion=inverted, steps=10)
    with pytest.raises(ValueError, match="guidance=3.0, but the inversion was made with guidance=7.5"):
        p2p.edit(pipe, src, [src], p2p.Replace(), inversion=inverted, guidance=3.0)
    with pytest.raises(ValueError, match="latent is fixed by the inversion"):
        p2p.edit(pipe, src, [src], p2p.Replace(), inversion=inverted, latent=inverted.latent)


# --- the shipped toy model: the bars ------------------------------------------------------------------

N, TOY_STEPS, TOY_INNER = 16, 50, 10  # the setting, as bench/inversion_bars.py (about 10 minutes here)

toy = pytest.mark.skipif(not (TOY_MODEL_DIR / "model_index.json").is_file(),
                         reason="the shipped toy model is not there (sdlab/toymodel/weights)")


@pytest.fixture(scope="module")
def toy_inverted():
    from sdlab.toymodel import inversion_quality

    p = sdlab.load_pipeline(device="cpu")
    p.set_progress_bar_config(disable=True)
    m = inversion_quality.invert_renders(p, N, steps=TOY_STEPS, inner_steps=TOY_INNER)
    print(f"inversion of {N} held-out renders, {TOY_STEPS} steps, {TOY_INNER} inner iterations: {m}")
    return p, m


@pytest.fixture(scope="module")
def toy_replaced(toy_inverted):
    from sdlab.toymodel import inversion_quality

    pipe, inverted = toy_inverted
    m = inversion_quality.replace_inverted(pipe, inverted)
    print(f"Replace on {N} inverted renders: {m}")
    return m


@pytest.mark.slow
@toy
def test_null_text_reconstructs_nearly_as_well_as_the_vae(toy_inverted):
    _, m = toy_inverted
    # The bar: within 1 dB of the VAE round trip. The shipped world-2 model measured 0.16 dB here (VAE
    # 32.56 dB, null-text 32.40 dB); with 5 inner iterations or 20 steps it misses (9.0 dB at 20 x 5, 2.6 dB at
    # 20 x 10), and DDIM alone is 11.7 dB behind.
    assert m["vae_minus_null_text"] <= 1.0


@pytest.mark.slow
@toy
def test_ddim_alone_is_clearly_worse_at_guidance_7_5(toy_inverted):
    _, m = toy_inverted
    assert m["null_text_minus_ddim"] >= 3.0


@pytest.mark.slow
@toy
def test_replace_on_inverted_renders_shows_the_target(toy_replaced):
    assert toy_replaced["target_seen_with"] >= 0.8
    assert toy_replaced["target_seen_blend"] >= 0.8
    assert toy_replaced["psnr_source"] >= 20  # the source row of the edit batch is the reconstruction


@pytest.mark.slow
@toy
def test_local_replace_on_inverted_renders_keeps_the_outside(toy_replaced):
    # The bar, met by Replace with LocalBlend([old, new], pixels=True): 0.291 on these 16 renders (outside
    # change 3.46, against 11.89 without p2p; target seen 93.8% with Replace(), 87.5% with the blend); Replace()
    # alone, 0.414.
    assert toy_replaced["blend_ratio"] <= 1 / 3


@pytest.mark.slow
@toy
@pytest.mark.xfail(strict=True, reason=(
    "missed by Replace() alone on the shipped world-2 model: outside ratio 0.414 on 16 renders (mean pixel change "
    "outside the objects 4.92 with prompt-to-prompt, 11.89 without): the paper's Replace keeps the layout, not "
    "every pixel around it, as in test_p2p_quality.py; the local edit above is the one for a real picture."))
def test_replace_alone_on_inverted_renders_keeps_the_outside(toy_replaced):
    assert toy_replaced["outside_ratio"] <= 1 / 3

def test_held_out_scenes_follow_the_shipped_models_world():
    from sdlab.toymodel.edit_quality import edit_scenes
    from sdlab.toymodel.inversion_quality import INVERT_SEED, held_out_scenes
    from sdlab.toymodel.quality import trained_world

    one = held_out_scenes(8, world=1)
    assert len(one) == 8 and all(s.second is None and s.pattern == "plain" and s.horizon == 0 for s in one)
    assert held_out_scenes(8, world=2) == edit_scenes(8, seed=INVERT_SEED)
    assert held_out_scenes(8) == held_out_scenes(8, world=trained_world())
    road = held_out_scenes(8, world=1, background="road")
    assert [s.background for s in road] == ["road"] * 8 and road[0].object == one[0].object
