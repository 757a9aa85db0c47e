"""Writing the toy world to disk as a captioned image folder, the shape of pokemon-blip-captions.

`datasets.load_dataset("imagefolder", data_dir=path)` reads the result as `image` and `text` columns, plus
one column per ground-truth field of the scene (object, color, background, pattern, style, ...).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from .render import render
from .scene import Scene, sample_scenes

METADATA = "metadata.jsonl"

STYLE_MIXES = {
    "plain": dict(style="plain", watercolor=0.0),
    "watercolor": dict(style="plain", watercolor=1.0),
    "watercolor-mix": dict(style="plain", watercolor=0.3),
    "creature": dict(style="creature"),
}
"""Named mixes of render styles for `export_imagefolder`, as keyword arguments of `sample_scenes`:
"watercolor-mix" is 30% watercolor paintings and 70% plain pictures, "creature" the finetuning target."""


def export_imagefolder(path, n: int, seed: int, style: str = "plain", *, overwrite: bool = False) -> Path:
    """Render `n` scenes sampled from `seed` in the style mix `style` (a key of `STYLE_MIXES`) into `path`.

    Writes `00000.png`, `00001.png`, ... and `metadata.jsonl`; returns the folder. See `write_imagefolder`
    for what happens when `path` exists.
    """
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if style not in STYLE_MIXES:
        raise ValueError(f"unknown style mix {style!r}: choose one of {', '.join(STYLE_MIXES)}")
    return write_imagefolder(path, sample_scenes(n, seed, **STYLE_MIXES[style]), overwrite=overwrite)


def write_imagefolder(path, scenes, *, overwrite: bool = False) -> Path:
    """Render `scenes` into the image folder `path` (PNGs + `metadata.jsonl` with `file_name`, `text` and
    the scene's fields).

    An existing non-empty `path` is refused unless `overwrite=True`; even then, only a folder that holds a
    `metadata.jsonl` (an earlier export) is replaced, and only once the new folder is complete (it is
    written next to it first, then swapped in), so a failure midway leaves the old export intact.
    """
    scenes = list(scenes)
    if not scenes:
        raise ValueError("no scenes to export")
    if not all(isinstance(s, Scene) for s in scenes):
        raise TypeError("scenes must be toyworld Scene objects")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder")
    existing = path.is_dir() and any(path.iterdir())
    if existing and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to replace an earlier export")
    if existing and not (path / METADATA).is_file():
        raise FileExistsError(
            f"refusing to overwrite {path}: it holds no {METADATA}, so it is not a toy-world export; "
            "choose another path or empty it yourself"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        width = max(5, len(str(len(scenes) - 1)))
        with open(staging / METADATA, "w") as meta:
            for i, scene in enumerate(scenes):
                name = f"{i:0{width}d}.png"
                render(scene).save(staging / name)
                meta.write(json.dumps({"file_name": name, "text": scene.caption, **asdict(scene)}) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            staging.rename(path)
            shutil.rmtree(old)
        else:
            staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path
