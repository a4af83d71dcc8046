"""Every validation problem is reported at once, naming the file, the record and the field."""

import json

import pytest

from sft.data.load import load_records
from sft.data.template import PromptTemplate
from sft.data.tokenize import record_token_lengths
from sft.data.validate import collect_problems
from sft.errors import DataError

GOOD = {"instruction": "Name a prime.", "input": "", "output": "7"}


def test_valid_records_have_no_problems(alpaca_records):
    assert collect_problems(alpaca_records, "data.json") == []


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("text", "data.json: record 1: is a string, not an object; each record must be an object like"),
        ([1, 2], "data.json: record 1: is an array, not an object"),
        ({"input": "", "output": "x"}, "data.json: record 1: field 'instruction' is missing; add it (the task)"),
        (
            {"instruction": "x", "input": ""},
            "data.json: record 1: field 'output' is missing; add it (the expected response)",
        ),
        (
            {"instruction": "x", "input": "", "output": ""},
            "data.json: record 1: field 'output' is empty; give the record the expected response or remove it",
        ),
        ({"instruction": "x", "input": "", "output": " \n"}, "data.json: record 1: field 'output' is empty"),
        (
            {"instruction": "", "input": "", "output": "y"},
            "data.json: record 1: field 'instruction' is empty; give the record the task or remove it",
        ),
        (
            {"instruction": "x", "input": "", "output": 42},
            "data.json: record 1: field 'output' is a number (42), not a string; write it as text in quotes",
        ),
        (
            {"instruction": ["x"], "input": "", "output": "y"},
            "data.json: record 1: field 'instruction' is an array, not a string",
        ),
        (
            {"instruction": "x", "input": {"a": 1}, "output": "y"},
            "data.json: record 1: field 'input' is an object, not a string",
        ),
        (
            {"instruction": "x", "input": True, "output": "y"},
            "data.json: record 1: field 'input' is a boolean, not a string",
        ),
        (
            {"instruction": None, "input": "", "output": "y"},
            "data.json: record 1: field 'instruction' is null, not a string",
        ),
    ],
)
def test_each_problem_names_file_record_and_field(record, expected):
    [problem] = collect_problems([GOOD, record], "data.json")
    assert problem.startswith(expected)


def test_missing_and_null_input_are_allowed():
    assert (
        collect_problems(
            [{"instruction": "a", "output": "b"}, {"instruction": "c", "input": None, "output": "d"}], "d.json"
        )
        == []
    )


def test_duplicates_name_both_records():
    other = {"instruction": "Name a colour.", "input": "", "output": "Red"}
    problems = collect_problems([GOOD, other, dict(GOOD), other], "d.json")
    assert problems == [
        "d.json: record 2: duplicates record 0 exactly; remove one of the two",
        "d.json: record 3: duplicates record 1 exactly; remove one of the two",
    ]


def test_missing_input_and_empty_input_count_as_the_same_record():
    no_input = {"instruction": GOOD["instruction"], "output": GOOD["output"]}
    assert collect_problems([GOOD, no_input], "d.json") == [
        "d.json: record 1: duplicates record 0 exactly; remove one of the two"
    ]


def test_all_problems_at_once_in_record_order():
    raw = [GOOD, {"instruction": 1}, "x", dict(GOOD), {"instruction": "y", "input": 3, "output": ""}]
    problems = collect_problems(raw, "d.json")
    assert [p.split(":")[1].strip() for p in problems] == ["record 1"] * 2 + ["record 2", "record 3"] + ["record 4"] * 2
    assert "field 'instruction' is a number (1)" in problems[0]
    assert "field 'output' is missing" in problems[1]


def test_too_long_records_use_the_training_token_count(gpt2_tokenizer):
    long = {"instruction": "Repeat.", "input": "", "output": "word " * 60}
    lengths = record_token_lengths([GOOD, long], gpt2_tokenizer, PromptTemplate())
    limit = lengths[0] + 1
    problems = collect_problems([GOOD, long], "d.json", tokenizer=gpt2_tokenizer, max_length=limit)
    assert problems == [
        f"d.json: 1 of 2 records are longer than --max-length {limit} tokens (longest: {lengths[1]}); "
        "raise it or shorten them",
        f"d.json: record 1: is {lengths[1]} tokens long (prompt + response + EOS)",
    ]
    assert collect_problems([GOOD, long], "d.json", tokenizer=gpt2_tokenizer, max_length=lengths[1]) == []


def test_many_too_long_records_are_one_summary_and_the_first_five(gpt2_tokenizer):
    longs = [{"instruction": f"Repeat {n}.", "input": "", "output": "word " * (20 + n)} for n in range(12)]
    raw = [GOOD, *longs[:3], {"instruction": "x", "output": ""}, *longs[3:]]
    lengths = record_token_lengths(longs, gpt2_tokenizer, PromptTemplate())
    limit = record_token_lengths([GOOD], gpt2_tokenizer, PromptTemplate())[0]
    problems = collect_problems(raw, "d.json", tokenizer=gpt2_tokenizer, max_length=limit)
    assert problems[0].startswith("d.json: record 4: field 'output' is empty")
    assert problems[1] == (
        f"d.json: 12 of 13 records are longer than --max-length {limit} tokens (longest: {max(lengths)}); "
        "raise it or shorten them"
    )
    assert problems[2:] == [
        f"d.json: record {index}: is {length} tokens long (prompt + response + EOS)"
        for index, length in zip([1, 2, 3, 5, 6], lengths)
    ]


def test_a_recipe_max_length_is_named_as_the_recipe_key(tmp_path, gpt2_tokenizer):
    from sft.data.split import DataArguments, load_splits

    path = tmp_path / "d.json"
    path.write_text(json.dumps([{**GOOD, "output": str(n)} for n in range(10)]), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_splits(DataArguments(dataset_name=str(path)), gpt2_tokenizer, max_length=3)
    assert caught.value.problems[0].startswith(f"{path}: 10 of 10 records are longer than max_length 3 tokens")
    assert len(caught.value.problems) == 6


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], "d.json: holds no records"),
        ({"a": 1}, "d.json: the top level is an object, not an array of records"),
        (None, "d.json: the top level is null"),
    ],
)
def test_top_level_problems(raw, expected):
    [problem] = collect_problems(raw, "d.json")
    assert problem.startswith(expected)


def test_loader_reports_every_problem_with_line_numbers(tmp_path):
    raw = [GOOD, {"instruction": "x", "output": ""}, GOOD, {"output": 5}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(raw, indent=4), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_records(str(path))
    assert caught.value.problems == [
        f"{path}: record 1 (line 7): field 'output' is empty; give the record the expected response or remove it",
        f"{path}: record 2 (line 11): duplicates record 0 exactly; remove one of the two",
        f"{path}: record 3 (line 16): field 'instruction' is missing; add it (the task)",
        f"{path}: record 3 (line 16): field 'output' is a number (5), not a string; write it as text in quotes",
    ]
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[6].strip() == "{" and lines[15].strip() == "{"


def test_jsonl_problems_give_the_file_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n" + json.dumps(GOOD) + "\n\n" + json.dumps({"instruction": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_records(str(path))
    assert caught.value.problems == [
        f"{path}: record 1 (line 4): field 'output' is missing; add it (the expected response)"
    ]
