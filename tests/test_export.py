"""Exporting the toy world as an image folder that `datasets` reads like pokemon-blip-captions."""

import json

import numpy as np
import pytest
from PIL import Image

from sdlab.toyworld import STYLE_MIXES, analyze, export_imagefolder, render, sample_scenes, write_imagefolder


def test_datasets_reads_image_and_text(tmp_path):
    from datasets import load_dataset

    folder = export_imagefolder(tmp_path / "toy", n=6, seed=2, style="watercolor-mix")
    ds = load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 6
    assert {"image", "text", "object", "color", "background", "style"} <= set(ds.column_names)
    scenes = sample_scenes(6, 2, **STYLE_MIXES["watercolor-mix"])
    by_seed = {s.texture_seed: s for s in scenes}
    for row in ds:
        scene = by_seed[row["texture_seed"]]
        assert row["text"] == scene.caption
        assert row["image"].size == (64, 64)
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(render(scene)))
        assert (row["object"], row["color"], row["background"]) == (scene.object, scene.color, scene.background)


def test_metadata_lines_carry_ground_truth(tmp_path):
    folder = export_imagefolder(tmp_path / "toy", n=3, seed=0, style="creature")
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [line["file_name"] for line in lines] == ["00000.png", "00001.png", "00002.png"]
    assert all(line["style"] == "creature" and (folder / line["file_name"]).is_file() for line in lines)
    with Image.open(folder / lines[0]["file_name"]) as image:
        assert analyze(image.convert("RGB")).style == "creature"


def test_export_is_deterministic(tmp_path):
    a = export_imagefolder(tmp_path / "a", n=4, seed=9)
    b = export_imagefolder(tmp_path / "b", n=4, seed=9)
    for name in ["metadata.jsonl", "00000.png", "00003.png"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()


@pytest.mark.parametrize("n", [0, -1])
def test_nonpositive_n_is_refused_before_writing(tmp_path, n):
    with pytest.raises(ValueError, match="positive"):
        export_imagefolder(tmp_path / "toy", n=n, seed=0)
    assert not (tmp_path / "toy").exists()


def test_unknown_style_mix(tmp_path):
    with pytest.raises(ValueError, match="watercolor-mix"):
        export_imagefolder(tmp_path / "toy", n=2, seed=0, style="oil")


def test_existing_folder_needs_overwrite(tmp_path):
    folder = export_imagefolder(tmp_path / "toy", n=2, seed=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_imagefolder(folder, n=3, seed=1)
    export_imagefolder(folder, n=3, seed=1, overwrite=True)
    assert len((folder / "metadata.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png", "metadata.jsonl"]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no staging or backup folder left behind


def test_overwrite_never_deletes_a_folder_that_is_not_an_export(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("...")
    with pytest.raises(FileExistsError, match="not a toy-world export"):
        export_imagefolder(precious, n=2, seed=0, overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "..."


def test_failed_overwrite_keeps_the_old_export(tmp_path, monkeypatch):
    folder = export_imagefolder(tmp_path / "toy", n=2, seed=0)
    before = (folder / "metadata.jsonl").read_text()
    import sdlab.toyworld.export as export

    def broken(scene):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "render", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_imagefolder(folder, sample_scenes(2, 5), overwrite=True)
    assert (folder / "metadata.jsonl").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]


def test_a_file_path_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(NotADirectoryError):
        export_imagefolder(target, n=1, seed=0, overwrite=True)
