"""SDXL base: capture and prompt-to-prompt edits on a tiny random `StableDiffusionXLPipeline` (two text encoders,
"text_time" micro-conditioning), parity of the fused edit with the slow oracle, loading a saved SDXL folder,
and the pipelines sdlab refuses."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from p2p_oracle import OracleController, sharpen
from test_p2p import CASES, TOL, rel
from transformers import CLIPTokenizer

import sdlab
from sdlab import p2p, viz
from sdlab.attention import CaptureController, capture, generate, sdpa
from sdlab.p2p import Replace
from sdlab.toymodel import build_tokenizer
from sdlab.toymodel.sdxl import TINY_XL, build_sdxl_pipeline

STEPS = 6


@pytest.fixture(scope="module")
def pipe():
    p = build_sdxl_pipeline(seed=0)
    sharpen(p.unet, 3.0)  # peaked attention: an edit moves the output by several percent
    p.set_progress_bar_config(disable=True)
    return p


def latents(pipe, prompts, controller, seed=0):
    return torch.stack(generate(pipe, prompts, controller, seed=seed, steps=STEPS, output_type="latent").images)


EDIT_KINDS = ["replace-words-2targets", "refine", "reweight", "reweight-refine", "reweight-replace", "self-only",
              "local-blend-refine"]
"""Every edit kind of tests/test_p2p.py's cases: Replace with per-word and self schedules, Refine, Reweight
alone and on either base, self-attention only, LocalBlend (over Refine, two targets)."""


@pytest.mark.parametrize("case", EDIT_KINDS)
def test_parity_with_oracle(pipe, case):
    source, targets, edit = CASES[case]
    prompts = [source, *targets]
    fast = latents(pipe, prompts, p2p.EditController(edit, pipe.tokenizer, source, targets))
    slow = latents(pipe, prompts, OracleController(edit, pipe.tokenizer, source, targets, self_max_tokens=8 * 8,
                                                   blend_tokens=8 * 8))
    plain = latents(pipe, prompts, None)
    assert rel(fast, slow) < TOL
    assert rel(plain[1:], slow[1:]) > 100 * TOL  # the edit did something the parity had to reproduce
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)  # the source is never edited


def test_pooled_embeddings_and_time_ids_pass_through(pipe):
    """Under an edit the UNet gets the pooled text embeddings and micro-conditioning the pipeline computes itself."""
    seen = []

    def record(module, args, kwargs):
        seen.append({k: v.clone() for k, v in kwargs["added_cond_kwargs"].items()})

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        prompts = ["a red cat on grass", "a red dog on grass"]
        generate(pipe, prompts, seed=1, steps=2, output_type="latent")
        generate(pipe, prompts, p2p.EditController(Replace(), pipe.tokenizer, prompts[0], prompts[1:]),
                 seed=1, steps=2, output_type="latent")
    finally:
        handle.remove()
    plain, edited = seen[:2], seen[2:]
    for a, b in zip(plain, edited):
        assert torch.equal(a["text_embeds"], b["text_embeds"]) and torch.equal(a["time_ids"], b["time_ids"])
    assert plain[0]["time_ids"][0].tolist() == [64, 64, 0, 0, 64, 64]  # original size, crop, target size
    assert plain[0]["text_embeds"].shape == (4, TINY_XL.text_encoder_2["projection_dim"])  # guidance x 2 prompts


def test_maps_at_the_default_resolution_and_plots(pipe):
    cap = capture(pipe, "a red cat on grass", seed=8, steps=3)
    # 16x16 latent; cross-attention at 8x8 and 4x4 (none at 16x16, as SDXL has none at its first level) -> 8x8
    assert cap.cross.shape == (1, 8, 8, 77) and cap.self_maps.shape == (1, 64, 64)
    torch.testing.assert_close(cap.cross.sum(-1), torch.ones(1, 8, 8))
    assert cap.words() == ["a", "red", "cat", "on", "grass"]
    assert capture(pipe, "a red cat", steps=2, res=4, self_attention=False).cross.shape == (1, 4, 4, 77)
    with pytest.raises(ValueError, match=r"resolution 16.*\[4, 8\]"):
        capture(pipe, "a red cat", steps=2, res=16)
    assert [ax.get_title() for ax in viz.word_heat_maps(cap).axes[1:]] == cap.words()
    res = p2p.edit(pipe, "a red cat", ["a red dog"], Replace(), steps=2)
    assert [ax.get_title() for ax in viz.edit_comparison(res).axes] == ["source: a red cat", "a red dog"]
    assert [im.size for im in res.images] == [(64, 64)] * 2


def test_same_seed_same_image(pipe):
    a = capture(pipe, "a red cat on grass", seed=5, steps=2, self_attention=False)
    b = capture(pipe, "a red cat on grass", seed=5, steps=2, self_attention=False)
    c = capture(pipe, "a red cat on grass", seed=6, steps=2, self_attention=False)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0])) and torch.equal(a.cross, b.cross)
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(c.images[0]))


def test_processors_restored_after_success_and_exception(pipe):
    before = pipe.unet.attn_processors

    def unchanged():
        after = pipe.unet.attn_processors
        return after.keys() == before.keys() and all(after[k] is before[k] for k in before)

    p2p.edit(pipe, "a red cat", ["a red dog"], Replace(), steps=2, output_type="latent")
    assert unchanged()

    class Boom(CaptureController):
        def attend(self, layer, q, k, v):
            if self.step == 1:
                raise RuntimeError("boom")
            return sdpa(q, k, v)

    with pytest.raises(RuntimeError, match="boom"):
        generate(pipe, ["a red cat"], Boom(), steps=3, output_type="latent")
    assert unchanged()
    capture(pipe, "a red cat", steps=1)  # and the UNet is free again


# --- loading an SDXL folder ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / "pipe"
    build_sdxl_pipeline(seed=1).save_pretrained(folder, safe_serialization=True)
    return folder


def test_load_pipeline_reads_an_sdxl_folder(sdxl_dir):
    pipe = sdlab.load_pipeline(sdxl_dir, device="cpu")
    assert isinstance(pipe, StableDiffusionXLPipeline) and pipe.watermark is None
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder_2.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    assert capture(pipe, "a red cat", steps=1).cross.shape == (1, 8, 8, 77)


def test_float16_keeps_the_vae_in_float32(sdxl_dir):
    pipe = sdlab.load_pipeline(sdxl_dir, device="cpu", dtype="float16")  # what CUDA gets by default
    assert pipe.vae.config.force_upcast
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.text_encoder_2.dtype == torch.float16
    assert pipe.vae.dtype == torch.float32
    z = torch.randn(1, 4, 16, 16, dtype=torch.float16)  # the UNet's float16 latents decode in float32
    assert pipe.vae.decode(z).sample.dtype == torch.float32
    x = torch.rand(1, 3, 64, 64, dtype=torch.float16)
    assert pipe.vae.encode(x).latent_dist.mean.dtype == torch.float32


# --- bad input: each names the pipeline and what is supported -----------------------------------------------


def test_refiner_is_refused(pipe):
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=pipe.vae, text_encoder=None, text_encoder_2=pipe.text_encoder_2, tokenizer=None,
        tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, scheduler=pipe.scheduler, requires_aesthetics_score=True)
    with pytest.raises(TypeError, match=r"StableDiffusionXLImg2ImgPipeline is not supported.*refiner.*"
                                        r"StableDiffusionXLPipeline \(SDXL base\)"):
        capture(refiner, "a red cat", steps=1)
    with pytest.raises(TypeError, match="StableDiffusionXLImg2ImgPipeline is not supported"):
        p2p.edit(refiner, "a red cat", ["a red dog"], Replace(), steps=1)
    # the refiner's components in the base pipeline's class
    halfway = StableDiffusionXLPipeline(**{**pipe.components, "text_encoder": None, "tokenizer": None})
    with pytest.raises(ValueError, match=r"this StableDiffusionXLPipeline has no text_encoder, tokenizer: "
                                         r"that is the SDXL refiner's layout.*SDXL base"):
        capture(halfway, "a red cat", steps=1)


def test_tokenizers_that_disagree_are_refused(pipe):
    characters = CLIPTokenizer(vocab=build_tokenizer().get_vocab(), merges=[], model_max_length=77)  # no merges
    odd = StableDiffusionXLPipeline(**{**pipe.components, "tokenizer_2": characters})
    message = (r"the two tokenizers of this StableDiffusionXLPipeline split the prompt into different words: "
               r"word 1 of 'a red cat' is 'red' at token positions \[2\] for the first tokenizer but 'red' at "
               r"\[2, 3, 4\] for the second")
    with pytest.raises(ValueError, match=message):
        capture(odd, "a red cat", steps=1)
    with pytest.raises(ValueError, match="split the prompt into different words"):
        p2p.edit(odd, "a cat", ["a red cat"], p2p.Refine(), steps=1)
    with pytest.raises(ValueError, match="split the prompt into different words"):
        generate(odd, ["a cat"], steps=1)


@pytest.mark.parametrize("name", ["StableDiffusion3Pipeline", "FluxPipeline", "KandinskyPipeline"])
def test_other_families_are_refused(pipe, name):
    stand_in = type(name, (), {"unet": pipe.unet, "tokenizer": pipe.tokenizer})()
    supported = r"sdlab runs StableDiffusionPipeline \(SD 1.x / 2.x, the toy model\) and StableDiffusionXLPipeline"
    with pytest.raises(TypeError, match=f"{name} is not supported by sdlab's capture and edits; {supported}"):
        capture(stand_in, "a red cat", steps=1)
    with pytest.raises(TypeError, match=f"{name} is not supported"):
        p2p.edit(stand_in, "a red cat", ["a red dog"], Replace(), steps=1)


def test_inversion_refuses_sdxl(pipe):
    from PIL import Image

    from sdlab.inversion import invert

    with pytest.raises(ValueError, match="inversion runs on SD 1.x / 2.x pipelines.*StableDiffusionXLPipeline"):
        invert(pipe, Image.new("RGB", (64, 64)), "a red cat", steps=2)
