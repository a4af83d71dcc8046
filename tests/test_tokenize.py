"""Completion-only labels: prompt ignored, response and its closing EOS learned, padding ignored."""

import pytest

from sft.data.template import PromptTemplate
from sft.data.tokenize import IGNORE_INDEX, encode_prompts, record_token_lengths, tokenize_batch

TEMPLATE = PromptTemplate()


def as_batch(records: list[dict[str, str]]) -> dict[str, list[str]]:
    return {key: [r[key] for r in records] for key in ("instruction", "input", "output")}


def prompt_lengths(records: list[dict[str, str]], tokenizer) -> list[int]:
    prompts = [TEMPLATE.render(r["instruction"], r["input"]) for r in records]
    return [len(ids) for ids in encode_prompts(tokenizer, prompts)]


@pytest.fixture(params=["gpt2", "llama"])
def tokenizer(request, gpt2_tokenizer, llama_tokenizer):
    return gpt2_tokenizer if request.param == "gpt2" else llama_tokenizer


def test_prompt_is_ignored_and_response_with_eos_is_learned(tokenizer, alpaca_records):
    out = tokenize_batch(as_batch(alpaca_records), tokenizer, TEMPLATE)
    for ids, labels, n_prompt, record in zip(
        out["input_ids"], out["labels"], prompt_lengths(alpaca_records, tokenizer), alpaca_records
    ):
        assert len(ids) == len(labels)
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:], "every response token is learned"
        assert ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id
        response = tokenizer(record["output"], add_special_tokens=False)["input_ids"]
        assert ids[n_prompt:-1] == response


def test_train_prompt_equals_inference_prompt(tokenizer, alpaca_records):
    """The ids the model is trained after are exactly the ids generation will feed it."""
    out = tokenize_batch(as_batch(alpaca_records), tokenizer, TEMPLATE)
    prompts = [TEMPLATE.render(r["instruction"], r["input"]) for r in alpaca_records]
    for ids, inference_ids in zip(out["input_ids"], encode_prompts(tokenizer, prompts)):
        assert ids[: len(inference_ids)] == list(inference_ids)


def test_gpt2_style_pad_is_eos_yet_final_eos_stays_labelled(gpt2_tokenizer, alpaca_records):
    assert gpt2_tokenizer.pad_token_id == gpt2_tokenizer.eos_token_id
    assert gpt2_tokenizer.bos_token_id not in encode_prompts(gpt2_tokenizer, ["Hello"])[0]
    out = tokenize_batch(as_batch(alpaca_records), gpt2_tokenizer, TEMPLATE)
    assert all(labels[-1] == gpt2_tokenizer.eos_token_id for labels in out["labels"])


def test_llama_style_bos_is_part_of_the_ignored_prompt(llama_tokenizer, alpaca_records):
    out = tokenize_batch(as_batch(alpaca_records), llama_tokenizer, TEMPLATE)
    for ids, labels in zip(out["input_ids"], out["labels"]):
        assert ids[0] == llama_tokenizer.bos_token_id
        assert labels[0] == IGNORE_INDEX
        assert ids.count(llama_tokenizer.bos_token_id) == 1
        assert labels[-1] == llama_tokenizer.eos_token_id


def test_collator_ignores_padding_but_keeps_the_real_eos(tokenizer, alpaca_records):
    """TRL pads labels with -100 by position, not by token id, so pad == EOS does not hide the EOS."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    out = tokenize_batch(as_batch(alpaca_records), tokenizer, TEMPLATE)
    examples = [{"input_ids": i, "labels": lab} for i, lab in zip(out["input_ids"], out["labels"])]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
    width = batch["input_ids"].shape[1]
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == example["input_ids"]
        assert batch["labels"][row, :n].tolist() == example["labels"]
        assert batch["labels"][row, n - 1].item() == tokenizer.eos_token_id
        assert batch["input_ids"][row, n:].tolist() == [tokenizer.pad_token_id] * (width - n)
        assert batch["labels"][row, n:].tolist() == [IGNORE_INDEX] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
    assert min(len(e["input_ids"]) for e in examples) < width, "the batch must actually contain padding"


def test_input_section_only_when_input_is_given():
    with_input = TEMPLATE.render("Sort the words.", "pear, fig")
    without = TEMPLATE.render("Sort the words.", "")
    assert "### Input:" in with_input and "### Input:" not in without
    assert without.endswith("### Response:\n")


def test_record_token_lengths_match_tokenized_lengths(tokenizer, alpaca_records):
    out = tokenize_batch(as_batch(alpaca_records), tokenizer, TEMPLATE)
    assert record_token_lengths(alpaca_records, tokenizer, TEMPLATE) == [len(ids) for ids in out["input_ids"]]
    assert record_token_lengths([], tokenizer, TEMPLATE) == []
