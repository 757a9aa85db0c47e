"""Where to stop finetuning, suggested by one documented rule over the measured tradeoff curve.

The rule: **the last validated step whose fidelity trend keeps at least `threshold` times the probes' fidelity
at the first validation (step 0); the trend is the non-increasing least-squares fit to the measured fidelities
(isotonic regression)**. The probes play the report's "yoda": prompts the data never shows, so their fidelity
is what finetuning costs, and it falls as the run goes on. Each validation reads it from a handful of probe x
seed pairs, so one misdrawn object shows as a dip: the fit (`trend`, pooling adjacent violators) averages
a dip with the later points that contradict it. A dip the run recovers from does not end it at step 0, a
recovery after a real fall counts only as far as it lifts the pooled mean, and every step before the suggested
one keeps the floor on the trend too. Style does not enter the rule: it is what the run is for, it is read off
the same table, and a later step has had more of it. If the trend never falls below the floor, the suggestion
is the run's last step; if it does right after step 0, it is step 0 (the base model: validate more often or
lower the learning rate).

As a run validates, a new row lowers no earlier step's trend (a lower point is its own block; a higher one
lifts the block it joins), so the suggestion either stays or moves to the newest step, whose weights are in
hand: a run need only keep the weights of the steps `keep_steps` names.

The fidelity is the toy evaluator's (object, color and background right) on toy-world prompts and the CLIP
score on real ones (`sdlab.finetune.metrics`); the rule is relative to step 0, so the same threshold means the
same on both.

`write_suggestion(run)` applies the rule to `RUN/validation/tradeoff.csv`, exports the weights of that step as
a diffusers folder `RUN/suggested/` (`sdlab.load_pipeline(RUN / "suggested")`) and writes
`RUN/suggestion.json`; `sdlab finetune` calls it at the end of every validated run and prints the table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy.optimize import isotonic_regression

from . import snapshots
from .checkpoints import RUN_FILE
from .config import FinetuneConfig, FinetuneError, check_threshold, config_from_json
from .validation import read_csv

SUGGESTED = "suggested"
"""The suggested checkpoint's folder in the run folder: a diffusers pipeline."""
SUGGESTION_FILE = "suggestion.json"
KEY = "probe_fidelity"
DEFAULT_THRESHOLD = FinetuneConfig.stop_threshold


@dataclass
class Suggestion:
    """The rule's answer for one table."""

    step: int
    """The suggested step (0 = the base model)."""
    threshold: float
    """The share of the step-0 probe fidelity to keep."""
    floor: float
    """threshold x the probe fidelity of the first validation: the least fidelity the suggested step may have."""
    first_below: int | None
    """The first validated step whose fidelity trend fell below the floor; None if none did."""
    row: dict
    """The tradeoff row of the suggested step."""
    trend: float | None = None
    """The fidelity trend (`trend`) at the suggested step; None in suggestions recorded before it existed."""

    @property
    def reason(self) -> str:
        fid = self.row[KEY]
        kept = f"step {self.step} keeps {fid:.2f}" + ("" if self.trend is None else f" (trend {self.trend:.2f})")
        if self.first_below is None:
            return f"the probe fidelity trend never fell below {self.floor:.2f}; the last {kept}"
        return f"the probe fidelity trend first fell below {self.floor:.2f} at step {self.first_below}; {kept}"


def trend(values) -> list[float]:
    """The non-increasing least-squares fit to `values` in step order (isotonic regression by pooling adjacent
    violators): runs of points that rise are replaced by their mean until the sequence never rises."""
    return [float(v) for v in isotonic_regression(list(values), increasing=False).x]


def suggest_stop(table: list[dict], threshold: float = DEFAULT_THRESHOLD) -> Suggestion:
    """Apply the rule (module docstring) to tradeoff rows (dicts with `step` and `probe_fidelity`)."""
    threshold = check_threshold(threshold)
    if not table:
        raise FinetuneError("the tradeoff table is empty: the run never validated; finetune with validate_every > 0 "
                            "(or resume it with --resume latest --validate-every N)")
    rows = sorted(table, key=lambda r: r["step"])
    if not measured(rows):
        raise FinetuneError(
            f"the tradeoff table has no {KEY} at every step (columns: {', '.join(rows[0])}): the run measured no "
            "probes, or its metrics were off or skipped; finetune with probe prompts and metrics "
            "('toyworld' for toy prompts, 'clip' with local CLIP weights)")
    floor = threshold * rows[0][KEY]
    fit = trend(r[KEY] for r in rows)
    chosen, first_below = 0, None
    for i in range(1, len(rows)):
        if fit[i] < floor:
            first_below = rows[i]["step"]
            break
        chosen = i
    return Suggestion(int(rows[chosen]["step"]), threshold, floor, first_below, dict(rows[chosen]), fit[chosen])


def measured(table: list[dict]) -> bool:
    """Whether the rule can read this table: rows, each with a probe fidelity."""
    return bool(table) and all(r.get(KEY) is not None and not math.isnan(r[KEY]) for r in table)


def keep_steps(table: list[dict], threshold: float, checkpoint_step: int | None) -> set[int]:
    """The steps whose weights a run must keep: the suggestion now, and the one as of its latest checkpoint
    (what a resumed run would suggest before it validates again). Empty for a table without probe fidelity."""
    if not measured(table):
        return set()
    keep = {suggest_stop(table, threshold).step}
    if checkpoint_step is not None:
        before = [r for r in table if r["step"] <= checkpoint_step]
        if before:
            keep.add(suggest_stop(before, threshold).step)
    return keep


def format_table(table: list[dict], suggestion: Suggestion | None = None) -> str:
    """The tradeoff table as text: one line per validated step, the suggested one marked."""
    cols = [("probe_style", "style"), (KEY, "fidelity"), ("probe_object", "object"), ("probe_color", "color"),
            ("probe_background", "backgr."), ("prompt_style", "in-dom. style"), ("prompt_fidelity", "in-dom. fid.")]
    cols = [(k, name) for k, name in cols if table and k in table[0]]
    lines = ["   step  " + "  ".join(f"{name:>13}" for _, name in cols)]
    for row in table:
        mark = "->" if suggestion is not None and row["step"] == suggestion.step else "  "
        lines.append(f"{mark}{row['step']:>5}  " + "  ".join(f"{row[k]:>13.3f}" for k, _ in cols))
    return "\n".join(lines)


def report(run, suggestion: Suggestion, table: list[dict]) -> str:
    """What `sdlab finetune` prints at the end: the table with the suggestion marked, the rule, how to load it."""
    return (f"the tradeoff (probes: style, fidelity and its parts; in-domain prompts)\n{format_table(table, suggestion)}"
            f"\nsuggested stop: step {suggestion.step} ({RULE}; threshold {suggestion.threshold:g}: "
            f"{suggestion.reason}); sdlab.load_pipeline({str(Path(run) / SUGGESTED)!r})")


def read_run(run) -> tuple:
    """(config, tradeoff rows) of a run folder, or a clear error."""
    run = Path(run).expanduser()
    if not (run / RUN_FILE).is_file():
        raise FinetuneError(f"{run} is not an sdlab finetuning run (no {RUN_FILE}); pass the --output of a run")
    config = config_from_json(json.loads((run / RUN_FILE).read_text())["config"])
    return config, read_csv(run / "validation" / "tradeoff.csv")


def run_threshold(run) -> float:
    """The `stop_threshold` a run folder was made with (the config default if it records none)."""
    path = Path(run) / RUN_FILE
    if path.is_file():
        return float(json.loads(path.read_text())["config"].get("stop_threshold", DEFAULT_THRESHOLD))
    return DEFAULT_THRESHOLD


def write_suggestion(run, threshold: float | None = None) -> Suggestion:
    """Apply the rule to a run (with `threshold`, default the run's `stop_threshold`), export the suggested step
    as `RUN/suggested/` and record `RUN/suggestion.json`. Every check runs before anything is written; the
    folder is swapped in whole, so a failed call leaves the run as it was."""
    run = Path(run).expanduser()
    config, table = read_run(run)
    suggestion = suggest_stop(table, config.stop_threshold if threshold is None else threshold)
    if suggestion.step == 0:
        weights = None  # the base model itself
    else:
        weights = snapshots.load(run, suggestion.step)
        if weights is None:
            kept = snapshots.kept_steps(run)
            raise FinetuneError(
                f"the rule suggests step {suggestion.step}, but its weights were not kept (the run keeps them for "
                f"steps {kept or 'none'}: the suggestions of the threshold it ran with); rerun with this threshold "
                "as --stop-threshold, or pick one whose suggestion is kept")
    pipe = snapshots.build_pipeline(config, weights)
    tmp, final = run / f".tmp-{SUGGESTED}", run / SUGGESTED
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / SUGGESTION_FILE).write_text(json.dumps(asdict(suggestion), indent=1))
    if final.exists():
        old = run / f".old-{SUGGESTED}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    record = run / (SUGGESTION_FILE + ".tmp")
    record.write_text(json.dumps({**asdict(suggestion), "rule": RULE, "pipeline": SUGGESTED}, indent=1))
    os.replace(record, run / SUGGESTION_FILE)
    return suggestion


def read_suggestion(run) -> Suggestion | None:
    """The suggestion a run recorded, or None."""
    path = Path(run) / SUGGESTION_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Suggestion(**{k: data[k] for k in ("step", "threshold", "floor", "first_below", "row")},
                      trend=data.get("trend"))


RULE = " ".join(__doc__.split("**")[1].split())
"""The rule in one sentence (recorded in suggestion.json)."""
