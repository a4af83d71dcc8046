"""Checkpoints a run can resume from: complete ones only, and only where they come from the same recipe
and data.

Transformers resumes from the newest `checkpoint-N` folder it finds, whatever run wrote it and whether or
not it was written to the end. sft records a fingerprint of the recipe and the training records beside
each checkpoint, and checks both it and the checkpoint's files before resuming, so that a resumed run
ends where an uninterrupted one would.
"""

import hashlib
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sft.errors import SFTError
from sft.models.load import safetensors_problem
from sft.paths import ADAPTER_WEIGHTS, CHECKPOINT_PREFIX, MODEL_WEIGHTS, TRAINER_STATE_FILE, atomic_write_json

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "sft_fingerprint.json"
OPTIMIZER_STATE = ("optimizer.pt", "scheduler.pt")
# Recipe keys that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = {
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "force_resume",
    "logging_steps",
    "logging_strategy",
    "save_steps",
    "save_strategy",
    "save_total_limit",
    "save_only_model",
    "eval_steps",
    "eval_strategy",
    "per_device_eval_batch_size",
    "report_to",
    "run_name",
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
    "hub_token",
    "dataloader_num_workers",
    # What is generated at evaluations is measured, not trained on: the weights at every step are the same.
    "generation_eval",
    "generation_eval_records",
    "generation_eval_max_new_tokens",
    "generation_eval_judge_endpoint",
    "generation_eval_judge_model",
    "generation_eval_judge_api_key_env",
}


def fingerprint(recipe: dict[str, Any], train_records: list[dict[str, Any]], template: Any) -> dict[str, Any]:
    """What makes two runs the same computation: the recipe's significant keys and the training data."""
    data = hashlib.sha256()
    data.update(json.dumps(vars(template), sort_keys=True).encode())
    for record in train_records:
        data.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
    significant = {key: value for key, value in recipe.items() if key not in RESUMABLE_CHANGES}
    return {"recipe": significant, "train_data_sha256": data.hexdigest(), "train_records": len(train_records)}


class SaveFingerprint(TrainerCallback):
    """Writes the run's fingerprint into every checkpoint the Trainer saves."""

    def __init__(self, run_fingerprint: dict[str, Any]):
        self.run_fingerprint = run_fingerprint

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if folder.is_dir():
                atomic_write_json(folder / FINGERPRINT_FILE, self.run_fingerprint)


def checkpoint_problem(folder: Path, needs_optimizer: bool = True) -> str | None:
    """Why `folder` cannot be resumed from (missing or cut-off files), or None."""
    if not (folder / TRAINER_STATE_FILE).is_file():
        return f"it has no {TRAINER_STATE_FILE} (it was not written to the end)"
    weights = [folder / name for name in (*MODEL_WEIGHTS, *ADAPTER_WEIGHTS) if (folder / name).is_file()]
    if not weights:
        return "it holds no model or adapter weights"
    for path in weights:
        if path.suffix == ".safetensors" and safetensors_problem(path):
            return f"{path.name} is cut off"
    for name in OPTIMIZER_STATE:
        path = folder / name
        if not path.is_file():
            if needs_optimizer:
                return f"it has no {name}, so training would not continue as it was"
        elif not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no directory
            return f"{name} is cut off"
    return None


def checkpoint_step(folder: Path) -> int:
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def resume_checkpoint(output_dir: str, resume: bool | str, force: bool) -> str:
    """The checkpoint to resume from: the given one, or the newest complete one in `output_dir`."""
    if resume is True:
        folders = sorted(Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"), key=checkpoint_step, reverse=True)
        folders = [folder for folder in folders if folder.is_dir() and checkpoint_step(folder) >= 0]
        if not folders:
            raise SFTError(
                f"--resume_from_checkpoint: {output_dir} holds no {CHECKPOINT_PREFIX}N folder to resume from; "
                "train with save_strategy: steps (and save_steps) to write them, or start without resuming"
            )
        for folder in folders:
            problem = checkpoint_problem(folder, needs_optimizer=not force)
            if problem is None:
                return str(folder)
            logger.warning("Skipping %s: %s", folder, problem)
        raise SFTError(
            f"--resume_from_checkpoint: no checkpoint in {output_dir} is complete ({folders[0].name}: "
            f"{checkpoint_problem(folders[0])}); start the run again without resuming"
        )
    folder = Path(resume)
    if not folder.is_dir():
        raise SFTError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    problem = checkpoint_problem(folder, needs_optimizer=not force)
    if problem:
        hint = "; pass --force_resume true to resume anyway" if "optimizer" in problem or "scheduler" in problem else ""
        raise SFTError(f"cannot resume from {folder}: {problem}{hint}")
    return str(folder)


def check_same_run(folder: str, current: dict[str, Any], force: bool) -> None:
    """Refuse a checkpoint whose recipe or training data differ from this run's, unless forced."""
    path = Path(folder) / FINGERPRINT_FILE
    if not path.is_file():
        logger.warning("%s carries no recipe fingerprint (an older sft wrote it); resuming unchecked", folder)
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    differences = [
        f"{key}: {saved['recipe'].get(key)!r} then, {current['recipe'].get(key)!r} now"
        for key in sorted(set(saved["recipe"]) | set(current["recipe"]))
        if saved["recipe"].get(key) != current["recipe"].get(key)
    ]
    if saved.get("train_data_sha256") != current["train_data_sha256"]:
        differences.append(
            f"the training records differ ({saved.get('train_records')} then, {current['train_records']} now)"
        )
    if not differences:
        return
    summary = "; ".join(differences[:4]) + (f" and {len(differences) - 4} more" if len(differences) > 4 else "")
    if force:
        logger.warning("Resuming %s although it came from another recipe or data (%s)", folder, summary)
        return
    raise SFTError(
        f"{folder} was written by another recipe or data ({summary}); resume with the recipe that wrote it, "
        "train into a new output_dir, or pass --force_resume true"
    )
