"""Publishing a trained model or adapter, its tokenizer, recipe, metrics and a model card.

The upload is staged first as a plain folder holding exactly what will be published; `--dry-run`
keeps that folder for inspection and uploads nothing.
"""

import fnmatch
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.hub.access import hub_unreachable
from sft.hub.model_card import hub_base_id, render_model_card
from sft.paths import (
    ADAPTER_CONFIG,
    EVAL_METRICS_FILE,
    GENERATION_CONFIG,
    HUB_STAGING_DIR,
    LOSS_PLOT,
    METRICS_FILE,
    RECIPE_FILE,
    TEMPLATE_FILE,
    TOKENIZER_FILES,
    check_complete,
    os_errors,
    staged_output,
)
from sft.secrets import redact

# Top-level files that are published; everything else (checkpoint-* folders, trainer state,
# optimizer and scheduler states, reports) stays local.
UPLOAD_PATTERNS = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    GENERATION_CONFIG,
    ADAPTER_CONFIG,
    *TOKENIZER_FILES,
    TEMPLATE_FILE,
    RECIPE_FILE,
    METRICS_FILE,
    EVAL_METRICS_FILE,
    LOSS_PLOT,
)
# What a dry run stages into HUB_STAGING_DIR, and so may replace there.
STAGED_FILES = (*UPLOAD_PATTERNS, "README.md")
# Never published even where a pattern above matches: pickles can run code when loaded.
NEVER_UPLOAD = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "optimizer*", "scheduler*", "rng_state*")
LOGIN_HINT = "set HF_TOKEN to a write token from https://huggingface.co/settings/tokens or run `hf auth login`"


def push_to_hub(
    output_dir: str | Path,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
) -> str | Path:
    """Upload `output_dir` to `repo_id` and return the repository URL; with `dry_run`, stage only and
    return the staged folder."""
    from huggingface_hub import get_token

    source = Path(output_dir)
    files = upload_files(source)
    if dry_run:
        check_repo_id(repo_id)
        staging = source / HUB_STAGING_DIR
        if staging.exists() and not staging.is_dir():
            raise SFTError(f"{staging} is a file, where a dry run stages the upload; move or rename it")
        # A second dry run replaces the files it staged before (and drops the ones no longer uploaded);
        # anything else the user put there stays.
        with staged_output(staging, owned=STAGED_FILES) as folder:
            stage(source, files, folder, repo_id, token or get_token())
            staged = listing(folder)
        print(f"dry run: nothing uploaded; the upload to {repo_id} would be {staging}:")
        print("\n".join(f"  {path}" for path in staged))
        return staging
    token = check_push_ready(repo_id, token)
    # Staged inside the output directory so that weights are hard-linked, not copied.
    with tempfile.TemporaryDirectory(dir=source, prefix=f".{HUB_STAGING_DIR}-") as folder:
        with os_errors(source):
            stage(source, files, Path(folder), repo_id, token)
        print(f"uploading to {repo_id}:")
        print("\n".join(f"  {path}" for path in listing(Path(folder))))
        url = upload(Path(folder), repo_id, private, commit_message, token)
    print(f"pushed {source} to {url}")
    return url


def check_push_ready(repo_id: str, token: str | None = None) -> str:
    """The token to push `repo_id` with, once the id is valid, a token exists and the Hub answers.

    Cheap (one request, seconds at most), so a training run can call it before it starts.
    """
    from huggingface_hub import get_token

    check_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise SFTError(f"no Hugging Face token found to push {repo_id}: {LOGIN_HINT}")
    problem = hub_unreachable()
    if problem:
        raise SFTError(f"cannot push to {repo_id}: {problem}; `sft push --dry-run` stages the upload offline")
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise SFTError(f"invalid --repo-id {repo_id!r}: {error}") from None


def upload_files(source: Path) -> list[Path]:
    """The files of `source` to publish; an error where it holds no safetensors model or adapter."""
    if not source.is_dir():
        raise SFTError(f"{source} is not a directory; pass a training output directory")
    check_complete(source)
    files = sorted(
        path
        for path in source.iterdir()
        if path.is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in UPLOAD_PATTERNS)
        and not any(fnmatch.fnmatch(path.name, pattern) for pattern in NEVER_UPLOAD)
    )
    names = {path.name for path in files}
    weights = any(name.endswith(".safetensors") for name in names)
    if not weights or not names & {"config.json", ADAPTER_CONFIG}:
        pickled = sorted(path.name for path in source.glob("*.bin"))
        hint = f" (only pickled {', '.join(pickled)}, which is never uploaded)" if pickled else ""
        raise SFTError(
            f"{source} holds no model or adapter saved as safetensors{hint}; "
            "pass the output directory of `sft train` or `sft merge`"
        )
    return files


def stage(source: Path, files: list[Path], folder: Path, repo_id: str, token: str | None) -> None:
    """Fill `folder` with the files to publish plus README.md, then check that no file holds the token."""
    for path in files:
        target = folder / path.name
        if path.name == RECIPE_FILE:
            write_recipe_without_secrets(path, target)
        elif path.name == ADAPTER_CONFIG:
            write_adapter_config(path, target)
        elif path.suffix == ".safetensors":  # weights are linked: no copy of a large file
            link_or_copy(path, target)
        else:
            shutil.copy2(path, target)
    (folder / "README.md").write_text(render_model_card(source, repo_id), encoding="utf-8")
    if token:
        leaked = [path.name for path in folder.iterdir() if holds(path, token)]
        if leaked:
            raise SFTError(f"refusing to upload: the Hugging Face token appears in {', '.join(leaked)} in {source}")


def write_recipe_without_secrets(path: Path, target: Path) -> None:
    """The recipe with every secret-named key marked as given, in case a recipe from elsewhere holds one."""
    import yaml

    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    target.write_text(yaml.safe_dump(redact(recipe), sort_keys=False, allow_unicode=True), encoding="utf-8")


def write_adapter_config(path: Path, target: Path) -> None:
    """The adapter config with its base model named by Hub id, where training used a local copy of it."""
    config = json.loads(path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    base_id = hub_base_id(base)
    if base_id and base_id != base:
        config["base_model_name_or_path"] = base_id
    elif base and not base_id:
        print(
            f"warning: the adapter's base model is the local {base}; others need it to load the adapter",
            file=sys.stderr,
        )
    target.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def link_or_copy(path: Path, target: Path) -> None:
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)


def holds(path: Path, secret: str) -> bool:
    """Whether `path` contains `secret`, read in overlapping chunks so that large files stay cheap."""
    needle, tail = secret.encode(), b""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


def listing(folder: Path) -> list[str]:
    return [f"{path.name} ({path.stat().st_size:,} bytes)" for path in sorted(folder.iterdir())]


def upload(folder: Path, repo_id: str, private: bool, commit_message: str | None, token: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if private:  # create_repo leaves an existing repository's visibility as it was
            api.update_repo_settings(repo.repo_id, private=True)
        api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message or "Upload model trained with sft",
        )
    except HfHubHTTPError as error:
        raise SFTError(describe_http_error(repo_id, error)) from None
    except ValueError as error:
        if "Invalid metadata" not in str(error):
            raise
        # The Hub validates the card's metadata before any file is sent.
        raise SFTError(f"the Hub rejected the model card for {repo_id}: {' '.join(str(error).split())}") from None
    return str(repo)


def describe_http_error(repo_id: str, error: Any) -> str:
    status = getattr(error.response, "status_code", None)
    if status == 401:
        return f"the Hub rejected the token (401 Unauthorized); {LOGIN_HINT}"
    if status == 403:
        return f"the token may not write to {repo_id} (403 Forbidden); use a token with write access to it"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"upload to {repo_id} failed: {message}"
