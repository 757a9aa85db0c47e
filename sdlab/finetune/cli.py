"""`sdlab finetune ...`: the command line of `sdlab.finetune.finetune`; every flag is a `FinetuneConfig` field.

Runs the same as `python -m sdlab finetune ...`, and on several processes as
`accelerate launch --num_processes N -m sdlab finetune ...` (GPUs) or, on a CPU-only machine,
`accelerate launch --multi_gpu --num_processes N -m sdlab finetune ...` or `torchrun --nproc-per-node N -m sdlab
finetune ...` (accelerate then trains on the CPU with the gloo backend).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from .config import FinetuneConfig, FinetuneError

FLAGS = {  # field -> (type, help); fields not listed here are Python-only
    "model": (str, "diffusers folder or hub id; omitted = the shipped toy model"),
    "dataset": (str, "local imagefolder (images + metadata.jsonl) or hub dataset id"),
    "output": (str, "run folder; becomes the finetuned pipeline"),
    "image_column": (str, "image column (default image)"),
    "caption_column": (str, "caption column (default text)"),
    "resolution": (int, "training resolution; default the model's native size"),
    "max_steps": (int, "optimizer steps"),
    "batch_size": (int, "images per process per micro-batch"),
    "gradient_accumulation": (int, "micro-batches per optimizer step"),
    "learning_rate": (float, "AdamW learning rate"),
    "lr_schedule": (str, "constant or cosine (after warmup)"),
    "warmup_steps": (int, "linear warmup steps"),
    "weight_decay": (float, "AdamW weight decay"),
    "max_grad_norm": (float, "gradient clipping norm"),
    "lora_rank": (int, "LoRA rank; 0 = full UNet"),
    "lora_alpha": (float, "LoRA alpha (default: the rank)"),
    "ema_decay": (float, "EMA decay cap"),
    "snr_gamma": (float, "min-SNR gamma (e.g. 5.0); default off"),
    "noise_offset": (float, "noise offset scale"),
    "caption_dropout": (float, "share of captions replaced by an empty one"),
    "mixed_precision": (str, "auto, no, fp16 or bf16 (GPU only)"),
    "seed": (int, "seed of everything random in training"),
    "checkpoint_every": (int, "checkpoint every K steps (0 = never)"),
    "checkpoints_total_limit": (int, "keep at most this many checkpoints"),
    "resume": (str, "latest or a checkpoint folder"),
    "validate_every": (int, "validate every V steps (0 = never)"),
    "validation_seed": (int, "seed of the first validation prompt"),
    "validation_samples": (int, "images (seeds) per validation prompt"),
    "validation_inference_steps": (int, "DDIM steps of validation images"),
    "guidance_scale": (float, "guidance scale of validation images"),
    "metrics": (str, "auto, toyworld, clip or none"),
    "clip_model": (str, "local CLIP weights for real-data metrics"),
    "stop_threshold": (float, "suggested stop: last step whose probe fidelity trend keeps this share of step 0's"),
    "num_workers": (int, "DataLoader workers"),
}
SWITCHES = {
    "use_ema": "keep an EMA of the weights (used for validation and output)",
    "train_text_encoder": "train the text encoder too",
    "gradient_checkpointing": "trade compute for memory",
    "random_flip": "flip half the images",
    "overwrite": "replace an output folder holding another run",
    "strict": "fail on an unreadable image instead of skipping it",
    "cpu": "train on CPU even if a GPU is present",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdlab finetune", description=__doc__.splitlines()[0])
    defaults = {f.name: (f.default if f.default is not MISSING else None) for f in fields(FinetuneConfig)}
    for name, (typ, text) in FLAGS.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=typ, default=defaults[name], help=f"{text} (default: {defaults[name]})")
    for name, text in SWITCHES.items():
        p.add_argument("--" + name.replace("_", "-"), action="store_true", help=text)
    p.add_argument("--random-crop", action="store_true", help="random instead of center crop")
    p.add_argument("--prompt", action="append", dest="validation_prompts", help="validation prompt (repeatable)")
    p.add_argument("--probe", action="append", dest="probe_prompts", help="out-of-domain probe prompt (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--suggest-only", action="store_true",
                   help="train nothing: apply the stop rule to the run in --output (with --stop-threshold if given), "
                        "export its suggested checkpoint to OUTPUT/suggested and print the table")
    return p


def _suggest_only(argv) -> int:
    from .stop import read_run, report, write_suggestion

    p = argparse.ArgumentParser(prog="sdlab finetune --suggest-only")
    p.add_argument("--suggest-only", action="store_true")
    p.add_argument("--output", required=True, help="the run folder")
    p.add_argument("--stop-threshold", type=float, default=None, help="default: the run's own")
    args = p.parse_args(argv)
    suggestion = write_suggestion(args.output, args.stop_threshold)
    print("sdlab finetune: " + report(args.output, suggestion, read_run(args.output)[1]))
    return 0


def config_from_args(argv) -> FinetuneConfig:
    args = vars(parser().parse_args(argv))
    kwargs = {k: v for k, v in args.items() if k in FLAGS or k in SWITCHES}
    for key in ("validation_prompts", "probe_prompts"):
        if args[key]:
            kwargs[key] = tuple(args[key])
    kwargs["center_crop"] = not args["random_crop"]
    kwargs["progress"] = not args["no_progress"]
    return FinetuneConfig(**kwargs)


def main(argv=None) -> int:
    from .train import finetune

    argv = sys.argv[1:] if argv is None else argv
    try:
        if "--suggest-only" in argv:
            return _suggest_only(argv)
        finetune(config_from_args(argv))
    except (FinetuneError, OSError) as e:  # bad input, missing model or data: a message, not a traceback
        print(f"sdlab finetune: error: {e}", file=sys.stderr)
        return 1
    return 0
