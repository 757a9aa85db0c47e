"""Time and peak memory of one prompt-to-prompt edit pair against plain generation of the same batch.

    python bench/p2p_overhead.py                      # the shipped toy model (its shape, random, if absent)
    python bench/p2p_overhead.py --sd15-shape --res 512 768   # SD-1.x-shaped random UNet, fp16 on CUDA
    python bench/p2p_overhead.py --sdxl-shape                 # SDXL-shaped random pipeline, 1024², fp16 (CUDA only)

Every mode runs the same batch (source + 1 target, classifier-free guidance, `--steps` DDIM steps, the
denoising loop only: `output_type="latent"`, no VAE decode) in a fresh worker process, so peak memory is the
worker's own: `torch.cuda.max_memory_allocated` on CUDA; on CPU the peak resident set size of the worker
(`ru_maxrss`, weights included), since tensor memory on CPU is not tracked by torch. On CPU the process CPU time
is printed next to the wall time: on a shared machine it is the steadier measure of work. Modes:

- plain:    the pipeline's own attention processors (`sdlab.attention.generate` without a controller)
- replace:  `Replace()` with the paper's defaults (cross 0.8, self 0.4), fused SDPA path
- blend:    `Replace(local_blend=LocalBlend(...))`: probabilities materialised at one resolution
- capture:  `sdlab.attention.capture` of one prompt pair (maps at the default resolution, self-attention too)
- oracle:   tests/p2p_oracle.py, softmax materialised in every layer (the reference method's arithmetic)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

SOURCE, TARGET = "a red cat on grass", "a red dog on grass"
MODES = ("plain", "replace", "blend", "capture", "oracle")


def sd15_pipeline(device, dtype):
    """An SD-1.x-shaped pipeline of random weights: SD 1.5's UNet and CLIP ViT-L text encoder configs, the toy
    tokenizer, and a minimal VAE with SD's 8x downsampling (the loop never decodes)."""
    from sdlab.toymodel import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    with torch.device(device):  # initialise on the device: an SD-sized UNet is slow to initialise on a CPU
        return _sd15_modules(tok, device, dtype)


FAST_VAE = dict(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8)
"""A minimal VAE with SD's 8x downsampling: the benchmarked loop never decodes."""


def sdxl_pipeline(device, dtype):
    """An SDXL-shaped pipeline of random weights: SDXL base 1.0's published UNet and two text encoder configs
    (`sdlab.walkthrough.SDXL`), the toy tokenizer in both places, and the minimal VAE."""
    from sdlab.toymodel.sdxl import XLConfigs, build_sdxl_pipeline
    from sdlab.walkthrough import SDXL

    configs = XLConfigs(unet=SDXL.unet, vae=FAST_VAE, text_encoder=SDXL.text_encoder,
                        text_encoder_2=SDXL.text_encoder_2)
    with torch.device(device):  # a 2.6 B-parameter UNet initialises in seconds on the GPU, minutes on a CPU
        return build_sdxl_pipeline(configs).to(device, dtype)


def _sd15_modules(tok, device, dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdlab.toymodel.architecture import SCHEDULER_CONFIG

    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(**FAST_VAE)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device, dtype)


def load(args):
    import sdlab
    from sdlab.models import TOY_MODEL_DIR, pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    if args.sd15_shape:
        return sd15_pipeline(device, dtype), "SD-1.x-shaped UNet, random weights"
    if args.sdxl_shape:
        return sdxl_pipeline(device, dtype), "SDXL-shaped UNet and text encoders, random weights"
    if args.model or (TOY_MODEL_DIR / "model_index.json").is_file():
        return sdlab.load_pipeline(args.model, device=device, dtype=dtype), args.model or "shipped toy model"
    from sdlab.toymodel import TOY, build_pipeline

    return build_pipeline(TOY).to(device, dtype), "toy architecture, random weights (shipped weights absent)"


def worker(args):
    from sdlab import p2p
    from sdlab.attention import capture, generate

    pipe, name = load(args)
    pipe.set_progress_bar_config(disable=True)
    cuda = pipe.device.type == "cuda"
    kw = dict(seed=0, steps=args.steps, guidance=7.5, height=args.res, width=args.res)
    if args.mode == "plain":
        run = lambda: generate(pipe, [SOURCE, TARGET], None, output_type="latent", **kw)  # noqa: E731
    elif args.mode in ("replace", "blend"):
        blend = p2p.LocalBlend(["cat", "dog"]) if args.mode == "blend" else None
        run = lambda: p2p.edit(pipe, SOURCE, [TARGET], p2p.Replace(local_blend=blend), output_type="latent", **kw)  # noqa: E731
    elif args.mode == "capture":
        run = lambda: capture(pipe, [SOURCE, TARGET], **kw)  # noqa: E731
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from p2p_oracle import OracleController

        def run():
            ctl = OracleController(p2p.Replace(), pipe.tokenizer, SOURCE, [TARGET], self_max_tokens=10**9)
            return generate(pipe, [SOURCE, TARGET], ctl, output_type="latent", **kw)

    run()  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": args.mode, "model": name, "device": str(pipe.device), "dtype": str(pipe.unet.dtype),
                      "time": statistics.median(times), "times": times, "cpu": statistics.median(cpu), "peak": peak,
                      "memory": "cuda max_memory_allocated" if cuda else "peak RSS (ru_maxrss)"}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder or hub id (default: the shipped toy model)")
    shape = ap.add_mutually_exclusive_group()
    shape.add_argument("--sd15-shape", action="store_true", help="SD-1.x-shaped UNet of random weights (for GPUs)")
    shape.add_argument("--sdxl-shape", action="store_true",
                       help="SDXL-shaped pipeline of random weights at 1024² (its native size), fp16; needs CUDA")
    ap.add_argument("--res", type=int, nargs="+", default=[None], help="image sizes (default: the model's own)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="worker processes per mode, alternating modes")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sdxl_shape and not torch.cuda.is_available():
        sys.exit("--sdxl-shape needs a CUDA GPU: SDXL's 2.6 B-parameter UNet at 1024² in fp16 (with 3.5 B parameters "
                 "to initialise) is a GPU measurement, and torch sees no CUDA device here. Run it on a GPU machine, "
                 "or use --sd15-shape / the toy model on this one.")
    if args.mode:
        args.res = args.res[0]
        return worker(args)

    print(f"machine: {platform.machine()} {platform.processor()}, {torch.get_num_threads()} torch threads, "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    for res in args.res:
        results = {m: [] for m in args.modes}
        for _ in range(args.rounds):
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
                       "--repeats", str(args.repeats)]
                for flag, value in (("--model", args.model), ("--device", args.device), ("--dtype", args.dtype),
                                    ("--res", res)):
                    if value is not None:
                        cmd += [flag, str(value)]
                if args.sd15_shape:
                    cmd.append("--sd15-shape")
                if args.sdxl_shape:
                    cmd.append("--sdxl-shape")
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"worker {mode} failed:\n{out.stderr[-3000:]}")
                results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        first = results[args.modes[0]][0]
        print(f"\n{first['model']} on {first['device']} ({first['dtype']}), {res or 'native'} px, source + 1 target, "
              f"guidance 7.5, {args.steps} DDIM steps, latent loop only; memory: {first['memory']}")
        base = results.get("plain")
        t0 = min(r["time"] for r in base) if base else None
        m0 = min(r["peak"] for r in base) if base else None
        c0 = min(r["cpu"] for r in base) if base else None
        print("time: median of repeats, best of rounds; cpu: process CPU time (steadier on a shared machine)")
        print(f"{'mode':<10}{'wall s':>9}{'x plain':>9}{'cpu s':>9}{'x plain':>9}{'peak MB':>10}{'x plain':>9}")
        for mode, rs in results.items():
            t, c, m = (min(r[key] for r in rs) for key in ("time", "cpu", "peak"))
            ratio = lambda x, x0: f"{x / x0:.3f}" if x0 else "-"  # noqa: E731
            print(f"{mode:<10}{t:>9.3f}{ratio(t, t0):>9}{c:>9.3f}{ratio(c, c0):>9}{m / 2**20:>10.1f}{ratio(m, m0):>9}")


if __name__ == "__main__":
    main()
