"""`sft download`: the real huggingface_hub client against a local stand-in for the Hub, and offline."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import FakeHub

from sft.cli import main as cli
from sft.hub.download import download_model, select_files

# A repository as the Hub often holds one: safetensors plus pickled, TF, Flax and ONNX copies.
REPO_FILES = {
    "config.json": b'{"model_type": "gpt2"}',
    "generation_config.json": b"{}",
    "model.safetensors": b"safetensors weights",
    "pytorch_model.bin": b"pickled weights",
    "tf_model.h5": b"tf weights",
    "flax_model.msgpack": b"flax weights",
    "onnx/model.onnx": b"onnx weights",
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "merges.txt": b"#version: 0.2",
    "vocab.json": b"{}",
    "README.md": b"# a model",
    ".gitattributes": b"*.bin filter=lfs",
}
KEPT = {
    "README.md", "config.json", "generation_config.json", "merges.txt", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "vocab.json",
}  # fmt: skip


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Online, with an empty Hugging Face cache, and pointed at a local Hub serving `org/model`."""
    from huggingface_hub import constants

    server = FakeHub()
    server.models["org/model"] = dict(REPO_FILES)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


def test_download_keeps_safetensors_config_and_tokenizer(tmp_path: Path, hub: FakeHub) -> None:
    output = download_model("org/model", tmp_path / "model")
    assert {path.name for path in output.iterdir()} == KEPT
    assert (output / "model.safetensors").read_bytes() == REPO_FILES["model.safetensors"]
    fetched = {request["path"].rsplit("/", 1)[-1] for request in hub.requests if "/resolve/" in request["path"]}
    assert fetched == KEPT  # the skipped files were never transferred


def test_download_works_offline_from_the_cache(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    download_model("org/model", tmp_path / "first")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli(["download", "org/model", "--output", str(tmp_path / "again")]) == 0
    assert {path.name for path in (tmp_path / "again").iterdir()} == KEPT
    assert str(tmp_path / "again") in capsys.readouterr().out


def test_pickled_weights_only_where_there_are_no_safetensors() -> None:
    assert "pytorch_model.bin" not in select_files(list(REPO_FILES))
    without = [name for name in REPO_FILES if name != "model.safetensors"]
    assert "pytorch_model.bin" in select_files(without)
    assert not {"tf_model.h5", "flax_model.msgpack", "onnx/model.onnx"} & set(select_files(without))


def test_unknown_model_is_one_line(tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["download", "org/missing", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "org/missing" in error and "HF_TOKEN" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable"])
def test_offline_error_is_one_line_and_fast(
    tmp_path: Path, offline: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from huggingface_hub import constants

    if offline == "unreachable":  # online mode, but nothing listens at the endpoint
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    assert cli(["download", "someone/not-cached-model", "--output", str(tmp_path / "out")]) == 2
    assert time.monotonic() - start < 3
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert "smollm2-135m-instruct" in error and "--model_name_or_path /local/dir" in error
    assert not (tmp_path / "out").exists()


def test_download_the_offline_test_model(tmp_path: Path) -> None:
    assert cli(["download", "sft-tiny-gpt2", "--output", str(tmp_path / "tiny")]) == 0
    names = {path.name for path in (tmp_path / "tiny").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


def test_download_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["download", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "MODEL" in help_text and "--output" in help_text and "--revision" in help_text
