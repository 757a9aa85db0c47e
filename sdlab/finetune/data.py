"""Captioned images for finetuning: opening a dataset, checking it, and a seeded, resumable batch order.

A dataset is a local imagefolder (images plus `metadata.jsonl` with `file_name` and caption columns, the layout
of `datasets`' imagefolder and of `sdlab.toyworld.export_imagefolder`), a hub dataset id, or a `datasets.Dataset`.

Every random choice (epoch order, crop, flip, caption dropout) is drawn from a generator seeded by
(seed, epoch, index), never from global RNG state: resuming at step k replays exactly what an uninterrupted run
does from step k, on any number of processes.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import FinetuneError

CACHE_BYTES = 256 * 2**20
"""Decoded images are kept in memory while they fit in this many bytes (the toy datasets always do)."""


class CaptionedImages:
    """Rows of (image, caption) from any supported source; `scan()` drops unreadable images."""

    def __init__(self, name: str, records: list, columns: list[str], image_column: str, caption_column: str,
                 opener):
        self.name, self.columns = name, columns
        self.image_column, self.caption_column = image_column, caption_column
        self._records, self._open = records, opener
        self.good = list(range(len(records)))
        self.skipped: list[str] = []
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.good)

    def caption(self, i: int) -> str:
        text = self._records[self.good[i]][self.caption_column]
        if isinstance(text, (list, tuple)):  # some datasets store several captions: take the first
            text = text[0] if text else ""
        return "" if text is None else str(text)

    def image(self, i: int) -> Image.Image:
        row = self.good[i]
        if row in self._cache:
            return self._cache[row]
        return self._open(self._records[row][self.image_column])

    def scan(self, strict: bool = False) -> "CaptionedImages":
        """Decode every image once; skip (and count, with one warning) or, if `strict`, refuse unreadable ones."""
        good, skipped, cached = [], [], 0
        for row, record in enumerate(self._records):
            try:
                img = self._open(record[self.image_column])
            except Exception as e:  # PIL raises many types for broken files
                where = _describe(record[self.image_column], row)
                if strict:
                    raise FinetuneError(f"unreadable image {where} in {self.name}: {e} (--strict is on)") from e
                skipped.append(f"{where}: {type(e).__name__}")
                continue
            good.append(row)
            size = img.width * img.height * 3
            if cached + size <= CACHE_BYTES:
                self._cache[row], cached = img, cached + size
        self.good, self.skipped = good, skipped
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} unreadable image(s) of {len(self._records)} in {self.name} "
                f"(first: {skipped[0]}); pass --strict to fail instead",
                stacklevel=2,
            )
        if not good:
            raise FinetuneError(f"no readable images in {self.name} ({len(skipped)} unreadable)")
        return self


def _describe(value, row: int) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, Path)) else None
    return f"row {row} ({path})" if path else f"row {row}"


def _open_image(value) -> Image.Image:
    if isinstance(value, Image.Image):
        img = value
    elif isinstance(value, dict):  # datasets' Image(decode=False): {"bytes": ..., "path": ...}
        img = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    else:
        img = Image.open(value)
    img.load()
    return img.convert("RGB")


def _check_columns(name: str, columns: list[str], image_column: str, caption_column: str) -> None:
    missing = [c for c in (image_column, caption_column) if c not in columns]
    if missing:
        flag = {image_column: "--image-column", caption_column: "--caption-column"}
        hints = " ".join(f"{flag[c]} NAME" for c in missing)
        raise FinetuneError(
            f"dataset {name} has no column {', '.join(map(repr, missing))}; columns found: "
            f"{', '.join(columns) or '(none)'}. Name the right ones with {hints}."
        )


def _local_folder(folder: Path, image_column: str, caption_column: str) -> CaptionedImages:
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise FinetuneError(
            f"{folder} has no metadata.jsonl (one JSON object per line with file_name and a caption column); "
            f"found: {', '.join(found) or 'nothing'}"
        )
    records, columns = [], []
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FinetuneError(f"{meta} line {n} is not JSON: {e}") from e
        if "file_name" not in row:
            raise FinetuneError(f"{meta} line {n} has no file_name (keys: {', '.join(row)})")
        row = dict(row)
        row["image"] = str(folder / row.pop("file_name"))  # as datasets' imagefolder: file_name becomes "image"
        for key in row:
            if key not in columns:
                columns.append(key)
        records.append(row)
    if not records:
        raise FinetuneError(f"dataset {folder} is empty: {meta} lists no images")
    _check_columns(str(folder), columns, image_column, caption_column)
    return CaptionedImages(str(folder), records, columns, image_column, caption_column, _open_image)


def _hf_dataset(ds, name: str, image_column: str, caption_column: str) -> CaptionedImages:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise FinetuneError(f"dataset {name} has no 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    _check_columns(name, list(ds.column_names), image_column, caption_column)
    if len(ds) == 0:
        raise FinetuneError(f"dataset {name} is empty")
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))  # decode ourselves: corrupt rows skip
    records = _LazyRows(ds, (image_column, caption_column))
    return CaptionedImages(name, records, list(ds.column_names), image_column, caption_column, _open_image)


class _LazyRows:
    """Row access into a `datasets.Dataset` without materializing it."""

    def __init__(self, ds, columns):
        self.ds, self.columns = ds, columns

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[int(i)]

    def __iter__(self):
        return (self.ds[i] for i in range(len(self.ds)))


def open_dataset(spec, image_column: str = "image", caption_column: str = "text") -> CaptionedImages:
    """A local imagefolder path, a hub dataset id, or a `datasets.Dataset` as `CaptionedImages` (not yet scanned)."""
    if not isinstance(spec, (str, Path)):
        return _hf_dataset(spec, f"<{type(spec).__name__}>", image_column, caption_column)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local_folder(path, image_column, caption_column)
    if path.exists():
        raise FinetuneError(f"{path} is a file; pass an imagefolder (images + metadata.jsonl) or a hub dataset id")
    if str(spec).count("/") != 1 or str(spec).startswith((".", "/", "~")):
        raise FinetuneError(f"{spec!r} is neither an existing folder nor a hub dataset id of the form 'owner/name'")
    import datasets

    try:
        ds = datasets.load_dataset(str(spec), split="train")
    except Exception as e:  # offline, unknown id, gated: all end here
        raise FinetuneError(
            f"could not load the hub dataset {spec!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Without network use a local imagefolder: a folder of images with metadata.jsonl "
            "(e.g. sdlab.toyworld.export_imagefolder)."
        ) from e
    return _hf_dataset(ds, repr(str(spec)), image_column, caption_column)


class TrainItems(torch.utils.data.Dataset):
    """Indexed by (epoch, i): the i-th image resized, cropped, maybe flipped, in [-1, 1]; its caption maybe dropped."""

    def __init__(self, data: CaptionedImages, resolution: int, center_crop: bool, random_flip: bool,
                 caption_dropout: float, seed: int):
        self.data, self.resolution = data, resolution
        self.center_crop, self.random_flip, self.caption_dropout, self.seed = center_crop, random_flip, caption_dropout, seed

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        img, r = self.data.image(i), self.resolution
        scale = r / min(img.size)
        if img.size != (r, r):
            size = (max(r, round(img.width * scale)), max(r, round(img.height * scale)))
            img = img.resize(size, Image.BILINEAR) if size != img.size else img
        dx, dy = img.width - r, img.height - r
        left, top = (dx // 2, dy // 2) if self.center_crop else (int(rng.integers(dx + 1)), int(rng.integers(dy + 1)))
        if (dx, dy) != (0, 0):
            img = img.crop((left, top, left + r, top + r))
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
        if self.random_flip and rng.random() < 0.5:
            arr = arr[:, ::-1]
        caption = "" if rng.random() < self.caption_dropout else self.data.caption(i)
        return {"pixel_values": torch.from_numpy(arr.copy()).permute(2, 0, 1), "caption": caption, "index": i}


def collate(items):
    return {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "captions": [it["caption"] for it in items],
        "indices": [it["index"] for it in items],
    }


class BatchOrder(torch.utils.data.Sampler):
    """This process's micro-batches of (epoch, index) keys, from micro-batch `start` on.

    Each epoch is a permutation of the dataset seeded by (seed, epoch), cut into global batches of
    `batch_size * world_size`; process `rank` takes its slice, so processes see different images.
    """

    def __init__(self, n: int, batch_size: int, world_size: int, rank: int, seed: int, start: int, total: int):
        self.per_epoch = n // (batch_size * world_size)
        if self.per_epoch == 0:
            raise FinetuneError(
                f"the dataset has {n} readable image(s), fewer than one global batch "
                f"(batch size {batch_size} x {world_size} process(es)); lower --batch-size"
            )
        self.n, self.bs, self.world, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.start, self.total = start, total

    def __len__(self):
        return self.total - self.start

    def __iter__(self):
        epoch, order = -1, None
        for m in range(self.start, self.total):
            e, k = divmod(m, self.per_epoch)
            if e != epoch:
                epoch, order = e, torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + e))
            lo = (k * self.world + self.rank) * self.bs
            yield [(e, int(i)) for i in order[lo:lo + self.bs]]
