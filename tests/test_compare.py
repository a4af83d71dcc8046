"""`sft compare` on two tiny models, a LoRA adapter as the model, and the ranking of changes."""

import json

import pytest
import torch

from sft.cli import main as sft_main
from sft.evaluation.compare import rank_changes
from sft.evaluation.report import compare_report


@pytest.fixture(scope="module")
def talkative_dir(tmp_path_factory):
    """The tiny model with large random weights, saved: unlike the standard one (which emits only
    newlines), its greedy responses contain words."""
    from sft.models.load import load_model, load_tokenizer

    model = load_model("sft-tiny-gpt2", dtype=torch.float32)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    directory = tmp_path_factory.mktemp("talkative")
    model.save_pretrained(directory)
    load_tokenizer("sft-tiny-gpt2").save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A freshly initialised LoRA adapter on the tiny model (it changes nothing until trained)."""
    from peft import LoraConfig, get_peft_model

    from sft.models.load import load_model

    model = get_peft_model(
        load_model(str(tiny_model_dir), dtype=torch.float32),
        LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"),
    )
    directory = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(directory)
    return directory


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_compare_two_tiny_models(tiny_model_dir, talkative_dir, alpaca_records, tmp_path, capsys):
    from sft.inference.generate import generate_responses, load_for_inference
    from sft.inference.settings import GenerationSettings

    # References are the talkative model's own answers, so it beats the silent base on every record.
    model, tokenizer, template = load_for_inference(str(talkative_dir))
    answers = generate_responses(model, tokenizer, alpaca_records, GenerationSettings(max_new_tokens=6), progress=False)
    records = [{**r, "output": a.text} for r, a in zip(alpaca_records, answers)]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "compare"
    assert (
        sft_main(
            [
                "compare",
                "--base",
                str(tiny_model_dir),
                "--model",
                str(talkative_dir),
                "--data",
                str(data),
                "--split",
                "all",
                "--max-new-tokens",
                "6",
                "--output-dir",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    comparison = read(out / "compare.json")
    assert comparison["n"] == 4
    assert comparison["model"]["rouge_l"] == pytest.approx(1.0)
    assert comparison["change"]["rouge_l"] == pytest.approx(1.0)
    assert comparison["counts"] == {"improved": 4, "regressed": 0, "unchanged": 0}
    assert len(comparison["improvements"]) == 4 and comparison["regressions"] == []
    change = comparison["per_record"][0]
    assert {"base_response", "model_response", "base_rouge_l", "model_rouge_l", "rouge_l_change"} <= set(change)
    assert change["model_response"] == records[0]["output"]
    for role in ("base", "model"):
        assert {p.name for p in (out / role).iterdir()} >= {"responses.json", "eval_metrics.json", "report.md"}
    keys = {"rouge_l", "bleu", "exact_match", "exact_match_normalized", "ended_at_eos"}
    assert set(comparison["change_ci"]) == set(comparison["within_noise"]) == keys
    assert set(comparison["wins_ties_losses"]) == keys
    # Every record goes from ROUGE-L 0 to 1: every resample's change is exactly +1.
    assert comparison["change_ci"]["rouge_l"] == pytest.approx([1.0, 1.0])
    assert comparison["within_noise"]["rouge_l"] is False
    assert comparison["wins_ties_losses"]["rouge_l"] == {"wins": 4, "ties": 0, "losses": 0}
    assert comparison["wins_ties_losses"]["exact_match"]["wins"] == 4
    assert comparison["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95}
    for key, (low, high) in comparison["change_ci"].items():
        assert comparison["within_noise"][key] == (low <= 0 <= high)
        assert low - 1e-9 <= comparison["change"][key] <= high + 1e-9, key
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| ROUGE-L | 0.0000 | 1.0000 | +1.0000 | [+1.0000, +1.0000] | 4 / 0 / 0 |  |" in report
    assert "## Biggest improvements (ROUGE-L)" in report
    printed = capsys.readouterr().out
    assert "4 improved, 0 regressed" in printed
    rouge_line = next(line for line in printed.splitlines() if line.startswith("ROUGE-L"))
    assert rouge_line.split() == ["ROUGE-L", "0.0000", "1.0000", "+1.0000", "[+1.0000,", "+1.0000]", "4/0/0"]
    assert "95% intervals of the change: paired bootstrap" in printed and "within noise: covers 0" in printed


def test_compare_with_a_lora_adapter(tiny_model_dir, adapter_dir, alpaca_file, tmp_path):
    out = tmp_path / "compare"
    assert (
        sft_main(
            [
                "compare",
                "--base",
                str(tiny_model_dir),
                "--model",
                str(adapter_dir),
                "--data",
                str(alpaca_file),
                "--split",
                "all",
                "--max-new-tokens",
                "3",
                "--output-dir",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    comparison = read(out / "compare.json")
    # An untrained LoRA adapter (B = 0) leaves the base model's answers as they were.
    assert comparison["counts"]["unchanged"] == 4
    assert all(interval == [0.0, 0.0] for interval in comparison["change_ci"].values())
    assert all(comparison["within_noise"].values())
    assert all(c == {"wins": 0, "ties": 4, "losses": 0} for c in comparison["wins_ties_losses"].values())
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| [+0.0000, +0.0000] | 0 / 4 / 0 | within noise |" in report
    assert [c["base_response"] for c in comparison["per_record"]] == [
        c["model_response"] for c in comparison["per_record"]
    ]


def test_rank_changes():
    changes = [{"index": i, "rouge_l_change": d} for i, d in enumerate([0.2, -0.5, 0.0, 0.7, -0.1, 0.2])]
    ranked = rank_changes(changes, shown=2)
    assert ranked["counts"] == {"improved": 3, "regressed": 2, "unchanged": 1}
    assert [c["index"] for c in ranked["improvements"]] == [3, 0]
    assert [c["index"] for c in ranked["regressions"]] == [1, 4]


def test_report_shows_regressions():
    metrics = {
        "model": "m",
        "rouge_l": 0.5,
        "bleu": 20.0,
        "exact_match": 0.0,
        "exact_match_normalized": 0.0,
        "generation": {},
        "n": 1,
    }
    change = {
        "index": 0,
        "instruction": "Say hi",
        "output": "hi",
        "base_response": "hi",
        "model_response": "bye",
        "base_rouge_l": 1.0,
        "model_rouge_l": 0.0,
        "rouge_l_change": -1.0,
    }
    report = compare_report(
        {
            "base": {**metrics, "model": "b"},
            "model": {**metrics, "rouge_l": 0.25},
            "counts": {"improved": 0, "regressed": 1, "unchanged": 0},
            "improvements": [],
            "regressions": [change],
        }
    )
    assert "| ROUGE-L | 0.5000 | 0.2500 | -0.2500 | – | – |  |" in report  # a compare.json from before the intervals
    assert "| 0 | 1.000 | 0.000 | -1.000 | Say hi | hi | hi | bye |" in report


def test_report_and_console_show_intervals_and_noise():
    from sft.evaluation.report import format_comparison

    metrics = {"model": "m", "rouge_l": 0.5, "bleu": 20.0, "exact_match": 0.1, "generation": {}, "n": 20}
    comparison = {
        "base": {**metrics, "model": "b"},
        "model": {**metrics, "rouge_l": 0.6, "bleu": 21.5},
        "change_ci": {"rouge_l": [0.02, 0.18], "bleu": [-3.0, 6.25], "exact_match": [0.0, 0.0]},
        "within_noise": {"rouge_l": False, "bleu": True, "exact_match": True},
        "wins_ties_losses": {
            "rouge_l": {"wins": 12, "ties": 5, "losses": 3},
            "bleu": {"wins": 9, "ties": 4, "losses": 7},
            "exact_match": {"wins": 0, "ties": 20, "losses": 0},
        },
        "bootstrap": {"resamples": 1000, "seed": 0, "confidence": 0.95},
        "counts": {"improved": 12, "regressed": 3, "unchanged": 5},
        "improvements": [],
        "regressions": [],
    }
    report = compare_report(comparison)
    assert "| ROUGE-L | 0.5000 | 0.6000 | +0.1000 | [+0.0200, +0.1800] | 12 / 5 / 3 |  |" in report
    assert "| BLEU | 20.00 | 21.50 | +1.50 | [-3.00, +6.25] | 9 / 4 / 7 | within noise |" in report
    assert "| exact match | 0.1000 | 0.1000 | +0.0000 | [+0.0000, +0.0000] | 0 / 20 / 0 | within noise |" in report
    assert "paired bootstrap over the records, 1000 resamples, seed 0" in report
    lines = format_comparison(comparison).splitlines()
    assert lines[1] == "ROUGE-L      0.5000  0.6000  +0.1000  [+0.0200, +0.1800]         12/5/3"
    assert lines[2] == "BLEU          20.00   21.50    +1.50  [-3.00, +6.25]              9/4/7  within noise"
    assert lines[3].endswith("0/20/0  within noise")
    assert len({line.index("[") for line in lines[1:4]}) == 1  # intervals aligned


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sft_main(["compare", "--help"])
    assert exit_info.value.code == 0
    assert "--base" in capsys.readouterr().out


def test_compare_with_a_judge(tiny_model_dir, talkative_dir, alpaca_records, alpaca_file, tmp_path, capsys):
    """The silent base's empty responses get 20 from the judge; the talkative model's get 80, except record 0's,
    which gets 10: the judge score's paired change, its interval, wins / ties / losses and the record that dropped."""
    from judge_server import FakeJudge, verdict

    from sft.inference.generate import generate_responses, load_for_inference
    from sft.inference.settings import GenerationSettings

    model, tokenizer, _ = load_for_inference(str(talkative_dir))
    answer = generate_responses(model, tokenizer, alpaca_records[:1], GenerationSettings(max_new_tokens=6))[0].text
    assert answer.strip()
    data, out = alpaca_file, tmp_path / "compare"
    # Markers are found in the question the judge is asked: record 0's reference answer, then the response.
    script = {
        "<response>\n\n</response>": [verdict(20, "empty")],
        f"{alpaca_records[0]['output']}\n</reference_answer>\n\n<response>\n{answer}\n": [verdict(10, "worse")],
    }
    argv = ["compare", "--base", str(tiny_model_dir), "--model", str(talkative_dir), "--data", str(data)]
    argv += ["--split", "all", "--max-new-tokens", "6", "--output-dir", str(out), "--no-progress"]
    with FakeJudge(script, default=verdict(80, "good")) as fake:
        argv += ["--judge-endpoint", fake.url, "--judge-model", "j"]
        assert sft_main(argv) == 0
        assert len(fake.requests) == 8
        assert sft_main(argv) == 0  # both models' caches answer everything
        assert len(fake.requests) == 8
    comparison = read(out / "compare.json")
    assert comparison["base"]["judge_score"] == 20 and comparison["model"]["judge_score"] == pytest.approx(62.5)
    assert comparison["change"]["judge_score"] == pytest.approx(42.5)  # (-10 + 60 * 3) / 4
    low, high = comparison["change_ci"]["judge_score"]
    assert -10 <= low <= 42.5 <= high <= 60 and low > 0
    assert comparison["within_noise"]["judge_score"] is False
    assert comparison["wins_ties_losses"]["judge_score"] == {"wins": 3, "ties": 0, "losses": 1}
    assert comparison["judge"]["paired"] == 4 and comparison["judge"]["judge_model"] == "j"
    assert [d["index"] for d in comparison["judge_drops"]] == [0]
    drop = comparison["judge_drops"][0]
    assert (drop["base_judge_score"], drop["model_judge_score"], drop["judge_score_change"]) == (20, 10, -10)
    for role in ("base", "model"):
        assert {"judgements.json", "judge_cache.jsonl"} <= {p.name for p in (out / role).iterdir()}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"| judge score | 20.0 | 62.5 | +42.5 | [{low:+.1f}, {high:+.1f}] | 3 / 0 / 1 |  |" in report
    assert "## The record whose judge score dropped most" in report
    assert "| 0 | 20 | 10 | -10 |" in report and "| empty |" in report and "| worse |" in report
    printed = capsys.readouterr().out.split("results in")[-2]  # the second run's lines
    judge_line = next(line for line in printed.splitlines() if line.startswith("judge score"))
    assert judge_line.split()[2:5] == ["20.0", "62.5", "+42.5"] and judge_line.split()[-1] == "3/0/1"
    assert "4 of 4 records scored for both models" in printed and "0 requests sent, 4 records from the cache" in printed


def test_compare_judge_changes_only_over_records_scored_for_both():
    from sft.evaluation.compare import judge_paired_changes
    from sft.evaluation.evaluate import Evaluation

    def evaluation(scores):
        per_record = [{"index": i, "judge_score": score} for i, score in enumerate(scores)]
        scored = [s for s in scores if s is not None]
        metrics = {"judge_score": sum(scored) / len(scored), "per_record": per_record, "judge": {"judge_model": "j"}}
        return Evaluation(metrics, [])

    found = judge_paired_changes(evaluation([10, None, 50, 40]), evaluation([30, 90, None, 40]))
    assert found["change"]["judge_score"] == pytest.approx(10.0)  # records 0 and 3: +20 and 0
    assert found["wins_ties_losses"]["judge_score"] == {"wins": 1, "ties": 1, "losses": 0}
    assert found["judge"] == {"judge_model": "j", "paired": 2}
    low, high = found["change_ci"]["judge_score"]
    assert 0 <= low <= high <= 20 and found["within_noise"]["judge_score"] == (low <= 0 <= high)
