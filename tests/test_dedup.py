"""`sft data dedup`: exact and near-duplicate records within a file and across two, removal, and the
warning training gives when held-out records near-duplicate training records."""

import json
import logging
from pathlib import Path

import pytest

from sft.cli import main as sft_main
from sft.data.dedup import (
    DEFAULT_THRESHOLD,
    LSH_RECALL,
    METHODS,
    cross_duplicates,
    find_duplicates,
    jaccard,
    lsh_bands,
    normalise,
    record_text,
    shingles,
)

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")

# Distinct records, none near another: each names a different task in different words.
BASE = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Sort the numbers in ascending order.", "input": "9, 2, 7", "output": "2, 7, 9"},
    {"instruction": "Translate the greeting into Spanish.", "input": "Good morning", "output": "Buenos días"},
    {"instruction": "Classify the sentiment of the review.", "input": "I loved every minute.", "output": "Positive"},
    {
        "instruction": "Summarise the paragraph in one sentence.",
        "input": "The committee met on Tuesday to review the budget, approved two new hires and postponed the "
        "decision on the office move until the spring.",
        "output": "The committee approved two hires and postponed the office move.",
    },
    {"instruction": "Give an antonym of the word.", "input": "generous", "output": "stingy"},
]
LONG = {
    "instruction": "Rewrite the following sentence so that it uses the passive voice instead of the active voice.",
    "input": "The experienced engineers from the northern laboratory carefully tested every prototype last winter.",
    "output": "Every prototype was carefully tested last winter by the experienced engineers from the northern "
    "laboratory.",
}
# LONG with one word changed: far above the default threshold.
LONG_VARIANT = {**LONG, "output": LONG["output"].replace("carefully", "thoroughly")}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def similarity(a: dict, b: dict) -> float:
    return jaccard(shingles(record_text(a)), shingles(record_text(b)))


# Similarity ----------------------------------------------------------------------------------------


def test_normalising_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  What is 2+2?\n\tAnswer:  FOUR!! ") == "what is 2 2 answer four"
    assert normalise("Hello,world") == normalise("hello ,  WORLD.")


@pytest.mark.parametrize("method", METHODS)
def test_exact_duplicates_are_paired_with_the_first(method: str) -> None:
    records = [*BASE[:3], dict(BASE[1]), BASE[3], dict(BASE[1])]
    pairs = find_duplicates(records, method=method)
    assert [(p.first, p.second, p.similarity) for p in pairs] == [(1, 3, 1.0), (1, 5, 1.0)]
    assert all(p.same == ("instruction", "input", "output") and not p.differs for p in pairs)


@pytest.mark.parametrize("method", METHODS)
def test_case_punctuation_and_spacing_variants_are_duplicates(method: str) -> None:
    variant = {
        "instruction": "name   the CAPITAL of france",
        "input": "",
        "output": "Paris -- is the capital of France!!!",
    }
    [pair] = find_duplicates([*BASE, variant], method=method)
    assert (pair.first, pair.second, pair.similarity) == (0, len(BASE), 1.0)
    assert pair.describe_fields() == "identical after normalising"


@pytest.mark.parametrize("method", METHODS)
def test_near_duplicate_above_and_different_record_below_the_threshold(method: str) -> None:
    near = similarity(LONG, LONG_VARIANT)
    assert DEFAULT_THRESHOLD <= near < 1.0
    # Same task, other wording: similar, yet below the default threshold.
    other = {**LONG, "output": "Last winter, every prototype was tested with care by the northern lab's engineers."}
    assert similarity(LONG, other) < DEFAULT_THRESHOLD
    [pair] = find_duplicates([LONG, *BASE, other, LONG_VARIANT], method=method)
    assert (pair.first, pair.second) == (0, len(BASE) + 2)
    assert pair.similarity == pytest.approx(near)
    assert pair.same == ("instruction", "input") and pair.differs == ("output",)
    # A lower threshold reaches the rewording too.
    low = find_duplicates([LONG, *BASE, other], threshold=similarity(LONG, other) - 0.01, method=method)
    assert [(p.first, p.second) for p in low] == [(0, len(BASE) + 1)]


def test_minhash_finds_what_exact_ngrams_find_on_many_records() -> None:
    from sft.data.synth import synth_records

    records = synth_records(3000, 3)
    for threshold in (0.9, 0.8):
        exact = {(p.first, p.second) for p in find_duplicates(records, threshold, "ngram")}
        fast = {(p.first, p.second) for p in find_duplicates(records, threshold, "minhash")}
        assert fast <= exact  # every pair named is checked exactly
        assert len(exact - fast) <= 0.01 * len(exact) + 1


def test_lsh_bands_find_a_pair_at_the_threshold() -> None:
    for threshold in (0.5, 0.8, 0.9, 0.95):
        bands, rows = lsh_bands(threshold)
        assert bands * rows <= 128
        assert 1 - (1 - threshold**rows) ** bands >= LSH_RECALL


@pytest.mark.parametrize("method", METHODS)
def test_cross_duplicates_name_each_checked_record(method: str) -> None:
    train = [*BASE, LONG, dict(LONG, kind="copy")]  # the same text twice in the checked set
    test = [BASE[2], LONG_VARIANT, {"instruction": "Name the capital of SPAIN.", "input": "", "output": "Madrid."}]
    pairs = cross_duplicates(train, test, method=method)
    assert [(p.first, p.second) for p in pairs] == [(2, 0), (len(BASE), 1), (len(BASE) + 1, 1)]
    assert pairs[0].similarity == 1.0 and pairs[1].similarity == pytest.approx(similarity(LONG, LONG_VARIANT))


def test_bad_threshold_and_method_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(BASE, threshold=0)
    with pytest.raises(ValueError, match="unknown method"):
        find_duplicates(BASE, method="cosine")


# The command ---------------------------------------------------------------------------------------


def test_clean_data_exits_0(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "data.json", BASE)
    assert sft_main(["data", "dedup", str(path)]) == 0
    assert f"{path}: {len(BASE)} records, no pairs at similarity >= 0.9 (minhash)" in capsys.readouterr().out


def test_duplicates_are_named_and_exit_1(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "data.json", [LONG, *BASE, dict(BASE[1]), LONG_VARIANT])
    # `check` refuses the exact repeat; dedup reports it with the near-duplicate.
    assert sft_main(["data", "check", str(path)]) == 2
    capsys.readouterr()
    assert sft_main(["data", "dedup", str(path)]) == 1
    out = capsys.readouterr().out
    assert "2 pairs at similarity >= 0.9 (minhash): 1 identical after normalising, 1 near" in out
    assert f"record {len(BASE) + 1} near-duplicates record 2: similarity 1.000, identical after normalising" in out
    near = similarity(LONG, LONG_VARIANT)
    expected = f"record {len(BASE) + 2} near-duplicates record 0: similarity {near:.3f}, same instruction and input"
    assert expected + "; output differs" in out
    assert "--remove --output OUT writes the data without 2 records" in out


def test_json_report(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "data.json", [LONG, *BASE, LONG_VARIANT])
    assert sft_main(["data", "dedup", str(path), "--json", "--method", "ngram", "--threshold", "0.85"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"] == 0.85 and report["method"] == "ngram" and report["records"] == len(BASE) + 2
    [pair] = report["pairs"]
    assert (pair["first"], pair["second"], pair["same"], pair["differs"]) == (
        0,
        len(BASE) + 1,
        ["instruction", "input"],
        ["output"],
    )
    assert report["records_to_remove"] == [len(BASE) + 1] and report["output"] is None


def test_against_reports_only_records_shared_with_the_other_file(tmp_path: Path, capsys) -> None:
    train = write(tmp_path / "train.json", [*BASE, dict(BASE[0], output="Paris is the capital of France!"), LONG])
    test = write(tmp_path / "test.jsonl", [])
    test.write_text("".join(json.dumps(r) + "\n" for r in [BASE[3], LONG_VARIANT]), encoding="utf-8")
    assert sft_main(["data", "dedup", str(train), "--against", str(test)]) == 1
    out = capsys.readouterr().out
    # Records 0 and 6 of train.json duplicate each other, but only what test.jsonl shares is named.
    assert f"{train}: 2 of {len(BASE) + 2} records near-duplicate records of {test}: 2 pairs" in out
    assert f"record 3 near-duplicates {test} record 0: similarity 1.000" in out
    assert f"record {len(BASE) + 1} near-duplicates {test} record 1: similarity" in out
    assert "record 0 near-duplicates" not in out
    clean = write(tmp_path / "other.json", [BASE[4]])
    assert sft_main(["data", "dedup", str(write(tmp_path / "a.json", BASE[:3])), "--against", str(clean)]) == 0


def test_remove_writes_the_data_without_the_later_records(tmp_path: Path, capsys) -> None:
    records = [dict(LONG, kind="a"), *BASE, dict(BASE[1], kind="b"), dict(LONG_VARIANT, kind="c"), dict(BASE[1])]
    path = write(tmp_path / "data.json", records)
    before = path.read_bytes()
    out_path = tmp_path / "clean.jsonl"
    assert sft_main(["data", "dedup", str(path), "--remove", "--output", str(out_path)]) == 0
    assert f"wrote {len(BASE) + 1} records to {out_path} (3 removed; {path} unchanged)" in capsys.readouterr().out
    assert path.read_bytes() == before
    kept = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
    assert kept == [records[0], *BASE]  # fields as in the file, extra ones too
    assert sft_main(["data", "dedup", str(out_path)]) == 0


def test_remove_against_drops_the_checked_files_records(tmp_path: Path, capsys) -> None:
    train = write(tmp_path / "train.json", [*BASE, LONG])
    test = write(tmp_path / "test.json", [LONG_VARIANT])
    out_path = tmp_path / "train-clean.json"
    args = ["data", "dedup", str(train), "--against", str(test), "--remove", "--output", str(out_path)]
    assert sft_main(args) == 0
    assert json.loads(out_path.read_text(encoding="utf-8")) == BASE
    assert json.loads(test.read_text(encoding="utf-8")) == [LONG_VARIANT]


@pytest.mark.parametrize("target", ["same", "spelled", "other"])
def test_remove_refuses_to_write_over_the_input(tmp_path: Path, capsys, target: str) -> None:
    path = write(tmp_path / "data.json", [*BASE, dict(BASE[0])])
    other = write(tmp_path / "other.json", [BASE[0]])
    output = {"same": str(path), "spelled": str(tmp_path / "sub" / ".." / "data.json"), "other": str(other)}[target]
    (tmp_path / "sub").mkdir()
    before = path.read_bytes(), other.read_bytes()
    assert sft_main(["data", "dedup", str(path), "--against", str(other), "--remove", "--output", output]) == 2
    assert "itself; write the deduplicated data to a new file" in capsys.readouterr().err
    assert (path.read_bytes(), other.read_bytes()) == before


def test_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "data.json", BASE)
    assert sft_main(["data", "dedup", str(path), "--remove"]) == 2
    assert "--remove and --output go together" in capsys.readouterr().err
    assert sft_main(["data", "dedup", str(path), "--output", str(tmp_path / "o.json")]) == 2
    assert sft_main(["data", "dedup", str(path), "--threshold", "1.5"]) == 2
    assert "must be more than 0 and at most 1" in capsys.readouterr().err
    bad = write(tmp_path / "bad.json", [{"instruction": "x"}])
    assert sft_main(["data", "dedup", str(bad)]) == 2
    assert "record 0 (line 2): field 'output' is missing" in capsys.readouterr().err


def test_help(capsys) -> None:
    assert sft_main(["data", "--help"]) == 0
    assert "dedup" in capsys.readouterr().out
    assert sft_main(["data", "dedup", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("--threshold", "--against", "--remove", "--output", "default 0.9", "Exits 0", "1 when pairs"):
        assert text in out


# Training ------------------------------------------------------------------------------------------


def test_training_warns_when_a_test_record_near_duplicates_a_training_record(tmp_path: Path, caplog) -> None:
    from sft.data.synth import synth_records

    records = synth_records(40, 11)
    # 40 records: 34 train (0-33), 4 test (34-37), 2 validation (38, 39). Test record 35 becomes a copy of
    # training record 3 in other case and punctuation, and validation record 39 a near copy of LONG at 5.
    records[35] = {**records[3], "instruction": records[3]["instruction"].upper() + " !"}
    records[5], records[39] = {**LONG, "kind": "x"}, {**LONG_VARIANT, "kind": "x"}
    data = write(tmp_path / "data.json", records)
    with caplog.at_level(logging.INFO):
        args = ["--dataset_name", str(data), "--max_steps", "1", "--max_length", "512"]
        assert sft_main(["train", TINY, *args, "--output_dir", str(tmp_path / "o")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "sft.train" and "near-duplicate" in r.getMessage()]
    assert "record 35 (test) near-duplicates training record 3: similarity 1.000, identical after normalising" in lines
    near = f"{similarity(LONG, LONG_VARIANT):.3f}"
    assert f"record 39 (validation) near-duplicates training record 5: similarity {near}" in "\n".join(lines)
    assert any(line.startswith("1 validation and 1 test records near-duplicate training records") for line in lines)
    assert all(r.levelno == logging.WARNING for r in caplog.records if "near-duplicate" in r.getMessage())


def test_numpy_check_agrees_with_the_shingle_strings() -> None:
    import numpy as np

    from sft.data.dedup import verify, verify_hashed
    from sft.data.synth import synth_records

    texts = [record_text(record) for record in synth_records(400, 2)] + ["", "ab", "abcde", "abcdef"]
    candidates = np.array([(i, j) for i in range(len(texts)) for j in range(i + 1, min(i + 30, len(texts)))])
    assert verify_hashed(candidates, texts, 0.4) == verify(candidates, texts, 0.4)
