"""Training end to end on the tiny recipe: outputs, methods, launch forms, resume and two processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sft.cli import main as sft_main
from sft.errors import SFTError
from sft.training.config import parse_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")
PYTHON = sys.executable
ACCELERATE = str(Path(PYTHON).with_name("accelerate"))


def run(args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses(recipe: Path) -> None:
    parsed = parse_recipe([str(recipe)])
    _data_args, model_args, training_args = parsed.data, parsed.model, parsed.training
    assert model_args.model_name_or_path
    assert model_args.method in {"full", "lora", "qlora", "prompt_tuning"}
    assert training_args.output_dir


def test_seed_recipe_matches_the_book() -> None:
    parsed = parse_recipe([str(REPO / "recipes" / "gpt2-medium.yaml")])
    data_args, model_args, args = parsed.data, parsed.model, parsed.training
    assert model_args.model_name_or_path == "openai-community/gpt2-medium"
    assert (args.num_train_epochs, args.learning_rate, args.weight_decay) == (2, 5e-5, 0.1)
    assert args.per_device_train_batch_size == 8 and args.optim.value.startswith("adamw_torch")
    assert (data_args.train_fraction, data_args.test_fraction, data_args.split_shuffle) == (0.85, 0.10, False)


def test_unknown_recipe_key_is_named(tmp_path: Path) -> None:
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model_name_or_path: sft-tiny-gpt2\nlerning_rate: 0.1\n")
    with pytest.raises(SFTError, match="lerning_rate"):
        parse_recipe([str(recipe)])
    with pytest.raises(SFTError, match="--lerning_rate"):
        parse_recipe([TINY, "--lerning_rate", "0.1"])


def test_cli_overrides_recipe() -> None:
    args = parse_recipe([TINY, "--learning_rate", "0.5", "--output_dir", "elsewhere"]).training
    assert args.learning_rate == 0.5 and args.output_dir == "elsewhere"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule applies without a GPU")
@pytest.mark.parametrize("native", [False, True])
def test_bf16_autocast_only_where_the_cpu_runs_it(monkeypatch, native: bool) -> None:
    monkeypatch.setattr("sft.models.load.cpu_runs_bf16", lambda: native)
    args = parse_recipe([TINY]).training
    assert args.bf16 is native  # never emulated bf16, which is slower than fp32
    if native:
        assert args.use_cpu is True  # without it Transformers refuses bf16 on a machine with no GPU
    forced = parse_recipe([TINY, "--bf16", "false"]).training
    assert forced.bf16 is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule applies without a GPU")
@pytest.mark.parametrize(
    ("variable", "isa", "allowed"),
    [("ONEDNN_MAX_CPU_ISA", "AVX2", False), ("DNNL_MAX_CPU_ISA", "avx512_core", False),
     ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True), ("ONEDNN_MAX_CPU_ISA", "ALL", True)],
)  # fmt: skip
def test_bf16_off_where_onednn_is_capped_below_it(monkeypatch, variable: str, isa: str, allowed: bool) -> None:
    from sft.models import load

    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, isa)
    monkeypatch.setattr("torch.cpu._is_avx512_bf16_supported", lambda: True)  # a CPU with bf16 units
    assert load.cpu_runs_bf16() is allowed  # capped below AVX512_CORE_BF16, oneDNN emulates bf16
    assert parse_recipe([TINY]).training.bf16 is allowed


def test_cpu_defaults_are_fast() -> None:
    args = parse_recipe([TINY]).training
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    assert args.padding_free is True
    assert args.report_to in ([], "none", ["none"])


def test_tiny_full_run_writes_every_output(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert sft_main(["train", TINY, "--output_dir", str(out), "--max_steps", "6", "--logging_steps", "2"]) == 0
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "sft_template.json",
        "sft_config.yaml",
        "metrics.json",
        "trainer_state.json",
        "loss.png",
        "loss.pdf",
    ):
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl"}], "pickle in outputs"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "train_runtime", "train_tokens_per_second", "tokens_seen"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["tokens_seen"] > 0 and metrics["train_tokens_per_second"] > 0
    recipe = (out / "sft_config.yaml").read_text()
    assert "model_name_or_path: sft-tiny-gpt2" in recipe and "max_steps: 6" in recipe
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "loss.pdf").read_bytes()[:4] == b"%PDF"


def test_training_lowers_the_loss(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        sft_main(
            [
                "train",
                TINY,
                "--output_dir",
                str(out),
                "--max_steps",
                "30",
                "--logging_steps",
                "1",
                "--eval_strategy",
                "no",
            ]
        )
        == 0
    )
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_frozen_weights_stay_and_the_rest_train(tmp_path: Path) -> None:
    from sft.models.load import resolve_model

    out = tmp_path / "run"
    args = ["train", TINY, "--output_dir", str(out), "--max_steps", "3", "--learning_rate", "1e-2"]
    assert sft_main([*args, "--freeze_parameters", "wte", "h\\.0\\.attn"]) == 0
    before = weights(Path(resolve_model("sft-tiny-gpt2")))
    after = weights(out)
    for name in after:
        fixed = name.endswith("wte.weight") or ".h.0.attn." in name
        unchanged = torch.equal(before[name], after[name])
        assert unchanged == fixed, name


def test_freeze_pattern_that_matches_nothing_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = sft_main(["train", TINY, "--output_dir", str(out), "--max_steps", "1", "--freeze_parameters", "embed_tokns"])
    err = capsys.readouterr().err
    assert code == 2 and "'embed_tokns' matches no weight" in err
    assert not (out / "model.safetensors").exists()
    code = sft_main(["train", TINY, "--method", "lora", "--output_dir", str(out), "--freeze_parameters", "wte"])
    assert code == 2 and "applies to method full" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method, saved", [("lora", "adapter_model.safetensors"), ("prompt_tuning", "adapter_model.safetensors")]
)
def test_peft_methods_save_adapters(tmp_path: Path, method: str, saved: str) -> None:
    out = tmp_path / method
    assert sft_main(["train", TINY, "--method", method, "--output_dir", str(out), "--max_steps", "2"]) == 0
    assert (out / saved).is_file() and (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == {"lora": "LORA", "prompt_tuning": "PROMPT_TUNING"}[method]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_qlora_without_gpu_says_why(tmp_path: Path, capsys) -> None:
    code = sft_main(["train", TINY, "--method", "qlora", "--output_dir", str(tmp_path / "q"), "--max_steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "CUDA GPU" in err[0] and "method: lora" in err[0]


def test_unreachable_hub_model_fails_fast_in_one_line(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = run(
        [PYTHON, "-m", "sft", "train", str(REPO / "recipes" / "gpt2-medium.yaml"), "--output_dir", str(tmp_path / "g")]
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "smollm2-135m-instruct" in lines[0] and "/local/dir" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert time.perf_counter() - started < 30


def test_local_gpt2_checkpoint_trains_with_the_seed_recipe(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The seed recipe with --model_name_or_path pointing at a local GPT-2 shaped checkpoint."""
    out = tmp_path / "gpt2"
    assert (
        sft_main(
            [
                "train",
                str(REPO / "recipes" / "gpt2-medium.yaml"),
                "--model_name_or_path",
                str(tiny_model_dir),
                "--dataset_name",
                "sft-synth",
                "--max_train_records",
                "16",
                "--max_steps",
                "2",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_three_launch_forms_agree(tmp_path: Path) -> None:
    common = ["--max_steps", "4", "--eval_strategy", "no"]
    forms = {
        "cli": [str(Path(PYTHON).with_name("sft")), "train", TINY],
        "module": [PYTHON, "-m", "sft.train", TINY],
        "accelerate": [ACCELERATE, "launch", "--config_file", "accelerate_config.yaml", "sft/train.py", TINY],
    }
    for name, command in forms.items():
        result = run([*command, *common, "--output_dir", str(tmp_path / name)])
        assert result.returncode == 0, result.stderr[-2000:]
    assert_same_weights(tmp_path / "cli", tmp_path / "module")
    assert_same_weights(tmp_path / "cli", tmp_path / "accelerate")


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    args = [
        "-m",
        "sft.train",
        TINY,
        "--max_train_records",
        "512",
        "--max_steps",
        "150",
        "--save_strategy",
        "steps",
        "--save_steps",
        "5",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "50",
    ]
    whole = run([PYTHON, *args, "--output_dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [PYTHON, *args, "--output_dir", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint-10" / "trainer_state.json").is_file():
        assert process.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model.safetensors").exists(), "killed too late to test resume"

    resumed = run([PYTHON, *args, "--output_dir", str(out), "--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(tmp_path / "whole", out)


@pytest.mark.slow
def test_two_cpu_processes_train_agree_and_save_once(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    result = run(
        [
            ACCELERATE,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "sft/train.py",
            TINY,
            "--max_steps",
            "4",
            "--output_dir",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    losses = dict(re.findall(r"rank (\d/2): train_loss=(\d+\.\d{6})", log))
    assert set(losses) == {"0/2", "1/2"}, log[-2000:]
    assert len(set(losses.values())) == 1
    assert log.count("Wrote the model") == 1
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["train_loss"] == pytest.approx(float(losses["0/2"]))


# Trust: secrets, stale outputs -------------------------------------------------------------------


def files_holding(directory: Path, secret: str) -> list[str]:
    return [
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
    ]


@pytest.mark.parametrize("where", ["option", "recipe"])
def test_a_hub_token_is_never_printed_or_written(tmp_path: Path, where: str) -> None:
    """Given as `--hub_token` or as a recipe key, the token reaches no log line, no saved recipe, no
    checkpoint (whose pickled training arguments would carry it) and no metrics file."""
    secret = "hf_canary_token_value_123"
    out = tmp_path / "run"
    recipe = TINY
    extra = ["--hub_token", secret]
    if where == "recipe":
        recipe = str(tmp_path / "recipe.yaml")
        Path(recipe).write_text(Path(TINY).read_text() + f"hub_token: {secret}\n")
        extra = []
    result = run(
        [PYTHON, "-m", "sft", "train", recipe, *extra, "--output_dir", str(out), "--max_steps", "2"]
        + ["--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1", "--verbose"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert secret not in result.stdout + result.stderr
    assert (out / "checkpoint-1").is_dir() and (out / "trainer_state.json").is_file()
    assert files_holding(out, secret) == []
    assert "hub_token: <given; not saved>" in (out / "sft_config.yaml").read_text()


def test_secret_names() -> None:
    from sft.secrets import is_secret_name, redact, redact_argv

    for name in ("hub_token", "--hub_token", "HF_TOKEN", "api_key", "WANDB_API_KEY", "--api-key", "secret"):
        assert is_secret_name(name), name
    for name in ("eos_token", "pad_token", "num_virtual_tokens", "max_new_tokens", "api_key_env", "monkey"):
        assert not is_secret_name(name), name
    assert redact({"a": 1, "nested": [{"api_key": "k"}], "hub_token": None}) == {
        "a": 1,
        "nested": [{"api_key": "<given; not saved>"}],
        "hub_token": None,
    }
    assert redact_argv(["--hub_token", "x", "--api_key=y", "--lr", "1"]) == [
        "--hub_token",
        "<given; not saved>",
        "--api_key=<given; not saved>",
        "--lr",
        "1",
    ]


def test_an_output_dir_with_another_run_is_refused(tmp_path: Path, capsys) -> None:
    """A full model trained over a LoRA run would sit beside the stale adapter, which every command
    would then load: the second run stops in one line, naming what is there."""
    out = tmp_path / "run"
    common = ["train", TINY, "--output_dir", str(out), "--max_steps", "1", "--eval_strategy", "no"]
    assert sft_main([*common, "--method", "lora"]) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()

    assert sft_main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter" in err[0] and "--overwrite_output_dir" in err[0], err
    assert not (out / "model.safetensors").exists()

    # Resuming a full run where an adapter lies would mix the two as well.
    assert sft_main([*common, "--resume_from_checkpoint", "true"]) == 2
    assert "leave both" in capsys.readouterr().err

    assert sft_main([*common, "--overwrite_output_dir", "true"]) == 0
    assert (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not a training output: kept


def test_an_output_dir_that_is_a_file_is_refused(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert sft_main(["train", TINY, "--output_dir", str(target), "--max_steps", "1"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_library_chatter_only_with_verbose(tmp_path: Path) -> None:
    """PEFT warns about GPT-2's Conv1D layers under LoRA, and matplotlib announces its font cache on first
    use: a normal run shows neither, `--verbose` shows them."""
    env = {"MPLCONFIGDIR": str(tmp_path / "mpl")}
    args = [PYTHON, "-m", "sft", "train", TINY, "--method", "lora", "--max_steps", "2"]
    quiet = run([*args, "--output_dir", str(tmp_path / "quiet")], env={**os.environ, **env})
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    shown = quiet.stdout + quiet.stderr
    assert "Warning" not in shown and "fan_in_fan_out" not in shown and "font cache" not in shown
    assert "sft.train: Recipe:" in shown  # our own log lines stay

    env["MPLCONFIGDIR"] = str(tmp_path / "mpl-verbose")
    loud = run([*args, "--output_dir", str(tmp_path / "loud"), "--verbose"], env={**os.environ, **env})
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "fan_in_fan_out" in loud.stdout + loud.stderr
