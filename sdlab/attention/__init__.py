"""Attention control through diffusers' processor API: capture maps, and the hooks prompt-to-prompt edits use.

`capture(pipe, prompt)` generates and returns averaged cross- and self-attention maps; `generate` is the one
denoising loop every capture and edit runs; `Controller` and `control` are the extension point.
"""

from .capture import Capture, CaptureController, capture, default_level
from .control import Controller, Run, check_unet, control
from .pipelines import check_pipeline, check_tokenizers, is_sdxl
from .processor import ControlledProcessor, LayerInfo, describe_layers, probabilities, sdpa
from .run import Generation, generate, initial_latent

__all__ = [
    "Capture", "CaptureController", "ControlledProcessor", "Controller", "Generation", "LayerInfo", "Run",
    "capture", "check_pipeline", "check_tokenizers", "check_unet", "control", "default_level", "describe_layers",
    "generate", "initial_latent", "is_sdxl", "probabilities", "sdpa",
]
