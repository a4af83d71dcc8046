"""sft.training.fast_lora: the cheaper LoRA forward computes what PEFT's does, and falls back where it cannot."""

import gc
from typing import Any

import pytest
import torch

from sft.training.fast_lora import drop_positions, frozen_linear, speed_up_lora


def tiny_llama(seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def lora_model(dropout: float = 0.0, seed: int = 0, **options: Any) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", **options
    )
    model = get_peft_model(tiny_llama(seed), config)
    # B starts at zero; random B makes the adapters count in the comparison.
    torch.manual_seed(seed + 1)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            weight.data.normal_(0, 0.1)
    return model


def loss_and_grads(model: Any, ids: Any, bf16: bool) -> tuple[float, dict[str, Any]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("bf16", [False, True])
def test_same_loss_and_gradients_as_peft(bf16: bool) -> None:
    ids = torch.randint(0, 64, (2, 12))
    plain, fast = lora_model(), lora_model()
    assert speed_up_lora(fast) == 14  # 7 linear layers in each of 2 blocks
    plain.train()
    fast.train()
    assert_same_step(plain, fast, ids, bf16)


def assert_same_step(plain: Any, fast: Any, ids: Any, bf16: bool) -> None:
    """One forward and backward pass of each model: the same loss and LoRA gradients."""
    plain_loss, plain_grads = loss_and_grads(plain, ids, bf16)
    fast_loss, fast_grads = loss_and_grads(fast, ids, bf16)
    # Forward: the same products (alpha / r = 2 scales exactly wherever it is applied); under bf16 the adapter's
    # product is added to the base's output inside the matmul, rounded once instead of twice.
    assert fast_loss == pytest.approx(plain_loss, rel=1e-4 if bf16 else 1e-6)
    # Backward under bf16: the base and the adapter share one cast of the input, so their input gradients are
    # summed in bf16 before going back to fp32.
    # Compared as whole tensors (relative norm of the difference): bf16 rounding moves single elements a lot.
    tolerance = 5e-2 if bf16 else 1e-5
    for name, grad in plain_grads.items():
        assert (fast_grads[name] - grad).norm() <= tolerance * grad.norm(), name


def test_drop_positions_are_independent_bernoulli() -> None:
    """Positions drawn from geometric gaps: sorted, distinct, in range, at the rate, with no pattern between
    neighbours (a dropped element makes its neighbour no more or less likely to be dropped)."""
    torch.manual_seed(0)
    count = 400_000
    positions = drop_positions(count, 0.05, "cpu")
    assert positions.dtype == torch.int64 and positions.numel() > 0
    assert int(positions[0]) >= 0 and int(positions[-1]) < count
    assert bool((positions[1:] > positions[:-1]).all())
    dropped = torch.zeros(count, dtype=torch.bool)
    dropped[positions] = True
    # Binomial standard deviation at this size: about 0.00034.
    assert abs(dropped.float().mean().item() - 0.05) < 0.002
    after_dropped = dropped[1:][dropped[:-1]].float().mean().item()
    assert abs(after_dropped - 0.05) < 0.01
    # A rate so high that the first draws fall short of the end: the rest are drawn until they pass it.
    many = drop_positions(1000, 0.9, "cpu")
    assert int(many[-1]) < 1000 and abs(many.numel() / 1000 - 0.9) < 0.05


def test_dropout_gradient_skips_dropped_inputs() -> None:
    """An element dropout zeroes gets no gradient through the adapter; the others get the adapter's share."""
    model = lora_model(dropout=0.5)
    speed_up_lora(model)
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    model.train()
    torch.manual_seed(0)
    x = torch.randn(50, 64, requires_grad=True)
    layer(x).sum().backward()
    base_only = layer.base_layer.weight.sum(0).expand(50, 64)
    through_adapter = x.grad - base_only
    zero = through_adapter.abs() < 1e-6
    # About half the elements are dropped; every other one carries the adapter's gradient.
    assert 0.4 < zero.float().mean().item() < 0.6
    adapter = layer.lora_A["default"].weight
    b = layer.lora_B["default"].weight
    expected = (b.sum(0) @ adapter) * layer.scaling["default"] / 0.5
    torch.testing.assert_close(through_adapter[~zero], expected.expand(50, 64)[~zero], rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training_and_unbiased() -> None:
    """With dropout the adapter's contribution varies in training and not in evaluation; on average it is the same."""
    model = lora_model(dropout=0.3)
    speed_up_lora(model)
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    torch.manual_seed(0)
    x = 1 + torch.rand(20000, 64)  # a mean far from zero, so that the means below are well defined
    base = layer.base_layer(x)
    model.eval()
    with torch.no_grad():
        evaluated = layer(x) - base
        model.train()
        # A new input tensor gets a new mask; the same tensor read again (q, k, v in a row) shares one.
        trained = [layer(x.clone()) - base for _ in range(2)]
        assert torch.equal(layer(x) - base, layer(x) - base)
    assert not torch.equal(trained[0], trained[1])
    # Row means over many rows: dropout with 1 / (1 - rate) folded into the scaling keeps the expectation.
    torch.testing.assert_close(trained[0].mean(0), evaluated.mean(0), rtol=0.05, atol=0.02)


def test_unusual_adapters_take_peft_forward() -> None:
    """DoRA and disabled adapters are PEFT's own forward, so their output is PEFT's."""
    ids = torch.randint(0, 64, (1, 8))
    plain, fast = lora_model(use_dora=True), lora_model(use_dora=True)
    speed_up_lora(fast)
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=0, atol=0)
        with fast.disable_adapter(), plain.disable_adapter():
            torch.testing.assert_close(fast(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=0, atol=0)


def test_only_trained_adapter_weights_get_gradients() -> None:
    """With the A matrices frozen, B's gradients are PEFT's and A gets none."""
    ids = torch.randint(0, 64, (2, 12))
    plain, fast = lora_model(), lora_model()
    speed_up_lora(fast)
    for model in (plain, fast):
        model.train()
        for name, weight in model.named_parameters():
            if "lora_A" in name:
                weight.requires_grad_(False)
    _, plain_grads = loss_and_grads(plain, ids, bf16=False)
    _, fast_grads = loss_and_grads(fast, ids, bf16=False)
    assert plain_grads.keys() == fast_grads.keys() and all("lora_B" in name for name in fast_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-5, atol=1e-6)
    assert all(w.grad is None for n, w in fast.named_parameters() if "lora_A" in n)


@pytest.mark.parametrize("bf16", [False, True])
def test_layers_reading_one_input_are_computed_together(bf16: bool) -> None:
    """After one forward pass the layers that read the same input (q, k, v; gate, up) are known, and from then on
    are computed together; loss and gradients stay PEFT's."""
    from sft.training.fast_lora import _SIBLINGS

    ids = torch.randint(0, 64, (2, 12))
    plain, fast = lora_model(), lora_model()
    speed_up_lora(fast)
    plain.train()
    fast.train()
    loss_and_grads(fast, ids, bf16)  # learns who follows whom
    attention = fast.base_model.model.model.layers[1].self_attn
    mlp = fast.base_model.model.model.layers[1].mlp
    assert _SIBLINGS.followers(attention.q_proj) == [attention.k_proj, attention.v_proj]
    assert _SIBLINGS.followers(mlp.gate_proj) == [mlp.up_proj]
    assert _SIBLINGS.followers(attention.o_proj) == [] and _SIBLINGS.followers(mlp.down_proj) == []
    assert_same_step(plain, fast, ids, bf16)


def test_a_follower_called_otherwise_computes_its_own_output() -> None:
    """A learned follower that gets another input (or is not called at all) is computed afresh; the output kept
    for it is never returned, and the leader's gradients are unaffected by the unused one."""
    from sft.training.fast_lora import _SIBLINGS

    plain, fast = lora_model(), lora_model()
    speed_up_lora(fast)
    fast_attention = fast.base_model.model.model.layers[0].self_attn
    plain_attention = plain.base_model.model.model.layers[0].self_attn
    x, other = torch.randn(3, 32, requires_grad=True), torch.randn(3, 32)
    for layer in (fast_attention.q_proj, fast_attention.k_proj):
        layer(x)
    fast_attention.o_proj(torch.randn(3, 32))  # a new input: the pair above is learned
    assert _SIBLINGS.followers(fast_attention.q_proj) == [fast_attention.k_proj]
    leader = fast_attention.q_proj(x)
    torch.testing.assert_close(leader, plain_attention.q_proj(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast_attention.k_proj(other), plain_attention.k_proj(other), rtol=1e-6, atol=1e-6)
    # Computed without autograd, the group's kept output is not handed to a call made with it.
    with torch.no_grad():
        fast_attention.q_proj(x)
    assert fast_attention.k_proj(x).requires_grad
    leader.sum().backward()
    expected = x.grad.clone()
    x.grad = None
    plain_attention.q_proj(x).sum().backward()
    torch.testing.assert_close(expected, x.grad, rtol=1e-5, atol=1e-6)


@pytest.fixture
def packing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Switches fast_lora's packed base weights on or off for one test."""
    import sft.training.fast_lora as fast_lora

    return lambda on: monkeypatch.setattr(fast_lora, "PACKING", on)


@pytest.mark.parametrize("bf16", [False, True])
def test_packed_base_weights_compute_the_plain_products(packing: Any, bf16: bool) -> None:
    """Base weights packed once for oneDNN give the loss and gradients of the plain weights (bf16: their casts),
    and stay within their memory budget."""
    import sft.training.fast_lora as fast_lora

    dtype = torch.bfloat16 if bf16 else torch.float32
    if not fast_lora.packable(dtype):
        pytest.skip(f"this CPU has no oneDNN {dtype} matmuls to pack weights for")
    ids = torch.randint(0, 64, (2, 12))
    results = []
    for on in (False, True):
        packing(on)
        model = lora_model()
        speed_up_lora(model)
        model.train()
        results.append(loss_and_grads(model, ids, bf16=bf16))
        entries = [fast_lora._PACKS.get(m.base_layer) for m in model.modules() if hasattr(m, "base_layer")]
        assert sum(entry is not None and entry["packed"] is not None for entry in entries) == (14 if on else 0)
    (plain_loss, plain_grads), (packed_loss, packed_grads) = results
    # Bit-identical in bf16 where measured (README.md); other kernels may sum in another order, and in fp32 the
    # packed products are oneDNN's rather than MKL's.
    assert packed_loss == pytest.approx(plain_loss, rel=1e-3 if bf16 else 1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-2 if bf16 else 1e-4, atol=1e-5, msg=name)


def test_packing_stops_at_its_budget(packing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the memory budget, layers keep their plain weights, with the same products."""
    import sft.training.fast_lora as fast_lora

    if not fast_lora.packable(torch.float32):
        pytest.skip("this PyTorch has no oneDNN to pack weights for")
    packing(True)
    model = lora_model()
    speed_up_lora(model)
    model.train()
    # Room for the first layer's two fp32 copies (q_proj, 32 x 32) and no more, beside what earlier models hold.
    gc.collect()  # earlier tests' models, so that none is dropped from the count midway
    held = sum(entry["bytes"] for entry in fast_lora._PACKS.values())
    monkeypatch.setattr(fast_lora, "packing_budget", lambda: held + 2 * 32 * 32 * 4)
    ids = torch.randint(0, 64, (2, 12))
    loss, grads = loss_and_grads(model, ids, bf16=False)
    entries = [fast_lora._PACKS.get(m.base_layer) for m in model.modules() if hasattr(m, "base_layer")]
    assert sum(entry is not None and entry["packed"] is not None for entry in entries) == 1
    plain = lora_model()
    speed_up_lora(plain)
    plain.train()
    packing(False)
    plain_loss, plain_grads = loss_and_grads(plain, ids, bf16=False)
    assert loss == pytest.approx(plain_loss, rel=1e-5)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_frozen_head_follows_weight_changes(packing: Any, packed: bool, bf16: bool) -> None:
    """The frozen head (LoRA's tied LM head) with its cast or packed weight: the layer's own product and input
    gradient, recomputed after an in-place change; a trained one is left to the layer."""
    packing(packed)
    layer = torch.nn.Linear(8, 4)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(2):
            fast = frozen_linear(layer, x)
            (fast_grad,) = torch.autograd.grad(fast.float().sum(), x)
            plain = layer(x)
            (plain_grad,) = torch.autograd.grad(plain.float().sum(), x)
            tolerance = {"rtol": 0, "atol": 0} if bf16 else {"rtol": 1e-5, "atol": 1e-6}
            torch.testing.assert_close(fast, plain, **tolerance)
            torch.testing.assert_close(fast_grad, plain_grad, **tolerance)
            with torch.no_grad():
                layer.weight.mul_(2)  # an in-place change, as merging an adapter makes
        # A trained weight or bias: the layer itself.
        layer.bias.requires_grad_(True)
        assert torch.equal(frozen_linear(layer, x), layer(x))


@pytest.mark.parametrize("bf16", [False, True])
def test_inference_mode_forward_then_training(bf16: bool) -> None:
    """Under `torch.inference_mode` (generation, also between training steps) tensors carry no version counter:
    the fast forward still gives PEFT's outputs, and training afterwards its loss and gradients."""
    ids = torch.randint(0, 64, (2, 12))
    plain, fast = lora_model(), lora_model()
    speed_up_lora(fast)
    for model in (plain, fast):
        model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        expected, got = plain(input_ids=ids).logits, fast(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=2e-2 if bf16 else 1e-5, atol=2e-2 if bf16 else 1e-5)
    plain.train()
    fast.train()
    assert_same_step(plain, fast, ids, bf16)


@pytest.mark.parametrize("bf16", [False, True])
def test_activation_checkpointing(bf16: bool) -> None:
    """With activation checkpointing the layers are recomputed in the backward pass: PEFT's loss and gradients
    (no dropout), and with dropout the same masks in the recomputation as in the first pass."""
    ids = torch.randint(0, 64, (2, 12))

    def run(dropout: float, fast: bool, checkpointing: bool) -> tuple[float, dict[str, Any]]:
        model = lora_model(dropout=dropout)
        if fast:
            speed_up_lora(model)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(5)
        return loss_and_grads(model, ids, bf16)

    tolerance = 5e-2 if bf16 else 1e-5
    for reference, checked in (
        (run(0.0, fast=False, checkpointing=True), run(0.0, fast=True, checkpointing=True)),
        (run(0.1, fast=True, checkpointing=False), run(0.1, fast=True, checkpointing=True)),
    ):
        assert checked[0] == pytest.approx(reference[0], rel=1e-4 if bf16 else 1e-6)
        for name, grad in reference[1].items():
            assert (checked[1][name] - grad).norm() <= tolerance * grad.norm(), name
