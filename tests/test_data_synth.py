"""The synthetic data set: deterministic, distinct, varied, valid, and with answers that check out."""

import json
import re
from collections import Counter

import pytest

from sft.data.synth import CAPITALS, KINDS, PLURALS, number_words, synth_records
from sft.data.validate import collect_problems


@pytest.fixture(scope="module")
def records() -> list[dict[str, str]]:
    return synth_records(1200, 0)


def test_same_seed_same_records_and_longer_runs_extend_shorter_ones(records):
    assert synth_records(1200, 0) == records
    assert synth_records(300, 0) == records[:300]
    assert synth_records(300, 1) != records[:300]


@pytest.mark.parametrize("n", [1000, 1200, 5000])
def test_records_are_distinct(n):
    generated = synth_records(n, 0)
    assert len(generated) == n
    assert len({(r["instruction"], r["input"], r["output"]) for r in generated}) == n


def test_records_are_valid_alpaca_with_a_kind(records):
    assert collect_problems(records, "sft-synth") == []
    assert all(list(r) == ["instruction", "input", "output", "kind"] for r in records)
    assert all(isinstance(value, str) for r in records for value in r.values())


def test_all_task_kinds_appear_with_and_without_input(records):
    kinds = Counter(r["kind"] for r in records)
    assert (
        set(kinds)
        == set(KINDS)
        == {
            "writing",
            "question_answering",
            "rewriting",
            "classification",
            "summarising",
            "json_extraction",
        }
    )
    assert min(kinds.values()) > 100
    with_input = sum(1 for r in records if r["input"])
    assert 0.2 * len(records) < with_input < 0.9 * len(records)


def test_zero_and_negative_sizes():
    assert synth_records(0, 0) == []
    with pytest.raises(ValueError):
        synth_records(-1, 0)


def test_arithmetic_answers_are_right(records):
    checked = 0
    for r in records:
        match = re.fullmatch(r"What is (\d+) (plus|minus|times) (\d+)\?", r["instruction"])
        if match:
            a, op, b = int(match[1]), match[2], int(match[3])
            result = {"plus": a + b, "minus": a - b, "times": a * b}[op]
            assert r["output"] == f"{a} {op} {b} is {result}."
            checked += 1
        elif r["instruction"] == "Calculate the value of the expression.":
            a, op, b = r["input"].split()
            assert int(r["output"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            checked += 1
    assert checked > 20


def test_lookup_answers_match_their_tables(records):
    for r in records:
        match = re.fullmatch(r"What is the capital of (.+)\?", r["instruction"])
        if match:
            assert r["output"] == f"The capital of {match[1]} is {CAPITALS[match[1]]}."
        if r["instruction"] == "Rewrite the noun in its plural form.":
            assert r["output"] == PLURALS[r["input"]]


def test_sorting_counting_and_json_answers(records):
    for r in records:
        if r["instruction"] == "Sort these words into alphabetical order.":
            assert r["output"].split(", ") == sorted(r["input"].split(", "))
        if r["instruction"] == "How many words are in the following text?":
            assert int(r["output"]) == len(r["input"].split())
        if r["kind"] == "json_extraction":
            values = json.loads(r["output"])
            assert all(str(value) in r["input"] or f"{value:.2f}" in r["input"] for value in values.values())


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (58, "fifty-eight"),
        (100, "one hundred"),
        (101, "one hundred and one"),
        (2005, "two thousand and five"),
        (70300, "seventy thousand three hundred"),
        (99999, "ninety-nine thousand nine hundred and ninety-nine"),
    ],
)
def test_number_words(value, words):
    assert number_words(value) == words
