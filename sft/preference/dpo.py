"""`stage: dpo`: preference tuning of an SFT model on pairs, through TRL's DPOTrainer.

The run starts from an SFT output directory (`model_name_or_path`), full model or LoRA adapter, and its
reference is that SFT model, frozen:

- An SFT adapter is merged into its base first, in memory, so the policy starts as exactly the SFT model.
  With `method: lora` the trainer then adds a new adapter to the merged weights, and its reference is the
  policy with that adapter switched off: the merged SFT weights, never the bare base. (Handing TRL the SFT
  adapter itself would make "adapter off" mean the base model, which is the trap this avoids.)
- With `method: full` the reference is a frozen copy of the starting weights, taken before the first step.

The output is always a full model (a LoRA policy is merged at the end): its own adapter would sit on weights
that exist only in memory, and a full model loads in every runtime. Its recipe file records the instruction
data settings the SFT model was trained with, so `sft eval` and `sft compare` of the DPO model split the
instruction data exactly as they would for the SFT model.
"""

import copy
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from trl import DPOTrainer

from sft.errors import SFTError
from sft.preference import DPO_FIGURES, logged
from sft.training.run import RunData, Stage

logger = logging.getLogger("sft.train")

# Pairs whose prompt differs from what the SFT template renders for their instruction: how many are named.
MISMATCH_EXAMPLES = 3


class DPOStage(Stage):
    """Preference pairs in, TRL's DPOTrainer, reward margin and preference accuracy out."""

    @property
    def saves_adapter(self) -> bool:
        return False  # a LoRA policy is merged before saving (module text)

    def check(self) -> None:
        from sft.models.load import is_adapter_dir
        from sft.paths import check_complete

        source = self.recipe.model.model_name_or_path
        path = Path(source)
        if not path.is_dir():
            raise SFTError(
                f"stage dpo starts from an SFT output directory, and model_name_or_path {source!r} is not a directory; "
                "train one first (sft train recipes/tiny.yaml) and set model_name_or_path to its output_dir"
            )
        check_complete(path)
        if Path(self.recipe.training.output_dir).resolve() == path.resolve():
            raise SFTError(
                f"output_dir {self.recipe.training.output_dir} is the SFT model the run starts from; "
                "give the DPO run its own output_dir"
            )
        self.sft_dir = path
        self.sft_is_adapter = is_adapter_dir(path)

    def load_data(self, main_process: bool) -> RunData:
        """The pairs, validated and split by the recipe's fractions, and encoded as SFT encodes a record: the
        prompt with the tokenizer's special tokens, each response on its own and closed by EOS."""
        from datasets import Dataset

        from sft.data.load import load_records
        from sft.data.split import INSTRUCTION_DATA_KEY, instruction_data_settings, split_loaded
        from sft.data.template import PromptTemplate
        from sft.data.tokenize import encode_completions, encode_prompts
        from sft.models.load import load_tokenizer

        data_args = self.recipe.data
        tokenizer = load_tokenizer(str(self.sft_dir))
        template = PromptTemplate.for_model(self.sft_dir)
        pairs = load_records(
            data_args.dataset_name,
            format=data_args.dataset_format,
            field_map=data_args.dataset_field_map,  # type: ignore[arg-type]  # parsed by DataArguments
            sha256=data_args.dataset_sha256,
            tokenizer=tokenizer,
            max_length=self.recipe.max_record_length,
            length_option="max_length",
            layout="preference",
        )
        if main_process:
            warn_other_template(pairs, template)
        splits = split_loaded(data_args, pairs)

        self.recipe.saved[INSTRUCTION_DATA_KEY] = instruction_data_settings(self.sft_dir)

        def encode(records: list[dict[str, Any]]) -> Any:
            return Dataset.from_dict(
                {
                    "prompt_ids": encode_prompts(tokenizer, [r["prompt"] for r in records]),
                    "chosen_ids": encode_completions(tokenizer, [r["chosen"] for r in records]),
                    "rejected_ids": encode_completions(tokenizer, [r["rejected"] for r in records]),
                }
            )

        eval_set = None
        if splits["validation"] and self.recipe.training.eval_strategy != "no":
            eval_set = encode(splits["validation"])
        return RunData(tokenizer, template, splits, encode(splits["train"]), eval_set)

    def load_model(self, data: RunData) -> tuple[Any, Any]:
        from sft.models.load import load_model
        from sft.training.methods import build_peft_config
        from sft.training.run import model_dtype

        model_args = self.recipe.model
        kwargs: dict[str, Any] = {}
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
        model = load_model(str(self.sft_dir), dtype=model_dtype(model_args.dtype), **kwargs)
        if self.sft_is_adapter:
            logger.info("Merging the SFT adapter of %s into its base: the DPO policy and reference", self.sft_dir)
            model = model.merge_and_unload()
        model.config.name_or_path = str(self.sft_dir)
        self.reference = None
        if model_args.method == "full":
            self.reference = frozen_copy(model)
        return model, build_peft_config(model_args, str(self.sft_dir))

    def make_trainer(self, model: Any, peft_config: Any, data: RunData, callbacks: list[Any]) -> Any:
        return PretokenizedDPOTrainer(
            model=model,
            ref_model=self.reference,
            args=dpo_config(self.recipe.training),
            train_dataset=data.train_set,
            eval_dataset=data.eval_set,
            processing_class=data.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )

    def final_metrics(self, trainer: Any, metrics: dict[str, Any]) -> dict[str, Any]:
        """The last logged reward margin and preference accuracy on training pairs, and on validation pairs
        where the run evaluated (the final evaluation's, already in `metrics` under TRL's names)."""
        found: dict[str, Any] = {}
        train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        for figure in DPO_FIGURES:
            value = next((v for e in reversed(train_logs) if (v := logged(e, figure)) is not None), None)
            if value is not None:
                found[figure.key] = value
            value = logged(metrics, figure, evaluation=True)
            if value is not None:
                found[f"eval_{figure.key}"] = value
        found["beta"] = self.recipe.training.beta
        found["dpo_loss_type"] = self.recipe.training.dpo_loss_type
        found["reference"] = f"the SFT model {self.sft_dir}" + (", adapter merged" if self.sft_is_adapter else "")
        return found

    def saved_model(self, trainer: Any) -> Any:
        """The policy as a full model: a LoRA policy is merged into the SFT weights it was trained on."""
        from peft import PeftModel

        model = trainer.accelerator.unwrap_model(trainer.model)
        if isinstance(model, PeftModel):
            model = model.merge_and_unload()
        self.final = model
        return model

    def save_model(self, trainer: Any, staging: Path) -> None:
        if trainer.args.should_save:
            self.final.save_pretrained(str(staging), safe_serialization=True)


def frozen_copy(model: Any) -> Any:
    """The reference for full fine-tuning: the starting weights, taken before they change, never trained."""
    reference = copy.deepcopy(model)
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def dpo_config(args: Any) -> Any:
    """TRL's DPOConfig with every Trainer setting of the recipe, and the recipe's DPO keys.

    sft's recipe is one dataclass for both stages (one parser, one set of errors), built on TRL's SFTConfig;
    DPOTrainer reads its own config class, so the shared Trainer fields are carried over by name."""
    from transformers import TrainingArguments
    from trl import DPOConfig

    shared = {
        f.name: getattr(args, f.name)
        for f in fields(TrainingArguments)
        if f.init and not f.name.startswith("_") and hasattr(args, f.name)
    }
    return DPOConfig(
        **shared,
        beta=args.beta,
        loss_type=[args.dpo_loss_type],
        max_length=args.max_length,
        padding_free=False,
        disable_dropout=True,
    )


def warn_other_template(pairs: list[dict[str, Any]], template: Any) -> None:
    """Warn where a pair that names its instruction has a prompt the SFT model's template would not render:
    pairs built from another model's template train the policy on prompts it never sees."""
    differ = [
        index
        for index, pair in enumerate(pairs)
        if isinstance(pair.get("instruction"), str)
        and template.render(pair["instruction"], pair.get("input") or "") != pair["prompt"]
    ]
    if differ:
        logger.warning(
            "%d of %d pairs have a prompt other than the SFT model's template renders for their instruction "
            "(pairs %s): build them from this model with `sft prefs build`",
            len(differ),
            len(pairs),
            ", ".join(map(str, differ[:MISMATCH_EXAMPLES])) + (" ..." if len(differ) > MISMATCH_EXAMPLES else ""),
        )


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer on pairs already encoded the way SFT encodes a record.

    TRL encodes prompt + response as one string and cuts where the prompt's tokens stop matching, which can
    move the boundary by a token and always differs from how sft trained and generates (the prompt encoded
    alone, the response after it); the pairs arrive with `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
        if missing:
            absent = ", ".join(sorted(missing))
            raise ValueError(f"{dataset_name} pairs must be encoded before training; missing {absent}")
        return dataset
