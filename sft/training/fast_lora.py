"""A cheaper forward and backward for PEFT's LoRA linear layers on CPUs, computing the same function.

Profiling a LoRA step on SmolLM2-135M on a CPU (bench/, `lora_vs_full`) showed that the adapters, not the frozen
base, made LoRA about as slow per token as full fine-tuning, although LoRA skips every weight gradient of the base
(the same base with no adapters at all trained about 1.45x faster than full fine-tuning). Each adapter is a few
small matmuls and, in PEFT's path, as many element-wise passes over its full-width input and output, each with its
autograd bookkeeping; on two cores those passes, not the matmuls, were the cost. Here one autograd Function does a
layer's whole forward and backward (or a group's, below):

- Dropout on the adapter input drew a random number for every element of every adapter's input (`bernoulli_`, or
  16 random bits per element), about half of the adapters' cost. Here only the dropped elements are drawn: the gaps
  between them are geometric, so with rate 0.05 one number is drawn per twenty elements, and each element is still
  dropped independently with probability exactly `rate`. The backward pass zeroes the same positions of the input
  gradient in place instead of multiplying the whole gradient by a mask.
- Dropout's 1 / (1 - rate) and the adapter's scaling join into one factor, applied to the rank-wide products, and
  the adapter's product is added to the base's output inside the matmul (`addmm_`); the base's input gradient is
  added onto the adapter's inside the matmul too. No pass over a full-width tensor is left but the casts.
- q, k and v (and gate and up) read the same hidden states: they share one cast of them and one set of dropped
  positions, as PEFT's single adapter on a fused projection (GPT-2's c_attn, Phi-3's qkv_proj) shares one mask,
  and from the second forward pass on they are one Function: their A matrices stacked, so that the adapters'
  first product, its weight gradient and its input gradient are one matmul each instead of three, and the input
  gradients of all of them are summed inside the matmuls instead of by autograd.
- Under CPU bf16 autocast every frozen base weight (and the frozen LM head) was cast to bf16 again at every forward:
  its cast is kept until the weight changes (its version counter), the values autocast would produce.
- oneDNN repacked every frozen weight (bf16 or fp32) into its own blocked layout at every matmul: within a memory
  budget, each is kept packed instead (`packed_weights`).

Rounding differs slightly under bf16 (the adapter's product is rounded once; the shared input's gradients are summed
in bf16) and dropout draws other positions than PEFT's: over 12 steps on the seed data the loss stayed within 1% of
PEFT's own forward (bench/, `lora_loss_rel_diff_vs_peft` in the full run). Anything unusual (DoRA and other variants,
several or mixed adapters, merged weights, disabled adapters, a trained base weight or bias, adapter biases,
quantized base layers, tensors off the CPU) takes PEFT's own forward.
"""

import math
import os
import platform
import types
import weakref
from typing import Any, NamedTuple


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
    """PEFT's `result = base(x) + lora_B(lora_A(dropout(x))) * scaling`, computed as described in the module,
    together with the layers that read the same input right after this one (see `_Siblings`)."""
    plan = layer_plan(self, x, args, kwargs)
    if plan is None:
        return self._sft_peft_forward(x, *args, **kwargs)
    # A shared input is recognised by its version counter, which tensors made under `torch.inference_mode`
    # (generation, also in the middle of training) do not have: each layer is then computed by itself.
    shared = not x.is_inference()
    grouping = shared and not saved_tensor_hooks_active()
    group = [plan]
    if grouping:
        _SIBLINGS.observe(self, x)
        stashed = _SIBLINGS.take(self, x, plan.key)
        if stashed is not None:
            return stashed
        for follower in _SIBLINGS.followers(self):
            follower_plan = layer_plan(follower, x, (), {})
            if follower_plan is not None and follower_plan.key == plan.key:
                group.append(follower_plan)
    cast, dropped, positions = adapter_inputs(x, plan.dtype, plan.rate, remember=shared)
    weights: list[Any] = []
    packs: list[Any] = []
    for member in group:
        base = member.layer.base_layer
        pack = packed_weights(base, plan.dtype)
        # A packed weight needs no plain cast beside it (the base's bf16 copy would double its memory).
        weight, bias = (None, pack.bias) if pack is not None else frozen_weights(base, plan.dtype)
        weights.extend((weight, bias, member.lora_a, member.lora_b))
        packs.append(pack)
    import torch

    with torch.autocast("cpu", enabled=False):
        outs = _LoraLinears.get().apply(cast, dropped, positions, tuple(m.scale for m in group), tuple(packs), *weights)
    # PEFT returns the base's output dtype (bf16 under autocast).
    outs = [out if plan.bf16 or out.dtype == x.dtype else out.to(x.dtype) for out in outs]
    if grouping:
        _SIBLINGS.stash(x, plan.key, [m.layer for m in group[1:]], outs[1:])
    return outs[0]


def saved_tensor_hooks_active() -> bool:
    """Whether saved-tensor hooks are on, as activation checkpointing puts them around a layer's forward and its
    recomputation in the backward pass. Grouping siblings depends on what earlier passes learned, so the recomputed
    graph could differ from the first (the first forward pass of a run groups nothing yet); checkpointing requires
    the same. PyTorch has no public query for it; without the private one, assume they are."""
    import torch

    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return True if top is None else top(False) is not None


class LayerPlan(NamedTuple):
    """How `fast_forward` computes one plain LoRA layer for one input."""

    layer: Any
    lora_a: Any
    lora_b: Any
    scale: float  # the adapter's scaling with dropout's 1 / (1 - rate)
    dtype: Any  # of the products
    rate: float  # dropout's, 0 outside training
    bf16: bool  # under CPU bf16 autocast
    grad: bool  # autograd enabled: an output computed without it must not reach a call made with it

    @property
    def key(self) -> tuple[Any, float, bool, bool]:
        """Layers with the same key and input can be computed together: one cast, one mask."""
        return self.dtype, self.rate, self.bf16, self.grad


def layer_plan(layer: Any, x: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LayerPlan | None:
    """The plan for `layer(x)` when its one active adapter is plain LoRA on a frozen linear base, else None."""
    adapter = plain_adapter(layer, x, args, kwargs)
    if adapter is None:
        return None
    import torch

    base, lora_a, lora_b = layer.base_layer, layer.lora_A[adapter], layer.lora_B[adapter]
    bf16 = autocast_bf16(base.weight)
    # Under autocast everything runs in bf16, as autocast would cast it; otherwise in the adapter's dtype, as PEFT
    # casts the input to it.
    dtype = torch.bfloat16 if bf16 else lora_a.weight.dtype
    if not bf16 and base.weight.dtype != dtype:
        return None  # a base in another dtype than its adapter: PEFT's mix
    rate = float(getattr(layer.lora_dropout[adapter], "p", 0.0)) if layer.training else 0.0
    # Dropout's 1 / (1 - rate) joins the scaling: B(A(x * mask / (1 - rate))) * s = B(A(x * mask)) * s / (1 - rate).
    scale = layer.scaling[adapter] / (1.0 - rate)
    return LayerPlan(layer, lora_a.weight, lora_b.weight, scale, dtype, rate, bf16, torch.is_grad_enabled())


class _Siblings:
    """Layers that read the same input one after another (q, k and v; gate and up) computed as one: the first
    one's call computes all of them, with one matmul for their stacked A matrices in each direction and one pass
    for dropout's zeros in the backward; the others' calls return what was kept for them.

    Which layers follow which is learned by watching the calls (a forward pass in which a layer's followers did
    not come is simply learned again), so nothing here depends on a model's module names. A kept output is only
    returned to the layer it was computed for, for the same input tensor at the same version with the same plan
    key; anything else computes afresh, so a wrong guess costs time, never a different result.
    """

    def __init__(self) -> None:
        self.learned: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        self.seen: dict[str, Any] = {}
        self.kept: dict[str, Any] = {}

    @staticmethod
    def _same(record: dict[str, Any], x: Any) -> bool:
        ref = record.get("ref")
        return ref is not None and ref() is x and record["version"] == x._version

    def observe(self, layer: Any, x: Any) -> None:
        if self._same(self.seen, x):
            self.seen["layers"].append(weakref.ref(layer))
            return
        self._learn()
        self.seen = {"ref": weakref.ref(x), "version": x._version, "layers": [weakref.ref(layer)]}

    def _learn(self) -> None:
        layers = [ref() for ref in self.seen.get("layers", [])]
        if layers and all(layer is not None for layer in layers):
            self.learned[layers[0]] = [weakref.ref(layer) for layer in layers[1:]]

    def followers(self, layer: Any) -> list[Any]:
        return [f for f in (ref() for ref in self.learned.get(layer, [])) if f is not None and f is not layer]

    def stash(self, x: Any, key: Any, layers: list[Any], outs: list[Any]) -> None:
        self.kept = {"ref": weakref.ref(x), "version": x._version, "key": key}
        self.kept["outs"] = {id(layer): (weakref.ref(layer), out) for layer, out in zip(layers, outs)}

    def take(self, layer: Any, x: Any, key: Any) -> Any:
        if not self._same(self.kept, x) or self.kept["key"] != key:
            return None
        ref, out = self.kept["outs"].pop(id(layer), (None, None))
        return out if ref is not None and ref() is layer else None


_SIBLINGS = _Siblings()


# Where the weights start among the Function's inputs: x, dropped, positions, scales, packs, then four per layer.
_WEIGHTS = 5


class _LoraLinears:
    """For LoRA layers i reading the same input: `x W_i^T + b_i + scale_i * (dropped A_i^T) B_i^T`, as one autograd
    Function built on first use (torch is imported lazily). `dropped` is `x` with the elements at `positions`
    zeroed (no gradient of its own: the backward pass zeroes the same positions of the adapters' input gradient).
    The A matrices are stacked, so that the adapters' first product and its two gradients are one matmul each."""

    function: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.function is None:
            import torch

            packed_linear = torch.ops.mkldnn._linear_pointwise  # see `packed_weights`

            class Function(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, x: Any, dropped: Any, positions: Any, scales: tuple[float, ...],
                            packs: tuple[Any, ...], *weights: Any) -> Any:  # fmt: skip
                    bases, biases, lora_as, lora_bs = weights[0::4], weights[1::4], weights[2::4], weights[3::4]
                    stacked_a = (torch.cat(lora_as) if len(lora_as) > 1 else lora_as[0]).to(x.dtype)
                    bs = [b.to(x.dtype) for b in lora_bs]
                    flat, flat_dropped = x.reshape(-1, x.shape[-1]), dropped.reshape(-1, x.shape[-1])
                    hidden = torch.mm(flat_dropped, stacked_a.t())
                    ranks = [a.shape[0] for a in lora_as]
                    outs, start = [], 0
                    for weight, bias, pack, b, scale, rank in zip(bases, biases, packs, bs, scales, ranks):
                        if pack is not None:
                            out = packed_linear(flat, pack.forward, bias, "none", [], "")
                        elif bias is None:
                            out = torch.mm(flat, weight.t())
                        else:
                            out = torch.addmm(bias, flat, weight.t())
                        out.addmm_(hidden[:, start : start + rank], b.t(), alpha=scale)
                        outs.append(out.view(*x.shape[:-1], out.shape[-1]))
                        start += rank
                    ctx.save_for_backward(flat_dropped, positions, stacked_a, hidden, *bases, *bs)
                    ctx.scales, ctx.ranks, ctx.input_shape, ctx.packs = scales, ranks, x.shape, packs
                    ctx.adapter_dtypes = [a.dtype for a in lora_as]
                    # An output nobody used (a sibling that was not called after all) gets no gradient pass.
                    ctx.set_materialize_grads(False)
                    return tuple(outs)

                @staticmethod
                def backward(ctx: Any, *grads: Any) -> Any:
                    flat_dropped, positions, stacked_a, hidden, *rest = ctx.saved_tensors
                    count = len(ctx.scales)
                    bases, bs = rest[:count], rest[count:]
                    needs = ctx.needs_input_grad
                    result: list[Any] = [None] * len(needs)
                    wants_x = needs[0]
                    wants_a = any(needs[_WEIGHTS + 4 * i + 2] for i in range(count))
                    flat_grads = [None if g is None else g.reshape(-1, g.shape[-1]).to(stacked_a.dtype) for g in grads]
                    if all(g is None for g in flat_grads):
                        return tuple(result)
                    hidden_grads, start = [], 0
                    for i, (g, b, scale, rank) in enumerate(zip(flat_grads, bs, ctx.scales, ctx.ranks)):
                        if g is None:
                            hidden_grads.append(hidden.new_zeros(hidden.shape[0], rank))
                        else:
                            if needs[_WEIGHTS + 4 * i + 3]:
                                grad_b = torch.mm(g.t(), hidden[:, start : start + rank]).mul_(scale)
                                result[_WEIGHTS + 4 * i + 3] = grad_b.to(ctx.adapter_dtypes[i])
                            hidden_grads.append(torch.mm(g, b).mul_(scale))
                        start += rank
                    if not (wants_x or wants_a):
                        return tuple(result)
                    grad_hidden = torch.cat(hidden_grads, 1) if count > 1 else hidden_grads[0]
                    if wants_a:
                        grad_stacked_a = torch.mm(grad_hidden.t(), flat_dropped)
                        for i, grad_a in enumerate(grad_stacked_a.split(ctx.ranks)):
                            if needs[_WEIGHTS + 4 * i + 2]:
                                result[_WEIGHTS + 4 * i + 2] = grad_a.to(ctx.adapter_dtypes[i])
                    if wants_x:
                        grad_x = torch.mm(grad_hidden, stacked_a)
                        if positions is not None:
                            grad_x.view(-1).index_fill_(0, positions, 0)
                        for g, weight, pack in zip(flat_grads, bases, ctx.packs):
                            if g is None:
                                continue
                            if pack is not None:  # g W added to grad_x inside the matmul, as addmm_ does
                                grad_x = packed_linear.binary(g, grad_x, pack.backward, None, "add")
                            else:
                                grad_x.addmm_(g, weight)
                        result[0] = grad_x.view(ctx.input_shape)
                    return tuple(result)

            cls.function = Function
        return cls.function


# The last input the adapters saw, with its cast and its dropped copy: q, k and v projections (and gate and up)
# read the same hidden states one after the other.
_LAST_INPUT: dict[str, Any] = {}


def adapter_inputs(x: Any, dtype: Any, rate: float, remember: bool = True) -> tuple[Any, Any, Any]:
    """`x` cast for the layers (once for the base and the adapter: under autocast both would cast it to bf16); the
    adapter's input, that cast with dropout's zeros (without its 1 / (1 - rate)) and no gradient of its own; and the
    flat positions of those zeros (None without dropout).

    Layers that read the same tensor in a row (q, k, v; gate, up) share all three, so they share one mask, as PEFT's
    single adapter on a fused projection does; an adapter still drops each element of its input with probability
    `rate`. The input is recognised by identity and version, so a new forward pass or a changed tensor never reuses
    an old mask. With `remember` false (an input without a version counter) nothing is shared or kept.
    """
    last = _LAST_INPUT
    ref = last.get("ref")
    if remember and ref is not None and ref() is x and last["key"] == (x._version, dtype, rate):
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
    if not remember:
        return cast, dropped, positions
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
    """`base(x)` for a frozen CPU weight, packed once (`packed_weights`) or, under bf16 autocast, cast once: kept
    between steps either way."""
    import torch
    import torch.nn.functional as F

    weight, bias = base.weight, base.bias
    if weight.requires_grad or (bias is not None and bias.requires_grad) or weight.device.type != "cpu":
        return base(x)
    if autocast_bf16(weight):
        dtype = torch.bfloat16
    elif not torch.is_autocast_enabled("cpu") and weight.dtype == x.dtype == torch.float32:
        dtype = torch.float32
    else:
        return base(x)
    pack = packed_weights(base, dtype)
    if pack is not None:
        with torch.autocast("cpu", enabled=False):
            return _PackedLinear.get().apply(x.to(dtype), pack)
    if dtype != torch.bfloat16:
        return base(x)
    cast, bias = frozen_weights(base, torch.bfloat16)
    # Already bf16, so autocast passes them through unchanged: the product autocast would have computed.
    return F.linear(x.to(torch.bfloat16), cast, bias)


class _PackedLinear:
    """`x W^T + b` for a frozen weight packed by `packed_weights`: the input's gradient only, as for `F.linear` of
    a weight that needs none; built on first use (torch is imported lazily)."""

    function: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.function is None:
            import torch

            packed_linear = torch.ops.mkldnn._linear_pointwise

            class Function(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, x: Any, pack: Packed) -> Any:
                    ctx.pack, ctx.dtype = pack, x.dtype
                    return packed_linear(x, pack.forward, pack.bias, "none", [], "")

                @staticmethod
                def backward(ctx: Any, grad: Any) -> Any:
                    return packed_linear(grad.to(ctx.dtype), ctx.pack.backward, None, "none", [], ""), None

            cls.function = Function
        return cls.function


class Packed(NamedTuple):
    """A frozen weight W in oneDNN's own blocked layouts, for x W^T (`forward`) and g W (`backward`), and its bias."""

    forward: Any
    backward: Any
    bias: Any


def packed_weights(base: Any, dtype: Any) -> Packed | None:
    """A frozen linear weight, in `dtype` (bf16 or fp32), packed once for oneDNN's matmul kernels and kept until
    the weight changes; None where oneDNN cannot run `dtype` here, or the packed copies would pass their budget.

    Given a plain weight, oneDNN repacks it into its blocked layout at every call; a frozen weight can be packed
    once. PyTorch's CPU compiler does this for the constant weights of a frozen graph (`mkldnn._reorder_linear_weight`
    and `_linear_pointwise`, used here as it uses them); eager PyTorch offers nothing else for it. One copy for
    `x W^T` and one for `g W`. In bf16 they replace the bf16 cast and the products were bit-identical to
    `torch.mm`'s on the machine measured; in fp32 they are oneDNN's products instead of MKL's (the same to float
    rounding) and come on top of the fp32 weight. For the time and memory measured, see README.md (LoRA).
    """
    import torch

    if not (PACKING and packable(dtype)):
        return None
    weight, bias = base.weight, base.bias
    cached = _PACKS.get(base, {})
    key = (weight.data_ptr(), weight._version, None if bias is None else bias._version, dtype)
    if cached.get("key") == key:
        return cached["packed"]
    size = 2 * weight.numel() * torch.empty((), dtype=dtype).element_size()
    held = sum(entry["bytes"] for layer, entry in _PACKS.items() if layer is not base)
    if held + size > packing_budget():
        _PACKS[base] = {"key": key, "packed": None, "bytes": 0}  # not asked again until the weight changes
        return None
    cast = weight.detach().to(dtype).contiguous()
    packed = Packed(
        torch.ops.mkldnn._reorder_linear_weight(cast, None),
        torch.ops.mkldnn._reorder_linear_weight(cast.t().contiguous(), None),
        None if bias is None else bias.detach().to(dtype),
    )
    _PACKS[base] = {"key": key, "packed": packed, "bytes": size}
    return packed


# Off: the plain casts and matmuls (bench/ compares the two in one process).
PACKING = True


def packable(dtype: Any) -> bool:
    """oneDNN is built in, switched on, and runs `dtype` matmuls (bf16 or fp32) on this x86 CPU (ARM builds run
    oneDNN through other kernels, for which packing was never measured)."""
    import torch

    mkldnn = torch.backends.mkldnn
    if platform.machine().lower() not in ("x86_64", "amd64") or not (mkldnn.is_available() and mkldnn.enabled):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def packing_budget() -> int:
    """Bytes that packed copies may take in all: an eighth of the machine's memory (3 GB on 24 GiB), so that a
    large frozen base trains with its plain weights rather than running out of memory; the layers packed first keep
    their packs. Where the memory cannot be read (no `os.sysconf`, as on Windows), nothing is packed."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (AttributeError, ValueError, OSError):
        return 0


# Per-layer casts and packed weights, dropped with their layer; not module buffers, so state dicts and saves never
# see them.
_CASTS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()
_PACKS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()
