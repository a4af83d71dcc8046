"""One training run, read top to bottom: checks, lock, logging and seed, data, tokenizer, model, trainer,
train, save, push. Every setting arrives resolved in a `Recipe`; nothing here changes it.

Both stages take these same steps. What differs between them, the data each reads, the model it starts from,
the trainer and what it adds to metrics.json, is a `Stage`: `SFTStage` below (instruction records through
TRL's SFTTrainer), `DPOStage` in sft.preference.dpo (preference pairs through TRL's DPOTrainer).
"""

import logging
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft.training.config import Recipe

logger = logging.getLogger("sft.train")


@dataclass
class RunData:
    """A stage's data, split and ready for its trainer: the token ids (or pairs) of the training and validation
    splits, the records of every split, and the tokenizer and prompt template they were encoded with."""

    tokenizer: Any
    template: Any
    splits: dict[str, list[dict[str, Any]]]
    train_set: Any
    eval_set: Any


class Stage:
    """What one kind of run does at the steps `train` takes. Subclasses fill in the steps marked below."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    @property
    def saves_adapter(self) -> bool:
        """Whether the run's output is an adapter rather than a full model (the output directory checks it)."""
        return self.recipe.model.trains_adapter

    def check(self) -> None:
        """Checks that need no data or weights, so a bad recipe fails in a second, in one line."""
        raise NotImplementedError

    def load_data(self, main_process: bool) -> RunData:
        raise NotImplementedError

    def load_model(self, data: RunData) -> tuple[Any, Any]:
        """The model to train and the PEFT config of the adapter the trainer adds to it (None to train it whole)."""
        raise NotImplementedError

    def make_trainer(self, model: Any, peft_config: Any, data: RunData, callbacks: list[Any]) -> Any:
        raise NotImplementedError

    def final_metrics(self, trainer: Any, metrics: dict[str, Any]) -> dict[str, Any]:
        """What the stage adds to metrics.json, given the figures gathered so far."""
        return {}

    def saved_model(self, trainer: Any) -> Any:
        """The model the final save writes (its generation config names the EOS training taught)."""
        return trainer.accelerator.unwrap_model(trainer.model)

    def save_model(self, trainer: Any, staging: Path) -> None:
        trainer.save_model(str(staging))


def train(recipe: Recipe) -> dict[str, Any]:
    """Run one recipe end to end; returns the metrics written to metrics.json."""
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

    from sft.models.chat_template import stop_at_trained_eos
    from sft.paths import check_writable
    from sft.training.allocator import cap_onednn_cache, keep_freed_memory
    from sft.training.checkpoints import SaveFingerprint, check_same_run, fingerprint, resume_checkpoint
    from sft.training.outputs import (
        clear_leftover_staging,
        dump_yaml,
        final_staging,
        prepare_output_dir,
        run_lock,
        save_run_files,
    )
    from sft.training.progress import TrainingProgress

    training_args = recipe.training
    output_dir = training_args.output_dir
    main_process = training_args.process_index == 0
    configure_logging(main_process)
    keep_freed_memory()
    cap_onednn_cache()
    stage = make_stage(recipe)

    stage.check()
    if recipe.push_repo is not None:
        from sft.hub.push import check_push_ready

        check_push_ready(recipe.push_repo, recipe.hub_token)
    check_writable(output_dir)
    with ExitStack() as held:
        if main_process:  # one lock per run; the other processes of the run write only through the Trainer
            held.enter_context(run_lock(output_dir))
            clear_leftover_staging(output_dir)
        prepare_output_dir(
            output_dir,
            stage.saves_adapter,
            training_args.overwrite_output_dir,
            recipe.resume,
            remove=main_process,  # every rank checks; one removes
        )
        if main_process:
            logger.info("Recipe:\n%s", dump_yaml(recipe.saved))
            for note in recipe.notes:
                logger.info(note)
        set_seed(training_args.seed)

        # Data: read, validated and split as the recipe says, and encoded for the stage's trainer.
        data = stage.load_data(main_process)
        run_fingerprint = fingerprint(recipe.saved, data.splits["train"], data.template)
        resume_from = None
        if recipe.resume:
            resume_from = resume_checkpoint(output_dir, recipe.resume, training_args.force_resume)
            check_same_run(resume_from, run_fingerprint, training_args.force_resume)

        model, peft_config = stage.load_model(data)
        callbacks: list[Any] = [TrainingProgress(), SaveFingerprint(run_fingerprint)]
        if training_args.early_stopping_patience is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
        trainer = stage.make_trainer(model, peft_config, data, callbacks)
        trainer.remove_callback(PrinterCallback)  # raw log dicts; the bar and metrics.json carry them
        if main_process and peft_config is not None:
            trainer.model.print_trainable_parameters()
        # Room for what the run will write, checked now rather than when the first save fails hours later.
        check_writable(output_dir, output_bytes(trainer.model, not stage.saves_adapter, training_args))

        result = trainer.train(resume_from_checkpoint=resume_from)
        metrics = dict(result.metrics)
        if data.eval_set is not None:
            metrics.update(final_evaluation(trainer))
        metrics.update(
            train_records=len(data.splits["train"]),
            validation_records=len(data.splits["validation"]),
            tokens_seen=trainer.state.num_input_tokens_seen,
            train_tokens_per_second=round(
                trainer.state.num_input_tokens_seen / max(metrics.get("train_runtime", 0.0), 1e-9), 1
            ),
        )
        metrics.update(stage.final_metrics(trainer, metrics))
        if training_args.world_size > 1:
            # Every rank reports the loss it agreed on, so multi-process runs can be checked.
            rank = f"rank {training_args.process_index}/{training_args.world_size}"
            agreed = f"{rank}: train_loss={metrics['train_loss']:.6f}"
            if "eval_rouge_l" in metrics:  # generation_eval: every rank must hold the same figures
                agreed += f" eval_rouge_l={metrics['eval_rouge_l']!r} eval_bleu={metrics['eval_bleu']!r}"
            # One write, line and newline together: print() writes them separately, and with the launcher's
            # unbuffered output another rank's line could land between the two.
            sys.stdout.write(agreed + "\n")
            sys.stdout.flush()

        # Save: the model or adapter (safetensors), tokenizer, template, recipe, metrics, state, loss plot,
        # all staged first and then moved into place, so a kill leaves the old run or the new one.
        # Runtimes that read generation_config.json stop at the EOS training taught.
        stop_at_trained_eos(stage.saved_model(trainer).generation_config, data.tokenizer)
        with final_staging(output_dir, main_process) as staging:
            stage.save_model(trainer, staging)
            if main_process:
                save_run_files(trainer, data.tokenizer, data.template, metrics, recipe.saved, staging)
        if main_process:
            logger.info("Wrote the model, tokenizer, recipe, metrics and loss plot to %s", output_dir)
            if recipe.push_repo is not None:
                from sft.hub.push import push_to_hub

                push_to_hub(
                    output_dir, recipe.push_repo, private=bool(training_args.hub_private_repo), token=recipe.hub_token
                )
        trainer.accelerator.wait_for_everyone()
    return metrics


def make_stage(recipe: Recipe) -> Stage:
    if recipe.training.stage == "dpo":
        from sft.preference.dpo import DPOStage

        return DPOStage(recipe)
    return SFTStage(recipe)


class SFTStage(Stage):
    """Instruction tuning: records with completion-only labels, through TRL's SFTTrainer (sft's lean loss)."""

    def check(self) -> None:
        from sft.models.load import resolve_model
        from sft.training.methods import quantization_config

        model_args = self.recipe.model
        self.model_source = resolve_model(model_args.model_name_or_path)
        self.quantization = quantization_config(model_args) if model_args.method == "qlora" else None

    def load_data(self, main_process: bool) -> RunData:
        """Load, validate, split as the recipe says, tokenize with completion-only labels. Every record is tokenized
        once, for the length check and for training alike, and the ids are cached by the records' text, the
        tokenizer and the template (sft.data.tokenize), so the next run on the same data reads them."""
        from sft.data.split import read_records, split_indices, split_loaded
        from sft.data.template import PromptTemplate
        from sft.data.tokenize import TokenizedRecords
        from sft.errors import SFTError
        from sft.models.load import load_tokenizer

        data_args, training_args = self.recipe.data, self.recipe.training
        tokenizer = load_tokenizer(self.recipe.model.model_name_or_path)
        template = PromptTemplate.with_preamble(data_args.prompt_preamble)
        tokenized = TokenizedRecords(tokenizer, template)
        records = read_records(data_args, tokenizer, template, self.recipe.max_record_length, token_lengths=tokenized)
        splits = split_loaded(data_args, records)
        index = split_indices(data_args, len(records))
        if main_process:
            warn_near_duplicates(splits, index)
        if training_args.generation_eval and not splits["validation"]:
            raise SFTError(
                f"generation_eval needs validation records, and the split gives none ({len(splits['train'])} "
                f"train, {len(splits['test'])} test); lower train_fraction ({data_args.train_fraction}) or "
                f"test_fraction ({data_args.test_fraction}), or add records"
            )
        token_ids = tokenized.of(records)
        eval_set = None
        if splits["validation"] and training_args.eval_strategy != "no":
            eval_set = token_ids.select(as_range(index["validation"]))
        return RunData(tokenizer, template, splits, token_ids.select(as_range(index["train"])), eval_set)

    def load_model(self, data: RunData) -> tuple[Any, Any]:
        """Full weights, or a frozen base with LoRA / prompt tuning adapters added by the trainer."""
        from sft.models.load import load_model
        from sft.training.methods import build_peft_config, freeze_parameters

        model_args = self.recipe.model
        model_kwargs: dict[str, Any] = {}
        if self.quantization is not None:
            model_kwargs["quantization_config"] = self.quantization
        if model_args.attn_implementation:
            model_kwargs["attn_implementation"] = model_args.attn_implementation
        model = load_model(model_args.model_name_or_path, dtype=model_dtype(model_args.dtype), **model_kwargs)
        if model_args.freeze_parameters:
            log_frozen(freeze_parameters(model, model_args.freeze_parameters))
        return model, build_peft_config(model_args, self.model_source)

    def make_trainer(self, model: Any, peft_config: Any, data: RunData, callbacks: list[Any]) -> Any:
        from sft.training.loss import LeanLossSFTTrainer

        training_args = self.recipe.training
        trainer_kwargs: dict[str, Any] = {}
        trainer_class: type[LeanLossSFTTrainer] = LeanLossSFTTrainer
        if training_args.generation_eval:
            from sft.training.generation_eval import GenerationEval, GenerationEvalSFTTrainer

            # Planned now, so that a prompt with no room left for a response fails before training.
            records = data.splits["validation"][: training_args.generation_eval_records]
            trainer_class = GenerationEvalSFTTrainer
            trainer_kwargs["generation_eval"] = GenerationEval(
                model, data.tokenizer, records, data.template, training_args.generation_eval_max_new_tokens
            )
            if training_args.process_index == 0:
                logger.info(
                    "Generating %d validation responses (greedy, up to %d new tokens) at every evaluation",
                    len(records),
                    training_args.generation_eval_max_new_tokens,
                )
        return trainer_class(
            model=model,
            args=training_args,
            train_dataset=data.train_set,
            eval_dataset=data.eval_set,
            processing_class=data.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
            **trainer_kwargs,
        )


def log_frozen(frozen: list[str]) -> None:
    logger.info(
        "Keeping %d weights fixed: %s", len(frozen), ", ".join(frozen[:4]) + (" ..." if len(frozen) > 4 else "")
    )


# How many near-duplicate pairs the training log names one by one; the count covers them all.
NEAR_DUPLICATE_EXAMPLES = 5


def warn_near_duplicates(splits: dict[str, list[dict[str, Any]]], index: dict[str, list[int]]) -> None:
    """Warn where validation or test records near-duplicate training records: their scores would measure
    recall of the training data, not how the model answers new instructions. Records are named by their
    place in the data (from 0), as `sft data check` and `sft data dedup` name them."""
    from sft.data.dedup import DEFAULT_THRESHOLD, cross_duplicates

    held_out = [(name, position) for name in ("validation", "test") for position in range(len(splits[name]))]
    if not held_out or not splits["train"]:
        return
    pairs = cross_duplicates([splits[name][position] for name, position in held_out], splits["train"])
    if not pairs:
        return
    for pair in pairs[:NEAR_DUPLICATE_EXAMPLES]:
        name, position = held_out[pair.first]
        logger.warning(
            "record %d (%s) near-duplicates training record %d: similarity %.3f, %s",
            index[name][position],
            name,
            index["train"][pair.second],
            pair.similarity,
            pair.describe_fields(),
        )
    counts = {
        name: len({pair.first for pair in pairs if held_out[pair.first][0] == name}) for name in ("validation", "test")
    }
    more = f" (the first {NEAR_DUPLICATE_EXAMPLES} above)" if len(pairs) > NEAR_DUPLICATE_EXAMPLES else ""
    logger.warning(
        "%d validation and %d test records near-duplicate training records, %d pairs at similarity >= %s%s; "
        "their scores overstate how the model answers new instructions. `sft data dedup DATA` lists every pair, "
        "and with --remove --output FILE writes the data without the later record of each",
        counts["validation"],
        counts["test"],
        len(pairs),
        DEFAULT_THRESHOLD,
        more,
    )


def as_range(indices: list[int]) -> range | list[int]:
    """Consecutive indices as a range, which `Dataset.select` turns into a slice instead of an index mapping."""
    if indices and indices[-1] - indices[0] == len(indices) - 1 and indices == list(range(indices[0], indices[-1] + 1)):
        return range(indices[0], indices[-1] + 1)
    return indices


def output_bytes(model: Any, full: bool, training_args: Any) -> int:
    """About what the run writes: the saved weights (all of them, or the adapter's), and where checkpoints
    are kept, one more copy with AdamW's two fp32 states per trained weight."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    saved = sum(p.numel() * p.element_size() for p in model.parameters()) if full else trained * 4
    if str(getattr(training_args.save_strategy, "value", training_args.save_strategy)) == "no":
        return saved
    return 2 * saved + 8 * trained


def final_evaluation(trainer: Any) -> dict[str, Any]:
    """The validation figures of the saved model: those of an evaluation at the last step where the run
    made one (a whole pass over the validation set, minutes at Alpaca scale, need not run twice), else a
    new one. With load_best_model_at_end the saved model is another step's, so it is evaluated anew."""
    state = trainer.state
    last = next((entry for entry in reversed(state.log_history) if "eval_loss" in entry), None)
    if last is not None and last.get("step") == state.global_step and not trainer.args.load_best_model_at_end:
        return {key: value for key, value in last.items() if key.startswith("eval_")}
    return trainer.evaluate()


def model_dtype(dtype: str | None) -> Any:
    import torch

    if dtype in (None, "auto"):
        return torch.float32  # master weights stay fp32; bf16, where native, comes from autocast
    return getattr(torch, dtype)


def configure_logging(main_process: bool) -> None:
    """sft's own log lines on the main process; library logs as the verbosity says, errors only elsewhere."""
    import datasets
    import transformers

    from sft.verbosity import quiet_libraries

    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("sft").setLevel(level)
    quiet_libraries()
    if not main_process:
        for library in (transformers, datasets):
            library.utils.logging.set_verbosity(logging.ERROR)
