"""`sft eval` and `evaluate_model` on the tiny model: files, keys, splits, kinds; the eval report."""

import json
import re
from pathlib import Path

import pytest

from sft.cli import main as sft_main
from sft.data.split import DataArguments, select_split
from sft.evaluation.evaluate import evaluate_model, slug
from sft.evaluation.metrics import FIGURES
from sft.evaluation.report import eval_report
from sft.inference.settings import GenerationSettings

METRIC_KEYS = {
    "model",
    "data",
    "split",
    "n",
    "rouge_l",
    "bleu",
    "exact_match",
    "exact_match_normalized",
    "ended_at_eos",
    "generation",
    "seconds",
    "responses_per_second",
    "by_kind",
    "per_record",
    "rouge_l_ci",
    "bleu_ci",
    "exact_match_ci",
    "exact_match_normalized_ci",
    "ended_at_eos_ci",
    "bootstrap",
}


def write_records(path, n, kinds=False):
    records = []
    for i in range(n):
        record = {"instruction": f"Repeat the number {i}.", "input": "" if i % 2 else f"{i}", "output": f"{i}"}
        if kinds:
            record["kind"] = "even" if i % 2 == 0 else "odd"
        records.append(record)
    path.write_text(json.dumps(records), encoding="utf-8")
    return records


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_eval_writes_responses_metrics_and_report(tiny_model_dir, alpaca_file, alpaca_records, tmp_path, capsys):
    out = tmp_path / "eval"
    code = sft_main(
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(alpaca_file),
            "--split",
            "all",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "3",
            "--output-dir",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    responses = read(out / "responses.json")
    assert [{k: v for k, v in r.items() if k != "model_response"} for r in responses] == alpaca_records
    assert all(isinstance(r["model_response"], str) for r in responses)
    metrics = read(out / "eval_metrics.json")
    assert set(metrics) >= METRIC_KEYS
    assert metrics["n"] == len(metrics["per_record"]) == 4
    assert metrics["split"] == "all" and metrics["model"] == str(tiny_model_dir)
    assert metrics["generation"]["max_new_tokens"] == 4 and metrics["generation"]["greedy"]
    assert 0 <= metrics["ended_at_eos"] <= 1
    assert {"new_tokens", "ended_at_eos", "rouge_l"} <= set(metrics["per_record"][0])
    for key in ("rouge_l", "bleu", "exact_match", "exact_match_normalized", "ended_at_eos"):
        low, high = metrics[f"{key}_ci"]
        assert low - 1e-9 <= metrics[key] <= high + 1e-9, key
    assert metrics["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| ROUGE-L |" in report and "worst records by ROUGE-L" in report
    assert "| metric | value | 95% interval |" in report
    rouge = next(f for f in FIGURES if f.key == "rouge_l")
    eos = next(f for f in FIGURES if f.key == "ended_at_eos")
    assert f"| ROUGE-L | {rouge.show(metrics['rouge_l'])} | {rouge.show_interval(metrics['rouge_l_ci'])} |" in report
    assert "1000 resamples, seed 0" in report
    printed = capsys.readouterr().out
    assert "ended at EOS" in printed and eos.show_interval(metrics["ended_at_eos_ci"]) in printed
    assert "95% intervals" in printed


def test_eval_uses_the_seed_split_and_limit(tmp_path):
    data = tmp_path / "data.json"
    records = write_records(data, 40)
    out = tmp_path / "eval"
    assert (
        sft_main(
            [
                "eval",
                "--model",
                "sft-tiny-gpt2",
                "--data",
                str(data),
                "--limit",
                "3",
                "--max-new-tokens",
                "2",
                "--output-dir",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    # 40 records: 34 train, then 4 test, then 2 validation; the limit keeps the first 3 of test.
    assert [r["instruction"] for r in read(out / "responses.json")] == [r["instruction"] for r in records[34:37]]


def test_breakdown_by_kind(tiny_model_dir, tmp_path):
    data = tmp_path / "data.json"
    write_records(data, 6, kinds=True)
    out = tmp_path / "eval"
    assert (
        sft_main(
            [
                "eval",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(data),
                "--split",
                "all",
                "--max-new-tokens",
                "2",
                "--output-dir",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = read(out / "eval_metrics.json")
    assert set(metrics["by_kind"]) == {"even", "odd"}
    assert metrics["by_kind"]["even"]["n"] == 3
    assert read(out / "responses.json")[0]["kind"] == "even"
    assert "## By task kind" in (out / "report.md").read_text(encoding="utf-8")


def test_evaluate_model_with_a_model_in_memory(alpaca_records, tmp_path):
    from sft.inference.generate import load_for_inference

    model, tokenizer, template = load_for_inference("sft-tiny-gpt2")
    metrics = evaluate_model(
        "in-memory",
        alpaca_records,
        tmp_path,
        GenerationSettings(max_new_tokens=3),
        model=model,
        tokenizer=tokenizer,
        template=template,
        progress=False,
    ).metrics
    assert metrics["model"] == "in-memory" and metrics["n"] == 4
    assert metrics == read(tmp_path / "eval_metrics.json")
    assert metrics["by_kind"] == {}


def test_empty_split_is_a_clear_error(tiny_model_dir, alpaca_file, capsys):
    assert sft_main(["eval", "--model", str(tiny_model_dir), "--data", str(alpaca_file)]) == 2
    assert "split" in capsys.readouterr().err


def test_select_split(tmp_path):
    records = write_records(tmp_path / "d.json", 20)
    settings = DataArguments(dataset_name=str(tmp_path / "d.json"))
    assert select_split(settings, "test") == records[17:19]
    assert select_split(settings, "validation") == records[19:]
    assert select_split(settings, "all", limit=5) == records[:5]


def test_slug():
    assert slug("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB--SmolLM2-135M"
    assert slug("/tmp/runs/my model/") == "my-model"


def test_report_lists_worst_and_best():
    per_record = [{"index": i, "rouge_l": score} for i, score in enumerate([0.5, 0.1, 0.9, 0.3])]
    metrics = {
        "model": "m",
        "n": 4,
        "rouge_l": 0.45,
        "bleu": 10.0,
        "exact_match": 0.0,
        "exact_match_normalized": 0.0,
        "per_record": per_record,
        "generation": {},
    }
    responses = [
        {"instruction": f"task {i} | piped", "output": "line one\nline two", "model_response": f"r{i}"}
        for i in range(4)
    ]
    report = eval_report(metrics, responses)
    assert "| ROUGE-L | 0.4500 | – |" in report  # a metrics file from before the intervals
    report = eval_report({**metrics, "rouge_l_ci": [0.2, 0.7], "bootstrap": {"resamples": 9, "seed": 3}}, responses)
    assert "| ROUGE-L | 0.4500 | [0.2000, 0.7000] |" in report and "9 resamples, seed 3" in report
    worst, best = report.split("## 2 best records by ROUGE-L")
    assert worst.index("| 1 | 0.100 |") < worst.index("| 3 | 0.300 |")
    assert best.index("| 2 | 0.900 |") < best.index("| 0 | 0.500 |")
    assert "task 1 \\| piped" in report and "line one<br>line two" in report


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sft_main(["eval", "--help"])
    assert exit_info.value.code == 0
    assert "--split" in capsys.readouterr().out


def test_evaluating_into_the_model_directory_keeps_its_training_files(tmp_path):
    """Evaluation files never share names with training files: the model card reads both."""
    model = tmp_path / "model"
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")
    assert sft_main(["train", recipe, "--output_dir", str(model), "--max_steps", "1", "--eval_strategy", "no"]) == 0
    training = read(model / "metrics.json")
    argv = ["eval", "--model", str(model), "--data", "sft-synth", "--limit", "2", "--max-new-tokens", "2"]
    assert sft_main([*argv, "--output-dir", str(model), "--no-progress"]) == 0
    assert read(model / "metrics.json") == training
    assert read(model / "eval_metrics.json")["n"] == 2


# With an LLM judge (a scripted OpenAI-compatible server on 127.0.0.1) -------------------------------------

JUDGED = {"passive": 30, "capital": 90, "Chinese": 60, "sentiment": 10}  # a marker in each record's instruction


def eval_argv(model, data, out, fake, *extra):
    argv = ["eval", "--model", str(model), "--data", str(data), "--split", "all", "--max-new-tokens", "3"]
    return [
        *argv,
        "--output-dir",
        str(out),
        "--no-progress",
        "--judge-endpoint",
        fake.url,
        "--judge-model",
        "j",
        *extra,
    ]


def test_eval_with_a_judge_and_human_ratings(tiny_model_dir, alpaca_file, tmp_path, capsys):
    from judge_server import FakeJudge, verdict

    out = tmp_path / "eval"
    script = {marker: [verdict(score, f"because {marker}")] for marker, score in JUDGED.items()}
    with FakeJudge(script) as fake:
        assert sft_main(eval_argv(tiny_model_dir, alpaca_file, out, fake)) == 0
        assert len(fake.requests) == 4
        first = capsys.readouterr().out
        metrics = read(out / "eval_metrics.json")
        assert metrics["judge_score"] == pytest.approx(47.5)
        low, high = metrics["judge_score_ci"]
        assert 10 <= low < 47.5 < high <= 90
        assert (metrics["judge_scored"], metrics["judge_unscored"]) == (4, 0)
        assert [r["judge_score"] for r in metrics["per_record"]] == [30, 90, 60, 10]
        judge = metrics["judge"]
        assert (judge["judge_model"], judge["rubric"], judge["requests"], judge["from_cache"]) == (
            "j",
            "reference",
            4,
            0,
        )
        assert judge["endpoint"] == fake.url and judge["settings"]["api_key_env"] == "OPENAI_API_KEY"
        judgements = read(out / "judgements.json")
        assert [(j["index"], j["score"], j["reason"]) for j in judgements][1] == (1, 90, "because capital")
        assert (out / "judge_cache.jsonl").is_file()
        assert re.search(r"^judge score +47\.5 +\[\d+\.\d, \d+\.\d\]$", first, re.MULTILINE), first
        assert "judge j at " in first and "4 requests sent, 0 records from the cache" in first
        report = (out / "report.md").read_text(encoding="utf-8")
        assert f"| judge score | 47.5 | [{low:.1f}, {high:.1f}] |" in report
        lowest = report.split("## The 4 records the judge scored lowest")[1]
        assert lowest.index("| 3 | 10 |") < lowest.index("| 0 | 30 |") < lowest.index("| 1 | 90 |")
        assert "because sentiment" in lowest and "Judge `j` at" in report

        # A person rated the responses; the rerun (same greedy responses) asks the judge nothing again.
        ratings = [
            {"index": i, "relevance": v, "accuracy": v, "fluency": v, "completeness": v}
            for i, v in ((0, 2), (1, 5), (2, 4), (3, 1))
        ]
        (out / "human_ratings.json").write_text(json.dumps({"responses": "responses.json", "ratings": ratings}))
        assert sft_main(eval_argv(tiny_model_dir, alpaca_file, out, fake)) == 0
        assert len(fake.requests) == 4  # nothing asked the second time
    again = capsys.readouterr().out
    assert "0 requests sent, 4 records from the cache" in again
    metrics = read(out / "eval_metrics.json")
    assert metrics["judge_score"] == pytest.approx(47.5) and metrics["judge"]["from_cache"] == 4
    human = metrics["human_ratings"]
    assert human["rated"] == 4 and human["agreement"]["overall"]["spearman"] == pytest.approx(1.0)
    assert "human ratings (human_ratings.json): 4 of 4 records rated" in again
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Human ratings" in report and "| overall (mean of 4) | 4 | " in report


def test_eval_with_the_dimensions_rubric_and_an_unscored_record(tiny_model_dir, alpaca_file, tmp_path, capsys):
    from judge_server import FakeJudge, reply, verdict

    out = tmp_path / "eval"
    dims = dict(relevance=4, accuracy=2, fluency=5, completeness=3)
    script = {"capital": [verdict(80, "ok", **dims)], "sentiment": [reply("no idea")]}
    with FakeJudge(script, default=verdict(40, "meh", **{**dims, "accuracy": 4})) as fake:
        argv = eval_argv(tiny_model_dir, alpaca_file, out, fake, "--judge-rubric", "dimensions")
        assert sft_main([*argv, "--judge-reply-retries", "0", "--judge-concurrency", "1"]) == 0
    metrics = read(out / "eval_metrics.json")
    assert metrics["judge_score"] == pytest.approx((80 + 40 + 40) / 3)
    assert (metrics["judge_scored"], metrics["judge_unscored"]) == (3, 1)
    assert metrics["judge_accuracy"] == pytest.approx((2 + 4 + 4) / 3) and metrics["judge_fluency"] == 5
    assert metrics["per_record"][3]["judge_score"] is None and metrics["per_record"][1]["judge_accuracy"] == 2
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| judge accuracy (1-5) | 3.33 |" in report and "## Unscored records" in report
    printed = capsys.readouterr().out
    assert "(3 scored, 1 unscored)" in printed and "judge relevance (1-5)" in printed


def test_judge_options_need_the_endpoint_and_model_and_are_checked_first(tiny_model_dir, alpaca_file, capsys):
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(alpaca_file), "--split", "all"]
    with pytest.raises(SystemExit) as exit_info:
        sft_main([*argv, "--judge-rubric", "dimensions", "--judge-endpoint", "http://127.0.0.1:9/v1"])
    assert exit_info.value.code == 2
    assert "--judge-endpoint, --judge-rubric needs both --judge-endpoint and --judge-model" in capsys.readouterr().err
    assert sft_main([*argv, "--judge-endpoint", "localhost:11434", "--judge-model", "m"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--judge-endpoint must be an http(s) URL" in errors[0], errors


def test_eval_without_a_judge_writes_no_judge_keys(tmp_path, alpaca_records):
    from sft.inference.generate import load_for_inference

    model, tokenizer, template = load_for_inference("sft-tiny-gpt2")
    metrics = evaluate_model(
        "m", alpaca_records, tmp_path, GenerationSettings(max_new_tokens=2), model=model, tokenizer=tokenizer,
        template=template, progress=False,
    ).metrics  # fmt: skip
    assert set(metrics) == METRIC_KEYS | {"mean_new_tokens", "bleu_tokenize"}
    assert not any(name.startswith("judge") for name in (*metrics, *metrics["per_record"][0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_metrics.json", "report.md", "responses.json"]
