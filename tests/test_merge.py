"""`sft merge`: a LoRA adapter folded into its base gives the same logits as base plus adapter."""

import json
import os
from pathlib import Path

import pytest

from sft.cli import main as cli
from sft.data.template import TEMPLATE_FILE, PromptTemplate

PROMPT = "### Instruction:\nWhat is the capital of France?\n\n### Response:\n"


def logits(model, tokenizer):
    import torch

    with torch.no_grad():
        return model(**tokenizer(PROMPT, return_tensors="pt")).logits


def make_adapter(directory: Path, base: str) -> Path:
    """A LoRA adapter on a tiny model with random lora_B, so that merging changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sft.models.load import load_model, load_tokenizer

    model = get_peft_model(
        load_model(base, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    load_tokenizer(base).save_pretrained(directory)
    PromptTemplate(preamble="A custom preamble.").save(directory)
    (directory / "metrics.json").write_text(json.dumps({"train_loss": 1.5}), encoding="utf-8")
    return directory


@pytest.mark.parametrize("base", ["sft-tiny-llama", "sft-tiny-gpt2"])
def test_merged_model_matches_base_plus_adapter(tmp_path: Path, base: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from sft.models.load import load_model, load_tokenizer
    from sft.models.merge import merge_adapter

    adapter = make_adapter(tmp_path / "adapter", base)
    tokenizer = load_tokenizer(str(adapter))
    expected = logits(load_model(str(adapter), dtype=torch.float32).eval(), tokenizer)
    plain = logits(load_model(base, dtype=torch.float32).eval(), tokenizer)
    assert not torch.allclose(expected, plain, atol=1e-3), "the adapter must change the outputs"

    output = merge_adapter(adapter, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
    assert torch.allclose(logits(merged, load_tokenizer(str(output))), expected, atol=1e-5)
    names = {path.name for path in output.iterdir()}
    assert "model.safetensors" in names and "config.json" in names and "tokenizer_config.json" in names
    assert not {"adapter_config.json", "adapter_model.safetensors"} & names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert PromptTemplate.for_model(output).preamble == "A custom preamble."
    assert json.loads((output / "metrics.json").read_text()) == {"train_loss": 1.5}


def test_cli_merge_writes_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = make_adapter(tmp_path / "adapter", "sft-tiny-llama")
    assert cli(["merge", str(adapter), "--output", str(tmp_path / "out")]) == 0
    assert str(tmp_path / "out") in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / TEMPLATE_FILE).is_file()


def test_merge_refuses_a_directory_without_adapter(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["merge", str(tiny_model_dir), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "not an adapter directory" in error and "adapter_config.json" in error
    assert not (tmp_path / "out").exists()


def test_merge_refuses_prompt_tuning_adapters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from peft import PromptTuningConfig, get_peft_model

    from sft.models.load import load_model

    model = get_peft_model(
        load_model("sft-tiny-gpt2", dtype=torch.float32),
        PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    )
    model.save_pretrained(tmp_path / "prompt")
    capsys.readouterr()
    assert cli(["merge", str(tmp_path / "prompt"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "cannot be merged" in error


def test_merge_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["merge", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "ADAPTER_DIR" in help_text and "--output" in help_text


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    return error


def test_merge_refuses_an_output_that_holds_the_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    adapter = make_adapter(runs / "adapter", "sft-tiny-llama")
    (runs / "sibling").mkdir()
    (runs / "sibling" / "notes.txt").write_text("mine")
    before = sorted(path.name for path in adapter.iterdir())
    capsys.readouterr()
    for output in (runs, adapter, adapter / "merged"):
        for extra in ([], ["--overwrite"]):
            assert cli(["merge", str(adapter), "--output", str(output), *extra]) == 2
            error = one_line_error(capsys)
            assert str(adapter.resolve()) in error and "outside" in error
    assert sorted(path.name for path in adapter.iterdir()) == before
    assert (runs / "sibling" / "notes.txt").read_text() == "mine"


def test_merge_refuses_a_non_empty_output_and_overwrite_keeps_the_user_s_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = make_adapter(tmp_path / "adapter", "sft-tiny-llama")
    (adapter / "eval_metrics.json").write_text(json.dumps({"rouge_l": 0.5}))
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    (output / "loss.png").write_bytes(b"an earlier merge's plot")  # owned: the adapter has none, so it goes
    capsys.readouterr()
    assert cli(["merge", str(adapter), "--output", str(output)]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert sorted(path.name for path in output.iterdir()) == ["loss.png", "notes.txt"]

    assert cli(["merge", str(adapter), "--output", str(output), "--overwrite"]) == 0
    assert (output / "notes.txt").read_text() == "mine"
    assert json.loads((output / "eval_metrics.json").read_text()) == {"rouge_l": 0.5}
    assert (output / "model.safetensors").is_file() and (output / TEMPLATE_FILE).is_file()
    assert not (output / "loss.png").exists()
    assert not [path for path in output.iterdir() if path.name.startswith(".sft-")]

    # A merge of an adapter without an evaluation drops the carried metrics, never the user's files.
    (adapter / "eval_metrics.json").unlink()
    assert cli(["merge", str(adapter), "--output", str(output), "--overwrite"]) == 0
    assert not (output / "eval_metrics.json").exists() and (output / "notes.txt").is_file()


def test_merge_refuses_an_output_that_is_a_file_before_merging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sft.models.load

    adapter = make_adapter(tmp_path / "adapter", "sft-tiny-llama")
    (tmp_path / "out").write_text("a file")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(sft.models.load, "load_model", never)
    capsys.readouterr()
    assert cli(["merge", str(adapter), "--output", str(tmp_path / "out")]) == 2
    assert "is a file" in one_line_error(capsys)
    assert (tmp_path / "out").read_text() == "a file"


def test_a_full_disk_while_merging_is_one_line_and_leaves_no_staging_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from transformers import PreTrainedModel

    adapter = make_adapter(tmp_path / "adapter", "sft-tiny-llama")

    def full(self: object, directory: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    capsys.readouterr()
    assert cli(["merge", str(adapter), "--output", str(tmp_path / "new")]) == 2
    assert "disk is full" in one_line_error(capsys)
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    assert cli(["merge", str(adapter), "--output", str(tmp_path / "old"), "--overwrite"]) == 2
    assert "disk is full" in one_line_error(capsys)
    assert [path.name for path in (tmp_path / "old").iterdir()] == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_parent_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = make_adapter(tmp_path / "adapter", "sft-tiny-llama")
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    capsys.readouterr()
    try:
        assert cli(["merge", str(adapter), "--output", str(parent / "out")]) == 2
        error = one_line_error(capsys)
        assert "permission denied" in error and str(parent) in error
        assert not list(parent.iterdir())
    finally:
        parent.chmod(0o755)


def test_merge_refuses_an_output_holding_another_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = make_adapter(tmp_path / "adapter", "sft-tiny-llama")
    other = make_adapter(tmp_path / "other", "sft-tiny-gpt2")
    capsys.readouterr()
    assert cli(["merge", str(adapter), "--output", str(other), "--overwrite"]) == 2
    error = one_line_error(capsys)
    assert "adapter_config.json" in error and str(other) in error
    assert (other / "adapter_model.safetensors").is_file() and not (other / "model.safetensors").exists()
