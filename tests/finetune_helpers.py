"""What the finetuning tests build: the tiny random model as a folder, and a small captioned image folder; and
the module fixtures `model` and `data` that hold one of each (import them into a test module to use them)."""

import json

import pytest

from sdlab.toymodel import TINY, build_pipeline
from sdlab.toyworld import render, sample_scenes


def tiny_model(folder):
    """The tiny random toy pipeline (`sdlab.toymodel.TINY`, seed 0) saved as a diffusers folder."""
    build_pipeline(TINY, seed=0).save_pretrained(folder)
    return folder


def write_imagefolder(folder, n=8, seed=1, style="creature", extra=None):
    """`n` toy-world renders and a metadata.jsonl (file_name, text and `extra` columns) in a new `folder`."""
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for i, scene in enumerate(sample_scenes(n, seed, style=style)):
            render(scene).save(folder / f"{i:03d}.png")
            f.write(json.dumps({"file_name": f"{i:03d}.png", "text": scene.caption, **(extra or {})}) + "\n")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("data") / "creatures")
