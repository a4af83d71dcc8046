"""Training under mistakes and faults: values that would train nothing, broken recipes, a second run
into the same directory, a kill while saving, a full disk, and resuming from the wrong checkpoint."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sft.cli import main as sft_main
from sft.paths import PROBE_PREFIX
from sft.training.outputs import prepare_output_dir

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")
PYTHON = sys.executable
QUICK = ["--max_steps", "2", "--eval_strategy", "no", "--logging_steps", "1"]


def one_error(capsys) -> str:
    """The one error line of a failed command (progress bars before it share stderr)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "override, key",
    [
        (["--num_train_epochs", "0"], "num_train_epochs"),
        (["--num_train_epochs", "-1"], "num_train_epochs"),
        (["--max_steps", "0"], "max_steps"),
        (["--learning_rate", "0"], "learning_rate"),
        (["--learning_rate", "-0.1"], "learning_rate"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps"),
        (["--method", "lora", "--lora_r", "0"], "lora_r"),
        (["--method", "lora", "--lora_dropout", "1.5"], "lora_dropout"),
        (["--method", "prompt_tuning", "--num_virtual_tokens", "0"], "num_virtual_tokens"),
        (["--method", "lorra"], "--method"),
        (["--train_fraction", "1.5"], "train fraction"),
        (["--max_train_records", "0"], "max_train_records"),
        (["--freeze_parameters", "[unclosed"], "freeze_parameters"),
        (["--dataset_field_map", "{not json"], "dataset_field_map"),
    ],
)
def test_values_that_train_nothing_are_refused_before_any_model_loads(tmp_path, capsys, override, key) -> None:
    # A model path that does not exist: reaching the model would be a different error.
    argv = ["train", TINY, "--model_name_or_path", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "o")]
    assert sft_main([*argv, *override]) == 2
    error = one_error(capsys)
    assert key in error and "absent" not in error, error
    assert not (tmp_path / "o").exists()


def test_a_method_typo_in_the_recipe_file_is_refused(tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(TINY).read_text().replace("method: full", "method: lorra"))
    assert sft_main(["train", str(recipe), "--output_dir", str(tmp_path / "o")]) == 2
    assert "lorra" in one_error(capsys)


@pytest.mark.parametrize("kind", ["directory", "latin-1", "bad yaml", "a list"])
def test_a_broken_recipe_file_is_one_line(tmp_path, capsys, kind) -> None:
    recipe = tmp_path / "r.yaml"
    if kind == "directory":
        recipe.mkdir()
    elif kind == "latin-1":
        recipe.write_bytes("model_name_or_path: caf\xe9\n".encode("latin-1"))
    elif kind == "bad yaml":
        recipe.write_text("method: full\n  learning_rate: [1\n")
    else:
        recipe.write_text("- method\n- full\n")
    assert sft_main(["train", str(recipe)]) == 2
    assert str(recipe) in one_error(capsys)


def test_a_second_run_into_a_directory_in_use_is_refused(tmp_path) -> None:
    """A real first run holds the lock; the second stops at once and names its PID."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [PYTHON, "-m", "sft", "train", TINY, "--output_dir", str(out), "--max_steps", "400", "--eval_strategy", "no"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (out / ".sft-lock").is_file():
            assert first.poll() is None and time.time() < deadline, "the first run ended before taking its lock"
            time.sleep(0.05)
        second = subprocess.run(
            [PYTHON, "-m", "sft", "train", TINY, "--output_dir", str(out), "--overwrite_output_dir", "true"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"PID {first.pid}" in second.stderr and "in use" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_another_processs_writability_probe_is_not_another_run(tmp_path) -> None:
    """Every process of a multi-process run checks the output directory; one's probe file, there for an instant,
    must not make the directory look taken to another (a two-process run failed this way)."""
    out = tmp_path / "run"
    out.mkdir()
    fd, _ = tempfile.mkstemp(dir=out, prefix=PROBE_PREFIX)
    os.close(fd)
    prepare_output_dir(out, trains_adapter=False, overwrite=False, resume=None)


def test_a_stale_lock_is_taken_over(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "earlier"}
    (out / ".sft-lock").write_text(json.dumps(holder))
    assert sft_main(["train", TINY, "--output_dir", str(out), *QUICK]) == 0
    assert (out / "model.safetensors").is_file() and not (out / ".sft-lock").exists()


def test_a_kill_while_saving_leaves_a_run_every_command_refuses(tmp_path) -> None:
    """SIGKILL half way through moving the final files into place: the directory then says it is
    incomplete, and training into it again is refused until the user says what to do."""
    out = tmp_path / "run"
    assert sft_main(["train", TINY, "--output_dir", str(out), *QUICK]) == 0  # an earlier, complete run
    killer = (
        "import os, signal, sft.paths\n"
        "moves = []\n"
        "real = os.replace\n"
        "def replace(src, dst, *args, **kwargs):\n"
        "    if '.sft-staging-final' in str(src) and '.sft-staging-final' not in str(dst):\n"
        "        moves.append(dst)\n"
        "        if len(moves) == 3:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, *args, **kwargs)\n"
        "sft.paths.os.replace = replace\n"
        "from sft.cli import main\n"
        f"main(['train', {TINY!r}, '--output_dir', {str(out)!r}, '--overwrite_output_dir', 'true', "
        "'--max_steps', '3', '--eval_strategy', 'no'])\n"
    )
    killed = subprocess.run([PYTHON, "-c", killer], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / ".sft-incomplete").is_file()

    from sft.errors import SFTError
    from sft.paths import check_complete

    with pytest.raises(SFTError, match="incomplete"):
        check_complete(out)
    again = subprocess.run(
        [PYTHON, "-m", "sft", "train", TINY, "--output_dir", str(out), *QUICK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "stopped while saving" in again.stderr
    # Replacing it works, and leaves a complete run.
    assert sft_main(["train", TINY, "--output_dir", str(out), "--overwrite_output_dir", "true", *QUICK]) == 0
    assert not (out / ".sft-incomplete").exists() and not list(out.glob(".sft-staging-*"))
    check_complete(out)


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_temporary_files(tmp_path, capsys, monkeypatch) -> None:
    import errno

    from transformers import Trainer

    def full(self, output_dir=None, _internal_call=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(output_dir))

    monkeypatch.setattr(Trainer, "save_model", full)
    out = tmp_path / "run"
    assert sft_main(["train", TINY, "--output_dir", str(out), *QUICK]) == 2
    error = one_error(capsys)
    assert "disk is full" in error and str(out) in error
    assert not list(out.glob(".sft-*")) and not (out / "model.safetensors").exists()


def test_too_little_room_is_refused_before_training(tmp_path, capsys, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "run"
    assert sft_main(["train", TINY, "--output_dir", str(out), *QUICK]) == 2
    error = one_error(capsys)
    assert "free" in error and "needs" in error
    assert not (out / "model.safetensors").exists()


def test_an_unwritable_output_dir_is_refused_before_training(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only mount would answer
    assert sft_main(["train", TINY, "--output_dir", str(tmp_path / "run"), *QUICK]) == 2
    assert "permission denied" in one_error(capsys)


# Resume ----------------------------------------------------------------------------------------------


@pytest.fixture
def checkpointed(tmp_path) -> Path:
    """A six-step run as if killed after its checkpoint at step 4: the later checkpoint and the final
    outputs removed."""
    import shutil

    out = tmp_path / "run"
    assert sft_main(resume(out)[:-2]) == 0
    shutil.rmtree(out / "checkpoint-6")
    for name in ("model.safetensors", "sft_config.yaml", "metrics.json", "trainer_state.json"):
        (out / name).unlink()
    return out


def resume(out: Path, *extra: str) -> list[str]:
    return ["train", TINY, "--output_dir", str(out), "--max_steps", "6", "--save_strategy", "steps", "--save_steps",
            "2", "--eval_strategy", "no", "--resume_from_checkpoint", "true", *extra]  # fmt: skip


def test_resuming_another_recipe_or_data_is_refused_unless_forced(checkpointed, capsys) -> None:
    assert sft_main(resume(checkpointed, "--learning_rate", "0.5")) == 2
    error = one_error(capsys)
    assert "learning_rate" in error and "--force_resume" in error
    assert sft_main(resume(checkpointed, "--max_train_records", "32")) == 2
    assert "training records differ" in one_error(capsys)
    assert sft_main(resume(checkpointed, "--learning_rate", "0.5", "--force_resume", "true")) == 0
    assert (checkpointed / "model.safetensors").is_file()


def test_resuming_the_same_recipe_works(checkpointed, caplog) -> None:
    assert sft_main(resume(checkpointed)) == 0
    state = json.loads((checkpointed / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and "another recipe" not in caplog.text


def test_a_checkpoint_without_optimizer_state_is_refused_unless_forced(checkpointed, capsys) -> None:
    for folder in checkpointed.glob("checkpoint-*"):
        (folder / "optimizer.pt").unlink()
    assert sft_main(resume(checkpointed)) == 2
    assert "optimizer.pt" in capsys.readouterr().err
    assert sft_main(resume(checkpointed, "--force_resume", "true")) == 0


def test_a_cut_off_checkpoint_is_skipped_for_the_one_before(checkpointed, caplog) -> None:
    weights = checkpointed / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert sft_main(resume(checkpointed)) == 0
    assert "Skipping" in caplog.text and "checkpoint-4" in caplog.text


def test_resume_with_no_or_only_broken_checkpoints_is_one_line(tmp_path, checkpointed, capsys) -> None:
    empty = tmp_path / "empty"
    assert sft_main(resume(empty)) == 2
    assert "holds no checkpoint-N" in one_error(capsys)
    for folder in checkpointed.glob("checkpoint-*"):
        (folder / "trainer_state.json").unlink()
    assert sft_main(resume(checkpointed)) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert sft_main([*resume(checkpointed)[:-1], str(checkpointed / "nowhere")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
