"""Finetuning throughput (images/s) and peak memory of `sdlab.finetune`, next to a bare training loop.

    python bench/finetune_throughput.py                 # CPU: the toy model at 64x64 (full UNet and LoRA)
    python bench/finetune_throughput.py --gpu           # GPU: an SD-1.x-shaped random pipeline at 512x512,
                                                        #      fp16/bf16, batch 1-8, +- gradient checkpointing, +- LoRA
    python bench/finetune_throughput.py --diffusers-script PATH/train_text_to_image.py
                                        # also run diffusers' examples/text_to_image script, same model, data, settings

Every configuration trains `--steps` optimizer steps through `sdlab.finetune.finetune` (data loading, VAE and
text encoding, UNet forward/backward, clipping, AdamW, all included; no validation, no checkpoints). Every loop
is timed the same way, from outside: the wall-clock and process-CPU time between consecutive AdamW steps (one
whole training iteration each), median after `--skip` warm-up steps; images per CPU-second do not drop when
other jobs share the machine. "bare loop" rows run the same per-step work in a minimal hand-written loop (no
accelerate, no data pipeline, no checks). "diffusers" rows run diffusers' own
examples/text_to_image/train_text_to_image.py (`--diffusers-script`, a file of a diffusers checkout) on the
same model folder, imagefolder and settings (resolution, center crop, batch, learning rate, constant schedule,
clipping, precision, gradient checkpointing); it imports torchvision only for five PIL transforms, so where
torchvision cannot be installed (this repo's CPU machines) `bench/torchvision_shim` stands in for them.
CPU rows run each configuration in a fresh process, so peak RSS is that configuration's own.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import runpy
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
    """A float32 copy of the shipped toy model (stored as float16; a script that loads it with plain
    `from_pretrained` must train float32 too), else a random pipeline of the same architecture (same speed)."""
    from sdlab.models import TOY_MODEL_DIR, load_pipeline
    from sdlab.toymodel import TOY, build_pipeline

    shipped = (TOY_MODEL_DIR / "model_index.json").is_file()
    if not (folder / "model_index.json").is_file():
        pipe = load_pipeline(TOY_MODEL_DIR, device="cpu", dtype=torch.float32) if shipped else build_pipeline(TOY, seed=0)
        pipe.save_pretrained(folder)
    return str(folder), "shipped toy model (float32 copy)" if shipped else "toy architecture, random weights"


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


class StepClock:
    """Wall-clock and process-CPU times of every `torch.optim.AdamW.step` call, taken from outside the loop
    (the class method is wrapped while the context is open), so any training script is timed the same way."""

    def __enter__(self):
        self.wall, self.cpu, self._original = [], [], torch.optim.AdamW.step
        original, clock = self._original, self

        @functools.wraps(original)
        def step(optimizer, *args, **kwargs):
            out = original(optimizer, *args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            clock.wall.append(time.perf_counter())
            clock.cpu.append(time.process_time())
            return out

        torch.optim.AdamW.step = step
        return self

    def __exit__(self, *exc):
        torch.optim.AdamW.step = self._original

    def rates(self, batch: int, skip: int) -> dict:
        """Median images/s (wall and CPU) over the iterations after the first `skip`."""
        wall = [b - a for a, b in zip(self.wall, self.wall[1:])][skip:]
        cpu = [b - a for a, b in zip(self.cpu, self.cpu[1:])][skip:]
        if not wall:
            raise RuntimeError(f"only {len(self.wall)} optimizer steps were timed: raise --steps above --skip + 1")
        return {"images_s": batch / statistics.median(wall), "step_s": statistics.median(wall),
                "images_cpu_s": batch / statistics.median(cpu)}


def run_finetune(model: str, data: str, out: str, case: dict, steps: int, skip: int) -> dict:
    from sdlab.finetune import FinetuneConfig, finetune

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config = FinetuneConfig(model=model, dataset=data, output=out, max_steps=steps, batch_size=case["batch"],
                            lora_rank=case.get("lora", 0), gradient_checkpointing=case.get("gc", False),
                            mixed_precision=case.get("precision", "no"), resolution=case.get("resolution"),
                            learning_rate=1e-5, checkpoint_every=0, overwrite=True, progress=False)
    with StepClock() as clock:
        finetune(config)
    return {**clock.rates(case["batch"], skip), **_peak()}


def run_diffusers(script: str, model: str, data: str, out: str, case: dict, steps: int, skip: int) -> dict:
    """diffusers' examples/text_to_image/train_text_to_image.py, run in this process with the case's settings."""
    if not Path(script).is_file():
        raise FileNotFoundError(f"--diffusers-script {script} is not a file: give the path of "
                                "examples/text_to_image/train_text_to_image.py in a diffusers checkout")
    from sdlab import load_pipeline

    # everything that probes for torchvision is imported (and finds it missing) before the shim is on the path
    res = case.get("resolution") or (lambda p: p.unet.config.sample_size * p.vae_scale_factor)(
        load_pipeline(model, device="cpu"))
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or installed but its compiled ops do not load next to this torch
        sys.modules.pop("torchvision", None)
        sys.path.insert(0, str(Path(__file__).resolve().parent / "torchvision_shim"))
    sys.argv = [script, "--pretrained_model_name_or_path", model, "--train_data_dir", data, "--output_dir", out,
                "--resolution", str(res), "--center_crop", "--train_batch_size", str(case["batch"]),
                "--max_train_steps", str(steps), "--learning_rate", "1e-5", "--lr_scheduler", "constant",
                "--lr_warmup_steps", "0", "--max_grad_norm", "1.0", "--seed", "0", "--checkpointing_steps", "1000000",
                "--mixed_precision", case.get("precision", "no")]
    sys.argv += ["--gradient_checkpointing"] if case.get("gc") else []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with StepClock() as clock:
        runpy.run_path(script, run_name="__main__")
    return {**clock.rates(case["batch"], skip), **_peak()}


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
    with StepClock() as clock:
        for _ in range(steps):
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
    return {**clock.rates(case["batch"], skip), **_peak()}


def _peak() -> dict:
    if torch.cuda.is_available():
        return {"peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def one(spec: dict) -> dict:
    if spec["case"].get("bare"):
        return run_bare(spec["model"], spec["data"], spec["case"], spec["steps"], spec["skip"])
    if spec["case"].get("diffusers"):
        return run_diffusers(spec["case"]["diffusers"], spec["model"], spec["data"], spec["out"], spec["case"],
                             spec["steps"], spec["skip"])
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
    ap.add_argument("--diffusers-script", default=None,
                    help="diffusers' examples/text_to_image/train_text_to_image.py: adds its rows (full UNet)")
    ap.add_argument("--only", default=None, help="comma-separated loops to run: sdlab, bare, diffusers")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the whole grid this many times, round-robin, and report each configuration's median")
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
        if args.diffusers_script:
            cases += [dict(batch=b, precision=p, gc=gc, resolution=res, diffusers=args.diffusers_script)
                      for p in args.precisions.split(",") for b in map(int, (args.batches or "1,2,4,8").split(","))
                      for gc in (False, True)]
        device = torch.cuda.get_device_name()
    else:
        model, what = toy_model(work / "toy")
        steps = args.steps or 30
        bs = list(map(int, (args.batches or "1,8,32").split(",")))
        cases = [dict(batch=b, lora=lora) for b in bs for lora in (0, 4)]
        cases += [dict(batch=b, gc=True) for b in bs[-1:]] + [dict(batch=b, bare=True) for b in bs]
        if args.diffusers_script:
            cases += [dict(batch=b, diffusers=args.diffusers_script) for b in bs]
            cases += [dict(batch=b, gc=True, diffusers=args.diffusers_script) for b in bs[-1:]]
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
                 f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    print(f"model: {what}; device: {device}; torch {torch.__version__}; {steps} steps, median after {args.skip}"
          + (f"; median of {args.repeats} round-robin runs" if args.repeats > 1 else ""))
    print(f"{'loop':<11} {'batch':>5} {'prec':>5} {'lora':>4} {'gc':>3} {'images/s':>9} {'s/step':>7} "
          f"{'img/CPU-s':>9} {'peak GB':>8}")
    loop = lambda case: "bare" if case.get("bare") else "diffusers" if case.get("diffusers") else "sdlab"  # noqa: E731
    if args.only:
        cases = [c for c in cases if loop(c) in args.only.split(",")]
    runs = {i: [] for i in range(len(cases))}
    for round_ in range(args.repeats):  # round-robin: slow drifts of the machine hit every loop alike
        for i, case in enumerate(cases):
            spec = dict(model=model, data=data, out=str(work / "run"), case=case, steps=steps, skip=args.skip)
            r = run_case(spec, in_process=args.gpu and not case.get("diffusers"))
            if r is not None:
                runs[i].append(r)
                if args.repeats > 1:
                    print(f"  round {round_ + 1}: {loop(case)} batch {case['batch']}: {r['images_s']:.1f} images/s",
                          file=sys.stderr, flush=True)
    for i, case in enumerate(cases):
        if not runs[i]:
            continue
        r = {k: statistics.median(x[k] for x in runs[i]) for k in runs[i][0]}
        peak = r.get("peak_gb", r.get("peak_rss_gb"))
        print(f"{loop(case):<11} {case['batch']:>5} "
              f"{case.get('precision', 'fp32'):>5} {case.get('lora', 0):>4} {'y' if case.get('gc') else 'n':>3} "
              f"{r['images_s']:>9.1f} {r['step_s']:>7.3f} {r['images_cpu_s']:>9.1f} {peak:>8.2f}", flush=True)


def run_case(spec: dict, in_process: bool) -> dict | None:
    """One configuration's numbers: in this process (GPU) or in a fresh one (CPU, and any diffusers run)."""
    if in_process:
        try:
            return one(spec)
        except torch.OutOfMemoryError:
            return {"images_s": float("nan"), "step_s": float("nan"), "images_cpu_s": float("nan"),
                    "peak_gb": float("nan")}
        finally:
            torch.cuda.empty_cache()
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        print(proc.stderr[-2000:])
        return None
    return json.loads(lines[-1][7:])

if __name__ == "__main__":
    main()
