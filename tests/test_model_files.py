"""Broken model folders: incomplete, empty, with a moved base, truncated weights or a corrupt template.
Each is refused by every loader with one line naming the file and what to do, never a traceback."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from sft.cli import main as cli
from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.paths import INCOMPLETE_MARKER, TEMPLATE_FILE


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    return error


@pytest.fixture
def model_copy(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A writable copy of the tiny GPT-2 model."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_every_loader_refuses_an_incomplete_output(
    tmp_path: Path, model_copy: Path, alpaca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (model_copy / INCOMPLETE_MARKER).write_text("123\n")
    commands = [
        ["generate", str(model_copy), "--instruction", "x"],
        ["eval", "--model", str(model_copy), "--data", str(alpaca_file), "--split", "all", "--output-dir",
         str(tmp_path / "eval")],
        ["push", str(model_copy), "--repo-id", "a/b", "--dry-run"],
    ]  # fmt: skip
    for argv in commands:
        assert cli(argv) == 2, argv
        error = one_line_error(capsys)
        assert str(model_copy) in error and "incomplete" in error, argv
    assert not (model_copy / "hub-upload").exists() and not (tmp_path / "eval").exists()


def test_an_empty_folder_is_not_blamed_on_the_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no model here")
    assert cli(["generate", str(empty), "--instruction", "x"]) == 2
    error = one_line_error(capsys)
    assert f"{empty} holds no model" in error and "config.json" in error and "adapter_config.json" in error
    assert "Hub" not in error


@pytest.mark.parametrize("with_tokenizer", [False, True])
def test_an_adapter_whose_local_base_moved_names_the_base(
    tmp_path: Path, model_copy: Path, with_tokenizer: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    base = tmp_path / "moved-base"
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base), "r": 4})
    )
    if with_tokenizer:  # the tokenizer loads from the adapter; the base is needed for the weights
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(model_copy / name, adapter / name)
    assert cli(["generate", str(adapter), "--instruction", "x"]) == 2
    error = one_line_error(capsys)
    assert str(base) in error and "adapter_config.json" in error and "base_model_name_or_path" in error
    assert "restore" in error


def test_a_truncated_weights_file_is_named(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert cli(["generate", str(model_copy), "--instruction", "x"]) == 2
    error = one_line_error(capsys)
    assert str(weights) in error and "truncated" in error and "download" in error


def test_a_truncated_adapter_weights_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from sft.models.load import load_model

    model = get_peft_model(
        load_model("sft-tiny-llama", dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    model.save_pretrained(tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert cli(["generate", str(tmp_path / "adapter"), "--instruction", "x"]) == 2
    error = one_line_error(capsys)
    assert str(weights) in error and "truncated" in error


CORRUPT_TEMPLATES = {
    "not JSON": "{preamble: oops",
    "not an object": "[]",
    "missing keys": json.dumps({"preamble": "Hi."}),
    "unknown key": json.dumps({**asdict(PromptTemplate()), "footer": "x"}),
    "non-string value": json.dumps({**asdict(PromptTemplate()), "preamble": 3}),
}


@pytest.mark.parametrize("content", CORRUPT_TEMPLATES.values(), ids=CORRUPT_TEMPLATES.keys())
def test_a_corrupt_template_is_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / TEMPLATE_FILE).write_text(content)
    with pytest.raises(SFTError) as error:
        PromptTemplate.for_model(tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / TEMPLATE_FILE) in message


def test_a_corrupt_template_through_the_cli(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (model_copy / TEMPLATE_FILE).write_text(CORRUPT_TEMPLATES["missing keys"])
    assert cli(["generate", str(model_copy), "--instruction", "x"]) == 2
    error = one_line_error(capsys)
    assert str(model_copy / TEMPLATE_FILE) in error and "response_header" in error


def test_a_valid_template_still_loads(tmp_path: Path) -> None:
    PromptTemplate(preamble="").save(tmp_path)
    assert PromptTemplate.for_model(tmp_path) == PromptTemplate(preamble="")
    assert PromptTemplate.for_model(tmp_path / "none") == PromptTemplate()
