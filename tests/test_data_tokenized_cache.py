"""The tokenized cache: token ids keyed by the records' text, the tokenizer and the template, computed once
per run (length check and training alike) and read back by the next run."""

import json
import logging
from pathlib import Path

import pytest

from sft.cli import main as sft_main
from sft.data import tokenize
from sft.data.template import PromptTemplate
from sft.data.tokenize import (
    TokenizedRecords,
    record_token_lengths,
    token_lengths,
    tokenize_batch,
    tokenize_records,
    tokenized_cache_key,
)

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")
TEMPLATE = PromptTemplate()


def columns(records):
    return {name: [r[name] for r in records] for name in ("instruction", "input", "output")}


def test_cached_ids_are_the_tokenized_ids(gpt2_tokenizer, alpaca_records, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sft.data.tokenize"):
        first = tokenize_records(alpaca_records, gpt2_tokenizer, TEMPLATE)
    expected = tokenize_batch(columns(alpaca_records), gpt2_tokenizer, TEMPLATE)
    assert first["input_ids"] == expected["input_ids"] and first["labels"] == expected["labels"]
    assert token_lengths(first) == record_token_lengths(alpaca_records, gpt2_tokenizer, TEMPLATE)
    assert "Tokenized 4 records (cached in" in caplog.text
    assert all(type(i) is int for i in first[0]["input_ids"])  # int32 on disk, Python ints out


def test_a_second_call_reads_the_cache(gpt2_tokenizer, alpaca_records, caplog, monkeypatch) -> None:
    expected = tokenize_records(alpaca_records, gpt2_tokenizer, TEMPLATE)["input_ids"]

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(tokenize, "tokenize_batch", refuse)
    with caplog.at_level(logging.INFO, logger="sft.data.tokenize"):
        again = tokenize_records([dict(r) for r in alpaca_records], gpt2_tokenizer, TEMPLATE)
    assert "Token ids of 4 records read from the cache" in caplog.text
    assert again["input_ids"] == expected


def test_the_key_follows_data_tokenizer_and_template(gpt2_tokenizer, llama_tokenizer, alpaca_records) -> None:
    key = tokenized_cache_key(alpaca_records, gpt2_tokenizer, TEMPLATE)
    assert key == tokenized_cache_key([dict(r, kind="x") for r in alpaca_records], gpt2_tokenizer, TEMPLATE)
    changed = [dict(alpaca_records[0], output="Another answer."), *alpaca_records[1:]]
    others = {
        tokenized_cache_key(changed, gpt2_tokenizer, TEMPLATE),
        tokenized_cache_key(alpaca_records[:3], gpt2_tokenizer, TEMPLATE),
        tokenized_cache_key(alpaca_records, llama_tokenizer, TEMPLATE),
        tokenized_cache_key(alpaca_records, gpt2_tokenizer, PromptTemplate(preamble="")),
    }
    assert key not in others and len(others) == 4


def test_a_damaged_cache_file_is_replaced(gpt2_tokenizer, alpaca_records) -> None:
    key = tokenized_cache_key(alpaca_records, gpt2_tokenizer, TEMPLATE)
    path = tokenize.tokenized_cache_path(key)
    path.write_bytes(b"not arrow")
    again = tokenize_records(alpaca_records, gpt2_tokenizer, TEMPLATE)
    assert token_lengths(again) == record_token_lengths(alpaca_records, gpt2_tokenizer, TEMPLATE)
    assert path.stat().st_size > 100


def test_length_check_and_training_share_one_tokenization(gpt2_tokenizer, alpaca_records) -> None:
    from sft.data.validate import collect_problems

    tokenized = TokenizedRecords(gpt2_tokenizer, TEMPLATE)
    problems = collect_problems(
        alpaca_records, "d.json", tokenizer=gpt2_tokenizer, max_length=512, token_lengths=tokenized
    )
    assert problems == []
    assert tokenized.dataset is not None
    held = tokenized.dataset
    assert tokenized.of(alpaca_records) is held


def test_too_long_records_report_as_before_with_a_measuring_function(gpt2_tokenizer, alpaca_records) -> None:
    from sft.data.validate import collect_problems

    limit = min(record_token_lengths(alpaca_records, gpt2_tokenizer, TEMPLATE))
    plain = collect_problems(alpaca_records, "d.json", tokenizer=gpt2_tokenizer, max_length=limit)
    measured = collect_problems(
        alpaca_records,
        "d.json",
        tokenizer=gpt2_tokenizer,
        max_length=limit,
        token_lengths=TokenizedRecords(gpt2_tokenizer, TEMPLATE),
    )
    assert plain == measured and plain[0].startswith("d.json: 3 of 4 records are longer than --max-length")


def test_training_tokenizes_once_and_the_next_run_reads_the_cache(tmp_path: Path, caplog, monkeypatch) -> None:
    from sft.data.synth import synth_records

    data = tmp_path / "data.json"
    data.write_text(json.dumps(synth_records(60, 5)), encoding="utf-8")
    args = ["train", TINY, "--dataset_name", str(data), "--max_steps", "1"]

    def refuse(*a, **k):
        raise AssertionError("records tokenized a second time for the length check")

    # The length check takes its lengths from the token ids training uses.
    monkeypatch.setattr(tokenize, "record_token_lengths", refuse)
    with caplog.at_level(logging.INFO, logger="sft.data.tokenize"):
        assert sft_main([*args, "--output_dir", str(tmp_path / "a")]) == 0
        assert "Tokenized 60 records (cached in" in caplog.text
        caplog.clear()
        assert sft_main([*args, "--output_dir", str(tmp_path / "b")]) == 0
        assert "Token ids of 60 records read from the cache" in caplog.text
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("a", "b")]
    assert metrics[0]["train_loss"] == pytest.approx(metrics[1]["train_loss"], rel=1e-6)
    assert metrics[0]["train_records"] == 51
