"""A cheaper forward for PEFT's LoRA linear layers on CPUs, computing the same function.

Profiling a LoRA step on SmolLM2-135M under CPU bf16 autocast (bench/, `lora_vs_full`) showed that the adapters,
not the frozen base, made LoRA about as slow per token as full fine-tuning, although LoRA skips every weight
gradient of the base (a base with no adapters at all trained 1.5x faster than full fine-tuning):

- Dropout on the adapter input took 12% of the step: `torch.nn.Dropout` draws a float per element (`bernoulli_`)
  for every adapter's whole input, then scales it by 1 / (1 - rate). Here the keep mask comes from 16 random bits
  per element (four elements per 64-bit draw; the rate is kept to 2**-16), and the 1 / (1 - rate) joins the
  adapter's scaling on its rank-wide product (tokens x r) instead of a pass over the full-width input.
- q, k and v (and gate and up) read the same hidden states: they share one bf16 cast of them and one dropout
  mask, as PEFT's adapter on a fused projection (GPT-2's c_attn) does; the base layer uses that cast too, where
  autocast would cast the input once for the base and once for the adapter.
- Autocast keeps a weight's bf16 cast for the step only when the weight is trained; every frozen base weight (and
  the frozen LM head) was cast again at every forward. The bf16 copy is kept here until the weight changes (its
  version counter): the same values autocast would produce.
- The adapter's product is added to the base's output inside its matmul (`addmm`) rather than by another pass
  over the full-width output in bf16, which a CPU converts element by element.

The forward is the same; rounding differs slightly under bf16 (the adapter's product is rounded once, gradients
of the shared cast are summed in bf16), and dropout draws other masks: over 8 steps on the seed data the loss
stayed within 1% of PEFT's own forward (bench/, `lora_loss_rel_diff_vs_peft` in the full run). Anything unusual
(DoRA and other variants, several or mixed adapters, merged weights, disabled adapters, quantized base layers)
takes PEFT's own forward.
"""

import math
import types
import weakref
from typing import Any

# Random bits per dropout decision: the rate is rounded to a multiple of 2**-16 (0.05 becomes 0.0500030...).
DROPOUT_BITS = 16


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


def plain_adapter(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The one active vanilla LoRA adapter of `layer` when nothing but it changes the output, else None."""
    import torch

    if args or kwargs or layer.disable_adapters or layer.merged:
        return None
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in getattr(layer, "lora_variant", {}):
        return None
    if not isinstance(layer.base_layer, torch.nn.Linear) or not getattr(layer, "cast_input_dtype_enabled", True):
        return None
    return active[0]


def fast_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """PEFT's `result = base(x) + lora_B(lora_A(dropout(x))) * scaling`, computed as described in the module."""
    adapter = plain_adapter(self, args, kwargs)
    if adapter is None:
        return self._sft_peft_forward(x, *args, **kwargs)
    import torch

    lora_a, lora_b = self.lora_A[adapter], self.lora_B[adapter]
    bf16 = autocast_bf16(self.base_layer.weight)
    rate = float(getattr(self.lora_dropout[adapter], "p", 0.0)) if self.training else 0.0
    x, dropped = adapter_inputs(x, torch.bfloat16 if bf16 else lora_a.weight.dtype, rate)
    result = frozen_linear(self.base_layer, x, bf16)
    scale = self.scaling[adapter]
    if rate > 0:
        # Dropout's 1 / (1 - rate) joins the scaling: A(x * mask / (1 - rate)) * s = A(x * mask) * s / (1 - rate).
        scale = scale / (1.0 - effective_rate(rate))
    hidden = lora_a(dropped) * scale
    if bf16 and lora_b.bias is None and lora_b.weight.dtype == torch.float32:
        # One `addmm` adds the adapter's product to the base's output inside the matmul: a separate add is another
        # pass over the full-width output in bf16, which CPUs convert element by element (as autocast would cast it).
        weight = lora_b.weight.to(torch.bfloat16)
        flat = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), weight.t())
        return flat.view(result.shape)
    # The base's output dtype, as PEFT keeps it (bf16 under autocast).
    return (result + lora_b(hidden)).to(result.dtype)


# The last input the adapters saw, with its cast and its dropped copy: q, k and v projections (and gate and up)
# read the same hidden states one after the other.
_LAST_INPUT: dict[str, Any] = {}


def adapter_inputs(x: Any, dtype: Any, rate: float) -> tuple[Any, Any]:
    """`x` cast for the layers (once for the base and the adapter: under autocast both would cast it to bf16), and
    the adapter's input: that cast with dropout's mask applied (without its 1 / (1 - rate)) when `rate` > 0.

    Layers that read the same tensor in a row (q, k, v; gate, up) share both, so they share one dropout mask, as
    PEFT's single adapter on a fused projection does (GPT-2's c_attn, Phi-3's qkv_proj); an adapter still drops
    each element of its input with probability `rate`. The input is recognised by identity and version, so a
    new forward pass or a changed tensor never reuses an old mask.
    """
    last = _LAST_INPUT
    ref = last.get("ref")
    if ref is not None and ref() is x and last["key"] == (x._version, dtype, rate):
        return last["cast"], last["dropped"]
    cast = x.to(dtype)
    dropped = masked(cast, rate) if rate > 0 else cast
    # The input itself is held weakly; its cast and dropped copy strongly (the base layer keeps no reference to a
    # frozen layer's input), so until the next forward one activation stays referenced here.
    last.update(ref=weakref.ref(x), key=(x._version, dtype, rate), cast=cast, dropped=dropped)
    return cast, dropped


def autocast_bf16(weight: Any) -> bool:
    """Whether `weight` is an fp32 CPU weight that bf16 autocast would cast for a matmul."""
    import torch

    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def frozen_linear(base: Any, x: Any, bf16: bool | None = None) -> Any:
    """`base(x)`, with a frozen weight's bf16 cast kept between steps under CPU bf16 autocast."""
    import torch
    import torch.nn.functional as F

    weight = base.weight
    if weight.requires_grad or not (autocast_bf16(weight) if bf16 is None else bf16):
        return base(x)
    cached = _CASTS.setdefault(base, {})
    # The key notices in-place updates (merges, loading weights) and a replaced tensor.
    key = (weight.data_ptr(), weight._version)
    if cached.get("key") != key:
        cached["key"], cached["weight"] = key, weight.detach().to(torch.bfloat16)
        cached["bias"] = None if base.bias is None else base.bias.detach().to(torch.bfloat16)
    # Already bf16, so autocast passes them through unchanged: the product autocast would have computed.
    return F.linear(x.to(torch.bfloat16), cached["weight"], cached["bias"])


# Per-layer bf16 casts, dropped with their layer; not module buffers, so state dicts and saves never see them.
_CASTS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def keep_mask(shape: Any, rate: float, device: Any) -> Any:
    """A boolean mask, True with probability 1 - round(rate * 2**16) / 2**16, from 16 random bits per element:
    each 64-bit draw, uniform over the whole int64 range, gives four elements."""
    import torch

    count = math.prod(shape)
    draws = torch.empty(-(-count // 4), dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    threshold = round(rate * 2**DROPOUT_BITS) - 2 ** (DROPOUT_BITS - 1)
    return (draws.view(torch.int16)[:count] >= threshold).view(shape)


def apply_mask(x: Any, keep: Any) -> Any:
    """`x` with the elements where `keep` is False set to zero. For 2- and 4-byte floats the mask is expanded to
    all-ones or all-zeros integers of the same width and applied with a bitwise and on the bits: on a CPU that is
    several times faster than `torch.where` or a multiply on bf16, which are converted element by element."""
    import torch

    bits = {2: torch.int16, 4: torch.int32}.get(x.element_size())
    if bits is None or not x.is_contiguous():
        return torch.where(keep, x, 0)
    ones = keep.to(bits).neg_()  # True -> -1 (every bit set), False -> 0
    return torch.bitwise_and(x.view(bits), ones).view(x.dtype)


class _Masked:
    """`x` with a fresh `keep_mask` applied (dropout without its 1 / (1 - rate)); an autograd Function built on
    first use, which keeps the boolean mask for the backward pass."""

    function: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.function is None:
            import torch

            class Function(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, x: Any, rate: float) -> Any:
                    keep = keep_mask(x.shape, rate, x.device)
                    ctx.save_for_backward(keep)
                    return apply_mask(x, keep)

                @staticmethod
                def backward(ctx: Any, grad: Any) -> Any:
                    (keep,) = ctx.saved_tensors
                    return apply_mask(grad.contiguous(), keep), None

            cls.function = Function
        return cls.function


def effective_rate(rate: float) -> float:
    """The dropout rate `keep_mask` draws with: `rate` to the nearest 2**-16."""
    return round(rate * 2**DROPOUT_BITS) / 2**DROPOUT_BITS


def masked(x: Any, rate: float) -> Any:
    return _Masked.get().apply(x, rate)
