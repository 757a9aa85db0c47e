"""A stand-in for the few `torchvision.transforms` that diffusers' text-to-image example imports.

Only for `bench/finetune_throughput.py --diffusers-script`: torchvision cannot be installed next to the CPU
build of torch here (its compiled ops do not load), and that example needs nothing from it but the PIL
transforms below, so the benchmark puts this folder on the example's PYTHONPATH. Never on sdlab's path.
"""

from . import transforms  # noqa: F401

__version__ = "0.0-sdlab-bench-shim"
