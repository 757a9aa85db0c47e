"""Real Stable Diffusion on the meta device: published sizes, and shapes read off the modules, not typed in."""

from dataclasses import replace

import pytest
import torch

import sdlab
from sdlab.plotting import Figure
from sdlab.toymodel import TOY
from sdlab.walkthrough import SD15, SD21_BASE, SDXL, build_on_meta, spec_from_pipeline, walkthrough
from sdlab.walkthrough.compare import (cross_attention_table, padding_table, parameter_table, shape_table,
                                       unet_ladder)


@pytest.fixture(scope="module")
def sd15():
    return walkthrough(SD15)


@pytest.fixture(scope="module")
def sd2():
    return walkthrough(SD21_BASE)


@pytest.fixture(scope="module")
def sdxl():
    return walkthrough(SDXL)


@pytest.fixture(scope="module")
def toy():
    return walkthrough(spec_from_pipeline(sdlab.load_pipeline(device="cpu")))


def _stage(walk, part, step, encoder=False):
    return next(s for s in (walk.encoder if encoder else walk.stages) if (s.part, s.step) == (part, step))


def test_published_parameter_counts_on_the_meta_device(sd15, sd2):
    model = build_on_meta(SD15)
    assert all(p.is_meta for part in (model.unet, model.vae, model.text_encoder) for p in part.parameters())
    counts = sd15.parameters
    # the published sizes of SD 1.5: UNet 859.5 M, VAE 83.7 M, CLIP ViT-L/14 text encoder 123.1 M
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert round(sd2.parameters["unet"] / 1e6, 1) == 865.9 and round(sd2.parameters["text_encoder"] / 1e6, 1) == 340.4
    assert sd2.parameters["vae"] == counts["vae"]


def test_sd15_generation_shapes(sd15):
    assert _stage(sd15, "tokenizer", "prompt → token ids").shape == (2, 77)
    assert _stage(sd15, "text encoder", "transformer layers → context").shape == (2, 77, 768)
    assert _stage(sd15, "sampler", "initial noise latent").shape == (1, 4, 64, 64)
    assert _stage(sd15, "UNet", "guidance batch").shape == (2, 4, 64, 64)
    unet = [s for s in sd15.stages if s.part == "UNet" and "block" in s.step]
    assert [s.shape[1:] for s in unet] == [
        (320, 32, 32), (640, 16, 16), (1280, 8, 8), (1280, 8, 8), (1280, 8, 8),
        (1280, 16, 16), (1280, 32, 32), (640, 64, 64), (320, 64, 64)]
    assert [s.attention for s in unet] == [64, 32, 16, 0, 8, 0, 16, 32, 64]
    assert _stage(sd15, "guidance", "ε(∅) + s·(ε(y) − ε(∅))").shape == (1, 4, 64, 64)
    assert _stage(sd15, "image", "pixels (height × width × RGB)").shape == (512, 512, 3)
    assert sd15.image_size == 512 and sd15.scaling_factor == pytest.approx(0.18215)
    assert sd15.cross_attention_resolutions == [64, 32, 16, 8]
    assert len(sd15.cross_attention) == 16  # 2 per down level, 1 in the middle, 3 per up level
    assert {(c.keys, c.context_dim, c.heads) for c in sd15.cross_attention} == {(77, 768, 8)}
    assert {c.queries for c in sd15.cross_attention if c.resolution == 64} == {4096}


def test_vae_encoder_pads_right_and_bottom_and_the_latent_is_scaled(sd15):
    vae = [p for p in sd15.downsampling if p.layer.startswith("vae.")]
    assert [(p.pad, p.conv_padding, p.before[-1], p.padded[-1], p.after[-1]) for p in vae] == [
        ((0, 1, 0, 1), (0, 0), 512, 513, 256), ((0, 1, 0, 1), (0, 0), 256, 257, 128),
        ((0, 1, 0, 1), (0, 0), 128, 129, 64)]
    unet = [p for p in sd15.downsampling if p.layer.startswith("unet.")]
    assert len(unet) == 3 and all(p.pad is None and p.conv_padding == (1, 1) for p in unet)
    assert _stage(sd15, "VAE encoder", "conv_out → mean and log-variance", encoder=True).shape == (1, 8, 64, 64)
    assert _stage(sd15, "VAE encoder", "latent × scaling factor", encoder=True).shape == (1, 4, 64, 64)


def test_sd2_heads_and_context_follow_its_config(sd2):
    walk = sd2
    heads = {c.resolution: c.heads for c in walk.cross_attention}
    assert heads == {64: 5, 32: 10, 16: 20, 8: 20}  # attention_head_dim (5, 10, 20, 20) is the number of heads
    assert {c.context_dim for c in walk.cross_attention} == {1024}
    assert _stage(walk, "text encoder", "transformer layers → context").shape == (2, 77, 1024)


def test_shapes_are_measured_not_typed_in():
    big = replace(SD15, name="SD 1.5 at 768", unet=dict(SD15.unet, sample_size=96))
    walk = walkthrough(big, guidance=False)
    assert walk.image_size == 768 and walk.cross_attention_resolutions == [96, 48, 24, 12]
    assert _stage(walk, "tokenizer", "prompt → token ids").shape == (1, 77)
    assert _stage(walk, "UNet", "conv_out → noise prediction").shape == (1, 4, 96, 96)
    assert not any(s.part == "guidance" for s in walk.stages)
    assert _stage(walk, "image", "pixels (height × width × RGB)").shape == (768, 768, 3)


def test_toy_model_goes_through_the_same_walkthrough(toy):
    pipe = sdlab.load_pipeline(device="cpu")
    assert toy.parameters == {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in toy.parameters}
    assert toy.image_size == TOY.image_size and toy.cross_attention_resolutions == [16, 8, 4]
    assert _stage(toy, "UNet", "conv_in").shape == (2, TOY.unet_channels[0], 16, 16)
    assert _stage(toy, "text encoder", "transformer layers → context").shape == (2, 77, TOY.text_hidden)
    assert toy.scaling_factor == pytest.approx(pipe.vae.config.scaling_factor)


def test_tables_and_figure_side_by_side(sd15, toy):
    table = shape_table([sd15, toy], parts=("UNet",))
    row = table.rows[[r[1] for r in table.rows].index("down block 3")]
    assert row[2] == "2×1280×8×8" and row[3] == ""  # SD's fourth level; the toy model has three
    first = table.rows[[r[1] for r in table.rows].index("down block 0")]
    assert first[2:] == ["2×320×32×32 · 64²", "2×64×8×8 · 16²"]
    params = parameter_table([sd15, toy])
    assert params.column("SD 1.5")[:3] == ["859.5 M", "83.7 M", "123.1 M"]
    assert params.column("toy model")[0] == f"{toy.parameters['unet'] / 1e6:.2f} M"
    assert "| UNet | UNet2DConditionModel | 859.5 M |" in params._repr_markdown_()
    assert cross_attention_table(sd15).column("grid") == ["64×64", "32×32", "16×16", "8×8"]
    assert padding_table(toy).column("F.pad")[:2] == ["(0, 1, 0, 1)"] * 2
    fig = unet_ladder([sd15, toy])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    marks = [len(ax.collections[0].get_offsets()) for ax in fig.axes]
    assert marks == [sum(bool(s.attention) for s in w.stages) for w in (sd15, toy)] == [7, 5]


def test_sdxl_published_sizes_and_shapes(sdxl, sd15):
    model = build_on_meta(SDXL)
    assert all(p.is_meta for p in model.text_encoder_2.parameters())
    # the published sizes of SDXL base 1.0: UNet 2.57 B, OpenCLIP bigG text encoder with projection 694.7 M
    assert sdxl.parameters == {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                               "text_encoder_2": 694_659_840}
    assert sdxl.classes["text_encoder_2"] == "CLIPTextModelWithProjection"
    assert _stage(sdxl, "text encoder", "transformer layers → context").shape == (2, 77, 768)
    assert _stage(sdxl, "text encoder 2", "transformer layers → context").shape == (2, 77, 1280)
    assert _stage(sdxl, "text encoders", "both contexts side by side").shape == (2, 77, 2048)
    assert _stage(sdxl, "text encoder 2", "pooled and projected → text_embeds").shape == (2, 1280)
    assert _stage(sdxl, "UNet", "micro-conditioning time ids").shape == (2, 6)
    assert _stage(sdxl, "UNet", "text_embeds + time ids embedding").shape == (2, 1280)
    assert _stage(sdxl, "sampler", "initial noise latent").shape == (1, 4, 128, 128)
    unet = [s for s in sdxl.stages if s.part == "UNet" and "block" in s.step]
    assert [s.shape[1:] for s in unet] == [
        (320, 64, 64), (640, 32, 32), (1280, 32, 32), (1280, 32, 32), (1280, 64, 64), (640, 128, 128), (320, 128, 128)]
    assert [s.attention for s in unet] == [0, 64, 32, 32, 32, 64, 0]  # none at the first level
    assert sdxl.cross_attention_resolutions == [64, 32]
    assert len(sdxl.cross_attention) == 70  # transformer depths 2x2 + 2x10 down, 10 mid, 3x10 + 3x2 up
    assert {c.resolution: c.heads for c in sdxl.cross_attention} == {64: 10, 32: 20}
    assert {(c.keys, c.context_dim) for c in sdxl.cross_attention} == {(77, 2048)}
    assert _stage(sdxl, "image", "pixels (height × width × RGB)").shape == (1024, 1024, 3)
    assert sdxl.image_size == 1024 and sdxl.scaling_factor == pytest.approx(0.13025)
    # next to SD 1.5
    table = shape_table([sd15, sdxl], parts=("UNet",))
    first = table.rows[[r[1] for r in table.rows].index("down block 1")]
    assert first[2:] == ["2×640×16×16 · 32²", "2×640×32×32 · 64²"]
    params = parameter_table([sd15, sdxl])
    assert params.rows[3] == ["text encoder 2", "CLIPTextModelWithProjection", "—", "694.7 M", "—"]
    assert params.column("SD 1.5 ÷ SDXL")[0] == "0.33×"
    assert cross_attention_table(sdxl).column("layers") == ["down 4, up 6", "down 20, mid 10, up 30"]


def test_an_sdxl_pipeline_goes_through_the_same_walkthrough():
    from sdlab.toymodel.sdxl import build_sdxl_pipeline

    pipe = build_sdxl_pipeline()
    walk = walkthrough(spec_from_pipeline(pipe, "tiny SDXL"))
    assert walk.parameters == {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in walk.parameters}
    assert set(walk.parameters) == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert walk.cross_attention_resolutions == [8, 4] and walk.image_size == 64
    assert _stage(walk, "text encoders", "both contexts side by side").shape == (2, 77, 64)


def test_bad_input_is_explained(sd15):
    with pytest.raises(TypeError, match="ModelSpec"):
        build_on_meta("runwayml/stable-diffusion-v1-5")
    with pytest.raises(ValueError, match="no unet, vae, text_encoder"):
        spec_from_pipeline(object())
    with pytest.raises(ValueError, match="no part named \\['Unet'\\]"):
        shape_table(sd15, parts=("Unet",))
    with pytest.raises(TypeError, match="Walkthrough"):
        parameter_table([SD15])
