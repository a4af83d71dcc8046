"""`sft push`: the real huggingface_hub client uploads to a local stand-in for the Hub."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import FakeHub

from sft.cli import main as cli
from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.hub.push import push_to_hub
from sft.secrets import GIVEN

TOKEN = "hf_testSecretTokenThatMustNeverLeak0123"
# What a LoRA run on the offline default publishes: weights, tokenizer, run files and the card.
PUBLISHED = {
    "README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "sft_template.json", "sft_config.yaml", "metrics.json", "eval_metrics.json", "loss.png",
}  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A training output directory as `sft train` leaves it after a LoRA run, checkpoint included."""
    from safetensors.torch import save_file
    from torch import zeros

    run = tmp_path / "run"
    run.mkdir()
    base = str(Path.home() / ".cache" / "sft" / "models" / "smollm2-135m-instruct")
    (run / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": base, "r": 8}), encoding="utf-8"
    )
    save_file({"base_model.model.lora_A.weight": zeros(2, 2)}, run / "adapter_model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (run / name).write_bytes((tiny_model_dir / name).read_bytes())
    PromptTemplate(preamble="Answer like a careful assistant.").save(run)
    (run / "sft_config.yaml").write_text(
        "model_name_or_path: smollm2-135m-instruct\nmethod: lora\ndataset_name: data/alpaca.json\n"
        f"lora_r: 8\nlearning_rate: 0.0002\nnum_train_epochs: 2\npush_to_hub: true\nhub_token: {TOKEN}\n",
        encoding="utf-8",
    )
    metrics = {
        "train_loss": 1.23456,
        "eval_loss": 1.4567,
        "train_runtime": 61.5,
        "train_tokens_per_second": 2345.6,
        "total_flos": 1.0e12,
    }
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    scores = {
        "data": "data/alpaca.json",
        "split": "test",
        "n": 8,
        "rouge_l": 0.4321,
        "bleu": 21.5,
        "exact_match": 0.125,
        "generation": {"max_new_tokens": 256},
        "per_record": [{"rouge_l": 0.5}],
    }
    (run / "eval_metrics.json").write_text(json.dumps(scores))
    for name in ("trainer_state.json", "loss.png", "loss.pdf", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        (run / name).write_bytes(b"local only")
    (run / "checkpoint-4").mkdir()
    (run / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"old weights")
    (run / "checkpoint-4" / "optimizer.pt").write_bytes(b"pickled")
    return run


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Online, logged in with TOKEN, and pointed at a local Hub."""
    from huggingface_hub import constants

    server = FakeHub()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    server.close()


def test_push_uploads_the_model_card_and_run_files(
    run_dir: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    url = push_to_hub(run_dir, "someone/smollm2-alpaca-lora", private=True, commit_message="First upload")

    assert url == f"{hub.url}/someone/smollm2-alpaca-lora"
    assert set(hub.uploads) == PUBLISHED
    assert hub.created == [{"name": "smollm2-alpaca-lora", "organization": "someone", "visibility": "private",
                            "type": "model"}]  # fmt: skip
    assert hub.commits[0]["summary"] == "First upload"
    settings = [json.loads(request["body"]) for request in hub.requests if request["path"].endswith("/settings")]
    assert settings == [{"visibility": "private"}]  # also for a repository that already existed
    api_calls = [request for request in hub.requests if request["path"].startswith("/api/repos/")]
    assert api_calls[0]["headers"]["authorization"] == f"Bearer {TOKEN}"

    card = hub.uploads["README.md"].decode()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "library_name: peft" in card
    assert "data/alpaca.json" in card and "| lora_r | `8` |" in card
    assert "| training loss | 1.2346 |" in card and "| tokens per second | 2,346 |" in card
    assert "total_flos" not in card and "256" not in card  # only the headline figures
    assert "| ROUGE-L | 0.4321 |" in card and "| BLEU | 21.50 |" in card and "| exact match | 0.1250 |" in card
    assert "(`test` of `data/alpaca.json`, 8 records)" in card
    assert 'AutoPeftModelForCausalLM.from_pretrained("someone/smollm2-alpaca-lora")' in card
    assert "sft download someone/smollm2-alpaca-lora --output smollm2-alpaca-lora" in card
    assert "sft chat smollm2-alpaca-lora" in card
    assert "Answer like a careful assistant." in card  # the saved template, not the default one
    assert "![Training and validation loss](loss.png)" in card

    # The published adapter names its base by Hub id, not by this machine's cache path.
    config = json.loads(hub.uploads["adapter_config.json"])
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    recipe = hub.uploads["sft_config.yaml"].decode()
    assert TOKEN not in recipe and f"hub_token: {GIVEN}" in recipe and "lora_r: 8" in recipe

    output = capsys.readouterr()
    assert all(TOKEN.encode() not in content for content in hub.uploads.values())
    assert TOKEN not in output.out + output.err
    assert not [path for path in run_dir.iterdir() if path.name.startswith(".hub-upload")]


def test_dry_run_stages_exactly_what_would_be_uploaded(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # HF_HUB_OFFLINE=1 stays set: a dry run needs no network

    assert cli(["push", str(run_dir), "--repo-id", "someone/model", "--dry-run"]) == 0

    staged = run_dir / "hub-upload"
    assert {path.name for path in staged.iterdir()} == PUBLISHED
    output = capsys.readouterr()
    assert str(staged) in output.out and "nothing uploaded" in output.out
    assert all(name in output.out for name in PUBLISHED)
    assert TOKEN not in output.out + output.err
    assert all(TOKEN.encode() not in path.read_bytes() for path in staged.iterdir())
    assert "checkpoint" not in output.out and ".bin" not in output.out and "optimizer" not in output.out


def test_dry_run_folder_matches_the_upload(run_dir: Path, hub: FakeHub) -> None:
    staged = push_to_hub(run_dir, "someone/model", dry_run=True)
    assert not hub.uploads  # nothing sent
    push_to_hub(run_dir, "someone/model")
    assert {path.name: path.read_bytes() for path in Path(staged).iterdir()} == hub.uploads


def test_a_full_model_gets_a_transformers_card(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    run = tmp_path / "full"
    shutil.copytree(tiny_model_dir, run)
    (run / "sft_config.yaml").write_text("model_name_or_path: openai-community/gpt2\nmethod: full\n")
    staged = Path(push_to_hub(run, "someone/gpt2-alpaca", dry_run=True))
    card = (staged / "README.md").read_text()
    assert "base_model: openai-community/gpt2" in card and "library_name: transformers" in card
    assert 'AutoModelForCausalLM.from_pretrained("someone/gpt2-alpaca")' in card and "peft" not in card
    assert "## Results" not in card  # no metrics were saved
    assert {"model.safetensors", "config.json", "README.md"} <= {path.name for path in staged.iterdir()}


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    return error


def test_push_without_a_token_says_how_to_log_in(
    run_dir: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no HF_TOKEN, no login cache
    assert cli(["push", str(run_dir), "--repo-id", "someone/model"]) == 2
    error = one_line_error(capsys)
    assert "HF_TOKEN" in error and "hf auth login" in error
    assert not hub.requests


def test_push_offline_fails_at_once(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    start = time.monotonic()
    assert cli(["push", str(run_dir), "--repo-id", "someone/model"]) == 2
    assert time.monotonic() - start < 3
    error = one_line_error(capsys)
    assert "HF_HUB_OFFLINE" in error and "--dry-run" in error and TOKEN not in error


def test_a_rejected_token_is_one_line(run_dir: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.fail_status = 401
    assert cli(["push", str(run_dir), "--repo-id", "someone/model"]) == 2
    error = one_line_error(capsys)
    assert "401" in error and "HF_TOKEN" in error and TOKEN not in error


def test_push_refuses_files_that_hold_the_token(run_dir: Path, hub: FakeHub) -> None:
    (run_dir / "metrics.json").write_text(json.dumps({"train_loss": 1.0, "note": TOKEN}))
    with pytest.raises(SFTError, match="token appears in metrics.json"):
        push_to_hub(run_dir, "someone/model")
    assert not hub.uploads


def test_push_needs_safetensors_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickled")
    with pytest.raises(SFTError, match="no model or adapter saved as safetensors.*pytorch_model.bin"):
        push_to_hub(tmp_path, "someone/model", dry_run=True)


def test_push_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["push", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(option in help_text for option in ("--repo-id", "--private", "--dry-run", "--commit-message"))


def test_an_invalid_repo_id_is_one_line(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["push", str(run_dir), "--repo-id", "not a repo id!", "--dry-run"]) == 2
    assert "--repo-id" in one_line_error(capsys)


def test_a_second_dry_run_replaces_only_its_own_staged_files(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli(["push", str(run_dir), "--repo-id", "someone/model", "--dry-run"]) == 0
    staged = run_dir / "hub-upload"
    (staged / "notes.txt").write_text("mine")
    (run_dir / "loss.png").unlink()  # the second upload has no plot: the staged one goes
    (run_dir / "metrics.json").write_text(json.dumps({"train_loss": 0.5}))
    capsys.readouterr()
    assert cli(["push", str(run_dir), "--repo-id", "someone/model", "--dry-run"]) == 0
    names = {path.name for path in staged.iterdir()}
    assert names == (PUBLISHED - {"loss.png"}) | {"notes.txt"}
    assert json.loads((staged / "metrics.json").read_text()) == {"train_loss": 0.5}
    assert "notes.txt" not in capsys.readouterr().out  # the listing is the upload, not the folder
    assert not [path for path in staged.iterdir() if path.name.startswith(".sft-")]


def test_a_dry_run_where_hub_upload_is_a_file_is_one_line(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    (run_dir / "hub-upload").write_text("mine")
    assert cli(["push", str(run_dir), "--repo-id", "someone/model", "--dry-run"]) == 2
    assert "hub-upload" in one_line_error(capsys)
    assert (run_dir / "hub-upload").read_text() == "mine"
