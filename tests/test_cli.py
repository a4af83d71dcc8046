"""The `sft` command table: every command answers --help, and help never loads the heavy libraries."""

import os
import subprocess
import sys

import pytest

from sft.cli import COMMANDS
from sft.cli import main as sft_main

HEAVY = ("torch", "transformers", "trl", "peft", "evaluate", "datasets", "numpy", "gradio", "scipy", "openai")


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name: str, capsys) -> None:
    try:
        code = sft_main([name, "--help"])
    except SystemExit as exit_:  # argparse exits after printing help
        code = exit_.code
    assert code == 0
    assert f"usage: sft {name}" in capsys.readouterr().out


def test_help_loads_no_heavy_library(tmp_path) -> None:
    """`sft --help` and every `sft COMMAND --help` answer without torch and Transformers: the recipe
    parser's help comes from the cache once it has been rendered."""
    env = {**os.environ, "SFT_CACHE": str(tmp_path)}
    warm = python("from sft.cli import main; main(['train', '--help'])", env)
    assert warm.returncode == 0, warm.stderr
    code = (
        "import contextlib, io, sys\n"
        "from sft.cli import COMMANDS, main\n"
        "for argv in [['--help'], *([name, '--help'] for name in COMMANDS)]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    assert 'usage: sft' in out.getvalue(), argv\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = python(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cached_train_help_equals_the_parser_s(tmp_path) -> None:
    from sft.training.config import make_parser
    from sft.training.recipe_help import recipe_help

    os.environ["SFT_CACHE"], previous = str(tmp_path), os.environ["SFT_CACHE"]
    try:
        first, second = recipe_help(), recipe_help()
    finally:
        os.environ["SFT_CACHE"] = previous
    assert first == second == make_parser().format_help()
    assert "--overwrite_output_dir" in first and "--dataset_name" in first


def test_unknown_command_is_named(capsys) -> None:
    assert sft_main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
