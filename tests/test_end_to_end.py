"""`sft reproduce` and `sft demo` on the tiny model: every file they promise, and the printed table."""

import json
from pathlib import Path

import pytest

from sft.cli import main as sft_main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reproduce_on_tiny_model(tmp_path: Path, capsys) -> None:
    data = tmp_path / "instruction-data.json"
    records = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(40)]
    data.write_text(json.dumps(records))
    reference = [{**r, "model_response": r["output"] if i % 2 else "no"} for i, r in enumerate(records[34:38])]
    (tmp_path / "instruction-data-with-response.json").write_text(json.dumps(reference))
    out = tmp_path / "r"
    code = sft_main(
        [
            "reproduce",
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--recipe",
            str(REPO / "recipes" / "tiny.yaml"),
            "--",
            "--max_steps",
            "3",
        ]
    )
    assert code == 0
    for name in (
        "eval/responses.json",
        "eval/eval_metrics.json",
        "eval/report.md",
        "eval/loss.png",
        "data/train.json",
        "data/validation.json",
        "data/test.json",
        "results.md",
        "results.json",
    ):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "data" / "test.json").read_text())) == 4
    metrics = json.loads((out / "eval" / "eval_metrics.json").read_text())
    assert metrics["n"] == 4 and 0 <= metrics["ended_at_eos"] <= 1
    printed = capsys.readouterr().out
    assert "(base)" in printed and "fine-tuned" in printed and "GPT-2 medium" in printed
    assert "| 0.5000 |" in printed  # the reference file: two of four responses exact
    assert "training time" in printed


def test_reproduce_runs_sft_then_dpo(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)}
                                for i in range(40)]))  # fmt: skip
    out = tmp_path / "r"
    code = sft_main(["reproduce", "--data", str(data), "--output-dir", str(out), "--recipe", str(REPO / "recipes" /
                     "tiny.yaml"), "--stages", "sft,dpo", "--dpo-recipe", str(REPO / "recipes" / "tiny-dpo.yaml"),
                     "--pair-samples", "2", "--skip-base", "--", "--max_steps", "3"])  # fmt: skip
    assert code == 0
    pairs = json.loads((out / "data" / "pairs.json").read_text())
    train = json.loads((out / "data" / "train.json").read_text())
    assert pairs and {p["instruction"] for p in pairs} <= {r["instruction"] for r in train}
    assert (out / "dpo-model" / "model.safetensors").is_file()
    assert json.loads((out / "dpo-eval" / "eval_metrics.json").read_text())["n"] == 4
    results = json.loads((out / "results.json").read_text())
    assert results["stages"] == ["sft", "dpo"] and results["dpo_train_seconds"] > 0
    assert "preference_accuracy" in results["dpo_train_metrics"]
    printed = capsys.readouterr().out
    assert "fine-tuned + DPO (tiny-dpo.yaml)" in printed and "DPO training" in printed


def test_reproduce_refuses_a_dpo_stage_without_sft(tmp_path: Path, capsys) -> None:
    argv = ["reproduce", "--data", "x.json", "--output-dir", str(tmp_path / "r"), "--stages", "dpo"]
    assert sft_main(argv) == 2
    assert "sft,dpo" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "reproduce"])
def test_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sft_main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sft " + command in capsys.readouterr().out


# The test split never overlaps the records training used, whatever the split settings ------------------


def shuffled_recipe(tmp_path: Path, data: Path | None = None) -> Path:
    """The tiny recipe with a shuffled split: unshuffled fractions would pick other test records."""
    recipe = tmp_path / "shuffled.yaml"
    lines = (REPO / "recipes" / "tiny.yaml").read_text() + "split_shuffle: true\nsplit_seed: 7\nmax_steps: 1\n"
    if data is not None:
        lines += f"dataset_name: {data}\n"
    recipe.write_text(lines)
    return recipe


def numbered_records(path: Path, n: int = 40) -> list[dict[str, str]]:
    records = [{"instruction": f"Repeat {i}.", "input": "", "output": str(i)} for i in range(n)]
    path.write_text(json.dumps(records))
    return records


def instructions(path: Path) -> list[str]:
    return [record["instruction"] for record in json.loads(path.read_text())]


def test_reproduce_tests_on_the_split_the_recipe_trained_with(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    records = numbered_records(data)
    out = tmp_path / "r"
    argv = ["reproduce", "--data", str(data), "--output-dir", str(out), "--recipe", str(shuffled_recipe(tmp_path))]
    assert sft_main([*argv, "--skip-base"]) == 0
    trained, tested = instructions(out / "data" / "train.json"), instructions(out / "eval" / "responses.json")
    assert tested == instructions(out / "data" / "test.json") and len(tested) == 4
    assert not set(trained) & set(tested)
    assert tested != [r["instruction"] for r in records[34:38]]  # the shuffled split, not the file order


def test_eval_splits_as_the_model_s_recipe_did(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    numbered_records(data)
    model = tmp_path / "model"
    assert sft_main(["train", str(shuffled_recipe(tmp_path, data)), "--output_dir", str(model)]) == 0
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model), "--data", str(data), "--max-new-tokens", "2", "--no-progress"]
    assert sft_main([*argv, "--output-dir", str(out)]) == 0
    assert sft_main([*argv, "--split", "train", "--output-dir", str(tmp_path / "train-eval")]) == 0
    tested, trained = instructions(out / "responses.json"), instructions(tmp_path / "train-eval" / "responses.json")
    assert len(tested) == 4 and len(trained) == 34
    assert not set(trained) & set(tested)


def test_demo_holds_out_records_its_training_did_not_see(tmp_path: Path, capsys) -> None:
    from sft.data.split import DataArguments, load_splits

    out = tmp_path / "demo"
    recipe = shuffled_recipe(tmp_path)
    argv = ["demo", "--recipe", str(recipe), "--output-dir", str(out), "--train-records", "8", "--eval-records", "3"]
    assert sft_main([*argv, "--max-new-tokens", "2"]) == 0
    key = ("instruction", "input", "output")
    responses = json.loads((out / "compare" / "model" / "responses.json").read_text())
    held_out = {tuple(r[k] for k in key) for r in responses}
    settings = DataArguments(dataset_name="sft-synth", split_shuffle=True, split_seed=7)
    trained = {tuple(r[k] for k in key) for r in load_splits(settings)["train"]}
    assert len(held_out) == 3 and not trained & held_out
    assert "fine-tuned (after)" in capsys.readouterr().out


def test_a_second_demo_into_the_same_directory_replaces_the_first(tmp_path: Path, capsys) -> None:
    """`make demo` runs `sft demo --overwrite` into the same scratch directory every time."""
    out = tmp_path / "demo"
    recipe = REPO / "recipes" / "tiny.yaml"
    argv = ["demo", "--recipe", str(recipe), "--output-dir", str(out), "--train-records", "8", "--eval-records", "2"]
    assert sft_main([*argv, "--max-new-tokens", "2"]) == 0
    (out / "notes.txt").write_text("mine")
    assert sft_main([*argv, "--max-new-tokens", "2"]) == 2  # not without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    first = (out / "model" / "trainer_state.json").stat().st_mtime_ns
    assert sft_main([*argv, "--max-new-tokens", "2", "--overwrite"]) == 0
    assert (out / "model" / "trainer_state.json").stat().st_mtime_ns != first
    assert (out / "notes.txt").read_text() == "mine"
    assert "fine-tuned (after)" in capsys.readouterr().out


def test_a_second_reproduce_into_the_same_directory_needs_overwrite(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data.json"
    numbered_records(data)
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["reproduce", "--data", str(data), "--output-dir", str(out), "--recipe", str(REPO / "recipes" / "tiny.yaml")]
    assert sft_main([*argv, "--skip-base", "--", "--max_steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    for _ in range(2):  # the second run replaces the first one's files
        assert sft_main([*argv, "--skip-base", "--overwrite", "--", "--max_steps", "1"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "model" / "model.safetensors").is_file()


def test_demo_refuses_a_directory_holding_other_files_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert sft_main(["demo", "--output-dir", str(out)]) == 2
    error = capsys.readouterr().err
    assert "not empty (notes.txt)" in error and "--overwrite" in error
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
