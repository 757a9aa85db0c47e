"""`sdlab.cpu_memory`: glibc's thresholds are set through mallopt, and CPU training sets them
(finetune's wiring: tests/test_finetune.py)."""

import sys

import pytest

from sdlab import cpu_memory


class FakeLibc:
    def __init__(self):
        self.calls = []
        outer = self

        class Mallopt:
            argtypes = restype = None

            def __call__(self, param, value):
                outer.calls.append((param, value))
                return 1

        self.mallopt = Mallopt()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_sets_the_mmap_and_trim_thresholds(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda name: fake)
    assert cpu_memory.reuse_freed_memory() is True
    assert fake.calls == [(-3, cpu_memory.MMAP_THRESHOLD), (-1, cpu_memory.TRIM_THRESHOLD)]
    assert cpu_memory.MMAP_THRESHOLD <= 32 * 2**20  # glibc refuses larger values on 64-bit


def test_leaves_other_allocators_alone(monkeypatch):
    def no_glibc(name):
        raise OSError("libc.so.6: cannot open shared object file")

    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", no_glibc)
    assert cpu_memory.reuse_freed_memory() is False
    monkeypatch.setattr(cpu_memory.sys, "platform", "darwin")
    assert cpu_memory.reuse_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_real_glibc_accepts_the_values():
    assert cpu_memory.reuse_freed_memory() is True  # mallopt returns 0 for a value it refuses

