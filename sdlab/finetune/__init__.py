"""Finetuning a Stable Diffusion pipeline on captioned images, with a measured fidelity-vs-style tradeoff and a
suggested point to stop.

    from sdlab.finetune import FinetuneConfig, finetune
    result = finetune(FinetuneConfig(dataset="data/creatures", output="runs/creatures", max_steps=300,
                                     validate_every=50))
    sdlab.load_pipeline(result.output)                 # the finetuned pipeline (last step)
    sdlab.load_pipeline(result.output / "suggested")   # the suggested stop (`sdlab.finetune.stop`)

The same from a shell: `sdlab finetune --dataset data/creatures --output runs/creatures ...`.
The toy world's narrow dataset and "yoda" probes: `sdlab.finetune.probes`. Figures of a run:
`sdlab.finetune.plots` (progression, before/after, tradeoff, the stop, runs compared).
"""

from .config import LORA_TARGETS, FinetuneConfig, FinetuneError
from .checkpoints import latest_checkpoint, list_checkpoints
from .stop import Suggestion, suggest_stop, write_suggestion
from .train import FinetuneResult, finetune

__all__ = ["FinetuneConfig", "FinetuneError", "FinetuneResult", "LORA_TARGETS", "Suggestion", "finetune",
           "latest_checkpoint", "list_checkpoints", "suggest_stop", "write_suggestion"]
