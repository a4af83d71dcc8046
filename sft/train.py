"""Fine-tune a causal LM on instruction data with TRL's SFTTrainer.

    accelerate launch sft/train.py recipes/smollm2-135m-lora.yaml [--key value ...]
    sft train recipes/smollm2-135m-lora.yaml
    python -m sft.train recipes/smollm2-135m-lora.yaml

Reads top to bottom: recipe, logging and seed, data, tokenizer, model, trainer, train, save, report.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Launched as a file: the script's folder would shadow libraries with our module names.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import logging
from typing import Any

from sft.config import DataArguments, ModelArguments, TrainingConfig, parse_recipe, recipe_dict

logger = logging.getLogger("sft.train")


def make_parser():
    from sft.config import make_parser as recipe_parser

    return recipe_parser()


def main(argv: list[str] | None = None) -> int:
    from sft.cli import guarded

    if argv is not None and any(a in {"-h", "--help"} for a in argv):
        make_parser().parse_args(["--help"])
    return guarded(lambda: train(*parse_recipe(argv)) and 0)


def train(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingConfig) -> dict[str, Any]:
    """Run one recipe end to end; returns the metrics written to metrics.json."""
    import datasets
    import transformers
    from transformers import PrinterCallback, set_seed

    from sft.allocator import keep_freed_memory
    from sft.data.template import DEFAULT_PREAMBLE, PromptTemplate
    from sft.data.tokenize import tokenize_dataset
    from sft.lean_loss import LeanLossSFTTrainer
    from sft.models import freeze_parameters, load_model, load_tokenizer, resolve_model
    from sft.peft_setup import build_peft_config, quantization_config
    from sft.progress import TrainingProgress

    keep_freed_memory()
    # Checks that need no data or weights come first, so a bad recipe fails in a second, in one line.
    resolve_model(model_args.model_name_or_path)
    quantization = quantization_config(model_args) if model_args.method == "qlora" else None
    push_repo = hub_repo_id(training_args)
    # sft.hub uploads a curated folder with a model card after training; the Trainer's own push would
    # upload every checkpoint and pickled file, so it is switched off.
    training_args.push_to_hub = False
    main_process = training_args.process_index == 0
    configure_logging(main_process)
    set_seed(training_args.seed)
    recipe = recipe_dict(data_args, model_args, training_args)
    if main_process:
        logger.info("Recipe:\n%s", dump_yaml(recipe))

    # Data: load, validate, split the seed's way, tokenize with completion-only labels.
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    preamble = DEFAULT_PREAMBLE if data_args.prompt_preamble is None else data_args.prompt_preamble
    template = PromptTemplate(preamble=preamble)
    splits = load_splits(data_args, tokenizer, template, training_args.max_length)
    train_set = tokenize_dataset(datasets.Dataset.from_list(splits["train"]), tokenizer, template)
    eval_set = None
    if splits["validation"] and training_args.eval_strategy != "no":
        eval_set = tokenize_dataset(datasets.Dataset.from_list(splits["validation"]), tokenizer, template)

    # Model: full weights, or a frozen base with LoRA / prompt tuning adapters added by the trainer.
    model_kwargs: dict[str, Any] = {}
    if quantization is not None:
        model_kwargs["quantization_config"] = quantization
    if model_args.attn_implementation:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    model = load_model(model_args.model_name_or_path, dtype=model_dtype(model_args), **model_kwargs)
    peft_config = build_peft_config(model_args, resolve_model(model_args.model_name_or_path))
    if model_args.freeze_parameters:
        frozen = freeze_parameters(model, model_args.freeze_parameters)
        logger.info(
            "Keeping %d weights fixed: %s", len(frozen), ", ".join(frozen[:4]) + (" ..." if len(frozen) > 4 else "")
        )
    if model_args.method == "prompt_tuning" and training_args.padding_free:
        # Virtual tokens are prepended per row, so concatenated records would share one soft prompt.
        logger.info("Prompt tuning pads batches instead of concatenating records (padding_free=False)")
        training_args.padding_free = False
    if training_args.padding_free:
        # Records longer than max_length were refused above, so TRL has nothing left to truncate.
        training_args.max_length = None
    training_args.include_num_input_tokens_seen = "all" if training_args.padding_free else "non_padding"
    training_args.disable_tqdm = True  # our own bar shows loss, tokens/s and time left

    trainer = LeanLossSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[TrainingProgress()],
    )
    trainer.remove_callback(PrinterCallback)  # raw log dicts; the bar and metrics.json carry them
    if main_process and peft_config is not None:
        trainer.model.print_trainable_parameters()

    result = trainer.train(resume_from_checkpoint=resume_target(training_args.resume_from_checkpoint))
    metrics = dict(result.metrics)
    if eval_set is not None:
        metrics.update(trainer.evaluate())
    metrics.update(
        train_records=len(splits["train"]),
        validation_records=len(splits["validation"]),
        tokens_seen=trainer.state.num_input_tokens_seen,
        train_tokens_per_second=round(
            trainer.state.num_input_tokens_seen / max(metrics.get("train_runtime", 0.0), 1e-9), 1
        ),
    )

    if training_args.world_size > 1:
        # Every rank reports the loss it agreed on, so multi-process runs can be checked.
        print(
            f"rank {training_args.process_index}/{training_args.world_size}: train_loss={metrics['train_loss']:.6f}",
            flush=True,
        )

    # Save: the model or adapter (safetensors), tokenizer, template, recipe, metrics, state, loss plot.
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        save_run_files(trainer, tokenizer, template, metrics, recipe, training_args.output_dir)
        if push_repo is not None:
            from sft.hub import push_to_hub

            push_to_hub(
                training_args.output_dir,
                push_repo,
                private=bool(training_args.hub_private_repo),
                token=training_args.hub_token,
            )
    trainer.accelerator.wait_for_everyone()
    del transformers
    return metrics


def load_splits(
    data_args: DataArguments, tokenizer: Any, template: Any, max_length: int | None
) -> dict[str, list[dict[str, str]]]:
    """Load and validate every record (lengths included), then split them; invalid data is refused."""
    import json

    from sft.data.load import load_and_check
    from sft.data.split import split_records

    field_map = data_args.dataset_field_map
    if isinstance(field_map, str):
        field_map = json.loads(field_map)
    records = load_and_check(
        data_args.dataset_name,
        format=data_args.dataset_format,
        field_map=field_map,
        sha256=data_args.dataset_sha256,
        tokenizer=tokenizer,
        max_length=max_length,
        template=template,
    )
    splits = split_records(
        records,
        train_fraction=data_args.train_fraction,
        test_fraction=data_args.test_fraction,
        shuffle=data_args.split_shuffle,
        seed=data_args.split_seed,
    )
    if data_args.max_train_records is not None:
        splits["train"] = splits["train"][: data_args.max_train_records]
    logger.info(
        "Data %s: %d train, %d validation, %d test records",
        data_args.dataset_name,
        len(splits["train"]),
        len(splits["validation"]),
        len(splits["test"]),
    )
    return splits


def hub_repo_id(training_args: TrainingConfig) -> str | None:
    """The repository `push_to_hub: true` uploads to, checked (token, Hub) before any training starts."""
    if not training_args.push_to_hub:
        return None
    from sft.hub import check_push_ready

    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    check_push_ready(repo_id, training_args.hub_token)
    return repo_id


def model_dtype(model_args: ModelArguments) -> Any:
    import torch

    if model_args.dtype in (None, "auto"):
        return torch.float32  # master weights stay fp32; bf16, where native, comes from autocast
    return getattr(torch, model_args.dtype)


def resume_target(value: Any) -> Any:
    """`resume_from_checkpoint: true` means the newest checkpoint in output_dir."""
    if isinstance(value, str) and value.lower() in {"true", "yes", "1"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "no", "0", ""}:
        return None
    return value


def save_run_files(trainer, tokenizer, template, metrics, recipe, output_dir) -> None:
    from sft.paths import atomic_write_json, atomic_write_text
    from sft.plots import plot_losses

    output_dir = Path(output_dir)
    # The Trainer pickles its arguments beside the model; sft_config.yaml carries them instead.
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    tokenizer.save_pretrained(output_dir)
    template.save(output_dir)
    atomic_write_text(output_dir / "sft_config.yaml", dump_yaml(recipe))
    trainer.state.save_to_json(str(output_dir / "trainer_state.json"))
    atomic_write_json(output_dir / "metrics.json", {k: round_metric(v) for k, v in metrics.items()})
    plot_losses(trainer.state.log_history, output_dir)
    logger.info(
        "Wrote the model, tokenizer, sft_config.yaml, metrics.json, trainer_state.json and loss.png/pdf to %s",
        output_dir,
    )


def round_metric(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def configure_logging(main_process: bool) -> None:
    import datasets
    import transformers

    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("sft").setLevel(level)
    for library in (transformers, datasets):
        library.utils.logging.set_verbosity(logging.WARNING if main_process else logging.ERROR)


if __name__ == "__main__":
    raise SystemExit(main())
