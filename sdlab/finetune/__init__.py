"""Finetuning a Stable Diffusion pipeline on captioned images, with a measured fidelity-vs-style tradeoff.

    from sdlab.finetune import FinetuneConfig, finetune
    result = finetune(FinetuneConfig(dataset="data/creatures", output="runs/creatures", max_steps=300,
                                     validate_every=50))
    sdlab.load_pipeline(result.output)   # the finetuned pipeline

The same from a shell: `sdlab finetune --dataset data/creatures --output runs/creatures ...`.
Figures of a run: `sdlab.finetune.plots` (progression, before/after, tradeoff).
"""

from .config import LORA_TARGETS, FinetuneConfig, FinetuneError
from .checkpoints import latest_checkpoint, list_checkpoints
from .train import FinetuneResult, finetune

__all__ = ["FinetuneConfig", "FinetuneError", "FinetuneResult", "LORA_TARGETS", "finetune", "latest_checkpoint",
           "list_checkpoints"]
