"""The run folder and its checkpoints: who owns a folder, atomic saves, the latest checkpoint, the total limit.

A checkpoint is written by accelerate's `save_state` into `checkpoints/.tmp-checkpoint-STEP`, gets a marker
file last, and only then is renamed to `checkpoints/checkpoint-STEP`. A rename is atomic, so a run killed at
any moment leaves either a complete checkpoint or a `.tmp-*` folder that is ignored and cleaned up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .config import FinetuneConfig, FinetuneError

RUN_FILE = "sdlab_run.json"
"""Written at the top of a run folder: the config that made it."""
MARKER = "sdlab_checkpoint.json"
"""Written last into a checkpoint: its step and config. A folder without it is not a checkpoint."""
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output) -> Path:
    return Path(output) / "checkpoints"


def list_checkpoints(output) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), oldest first."""
    root = checkpoint_dir(output)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / MARKER).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output) -> Path | None:
    found = list_checkpoints(output)
    return found[-1][1] if found else None


def read_marker(folder: Path) -> dict:
    marker = Path(folder) / MARKER
    if not marker.is_file():
        raise FinetuneError(f"{folder} is not an sdlab checkpoint ({MARKER} is missing: incomplete or foreign)")
    return json.loads(marker.read_text())


def _describe_run(out: Path) -> str:
    latest = latest_checkpoint(out)
    done = " and a finished pipeline" if (out / "model_index.json").is_file() else ""
    return f"checkpoints up to step {read_marker(latest)['step']}{done}" if latest else f"no checkpoint yet{done}"


def check_output(config: FinetuneConfig) -> tuple[Path | None, bool]:
    """Check the output folder against the config, touching nothing: (checkpoint to resume or None, wipe it?).

    Refuses a folder holding a different run (unless `overwrite`), a non-empty folder that is not an sdlab
    run, and a `resume` with nothing to resume. Every process runs it before any writes (`take_output`).
    """
    out = Path(config.output).expanduser()
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"output {out} is a file; pass a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    recorded = json.loads((out / RUN_FILE).read_text()) if (out / RUN_FILE).is_file() else None

    if config.resume is not None:
        if config.resume == "latest":
            found = latest_checkpoint(out)
            if found is None:
                why = "the folder does not exist" if not out.exists() else (
                    "it holds no sdlab run" if recorded is None else "the run stopped before its first checkpoint")
                raise FinetuneError(
                    f"--resume latest: nothing to resume in {checkpoint_dir(out)} ({why}); run without --resume"
                )
        else:
            found = Path(config.resume).expanduser()
            if not found.is_dir():
                raise FinetuneError(f"--resume {config.resume}: no such checkpoint folder")
        diffs = config.differences(read_marker(found)["config"])
        if diffs:
            raise FinetuneError(
                f"cannot resume {found}: the config differs from the one it was trained with ({'; '.join(diffs)})"
            )
        if entries and recorded is None:
            raise FinetuneError(f"output folder {out} is not empty and holds no sdlab run; choose another --output")
        if recorded is not None and config.differences(recorded["config"]) and not config.overwrite:
            raise FinetuneError(f"{out} holds a different run; pass --overwrite or another --output")
        return found, False

    if entries:
        if recorded is None:
            raise FinetuneError(
                f"output folder {out} is not empty and holds no sdlab run ({', '.join(entries[:5])}...); "
                "choose a new or empty folder"
            )
        if not config.overwrite:
            diffs = config.differences(recorded["config"])
            what = f"a different run ({'; '.join(diffs)})" if diffs else "a run of this config"
            raise FinetuneError(
                f"output folder {out} holds {what} with {_describe_run(out)}. Pass --resume latest to continue it "
                "or --overwrite to replace it."
            )
        return None, True
    return None, False


def take_output(config: FinetuneConfig, resume_from: Path | None, wipe: bool) -> None:
    """Main process only, after `check_output` passed everywhere: wipe if asked, record the run, tidy up."""
    out = Path(config.output).expanduser()
    if wipe:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_run_file(out, config)
    _clean_tmp(out)
    if resume_from is not None:
        step = read_marker(resume_from)["step"]
        for later, folder in list_checkpoints(out):  # a resumed timeline replaces what came after it
            if later > step and folder.resolve() != resume_from.resolve():
                print(f"sdlab finetune: removing {folder} (after the resumed step {step})")
                shutil.rmtree(folder, ignore_errors=True)


def _write_run_file(out: Path, config: FinetuneConfig) -> None:
    tmp = out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"sdlab_finetune": 1, "config": config.to_json()}, indent=1))
    os.replace(tmp, out / RUN_FILE)


def _clean_tmp(out: Path) -> None:
    root = checkpoint_dir(out)
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def write_state(accelerator, folder: Path) -> None:
    """accelerate's state saving (the one place that writes checkpoint contents; tests make it fail)."""
    accelerator.save_state(str(folder))


def save_checkpoint(accelerator, config: FinetuneConfig, step: int, loss: float | None = None) -> Path:
    """Save a resumable checkpoint of `step` atomically; keep at most `checkpoints_total_limit`. `loss` (that of
    the step's last optimizer step) goes into the marker, so a resumed run validates the step with it.

    If writing fails (a full disk, say), the partial folder is removed, the previous checkpoint stays the
    latest, and a `FinetuneError` says so.
    """
    out = Path(config.output).expanduser()
    root = checkpoint_dir(out)
    tmp, final = root / f".tmp-checkpoint-{step}", root / f"checkpoint-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        write_state(accelerator, tmp)
        if accelerator.is_main_process:
            (tmp / MARKER).write_text(json.dumps({"step": step, "loss": loss, "config": config.to_json()}, indent=1))
    except OSError as e:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(out)
        raise FinetuneError(
            f"could not write the checkpoint of step {step} ({e}); nothing was lost: the latest checkpoint is "
            f"still {previous or 'none'}. Free disk space and rerun with --resume latest."
        ) from e
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # resumed from an earlier checkpoint: replace the stale later one
            old = root / f".tmp-old-checkpoint-{step}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        if config.checkpoints_total_limit is not None:
            for _, stale in list_checkpoints(out)[: -config.checkpoints_total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
