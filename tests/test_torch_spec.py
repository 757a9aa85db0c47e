"""Which torch `make` installs: the CUDA build where an NVIDIA GPU is, else the CPU build, falling back to the
default index; TORCH= overrides. Runs .ci/torch-spec and the Makefile's install recipe with a fake nvidia-smi
and a fake python (no pip, no network)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / ".ci" / "torch-spec"
INDEX = "https://cpu.index.example/whl/cpu"
GPU = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"'
NO_DRIVER = 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9'


def _bin(tmp_path, nvidia_smi=None) -> Path:
    """A folder for PATH holding only a fake nvidia-smi (or nothing)."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    if nvidia_smi is not None:
        (folder / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        (folder / "nvidia-smi").chmod(0o755)
    return folder


def _spec(tmp_path, nvidia_smi=None) -> list[str]:
    env = {"PATH": str(_bin(tmp_path, nvidia_smi))}  # nothing else on PATH: a real nvidia-smi cannot answer
    out = subprocess.run(["/bin/sh", str(SPEC), INDEX], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


CPU_FIRST = [f"--index-url {INDEX} --timeout 10 --retries 0 torch", "torch"]


def test_spec_with_and_without_a_gpu(tmp_path):
    assert _spec(tmp_path, GPU) == ["torch"]
    assert _spec(tmp_path / "a", NO_DRIVER) == CPU_FIRST  # nvidia-smi there, but no GPU answers
    assert _spec(tmp_path / "b", "exit 0") == CPU_FIRST  # it runs and lists nothing
    assert _spec(tmp_path / "c") == CPU_FIRST  # no nvidia-smi at all


def test_spec_says_how_to_call_it():
    out = subprocess.run(["/bin/sh", str(SPEC)], capture_output=True, text=True)
    assert out.returncode != 0 and "CPU_INDEX" in out.stderr


FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *--index-url*) echo "ERROR: Could not find a version that satisfies the requirement torch" >&2; exit 1;; esac
"""


def _make(tmp_path, nvidia_smi, *args) -> list[str]:
    """Run the Makefile's install recipe with a fake venv python that logs its arguments and fails on the CPU
    index (as when it cannot be reached); returns the log."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv, log = tmp_path / "venv", tmp_path / "pip.log"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(FAKE_PYTHON.format(log=log))
    (venv / "bin" / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{_bin(tmp_path, nvidia_smi)}:{os.environ['PATH']}")
    for name in ("TORCH", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL"):  # `make test TORCH=...` (CI)
        env.pop(name, None)  # hands its command-line variables down to every make we start through these
    done = subprocess.run(["make", "-C", str(ROOT), f"VENV={venv}", f"TORCH_CPU_INDEX={INDEX}", *args,
                           str(venv / ".sdlab-installed")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (venv / ".sdlab-installed").is_file()
    return log.read_text().splitlines()


def test_make_without_a_gpu_tries_the_cpu_index_then_falls_back(tmp_path):
    assert _make(tmp_path, NO_DRIVER) == [f"-m pip install --no-input {CPU_FIRST[0]}",
                                          "-m pip install --no-input torch", "-m pip install -e .[dev]"]


def test_make_with_a_gpu_installs_the_default_torch(tmp_path):
    assert _make(tmp_path, GPU) == ["-m pip install --no-input torch", "-m pip install -e .[dev]"]


def test_torch_overrides_everything(tmp_path):
    # what CI runs (.ci/run): exactly `pip install torch==2.13.0`, whatever the machine has
    assert _make(tmp_path, NO_DRIVER, "TORCH=torch==2.13.0") == ["-m pip install torch==2.13.0",
                                                                "-m pip install -e .[dev]"]
