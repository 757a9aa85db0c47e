"""`torch.compile` for a pipeline's UNet, with sdlab's controllers inside the compiled graph.

`compile_pipeline(pipe)` (also `sdlab.compile(pipe)`, and `compile=True` on `generate`, `capture` and `edit`)
replaces `pipe.unet` by `torch.compile(pipe.unet)`, once: later calls find it compiled and keep it. Every run on
a compiled UNet is *static* (`Run.static`): each controller installs its processors for the whole run and keeps
them active at every step (an uncontrolled step computes the same output through its tensors), and whatever
changes between steps (which windows are open, the edit's operands of the step) lives in tensors the controller
updates in place between UNet calls. The compiled graph then sees the same Python values at every step and in
every run of the same shape, so it compiles once and is reused: a new prompt, seed, edit window, weight or edit
kind (Replace, Refine and Reweight share one graph) recompiles nothing. What does compile a graph of its own:
another number of prompts or image size, another choice of layers (capture, an edit, an edit with LocalBlend or
another resolution, plain generation); dynamo keeps up to `torch._dynamo.config.recompile_limit` graphs of one
UNet and beyond that runs it eager. Running sums (capture maps, LocalBlend's mask) are tensors added to in place.

Before compiling, a probe compiles and runs a one-line function on the pipeline's device. If that fails (no C++
compiler for inductor on a CPU, no Triton on a GPU, a torch built without the compiler) `compile_pipeline`
warns with the reason and leaves the pipeline eager: a notebook that asks for compilation on a machine that
cannot compile runs slower, never crashes.

`mode="reduce-overhead"` adds CUDA graphs on a CUDA device; on a CPU inductor skips them and the mode compiles
as the default one. Running sums are inputs the graph mutates, which CUDA graph trees may decline to record (the
graph then runs compiled without CUDA graphs); the plain edits (Replace, Refine, Reweight without LocalBlend)
mutate nothing inside the UNet.
"""

from __future__ import annotations

import functools
import types
import warnings

import torch


class CompileUnavailable(UserWarning):
    """`torch.compile` cannot run on this machine; sdlab ran eager."""


def is_compiled(unet) -> bool:
    """Whether `unet` is compiled: `torch.compile(unet)` (an `OptimizedModule` around it) or `unet.compile()`."""
    return isinstance(unet, torch._dynamo.eval_frame.OptimizedModule) or (
        getattr(unet, "_compiled_call_impl", None) is not None
    )


def uncompiled(unet):
    """The module a `torch.compile`d `unet` wraps, or `unet` itself: processors are installed on it."""
    return unet._orig_mod if isinstance(unet, torch._dynamo.eval_frame.OptimizedModule) else unet


def _probe_fn(x):
    return torch.sin(x) * 2 + 1


@functools.lru_cache(maxsize=None)
def compile_problem(device_type: str, backend: str = "inductor") -> str | None:
    """None if `backend` compiles and runs a small function on `device_type`, else why not (one line).

    The probe is a fresh code object compiled without inductor's on-disk graph cache, so a cached result of an
    earlier machine or configuration cannot hide a missing compiler. Cached per process (`cache_clear()` to
    probe again)."""
    fn = types.FunctionType(_probe_fn.__code__.replace(), _probe_fn.__globals__, "sdlab_compile_probe")
    x = torch.linspace(0, 1, 8, device=device_type)
    try:
        with torch._inductor.config.patch(fx_graph_cache=False):
            got = torch.compile(fn, backend=backend, fullgraph=True)(x)
        torch.testing.assert_close(got, _probe_fn(x))
    except Exception as e:  # noqa: BLE001 - any failure means: do not compile here
        first = (str(e).strip().splitlines() or [""])[0]
        return f"{type(e).__name__}: {first}"[:300]
    return None


def compile_pipeline(pipe, mode: str | None = None, **options):
    """Compile `pipe.unet` with `torch.compile(unet, mode=mode, **options)` in place and return `pipe`.

    Idempotent: a UNet compiled before (by sdlab or by hand) is kept as it is. `options` go to `torch.compile`
    (`backend`, `fullgraph`, `dynamic`, ...). Where the probe fails (see the module docstring) it warns
    (`CompileUnavailable`) and returns `pipe` unchanged, to run eager."""
    if is_compiled(pipe.unet):
        return pipe
    backend = options.get("backend", "inductor")
    problem = compile_problem(pipe.device.type, backend) if isinstance(backend, str) else None
    if problem is not None:
        warnings.warn(
            f"torch.compile cannot run on this machine ({problem}); sdlab keeps the pipeline eager, which gives "
            "the same images, only slower. On a CPU, inductor needs a C++ compiler (g++ or clang++ on PATH, or CXX).",
            CompileUnavailable,
            stacklevel=2,
        )
        return pipe
    pipe.unet = torch.compile(pipe.unet, mode=mode, **options)
    return pipe
