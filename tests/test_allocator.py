"""The glibc allocator settings that keep training buffers in the process between steps, and the bound on oneDNN's
kernel cache."""

import ctypes.util
import os
import subprocess
import sys
import textwrap

import pytest

from sft.training.allocator import ONEDNN_CACHE, ONEDNN_CACHE_ENTRIES, OPT_OUT, cap_onednn_cache, keep_freed_memory

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


def test_onednn_cache_is_capped_unless_the_user_chose(monkeypatch) -> None:
    monkeypatch.setenv(ONEDNN_CACHE, "")  # so that the value set below is undone with it
    monkeypatch.delenv(ONEDNN_CACHE)
    assert cap_onednn_cache() == str(ONEDNN_CACHE_ENTRIES) == os.environ[ONEDNN_CACHE]
    monkeypatch.setenv(ONEDNN_CACHE, "2048")
    assert cap_onednn_cache() == "2048"


# Ten shapes, twice: a cache of 1024 compiles each once; one of 4, set after torch is imported and before the first
# kernel, has evicted each by the time it comes back.
CACHE_PROBE = textwrap.dedent(
    """
    import sys, torch
    from sft.training.allocator import cap_onednn_cache
    if sys.argv[1] != "default":
        cap_onednn_cache(int(sys.argv[1]))
    w = torch.randn(64, 64, dtype=torch.bfloat16)
    for _ in range(2):
        for rows in range(10, 20):
            torch.mm(torch.randn(rows, 64, dtype=torch.bfloat16), w)
    """
)


def compiled_kernels(capacity: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_CACHE} | {"ONEDNN_VERBOSE": "profile_create"}
    run = subprocess.run(
        [sys.executable, "-c", CACHE_PROBE, capacity], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return run.stdout.count("create:cache_miss")


def test_the_cap_reaches_onednn() -> None:
    default = compiled_kernels("default")
    if default == 0:
        pytest.skip("this CPU's bf16 matmuls do not go through oneDNN")
    assert default == 10
    assert compiled_kernels("4") == 20
