"""Attention control: installing and restoring processors, refusing what it cannot serve, capturing maps."""

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from sdlab.attention import Controller, Run, capture, control, generate, sdpa
from sdlab.toymodel import TINY, build_pipeline


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline(TINY, seed=0)
    p.set_progress_bar_config(disable=True)
    return p


def run_for(pipe, n=1):
    return Run(tuple(["x"] * n), 4, (16, 16), torch.device("cpu"), torch.float32)


class Everywhere(Controller):
    """Takes every layer and computes plain attention; counts calls per step."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = {}, fail_at

    def wants(self, layer):
        return True

    def attend(self, layer, q, k, v):
        self.calls[self.step] = self.calls.get(self.step, 0) + 1
        if self.fail_at == self.step:
            raise RuntimeError("boom")
        return sdpa(q, k, v)


def test_control_installs_and_restores(pipe):
    before = pipe.unet.attn_processors
    with control(pipe.unet, Everywhere(), run_for(pipe)):
        during = pipe.unet.attn_processors
        assert all(type(p).__name__ == "ControlledProcessor" for p in during.values())
    after = pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_control_restores_on_exception(pipe):
    before = pipe.unet.attn_processors
    ctl = Everywhere(fail_at=2)
    with pytest.raises(RuntimeError, match="boom"):
        generate(pipe, ["a red cat on grass"], ctl, steps=4)
    after = pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before)
    assert ctl.calls[0] == ctl.calls[1] == len(before)  # every layer, every step, until it failed
    generate(pipe, ["a red cat on grass"], Everywhere(), steps=2)  # and the UNet is free again


def test_two_controllers_on_one_unet_refused(pipe):
    with control(pipe.unet, Everywhere(), run_for(pipe)):
        with pytest.raises(RuntimeError, match="already controlled by a running Everywhere"):
            with control(pipe.unet, Everywhere(), run_for(pipe)):
                pass
        with pytest.raises(RuntimeError, match="already controlled"):
            capture(pipe, "a red cat", steps=2)
    capture(pipe, "a red cat", steps=2)


def test_controlled_plain_attention_matches_pipeline(pipe):
    plain = generate(pipe, ["a red cat on grass", "a dog"], seed=3, steps=5, output_type="latent")
    ctl = generate(pipe, ["a red cat on grass", "a dog"], Everywhere(), seed=3, steps=5, output_type="latent")
    torch.testing.assert_close(torch.stack(ctl.images), torch.stack(plain.images), rtol=1e-6, atol=1e-6)


def test_shared_latent_is_seeded(pipe):
    a = generate(pipe, ["a cat", "a dog"], seed=5, steps=2, output_type="latent")
    b = generate(pipe, ["a cat"], seed=5, steps=2, output_type="latent")
    assert torch.equal(a.latent, b.latent)
    # same latent, same image up to batch-size-dependent CPU kernels (a different latent differs by O(1))
    torch.testing.assert_close(a.images[0], b.images[0], rtol=1e-3, atol=1e-3)


def test_capture_maps(pipe):
    cap = capture(pipe, "a red cat on grass", seed=8, steps=4)
    assert cap.cross.shape == (1, 8, 8, 77)  # TINY: 16x16 latent, cross-attention at 16, 8, 4 -> 8
    torch.testing.assert_close(cap.cross.sum(-1), torch.ones(1, 8, 8))  # probabilities over tokens
    assert cap.words() == ["a", "red", "cat", "on", "grass"]
    torch.testing.assert_close(cap.word_map("CAT"), cap.cross[0, :, :, 3])
    assert list(cap.word_maps()) == cap.words()
    comps = cap.self_components(4)
    assert comps.shape == (4, 8, 8)
    flat = comps.reshape(4, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(4, dtype=torch.float64), atol=1e-4, rtol=0)
    assert len(cap.images) == 1 and cap.images[0].size == (64, 64)


def test_capture_keeps_running_sums_only(pipe):
    from sdlab.attention import CaptureController

    for steps in (2, 6):
        ctl = CaptureController()
        generate(pipe, ["a red cat"], ctl, steps=steps, output_type="latent")
        assert ctl.cross_sum.shape == (1, 64, 77) and ctl.self_sum.shape == (1, 64, 64)
        assert ctl.cross_count == steps * 3 * 2  # steps x layers at 8x8 (1 down, 2 up) x heads


def test_capture_resolution_choice(pipe):
    cap = capture(pipe, ["a red cat", "a blue fish"], steps=2, res=16, self_attention=False, guidance=1.0)
    assert cap.cross.shape == (2, 16, 16, 77) and cap.self_maps is None
    with pytest.raises(ValueError, match=r"resolution 32.*\[4, 8, 16\]"):
        capture(pipe, "a red cat", steps=2, res=32)
    with pytest.raises(ValueError, match="no self-attention maps"):
        cap.self_components()


def test_capture_non_square(pipe):
    cap = capture(pipe, "a red cat", steps=2, height=64, width=32)
    assert cap.cross.shape == (1, 8, 4, 77) and cap.self_components(2).shape == (2, 8, 4)


def test_unet_without_cross_attention_refused(pipe):
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D", cross_attention_dim=32, attention_head_dim=2, layers_per_block=1,
    )
    with pytest.raises(ValueError, match="no cross-attention layers"):
        with control(unet, Everywhere(), run_for(pipe)):
            pass
    other = StableDiffusionPipeline(**{**pipe.components, "unet": unet})
    with pytest.raises(ValueError, match="no cross-attention layers"):
        capture(other, "a red cat", steps=2)


def test_unsupported_pipeline_refused(pipe):
    class StableDiffusion3Pipeline:  # a stand-in: the class, not its name, decides (tests/test_sdxl.py: more)
        unet = pipe.unet

    with pytest.raises(TypeError, match="StableDiffusion3Pipeline is not supported.*StableDiffusionXLPipeline"):
        capture(StableDiffusion3Pipeline(), "a red cat")


def test_unsupported_processor_refused(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    class Custom(AttnProcessor2_0):
        pass

    before = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(Custom())
    try:
        with pytest.raises(ValueError, match="uses Custom.*set_default_attn_processor"):
            capture(pipe, "a red cat", steps=2)
    finally:
        pipe.unet.set_attn_processor(before)


def test_figures_from_a_capture(pipe):
    from matplotlib.figure import Figure

    from sdlab import viz

    cap = capture(pipe, "a red cat on grass", steps=2)
    fig = viz.word_heat_maps(cap)
    assert isinstance(fig, Figure) and len(fig.axes) == 1 + len(cap.words())
    assert [ax.get_title() for ax in fig.axes[1:]] == cap.words()
    assert len(viz.word_heat_maps(cap, words=["cat"], overlay=False).axes) == 2
    assert len(viz.self_attention_components(cap, 3).axes) == 4
    overlay = viz.heat_overlay(cap.images[0], cap.word_map("cat"))
    assert overlay.shape == (64, 64, 3) and 0 <= overlay.min() and overlay.max() <= 1
