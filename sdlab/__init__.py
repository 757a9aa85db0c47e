"""sdlab: see how Stable Diffusion works and edit what it makes."""

import importlib

from .models import load_pipeline, pick_device

__version__ = "0.1.0"
__all__ = [
    "load_pipeline", "pick_device", "compile", "toyworld", "toymodel", "attention", "align", "p2p", "finetune", "viz",
]


def compile(pipe, mode=None, **options):  # noqa: A001 - sdlab.compile(pipe), as torch.compile(module)
    """Compile `pipe.unet` in place with `torch.compile` so captures and edits run compiled (see
    `sdlab.attention.compiling`); returns `pipe`. Warns and stays eager where torch cannot compile."""
    from .attention.compiling import compile_pipeline

    return compile_pipeline(pipe, mode, **options)


def __getattr__(name):  # lazy subpackages: `sdlab.p2p` works without importing everything up front
    if name in ("toyworld", "toymodel", "attention", "align", "p2p", "finetune", "viz"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sdlab' has no attribute {name!r}")
