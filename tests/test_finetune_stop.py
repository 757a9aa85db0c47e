"""The suggested stop: the rule on recorded and made-up tables, the suggested checkpoint's weights and loading,
resuming a run around it, and bad input (a clear error, the run folder untouched)."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sdlab
from sdlab.finetune import FinetuneConfig, FinetuneError, finetune, snapshots, stop, validation
from sdlab.finetune.cli import main as cli_main

from finetune_helpers import data, model  # noqa: F401 (fixtures)



def table(*pairs):
    return [{"step": s, "probe_fidelity": f, "probe_style": 0.1} for s, f in pairs]


# ---- the rule ---------------------------------------------------------------------------------------------


def test_rule_stops_at_the_last_step_whose_fidelity_trend_keeps_the_floor():
    s = stop.suggest_stop(table((0, 1.0), (100, 0.9), (200, 0.5), (300, 0.95)), threshold=0.85)
    assert (s.step, s.first_below, s.floor) == (100, 200, 0.85)  # a recovery after a real fall does not count
    assert s.trend == 0.9 and "trend first fell below 0.85 at step 200; step 100 keeps 0.90" in s.reason
    s = stop.suggest_stop(table((0, 1.0), (100, 0.9), (200, 0.8), (300, 0.95)), threshold=0.85)
    assert (s.step, s.first_below, s.trend) == (300, None, pytest.approx(0.875))  # ... a small dip pooled away
    # one noisy dip right after step 0 (1 of 8 probe pairs misread) does not end the run at the base model
    noisy = table((0, 1.0), (100, 0.83), (200, 0.92), (300, 0.88), (400, 0.6), (500, 0.65))
    s = stop.suggest_stop(noisy, threshold=0.85)
    assert (s.step, s.first_below) == (300, 400) and s.trend == pytest.approx((0.83 + 0.92 + 0.88) / 3)
    s = stop.suggest_stop(table((0, 1.0), (100, 0.9), (200, 0.86)), threshold=0.85)
    assert (s.step, s.first_below) == (200, None)  # never fell: the last step
    assert stop.suggest_stop(table((0, 1.0), (100, 0.5)), threshold=0.85).step == 0  # fell at once: the base
    s = stop.suggest_stop(table((0, 0.31), (50, 0.28), (100, 0.2)), threshold=0.8)  # CLIP-like: relative to step 0
    assert (s.step, round(s.floor, 3)) == (50, 0.248)
    assert stop.suggest_stop(table((200, 0.2), (0, 1.0), (100, 0.9)), threshold=0.5).step == 100  # rows in any order
    assert stop.suggest_stop(table((0, 1.0), (100, 0.1)), threshold=0.0).step == 100


def test_trend_is_the_non_increasing_least_squares_fit():
    assert stop.trend([1.0, 0.8, 0.9, 0.5, 0.7, 0.6]) == pytest.approx([1.0, 0.85, 0.85, 0.6, 0.6, 0.6])
    assert stop.trend([0.2, 0.4]) == pytest.approx([0.3, 0.3])  # a rise is pooled, step 0 included
    assert stop.trend([0.9, 0.7, 0.7, 0.1]) == pytest.approx([0.9, 0.7, 0.7, 0.1])  # already falling: itself


def test_suggestion_only_stays_or_moves_to_the_newest_step_as_rows_arrive():
    """What lets a run keep only `keep_steps`' weights: a new row never makes an earlier, discarded step the
    suggestion (checked on every prefix of random tables)."""
    rng = torch.Generator().manual_seed(0)
    for _ in range(300):
        values = (1.0 - torch.rand(8, generator=rng).cumsum(0) * 0.08 + torch.randn(8, generator=rng) * 0.1).tolist()
        rows = table(*[(100 * i, v) for i, v in enumerate(values)])
        before = stop.suggest_stop(rows[:2], threshold=0.85).step
        for n in range(3, len(rows) + 1):
            now = stop.suggest_stop(rows[:n], threshold=0.85).step
            assert now in (before, rows[n - 1]["step"]), (values, n)
            before = now


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.8", True, None])
def test_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(FinetuneError, match=r"stop threshold must be a number in \[0, 1\]"):
        stop.suggest_stop(table((0, 1.0)), threshold=bad)
    with pytest.raises(FinetuneError, match=r"stop threshold must be a number in \[0, 1\]"):
        FinetuneConfig(dataset="d", output="o", stop_threshold=bad).check()


def test_tables_the_rule_cannot_use():
    with pytest.raises(FinetuneError, match="never validated.*validate_every"):
        stop.suggest_stop([])
    with pytest.raises(FinetuneError, match="no probe_fidelity.*columns: step, prompt_style"):
        stop.suggest_stop([{"step": 0, "prompt_style": 0.1}])


# ---- runs: the suggested checkpoint ----------------------------------------------------------------------


class Scripted:
    """Metrics that read a scripted probe fidelity for each step (the weights' images are not looked at)."""

    columns = ("fidelity", "style")

    def __init__(self, fidelity: dict):
        self.fidelity, self.step = fidelity, None

    def measure(self, images, prompts):
        f = self.fidelity[self.step]
        return [{"fidelity": f, "style": 1 - f} for _ in images]


@pytest.fixture
def scripted(monkeypatch):
    """`scripted({step: fidelity})` makes every run in the test measure that."""
    from sdlab.finetune import metrics

    real_run = validation.Progression.run

    def run(self, step, pipe, extra=None):
        self.metrics.step = step
        return real_run(self, step, pipe, extra)

    monkeypatch.setattr(validation.Progression, "run", run)

    def use(fidelity):
        monkeypatch.setattr(metrics, "pick_metrics", lambda *a, **k: (Scripted(fidelity), None))

    return use



def cfg(model, data, out, **kw):
    base = dict(model=str(model), dataset=str(data), output=str(out), max_steps=6, batch_size=2, learning_rate=1e-3,
                checkpoint_every=2, validate_every=2, validation_inference_steps=1, validation_samples=1,
                validation_prompts=("a red cat on grass",), probe_prompts=("a blue house on sand",), progress=False)
    return FinetuneConfig(**(base | kw))


def unet(folder):
    return load_file(str(Path(folder) / "unet" / "diffusion_pytorch_model.safetensors"))


def assert_same(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("opts", [{}, {"lora_rank": 4, "use_ema": True, "ema_decay": 0.9}], ids=["full", "lora-ema"])
def test_suggested_checkpoint_holds_the_weights_of_its_step_and_loads(model, data, tmp_path, scripted, opts, capsys):
    scripted({0: 1.0, 2: 0.95, 4: 0.9, 6: 0.5})
    result = finetune(cfg(model, data, tmp_path / "run", **opts))
    s = result.suggestion
    assert (s.step, s.first_below) == (4, 6)
    out = capsys.readouterr().out
    assert "suggested stop: step 4" in out and "->    4" in out  # the table, its row marked
    assert json.loads((result.output / "suggestion.json").read_text())["step"] == 4
    pipe = sdlab.load_pipeline(result.output / "suggested", device="cpu")
    assert pipe("a red cat on grass", num_inference_steps=1).images[0].size == (64, 64)
    assert not any("lora" in k for k in unet(result.output / "suggested"))
    reference = finetune(cfg(model, data, tmp_path / "ref", max_steps=4, validate_every=0, checkpoint_every=0, **opts))
    assert_same(unet(result.output / "suggested"), unet(reference.output), exact=not opts)
    assert snapshots.kept_steps(result.output) == [4]  # only what the rule needs


def test_resuming_keeps_what_the_rule_needs_and_suggests_as_an_uninterrupted_run(model, data, tmp_path, scripted):
    scripted({0: 1.0, 2: 1.0, 4: 1.0, 5: 1.0, 6: 0.5, 8: 0.4})
    whole = finetune(cfg(model, data, tmp_path / "whole", max_steps=8))
    part = tmp_path / "part"
    first = finetune(cfg(model, data, part, max_steps=5))  # validates 0, 2, 4 and 5; last checkpoint: 4
    assert first.suggestion.step == 5
    assert snapshots.kept_steps(part) == [4, 5]  # 4: what a resume from checkpoint-4 suggests before it goes on
    resumed = finetune(cfg(model, data, part, max_steps=8, resume="latest"))
    assert resumed.suggestion.step == whole.suggestion.step == 4
    assert_same(unet(part / "suggested"), unet(whole.output / "suggested"))
    assert [r["step"] for r in resumed.tradeoff] == [0, 2, 4, 6, 8]


def test_suggestion_after_the_run_with_another_threshold_and_its_errors(model, data, tmp_path, scripted, capsys):
    scripted({0: 1.0, 2: 0.9, 4: 0.7, 6: 0.6})
    run = finetune(cfg(model, data, tmp_path / "run")).output  # threshold 0.85: step 2
    assert stop.read_suggestion(run).step == 2

    def state():
        return sorted((str(p.relative_to(run)), p.stat().st_mtime_ns) for p in run.rglob("*"))

    before = state()
    with pytest.raises(FinetuneError, match=r"suggests step 4, but its weights were not kept .*steps \[2\]"):
        stop.write_suggestion(run, threshold=0.7)
    with pytest.raises(FinetuneError, match=r"in \[0, 1\]"):
        stop.write_suggestion(run, threshold=1.5)
    assert cli_main(["--output", str(run), "--suggest-only", "--stop-threshold", "2"]) == 1
    assert "sdlab finetune: error: stop threshold must be" in capsys.readouterr().err
    assert state() == before  # failed calls change nothing
    assert cli_main(["--output", str(run), "--suggest-only", "--stop-threshold", "0.95"]) == 0  # step 0: the base
    assert "suggested stop: step 0" in capsys.readouterr().out
    assert_same(unet(run / "suggested"), unet(Path(model)))


def test_a_run_that_never_validated_has_no_suggestion(model, data, tmp_path, capsys):
    run = finetune(cfg(model, data, tmp_path / "run", max_steps=2, validate_every=0)).output
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(FinetuneError, match="never validated.*validate_every"):
        stop.write_suggestion(run)
    assert cli_main(["--output", str(run), "--suggest-only"]) == 1
    assert "never validated" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before
    with pytest.raises(FinetuneError, match="not an sdlab finetuning run"):
        stop.write_suggestion(tmp_path)


def test_probes_the_toy_metrics_cannot_score_are_refused_before_anything_is_written(model, data, tmp_path):
    with pytest.raises(FinetuneError, match=r"toy-world metrics cannot score \['yoda'\].*'a red house on grass'"):
        finetune(cfg(model, data, tmp_path / "run", metrics="toyworld", probe_prompts=("yoda",)))
    assert not (tmp_path / "run").exists()


def test_summarize_gives_mean_spread_and_count_per_kind_and_leaves_nan_out():
    from sdlab.finetune.validation import summarize

    rows = [dict(kind="probe", fidelity=1.0, object_ok=1.0), dict(kind="probe", fidelity=0.5, object_ok=float("nan")),
            dict(kind="probe", fidelity=0.0, object_ok=0.0), dict(kind="prompt", fidelity=0.25)]
    out = summarize(rows, ["fidelity", "object_ok"])
    assert out["probe_n"] == 3 and out["prompt_n"] == 1
    assert out["probe_fidelity"] == pytest.approx(0.5) and out["probe_fidelity_sd"] == pytest.approx(0.5)
    assert out["probe_object"] == pytest.approx(0.5) and out["probe_object_sd"] == pytest.approx(2 ** 0.5 / 2)
    assert out["prompt_fidelity"] == 0.25 and out["prompt_fidelity_sd"] == 0.0
    assert math.isnan(out["prompt_object"]) and math.isnan(out["prompt_object_sd"])  # no value at all
