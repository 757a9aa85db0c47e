"""Issue 14's bars on the shipped toy model, measured: real-picture reconstruction and Replace on the inversion.

    python bench/inversion_bars.py                 # 16 held-out renders, guidance 7.5, 50 DDIM steps, 10 inner
    python bench/inversion_bars.py --n 4 --steps 20

Every number comes from `sdlab.toymodel.inversion_quality` (the code notebook 08 and tests/test_inversion.py
run): mean PSNR against the render of the VAE round trip, of DDIM inversion alone and of null-text inversion;
then Replace (the object word swapped) on each null-text inversion, as `Replace()` and as Replace with a pixel
`LocalBlend` on the object words: how often the evaluator sees the target object, and the change outside the
objects with prompt-to-prompt over the change without it. Too slow for the test suite on two CPU cores (about
16 x (3 + 3 x 2) passes of 50 steps plus 16 x 500 Adam iterations), so it is a script; `make test-bars` runs the
same code (tests/test_inversion.py).
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="held-out renders")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=7.5)
    args = ap.parse_args()

    import sdlab
    from sdlab.toymodel import inversion_quality

    pipe = sdlab.load_pipeline(device="cpu")
    pipe.set_progress_bar_config(disable=True)
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}; "
          f"{args.n} renders, guidance {args.guidance}, {args.steps} DDIM steps, {args.inner} inner iterations")
    from sdlab.toymodel.edit_quality import EditMeasure

    inv_rows, rep_rows = [], []
    t0 = time.perf_counter()
    for k, s in enumerate(inversion_quality.held_out_scenes(args.n)):
        t, c = time.perf_counter(), time.process_time()
        m = inversion_quality.invert_renders(pipe, scenes=[s], steps=args.steps, guidance=args.guidance,
                                             inner_steps=args.inner)
        r = inversion_quality.replace_inverted(pipe, m)
        inv_rows += m.rows
        rep_rows += r.rows
        print(f"  {k + 1}/{args.n} {s.caption!r} -> {r.rows[0]['target'].object}: VAE {m['psnr_vae']:.2f} dB, "
              f"DDIM {m['psnr_ddim']:.2f} dB, null-text {m['psnr_null_text']:.2f} dB "
              f"({sum(m.rows[0]['null_text'].inner_iterations)} inner iterations); target seen "
              f"{r['target_seen_with']:.0f} (LocalBlend {r['target_seen_blend']:.0f}, without p2p "
              f"{r['target_seen_without']:.0f}), outside change {r['outside_with']:.2f} (LocalBlend "
              f"{r['outside_blend']:.2f}) vs {r['outside_without']:.2f}; {time.perf_counter() - t:.0f} s wall, "
              f"{time.process_time() - c:.0f} s CPU", flush=True)
    inv = EditMeasure(inversion_quality.inversion_summary(inv_rows), inv_rows)
    rep = EditMeasure(inversion_quality.replace_summary(rep_rows), rep_rows)
    print(f"{args.n} renders in {time.perf_counter() - t0:.0f} s")
    print(f"reconstruction: {inv}")
    print(f"Replace: {rep}")
    bars = {
        "null-text within 1 dB of the VAE round trip": inv["vae_minus_null_text"] <= 1.0,
        "Replace + LocalBlend(pixels=True): target seen >= 80%": rep["target_seen_blend"] >= 0.8,
        "Replace + LocalBlend(pixels=True): outside change <= 1/3 of without p2p": rep["blend_ratio"] <= 1 / 3,
        "(Replace() alone: target seen >= 80%)": rep["target_seen_with"] >= 0.8,
        "(Replace() alone: outside change <= 1/3 of without p2p)": rep["outside_ratio"] <= 1 / 3,
    }
    for name, ok in bars.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
