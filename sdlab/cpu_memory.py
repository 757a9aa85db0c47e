"""Keeping freed memory in the process for training on the CPU (Linux, glibc).

glibc serves large allocations with mmap and returns them to the OS when freed, and adjusts that threshold
by itself from what a process has freed so far. A training step allocates and frees the same activation
buffers every step; when they fall above the threshold, each step maps fresh pages and faults them in again.
Measured on the 2-core CPU (BENCHMARKS.md): the toy UNet's forward at batch 8 took 65 ms instead of 47 ms
that way, and finetuning ran 16% below diffusers' training script, whose process did not run into it;
with the thresholds set, the two run at the same speed. Fixing the thresholds, as the
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ variables would at start-up, makes the buffers come back
from the heap. The cost: the process keeps its peak heap
instead of returning it to the OS, which a training process reaches again at the next step anyway.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20
"""Allocations below this come from the heap (glibc's largest allowed value on 64-bit)."""
TRIM_THRESHOLD = 2**30
"""Free heap kept before glibc gives memory back to the OS."""


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process; returns whether they were set (False off glibc).

    Process-wide and sticky; `finetune` calls it when it trains on the CPU. (`train-toy` does not: its
    batch-32 steps measured the same with and without, 0.514 s.)"""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave its allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
