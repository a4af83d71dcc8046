"""sft.training.packed_attention: attention within each record of a padding-free row is the function Transformers'
`sdpa` path computes for that row, and anything else takes the `sdpa` path itself."""

import copy
from typing import Any

import pytest
import torch

from sft.training.packed_attention import NAME, record_layout, use_packed_attention

LENGTHS = [5, 9, 3, 12, 1, 7]


def tiny(kind: str) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":  # grouped-query attention: 8 query heads share 2 key heads
        config = LlamaConfig(
            vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, attn_implementation="sdpa",
        )  # fmt: skip
        return LlamaForCausalLM(config)
    config = GPT2Config(
        vocab_size=100, n_embd=64, n_layer=2, n_head=4, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def packed_row() -> tuple[Any, Any]:
    torch.manual_seed(1)
    ids = torch.randint(0, 100, (1, sum(LENGTHS)))
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    return ids, positions


def logits_and_grads(model: Any, **inputs: Any) -> tuple[Any, dict[str, Any]]:
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(**inputs, use_cache=False).logits
    logits.pow(2).mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_same_logits_and_gradients_as_sdpa(kind: str) -> None:
    ids, positions = packed_row()
    reference = tiny(kind)
    packed = copy.deepcopy(reference)
    assert use_packed_attention(packed) and packed.config._attn_implementation == NAME
    expected, expected_grads = logits_and_grads(reference, input_ids=ids, position_ids=positions)
    got, grads = logits_and_grads(packed, input_ids=ids, position_ids=positions)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # And each record alone: no record sees another.
    starts = [sum(LENGTHS[:i]) for i in range(len(LENGTHS))]
    with torch.no_grad():
        alone = [reference(input_ids=ids[:, s : s + n]).logits for s, n in zip(starts, LENGTHS)]
    torch.testing.assert_close(got, torch.cat(alone, dim=1), rtol=1e-5, atol=1e-5)


def test_collator_boundaries_match_position_ids() -> None:
    """TRL's padding-free collator passes cumulative lengths; without them the position ids give the same records."""
    _, positions = packed_row()
    query = torch.zeros(1, 4, sum(LENGTHS), 8)
    from_positions = record_layout(query, query, {"position_ids": positions})
    bounds = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    from_bounds = record_layout(query, query, {"cu_seq_lens_q": bounds})
    assert from_positions is not None and from_bounds is not None
    assert torch.equal(from_positions.slots, from_bounds.slots)
    assert (from_positions.count, from_positions.longest) == (len(LENGTHS), max(LENGTHS))
    # One record, a padded batch, or a cache (keys longer than queries): not a packed row.
    single = torch.arange(6)[None]
    assert record_layout(torch.zeros(1, 4, 6, 8), torch.zeros(1, 4, 6, 8), {"position_ids": single}) is None
    assert record_layout(torch.zeros(2, 4, 6, 8), torch.zeros(2, 4, 6, 8), {"position_ids": single}) is None
    assert record_layout(torch.zeros(1, 4, 1, 8), torch.zeros(1, 4, 7, 8), {"position_ids": single}) is None


def test_generation_and_padded_batches_take_sdpa() -> None:
    reference = tiny("llama").eval()
    packed = copy.deepcopy(reference)
    use_packed_attention(packed)
    ids = torch.randint(0, 100, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(packed(input_ids=ids, attention_mask=mask).logits,
                                   reference(input_ids=ids, attention_mask=mask).logits)  # fmt: skip
    greedy = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(packed.generate(ids[:1], **greedy), reference.generate(ids[:1], **greedy))


def test_not_saved_and_other_choices_kept(tmp_path: Any) -> None:
    import json

    model = tiny("llama")
    use_packed_attention(model)
    model.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text())
    eager = tiny("llama")
    eager.set_attn_implementation("eager")
    assert not use_packed_attention(eager) and eager.config._attn_implementation == "eager"
