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
        "eval/metrics.json",
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
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 4 and 0 <= metrics["ended_at_eos"] <= 1
    printed = capsys.readouterr().out
    assert "(base)" in printed and "fine-tuned" in printed and "GPT-2 medium" in printed
    assert "| 0.5000 |" in printed  # the reference file: two of four responses exact
    assert "training time" in printed


@pytest.mark.parametrize("command", ["demo", "reproduce"])
def test_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sft_main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sft " + command in capsys.readouterr().out
