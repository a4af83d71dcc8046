"""The glibc allocator settings that keep training buffers in the process between steps."""

import ctypes.util
import sys

import pytest

from sft.training.allocator import OPT_OUT, keep_freed_memory

GLIBC = sys.platform == "linux" and ctypes.util.find_library("c") is not None


@pytest.mark.skipif(not GLIBC, reason="mallopt is a glibc call")
def test_thresholds_are_raised_on_glibc(monkeypatch) -> None:
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert keep_freed_memory() is True


def test_opting_out_leaves_the_allocator_alone(monkeypatch) -> None:
    monkeypatch.setenv(OPT_OUT, "1")
    calls = []
    monkeypatch.setattr("ctypes.CDLL", lambda name: calls.append(name))
    assert keep_freed_memory() is False
    assert calls == []


def test_a_c_library_without_mallopt_is_tolerated(monkeypatch) -> None:
    monkeypatch.delenv(OPT_OUT, raising=False)

    class NoMallopt:
        def __init__(self, name: str) -> None:
            pass

    monkeypatch.setattr("ctypes.CDLL", NoMallopt)
    assert keep_freed_memory() is False  # no AttributeError escapes
