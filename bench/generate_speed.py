"""Time text-to-image generation with the shipped toy model (or any pipeline): images per second.

    python bench/generate_speed.py [--model PATH] [--batch 4] [--steps 25] [--repeats 5]
"""

import argparse
import platform
import time

import torch

import sdlab


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pipe = sdlab.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red cat on grass"] * args.batch
    run = lambda: pipe(prompts, num_inference_steps=args.steps, guidance_scale=args.guidance,  # noqa: E731
                       generator=torch.Generator().manual_seed(0))
    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {pipe.device}")
    print(f"{args.batch} images x {args.steps} DDIM steps, guidance {args.guidance}: "
          f"median {times[len(times) // 2]:.3f} s, best {times[0]:.3f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
