"""Model FLOPs, for model FLOPs utilisation (MFU) against the matmul peak that bench.machine measures."""

from collections.abc import Iterator, Sequence
from typing import Any


def matmul_weights(model: Any) -> Iterator[Any]:
    """Weights that multiply activations: every matrix but the embedding lookups, plus the LM head once
    (GPT-2 and SmolLM2 tie it to the token embedding). LoRA's adapter matrices count too."""
    from torch import nn

    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    yield from (p for p in model.parameters() if p.dim() >= 2 and id(p) not in lookups)
    head = model.get_output_embeddings().weight
    if id(head) in lookups:
        yield head


def matmul_params(model: Any) -> int:
    return sum(p.numel() for p in matmul_weights(model))


def matmul_params_by_training(model: Any) -> dict[str, int]:
    """The matmul weights of a model as it trains, split into those it updates and frozen ones (LoRA's base)."""
    split = {"trained": 0, "frozen": 0}
    for weight in matmul_weights(model):
        split["trained" if weight.requires_grad else "frozen"] += weight.numel()
    return split


def shape_of(model: Any) -> dict[str, int]:
    config = model.config
    return {"matmul_params": matmul_params(model), "layers": config.num_hidden_layers, "width": config.hidden_size}


def training_flops(shape: dict[str, int], record_lengths: Sequence[int], params: dict[str, int] | None = None) -> float:
    """Forward plus backward FLOPs for records trained separately (no attention across records), plus causal
    attention (QK^T and AV, half the square) times three.

    Per token, a trained weight costs 6 (forward, input gradient, weight gradient) and a frozen one 4 (no weight
    gradient): counting LoRA's frozen base at 6 made its MFU exceed 100% on a slow CPU. `params` is the trained
    and frozen split of the model as it ran (`matmul_params_by_training`); without it, every weight of `shape`
    is trained."""
    tokens = sum(record_lengths)
    if params is None:
        params = {"trained": shape["matmul_params"], "frozen": 0}
    attention = 6 * shape["layers"] * shape["width"] * sum(n * n for n in record_lengths)
    return (6 * params["trained"] + 4 * params["frozen"]) * tokens + attention
