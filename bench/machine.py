"""The machine class a benchmark ran on: CPU model, cores, whether bf16 runs natively, measured matmul peaks.

Every result file and printed table names it, because the figures differ by class: on a CPU with AVX512-BF16
or AMX, bf16 autocast is native and sft trains under it; on an AVX2-only CPU bf16 is emulated (several times
slower than fp32) and sft trains in fp32. This module is the one place that decides which class a machine is.

`SFT_BENCH_ASSUME_NO_BF16=1` makes a bf16-capable machine report itself as the AVX2-only class, so that sft's
paths run as they would there (fp32) and the bounding of slow paths can be tried; the result files say that it
was forced, and the measured peaks stay the real ones. Capping oneDNN's instruction set goes further and makes
such a machine compute as the AVX2-only class does: with `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`
bf16 products are really emulated (the measured bf16 peak falls to a few GFLOP/s, so TRL's bf16 defaults crawl and
are bounded), sft trains in fp32 on its own, and the class line says the cap.
"""

import os
import time
from pathlib import Path
from typing import Any

FORCE_NO_BF16 = "SFT_BENCH_ASSUME_NO_BF16"
# Seconds each peak measurement may take at most: an emulated bf16 matmul can run at a few GFLOP/s.
PEAK_BUDGET_S = 4.0


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def forced_no_bf16() -> bool:
    return os.environ.get(FORCE_NO_BF16, "") not in ("", "0")


def bf16_native() -> bool:
    """Whether bf16 matmuls run on bf16 units (AVX512-BF16 or AMX): the flags, or torch's own checks, unless the
    class is forced off or oneDNN is capped below its bf16 kernels."""
    from sft.models.load import cpu_runs_bf16, onednn_caps_bf16

    if forced_no_bf16() or onednn_caps_bf16():
        return False
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return True
    return cpu_runs_bf16()


def matmul_peak_gflops(dtype: str, budget_s: float = PEAK_BUDGET_S) -> float:
    """Best rate of square `torch.matmul`s with torch's threads, in about `budget_s` seconds in all. The size grows
    from 256 while the next size's two products (eight times the work each) fit in the first half of the budget, up to
    4096 (fp32) or 2048 (bf16: faster there than at 4096 on bf16 units), so that an emulated dtype at a few GFLOP/s
    is measured in seconds rather than skipped or left to run for a minute; the rest of the budget repeats it."""
    import torch

    largest = 4096 if dtype == "float32" else 2048
    torch_dtype = getattr(torch, dtype)
    started = time.perf_counter()
    size = 256
    while True:
        a, b = (torch.randn(size, size, dtype=torch_dtype) for _ in range(2))
        torch.matmul(a, b)  # the first call at a size also warms the BLAS thread pool and oneDNN's kernel cache
        start = time.perf_counter()
        torch.matmul(a, b)
        best = time.perf_counter() - start
        if size >= largest or time.perf_counter() - started + 16 * best > budget_s / 2:
            break
        size *= 2
    for _ in range(4):
        if time.perf_counter() + best > started + budget_s:
            break
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def machine_class(peaks: dict[str, float] | None = None) -> dict[str, Any]:
    """The machine's class: `line` is what tables print. `peaks` (GFLOP/s by dtype) are measured when not given."""
    import torch

    from sft.models.load import onednn_caps_bf16, onednn_isa_cap

    flags = cpu_flags()
    native = bf16_native()
    if peaks is None:
        peaks = {dtype: matmul_peak_gflops(dtype) for dtype in ("float32", "bfloat16")}
    model = cpu_model()
    units = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")) if flag in flags]
    isa = ", ".join(units) if units else ("AVX2" if "avx2" in flags else "no AVX2")
    kind = "bf16 native" if native else "bf16 emulated (no bf16 units)"
    if forced_no_bf16():
        kind = f"treated as bf16 emulated ({FORCE_NO_BF16}=1)"
    elif onednn_caps_bf16():
        kind = f"bf16 emulated (oneDNN capped to {onednn_isa_cap()})"
    line = (
        f"{cores()}-core {model}, {isa}: {kind}; fp32 matmul peak {peaks['float32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16']:.0f} GFLOP/s"
    )
    return {
        "line": line,
        "cpu_model": model,
        "cores": cores(),
        "isa": isa,
        "bf16_native": native,
        "bf16_forced_off": forced_no_bf16(),
        "onednn_isa_cap": onednn_isa_cap(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
    }
