"""Attention for padding-free batches, computed record by record: the same function as Transformers' `sdpa` path,
without the work between records.

A padding-free batch is one row of concatenated records. Transformers' `sdpa` path gives it a block-diagonal
causal mask and runs attention over the whole row, T x T for T tokens, although a record attends only to its own
earlier tokens; the varlen kernels that skip the rest (flash-attn) need CUDA. On a CPU, attention was a quarter of a
training step on SmolLM2-135M with the seed data (eight records of about 55 tokens a step), most of it in the
backward pass of the masked kernel. Here the row is scattered into a padded batch, one record a row, attention is
computed by batched matmuls under a causal mask that also hides the padding, and the result is gathered back: the
work is records x longest record squared instead of T squared, and the backward pass is that of plain matmuls.
Everything else (a KV cache, one token at a time, a padded batch, sliding windows, sinks, soft-capping, scores past
`MAX_SCORES`) takes the `sdpa` path unchanged.
"""

import weakref
from typing import Any

# The name the model's config is given while it trains with padding-free batches; never saved with the model.
NAME = "sft_packed"
# Transformers' attention (and its mask) that this one stands in for, and falls back to.
FALLBACK = "sdpa"
# Scores of one layer (records x heads x longest record squared) above which the padded batch would hold more than
# the packed kernel saves: the `sdpa` path keeps memory linear in the record length.
MAX_SCORES = 2**24


def use_packed_attention(model: Any) -> bool:
    """Switch `model` from `sdpa` to the record-by-record attention for padding-free training; returns whether it
    switched. Any other implementation a user chose (eager, flash-attn, flex) stays."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != FALLBACK:
        return False
    if not getattr(model, "_supports_attention_backend", False):
        return False  # models whose attention does not go through Transformers' attention interface
    register()
    config._attn_implementation = NAME
    return True


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, packed_attention_forward)
    # Masks as `sdpa` builds them, for the calls that fall back to it.
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def packed_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Transformers' attention-function signature: query [1, heads, T, head_dim], key and value [1, kv_heads, T,
    head_dim]; returns [1, T, heads, head_dim]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    records = record_layout(query, key, kwargs) if plain_causal(module, kwargs) else None
    if records is None or records.scores(query.shape[1]) > MAX_SCORES:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    return records_attention(query, key, value, records, scaling, dropout if module.training else 0.0), None


def plain_causal(module: Any, kwargs: dict[str, Any]) -> bool:
    """Causal self-attention with nothing added to the scores."""
    if not getattr(module, "is_causal", False) or kwargs.get("is_causal") is False:
        return False
    extras = ("sliding_window", "softcap", "s_aux", "position_bias")
    return all(kwargs.get(name) is None for name in extras)


class RecordLayout:
    """Where each token of a packed row goes in a padded batch of its records."""

    def __init__(self, starts: list[int], total: int, device: Any) -> None:
        import torch

        lengths = [end - start for start, end in zip(starts, [*starts[1:], total])]
        self.count, self.longest = len(lengths), max(lengths)
        # Token t of record r goes to row r, column t - start[r]; flattened, r * longest + (t - start[r]).
        record = torch.repeat_interleave(torch.arange(self.count), torch.tensor(lengths))
        column = torch.arange(total) - torch.tensor(starts)[record]
        self.slots = (record * self.longest + column).to(device)
        # A query sees keys at or before it that belong to its record; padded queries see their record's keys too,
        # so that no row is all -inf (their outputs are dropped).
        positions = torch.arange(self.longest)
        causal = positions[:, None] >= positions[None, :]
        real_key = positions[None, :] < torch.tensor(lengths)[:, None]
        self.visible = (causal[None] & real_key[:, None, :]).to(device)  # [records, longest, longest]

    def scores(self, heads: int) -> int:
        return self.count * heads * self.longest**2


# The layout of the last packed row seen: every layer of a forward pass gets the same boundaries.
_LAST_LAYOUT: dict[str, Any] = {}


def record_layout(query: Any, key: Any, kwargs: dict[str, Any]) -> RecordLayout | None:
    """The records of a packed row (several records, no cache), from the collator's cumulative lengths or the
    position ids (a record starts where the position does not follow the previous one); None otherwise."""
    total = query.shape[2]
    if query.shape[0] != 1 or key.shape[2] != total or total < 2:
        return None
    boundaries = kwargs.get("cu_seq_lens_q")
    source = boundaries if boundaries is not None else kwargs.get("position_ids")
    if source is None:
        return None
    ref = _LAST_LAYOUT.get("ref")
    if ref is not None and ref() is source and _LAST_LAYOUT["key"] == (source._version, total):
        return _LAST_LAYOUT["layout"]
    if boundaries is not None:
        starts = [int(b) for b in boundaries.tolist()]
        if len(starts) < 2 or starts[0] != 0 or starts[-1] != total:
            return None
        starts = starts[:-1]
    else:
        positions = source.reshape(-1)
        if positions.numel() != total:
            return None
        follows = positions[1:] == positions[:-1] + 1
        starts = [0, *(1 + (~follows).nonzero().flatten()).tolist()]
    layout = RecordLayout(starts, total, query.device) if len(starts) > 1 else None
    _LAST_LAYOUT.update(ref=weakref.ref(source), key=(source._version, total), layout=layout)
    return layout


def records_attention(
    query: Any, key: Any, value: Any, records: RecordLayout, scaling: float | None, dropout: float
) -> Any:
    """Causal attention within each record, as Transformers' eager path computes it (scores in the inputs' dtype,
    softmax in float32), for grouped-query attention without repeating keys and values."""
    import torch
    import torch.nn.functional as F

    heads, kv_heads, head_dim = query.shape[1], key.shape[1], query.shape[3]
    group = heads // kv_heads
    count, longest = records.count, records.longest
    if scaling is None:
        scaling = head_dim**-0.5

    def padded(states: Any) -> Any:
        """[1, h, T, d] -> [records, h, longest, d], zeros past each record's end."""
        tokens = states[0].transpose(0, 1)  # [T, h, d]
        slots = tokens.new_zeros(count * longest, *tokens.shape[1:]).index_copy(0, records.slots, tokens)
        return slots.view(count, longest, *tokens.shape[1:]).transpose(1, 2)

    # Query heads of a group share one key head: [records, kv_heads, group * longest, d] against [.., longest, d].
    q = padded(query).reshape(count, kv_heads, group * longest, head_dim)
    k, v = padded(key), padded(value)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scaling).view(count, kv_heads, group, longest, longest)
    visible = records.visible[:, None, None]
    weights = F.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0:
        weights = F.dropout(weights, p=dropout, training=True)
    out = torch.matmul(weights.view(count, kv_heads, group * longest, longest), v)
    out = out.view(count, heads, longest, head_dim).transpose(1, 2).reshape(count * longest, heads, head_dim)
    return out.index_select(0, records.slots)[None]  # [1, T, heads, head_dim]
