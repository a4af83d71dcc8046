"""Generation metrics during training (`generation_eval`): in every evaluation, the best checkpoint,
early stopping, metrics.json, the progress line and the plot, equal to `sft eval`, under two processes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sft.cli import main as sft_main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))

FIGURES = ("eval_rouge_l", "eval_bleu", "eval_exact_match", "eval_ended_at_eos")
# Small enough for seconds, and the tiny model learns these answers within a few steps at lr 1e-2, so the
# generation metrics move between evaluations (a random two-layer model on sft-synth scores 0 throughout).
FAST = ["--learning_rate", "1e-2", "--generation_eval_max_new_tokens", "24"]
JUDGE = ["--generation_eval_judge_endpoint", "http://127.0.0.1:9/v1", "--generation_eval_judge_model", "m"]


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """800 records of two kinds with fixed answers; validation holds the 40 after 680 + 80 (two batches
    of generation: 32 and 8)."""
    records = []
    for i in range(800):
        if i % 2:
            records.append(
                {
                    "instruction": f"What is the capital of France? Case {i}.",
                    "input": "",
                    "output": "Paris is the capital of France.",
                }
            )
        else:
            records.append(
                {
                    "instruction": f"Rewrite the sentence, case {i}.",
                    "input": "The quick brown fox jumps over the lazy dog.",
                    "output": "The lazy dog jumps over the quick brown fox.",
                }
            )
    path = tmp_path_factory.mktemp("data") / "easy.json"
    path.write_text(json.dumps(records))
    return str(path)


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def train(out: Path, data: str, *extra: str) -> None:
    args = ["train", TINY, "--dataset_name", data, "--output_dir", str(out), "--generation_eval", "true", *FAST]
    assert sft_main([*args, *extra]) == 0


def sft_eval(model: Path, data: str, output: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict:
    """`sft eval` on the validation split, 24 new tokens, with the weights in fp32 as training keeps them
    (on a GPU with bf16 `sft eval` would load them in bf16)."""
    monkeypatch.setattr("sft.models.load.default_dtype", lambda: torch.float32)
    args = ["eval", "--model", str(model), "--data", data, "--split", "validation", *extra]
    assert sft_main([*args, "--max-new-tokens", "24", "--no-progress", "--output-dir", str(output)]) == 0
    return json.loads((output / "eval_metrics.json").read_text())


def state(out: Path) -> dict:
    return json.loads((out / "trainer_state.json").read_text())


def evaluations(out: Path) -> list[dict]:
    """The evaluations during training: those logged before the training summary."""
    history = state(out)["log_history"]
    end = next(i for i, entry in enumerate(history) if "train_loss" in entry)
    return [entry for entry in history[:end] if "eval_loss" in entry]


def test_generation_metrics_choose_the_best_checkpoint(tmp_path: Path, easy_data: str, capsys) -> None:
    out = tmp_path / "best"
    train(
        out,
        easy_data,
        *("--eval_strategy", "steps", "--eval_steps", "4", "--save_strategy", "steps", "--save_steps", "4"),
        *("--metric_for_best_model", "eval_rouge_l", "--load_best_model_at_end", "true", "--max_steps", "20"),
    )
    history = state(out)["log_history"]
    evaluated = [entry for entry in history if "eval_loss" in entry]
    assert len(evaluated) == 6  # five during training, the final one for metrics.json
    for entry in evaluated:
        for key in FIGURES:
            assert isinstance(entry[key], float) and 0 <= entry[key] <= (100 if key == "eval_bleu" else 1), key
    during = evaluations(out)
    scores = [entry["eval_rouge_l"] for entry in during]
    assert len(set(scores)) > 1, scores  # "best" has to mean something
    best = during[scores.index(max(scores))]  # the first of equal bests, as the Trainer keeps it
    assert best is not during[-1], scores  # the best is not simply the last checkpoint
    assert state(out)["best_model_checkpoint"] == str(out / f"checkpoint-{best['step']}")
    assert state(out)["best_metric"] == max(scores)
    # The final evaluation, of the best model reloaded, is what metrics.json holds.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_rouge_l"] == pytest.approx(max(scores), abs=1e-6)  # metrics.json keeps 6 decimals
    assert set(FIGURES) <= set(metrics)

    printed = capsys.readouterr()
    lines = re.findall(r"epoch \d+\.\d\d: validation loss .*", printed.out + printed.err)
    assert len(lines) == 5 and all("ROUGE-L" in line and "ended at EOS" in line for line in lines), lines
    assert (out / "loss.png").is_file()


def test_figures_equal_sft_eval_of_the_final_model(tmp_path: Path, easy_data: str, monkeypatch) -> None:
    """Greedy, the same records and token budget: the figures `sft eval` prints for the saved model,
    although training ran under bf16 autocast where this CPU runs bf16 natively."""
    out = tmp_path / "run"
    train(out, easy_data, "--generation_eval_records", "36", "--eval_strategy", "steps", "--eval_steps", "6")
    last = evaluations(out)[-1]
    assert last["step"] == 16  # the end of the single epoch of 64 records
    metrics = json.loads((out / "metrics.json").read_text())
    scored = sft_eval(out, easy_data, tmp_path / "eval", monkeypatch, "--limit", "36")
    assert scored["n"] == 36
    for key in FIGURES:
        name = key.removeprefix("eval_")
        assert last[key] == pytest.approx(scored[name], abs=1e-12), key
        assert metrics[key] == pytest.approx(scored[name], abs=1e-6), key


def test_early_stopping_on_rouge_l(tmp_path: Path, easy_data: str) -> None:
    out = tmp_path / "early"
    train(
        out,
        easy_data,
        *("--eval_strategy", "steps", "--eval_steps", "2", "--max_steps", "40"),
        *("--metric_for_best_model", "eval_rouge_l", "--early_stopping_patience", "2"),
    )
    during = evaluations(out)
    # EarlyStoppingCallback's rule, replayed on the logged figures: stop once `patience` evaluations in a
    # row have not beaten the best so far.
    best, waited, stop = None, 0, None
    for entry in during:
        if best is None or entry["eval_rouge_l"] > best:
            best, waited = entry["eval_rouge_l"], 0
        else:
            waited += 1
        if waited >= 2:
            stop = entry["step"]
            break
    assert stop is not None and stop < 40, [entry["eval_rouge_l"] for entry in during]
    assert state(out)["global_step"] == stop == during[-1]["step"]


def test_generation_eval_leaves_training_unchanged(tmp_path: Path, easy_data: str) -> None:
    """Generating seeds torch; training's random state (dropout here) must not notice."""
    common = ["train", TINY, "--dataset_name", easy_data, *FAST, "--max_steps", "8"]
    common += ["--eval_strategy", "steps", "--eval_steps", "3"]
    assert sft_main([*common, "--output_dir", str(tmp_path / "with"), "--generation_eval", "true"]) == 0
    assert sft_main([*common, "--output_dir", str(tmp_path / "without")]) == 0
    first, second = (
        load_file(str(tmp_path / "with" / "model.safetensors")),
        load_file(str(tmp_path / "without" / "model.safetensors")),
    )
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "lora"],
        # A Llama's linear layers take sft's own LoRA forward (sft.training.fast_lora), generation included.
        ["--method", "lora", "--model_name_or_path", "sft-tiny-llama"],
        # 8 new tokens: prompt tuning generation itself (PEFT 0.21 with Transformers 5.24, `sft eval` too)
        # fails with an IndexError once a response passes about 22 new tokens on the tiny GPT-2.
        ["--method", "prompt_tuning", "--generation_eval_max_new_tokens", "8"],
        ["--model_name_or_path", "sft-tiny-llama", "--activation_checkpointing", "true"],
        ["--model_name_or_path", "sft-tiny-llama", "--activation_checkpointing", "true", "--method", "lora"],
    ],
    ids=["lora", "llama-lora", "prompt_tuning", "llama-checkpointing", "llama-lora-checkpointing"],
)
def test_adapters_and_checkpointing(tmp_path: Path, easy_data: str, extra: list[str]) -> None:
    """Adapters generate through the PEFT model; activation checkpointing (use_cache off for training)
    still generates, and training goes on after each evaluation."""
    out = tmp_path / "run"
    train(out, easy_data, *extra, "--eval_strategy", "steps", "--eval_steps", "2", "--max_steps", "4")
    during = evaluations(out)
    assert [entry["step"] for entry in during] == [2, 4]
    assert all(key in entry for entry in during for key in FIGURES)
    assert set(FIGURES) <= set(json.loads((out / "metrics.json").read_text()))


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--generation_eval_records", "0"], "generation_eval_records must be a whole number of at least 1"),
        (["--generation_eval_max_new_tokens", "0"], "generation_eval_max_new_tokens must be"),
        (["--generation_eval", "true", "--eval_strategy", "no"], "generation_eval needs evaluations"),
        (
            ["--generation_eval", "true", "--train_fraction", "0.7", "--test_fraction", "0.3"],
            "generation_eval needs a validation split",
        ),
        (["--metric_for_best_model", "eval_rouge_l"], "set generation_eval true"),
        (
            ["--early_stopping_patience", "0", "--metric_for_best_model", "eval_loss"],
            "early_stopping_patience must be a whole number",
        ),
        (["--early_stopping_patience", "2"], "early_stopping_patience needs metric_for_best_model"),
        (
            ["--generation_eval", "true", "--generation_eval_judge_endpoint", "http://127.0.0.1:9/v1"],
            "generation_eval_judge_endpoint needs generation_eval_judge_model too",
        ),
        (
            [*JUDGE, "--generation_eval", "false"],
            "generation_eval_judge_endpoint and generation_eval_judge_model judge generation_eval's responses",
        ),
        (
            ["--generation_eval", "true", "--generation_eval_judge_endpoint", "localhost:11434"]
            + ["--generation_eval_judge_model", "m"],
            "generation_eval_judge_endpoint must be an http(s) URL",
        ),
        (
            [*JUDGE, "--generation_eval", "true", "--generation_eval_judge_api_key_env", "SFT_UNSET_JUDGE_KEY"],
            "generation_eval_judge_api_key_env names SFT_UNSET_JUDGE_KEY, which is not set",
        ),
        (["--generation_eval", "true", "--metric_for_best_model", "eval_judge"], "eval_judge needs a judge"),
    ],
    ids=[
        "records",
        "max-new-tokens",
        "no-evaluations",
        "no-validation",
        "metric",
        "patience",
        "patience-metric",
        "judge-model",
        "judge-without-generation",
        "judge-url",
        "judge-key",
        "judge-metric",
    ],  # fmt: skip
)
def test_bad_values_are_one_line_errors(tmp_path: Path, capsys, extra: list[str], named: str) -> None:
    out = tmp_path / "bad"
    assert sft_main(["train", TINY, "--output_dir", str(out), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


def test_empty_validation_split_is_refused_before_the_model_loads(tmp_path: Path, monkeypatch, capsys) -> None:
    """Fractions that leave validation a share give it at least one record; should the split still come out
    empty, the run stops before the model loads."""
    import sft.data.split

    split_as = sft.data.split.split_as

    def no_validation(*args, **kwargs):
        splits = split_as(*args, **kwargs)
        return {**splits, "validation": []}

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("sft.data.split.split_as", no_validation)
    monkeypatch.setattr("sft.models.load.load_model", no_model)
    args = ["train", TINY, "--generation_eval", "true", "--output_dir", str(tmp_path / "out")]
    assert sft_main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "generation_eval needs validation records" in lines[0], lines


def test_progress_line_and_plot_panels(tmp_path: Path) -> None:
    from sft.training.plots import generation_series, plot_losses
    from sft.training.progress import validation_line

    logs = {"epoch": 0.5, "eval_loss": 2.5, "eval_rouge_l": 0.25, "eval_bleu": 12.5, "eval_exact_match": 0.1}
    logs |= {"eval_ended_at_eos": 0.75, "eval_runtime": 3.21}
    assert validation_line(logs) == (
        "epoch 0.50: validation loss 2.5000, ROUGE-L 0.2500, BLEU 12.50, exact match 0.1000, ended at EOS 0.75 (3.2 s)"
    )
    assert validation_line({"epoch": 1, "eval_loss": 2.0, "eval_runtime": 1.0}) == "epoch 1.00: validation loss 2.0000"
    history = [{"epoch": 0.25, "loss": 3.0, "step": 1}, {**logs, "step": 2}]
    series = generation_series(history)
    assert series["BLEU / 100"] == [(0.5, 0.125)] and series["ROUGE-L"] == [(0.5, 0.25)]
    assert generation_series([{"epoch": 0.5, "eval_loss": 1.0}]) == {}
    paths = plot_losses(history, tmp_path)
    assert [path.name for path in paths] == ["loss.png", "loss.pdf"] and all(path.stat().st_size for path in paths)


@pytest.mark.slow
def test_two_cpu_processes_agree_with_one(tmp_path: Path, easy_data: str, monkeypatch) -> None:
    """Each process generates its share of the batches (40 validation records: 32 on one, 8 on the other);
    both end with the figures one process computes for the saved model (`sft eval`)."""
    out = tmp_path / "ddp"
    result = run(
        [
            *(ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "sft/train.py", TINY),
            *("--dataset_name", easy_data, "--generation_eval", "true", *FAST),
            *("--eval_strategy", "steps", "--eval_steps", "4", "--max_steps", "8", "--output_dir", str(out)),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    figures = dict(re.findall(r"rank (\d/2): train_loss=\S+ (eval_rouge_l=\S+ eval_bleu=\S+)", log))
    assert set(figures) == {"0/2", "1/2"} and len(set(figures.values())) == 1, log[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rouge_l, bleu = re.fullmatch(r"eval_rouge_l=(\S+) eval_bleu=(\S+)", figures["0/2"]).groups()
    assert metrics["eval_rouge_l"] == pytest.approx(float(rouge_l), abs=1e-6)  # metrics.json keeps 6 decimals
    assert metrics["eval_bleu"] == pytest.approx(float(bleu), abs=1e-6)
    assert all(key in entry for entry in evaluations(out) for key in FIGURES)
    scored = sft_eval(out, easy_data, tmp_path / "eval", monkeypatch)
    assert scored["n"] == 40
    assert (float(rouge_l), float(bleu)) == (scored["rouge_l"], scored["bleu"])  # as printed, in full
    for key in FIGURES:
        assert metrics[key] == pytest.approx(scored[key.removeprefix("eval_")], abs=1e-6), key


def test_a_judge_grades_the_responses_at_every_evaluation(tmp_path: Path, easy_data: str, monkeypatch) -> None:
    """eval_judge, the judge's mean over the validation responses, in every evaluation of trainer_state.json and
    in metrics.json; answers cached in output_dir; the key's variable is named in the recipe, its value nowhere."""
    from judge_server import FakeJudge, verdict

    monkeypatch.setenv("SFT_TEST_JUDGE_KEY", "sk-trainingJudgeSecret0123456789")
    out = tmp_path / "judged"
    with FakeJudge({"capital": [verdict(90)], "Rewrite": [verdict(30)]}) as fake:
        train(
            out,
            easy_data,
            *("--generation_eval_records", "4", "--eval_strategy", "steps", "--eval_steps", "2", "--max_steps", "4"),
            *("--generation_eval_judge_endpoint", fake.url, "--generation_eval_judge_model", "judge-m"),
            *("--generation_eval_judge_api_key_env", "SFT_TEST_JUDGE_KEY"),
        )
        assert {r["headers"]["authorization"] for r in fake.requests} == {"Bearer sk-trainingJudgeSecret0123456789"}
        asked = len(fake.requests)
    evaluated = [entry for entry in state(out)["log_history"] if "eval_loss" in entry]
    assert len(evaluated) == 2  # steps 2 and 4; metrics.json takes the last one, made at the final step
    assert all(entry["eval_judge"] == pytest.approx(60.0) for entry in evaluated), evaluated
    assert json.loads((out / "metrics.json").read_text())["eval_judge"] == pytest.approx(60.0)
    cached = (out / "judge_cache.jsonl").read_text().splitlines()
    assert asked == len({json.loads(line)["key"] for line in cached}) <= 12  # a response seen before is not asked
    saved = (out / "sft_config.yaml").read_text()
    assert "generation_eval_judge_api_key_env: SFT_TEST_JUDGE_KEY" in saved and "judge-m" in saved
    for path in out.iterdir():
        if path.is_file():
            assert b"trainingJudgeSecret" not in path.read_bytes(), path


def test_a_judge_that_scores_nothing_leaves_eval_judge_out(tmp_path: Path, easy_data: str, caplog) -> None:
    from judge_server import FakeJudge, reply

    out = tmp_path / "unscored"
    with FakeJudge(default=reply("I cannot grade this.")) as fake:
        train(
            out,
            easy_data,
            *("--generation_eval_records", "2", "--eval_strategy", "steps", "--eval_steps", "2", "--max_steps", "2"),
            *("--generation_eval_judge_endpoint", fake.url, "--generation_eval_judge_model", "judge-m"),
        )
    evaluated = [entry for entry in state(out)["log_history"] if "eval_loss" in entry]
    assert evaluated and all("eval_judge" not in entry and "eval_rouge_l" in entry for entry in evaluated)
    warnings = [r.getMessage() for r in caplog.records if "eval_judge left out" in r.getMessage()]
    assert len(warnings) == len(evaluated) and "scored none of the 2 responses" in warnings[0], warnings
