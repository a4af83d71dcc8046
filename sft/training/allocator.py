"""Process-wide memory settings for training on a CPU: keep freed memory inside the process (glibc on Linux), so
each step does not fault it back in, and bound what oneDNN keeps of its compiled matmul kernels.

A training or decoding step allocates and frees the same large buffers (activations, logits, the
growing KV cache). glibc returns blocks above its mmap threshold (32 MB at most by default) to the
kernel on free, so the next step maps them again and takes a page fault for every 4 KB it touches.
Raising the mmap and trim thresholds keeps them in the heap for reuse. With SmolLM2-135M this took
training from 169 to 204 tokens/s for about 15% more peak memory. PyTorch has no switch for this on
CPU, hence the direct `mallopt` call.

PyTorch's bf16 matmuls on a CPU go through oneDNN, which compiles a kernel for every matrix shape and keeps the last
1024 of them. Padding-free batches change the token count, so every step brings about 40 new shapes that are not
seen again: on SmolLM2-135M with LoRA and bf16 autocast (2-core EPYC with AVX512-BF16), the kept kernels (about
0.3 MB each) and the heap holes around them took the process from 2.1 to 3.9 GB over the first 110 steps. One step
needs far fewer than 256 (the 30 layers share their shapes): with 256, no more kernels were compiled per step, and
the process levelled off at 3.3 GB over 150 steps. oneDNN reads its capacity from the environment when it compiles
its first kernel, so it is set there, before training starts.
"""

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGEST = 2**31 - 1  # mallopt takes a C int
OPT_OUT = "SFT_SYSTEM_MALLOC"  # set to any value to leave glibc's defaults alone
ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"  # a value the user sets is kept
ONEDNN_CACHE_ENTRIES = 256


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False where that is not possible or is opted out of."""
    if sys.platform != "linux" or os.environ.get(OPT_OUT):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt  # absent from musl and other C libraries
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, LARGEST) == 1 for option in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))


def cap_onednn_cache(entries: int = ONEDNN_CACHE_ENTRIES) -> str:
    """Bound oneDNN's kernel cache unless the environment already does; returns the capacity in force. Takes effect
    only before the process's first oneDNN kernel (the first bf16 matmul), as oneDNN reads it once."""
    return os.environ.setdefault(ONEDNN_CACHE, str(entries))
