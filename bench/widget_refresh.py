"""Time what one change costs in the explorers of `sdlab.widgets` (a refresh, from the attributes to the PNG).

    python bench/widget_refresh.py [--model PATH] [--steps 20] [--repeats 5]

Each row changes one thing and refreshes, `--repeats` times (alternating between two values, after a warm-up),
and prints the median and best wall time: a generation for a new prompt, seed or edit; a redraw only for a new
word or number of self-attention components (the capture is kept).
"""

import argparse
import os
import platform
import time

import torch

import sdlab
from sdlab.widgets import AttentionExplorer, EditExplorer


def timed(explorer, name, values, repeats):
    times = []
    for k in range(repeats + 1):
        setattr(explorer, name, values[k % 2])
        t = time.perf_counter()
        explorer.refresh()
        times.append(time.perf_counter() - t)
        if explorer.error:
            raise RuntimeError(f"{name}={values[k % 2]!r}: {explorer.error}")
    times = sorted(times[1:])  # the first is a warm-up
    return times[len(times) // 2], times[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pipe = sdlab.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    edits = EditExplorer(pipe, "a red cat on grass", "a red dog on grass", steps=args.steps)
    attention = AttentionExplorer(pipe, "a red cat on grass", steps=args.steps)
    rows = [
        ("edit: new target (Replace, 2 prompts)", edits, "target", ["a red bird on grass", "a red dog on grass"]),
        ("edit: seed slider", edits, "seed", [1, 2]),
        ("edit: cross-steps slider", edits, "cross_steps", [0.6, 0.8]),
        ("edit: Refine + weights + LocalBlend", edits, "weights", ["dog=2", "dog=0.5"]),
        ("attention: new prompt (capture)", attention, "prompt", ["a blue dog on sand", "a red cat on grass"]),
        ("attention: another word (redraw)", attention, "word", ["cat", None]),
        ("attention: components slider (redraw)", attention, "components", [3, 6]),
    ]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, device {pipe.device}; {args.steps} DDIM steps, guidance 7.5")
    for label, explorer, name, values in rows:
        if name == "weights":
            explorer.mode, explorer.target, explorer.blend = "Refine", "a red dog on the grass", "cat dog"
        median, best = timed(explorer, name, values, args.repeats)
        print(f"{label:42s} median {median:.3f} s, best {best:.3f} s over {args.repeats} refreshes")


if __name__ == "__main__":
    main()
