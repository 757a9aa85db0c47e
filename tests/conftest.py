"""Shared test setup: hermetic (no hub access, figures of notebook runs kept out of the repo) and small."""

import os
import tempfile
from pathlib import Path

# Tests never reach the network: a hub id must fail fast with sdlab's own message, not hang on a timeout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Notebooks run by nbval save their figures here instead of the repo's figures/ (read by their parameters
# cell; `make figures` passes the real folder).
os.environ.setdefault("SDLAB_FIGURES_DIR", tempfile.mkdtemp(prefix="sdlab-test-figures-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion pipeline saved as a diffusers folder (safetensors); do not modify it,
    copy it (see `tiny_pipeline_copy`)."""
    from sdlab.toymodel import TINY, build_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    build_pipeline(TINY).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def tiny_pipeline_copy(tiny_pipeline_dir, tmp_path) -> Path:
    """A private copy of the tiny pipeline folder that a test may break."""
    import shutil

    return Path(shutil.copytree(tiny_pipeline_dir, tmp_path / "pipe"))
