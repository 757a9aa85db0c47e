"""Eager against compiled (`sdlab.compile`): time of plain generation and of prompt-to-prompt edits.

    python bench/compile_speed.py                          # the shipped toy model on the CPU, default mode
    python bench/compile_speed.py --device cuda --sd15-shape --res 512 --modes default reduce-overhead

The pipelines are those of `bench/p2p_overhead.py` (`--sd15-shape`: an SD-1.x-shaped UNet of random weights,
fp16 on CUDA). Every run is one batch of source + 1 target with classifier-free guidance, `--steps` DDIM steps,
the denoising loop only (`output_type="latent"`). For each compile mode the UNet is compiled afresh; the first
call of each kind (plain, replace, blend) includes its compilation and is printed apart, then `--repeats` timed
runs alternate the source prompts (a new prompt must not recompile: the script counts dynamo's graphs and
prints how many each kind compiled). On CUDA the time is synchronised and peak memory is
`torch.cuda.max_memory_allocated` of each kind's timed runs; on CPU the process CPU time is printed too (the
steadier measure on a shared machine). Kinds:

- plain:   `sdlab.attention.generate` without a controller (the pipeline's own processors)
- replace: `Replace()` with the paper's defaults (cross 0.8, self 0.4)
- blend:   `Replace(local_blend=LocalBlend(["cat", "dog"]))` (maps summed at one resolution)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from p2p_overhead import load  # noqa: E402  (the same pipelines as the overhead benchmark)

PAIRS = [("a red cat on grass", "a red dog on grass"), ("a blue cat at night", "a blue dog at night")]
KINDS = ("plain", "replace", "blend")


def runner(pipe, kind, args):
    """A function of a prompt pair that runs one `kind` generation."""
    from sdlab import p2p
    from sdlab.attention import generate

    kw = dict(seed=0, steps=args.steps, guidance=7.5, height=args.res, width=args.res, output_type="latent")
    if kind == "plain":
        return lambda pair: generate(pipe, list(pair), **kw)
    blend = p2p.LocalBlend(["cat", "dog"]) if kind == "blend" else None
    return lambda pair: p2p.edit(pipe, pair[0], [pair[1]], p2p.Replace(local_blend=blend), **kw)


def timed(fn, cuda):
    if cuda:
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def measure(pipe, mode, args):
    """{kind: row} for the pipeline as it is (mode "eager") or compiled afresh in `mode`."""
    import sdlab
    from sdlab.attention.compiling import is_compiled, uncompiled

    pipe.unet = uncompiled(pipe.unet)
    torch._dynamo.reset()
    if mode != "eager":
        sdlab.compile(pipe, mode=None if mode == "default" else mode)
        if not is_compiled(pipe.unet):
            sys.exit(f"torch.compile is unavailable here (see the warning above): nothing to compare in {mode} mode")
    cuda = pipe.device.type == "cuda"
    rows = {}
    for kind in args.kinds:
        run = runner(pipe, kind, args)
        graphs = counters["stats"]["unique_graphs"]
        first, _ = timed(lambda: run(PAIRS[0]), cuda)
        compiled = counters["stats"]["unique_graphs"] - graphs
        run(PAIRS[1])  # warm-up with other prompts (CUDA graphs record on a later call)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = [timed(lambda: run(PAIRS[i % 2]), cuda) for i in range(args.repeats)]
        rows[kind] = dict(first=first, wall=statistics.median(t for t, _ in times),
                          cpu=statistics.median(c for _, c in times),
                          peak=torch.cuda.max_memory_allocated() if cuda else None,
                          graphs=compiled, recompiled=counters["stats"]["unique_graphs"] - graphs - compiled)
    return rows


def report(results, args, name, pipe):
    print(f"\n{name} on {pipe.device} ({pipe.unet.dtype}), {args.res or 'native'} px, source + 1 target, "
          f"guidance 7.5, {args.steps} DDIM steps, latent loop only; median of {args.repeats} runs after a warm-up")
    print(f"{'mode':<16}{'kind':<9}{'first s':>9}{'graphs':>8}{'recomp':>8}{'wall s':>9}{'x eager':>9}"
          f"{'cpu s':>9}{'peak MB':>10}")
    for mode, rows in results.items():
        for kind, r in rows.items():
            base = results["eager"][kind]["wall"] if "eager" in results else None
            ratio = f"{r['wall'] / base:.3f}" if base else "-"
            peak = f"{r['peak'] / 2**20:.1f}" if r["peak"] is not None else "-"
            print(f"{mode:<16}{kind:<9}{r['first']:>9.2f}{r['graphs']:>8}{r['recompiled']:>8}{r['wall']:>9.3f}"
                  f"{ratio:>9}{r['cpu']:>9.3f}{peak:>10}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder or hub id (default: the shipped toy model)")
    ap.add_argument("--sd15-shape", action="store_true", help="SD-1.x-shaped UNet of random weights (for GPUs)")
    ap.add_argument("--res", type=int, default=None, help="image size (default: the model's own)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["eager", "default"],
                    choices=["eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()

    print(f"machine: {platform.machine()} {platform.processor()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    pipe, name = load(args)
    pipe.set_progress_bar_config(disable=True)
    results = {mode: measure(pipe, mode, args) for mode in args.modes}
    report(results, args, name, pipe)


if __name__ == "__main__":
    main()
