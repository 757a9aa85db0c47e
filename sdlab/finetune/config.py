"""What a finetuning run does: one dataclass, plain defaults, a docstring per field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The UNet attention projections LoRA adapts by default (as diffusers' LoRA examples do)."""
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
"""The text encoder's (CLIP) attention projections LoRA adapts when the text encoder trains."""

RESUMABLE_CHANGES = frozenset(
    {"max_steps", "checkpoint_every", "checkpoints_total_limit", "validate_every", "resume", "overwrite",
     "strict", "progress", "num_workers", "output", "stop_threshold"}
)
"""Fields that may differ between a run and its `--resume`: they do not change what one step computes."""


class FinetuneError(RuntimeError):
    """A finetuning run stopped on bad input or a failed step; the message says what to do."""


@dataclass
class FinetuneConfig:
    """Everything a finetuning run needs. `finetune(FinetuneConfig(dataset=..., output=...))` runs it."""

    dataset: object = None
    """A local imagefolder (images + `metadata.jsonl`), a hub dataset id, or a `datasets.Dataset`."""
    output: str | Path = None
    """Run folder: `checkpoints/`, `validation/`, `metrics.csv`, and at the end the finetuned pipeline itself."""
    model: str | Path | None = None
    """None = the shipped toy model; else a diffusers pipeline folder or a hub id."""
    image_column: str = "image"
    """Column holding the images."""
    caption_column: str = "text"
    """Column holding the captions."""
    resolution: int | None = None
    """Training image side in pixels; None = the model's native size (UNet sample size x VAE factor)."""
    center_crop: bool = True
    """Center crop after resizing the short side; False = a random crop."""
    random_flip: bool = False
    """Flip half of the images horizontally."""
    caption_dropout: float = 0.0
    """Share of captions replaced by "" (keeps classifier-free guidance working)."""
    max_steps: int = 1000
    """Optimizer steps to train for."""
    batch_size: int = 1
    """Images per process per micro-batch."""
    gradient_accumulation: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 1e-5
    """AdamW learning rate after warmup."""
    lr_schedule: str = "constant"
    """"constant" or "cosine" (to zero at `max_steps`), both after `warmup_steps` of linear warmup."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    adam_betas: tuple = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    lora_rank: int = 0
    """0 = train the full UNet; > 0 = LoRA adapters of this rank (fused into the UNet at the end)."""
    lora_alpha: float | None = None
    """LoRA scale numerator; None = `lora_rank`."""
    lora_targets: tuple = LORA_TARGETS
    """UNet module names LoRA adapts (the text encoder, when trained, gets `TEXT_LORA_TARGETS`)."""
    use_ema: bool = False
    """Keep an EMA of the trained weights (diffusers' EMAModel); validation and the output use it."""
    ema_decay: float = 0.9999
    """EMA decay cap (the decay warms up as (1 + step) / (10 + step))."""
    snr_gamma: float | None = None
    """Min-SNR loss weighting gamma (5.0 is the paper's value); None = plain MSE."""
    noise_offset: float = 0.0
    """Scale of a per-channel constant added to the noise (helps very dark / bright images)."""
    train_text_encoder: bool = False
    """Train the text encoder too (full or LoRA, like the UNet); otherwise it stays frozen."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""
    mixed_precision: str = "auto"
    """"auto" (bf16 on a GPU that has it, else fp16; "no" on CPU), "no", "fp16" or "bf16" (GPU only)."""
    cpu: bool = False
    """Train on the CPU even when a GPU is present."""
    seed: int = 0
    """Seeds data order, augmentation, noise, timesteps and LoRA init: the same seed gives the same weights."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every this many steps (0 = never)."""
    checkpoints_total_limit: int | None = 3
    """Keep at most this many checkpoints (oldest deleted first); None = keep all."""
    resume: str | None = None
    """None, "latest", or a checkpoint folder."""
    overwrite: bool = False
    """Replace an output folder that holds a different run."""
    strict: bool = False
    """Fail on an unreadable image instead of skipping it with a warning."""
    validate_every: int = 0
    """Sample the validation prompts at step 0, every this many steps and at the end (0 = never)."""
    validation_prompts: tuple | None = None
    """In-domain prompts; None = defaults for the model (toy-world prompts for the 64x64 toy model)."""
    probe_prompts: tuple | None = None
    """Out-of-domain probes (the report's "yoda"); None = defaults for the model: for the toy model, prompts for
    objects the data never shows that the base model draws right (`sdlab.finetune.probes`), else "yoda"."""
    validation_seed: int = 0
    """Sample k of every validation prompt starts from the noise of seed `validation_seed + k`."""
    validation_samples: int = 2
    """Images (seeds) per validation prompt: the curves average over prompts x seeds (4 toy probes x 2 seeds =
    8 pairs per point by default); the grids show the first seed."""
    validation_inference_steps: int = 25
    """DDIM steps per validation image."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale of the validation images."""
    metrics: str = "auto"
    """"auto" (toy-world evaluator when the prompts are toy-world captions, else CLIP if available), "toyworld",
    "clip" or "none"."""
    clip_model: str | None = None
    """CLIP weights (local folder or cached hub id) for real-data metrics; None = metrics.DEFAULT_CLIP."""
    stop_threshold: float = 0.85
    """The suggested stop (`sdlab.finetune.stop`): the last validated step whose probe fidelity trend (its
    non-increasing fit) keeps this share of the fidelity at step 0. In [0, 1]; it may be changed on `--resume` and
    after the run."""
    num_workers: int = 0
    """DataLoader worker processes."""
    progress: bool = True
    """Show a progress bar (loss, images/s)."""
    extra: dict = field(default_factory=dict)
    """Free-form notes stored with the run (not used by training)."""

    def check(self) -> None:
        """Raise a clear error on values that cannot work (before anything is loaded)."""
        if self.dataset is None:
            raise FinetuneError("no dataset: pass --dataset (a local imagefolder or a hub dataset id)")
        if self.output is None:
            raise FinetuneError("no output folder: pass --output")
        positive = ("max_steps", "batch_size", "gradient_accumulation", "validation_inference_steps",
                    "validation_samples")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise FinetuneError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("checkpoint_every", "validate_every", "warmup_steps", "lora_rank", "num_workers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise FinetuneError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise FinetuneError("checkpoints_total_limit must be >= 1 or None")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise FinetuneError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise FinetuneError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise FinetuneError(f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.metrics not in ("auto", "toyworld", "clip", "none"):
            raise FinetuneError(f"metrics must be auto, toyworld, clip or none, got {self.metrics!r}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise FinetuneError(f"snr_gamma must be > 0 (or None), got {self.snr_gamma}")
        check_threshold(self.stop_threshold)
        if self.metrics == "toyworld":
            from .probes import check_toy_probes

            check_toy_probes(tuple(self.validation_prompts or ()) + tuple(self.probe_prompts or ()))
        if not self.learning_rate > 0:
            raise FinetuneError(f"learning_rate must be > 0, got {self.learning_rate}")

    def to_json(self) -> dict:
        """The config as JSON-able values (a dataset object is recorded by its fingerprint)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dataset" and not isinstance(value, (str, Path)):
                value = f"<{type(value).__name__} {getattr(value, '_fingerprint', id(value))}>"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return json.loads(json.dumps(out, default=str))

    def differences(self, recorded: dict) -> list[str]:
        """Fields (other than `RESUMABLE_CHANGES`) where this config differs from a recorded `to_json()`."""
        mine = self.to_json()
        return [
            f"{k}: {recorded.get(k)!r} then, {mine[k]!r} now"
            for k in mine
            if k not in RESUMABLE_CHANGES and k != "extra" and recorded.get(k) != mine[k]
        ]


def check_threshold(threshold) -> float:
    """`threshold` as a float in [0, 1], or a clear error."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise FinetuneError(
            f"stop threshold must be a number in [0, 1] (the share of the probes' step-0 fidelity to keep, e.g. "
            f"0.85), got {threshold!r}")
    return float(threshold)


def config_from_json(data: dict) -> FinetuneConfig:
    """Rebuild a config from `to_json()` output (lists back to tuples)."""
    known = {f.name for f in fields(FinetuneConfig)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    return FinetuneConfig(**kwargs)


__all__ = ["FinetuneConfig", "FinetuneError", "LORA_TARGETS", "config_from_json"]
