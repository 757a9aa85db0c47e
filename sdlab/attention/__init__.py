"""Attention control through diffusers' processor API: capture maps, and the hooks prompt-to-prompt edits use.

`capture(pipe, prompt)` generates and returns averaged cross- and self-attention maps; `generate` is the one
denoising loop every capture and edit runs; `Controller` and `control` are the extension point;
`compile_pipeline` (`sdlab.compile`) compiles the UNet with the controllers inside the graph.
"""

from .capture import Capture, CaptureController, capture, default_level
from .compiling import CompileUnavailable, compile_pipeline, is_compiled
from .control import Controller, Run, StepTable, check_unet, control
from .pipelines import check_pipeline, check_tokenizers, is_sdxl
from .processor import ControlledProcessor, LayerInfo, describe_layers, probabilities, sdpa
from .run import Generation, generate, initial_latent

__all__ = [
    "Capture", "CaptureController", "CompileUnavailable", "ControlledProcessor", "Controller", "Generation",
    "LayerInfo", "Run", "StepTable", "capture", "check_pipeline", "check_tokenizers", "check_unet",
    "compile_pipeline", "control", "default_level", "describe_layers", "generate", "initial_latent", "is_compiled",
    "is_sdxl", "probabilities", "sdpa",
]
