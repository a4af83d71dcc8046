"""Recipe dataclasses: TRL's own configs, subclassed to add only what sft needs and to change the
defaults that fail or crawl on a CPU-only machine, and the one place where a parsed recipe is resolved
into the settings a training run uses.

A recipe is a YAML file whose keys are the fields below; `--key value` on the command line
overrides it. Unknown keys are errors that name the key.
"""

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from trl import ModelConfig, SFTConfig, TrlParser

from sft.data.split import DataArguments
from sft.errors import SFTError
from sft.models.load import OFFLINE_DEFAULT
from sft.secrets import GIVEN, is_secret_name

logger = logging.getLogger(__name__)

METHODS = ("full", "lora", "qlora", "prompt_tuning")
HELP_WIDTH = 100  # fixed, so that the help text can be cached whatever the terminal's width


@dataclass
class ModelArguments(ModelConfig):
    """TRL's model options plus the fine-tuning method."""

    model_name_or_path: str | None = field(
        default=OFFLINE_DEFAULT,
        metadata={"help": f"Hub id, local directory, or `{OFFLINE_DEFAULT}` (works offline)."},
    )
    method: str = field(
        default="full",
        metadata={
            "help": "What to train: every weight, LoRA adapters, QLoRA (4-bit base, needs a GPU and "
            "bitsandbytes) or soft prompt tokens.",
            "choices": list(METHODS),
        },
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules that get LoRA adapters; `all-linear` covers every linear layer but the head."},
    )
    freeze_parameters: list[str] | None = field(
        default=None,
        metadata={
            "help": "Full fine-tuning only: regular expressions naming weights to keep fixed, e.g. "
            "`embed_tokens` (the input embeddings, and the output head where the two are tied)."
        },
    )
    num_virtual_tokens: int = field(default=20, metadata={"help": "Soft prompt length for prompt tuning."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_peft and self.method == "full":
            self.method = "lora"  # TRL's own switch means LoRA
        if self.freeze_parameters and self.method != "full":
            raise SFTError(
                f"freeze_parameters applies to method full; method {self.method} already trains only its adapters"
            )

    @property
    def trains_adapter(self) -> bool:
        return self.method != "full"


@dataclass
class TrainingConfig(SFTConfig):
    """TRL's SFTConfig with defaults that suit instruction tuning on any machine, CPUs included."""

    output_dir: str | None = field(default="out/run", metadata={"help": "Where the model and reports go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that holds an earlier run: its model, adapter and checkpoints "
            "are removed first. Without it such a directory is refused."
        },
    )
    # TRL turns checkpointing on; it costs ~20% speed and a CPU rarely needs the memory.
    activation_checkpointing: bool | None = field(
        default=False, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing."}
    )
    # TRL asks for bf16 everywhere; CPUs without bf16 units emulate it and run several times slower.
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision (weights and optimizer stay fp32); unset means on where the "
            "hardware runs bf16 natively: a GPU with bf16, or a CPU with AVX512-BF16 or AMX."
        },
    )
    logging_steps: float = field(default=5, metadata={"help": "Log every N optimizer steps."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to compute validation loss."})
    save_strategy: str = field(default="no", metadata={"help": "When to write checkpoints (`steps` with save_steps)."})
    save_only_model: bool = field(default=False, metadata={"help": "Checkpoints without optimizer state (no resume)."})
    max_length: int | None = field(default=1024, metadata={"help": "Longest training sequence in tokens."})
    # Padding-free batches: records are concatenated with position ids restarting per record, so no
    # compute is spent on padding and attention never crosses records.
    padding_free: bool = field(default=True, metadata={"help": "Concatenate records instead of padding them."})
    group_by_length: bool = field(default=False, metadata={"help": "Batch records of similar length together."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loading worker processes."})
    # Every trainable weight gets a gradient in these models; searching for unused ones costs a graph walk.
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Let DDP look for parameters without gradients (slower)."}
    )
    seed: int = field(default=123, metadata={"help": "Random seed for initialisation and shuffling."})

    def __post_init__(self) -> None:
        import torch

        if self.bf16 is None:
            from sft.models import load

            on_gpu = torch.cuda.is_available() and not self.use_cpu
            native = load.default_dtype() == torch.bfloat16 if on_gpu else load.cpu_runs_bf16()
            self.bf16 = native and not self.fp16
            if self.bf16 and not on_gpu:
                self.use_cpu = True  # Transformers autocasts to bf16 on a CPU only when told it trains there
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Several processes and no GPU: Accelerate builds a gloo group only when told to use the CPU.
            self.use_cpu = True
        super().__post_init__()


CONFIG_TYPES = (DataArguments, ModelArguments, TrainingConfig)
# Shown in every saved recipe, even at their defaults, so a run's inputs are readable at a glance.
ALWAYS_SHOWN = {"model_name_or_path", "method", "dataset_name", "output_dir", "num_train_epochs", "learning_rate"}
TRUE_STRINGS = {"true", "yes", "1"}
FALSE_STRINGS = {"false", "no", "0", ""}


@dataclass
class Recipe:
    """A parsed recipe, resolved once: every cross-field fix-up is made here, so the training run reads
    its settings without changing them."""

    data: DataArguments
    model: ModelArguments
    training: TrainingConfig
    # The recipe as the user wrote it (keys that differ from the defaults), secrets marked as given.
    saved: dict[str, Any]
    # Records longer than this are refused when the data is read; TRL truncates nothing after that.
    max_record_length: int | None
    # `push_to_hub: true`: the repository to upload to after training, and the token to do it with. The
    # token is taken out of the training arguments so that no log, checkpoint or saved file can hold it.
    push_repo: str | None = None
    hub_token: str | None = field(default=None, repr=False)
    # `resume_from_checkpoint`: True for the newest checkpoint in output_dir, a path, or None.
    resume: bool | str | None = None
    notes: list[str] = field(default_factory=list)  # fix-ups worth telling the user, logged at the start


def make_parser() -> TrlParser:
    return TrlParser(
        CONFIG_TYPES,
        prog="sft train",
        usage="sft train RECIPE.yaml [--key value ...]\n"
        "       accelerate launch sft/train.py RECIPE.yaml [--key value ...]",
        description="Fine-tune a causal language model on instruction data as a YAML recipe says. Every recipe "
        "key below can be given or overridden on the command line as --key value; a misspelled key is an error.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=HELP_WIDTH),
    )


def normalise_argv(argv: list[str]) -> list[str]:
    """Accept `RECIPE.yaml` as the first argument as well as TRL's `--config RECIPE.yaml`."""
    if argv and argv[0].endswith((".yaml", ".yml")) and not argv[0].startswith("-"):
        return ["--config", argv[0], *argv[1:]]
    return argv


def parse_recipe(argv: list[str] | None = None) -> Recipe:
    """Recipe plus command-line overrides, resolved; unknown keys raise an error that names them."""
    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = make_parser()
    try:
        data_args, model_args, training_args = parser.parse_args_and_config(argv)
    except ValueError as error:
        raise SFTError(describe_parse_error(error)) from None
    except FileNotFoundError as error:
        raise SFTError(f"recipe not found: {error.filename}") from None
    return resolve(data_args, model_args, training_args)


def describe_parse_error(error: ValueError) -> str:
    text = str(error)
    if "Unknown arguments from config file" in text or "Some specified arguments are not used" in text:
        keys = text.split(":", 1)[1].strip()
        return f"unknown recipe key or option: {keys}; check the spelling against `sft train --help`"
    return text


def resolve(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingConfig) -> Recipe:
    """The fix-ups that depend on more than one field, made once, in order."""
    recipe = Recipe(
        data=data_args,
        model=model_args,
        training=training_args,
        saved=recipe_dict(data_args, model_args, training_args),
        max_record_length=training_args.max_length,
        resume=resume_target(training_args.resume_from_checkpoint),
    )
    # The token leaves the arguments before anything can print, save or pickle them.
    recipe.hub_token, training_args.hub_token = training_args.hub_token, None
    if training_args.push_to_hub:
        # sft.hub uploads a curated folder with a model card after training; the Trainer's own push would
        # upload every checkpoint and pickled file, so it is switched off.
        recipe.push_repo = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
        training_args.push_to_hub = False
    if model_args.method == "prompt_tuning" and training_args.padding_free:
        # Virtual tokens are prepended per row, so concatenated records would share one soft prompt.
        recipe.notes.append("Prompt tuning pads batches instead of concatenating records (padding_free=False)")
        training_args.padding_free = False
    if training_args.padding_free:
        # Records longer than max_length are refused when the data is read, so TRL has nothing to truncate.
        training_args.max_length = None
    training_args.include_num_input_tokens_seen = "all" if training_args.padding_free else "non_padding"
    training_args.disable_tqdm = True  # sft's own bar shows loss, tokens/s and time left
    return recipe


def resume_target(value: Any) -> bool | str | None:
    """`resume_from_checkpoint: true` means the newest checkpoint in output_dir."""
    if isinstance(value, str) and value.lower() in TRUE_STRINGS:
        return True
    if isinstance(value, str) and value.lower() in FALSE_STRINGS:
        return None
    return value


def recipe_dict(*configs: Any) -> dict[str, Any]:
    """The merged recipe: the key fields plus every field that differs from its default, for `sft_config.yaml`.
    A secret (a key whose name says token or key) is recorded as given, never by its value."""
    merged: dict[str, Any] = {}
    for config in configs:
        defaults = type(config)()
        for name in config.__dataclass_fields__:
            value = getattr(config, name)
            if name.startswith("_") or (name not in ALWAYS_SHOWN and getattr(defaults, name, object()) == value):
                continue
            merged[name] = GIVEN if is_secret_name(name) and value else plain(value)
    return merged


def plain(value: Any) -> Any:
    """YAML-safe form of a config value (enums and paths become strings)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return getattr(value, "value", str(value))
