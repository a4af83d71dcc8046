"""`sft score`: the reference figures on the shared responses file, output file, missing responses."""

import json
import re
from pathlib import Path

import pytest

from sft.cli import main as sft_main
from sft.evaluation.commands import score_command

SHARED_RESPONSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "instruction-data-with-response.json"


@pytest.mark.skipif(not SHARED_RESPONSES.is_file(), reason="shared seed data not present")
def test_reference_figures_on_shared_file(tmp_path, capsys):
    output = tmp_path / "metrics.json"
    assert score_command([str(SHARED_RESPONSES), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    interval = r" +\[(\d+\.\d+), (\d+\.\d+)\]$"
    rouge = re.search(r"^ROUGE-L +0\.5892" + interval, printed, re.MULTILINE)  # accented words whole since 0.5895
    bleu = re.search(r"^BLEU +28\.83" + interval, printed, re.MULTILINE)
    exact = re.search(r"^exact match +0\.1545" + interval, printed, re.MULTILINE)
    assert rouge and bleu and exact, printed
    assert "1000 resamples, seed 0" in printed
    scores = json.loads(output.read_text(encoding="utf-8"))
    for key, match in (("rouge_l", rouge), ("bleu", bleu), ("exact_match", exact)):
        low, high = scores[f"{key}_ci"]
        assert low < scores[key] < high
        assert [float(match[1]), float(match[2])] == pytest.approx([low, high], abs=0.006)
    assert scores["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95}
    # Seeded: a rerun prints the same intervals.
    assert score_command([str(SHARED_RESPONSES)]) == 0
    assert capsys.readouterr().out == printed.replace(f"scores written to {output}\n", "")
    assert scores["rouge_l"] == pytest.approx(0.5892, abs=0.0001)
    assert scores["bleu"] == pytest.approx(28.83, abs=0.05)
    assert scores["exact_match"] == pytest.approx(0.1545, abs=0.001)
    assert scores["n"] == len(scores["per_record"]) == 110


def test_scores_a_small_file(tmp_path, capsys):
    path = tmp_path / "responses.json"
    records = [
        {"instruction": "Capital of France?", "input": "", "output": "Paris.", "model_response": "Paris."},
        {"instruction": "Say hi in Chinese.", "input": "", "output": "你好", "model_response": "你好"},
        {"instruction": "Antonym of hot?", "input": "", "output": "Cold", "model_response": "cold."},
    ]
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    assert score_command([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "exact match              0.6667  [0.0000, 1.0000]" in printed
    assert "exact match, normalised  1.0000  [1.0000, 1.0000]" in printed
    assert "records                  3\n" in printed


def test_bootstrap_options(tmp_path, capsys):
    path = tmp_path / "responses.json"
    records = [{"instruction": "a", "output": f"answer {i}", "model_response": f"answer {i % 3}"} for i in range(12)]
    path.write_text(json.dumps(records), encoding="utf-8")
    output = tmp_path / "scores.json"
    argv = [str(path), "--output", str(output), "--bootstrap-resamples", "50", "--bootstrap-seed", "7"]
    assert score_command(argv) == 0
    assert "50 resamples, seed 7" in capsys.readouterr().out
    bootstrap = json.loads(output.read_text(encoding="utf-8"))["bootstrap"]
    assert bootstrap == {"resamples": 50, "seed": 7, "confidence": 0.95}
    with pytest.raises(SystemExit):
        score_command([str(path), "--bootstrap-resamples", "0"])


def test_missing_responses_are_listed(tmp_path, capsys):
    path = tmp_path / "responses.json"
    records = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "c", "input": "", "output": "d", "model_response": "d"},
        {"instruction": "e", "input": "", "output": "f", "model_response": None},
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    assert sft_main(["score", str(path)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2
    assert "record 0:" in errors[0] and "record 2:" in errors[1]  # counted from 0, as `sft data check` counts


def test_a_file_without_responses_gets_one_message(alpaca_file, capsys):
    assert sft_main(["score", str(alpaca_file)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and "sft eval" in errors[0]


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sft_main(["score", "--help"])
    assert exit_info.value.code == 0
    assert "usage: sft score" in capsys.readouterr().out


def responses_with_ratings(tmp_path, ratings=None, judgements=None):
    records = [
        {"instruction": f"q{i}", "input": "", "output": f"answer {i}", "model_response": f"answer {i % 2}"}
        for i in range(5)
    ]
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    if ratings is not None:
        (tmp_path / "human_ratings.json").write_text(json.dumps(ratings), encoding="utf-8")
    if judgements is not None:
        (tmp_path / "judgements.json").write_text(json.dumps(judgements), encoding="utf-8")
    return path


def four(index, value):
    return {"index": index, "relevance": value, "accuracy": value, "fluency": value, "completeness": value}


def test_score_without_human_ratings_says_nothing_of_them(tmp_path, capsys):
    path = responses_with_ratings(tmp_path)
    output = tmp_path / "scores.json"
    assert score_command([str(path), "--output", str(output)]) == 0
    assert "human ratings" not in capsys.readouterr().out
    assert "human_ratings" not in json.loads(output.read_text(encoding="utf-8"))


def test_score_with_human_ratings_and_the_judge_beside(tmp_path, capsys):
    ratings = {"responses": "responses.json", "ratings": [four(0, 2), four(1, 5), four(3, 4), four(4, 1)]}
    path = responses_with_ratings(tmp_path, ratings)
    assert score_command([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "human ratings (human_ratings.json): 4 of 5 records rated, 1-5" in printed
    assert re.search(r"^  relevance +3\.00  \[\d\.\d\d, \d\.\d\d\]$", printed, re.MULTILINE), printed
    assert "no judge scores beside the file" in printed
    # The judge ranks the rated records as the person does (record 2 it scored, the person did not).
    judgements = [{"index": i, "score": score, "scored": True} for i, score in enumerate([30, 90, 50, 70, 10])]
    path = responses_with_ratings(tmp_path, ratings, judgements)
    output = tmp_path / "scores.json"
    assert score_command([str(path), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "agreement of the human ratings with the judge" in printed
    row = next(line for line in printed.splitlines() if line.startswith("  overall (mean of 4)") and "1.0000" in line)
    assert row.split()[4:] == ["4", row.split()[5], "1.0000", "1.0000"]
    human = json.loads(output.read_text(encoding="utf-8"))["human_ratings"]
    assert human["rated"] == 4 and human["means"]["overall"] == pytest.approx(3.0)
    overall = human["agreement"]["overall"]
    assert overall["n"] == 4 and overall["spearman"] == pytest.approx(1.0) and overall["kendall"] == pytest.approx(1.0)
    # Two records with both: the count, and that correlations need three.
    judgements = [{"index": 0, "score": 30, "scored": True}, {"index": 1, "score": 60, "scored": True}]
    path = responses_with_ratings(tmp_path, ratings, judgements)
    assert score_command([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "correlations need at least 3 records rated by both" in printed


def test_a_malformed_human_ratings_file_is_one_line(tmp_path, capsys):
    ratings = {"responses": "responses.json", "ratings": [four(0, 2), {**four(1, 3), "fluency": 0}]}
    path = responses_with_ratings(tmp_path, ratings)
    assert sft_main(["score", str(path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "human_ratings.json: ratings[1] (record 1): `fluency` is 0" in errors[0], errors
