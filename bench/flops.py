"""Model FLOPs, for model FLOPs utilisation (MFU) against the matmul peak that bench.machine measures."""

from collections.abc import Sequence
from typing import Any


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
