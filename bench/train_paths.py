"""Training paths, one per child process: `python -m bench.train_paths --spec JSON --out FILE`.

spec: {"path": one of PATHS, "model": DIR or sft model name, "data": FILE, "steps": N, "batch_size": 8}.
Every path trains on the same batches, in the same order: consecutive runs of the first
steps x batch_size training records of the seed split.
"""

import os
import tempfile
from typing import Any

from bench.instrument import OverBudget, StepLog, Turns, instrument_trainers
from bench.workload import Example, batches, train_examples

# The book's chapter 7 settings, shared by the paths whose losses are compared.
LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.1
SEED = 123


def seed_loop(spec: dict[str, Any], log: StepLog) -> StepLog:
    """The book's chapter 7 loop: pad to the longest record, `model(inputs).logits`, cross entropy, AdamW."""
    import torch
    import torch.nn.functional as F

    from sft.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(spec["model"])
    torch.manual_seed(SEED)
    model = load_model(spec["model"], dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    examples = train_examples(spec["data"], tokenizer, spec["steps"] * spec["batch_size"])
    log.begin()
    for batch in batches(examples, spec["batch_size"]):
        inputs, targets = pad_batch(batch, tokenizer.pad_token_id)
        optimizer.zero_grad()
        logits = model(inputs).logits
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        log.losses.append(loss.item())
        log.batch_lengths.append([len(e.input_ids) for e in batch])
        log.step_done()
        if log.should_stop():
            break
    return log


def pad_batch(batch: list[Example], pad_id: int) -> tuple[Any, Any]:
    """The book's collate: pad every record to the longest; inputs drop the last column, targets the
    first; padding is -100 in the targets (a record's own EOS stays, as it carries a label)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, example in enumerate(batch):
        ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        labels[row, : len(example.labels)] = torch.tensor(example.labels)
    return ids[:, :-1], labels[:, 1:]


def trl_defaults(spec: dict[str, Any], log: StepLog) -> StepLog:
    """TRL's SFTTrainer with SFTConfig's defaults; only `use_cpu=True` added so that it runs without a GPU.

    The run length and the data order are the benchmark's: max_steps, and a sequential sampler.
    """
    import datasets
    from trl import SFTConfig, SFTTrainer

    from sft.models.load import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(spec["model"])
    examples = train_examples(spec["data"], tokenizer, spec["steps"] * spec["batch_size"])
    dataset = datasets.Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    instrument_trainers(log)
    with tempfile.TemporaryDirectory(prefix="sft-bench-trl-") as output_dir:
        config = SFTConfig(
            output_dir=output_dir,
            use_cpu=True,
            max_steps=spec["steps"],
            per_device_train_batch_size=spec["batch_size"],
            train_sampling_strategy="sequential",
            save_strategy="no",
            report_to="none",
        )
        trainer = SFTTrainer(
            model=resolve_model(spec["model"]), args=config, train_dataset=dataset, processing_class=tokenizer
        )
        trainer.train()
    return log


def sft_argv(spec: dict[str, Any], output_dir: str) -> list[str]:
    """sft's defaults plus the workload: batch, the book's optimiser settings (so that the final loss can be
    compared with the seed loop's), run length, order."""
    return [
        "--model_name_or_path",
        spec["model"],
        "--dataset_name",
        spec["data"],
        "--per_device_train_batch_size",
        str(spec["batch_size"]),
        "--learning_rate",
        str(LEARNING_RATE),
        "--weight_decay",
        str(WEIGHT_DECAY),
        "--max_grad_norm",
        "0",  # the book's loop does not clip gradients; the Trainer clips at 1.0 by default
        "--lr_scheduler_type",
        "constant",
        "--seed",
        str(SEED),
        "--max_steps",
        str(spec["steps"]),
        "--max_train_records",
        str(spec["steps"] * spec["batch_size"]),
        "--train_sampling_strategy",
        "sequential",
        "--eval_strategy",
        "no",
        "--output_dir",
        output_dir,
        *spec.get("extra_args", []),
    ]


def sft_default(spec: dict[str, Any], log: StepLog) -> StepLog:
    """`sft.training.run.train` itself, with sft's defaults for this machine class (bf16 autocast where the CPU
    runs bf16 natively, fp32 elsewhere: bench.machine decides, so that a forced class is followed too)."""
    from bench.machine import bf16_native
    from sft.training.config import parse_recipe
    from sft.training.run import train

    # sft's own default detects native bf16 too; it is told only where the class is forced to the emulated one.
    if not bf16_native() and "--bf16" not in spec.get("extra_args", []):
        spec = {**spec, "extra_args": [*spec.get("extra_args", []), "--bf16", "false"]}
    instrument_trainers(log)
    with tempfile.TemporaryDirectory(prefix="sft-bench-sft-") as output_dir:
        train(parse_recipe(sft_argv(spec, output_dir)))
    return log


def sft_fp32(spec: dict[str, Any], log: StepLog) -> StepLog:
    """sft's path held to fp32 throughout, the precision the seed loop trains in."""
    return sft_default({**spec, "extra_args": [*spec.get("extra_args", []), "--bf16", "false"]}, log)


# LoRA as the demo recipe (recipes/smollm2-135m-lora.yaml) sets it; compared with sft_default (full fine-tuning)
# on the same data, batch and machine for `lora_vs_full`.
LORA_ARGS = ["--method", "lora", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.05"]


def sft_lora(spec: dict[str, Any], log: StepLog) -> StepLog:
    """LoRA as the demo recipe sets it; `lora_args` in the spec, given last, change those settings (another dropout
    rate, other target modules) where bench.lockstep is asked to measure them."""
    lora = [*LORA_ARGS, "--lora_target_modules", "all-linear", *spec.get("lora_args", [])]
    return sft_default({**spec, "extra_args": [*spec.get("extra_args", []), *lora]}, log)


def sft_lora_peft(spec: dict[str, Any], log: StepLog) -> StepLog:
    """The same LoRA run with PEFT's own layer forward (sft.training.fast_lora off): the reference its speed and
    loss trajectory are compared with."""
    import sft.training.loss

    sft.training.loss.speed_up_lora = lambda model: 0
    return sft_lora(spec, log)


# The paths whose steps a Trainer runs (bench.instrument's callbacks time them, and take turns where asked).
TRAINER_PATHS = ("sft_lora_peft", "trl_defaults", "sft_default", "sft_fp32", "sft_lora")
PATHS = {
    "sft_lora_peft": sft_lora_peft,
    "seed_loop": seed_loop,
    "trl_defaults": trl_defaults,
    "sft_default": sft_default,
    "sft_fp32": sft_fp32,
    "sft_lora": sft_lora,
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    log = StepLog(planned_steps=spec["steps"], budget_s=spec.get("budget_s"), hard_s=spec.get("hard_s"))
    if spec.get("turn_fds"):  # taking turns with another path (bench.child.run_children_in_turns)
        if spec["path"] not in TRAINER_PATHS:
            raise SystemExit(f"bench.train_paths: {spec['path']} has no Trainer to take turns in")
        log.turns = Turns(*spec["turn_fds"])
    try:
        PATHS[spec["path"]](spec, log)
    except OverBudget:
        log.interrupted()
    finally:
        log.end()
    # A niced process gets only the CPU time others leave; its timings then say little.
    return {
        "path": spec["path"],
        "threads": torch.get_num_threads(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        **log.result(),
    }


if __name__ == "__main__":
    from bench.child import child_main

    child_main(run)
