"""The lean training loss equals the model's own loss, with the same gradients, on both model families."""

import copy

import pytest
import torch

from sft.training.loss import add_lean_head, fuse_gelu, lean_head_supported


@pytest.mark.parametrize("name", ["sft-tiny-gpt2", "sft-tiny-llama"])
def test_lean_loss_and_gradients_match_the_full_projection(name: str) -> None:
    from sft.models.load import load_model

    reference = load_model(name, dtype=torch.float32).eval()
    lean = copy.deepcopy(reference)
    assert lean_head_supported(lean)
    fuse_gelu(lean)
    add_lean_head(lean)

    torch.manual_seed(0)
    ids = torch.randint(3, reference.config.vocab_size, (1, 24))
    positions = torch.cat([torch.arange(10), torch.arange(14)])[None]  # two packed records
    labels = ids.clone()
    labels[0, :6] = -100  # prompt of the first record
    labels[0, 10:17] = -100  # prompt of the second

    expected = reference(input_ids=ids, position_ids=positions, labels=labels, use_cache=False).loss
    summed, count = lean(input_ids=ids, position_ids=positions, labels=labels, use_cache=False, lean_loss=True)
    torch.testing.assert_close(summed / count, expected, rtol=1e-5, atol=1e-5)
    expected.backward()
    (summed / count).backward()
    for (param_name, a), b in zip(reference.named_parameters(), lean.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=param_name)


def test_plain_forward_is_untouched() -> None:
    from sft.models.load import load_model

    model = load_model("sft-tiny-llama", dtype=torch.float32).eval()
    ids = torch.randint(3, 100, (1, 8))
    before = model(input_ids=ids).logits
    add_lean_head(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before)
