"""Copying a model from the Hugging Face Hub into a plain local directory.

Files go through the Hugging Face cache (resumable, shared with transformers), so a model already
there is copied without a connection.
"""

import fnmatch
import glob
import shutil
from pathlib import Path

from sft.errors import SFTError
from sft.models.load import OFFLINE_DEFAULT, OFFLINE_HINT, TINY_MODELS
from sft.paths import ADAPTER_CONFIG, check_output_dir, check_writable, staged_output

# Top-level files a causal LM needs: weights, configs, tokenizer, templates, card and licence.
KEEP = ("*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.yaml", "*.md", "LICENSE*")
# Pickled PyTorch weights, only for models published without safetensors; TF, Flax and ONNX
# weights are never needed.
PICKLED_WEIGHTS = ("pytorch_model*.bin", "adapter_model.bin")
WEIGHTS = ("*.safetensors", *PICKLED_WEIGHTS)


def download_model(model: str, output_dir: str | Path, revision: str | None = None, overwrite: bool = False) -> Path:
    """Write `model` into `output_dir` and return it; see `download`."""
    return download(model, output_dir, revision, overwrite)[0]


def download(
    model: str, output_dir: str | Path, revision: str | None = None, overwrite: bool = False
) -> tuple[Path, list[str]]:
    """Write `model` into `output_dir`, all its files at once once every one is in, and return the directory
    and the names written. A non-empty `output_dir` is refused unless `overwrite`, and then only the
    files of the download are replaced there: nothing else in it is touched."""
    output = Path(output_dir)
    check_output_dir(output, overwrite)  # before any download: a file there, or someone's folder
    check_writable(output)
    if model.lower() in (OFFLINE_DEFAULT, *TINY_MODELS):
        if revision:
            raise SFTError(f"--revision applies to Hub models only, not to {model}")
        from sft.models.load import resolve_model

        source = Path(resolve_model(model))
        files = select_files([path.name for path in source.iterdir() if path.is_file()])
    else:
        source, files = fetch_snapshot(model, revision)
    check_output_dir(output, overwrite, inputs=[source])  # not into the cache it copies from
    with staged_output(output, owned=[glob.escape(name) for name in files]) as staging:
        for name in files:
            # Copies, not links into the cache, so that editing a file here cannot alter the cache.
            copy_file(source / name, staging / name)
    return output, files


def copy_file(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def select_files(files: list[str]) -> list[str]:
    """Top-level files worth keeping; pickled weights only where there are no safetensors."""
    top = [name for name in files if "/" not in name]
    patterns = KEEP if any(name.endswith(".safetensors") for name in top) else (*KEEP, *PICKLED_WEIGHTS)
    return sorted(name for name in top if any(fnmatch.fnmatch(name, pattern) for pattern in patterns))


def fetch_snapshot(model: str, revision: str | None) -> tuple[Path, list[str]]:
    """The cached snapshot folder of `model` and the files to take from it, downloading what is missing."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    from sft.hub.access import hub_unreachable

    try:
        validate_repo_id(model)
    except ValueError:
        raise SFTError(f"{model!r} is not a Hub model id (owner/name); {OFFLINE_HINT}") from None
    problem = hub_unreachable()
    if problem:
        return cached_snapshot(model, revision, problem)
    try:
        info = HfApi().model_info(model, revision=revision)
        files = select_files([sibling.rfilename for sibling in info.siblings or []])
        check_weights(model, files)
        folder = snapshot_download(model, revision=revision, allow_patterns=files)
    except GatedRepoError:
        raise SFTError(
            f"{model} is gated: accept its terms at https://huggingface.co/{model} and set HF_TOKEN "
            "(or run `hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise SFTError(f"no model {model} on the Hub (a private one needs HF_TOKEN or `hf auth login`)") from None
    except RevisionNotFoundError:
        raise SFTError(f"{model} has no revision {revision!r}") from None
    except (HfHubHTTPError, OSError) as error:  # OSError: the connection dropped part way
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SFTError(f"downloading {model} failed: {first_line}; run it again to resume") from None
    return Path(folder), files


def cached_snapshot(model: str, revision: str | None, problem: str) -> tuple[Path, list[str]]:
    """The snapshot of `model` in the Hugging Face cache, for when the Hub cannot be reached."""
    from huggingface_hub import try_to_load_from_cache

    for marker in ("config.json", ADAPTER_CONFIG):
        cached = try_to_load_from_cache(model, marker, revision=revision)
        if isinstance(cached, str):
            folder = Path(cached).parent
            files = select_files([path.name for path in folder.iterdir() if path.is_file()])
            check_weights(model, files)
            return folder, files
    raise SFTError(
        f"cannot download '{model}': {problem} and it is not in the local Hugging Face cache; {OFFLINE_HINT}"
    )


def check_weights(model: str, files: list[str]) -> None:
    if not any(fnmatch.fnmatch(name, pattern) for name in files for pattern in WEIGHTS):
        raise SFTError(f"{model} has no transformers weights (safetensors or pytorch_model.bin) to download")
