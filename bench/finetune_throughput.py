"""Finetuning throughput (images/s) and peak memory of `sdlab.finetune`, next to a bare training loop.

    python bench/finetune_throughput.py                 # CPU: the toy model at 64x64 (full UNet and LoRA)
    python bench/finetune_throughput.py --gpu           # GPU: an SD-1.x-shaped random pipeline at 512x512,
                                                        #      fp16/bf16, batch 1-8, +- gradient checkpointing, +- LoRA

Every configuration trains `--steps` optimizer steps through `sdlab.finetune.finetune` (data loading, VAE and
text encoding, UNet forward/backward, clipping, AdamW, all included; no validation, no checkpoints) and
reports the median images/s over the steps after `--skip` warm-up steps, and images per CPU-second (process
CPU time: on a machine shared with other jobs, the wall-clock rate drops but this one does not). "bare loop" rows run the same
per-step work in a minimal hand-written loop (no accelerate, no data pipeline, no checks): the floor that
any training script, diffusers' examples/text_to_image/train_text_to_image.py included, pays per step.
CPU rows run each configuration in a fresh process, so peak RSS is that configuration's own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def imagefolder(folder: Path, n: int = 64) -> Path:
    from sdlab.toyworld import render, sample_scenes

    if (folder / "metadata.jsonl").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for i, scene in enumerate(sample_scenes(n, 0, style="creature")):
            render(scene).save(folder / f"{i:03d}.png")
            f.write(json.dumps({"file_name": f"{i:03d}.png", "text": scene.caption}) + "\n")
    return folder


def toy_model(folder: Path) -> tuple[str, str]:
    """The shipped toy model if present, else a random pipeline of the same architecture (same speed)."""
    from sdlab.models import TOY_MODEL_DIR
    from sdlab.toymodel import TOY, build_pipeline

    if (TOY_MODEL_DIR / "model_index.json").is_file():
        return str(TOY_MODEL_DIR), "shipped toy model"
    if not (folder / "model_index.json").is_file():
        build_pipeline(TOY, seed=0).save_pretrained(folder)
    return str(folder), "toy architecture, random weights (shipped weights absent)"


def sd1_model(folder: Path) -> tuple[str, str]:
    """A Stable Diffusion 1.x-shaped pipeline with random weights (860M-parameter UNet, CLIP-L-sized text encoder)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdlab.toymodel import build_tokenizer
    from sdlab.toymodel.architecture import SCHEDULER_CONFIG

    if not (folder / "model_index.json").is_file():
        torch.manual_seed(0)
        tok = build_tokenizer()
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD 1.x layout
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=512,
                            scaling_factor=0.18215)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                            num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                            hidden_act="quick_gelu", bos_token_id=tok.bos_token_id,
                                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
        StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None,
                                feature_extractor=None, requires_safety_checker=False).save_pretrained(folder)
    return str(folder), "SD-1.x-shaped pipeline, random weights"


def run_finetune(model: str, data: str, out: str, case: dict, steps: int, skip: int) -> dict:
    from sdlab.finetune import FinetuneConfig, finetune
    from sdlab.finetune import train as train_mod

    cpu_times, step = [], train_mod._train_step

    def timed_step(*args, **kwargs):  # CPU seconds of each step: unaffected by other jobs on a shared machine
        t = time.process_time()
        loss = step(*args, **kwargs)
        cpu_times.append(time.process_time() - t)
        return loss

    train_mod._train_step = timed_step
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config = FinetuneConfig(model=model, dataset=data, output=out, max_steps=steps, batch_size=case["batch"],
                            lora_rank=case.get("lora", 0), gradient_checkpointing=case.get("gc", False),
                            mixed_precision=case.get("precision", "no"), resolution=case.get("resolution"),
                            learning_rate=1e-5, checkpoint_every=0, overwrite=True, progress=False)
    result = finetune(config)
    per_step = statistics.median(result.step_seconds[skip:])
    return {"images_s": case["batch"] / per_step, "step_s": per_step,
            "images_cpu_s": case["batch"] / statistics.median(cpu_times[skip:]), **_peak()}


def run_bare(model: str, data: str, case: dict, steps: int, skip: int) -> dict:
    """The minimal loop: encode, noise, predict, MSE, backward, clip, AdamW; on prepared tensors."""
    import numpy as np
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from PIL import Image

    from sdlab import load_pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(model, device=device, dtype=torch.float32)
    res = case.get("resolution") or pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = [json.loads(l) for l in (Path(data) / "metadata.jsonl").read_text().splitlines()]
    pix = torch.stack([torch.from_numpy(np.asarray(Image.open(Path(data) / r["file_name"]).convert("RGB")
                                                   .resize((res, res)), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                       for r in rows[: case["batch"]]]).to(device)
    ids = pipe.tokenizer([r["text"] for r in rows[: case["batch"]]], padding="max_length", truncation=True,
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    unet = pipe.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(case.get("precision", "no"))
    times, cpu_times = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None), torch.no_grad():
            lat = pipe.vae.encode(pix).latent_dist.sample() * pipe.vae.config.scaling_factor
            emb = pipe.text_encoder(ids)[0]
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (lat.shape[0],), device=device)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = F.mse_loss(unet(sched.add_noise(lat, noise, t), t, emb).sample.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    per_step = statistics.median(times[skip:])
    return {"images_s": case["batch"] / per_step, "step_s": per_step,
            "images_cpu_s": case["batch"] / statistics.median(cpu_times[skip:]), **_peak()}


def _peak() -> dict:
    if torch.cuda.is_available():
        return {"peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def one(spec: dict) -> dict:
    if spec["case"].get("bare"):
        return run_bare(spec["model"], spec["data"], spec["case"], spec["steps"], spec["skip"])
    return run_finetune(spec["model"], spec["data"], spec["out"], spec["case"], spec["steps"], spec["skip"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the SD-1.x-shaped GPU grid")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per configuration")
    ap.add_argument("--skip", type=int, default=3, help="warm-up steps left out of the median")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--precisions", default="bf16,fp16", help="GPU only")
    ap.add_argument("--resolution", type=int, default=None, help="override (GPU grid: 512)")
    ap.add_argument("--workdir", default=None, help="where models, data and runs go (default: a temp folder)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(json.loads(args.one))))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="sdlab-ftbench-"))
    data = str(imagefolder(work / "data"))
    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu needs a CUDA GPU")
        model, what = sd1_model(work / "sd1")
        steps, res = args.steps or 20, args.resolution or 512
        cases = [dict(batch=b, precision=p, gc=gc, lora=lora, resolution=res)
                 for p in args.precisions.split(",") for b in map(int, (args.batches or "1,2,4,8").split(","))
                 for lora in (0, 4) for gc in (False, True)]
        cases += [dict(batch=b, precision=args.precisions.split(",")[0], bare=True, resolution=res)
                  for b in map(int, (args.batches or "1,4").split(","))]
        device = torch.cuda.get_device_name()
    else:
        model, what = toy_model(work / "toy")
        steps = args.steps or 30
        bs = list(map(int, (args.batches or "1,8,32").split(",")))
        cases = [dict(batch=b, lora=lora) for b in bs for lora in (0, 4)]
        cases += [dict(batch=b, gc=True) for b in bs[-1:]] + [dict(batch=b, bare=True) for b in bs]
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
                 f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    print(f"model: {what}; device: {device}; torch {torch.__version__}; {steps} steps, median after {args.skip}")
    print(f"{'loop':<11} {'batch':>5} {'prec':>5} {'lora':>4} {'gc':>3} {'images/s':>9} {'s/step':>7} "
          f"{'img/CPU-s':>9} {'peak GB':>8}")
    for case in cases:
        spec = dict(model=model, data=data, out=str(work / "run"), case=case, steps=steps, skip=args.skip)
        if args.gpu:
            try:
                r = one(spec)
            except torch.OutOfMemoryError:
                r = {"images_s": float("nan"), "step_s": float("nan"), "images_cpu_s": float("nan"),
                     "peak_gb": float("nan")}
            torch.cuda.empty_cache()
        else:
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if not lines:
                print(proc.stderr[-2000:])
                continue
            r = json.loads(lines[-1][7:])
        peak = r.get("peak_gb", r.get("peak_rss_gb"))
        print(f"{'bare loop' if case.get('bare') else 'sdlab':<11} {case['batch']:>5} "
              f"{case.get('precision', 'fp32'):>5} {case.get('lora', 0):>4} {'y' if case.get('gc') else 'n':>3} "
              f"{r['images_s']:>9.1f} {r['step_s']:>7.3f} {r['images_cpu_s']:>9.1f} {peak:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
