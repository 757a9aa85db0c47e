"""`sdlab train-toy` on the tiny architecture: end to end, determinism, resume, refusals, NaN."""

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from sdlab.toymodel import TINY, build_pipeline
from sdlab.toymodel import train as train_mod
from sdlab.toymodel.train import ToyTrainConfig, TrainingError, main, train_toy


def tiny_cfg(tmp_path, name="run", **kw):
    base = dict(output=str(tmp_path / name), arch="tiny", n_images=32, vae_steps=3, unet_steps=4, batch_size=4,
                warmup=2, checkpoint_minutes=0.0, device="cpu", decoder_steps=3, anneal_steps=3,
                lr_floor=0.1, ema_text_encoder=True, pad_dropout=0.5,
                anneal_pad_dropout=0.5, object_isolation=0.5,
                anneal_object_isolation=0.5, vae_refine_steps=3,
                vae_refine_generated=4, attribute_anneal_steps=3)  # the options on: resume must restore them too
    return ToyTrainConfig(**(base | kw))


def unet_weights(out):
    """The UNet's and the text encoder's weights (both are EMAs in the saved pipeline)."""
    return {**{f"unet.{k}": v for k, v in load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors")).items()},
            **{f"text.{k}": v for k, v in load_file(str(out / "text_encoder" / "model.safetensors")).items()}}


def interrupted_at_step_2(monkeypatch, run, phase=None):
    """`run()` stopped by a KeyboardInterrupt at step 2 of `phase` (of any phase if None); the checks restored."""
    real_check = train_mod.check_finite

    def stop_at_step_2(loss, at_phase, step, folder):
        if step == 2 and phase in (None, at_phase):
            raise KeyboardInterrupt
        real_check(loss, at_phase, step, folder)

    monkeypatch.setattr(train_mod, "check_finite", stop_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(train_mod, "check_finite", real_check)


def test_trains_a_pipeline_that_diffusers_loads_alone(tmp_path):
    out = train_toy(tiny_cfg(tmp_path), progress=False)
    pipe = StableDiffusionPipeline.from_pretrained(out)  # no sdlab code involved
    assert pipe.vae.config.scaling_factor != 1.0  # set from the latents' statistics
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    image = pipe("a red cat on grass", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0] == "phase,step,loss,lr,seconds" and any(l.startswith("unet,") for l in log)


def test_same_seed_same_weights_and_resume_is_bit_identical(tmp_path, monkeypatch):
    ref = unet_weights(train_toy(tiny_cfg(tmp_path, "a"), progress=False))
    again = unet_weights(train_toy(tiny_cfg(tmp_path, "b"), progress=False))
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    other = unet_weights(train_toy(tiny_cfg(tmp_path, "c", seed=1), progress=False))
    assert not all(torch.equal(ref[k], other[k]) for k in ref)

    # interrupt the run in the middle of the UNet phase, resume it; then again in the anneal phase
    for name, stop_phase in (("d", "unet"), ("e", "anneal"), ("f", "vae_refine"), ("g", "attribute_anneal")):
        interrupted_at_step_2(monkeypatch, lambda name=name: train_toy(tiny_cfg(tmp_path, name), progress=False),
                              stop_phase)
        out = train_toy(tiny_cfg(tmp_path, name), resume=True, progress=False)
        resumed = unet_weights(out)
        assert all(torch.equal(ref[k], resumed[k]) for k in ref), f"resumed in the {stop_phase} phase"
        vae_a, vae_b = (load_file(str(p / "vae" / "diffusion_pytorch_model.safetensors"))
                        for p in (tmp_path / "a" / "pipeline", out))
        assert all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a), f"the VAE after a resume in the {stop_phase} phase"


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="already holds a run"):
        train_toy(cfg, progress=False)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(TrainingError, match="no checkpoint"):
        train_toy(tiny_cfg(tmp_path, "empty"), resume=True, progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(tmp_path / "empty2"), "--arch", "tiny", "--resume"])
    assert exit_info.value.code == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, lr=1e30, unet_steps=50)
    with pytest.raises(TrainingError, match=r"unet loss became .* at step \d+") as err:
        train_toy(cfg, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=False)
    assert "at step" in str(err.value)
    for name in ("vae", "unet") if "unet" in state else ("vae",):
        assert all(torch.isfinite(t).all() for t in state[name].values() if t.is_floating_point())


def test_export_checkpoint_matches_the_final_pipeline(tmp_path):
    from sdlab.toymodel.train import export_checkpoint

    cfg = tiny_cfg(tmp_path)
    final = train_toy(cfg, progress=False)
    exported = export_checkpoint(cfg.output)
    assert exported.name == "pipeline-attributes_annealed-step3"
    a, b = unet_weights(final), unet_weights(exported)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = StableDiffusionPipeline.from_pretrained(final).vae.config.scaling_factor
    sb = StableDiffusionPipeline.from_pretrained(exported).vae.config.scaling_factor
    assert sa == pytest.approx(sb, rel=1e-6)
    with pytest.raises(TrainingError, match="no checkpoint"):
        export_checkpoint(tmp_path / "nothing")


def test_export_reads_the_stored_scaling_factor_and_recomputes_it_for_older_checkpoints(tmp_path, monkeypatch):
    from sdlab.toymodel import export as export_mod
    from sdlab.toymodel.train import export_checkpoint

    cfg = tiny_cfg(tmp_path)
    final = train_toy(cfg, progress=False)
    trained = StableDiffusionPipeline.from_pretrained(final).vae.config.scaling_factor
    real_render = export_mod.render_dataset

    def no_render(cfg):
        raise AssertionError("export re-rendered the data set")

    monkeypatch.setattr(export_mod, "render_dataset", no_render)
    fast = StableDiffusionPipeline.from_pretrained(export_checkpoint(cfg.output)).vae.config.scaling_factor
    assert fast == trained

    ckpt = tmp_path / "run" / "checkpoint" / "state.pt"  # as written before the factor was stored
    state = torch.load(ckpt, weights_only=False)
    del state["scaling"]
    torch.save(state, ckpt)
    monkeypatch.setattr(export_mod, "render_dataset", real_render)
    again = StableDiffusionPipeline.from_pretrained(export_checkpoint(cfg.output)).vae.config.scaling_factor
    assert again == pytest.approx(trained, rel=1e-6)


def test_ship_stores_half_precision_and_loads_as_float32(tmp_path, monkeypatch):
    import sdlab
    from sdlab import models
    from sdlab.toymodel.train import ship_pipeline

    cfg = tiny_cfg(tmp_path)
    out = train_toy(cfg, progress=False)
    monkeypatch.setattr(models, "TOY_MODEL_DIR", tmp_path / "shipped")
    shipped = ship_pipeline(out, cfg.output)
    assert (shipped / "training_log.csv").is_file() and (shipped / "train_config.json").is_file()
    assert unet_weights(shipped)["unet.conv_in.weight"].dtype == torch.float16
    pipe = sdlab.load_pipeline(device="cpu")  # the default model now comes from the patched folder
    assert pipe.unet.dtype == torch.float32
    full = unet_weights(out)["unet.conv_in.weight"]
    assert torch.allclose(pipe.unet.conv_in.weight, full, atol=1e-3)


def test_resume_keeps_the_token_ids_the_run_started_with(tmp_path, monkeypatch):
    from transformers import CLIPTokenizer

    cfg = tiny_cfg(tmp_path)
    train_toy(cfg, progress=False)
    saved = tmp_path / "run" / "tokenizer"
    assert CLIPTokenizer.from_pretrained(saved).get_vocab() == CLIPTokenizer.from_pretrained(
        tmp_path / "run" / "pipeline" / "tokenizer").get_vocab()
    # a tokenizer built differently later must not silently re-map the trained embeddings on resume
    vocab = CLIPTokenizer.from_pretrained(saved).get_vocab()
    cat, dog = vocab["cat</w>"], vocab["dog</w>"]
    import sdlab.toymodel.architecture as arch
    real_build = arch.build_tokenizer

    def swapped():
        tok = real_build()
        v = tok.get_vocab()
        v["cat</w>"], v["dog</w>"] = dog, cat
        return CLIPTokenizer(vocab=v, merges=tok._merges, model_max_length=77)

    monkeypatch.setattr(arch, "build_tokenizer", swapped)
    out = train_toy(cfg, resume=True, progress=False)
    final = CLIPTokenizer.from_pretrained(out / "tokenizer").get_vocab()
    assert final["cat</w>"] == cat and final["dog</w>"] == dog


def test_padding_positions_start_after_each_rows_end_token():
    from sdlab.toymodel.denoising import padding_positions

    tok = build_pipeline(TINY, seed=0).tokenizer
    ids = tok(["a red cat on grass", ""], padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    pad = padding_positions(ids, tok.eos_token_id)
    n_words = len(tok("a red cat on grass").input_ids)  # BOS, the words' tokens, EOS
    assert pad[0].tolist() == [False] * n_words + [True] * (tok.model_max_length - n_words)
    assert pad[1].tolist() == [False, False] + [True] * (tok.model_max_length - 2)


def test_object_isolation_states_each_object_only_at_its_own_word():
    from sdlab.toymodel.isolation import isolate_objects, object_token_ids
    from sdlab.toyworld import OBJECTS

    tok = build_pipeline(TINY, seed=0).tokenizer
    ids = tok(["a red cat and a blue dog on grass", "a star at night", ""], padding="max_length",
              max_length=tok.model_max_length, return_tensors="pt").input_ids
    objects = object_token_ids(tok, OBJECTS)
    calls = []

    def encode(variants):  # a fake encoder that remembers its input: state = (row of the call, token id)
        calls.append(variants)
        return torch.stack([torch.arange(len(variants))[:, None].expand_as(variants), variants], dim=-1).float()

    states = torch.full((3, tok.model_max_length, 2), -1.0)
    out = isolate_objects(encode, ids, states, objects, 1.0, torch.Generator().manual_seed(0))
    variants = calls[0].view(3, 2, -1)  # [all objects redrawn, first kept, second kept] x the two object rows
    is_obj = torch.isin(ids[:2], objects)
    assert (variants[0][is_obj] != ids[:2][is_obj]).all()  # every object word redrawn to another object...
    assert torch.isin(variants[0][is_obj], objects).all()  # ...that is an object word
    assert torch.equal(variants[0][~is_obj], ids[:2][~is_obj])  # nothing else touched
    cat, dog, star = (tok.convert_tokens_to_ids(f"{w}</w>") for w in ("cat", "dog", "star"))
    assert (variants[1] == cat).any() and not (variants[1] == dog).any()  # the first object's own variant
    assert (variants[2] == dog).any() and not (variants[2] == cat).any()  # the second's
    row_of = out[..., 0]  # which variant each position of the result was read from (rows 0-1: variant 0, ...)
    assert row_of[0][ids[0] == cat].tolist() == [2] and row_of[0][ids[0] == dog].tolist() == [4]
    assert row_of[1][ids[1] == star].tolist() == [3]
    assert set(row_of[0][~is_obj[0]].tolist()) == {0} and set(row_of[1][~is_obj[1]].tolist()) == {1}
    assert torch.equal(out[2], states[2])  # no object word: the states stay
    assert torch.equal(isolate_objects(encode, ids, states, objects, 0.0, torch.Generator()), states)
    with pytest.raises(ValueError, match="one token per object word"):
        object_token_ids(tok, ["cat", "catdogfish"])


def test_attribute_isolation_states_bumpy_only_at_its_own_word():
    from sdlab.toymodel.isolation import isolate_attribute, object_token_ids

    tok = build_pipeline(TINY, seed=0).tokenizer
    captions = ["a red cat on a bumpy road", "a blue car on a road", "a star at night", ""]
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    bumpy, road, filler = object_token_ids(tok, ["bumpy", "road", "a"]).tolist()
    calls = []

    def encode(variants):  # a fake encoder that remembers its input: state = (call, row of the call, token id)
        calls.append(variants)
        rows = torch.arange(len(variants))[:, None].expand_as(variants)
        return torch.stack([torch.full_like(variants, len(calls)), rows, variants], dim=-1).float()

    states = torch.stack([torch.zeros_like(ids), torch.arange(4)[:, None].expand_as(ids), ids], dim=-1).float()
    out, word_rows, context_rows = isolate_attribute(encode, ids, states, bumpy, road, filler, 1.0,
                                                     torch.Generator().manual_seed(0))
    assert word_rows.tolist() == [True, False, False, False] and context_rows.tolist() == [False, True, False, False]
    at = (ids[0] == bumpy).nonzero().item()
    assert torch.equal(out[0, at], states[0, at])  # the word's own state: the true caption's
    others = torch.arange(ids.shape[1]) != at
    assert (out[0, others, 0] == 1).all() and (out[0, at + 1 :, 2] == ids[0, at + 1 :]).all()
    assert out[0, at, 2] == bumpy and (calls[0][0][ids[0] == bumpy] == filler).all()  # read with a filler there
    said, filled = calls[1]  # the smooth road with "bumpy" (and with the filler) inserted before "road"
    p = (ids[1] == road).nonzero().item()
    assert said[p] == bumpy and said[p + 1] == road and torch.equal(said[:p], ids[1, :p])
    assert filled[p] == filler and torch.equal(filled[p + 1 :], said[p + 1 :])
    assert out[1, p].tolist() == [2, 1, filler]  # the inserted word's own position says only the filler
    assert (out[1, torch.arange(ids.shape[1]) != p, 1] == 0).all()  # the rest: the caption that says bumpy
    assert torch.equal(out[2:], states[2:])  # neither the word nor the noun: the states stay
    again, w0, c0 = isolate_attribute(encode, ids, states, bumpy, road, filler, 0.0, torch.Generator())
    assert torch.equal(again, states) and not w0.any() and not c0.any()


def test_learning_rate_warms_up_then_decays_to_the_floor():
    factor = train_mod._lr_lambda(warmup=10, total=110, floor=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    values = [factor(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:])) and values[-1] == pytest.approx(0.1)


def test_anneal_warms_up_briefly_then_decays_linearly_to_zero():
    factor = train_mod._anneal_lambda(200)  # 10 warmup steps
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(105) == pytest.approx(0.5) and factor(199) == pytest.approx(1 / 190) and factor(200) == 0.0
    assert [train_mod._anneal_lambda(1)(s) for s in (0, 1)] == [1.0, 0.0]  # a one-step anneal is defined


def test_anneal_phase_ships_its_last_weights_and_resumes_a_finished_run(tmp_path):
    """A run that finished before the anneal phase existed (no anneal_steps in its config, the EMA shipped)
    continues into it with --resume."""
    import json

    no_anneal = train_toy(tiny_cfg(tmp_path, "a", anneal_steps=0, vae_refine_steps=0, attribute_anneal_steps=0),
                          progress=False)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    del config["anneal_steps"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    state = torch.load(tmp_path / "a" / "checkpoint" / "state.pt", weights_only=False)
    assert state["phase"] == "finished"
    ema = unet_weights(no_anneal)
    assert all(torch.equal(ema[f"unet.{k}"], v) for k, v in state["ema"].items())

    annealed = unet_weights(train_toy(tiny_cfg(tmp_path, "a", vae_refine_steps=0, attribute_anneal_steps=0),
                                      resume=True, progress=False))
    state = torch.load(tmp_path / "a" / "checkpoint" / "state.pt", weights_only=False)
    assert state["phase"] == "annealed" and state["step"] == 3
    assert all(torch.equal(annealed[f"unet.{k}"], v) for k, v in state["unet"].items())  # not the EMA
    assert not all(torch.equal(annealed[k], ema[k]) for k in ema)
    log = (tmp_path / "a" / "log.csv").read_text()
    assert "\nanneal,0," in log


def test_cli_parses_the_recipe_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(train_mod, "train_toy", lambda cfg, **kw: seen.setdefault("cfg", cfg) and tmp_path)
    main(["--output", str(tmp_path / "r"), "--ema-text-encoder", "--pad-dropout", "0.5", "--lr-floor", "0.1"])
    assert seen["cfg"].ema_text_encoder is True and seen["cfg"].pad_dropout == 0.5 and seen["cfg"].lr_floor == 0.1
    seen.clear()
    main(["--output", str(tmp_path / "r"), "--no-ema-text-encoder"])
    assert seen["cfg"].ema_text_encoder is False and seen["cfg"].pad_dropout == 0.0


def test_help_explains_every_option_with_its_default(capsys):
    from dataclasses import fields

    from sdlab.toymodel.config import field_docs

    docs = field_docs(ToyTrainConfig)
    assert docs["n_images"] == "Size of the fixed training set of rendered scenes."
    assert docs["vae_refine_generated"].startswith("Phase 5 with the decoder held (0 = not held): the pipeline first")
    assert "vae_lr" not in docs  # no docstring under it
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(ToyTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text and f"(default: {f.default})" in text, flag
    assert "Size of the fixed training set of rendered scenes. (default: 20000)" in text
    assert "round trips 73% -> 96% style" in text  # a percent sign in a docstring does not break argparse


def test_anneal_pad_dropout_acts_in_the_anneal_only(tmp_path):
    import json

    runs = {pd: train_toy(tiny_cfg(tmp_path, f"pd{pd}", pad_dropout=0.0, anneal_pad_dropout=pd), progress=False)
            for pd in (0.0, 1.0)}
    a, b = (unet_weights(runs[pd]) for pd in (0.0, 1.0))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    logs = [(tmp_path / f"pd{pd}" / "log.csv").read_text().splitlines() for pd in (0.0, 1.0)]
    before_anneal = [[r.rsplit(",", 1)[0] for r in log if r.startswith(("vae,", "unet,", "decoder,"))] for log in logs]
    assert before_anneal[0] == before_anneal[1]  # phases 1-3 saw the same losses
    assert json.loads((tmp_path / "pd1.0" / "config.json").read_text())["anneal_pad_dropout"] == 1.0
    attr = train_toy(tiny_cfg(tmp_path, "attr", pad_dropout=0.0, anneal_pad_dropout=0.0,
                              anneal_attribute_isolation=1.0), progress=False)
    c = unet_weights(attr)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the attribute isolation acts in the anneal, not before
    log = (tmp_path / "attr" / "log.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in log if r.startswith(("vae,", "unet,", "decoder,"))] == before_anneal[0]


def _encoder_means(pipe_dir, images):
    vae = StableDiffusionPipeline.from_pretrained(pipe_dir).vae
    with torch.no_grad():
        return vae.encode(images).latent_dist.mean


def test_vae_refine_changes_the_whole_vae_alone_and_its_anchor_holds_the_latents(tmp_path):
    from sdlab.toymodel.dataset import render_dataset

    fast = dict(vae_refine_lr=3e-3, vae_refine_steps=12)
    runs = {name: train_toy(tiny_cfg(tmp_path, name, attribute_anneal_steps=0, **kw), progress=False) for name, kw in (
        ("none", dict(vae_refine_steps=0)), ("free", dict(vae_refine_anchor=0.0, **fast)),
        ("held", dict(vae_refine_anchor=1e3, **fast)))}
    unets = {name: unet_weights(out) for name, out in runs.items()}
    assert all(torch.equal(unets["none"][k], unets["free"][k]) for k in unets["none"])  # phase 5 leaves them
    vaes = {name: load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors")) for name, out in runs.items()}
    for part in ("encoder.", "decoder."):
        assert any(not torch.equal(v, vaes["free"][k]) for k, v in vaes["none"].items() if k.startswith(part))
    scaling = {name: StableDiffusionPipeline.from_pretrained(out).vae.config.scaling_factor
               for name, out in runs.items()}
    assert scaling["free"] == scaling["none"]  # the UNet's latent space is the one it was trained on
    images, _, _ = render_dataset(tiny_cfg(tmp_path))
    before = _encoder_means(runs["none"], images)
    drift = {name: (_encoder_means(runs[name], images) - before).norm() / before.norm() for name in ("free", "held")}
    assert drift["held"] < 0.5 * drift["free"]
    assert "\nvae_refine,0," in (tmp_path / "free" / "log.csv").read_text()


def test_vae_refine_can_hold_the_decoder_on_the_pipelines_own_latents(tmp_path):
    from sdlab.toymodel.dataset import render_dataset

    fast = dict(vae_refine_lr=3e-3, vae_refine_steps=12)
    runs = {name: train_toy(tiny_cfg(tmp_path, name, attribute_anneal_steps=0, **kw), progress=False) for name, kw in (
        ("none", dict(vae_refine_steps=0)), ("free", dict(vae_refine_generated=0, **fast)),
        ("held", dict(vae_refine_generated=8, vae_refine_hold=3.0, **fast)))}
    pipe = StableDiffusionPipeline.from_pretrained(runs["none"])
    _, captions, _ = render_dataset(tiny_cfg(tmp_path))
    z = train_mod._sampler(pipe, pipe.unet, pipe.text_encoder, captions, tiny_cfg(tmp_path))(8)
    assert z.ndim == 4 and len(z) == 8
    assert torch.equal(z, train_mod._sampler(pipe, pipe.unet, pipe.text_encoder, captions, tiny_cfg(tmp_path))(8))
    with torch.no_grad():
        decoded = {name: StableDiffusionPipeline.from_pretrained(out).vae.decode(z).sample
                   for name, out in runs.items()}
    moved = {name: (decoded[name] - decoded["none"]).abs().mean() for name in ("free", "held")}
    assert moved["held"] < 0.5 * moved["free"], moved
    unets = {name: unet_weights(out) for name, out in runs.items()}
    assert all(torch.equal(unets["none"][k], unets["held"][k]) for k in unets["none"])


@pytest.mark.parametrize("bad, message", [
    (dict(vae_refine_generated=-1), "--vae-refine-generated is -1: give a whole number"),
    (dict(vae_refine_generated=33), r"--vae-refine-generated is 33.*--n-images \(32\)"),
    (dict(vae_refine_hold=-0.5), "--vae-refine-hold is -0.5: give a weight >= 0"),
    (dict(layout_spread=1.5), "--layout-spread is 1.5: give a share of objects from 0 to 1"),
    (dict(anneal_layout_spread=-0.1), "--anneal-layout-spread is -0.1: give a share of objects from 0 to 1"),
])
def test_bad_phase_5_options_are_refused_before_anything_is_written(tmp_path, bad, message):
    with pytest.raises(TrainingError, match=message):
        train_toy(tiny_cfg(tmp_path, "bad", **bad), progress=False)
    assert not (tmp_path / "bad").exists()


def test_layout_spread_reaches_the_training_set(tmp_path):
    from sdlab.toymodel.dataset import render_dataset

    plain, spread = (render_dataset(tiny_cfg(tmp_path, layout_spread=p)) for p in (0.0, 1.0))
    assert plain[1][0] == spread[1][0]  # the first scene's caption (the layout is not captioned) ...
    assert not torch.equal(plain[0][0], spread[0][0])  # ... drawn with another layout


def log_before_anneal(run_dir):
    """A run's log rows before the anneal, without their seconds (which differ between runs)."""
    rows = (run_dir / "log.csv").read_text().splitlines()
    return [r.rsplit(",", 1)[0] for r in rows if not r.startswith("anneal,")]


def test_the_anneal_learns_from_its_own_spread_set_and_resumes_exactly(tmp_path, monkeypatch):
    from sdlab.toymodel.dataset import render_anneal_set

    plain, spread = (render_anneal_set(tiny_cfg(tmp_path, anneal_layout_spread=p)) for p in (0.0, 1.0))
    assert plain[1][0] == spread[1][0] and not torch.equal(plain[0][0], spread[0][0])  # same caption, other layout
    short = dict(vae_refine_steps=0, attribute_anneal_steps=0)
    ref = train_toy(tiny_cfg(tmp_path, "plain", **short), progress=False)
    cfg = tiny_cfg(tmp_path, "spread", anneal_layout_spread=1.0, **short)
    out = train_toy(cfg, progress=False)
    # phases 1-3 are the recipe's ...
    assert log_before_anneal(tmp_path / "plain") == log_before_anneal(tmp_path / "spread")
    a, b = unet_weights(ref), unet_weights(out)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # ... the anneal is not
    interrupted_at_step_2(monkeypatch, lambda: train_toy(tiny_cfg(tmp_path, "resumed", anneal_layout_spread=1.0,
                                                                    **short), progress=False), phase="anneal")
    again = unet_weights(train_toy(tiny_cfg(tmp_path, "resumed", anneal_layout_spread=1.0, **short), resume=True,
                                   progress=False))
    assert all(torch.equal(b[k], again[k]) for k in b)


def test_an_anneal_spread_unlike_phase_2s_reads_a_set_of_its_own(tmp_path, monkeypatch):
    # phases 1-3 on lent layouts, the anneal on the world's own: the anneal renders its set with spread 0
    from sdlab.toymodel.dataset import render_anneal_set

    rendered = []
    monkeypatch.setattr(train_mod, "render_anneal_set",
                        lambda cfg: rendered.append(cfg.anneal_layout_spread) or render_anneal_set(cfg))
    short = dict(vae_refine_steps=0, attribute_anneal_steps=0, layout_spread=1.0)
    same = unet_weights(train_toy(tiny_cfg(tmp_path, "same", anneal_layout_spread=1.0, **short), progress=False))
    assert rendered == []  # the same spread: phase 2's set
    own = unet_weights(train_toy(tiny_cfg(tmp_path, "own", anneal_layout_spread=0.0, **short), progress=False))
    assert rendered == [0.0]
    assert log_before_anneal(tmp_path / "same") == log_before_anneal(tmp_path / "own")
    assert not all(torch.equal(same[k], own[k]) for k in same)


def test_refine_vae_of_a_saved_pipeline_keeps_the_rest_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    source = train_toy(tiny_cfg(tmp_path, "src", vae_refine_steps=0), progress=False)
    (source / "training_log.csv").write_text("phase,step,loss,lr,seconds\nunet,0,1.0,1e-4,0.0\n")
    cfg = tiny_cfg(tmp_path, "refined", vae_refine_steps=4)
    out = train_mod.refine_pipeline_vae(source, cfg, progress=False)
    a, b = unet_weights(source), unet_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    vae_src, vae_out = (load_file(str(p / "vae" / "diffusion_pytorch_model.safetensors")) for p in (source, out))
    assert any(not torch.equal(v, vae_out[k]) for k, v in vae_src.items() if k.startswith("encoder."))
    log = (tmp_path / "refined" / "log.csv").read_text()
    assert log.startswith("phase,step,loss,lr,seconds\nunet,0,1.0,") and "\nvae_refine,0," in log

    interrupted_at_step_2(monkeypatch, lambda: train_mod.refine_pipeline_vae(
        source, tiny_cfg(tmp_path, "stopped", vae_refine_steps=4), progress=False))
    other = train_toy(tiny_cfg(tmp_path, "other", vae_refine_steps=0, seed=1), progress=False)
    with pytest.raises(TrainingError, match="give the same --refine-vae-of"):
        train_mod.refine_pipeline_vae(other, tiny_cfg(tmp_path, "stopped", vae_refine_steps=4), resume=True)
    resumed = train_mod.refine_pipeline_vae(source, tiny_cfg(tmp_path, "stopped", vae_refine_steps=4), resume=True,
                                            progress=False)
    vae_res = load_file(str(resumed / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(vae_out[k], vae_res[k]) for k in vae_out)

    with pytest.raises(TrainingError, match="not a pipeline folder"):
        train_mod.refine_pipeline_vae(tmp_path / "src", tiny_cfg(tmp_path, "bad"), progress=False)
    with pytest.raises(TrainingError, match="nothing to do.*--vae-refine-steps 400"):
        train_mod.refine_pipeline_vae(source, tiny_cfg(tmp_path, "bad", vae_refine_steps=0), progress=False)
    assert not (tmp_path / "bad").exists()  # refused before the run folder was made
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "bad2"), "--arch", "tiny", "--refine-vae-of", str(tmp_path / "nothing")])
    assert "not a pipeline folder" in capsys.readouterr().err


def test_anneal_attributes_of_a_saved_pipeline_keeps_the_rest_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    from sdlab.toyworld import sample_scenes

    scenes = sample_scenes(32, 0, watercolor=0.15, world=2)  # tiny_cfg's dataset: both sides of the isolation occur
    assert any(s.bumpy for s in scenes) and any(s.background == "road" and not s.bumpy for s in scenes)
    source = train_toy(tiny_cfg(tmp_path, "src", vae_refine_steps=0, attribute_anneal_steps=0), progress=False)
    (source / "training_log.csv").write_text("phase,step,loss,lr,seconds\nunet,0,1.0,1e-4,0.0\n")
    out = train_mod.anneal_pipeline_attributes(source, tiny_cfg(tmp_path, "attr", attribute_isolation=1.0),
                                               progress=False)
    a, b = unet_weights(source), unet_weights(out)
    assert not any(torch.equal(a[k], b[k]) for k in a if k.startswith("unet.conv_in"))
    vae_src, vae_out = (load_file(str(p / "vae" / "diffusion_pytorch_model.safetensors")) for p in (source, out))
    assert all(torch.equal(v, vae_out[k]) for k, v in vae_src.items())
    log = (tmp_path / "attr" / "log.csv").read_text()
    assert log.startswith("phase,step,loss,lr,seconds\nunet,0,1.0,") and "\nattribute_anneal,0," in log
    plain = unet_weights(train_mod.anneal_pipeline_attributes(
        source, tiny_cfg(tmp_path, "plain", attribute_isolation=0.0), progress=False))
    assert not all(torch.equal(plain[k], b[k]) for k in b)  # the isolation changes what is learned

    interrupted_at_step_2(monkeypatch, lambda: train_mod.anneal_pipeline_attributes(
        source, tiny_cfg(tmp_path, "stopped", attribute_isolation=1.0), progress=False))
    with pytest.raises(TrainingError, match="give the same --anneal-attributes-of"):
        train_mod.anneal_pipeline_attributes(out, tiny_cfg(tmp_path, "stopped", attribute_isolation=1.0), resume=True)
    resumed = unet_weights(train_mod.anneal_pipeline_attributes(
        source, tiny_cfg(tmp_path, "stopped", attribute_isolation=1.0), resume=True, progress=False))
    assert all(torch.equal(b[k], resumed[k]) for k in b)

    with pytest.raises(TrainingError, match="nothing to do.*--attribute-anneal-steps 600"):
        train_mod.anneal_pipeline_attributes(source, tiny_cfg(tmp_path, "bad", attribute_anneal_steps=0))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "bad2"), "--arch", "tiny", "--anneal-attributes-of", str(tmp_path / "no")])
    assert "--anneal-attributes-of: " in capsys.readouterr().err and not (tmp_path / "bad2").exists()
