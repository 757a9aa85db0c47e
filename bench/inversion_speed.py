"""Time per picture of DDIM inversion and of null-text inversion (`sdlab.inversion.invert`).

    python bench/inversion_speed.py                     # the shipped toy model, 3 held-out renders
    python bench/inversion_speed.py --no-early-stop     # every step runs all --inner iterations
    python bench/inversion_speed.py --model runwayml/stable-diffusion-v1-5 --image photo.png --caption "..."

Each picture is inverted by DDIM alone (encode, DDIM inversion, guided reconstruction: 3 passes of --steps)
and by null-text inversion (the same plus --steps x --inner Adam iterations, each one UNet forward and backward,
fewer where the loss reaches the paper's early-stop level). Wall time and process CPU time per picture; the
load average before and after, since on a shared machine wall time measures the neighbours too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder or hub id (default: the shipped toy model)")
    ap.add_argument("--image", default=None, help="a picture to invert (default: held-out toy-world renders)")
    ap.add_argument("--caption", default=None, help="the picture's caption (with --image)")
    ap.add_argument("--n", type=int, default=3, help="held-out renders to invert (without --image)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--no-early-stop", action="store_true", help="run every inner iteration")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    import sdlab
    from sdlab.inversion import invert, psnr

    pipe = sdlab.load_pipeline(args.model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    if args.image:
        from PIL import Image

        pictures = [(Image.open(args.image).convert("RGB"), args.caption)]
    else:
        from sdlab.toymodel.inversion_quality import held_out_scenes
        from sdlab.toyworld import render

        pictures = [(render(s), s.caption) for s in held_out_scenes(args.n)]
    cuda = pipe.device.type == "cuda"
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, device {pipe.device} ({pipe.unet.dtype}), "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{args.model or 'shipped toy model'}: {args.steps} DDIM steps, guidance {args.guidance}, "
          f"{args.inner} inner iterations{' (no early stop)' if args.no_early_stop else ' (early stop as the paper)'}")
    kw = dict(steps=args.steps, guidance=args.guidance, resize=True, progress=False)
    invert(pipe, pictures[0][0], pictures[0][1], **{**kw, "steps": 2}, null_text=False)  # warm-up
    rows = {"ddim": [], "null-text": []}
    for image, caption in pictures:
        for mode in rows:
            extra = dict(null_text=False) if mode == "ddim" else dict(
                inner_steps=args.inner, tolerance=-1.0 if args.no_early_stop else 1e-5)
            if cuda:
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            inv = invert(pipe, image, caption, **kw, **extra)
            if cuda:
                torch.cuda.synchronize()
            rows[mode].append(dict(wall=time.perf_counter() - t, cpu=time.process_time() - c, psnr=inv.psnr,
                                   iterations=sum(inv.inner_iterations)))
            r = rows[mode][-1]
            print(f"  {mode:<10} {caption!r}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, "
                  f"{r['iterations']} inner iterations, PSNR {r['psnr']:.2f} dB "
                  f"(VAE round trip {psnr(inv.image, inv.vae_roundtrip):.2f} dB)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<12}{'median wall s':>15}{'median CPU s':>14}{'inner iterations':>18}{'PSNR dB':>9}")
    for mode, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "iterations", "psnr")}
        print(f"{mode:<12}{med['wall']:>15.2f}{med['cpu']:>14.2f}{med['iterations']:>18.0f}{med['psnr']:>9.2f}")


if __name__ == "__main__":
    main()
