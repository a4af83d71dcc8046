"""Padding-free batches are exact: records concatenated with restarting position ids give the same
logits as each record alone (attention never crosses a record), and the same loss as a padded batch."""

import pytest
import torch

MODELS = ("sft-tiny-gpt2", "sft-tiny-llama")
TOLERANCE = 1e-5
RECORDS = [
    {
        "instruction": "Rewrite the sentence in passive voice.",
        "input": "The cat chased the mouse.",
        "output": "The mouse was chased by the cat.",
    },
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Classify the sentiment.", "input": "I love it!", "output": "Positive"},
]


@pytest.fixture(scope="module", params=MODELS)
def model_and_tokenizer(request):
    """A tiny model on SDPA with larger random weights, so that attention is far from uniform and a
    leak across records would move the logits well past the tolerance."""
    from sft.models.load import load_model, load_tokenizer

    model = load_model(request.param, dtype=torch.float32, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.1)
    model.eval()  # no dropout: every comparison is deterministic
    return model, load_tokenizer(request.param)


def examples(tokenizer) -> list[dict[str, list[int]]]:
    from sft.data.template import PromptTemplate
    from sft.data.tokenize import tokenize_batch

    columns = {key: [r[key] for r in RECORDS] for key in ("instruction", "input", "output")}
    encoded = tokenize_batch(columns, tokenizer, PromptTemplate())
    return [{"input_ids": ids, "labels": labels} for ids, labels in zip(encoded["input_ids"], encoded["labels"])]


def packed_logits(model, rows: list[list[int]]) -> list[torch.Tensor]:
    """One row of concatenated records, no attention mask, position ids restarting per record."""
    ids = torch.tensor([[token for row in rows for token in row]])
    positions = torch.cat([torch.arange(len(row)) for row in rows])[None]
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
    return list(logits.split([len(row) for row in rows]))


def test_packed_logits_match_each_record_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = [e["input_ids"] for e in examples(tokenizer)]
    assert len({len(row) for row in rows}) > 1, "records of different lengths exercise the block boundaries"
    for row, packed in zip(rows, packed_logits(model, rows)):
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([row]), use_cache=False).logits[0]
        assert (packed - alone).abs().max().item() <= TOLERANCE


def test_attention_never_crosses_records(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = [e["input_ids"] for e in examples(tokenizer)]
    changed = [list(reversed(rows[0])), *rows[1:]]
    before, after = packed_logits(model, rows), packed_logits(model, changed)
    assert (before[0] - after[0]).abs().max().item() > 1e-2  # the change is visible where it was made
    for unchanged_before, unchanged_after in zip(before[1:], after[1:]):
        assert (unchanged_before - unchanged_after).abs().max().item() <= TOLERANCE


def collated(tokenizer, padding_free: bool) -> dict[str, torch.Tensor]:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    return collator(examples(tokenizer))


def loss_and_gradient(model, batch: dict[str, torch.Tensor], fused: bool = False) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    outputs = model(**batch, use_cache=False, **({"fused_lm_head": True} if fused else {}))
    outputs.loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return outputs.loss.item(), gradient


def test_padding_free_batch_trains_like_the_padded_batch(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    padded, packed = collated(tokenizer, padding_free=False), collated(tokenizer, padding_free=True)
    assert "attention_mask" in padded and "attention_mask" not in packed
    assert packed["input_ids"].shape[0] == 1 and packed["input_ids"].numel() == int(padded["attention_mask"].sum())
    padded_loss, padded_grad = loss_and_gradient(model, padded)
    packed_loss, packed_grad = loss_and_gradient(model, packed)
    assert packed_loss == pytest.approx(padded_loss, rel=TOLERANCE)
    assert (packed_grad - padded_grad).abs().max().item() <= TOLERANCE * max(1.0, padded_grad.abs().max().item())


def test_padding_free_loss_through_trl_fused_head(model_and_tokenizer):
    """SFTTrainer computes the loss with TRL's fused LM head; on a padding-free batch it is the padded loss."""
    import copy

    from trl.trainer.utils import add_fused_lm_head

    model, tokenizer = model_and_tokenizer
    fused_model = copy.deepcopy(model)
    add_fused_lm_head(fused_model, outputs=("log_probs", "entropy", "is_top1"))
    padded_loss, _ = loss_and_gradient(model, collated(tokenizer, padding_free=False))
    fused_loss, _ = loss_and_gradient(fused_model, collated(tokenizer, padding_free=True), fused=True)
    assert fused_loss == pytest.approx(padded_loss, rel=TOLERANCE)


def test_benchmark_batches_carry_the_same_tokens(model_and_tokenizer):
    """The benchmark's book-style padded batch and TRL's padding-free batch: same records, same labels."""
    from bench.instrument import record_lengths
    from bench.train_paths import pad_batch
    from bench.workload import Example

    _, tokenizer = model_and_tokenizer
    batch = [Example(e["input_ids"], e["labels"]) for e in examples(tokenizer)]
    inputs, targets = pad_batch(batch, tokenizer.pad_token_id)
    width = max(len(e.input_ids) for e in batch)
    assert inputs.shape == targets.shape == (len(batch), width - 1)
    expected = sorted(label for e in batch for label in e.labels[1:] if label != -100)
    assert sorted(targets[targets != -100].tolist()) == expected
    lengths = [len(e.input_ids) for e in batch]
    assert record_lengths(collated(tokenizer, padding_free=True)) == lengths
    assert record_lengths(collated(tokenizer, padding_free=False)) == lengths
