"""Attention control through diffusers' processor API: capture maps, and the hooks prompt-to-prompt edits use.

`capture(pipe, prompt)` generates and returns averaged cross- and self-attention maps; `generate` is the one
denoising loop every capture and edit runs; `Controller` and `control` are the extension point.
"""

from .capture import Capture, CaptureController, capture, default_level
from .control import Controller, Run, check_unet, control
from .processor import ControlledProcessor, LayerInfo, describe_layers, probabilities, sdpa
from .run import Generation, check_pipeline, generate, initial_latent

__all__ = [
    "Capture", "CaptureController", "ControlledProcessor", "Controller", "Generation", "LayerInfo", "Run",
    "capture", "check_pipeline", "check_unet", "control", "default_level", "describe_layers", "generate",
    "initial_latent", "probabilities", "sdpa",
]
