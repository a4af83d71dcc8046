"""Check instruction records and describe every problem at once, each in words a user can act on.

A training run that dies on record 812 after the first 811 were fine wastes everyone's time, so
the whole file is checked before anything else happens and all problems are reported together.
Each message names the file, the record (and its line where known) and the field, and says what
to do about it.
"""

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

FIELDS = ("instruction", "input", "output")
ALPACA_MAP: dict[str, str] = {name: name for name in FIELDS}
# Required fields and what the record is missing without them; `input` is optional.
REQUIRED = {"instruction": "the task", "output": "the expected response"}
# How many over-long records a length problem lists by name; the summary line counts them all.
LENGTH_EXAMPLES = 5
# JSON escapes such as "\ud800" decode to lone UTF-16 surrogates, which no UTF-8 writer or
# tokenizer accepts; a correctly paired escape has already become one character when parsed.
SURROGATE = re.compile(r"[\ud800-\udfff]")


class RepeatedKeys(dict):
    """A parsed JSON object that named some key more than once; `repeated` counts each such key."""

    repeated: dict[str, int]


def json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for json.loads: a plain dict, or a RepeatedKeys that remembers keys given twice.

    json.loads alone keeps the last value of a repeated key and drops the others without a word.
    """
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    repeated = RepeatedKeys(value)
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    repeated.repeated = {key: count for key, count in counts.items() if count > 1}
    return repeated


def collect_problems(
    raw: Any,
    source: str,
    field_map: Mapping[str, str] | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    template: Any = None,
    lines: Sequence[int] | None = None,
    length_option: str = "--max-length",
    duplicates: bool = True,
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
) -> list[str]:
    """Every problem in `raw` records read from `source`, one message each; `field_map` names the
    fields (target -> field in the file), Alpaca names by default.

    `lines` gives the line each record starts on, so messages can point into the file. Records
    longer than `max_length` are summed up in one line after the other problems (with the first few
    named), since a limit that is too small would otherwise flag most of a data set;
    `length_option` is how that line names the limit (`max_length` in a recipe). `duplicates=False`
    lets exact repeats pass (`sft data dedup` reports them itself); `token_lengths` measures the valid
    records instead of tokenizing them here (training passes one that keeps the token ids it computes).
    """
    return check_records(
        raw, source, field_map, tokenizer, max_length, template, lines, length_option, duplicates, token_lengths
    )[0]


def check_records(
    raw: Any,
    source: str,
    field_map: Mapping[str, str] | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    template: Any = None,
    lines: Sequence[int] | None = None,
    length_option: str = "--max-length",
    duplicates: bool = True,
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """`collect_problems`, also returning the valid records in Alpaca form by index, so a caller that
    finds no problems does not convert them again."""
    top = top_level_problem(raw, source)
    if top:
        return [top], {}
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
    if duplicates:
        for index, text in duplicate_problems(valid):
            problems.setdefault(index, []).append(f"{where(index)}: {text}")
    found = [text for index in sorted(problems) for text in problems[index]]
    if tokenizer is not None and max_length is not None:
        # A measuring function sees only a whole, valid data set: the lengths it keeps are then the training set's.
        measure = token_lengths if not found else None
        found += length_problems(valid, tokenizer, max_length, template, where, length_option, measure)
    return found, valid


class RecordLocator:
    """Formats `file: record N (line L)`; record numbers count from 0, as `--index` does."""

    def __init__(self, source: str, lines: Sequence[int] | None):
        self.source = source
        self.lines = lines

    def __call__(self, index: int) -> str:
        if self.lines is not None and index < len(self.lines):
            return f"{self.source}: record {index} (line {self.lines[index]})"
        return f"{self.source}: record {index}"


def top_level_problem(raw: Any, source: str, fields: Sequence[str] = FIELDS) -> str | None:
    """A problem with the file as a whole: not a list of records, or no records at all (`fields` name what a
    record holds, for the message)."""
    if isinstance(raw, list):
        if not raw:
            example = ", ".join(f'"{name}"' for name in fields)
            return f"{source}: holds no records; add at least one {{{example}}} object"
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


def not_an_object(record: Any, what: str, fields: Sequence[str]) -> str:
    example = ", ".join(f'"{name}": "..."' for name in fields)
    return f"is {json_type(record)}, not an object; each {what} must be an object like {{{example}}}"


def repeated_keys(record: Any) -> list[str]:
    """A key the JSON text gave twice (the parser marks them on the record): only its last value is kept."""
    return [
        f"key {shown(key)} appears {count} times; JSON keeps only the last value, so keep one and remove the others"
        for key, count in getattr(record, "repeated", {}).items()
    ]


def record_problems(record: Any, mapping: Mapping[str, str]) -> list[str]:
    """Problems of one record on its own: its shape, its fields' types, empty required text."""
    if not isinstance(record, dict):
        return [not_an_object(record, "record", FIELDS)]
    found = repeated_keys(record)
    for target in FIELDS:
        key = mapping.get(target, target)
        if key not in record:
            if target in REQUIRED:
                found.append(f"field {field_label(target, mapping)} is missing; add it ({REQUIRED[target]})")
            continue
        value = record[key]
        if target == "input" and value is None:
            continue  # a null input means "no input", as exported by many dataset tools
        # The label is built only for a problem: this loop runs for every field of every record.
        if not isinstance(value, str):
            found.append(
                f"field {field_label(target, mapping)} is {json_type(value)}, not a string; write it as text in quotes"
            )
        elif SURROGATE.search(value):
            found.append(surrogate_problem(f"field {field_label(target, mapping)}", value))
        elif target in REQUIRED and not value.strip():
            found.append(
                f"field {field_label(target, mapping)} is empty; give the record {REQUIRED[target]} or remove it"
            )
    return found + other_field_problems(record, {mapping.get(target, target) for target in FIELDS})


def other_field_problems(record: dict[str, Any], known: set[str]) -> list[str]:
    """Broken text in the fields other than `known`, which are kept and written out with the record."""
    if record.keys() <= known:  # the usual record: nothing else to look at (a fast path at Alpaca scale)
        return []
    found = []
    for key, value in record.items():
        if key in known:
            continue
        if SURROGATE.search(key):
            found.append(surrogate_problem(f"the field name {shown(key)}", key))
        elif (bad := broken_string(value)) is not None:
            found.append(surrogate_problem(f"field {shown(key)}", bad, nested=not isinstance(value, str)))
    return found


def broken_string(value: Any) -> str | None:
    """A string (or object key) inside `value` that holds a lone surrogate, if any.

    Walked with a list rather than recursion: parsed JSON can be nested nearly as deep as Python's
    recursion limit allows.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return item
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
    return None


def surrogate_problem(subject: str, text: str, nested: bool = False) -> str:
    """Names the escape as the user wrote it: the lone surrogate itself cannot even be printed."""
    match = SURROGATE.search(text)
    escape = f"\\u{ord(match.group()):04x}" if match else ""
    where = "in a nested value" if nested else f"at character {match.start() if match else 0}"
    return (
        f"{subject} holds an unpaired surrogate escape {escape} {where}; fix the escape "
        "(a surrogate must be followed by its pair, as in \\ud83d\\ude00) or remove it"
    )


def shown(key: str) -> str:
    """A key quoted for a message, with any lone surrogate written as its escape so the line can be printed."""
    return "'" + key.encode("utf-8", "backslashreplace").decode("utf-8") + "'"


def duplicate_problems(valid: dict[int, dict[str, Any]]) -> list[tuple[int, str]]:
    """Exact repeats: they weigh one example twice in training and can leak across splits."""
    first_seen: dict[Any, int] = {}
    found = []
    for index, record in valid.items():
        key = duplicate_key(record)
        if key in first_seen:
            found.append((index, f"duplicates record {first_seen[key]} exactly; remove one of the two"))
        else:
            first_seen[key] = index
    return found


def duplicate_key(record: dict[str, Any]) -> Any:
    """A hashable key equal for exactly the records whose sorted-key JSON is equal.

    Records whose values are all strings (nearly all) use their sorted items, several times faster than
    serialising them; any other value is serialised, since 1, 1.0 and true are equal in Python but not in JSON.
    """
    if all(type(value) is str for value in record.values()):
        return tuple(sorted(record.items()))
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def length_problems(
    valid: dict[int, dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    template: Any = None,
    where: Any = None,
    option: str = "--max-length",
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
) -> list[str]:
    """Records that training would truncate, cutting off the response and its EOS: one summary line, then
    the first few of them by name (`where` formats a record's place, as RecordLocator does). `token_lengths`,
    given, measures the records instead of tokenizing them with `tokenizer` and `template`."""
    from sft.data.template import PromptTemplate
    from sft.data.tokenize import record_token_lengths

    where = where or RecordLocator("data", None)
    indices = list(valid)
    records = [valid[i] for i in indices]
    if token_lengths is not None:
        lengths = list(token_lengths(records))
    else:
        lengths = record_token_lengths(records, tokenizer, template or PromptTemplate())
    return too_long(indices, lengths, max_length, where, option, "records", "prompt + response + EOS")


def too_long(
    indices: Sequence[int], lengths: Sequence[int], max_length: int, where: Any, option: str, what: str, measure: str
) -> list[str]:
    """Records (or pairs: `what`) longer than `max_length` tokens: one summary line, then the first few by name,
    each with its length (`measure` says what was counted)."""
    over = [(index, length) for index, length in zip(indices, lengths) if length > max_length]
    if not over:
        return []
    summary = (
        f"{where.source}: {len(over)} of {len(indices)} {what} are longer than {option} {max_length} tokens "
        f"(longest: {max(length for _, length in over)}); raise it or shorten them"
    )
    examples = [f"{where(index)}: is {length} tokens long ({measure})" for index, length in over[:LENGTH_EXAMPLES]]
    return [summary, *examples]


# Preference pairs ----------------------------------------------------------------------------------
#
# TRL's DPOTrainer layout: a `prompt` and two responses to it, `chosen` (preferred) and `rejected`, with the
# source record's instruction, input and output beside them where `sft prefs build` wrote it. A file is read
# as pairs where any record has a `chosen` or `rejected` key.

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
PREFERENCE_MARKERS = ("chosen", "rejected")
# What a pair is missing without each field.
PREFERENCE_REQUIRED = {
    "prompt": "the prompt both responses answer",
    "chosen": "the preferred response",
    "rejected": "the response the model should move away from",
}


def is_preference_layout(raw: Any) -> bool:
    """Whether parsed records are preference pairs: some record has a `chosen` or `rejected` key."""
    if not isinstance(raw, list):
        return False
    return any(isinstance(record, dict) and any(key in record for key in PREFERENCE_MARKERS) for record in raw)


def check_preference_records(
    raw: Any,
    source: str,
    tokenizer: Any = None,
    max_length: int | None = None,
    lines: Sequence[int] | None = None,
    length_option: str = "--max-length",
    duplicates: bool = True,
) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """`check_records` for preference pairs: every problem, one line each, naming the file, the record (from 0)
    and the field, and the valid pairs by index. With a `tokenizer` and `max_length`, pairs longer than that
    (prompt + the longer response + EOS, as training encodes them) are problems too."""
    top = top_level_problem(raw, source, PREFERENCE_FIELDS)
    if top:
        return [top], {}
    where = RecordLocator(source, lines)
    problems: dict[int, list[str]] = {}
    valid: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(raw):
        found = preference_problems(record)
        if found:
            problems[index] = [f"{where(index)}: {text}" for text in found]
        else:
            valid[index] = dict(record)
    if duplicates:
        for index, text in duplicate_problems(valid):
            problems.setdefault(index, []).append(f"{where(index)}: {text}")
    found = [text for index in sorted(problems) for text in problems[index]]
    if tokenizer is not None and max_length is not None and not found:
        found += preference_length_problems(valid, tokenizer, max_length, where, length_option)
    return found, valid


def preference_problems(record: Any) -> list[str]:
    """Problems of one pair on its own: its shape, missing, empty or non-text fields, two identical responses."""
    if not isinstance(record, dict):
        return [not_an_object(record, "pair", PREFERENCE_FIELDS)]
    found = repeated_keys(record)
    for name, meaning in PREFERENCE_REQUIRED.items():
        if name not in record:
            found.append(f"field '{name}' is missing; add it ({meaning})")
            continue
        value = record[name]
        if not isinstance(value, str):
            found.append(f"field '{name}' is {json_type(value)}, not a string; write it as text in quotes")
        elif SURROGATE.search(value):
            found.append(surrogate_problem(f"field '{name}'", value))
        elif not value.strip():
            found.append(f"field '{name}' is empty; give the pair {meaning} or remove it")
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if isinstance(chosen, str) and isinstance(rejected, str) and chosen.strip() and chosen.strip() == rejected.strip():
        found.append(
            "fields 'chosen' and 'rejected' are the same text, so the pair prefers nothing; remove it or change one"
        )
    # The source record's fields, where given, are text as in an instruction file (a null input means none).
    for name in FIELDS:
        value = record.get(name)
        if name not in record or (name == "input" and value is None):
            continue
        if not isinstance(value, str):
            found.append(f"field '{name}' is {json_type(value)}, not a string; write it as text in quotes")
        elif SURROGATE.search(value):
            found.append(surrogate_problem(f"field '{name}'", value))
    return found + other_field_problems(record, {*PREFERENCE_FIELDS, *FIELDS})


def preference_token_lengths(records: Sequence[dict[str, Any]], tokenizer: Any) -> list[int]:
    """Prompt + the longer response + EOS of each pair, in tokens, as DPO training encodes them (the prompt with
    the tokenizer's special tokens, each response alone and closed by EOS, as SFT encodes a record)."""
    from sft.data.tokenize import LENGTH_BATCH, encode_completions, encode_prompts

    lengths: list[int] = []
    for start in range(0, len(records), LENGTH_BATCH):
        chunk = records[start : start + LENGTH_BATCH]
        prompts = encode_prompts(tokenizer, [r["prompt"] for r in chunk])
        chosen = encode_completions(tokenizer, [r["chosen"] for r in chunk])
        rejected = encode_completions(tokenizer, [r["rejected"] for r in chunk])
        lengths += [len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected)]
    return lengths


def preference_length_problems(
    valid: dict[int, dict[str, Any]], tokenizer: Any, max_length: int, where: Any, option: str
) -> list[str]:
    """Pairs that training would truncate: one summary line, then the first few by name."""
    indices = list(valid)
    lengths = preference_token_lengths([valid[i] for i in indices], tokenizer)
    return too_long(indices, lengths, max_length, where, option, "pairs", "prompt + the longer response + EOS")


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
