"""Check instruction records and describe every problem at once, each in words a user can act on.

A training run that dies on record 812 after the first 811 were fine wastes everyone's time, so
the whole file is checked before anything else happens and all problems are reported together.
Each message names the file, the record (and its line where known) and the field, and says what
to do about it.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

FIELDS = ("instruction", "input", "output")
ALPACA_MAP: dict[str, str] = {name: name for name in FIELDS}
# Required fields and what the record is missing without them; `input` is optional.
REQUIRED = {"instruction": "the task", "output": "the expected response"}


def collect_problems(
    raw: Any,
    source: str,
    field_map: Mapping[str, str] | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    template: Any = None,
    lines: Sequence[int] | None = None,
) -> list[str]:
    """Every problem in `raw` records read from `source`, one message each; `field_map` names the
    fields (target -> field in the file), Alpaca names by default.

    `lines` gives the line each record starts on, so messages can point into the file.
    """
    top = top_level_problem(raw, source)
    if top:
        return [top]
    mapping = dict(field_map or ALPACA_MAP)
    where = RecordLocator(source, lines)
    problems: dict[int, list[str]] = {}
    valid: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(raw):
        found = record_problems(record, mapping)
        if found:
            problems[index] = [f"{where(index)}: {text}" for text in found]
        else:
            valid[index] = to_alpaca(record, mapping)
    for index, text in duplicate_problems(valid):
        problems.setdefault(index, []).append(f"{where(index)}: {text}")
    if tokenizer is not None and max_length is not None:
        for index, text in length_problems(valid, tokenizer, max_length, template):
            problems.setdefault(index, []).append(f"{where(index)}: {text}")
    return [text for index in sorted(problems) for text in problems[index]]


class RecordLocator:
    """Formats `file: record N (line L)`; record numbers count from 0, as `--index` does."""

    def __init__(self, source: str, lines: Sequence[int] | None):
        self.source = source
        self.lines = lines

    def __call__(self, index: int) -> str:
        if self.lines is not None and index < len(self.lines):
            return f"{self.source}: record {index} (line {self.lines[index]})"
        return f"{self.source}: record {index}"


def top_level_problem(raw: Any, source: str) -> str | None:
    """A problem with the file as a whole: not a list of records, or no records at all."""
    if isinstance(raw, list):
        if not raw:
            return f'{source}: holds no records; add at least one {{"instruction", "input", "output"}} object'
        return None
    hint = ""
    if isinstance(raw, dict):
        keys = [key for key, value in raw.items() if isinstance(value, list)]
        if keys:
            hint = f" (the records may be the list under '{keys[0]}')"
    return (
        f"{source}: the top level is {json_type(raw)}, not an array of records{hint}; "
        "write the records as a JSON array [{...}, {...}] or as JSON Lines, one object per line"
    )


def record_problems(record: Any, mapping: Mapping[str, str]) -> list[str]:
    """Problems of one record on its own: its shape, its fields' types, empty required text."""
    if not isinstance(record, dict):
        return [
            f"is {json_type(record)}, not an object; each record must be an object like "
            '{"instruction": "...", "input": "...", "output": "..."}'
        ]
    found = []
    for target in FIELDS:
        name = field_label(target, mapping)
        key = mapping.get(target, target)
        if key not in record:
            if target in REQUIRED:
                found.append(f"field {name} is missing; add it ({REQUIRED[target]})")
            continue
        value = record[key]
        if target == "input" and value is None:
            continue  # a null input means "no input", as exported by many dataset tools
        if not isinstance(value, str):
            found.append(f"field {name} is {json_type(value)}, not a string; write it as text in quotes")
        elif target in REQUIRED and not value.strip():
            found.append(f"field {name} is empty; give the record {REQUIRED[target]} or remove it")
    return found


def duplicate_problems(valid: dict[int, dict[str, Any]]) -> list[tuple[int, str]]:
    """Exact repeats: they weigh one example twice in training and can leak across splits."""
    first_seen: dict[str, int] = {}
    found = []
    for index, record in valid.items():
        key = json.dumps(record, sort_keys=True, ensure_ascii=False)
        if key in first_seen:
            found.append((index, f"duplicates record {first_seen[key]} exactly; remove one of the two"))
        else:
            first_seen[key] = index
    return found


def length_problems(
    valid: dict[int, dict[str, Any]], tokenizer: Any, max_length: int, template: Any = None
) -> list[tuple[int, str]]:
    """Records that training would truncate, cutting off the response and its EOS."""
    from sft.data.template import PromptTemplate
    from sft.data.tokenize import record_token_lengths

    indices = list(valid)
    lengths = record_token_lengths([valid[i] for i in indices], tokenizer, template or PromptTemplate())
    return [
        (
            index,
            f"is {length} tokens long (prompt + response + EOS), more than --max-length {max_length}; "
            "shorten its fields, remove it, or raise --max-length",
        )
        for index, length in zip(indices, lengths)
        if length > max_length
    ]


def to_alpaca(record: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The record with `instruction`, `input`, `output` keys, other fields kept in their order.

    A missing or null input becomes "". Where a mapped field takes the place of a field already
    named like a target (say `output` while `answer` is mapped to output), the mapped one wins.
    """
    renamed = {source: target for target, source in mapping.items()}
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in renamed:
            out[renamed[key]] = value
        elif key not in mapping:
            out[key] = value
    if out.get("input") is None:
        out = insert_after(out, "instruction", "input", "")
    return out


def insert_after(record: dict[str, Any], anchor: str, key: str, value: Any) -> dict[str, Any]:
    """`record` with `key` placed right after `anchor`, keeping the seed's field order."""
    out: dict[str, Any] = {}
    for name, item in record.items():
        if name == key:
            continue
        out[name] = item
        if name == anchor:
            out[key] = value
    if key not in out:
        out[key] = value
    return out


def field_label(target: str, mapping: Mapping[str, str]) -> str:
    key = mapping.get(target, target)
    return f"'{key}'" if key == target else f"'{key}' (mapped to {target})"


def json_type(value: Any) -> str:
    """The JSON name of a value's type, which is what the user sees in their file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
