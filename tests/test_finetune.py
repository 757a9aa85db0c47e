"""`sdlab.finetune` in one process on the tiny random model: outputs, determinism, resume, LoRA, bad input."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import sdlab
from sdlab.finetune import FinetuneConfig, FinetuneError, finetune, latest_checkpoint, list_checkpoints
from sdlab.finetune import checkpoints as ckpt_mod
from sdlab.finetune import train as train_mod
from sdlab.finetune.cli import config_from_args
from sdlab.finetune.data import BatchOrder, open_dataset
from sdlab.finetune.metrics import parse_toy_prompt
from sdlab.toymodel import TINY, build_pipeline
from sdlab.toyworld import render, sample_scenes

from finetune_helpers import data, model, write_imagefolder  # noqa: F401 (data, model: fixtures)



def cfg(model, data, out, **kw):
    base = dict(model=str(model), dataset=str(data), output=str(out), max_steps=4, batch_size=2, learning_rate=1e-3,
                checkpoint_every=2, progress=False)
    return FinetuneConfig(**(base | kw))


def unet_of(out):
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_writes_a_loadable_pipeline_checkpoints_and_progression(model, data, tmp_path):
    out = tmp_path / "run"
    result = finetune(cfg(model, data, out, validate_every=2, validation_inference_steps=2))
    pipe = sdlab.load_pipeline(out, device="cpu")
    base = load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not same(base, unet_of(out))  # training changed the UNet
    assert pipe("a red cat on grass", num_inference_steps=2).images[0].size == (64, 64)
    assert [s for s, _ in list_checkpoints(out)] == [2]  # the last step's state is the output itself
    assert result.steps == 4 and result.images_per_second > 0
    rows = (out / "validation" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,kind,index,sample,prompt,seed,image")
    steps = sorted({int(r.split(",")[0]) for r in rows[1:]})
    assert steps == [0, 2, 4]
    kinds = {r.split(",")[1] for r in rows[1:]}
    assert kinds == {"prompt", "probe"}
    for name in ("progression.png", "before_after.png"):
        assert Image.open(out / "validation" / name).size[0] > 64 * 2
    # validation with fixed seeds is reproducible: step 0 (the base model) matches a fresh sample
    first = np.asarray(Image.open(out / "validation" / "step-000000" / "00-prompt.png"))
    assert first.std() > 0


def test_same_seed_same_weights_other_seed_other_weights(model, data, tmp_path):
    a = unet_of(finetune(cfg(model, data, tmp_path / "a", checkpoint_every=0)).output)
    b = unet_of(finetune(cfg(model, data, tmp_path / "b", checkpoint_every=0)).output)
    c = unet_of(finetune(cfg(model, data, tmp_path / "c", checkpoint_every=0, seed=1)).output)
    assert same(a, b) and not same(a, c)


def test_resume_is_bit_identical_with_lora_ema_text_encoder_and_accumulation(model, data, tmp_path):
    opts = dict(lora_rank=4, use_ema=True, train_text_encoder=True, gradient_accumulation=2, snr_gamma=5.0,
                noise_offset=0.1, random_flip=True, center_crop=False, caption_dropout=0.3, warmup_steps=2)
    ref = finetune(cfg(model, data, tmp_path / "ref", max_steps=6, **opts)).output
    part = tmp_path / "part"
    finetune(cfg(model, data, part, max_steps=3, **opts))  # stops after step 3 with checkpoint-2 on disk
    assert latest_checkpoint(part).name == "checkpoint-2"
    resumed = finetune(cfg(model, data, part, max_steps=6, resume="latest", **opts))
    assert resumed.resumed_from == 2
    assert same(unet_of(ref), unet_of(part))
    te = "text_encoder/model.safetensors"
    assert same(load_file(str(ref / te)), load_file(str(part / te)))
    # LoRA is fused: the output is a plain UNet
    assert not any("lora" in k for k in unet_of(part))


def test_lora_fusion_keeps_the_adapted_function():
    from sdlab.finetune.modules import _add_lora, fuse_lora

    unet = build_pipeline(TINY, seed=0).unet
    _add_lora(unet, FinetuneConfig(lora_rank=4), seed=0, targets=("to_q", "to_k", "to_v", "to_out.0"))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at zero: make the adapters do something
        x, t, e = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 32)
        adapted = unet(x, t, e).sample
        fused = fuse_lora(unet)
        assert not any("lora" in n for n, _ in fused.named_parameters())
        torch.testing.assert_close(fused(x, t, e).sample, adapted, atol=1e-5, rtol=1e-4)


class _Echo(torch.nn.Module):
    """A 'UNet' that predicts exactly the target the loss asks for."""

    def __init__(self, sched, kind):
        super().__init__()
        self.sched, self.kind = sched, kind

    def forward(self, noisy, t, emb):
        a = self.sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        x0 = self.x0
        eps = (noisy - a.sqrt() * x0) / (1 - a).sqrt()
        target = eps if self.kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return type("Out", (), {"sample": target})


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_loss_target_follows_the_scheduler_prediction_type(kind, gamma):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind)
    echo = _Echo(sched, kind)
    echo.x0 = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    loss = train_mod.diffusion_loss(echo, sched, echo.x0, None, g, snr_gamma=gamma)
    assert loss.item() < 1e-10
    other = "v_prediction" if kind == "epsilon" else "epsilon"
    wrong = _Echo(sched, other)
    wrong.x0 = echo.x0
    assert train_mod.diffusion_loss(wrong, sched, echo.x0, None, torch.Generator().manual_seed(0)).item() > 1e-3


def test_batch_order_is_disjoint_across_ranks_and_resumable():
    full = list(BatchOrder(10, 2, 2, 0, seed=3, start=0, total=12))
    other = list(BatchOrder(10, 2, 2, 1, seed=3, start=0, total=12))
    for a, b in zip(full, other):
        assert not {i for _, i in a} & {i for _, i in b}
    assert list(BatchOrder(10, 2, 2, 0, seed=3, start=5, total=12)) == full[5:]
    epochs = {e for batch in full for e, _ in batch}
    assert epochs == {0, 1, 2, 3, 4, 5}  # 2 global batches of 4 per epoch of 10


def test_cli_flags_map_to_the_config():
    c = config_from_args(["--dataset", "d", "--output", "o", "--max-steps", "7", "--lora-rank", "4", "--use-ema",
                          "--resume", "latest", "--probe", "yoda", "--random-crop", "--no-progress"])
    assert (c.max_steps, c.lora_rank, c.use_ema, c.resume, c.probe_prompts) == (7, 4, True, "latest", ("yoda",))
    assert c.center_crop is False and c.progress is False and c.model is None


def test_toy_prompts_parse_to_attributes():
    assert parse_toy_prompt("a photo of a striped red car on a bumpy road") == {
        "object": "car", "color": "red", "background": "road"}
    assert parse_toy_prompt("yoda") is None


# ---- bad input: a clear error, nothing lost ---------------------------------------------------------------


def test_missing_columns_are_listed(model, data, tmp_path):
    with pytest.raises(FinetuneError, match=r"no column 'caption'.*columns found: text, image"):
        finetune(cfg(model, data, tmp_path / "o", caption_column="caption"))


def test_corrupt_image_is_skipped_and_counted_or_fails_when_strict(model, tmp_path):
    folder = write_imagefolder(tmp_path / "d", n=6)
    (folder / "002.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) of 6.*002.png"):
        result = finetune(cfg(model, folder, tmp_path / "o", max_steps=2, checkpoint_every=0))
    assert result.skipped_images == 1
    with pytest.raises(FinetuneError, match=r"unreadable image row 2 .*002.png.*--strict"):
        finetune(cfg(model, folder, tmp_path / "o2", strict=True))


def test_empty_dataset_and_too_small_dataset(model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("")
    with pytest.raises(FinetuneError, match="is empty"):
        finetune(cfg(model, empty, tmp_path / "o"))
    one = write_imagefolder(tmp_path / "one", n=1)
    with pytest.raises(FinetuneError, match="fewer than one global batch"):
        finetune(cfg(model, one, tmp_path / "o1"))
    assert not (tmp_path / "o1").exists()  # bad input leaves nothing behind
    (one / "metadata.jsonl").unlink()
    with pytest.raises(FinetuneError, match="no metadata.jsonl.*found: 000.png"):
        finetune(cfg(model, one, tmp_path / "o2"))


def test_resolution_the_vae_cannot_take(model, data, tmp_path):
    with pytest.raises(FinetuneError, match=r"resolution 40 .*multiple of 16 \(e.g. 32 or 48\)"):
        finetune(cfg(model, data, tmp_path / "o", resolution=40))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(model, data, tmp_path, monkeypatch):
    real = train_mod.diffusion_loss
    calls = []

    def nan_at_step_4(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(train_mod, "diffusion_loss", nan_at_step_4)
    out = tmp_path / "o"
    with pytest.raises(FinetuneError, match=r"loss is nan at step 4 .*Last good checkpoint: .*checkpoint-3"):
        finetune(cfg(model, data, out, max_steps=6, checkpoint_every=1))
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 3] and not (out / "model_index.json").exists()
    monkeypatch.setattr(train_mod, "diffusion_loss", real)
    finetune(cfg(model, data, out, max_steps=6, checkpoint_every=1, resume="latest"))  # and it resumes fine
    assert (out / "model_index.json").is_file()


def test_resume_with_nothing_to_resume(model, data, tmp_path):
    with pytest.raises(FinetuneError, match="nothing to resume"):
        finetune(cfg(model, data, tmp_path / "never", resume="latest"))
    with pytest.raises(FinetuneError, match="no such checkpoint folder"):
        finetune(cfg(model, data, tmp_path / "o", resume=str(tmp_path / "nope")))


def test_output_holding_a_different_run_is_refused_unless_overwrite(model, data, tmp_path):
    out = tmp_path / "o"
    finetune(cfg(model, data, out, max_steps=3))  # leaves checkpoint-2 and a finished pipeline
    with pytest.raises(FinetuneError, match=r"holds a different run \(learning_rate: 0.001 then, 0.01 now\)"):
        finetune(cfg(model, data, out, max_steps=3, learning_rate=1e-2))
    with pytest.raises(FinetuneError, match=r"a run of this config with checkpoints up to step 2 and a finished "
                                            r"pipeline. Pass --resume latest to continue it or --overwrite"):
        finetune(cfg(model, data, out, max_steps=3))
    with pytest.raises(FinetuneError, match="differs from the one it was trained with"):
        finetune(cfg(model, data, out, max_steps=3, learning_rate=1e-2, resume="latest"))
    finetune(cfg(model, data, out, max_steps=2, learning_rate=1e-2, overwrite=True, checkpoint_every=0))
    assert json.loads((out / "sdlab_run.json").read_text())["config"]["learning_rate"] == 1e-2
    assert list_checkpoints(out) == []  # the old run's checkpoints went with it
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FinetuneError, match="holds no sdlab run"):
        finetune(cfg(model, data, foreign, overwrite=True))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_out_of_disk_while_checkpointing_keeps_the_previous_checkpoint(model, data, tmp_path, monkeypatch):
    real = ckpt_mod.write_state

    def full_disk_on_step_4(accelerator, folder):
        if folder.name.endswith("-4"):
            real(accelerator, folder)  # half-written ...
            raise OSError(28, "No space left on device")
        real(accelerator, folder)

    monkeypatch.setattr(ckpt_mod, "write_state", full_disk_on_step_4)
    out = tmp_path / "o"
    with pytest.raises(FinetuneError, match=r"step 4 .*No space left.*latest checkpoint is still .*checkpoint-2"):
        finetune(cfg(model, data, out, max_steps=6))
    assert latest_checkpoint(out).name == "checkpoint-2"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]


def test_hub_dataset_offline_fails_with_a_clear_message(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FinetuneError, match="could not load the hub dataset 'someone/pokemon'.*local imagefolder"):
        open_dataset("someone/pokemon")


def test_nonfinite_loss_message_names_inf_too(model, data, tmp_path, monkeypatch):
    real = train_mod.diffusion_loss
    monkeypatch.setattr(train_mod, "diffusion_loss", lambda *a, **k: real(*a, **k) * math.inf)
    with pytest.raises(FinetuneError, match=r"loss is inf at step 1 .*Last good checkpoint: none"):
        finetune(cfg(model, data, tmp_path / "o"))


def test_clip_metrics_with_local_weights_and_one_message_without(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sdlab.finetune.metrics import ClipMetrics, pick_metrics
    from sdlab.toymodel import build_tokenizer

    tok = build_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path / "clip")
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tok).save_pretrained(tmp_path / "clip")
    images = [render(s) for s in sample_scenes(3, 0)]
    prompts = ["yoda", "girl with a pearl earring", "Donald Trump"]
    metrics, why = pick_metrics("auto", prompts, str(tmp_path / "clip"), images)
    assert isinstance(metrics, ClipMetrics) and why is None
    rows = metrics.measure(images, prompts)
    assert all(0 <= r["clip_score"] <= 100 and -1 <= r["style"] <= 1 for r in rows)
    metrics, why = pick_metrics("auto", prompts, str(tmp_path / "absent"), images)
    assert metrics is None and why.startswith("CLIP metrics skipped: no local CLIP weights")
    toy, why = pick_metrics("none", prompts, None)
    assert toy is None and "off" in why


def test_toy_defaults_pick_probes_for_objects_the_data_never_shows(tmp_path):
    from sdlab.finetune.probes import (CREATURE_OBJECTS, REAL_PROBES, TOY_PROBE_CANDIDATES, default_prompts,
                                       export_narrow, named_objects)
    from sdlab.toyworld.render import PASTEL_GROUNDS

    folder = export_narrow(tmp_path / "narrow", 40, seed=3)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {r["object"] for r in rows} == set(CREATURE_OBJECTS)  # all four, nothing else
    assert all(r["style"] == "creature" for r in rows)
    captions = [r["text"] for r in rows]
    prompts, probes = default_prompts(64, captions)
    assert prompts == tuple(dict.fromkeys(captions))[:3] and len(probes) == 4
    assert {o for p in probes for o in named_objects(p)} == {"house", "tree", "car", "star"}  # the yoda role
    # and on light grounds: on a road or at night the creature style itself would take the probe's background
    assert not any(parse_toy_prompt(p)["background"] in PASTEL_GROUNDS for p in TOY_PROBE_CANDIDATES[:8])
    assert default_prompts(512, captions)[1] == REAL_PROBES  # real models get the report's "yoda"

    world = [s.caption for s in sample_scenes(64, 0, style="creature", world=1)]  # every object: no yoda left
    with pytest.warns(UserWarning, match="no probe is out of its domain.*export_narrow"):
        _, fallback = default_prompts(64, world)
    shown = {tuple(parse_toy_prompt(c).values()) for c in world}
    assert len(fallback) == 4 and not any(tuple(parse_toy_prompt(p).values()) in shown for p in fallback)


def test_narrow_scenes_are_a_filtered_stream_of_the_world():
    from sdlab.finetune.probes import CREATURE_OBJECTS, narrow_scenes

    few, more = narrow_scenes(5, 7), narrow_scenes(30, 7)
    assert more[:5] == few  # the first n never depend on how many are asked for
    world = [s for s in sample_scenes(400, 7, style="creature") if {t.object for t in s.things} <= set(CREATURE_OBJECTS)]
    assert more == world[:30] and any(s.second is not None for s in more)  # world 2 (the default): pairs too
    assert narrow_scenes(4, 7, world=1) == [s for s in sample_scenes(40, 7, style="creature", world=1)
                                            if s.object in CREATURE_OBJECTS][:4]
    pairs = narrow_scenes(30, 1, ("house", "tree"), world=2)
    assert all({t.object for t in s.things} <= {"house", "tree"} for s in pairs)
    assert any(s.second is not None for s in pairs)
    with pytest.raises(ValueError, match="objects must name toy-world objects.*got \\['yoda'\\]"):
        narrow_scenes(3, 0, ("yoda",))


analyze = getattr(sdlab.toyworld, "analyze", None)
needs_evaluator = pytest.mark.skipif(analyze is None, reason="sdlab.toyworld.analyze not available yet")


@needs_evaluator
def test_toy_metrics_read_fidelity_and_style_from_renders():
    from dataclasses import replace

    from sdlab.finetune.metrics import ToyWorldMetrics

    scenes = [s for s in sample_scenes(40, 3, world=1) if s.style == "plain"][:6]
    creatures = [replace(s, style="creature") for s in scenes]
    m = ToyWorldMetrics()
    plain = m.measure([render(s) for s in scenes], [s.caption for s in scenes])
    styled = m.measure([render(s) for s in creatures], [s.caption for s in creatures])
    assert np.mean([r["fidelity"] for r in plain]) > 0.8 and np.mean([r["fidelity"] for r in styled]) > 0.8
    assert max(r["style"] for r in plain) < 0.3 < 0.7 < min(r["style"] for r in styled)
    wrong = m.measure([render(scenes[0])], ["a " + next(c for c in ("red", "blue") if c != scenes[0].color) + " "
                                            + scenes[0].object + " " + sdlab.toyworld.PLACES[scenes[0].background]])
    assert wrong[0]["color_ok"] == 0.0 and wrong[0]["object_ok"] == wrong[0]["background_ok"] == 1.0
    assert wrong[0]["fidelity"] == 0.0  # a picture is faithful only if all three are right


@needs_evaluator
def test_tradeoff_is_measured_written_and_plotted(model, data, tmp_path):
    from matplotlib.figure import Figure

    from sdlab.finetune import plots
    from sdlab.finetune.validation import read_csv

    out = tmp_path / "run"
    result = finetune(cfg(model, data, out, validate_every=2, validation_inference_steps=2, metrics="toyworld",
                          validation_samples=2))
    assert [r["step"] for r in result.tradeoff] == [0, 2, 4]
    assert all(0 <= r["probe_fidelity"] <= 1 and 0 <= r["probe_style"] <= 1 for r in result.tradeoff)
    header = (out / "validation" / "tradeoff.csv").read_text().splitlines()[0]
    assert "probe_fidelity" in header and "probe_style" in header and "prompt_style" in header
    assert (out / "validation" / "tradeoff.png").is_file()
    rows = (out / "validation" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 * 7 and (out / "validation" / "step-000004" / "06-probe-1.png").is_file()
    for key in ("probe_object", "probe_color", "probe_background", "probe_style_sd", "probe_fidelity_sd"):
        assert all(0 <= r[key] <= 1 for r in result.tradeoff), key
    assert all(r["probe_n"] == 8 and r["prompt_n"] == 6 for r in result.tradeoff)  # 4 probes, 3 prompts x 2 seeds
    images = read_csv(out / "validation" / "metrics.csv")
    for row in result.tradeoff:  # each point is the mean (and sd) of its step's probe x seed pairs
        mine = [r["object_ok"] for r in images if r["step"] == row["step"] and r["kind"] == "probe"]
        assert row["probe_object"] == pytest.approx(np.mean(mine))
        assert row["probe_object_sd"] == pytest.approx(np.std(mine, ddof=1))
    for fig in (plots.tradeoff_figure(out), plots.progression_figure(out, kind="probe"), plots.dataset_figure(data),
                plots.stop_figure(out), plots.compare_figure({"a": out, "b": out})):
        assert isinstance(fig, Figure)
    assert result.suggestion.step in (0, 2, 4) and (out / "suggested" / "model_index.json").is_file()


def test_cpu_run_keeps_freed_memory_for_the_next_step(model, data, tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(train_mod, "reuse_freed_memory", lambda: called.append(True))
    finetune(cfg(model, data, tmp_path / "o", max_steps=1, checkpoint_every=0, cpu=True))
    assert called == [True]


def test_calibrate_probes_scores_candidates_in_chunks_until_enough_are_right(monkeypatch):
    from types import SimpleNamespace

    import sdlab.attention
    from sdlab.finetune.probes import TOY_PROBE_CANDIDATES, calibrate_probes

    candidates = list(TOY_PROBE_CANDIDATES[:8])
    fidelity = {p: 1.0 if i in (1, 2, 4) else 0.5 - i / 100 for i, p in enumerate(candidates)}
    asked = []

    def fake_generate(pipe, prompts, seed, steps, guidance):
        asked.append(list(prompts))
        return SimpleNamespace(images=list(prompts))

    class Metrics:
        def measure(self, images, prompts):
            return [{"fidelity": fidelity[p]} for p in prompts]

    monkeypatch.setattr(sdlab.attention, "generate", fake_generate)
    probes, right = calibrate_probes(None, candidates, 2, metrics=Metrics())
    assert probes == (candidates[1], candidates[2]) and right == 2
    assert asked == [candidates[:2]] * 2 + [candidates[2:4]] * 2  # two seeds per chunk; it stopped at 2 right
    asked.clear()
    probes, right = calibrate_probes(None, candidates, 4, metrics=Metrics())  # only 3 right: every one scored
    assert right == 3 and probes == (candidates[1], candidates[2], candidates[4], candidates[0])
    assert sum(len(a) for a in asked) == 2 * len(candidates)
