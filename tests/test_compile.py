"""Edits and captures on a compiled UNet (`sdlab.compile`, `compile=True`): same images as eager, one graph
without breaks, no recompilation for new prompts, and a warning plus the eager path where torch cannot compile.

Runs torch.compile's default mode with the inductor backend on the CPU, on the tiny pipeline, with few steps;
one compiled pipeline serves the module, since its graph is what costs: on the 2-core Xeon shared with a training
job the file took 4 min with an empty inductor cache and 1 min with a warm one (`/tmp/torchinductor_$USER`).
`mode="reduce-overhead"` (CUDA graphs) is not exercised: on a CPU inductor skips CUDA graphs, so that mode would
test nothing the default one does not; measure it on a GPU with `bench/compile_speed.py --device cuda`.
"""

import pytest
import torch
import torch._dynamo
from diffusers import StableDiffusionPipeline
from p2p_oracle import sharpen
from torch._dynamo.utils import counters

import sdlab
from sdlab import p2p
from sdlab.attention import CompileUnavailable, capture, compiling, generate, is_compiled
from sdlab.p2p import LocalBlend, Refine, Replace, Reweight
from sdlab.toymodel import TINY, build_pipeline

STEPS = 5
TOL = dict(rtol=1e-4, atol=1e-4)
SOURCE, TARGET = "a red cat on grass", "a red dog on grass"
FIRST = Replace(  # windows open and close mid-run: cross, a word's own, self-attention, LocalBlend
    cross_steps={"default_": 0.8, "dog": (0.2, 0.6)}, self_steps=(0.2, 0.6),
    local_blend=LocalBlend(["cat", "dog"], start=0.4),
)
SECOND = ("a blue fish at night", "a blue striped fish at night",  # new prompts and edit kind, same shapes
          Reweight({"striped": 3.0}, base=Refine(self_steps=0.6, local_blend=LocalBlend(["fish"], start=0.2))))


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def pipes():
    """(compiled, eager): two pipelines on the same modules, one with `pipe.unet` compiled."""
    torch._dynamo.reset()
    problem = compiling.compile_problem("cpu", "inductor")  # probed as sdlab.compile does, not counted below
    assert problem is None, f"this machine cannot run torch.compile, so these tests cannot: {problem}"
    counters.clear()
    pipe = build_pipeline(TINY, seed=0)
    sharpen(pipe.unet, 3.0)  # peaked attention: an edit moves the output by several percent
    pipe.set_progress_bar_config(disable=True)
    eager = StableDiffusionPipeline(**pipe.components)
    eager.set_progress_bar_config(disable=True)
    return pipe, eager


def run_edit(pipe, source, target, edit, **kw):
    res = p2p.edit(pipe, source, [target], edit, seed=3, steps=STEPS, output_type="latent", **kw)
    return torch.stack(res.images)


@pytest.fixture(scope="module")
def first(pipes):
    """The first compiled edit, with the graphs it compiled and the graph breaks dynamo counted."""
    pipe, eager = pipes
    out = run_edit(pipe, SOURCE, TARGET, FIRST, compile=True)
    return out, graphs(), dict(counters["graph_break"])


def test_compiled_edit_matches_eager(pipes, first):
    pipe, eager = pipes
    assert is_compiled(pipe.unet) and not is_compiled(eager.unet)
    fast, slow = first[0], run_edit(eager, SOURCE, TARGET, FIRST)
    torch.testing.assert_close(fast, slow, **TOL)
    plain = torch.stack(generate(eager, [SOURCE, TARGET], seed=3, steps=STEPS, output_type="latent").images)
    assert (plain[1] - slow[1]).norm() > 0.05 * plain[1].norm()  # the edit changed the target: parity means something


def test_one_graph_without_breaks(first):
    _, compiled, breaks = first
    assert breaks == {}, f"graph breaks in the compiled UNet: {breaks}"
    assert compiled == 1  # the whole UNet, every controlled layer inside it, one graph for every step


def test_new_prompts_do_not_recompile(pipes, first):
    pipe, eager = pipes
    before = graphs()
    source, target, edit = SECOND
    fast = run_edit(pipe, source, target, edit, compile=True)  # compile=True again: the UNet is kept
    assert graphs() == before, "a second edit with new prompts recompiled the UNet"
    torch.testing.assert_close(fast, run_edit(eager, source, target, edit), **TOL)


def test_compiled_capture_matches_eager(pipes):
    """Capture's graph runs through dynamo's "eager" backend: the trace, its guards and its breaks without
    inductor's C++ (this file's time); inductor's numerics are checked on the edits above."""
    _, eager = pipes
    pipe = StableDiffusionPipeline(**eager.components)
    pipe.set_progress_bar_config(disable=True)
    sdlab.compile(pipe, backend="eager")
    kw = dict(seed=1, steps=3)
    fast = capture(pipe, ["a red cat on grass"], **kw)
    torch.testing.assert_close(fast.cross, capture(eager, ["a red cat on grass"], **kw).cross, **TOL)
    before = graphs()
    fast = capture(pipe, ["a blue dog at night"], **kw)
    assert graphs() == before, "a second capture with a new prompt recompiled the UNet"
    slow = capture(eager, ["a blue dog at night"], **kw)
    torch.testing.assert_close(fast.cross, slow.cross, **TOL)
    torch.testing.assert_close(fast.self_maps, slow.self_maps, **TOL)


@pytest.fixture
def probe_again():
    """Forget the cached probe before and after the test, so a simulated failure stays inside it."""
    compiling.compile_problem.cache_clear()
    yield
    compiling.compile_problem.cache_clear()


def no_compiler(monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "/nonexistent/sdlab-test-g++"))


def compile_raises(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("this torch was built without its compiler")

    monkeypatch.setattr(torch, "compile", broken)


@pytest.mark.parametrize("breakage", [no_compiler, compile_raises], ids=lambda f: f.__name__)
def test_cannot_compile_warns_and_runs_eager(probe_again, monkeypatch, breakage):
    breakage(monkeypatch)
    pipe = build_pipeline(TINY, seed=0)
    pipe.set_progress_bar_config(disable=True)
    unet = pipe.unet
    edit = Replace(self_steps=0.4)
    with pytest.warns(CompileUnavailable, match="cannot run on this machine .*eager"):
        fast = run_edit(pipe, SOURCE, TARGET, edit, compile=True)
    assert pipe.unet is unet and not is_compiled(pipe.unet)
    assert torch.equal(fast, run_edit(pipe, SOURCE, TARGET, edit))  # the eager path, exactly
    with pytest.warns(CompileUnavailable):
        assert sdlab.compile(pipe) is pipe
    assert pipe.unet is unet
