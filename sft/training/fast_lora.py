"""A cheaper forward and backward for PEFT's LoRA linear layers on CPUs, computing the same function.

Profiling a LoRA step on SmolLM2-135M on a CPU (bench/, `lora_vs_full`) showed that the adapters, not the frozen
base, made LoRA about as slow per token as full fine-tuning, although LoRA skips every weight gradient of the base
(the same base with no adapters at all trained about 1.45x faster than full fine-tuning). Each adapter is a few
small matmuls and, in PEFT's path, as many element-wise passes over its full-width input and output, each with its
autograd bookkeeping; on two cores those passes, not the matmuls, were the cost. Here one autograd Function does a
layer's whole forward and backward:

- Dropout on the adapter input drew a random number for every element of every adapter's input (`bernoulli_`, or
  16 random bits per element), about half of the adapters' cost. Here only the dropped elements are drawn: the gaps
  between them are geometric, so with rate 0.05 one number is drawn per twenty elements, and each element is still
  dropped independently with probability exactly `rate`. The backward pass zeroes the same positions of the input
  gradient in place instead of multiplying the whole gradient by a mask.
- Dropout's 1 / (1 - rate) and the adapter's scaling join into one factor, applied to the rank-wide products, and
  the adapter's product is added to the base's output inside the matmul (`addmm_`); the input gradient of the base
  and of the adapter come out of one `addmm`. No pass over a full-width tensor is left but the casts.
- q, k and v (and gate and up) read the same hidden states: they share one cast of them and one set of dropped
  positions, as PEFT's single adapter on a fused projection (GPT-2's c_attn, Phi-3's qkv_proj) shares one mask.
- Under CPU bf16 autocast every frozen base weight (and the frozen LM head) was cast to bf16 again at every forward:
  its cast is kept until the weight changes (its version counter), the values autocast would produce.

Rounding differs slightly under bf16 (the adapter's product is rounded once; the shared input's gradients are summed
in bf16) and dropout draws other positions than PEFT's: over 8 steps on the seed data the loss stayed within 1% of
PEFT's own forward (bench/, `lora_loss_rel_diff_vs_peft` in the full run). Anything unusual (DoRA and other variants,
several or mixed adapters, merged weights, disabled adapters, a trained base weight or bias, adapter biases,
quantized base layers, tensors off the CPU) takes PEFT's own forward.
"""

import math
import types
import weakref
from typing import Any


def speed_up_lora(model: Any) -> int:
    """Give every plain PEFT LoRA linear layer of `model` the cheaper forward; returns how many were changed."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return 0
    changed = 0
    for module in model.modules():
        # Exact type: subclasses (bitsandbytes, other backends) have their own forward.
        if type(module) is LoraLinear and not getattr(module, "_sft_fast_forward", False):
            module._sft_peft_forward = module.forward
            module.forward = types.MethodType(fast_forward, module)
            module._sft_fast_forward = True
            changed += 1
    return changed


def plain_adapter(layer: Any, x: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The one active vanilla LoRA adapter of `layer` when nothing but it and a frozen linear base make the output
    of a CPU input, else None."""
    import torch

    if args or kwargs or layer.disable_adapters or layer.merged or x.device.type != "cpu":
        return None
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in getattr(layer, "lora_variant", {}):
        return None
    base = layer.base_layer
    if not isinstance(base, torch.nn.Linear) or not getattr(layer, "cast_input_dtype_enabled", True):
        return None
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return None
    lora_a, lora_b = layer.lora_A[active[0]], layer.lora_B[active[0]]
    if lora_a.bias is not None or lora_b.bias is not None or lora_a.weight.dtype != lora_b.weight.dtype:
        return None
    return active[0]


def fast_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """PEFT's `result = base(x) + lora_B(lora_A(dropout(x))) * scaling`, computed as described in the module."""
    adapter = plain_adapter(self, x, args, kwargs)
    if adapter is None:
        return self._sft_peft_forward(x, *args, **kwargs)
    import torch

    base, lora_a, lora_b = self.base_layer, self.lora_A[adapter], self.lora_B[adapter]
    bf16 = autocast_bf16(base.weight)
    # Under autocast everything runs in bf16, as autocast would cast it; otherwise in the adapter's dtype, as PEFT
    # casts the input to it.
    dtype = torch.bfloat16 if bf16 else lora_a.weight.dtype
    if not bf16 and base.weight.dtype != dtype:
        return self._sft_peft_forward(x, *args, **kwargs)  # a base in another dtype than its adapter: PEFT's mix
    rate = float(getattr(self.lora_dropout[adapter], "p", 0.0)) if self.training else 0.0
    cast, dropped, positions = adapter_inputs(x, dtype, rate)
    weight, bias = frozen_weights(base, dtype)
    # Dropout's 1 / (1 - rate) joins the scaling: B(A(x * mask / (1 - rate))) * s = B(A(x * mask)) * s / (1 - rate).
    scale = self.scaling[adapter] / (1.0 - rate)
    with torch.autocast("cpu", enabled=False):
        out = _LoraLinear.get().apply(cast, dropped, positions, weight, bias, lora_a.weight, lora_b.weight, scale)
    # PEFT returns the base's output dtype (bf16 under autocast).
    return out if bf16 or out.dtype == x.dtype else out.to(x.dtype)


class _LoraLinear:
    """`x W^T + b + scale * (dropped A^T) B^T` as one autograd Function, built on first use (torch is imported
    lazily). `dropped` is `x` with the elements at `positions` zeroed (no gradient of its own: the backward pass
    zeroes the same positions of the adapter's input gradient)."""

    function: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.function is None:
            import torch

            class Function(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, x: Any, dropped: Any, positions: Any, weight: Any, bias: Any, lora_a: Any,
                            lora_b: Any, scale: float) -> Any:  # fmt: skip
                    a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
                    flat, flat_dropped = x.reshape(-1, x.shape[-1]), dropped.reshape(-1, x.shape[-1])
                    hidden = torch.mm(flat_dropped, a.t())
                    out = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())
                    out.addmm_(hidden, b.t(), alpha=scale)
                    ctx.save_for_backward(flat_dropped, positions, weight, a, b, hidden)
                    ctx.scale, ctx.input_shape, ctx.adapter_dtype = scale, x.shape, lora_a.dtype
                    return out.view(*x.shape[:-1], out.shape[-1])

                @staticmethod
                def backward(ctx: Any, grad: Any) -> Any:
                    flat_dropped, positions, weight, a, b, hidden = ctx.saved_tensors
                    flat_grad = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
                    wants_x, wants_a, wants_b = (ctx.needs_input_grad[i] for i in (0, 5, 6))
                    grad_x = grad_a = grad_b = None
                    if wants_b:
                        grad_b = torch.mm(flat_grad.t(), hidden).mul_(ctx.scale).to(ctx.adapter_dtype)
                    grad_hidden = torch.mm(flat_grad, b).mul_(ctx.scale) if wants_x or wants_a else None
                    if wants_a:
                        grad_a = torch.mm(grad_hidden.t(), flat_dropped).to(ctx.adapter_dtype)
                    if wants_x:
                        through_adapter = torch.mm(grad_hidden, a)
                        if positions is not None:
                            through_adapter.view(-1).index_fill_(0, positions, 0)
                        grad_x = torch.addmm(through_adapter, flat_grad, weight).view(ctx.input_shape)
                    return grad_x, None, None, None, None, grad_a, grad_b, None

            cls.function = Function
        return cls.function


# The last input the adapters saw, with its cast and its dropped copy: q, k and v projections (and gate and up)
# read the same hidden states one after the other.
_LAST_INPUT: dict[str, Any] = {}


def adapter_inputs(x: Any, dtype: Any, rate: float) -> tuple[Any, Any, Any]:
    """`x` cast for the layers (once for the base and the adapter: under autocast both would cast it to bf16); the
    adapter's input, that cast with dropout's zeros (without its 1 / (1 - rate)) and no gradient of its own; and the
    flat positions of those zeros (None without dropout).

    Layers that read the same tensor in a row (q, k, v; gate, up) share all three, so they share one mask, as PEFT's
    single adapter on a fused projection does; an adapter still drops each element of its input with probability
    `rate`. The input is recognised by identity and version, so a new forward pass or a changed tensor never reuses
    an old mask.
    """
    last = _LAST_INPUT
    ref = last.get("ref")
    if ref is not None and ref() is x and last["key"] == (x._version, dtype, rate):
        return last["cast"], last["dropped"], last["positions"]
    cast = x.to(dtype)
    positions = None
    dropped = cast.detach()
    if rate > 0:
        positions = drop_positions(cast.numel(), rate, cast.device)
        dropped = dropped.contiguous().clone()
        dropped.view(-1).index_fill_(0, positions, 0)
    # The input itself is held weakly; its cast and dropped copy strongly (the base layer keeps no reference to a
    # frozen layer's input), so until the next forward one activation stays referenced here.
    last.update(ref=weakref.ref(x), key=(x._version, dtype, rate), cast=cast, dropped=dropped, positions=positions)
    return cast, dropped, positions


def drop_positions(count: int, rate: float, device: Any) -> Any:
    """Sorted flat positions, out of `count`, that dropout zeroes: each independently with probability `rate`.

    The gaps between consecutive dropped positions of such a process are geometric (trials up to the first success),
    so drawing the gaps costs one random number per dropped element rather than one per element.
    """
    import torch

    expected = count * rate
    # Enough gaps to pass `count` almost always (six standard deviations); the loop covers the rest.
    draws = int(expected + 6 * math.sqrt(expected) + 16)
    positions = geometric(draws, rate, device).cumsum_(0).sub_(1)
    while int(positions[-1]) < count:
        positions = torch.cat([positions, geometric(draws, rate, device).cumsum_(0).add_(positions[-1])])
    return positions[: int(torch.searchsorted(positions, count))]


def geometric(count: int, rate: float, device: Any) -> Any:
    """`count` draws of the trials up to a first success at probability `rate` (1, 2, ...), by inversion:
    1 + floor(log(1 - u) / log(1 - rate)) for u uniform in [0, 1). Half the time of `Tensor.geometric_`, which
    computes its logarithm one element at a time."""
    import torch

    uniform = torch.empty(count, dtype=torch.float64, device=device).uniform_()
    return uniform.neg_().log1p_().mul_(1 / math.log1p(-rate)).floor_().add_(1).to(torch.int64)


def autocast_bf16(weight: Any) -> bool:
    """Whether `weight` is an fp32 CPU weight that bf16 autocast would cast for a matmul."""
    import torch

    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def frozen_weights(base: Any, dtype: Any) -> tuple[Any, Any]:
    """A frozen linear layer's weight and bias in `dtype`, without autograd; a cast is kept until the weight changes
    (the key notices in-place updates such as merges and loading weights, and a replaced tensor)."""
    weight, bias = base.weight, base.bias
    if weight.dtype == dtype and (bias is None or bias.dtype == dtype):
        return weight.detach(), None if bias is None else bias.detach()
    cached = _CASTS.setdefault(base, {})
    key = (weight.data_ptr(), weight._version, dtype)
    if cached.get("key") != key:
        cached["key"], cached["weight"] = key, weight.detach().to(dtype)
        cached["bias"] = None if bias is None else bias.detach().to(dtype)
    return cached["weight"], cached["bias"]


def frozen_linear(base: Any, x: Any) -> Any:
    """`base(x)`, with a frozen weight's bf16 cast kept between steps under CPU bf16 autocast."""
    import torch
    import torch.nn.functional as F

    weight, bias = base.weight, base.bias
    if weight.requires_grad or (bias is not None and bias.requires_grad) or not autocast_bf16(weight):
        return base(x)
    cast, bias = frozen_weights(base, torch.bfloat16)
    # Already bf16, so autocast passes them through unchanged: the product autocast would have computed.
    return F.linear(x.to(torch.bfloat16), cast, bias)


# Per-layer casts, dropped with their layer; not module buffers, so state dicts and saves never see them.
_CASTS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()
