"""Model FLOPs and this machine's matmul peak, for model FLOPs utilisation (MFU)."""

import time
from collections.abc import Sequence
from typing import Any

# bf16 at 2048: here it runs faster than at 4096, and a CPU that emulates bf16 gets through it in seconds.
PEAK_SIZES = {"float32": 4096, "bfloat16": 2048}
PEAK_REPEATS = 5


def matmul_peak_gflops(dtype: str = "float32", size: int | None = None, repeats: int = PEAK_REPEATS) -> float:
    """Best `torch.matmul` rate on two large square matrices, with torch's default thread count."""
    import torch

    size = size or PEAK_SIZES[dtype]
    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    torch.matmul(a, b)  # first call allocates and warms the BLAS thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def matmul_params(model: Any) -> int:
    """Weights that multiply activations: every matrix but the embedding lookups, plus the LM head once
    (GPT-2 and SmolLM2 tie it to the token embedding)."""
    from torch import nn

    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2 and id(p) not in lookups)
    head = model.get_output_embeddings().weight
    return total + (head.numel() if id(head) in lookups else 0)


def shape_of(model: Any) -> dict[str, int]:
    config = model.config
    return {"matmul_params": matmul_params(model), "layers": config.num_hidden_layers, "width": config.hidden_size}


def training_flops(shape: dict[str, int], record_lengths: Sequence[int]) -> float:
    """Forward plus backward FLOPs for records trained separately (no attention across records):
    6 per weight per token, plus causal attention (QK^T and AV, half the square) times three."""
    tokens = sum(record_lengths)
    attention = 6 * shape["layers"] * shape["width"] * sum(n * n for n in record_lengths)
    return 6 * shape["matmul_params"] * tokens + attention
