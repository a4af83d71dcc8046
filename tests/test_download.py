"""`sft download`: the real huggingface_hub client against a local stand-in for the Hub, and offline."""

import os
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


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    return error


def test_a_non_empty_output_is_refused_and_overwrite_keeps_the_user_s_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "models"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    (output / "config.json").write_text("{}")  # an earlier download's file: replaced with --overwrite
    assert cli(["download", "sft-tiny-gpt2", "--output", str(output)]) == 2
    error = one_line_error(capsys)
    assert str(output) in error and "--overwrite" in error
    assert sorted(path.name for path in output.iterdir()) == ["config.json", "notes.txt"]

    assert cli(["download", "sft-tiny-gpt2", "--output", str(output), "--overwrite"]) == 0
    assert (output / "notes.txt").read_text() == "mine"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in output.iterdir()}
    assert (output / "config.json").read_text() != "{}"
    assert not [path for path in output.iterdir() if path.name.startswith(".sft-")]
    assert "notes.txt" not in capsys.readouterr().out  # it lists what it wrote, not what was there


def test_output_dot_never_deletes_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("precious")
    monkeypatch.chdir(work)
    assert cli(["download", "sft-tiny-gpt2", "--output", "."]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert [path.name for path in work.iterdir()] == ["keep.txt"]
    assert cli(["download", "sft-tiny-gpt2", "--output", ".", "--overwrite"]) == 0
    assert (work / "keep.txt").read_text() == "precious" and (work / "model.safetensors").is_file()


def test_an_output_that_is_a_file_is_refused_before_downloading(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").write_text("a file")
    assert cli(["download", "org/model", "--output", str(tmp_path / "out")]) == 2
    assert "is a file" in one_line_error(capsys)
    assert not hub.requests and (tmp_path / "out").read_text() == "a file"


def test_a_full_disk_is_one_line_and_leaves_no_staging_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    import sft.hub.download

    def full(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(sft.hub.download, "copy_file", full)
    assert cli(["download", "sft-tiny-gpt2", "--output", str(tmp_path / "new")]) == 2
    assert "disk is full" in one_line_error(capsys)
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    assert cli(["download", "sft-tiny-gpt2", "--output", str(tmp_path / "old"), "--overwrite"]) == 2
    assert "disk is full" in one_line_error(capsys)
    assert [path.name for path in (tmp_path / "old").iterdir()] == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_parent_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert cli(["download", "sft-tiny-gpt2", "--output", str(parent / "out")]) == 2
        error = one_line_error(capsys)
        assert "permission denied" in error and str(parent) in error
        assert not list(parent.iterdir())
    finally:
        parent.chmod(0o755)
