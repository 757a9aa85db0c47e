"""`sdlab finetune` as real processes: a SIGKILL then `--resume latest`, two ranks under accelerate, the CLI."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune_helpers import tiny_model, write_imagefolder

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    tiny_model(root / "tiny")
    write_imagefolder(root / "data", n=12, seed=5)
    return root


def args(root, out, *extra):
    return ["--model", str(root / "tiny"), "--dataset", str(root / "data"), "--output", str(root / out),
            "--batch-size", "2", "--learning-rate", "1e-3", "--no-progress", *extra]


def sdlab(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "sdlab", "finetune", *argv], env=ENV, capture_output=True,
                          text=True, timeout=900, **kw)


def weights(out):
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


def test_sigkill_then_resume_latest_is_bit_identical(files):
    opts = ["--max-steps", "40", "--checkpoint-every", "5", "--use-ema", "--random-flip", "--random-crop",
            "--caption-dropout", "0.2", "--snr-gamma", "5", "--lr-schedule", "cosine", "--warmup-steps", "3",
            "--validate-every", "5", "--validation-inference-steps", "1", "--validation-samples", "1",
            "--metrics", "toyworld"]
    done = sdlab(*args(files, "ref", *opts))
    assert done.returncode == 0, done.stderr[-2000:]

    out = files / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sdlab", "finetune", *args(files, "killed", *opts)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (out / "checkpoints" / "checkpoint-10").exists():  # kill mid-run, wherever it is
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model_index.json").exists()  # it really died before finishing

    resumed = sdlab(*args(files, "killed", *opts, "--resume", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    ref, again = weights(files / "ref"), weights(out)
    assert all(torch.equal(ref[k], again[k]) for k in ref)  # EMA weights, bit for bit
    # the validation, the suggested stop and its weights are those of the uninterrupted run
    for name in ("validation/tradeoff.csv", "validation/prompts.json", "suggestion.json"):
        assert (files / "ref" / name).read_text() == (out / name).read_text(), name
    assert "suggested stop: step" in done.stdout and "suggested stop: step" in resumed.stdout
    ref, again = weights(files / "ref" / "suggested"), weights(out / "suggested")
    assert all(torch.equal(ref[k], again[k]) for k in ref)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_hold_identical_weights_and_see_different_data(files):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "-m", "sdlab", "finetune"]
    run = subprocess.run([*launch, *args(files, "ddp", "--max-steps", "4", "--checkpoint-every", "2")], env=ENV,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = files / "ddp"
    logs = [json.loads((out / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [log["world_size"] for log in logs] == [2, 2]
    assert logs[0]["weights_sha256"] == logs[1]["weights_sha256"]  # gradients were all-reduced
    for a, b in zip(logs[0]["samples_seen"], logs[1]["samples_seen"]):
        assert len(a) == len(b) == 2 and not set(a) & set(b)  # each step, different images on each rank
    base = load_file(str(files / "tiny" / "unet" / "diffusion_pytorch_model.safetensors"))
    trained = weights(out)
    assert not all(torch.equal(base[k], trained[k]) for k in base)
    assert (out / "checkpoints" / "checkpoint-2" / "random_states_1.pkl").is_file()


def test_cli_reports_bad_input_without_a_traceback(files, tmp_path):
    bad = sdlab(*args(files, "bad", "--caption-column", "caption", "--max-steps", "1"))
    assert bad.returncode == 1
    assert "sdlab finetune: error: dataset" in bad.stderr and "columns found: text, image" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = sdlab("--dataset", str(files / "data"), "--output", str(tmp_path / "o"), "--model",
                    str(tmp_path / "no-model"), "--max-steps", "1")
    assert missing.returncode == 1 and "neither an existing folder nor a hub id" in missing.stderr
    assert Path(files / "data" / "metadata.jsonl").is_file()
