"""Recipe dataclasses: TRL's own configs, subclassed to add only what sft needs and to change the
defaults that fail or crawl on a CPU-only machine, and the one place where a parsed recipe is resolved
into the settings a training run uses.

A recipe is a YAML file whose keys are the fields below; `--key value` on the command line
overrides it. Unknown keys are errors that name the key.
"""

import argparse
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from trl import ModelConfig, SFTConfig, TrlParser

from sft.data.split import DataArguments
from sft.errors import DataError, SFTError
from sft.models.load import OFFLINE_DEFAULT
from sft.secrets import GIVEN, is_secret_name

logger = logging.getLogger(__name__)

METHODS = ("full", "lora", "qlora", "prompt_tuning")
# What a run trains: instruction tuning on records (`sft`), or preference tuning of an SFT model on pairs (`dpo`).
STAGES = ("sft", "dpo")
DPO_METHODS = ("full", "lora")
# The losses TRL's DPOTrainer implements (trl.DPOConfig.loss_type).
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
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
        for pattern in self.freeze_parameters or []:
            try:
                re.compile(pattern)
            except re.error as error:
                raise SFTError(
                    f"freeze_parameters: {pattern!r} is not a valid regular expression ({error}); "
                    "write it as Python's re module reads it, e.g. 'embed_tokens' or 'layers\\.[0-3]\\.'"
                ) from None

    @property
    def trains_adapter(self) -> bool:
        return self.method != "full"


@dataclass
class TrainingConfig(SFTConfig):
    """TRL's SFTConfig with defaults that suit instruction tuning on any machine, CPUs included."""

    output_dir: str | None = field(default="out/run", metadata={"help": "Where the model and reports go."})
    # The stage: SFT on instruction records, or DPO (TRL's DPOTrainer) on preference pairs, starting from an
    # SFT output directory (model_name_or_path) whose weights are also the frozen reference.
    stage: str = field(
        default="sft",
        metadata={
            "help": "sft: instruction tuning on records (instruction, input, output); dpo: preference tuning on pairs "
            "(prompt, chosen, rejected, as `sft prefs build` writes them) of the SFT output directory named by "
            "model_name_or_path, whose weights are the frozen reference.",
            "choices": list(STAGES),
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "stage dpo: how far the model may move from the reference (DPO's beta; higher stays closer). "
            "Must be above 0."
        },
    )
    dpo_loss_type: str = field(
        default="sigmoid",
        metadata={
            "help": "stage dpo: the preference loss (TRL's loss_type): sigmoid is the DPO paper's; ipo, hinge, robust, "
            "apo_zero, ... as TRL names them. (loss_type is the SFT loss.)",
            "choices": list(DPO_LOSS_TYPES),
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that holds an earlier run: its model, adapter and checkpoints "
            "are removed first. Without it such a directory is refused."
        },
    )
    force_resume: bool = field(
        default=False,
        metadata={
            "help": "Resume from a checkpoint even where its recipe or training data differ from this run's, or "
            "where it lacks the optimizer and scheduler state; the result then differs from an uninterrupted run."
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
            "hardware runs bf16 natively: a GPU with bf16, or a CPU with AVX512-BF16 or AMX (unless "
            "ONEDNN_MAX_CPU_ISA caps oneDNN below them)."
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
    # Generation metrics at every evaluation (sft.training.generation_eval); TRL's trainer reports only losses.
    generation_eval: bool = field(
        default=False,
        metadata={
            "help": "At every evaluation also generate responses for the validation records (greedy) and report "
            "eval_rouge_l, eval_bleu, eval_exact_match and eval_ended_at_eos beside eval_loss; "
            "metric_for_best_model and early_stopping_patience can use them (e.g. eval_rouge_l)."
        },
    )
    generation_eval_records: int | None = field(
        default=None,
        metadata={"help": "generation_eval on the first N validation records only; unset for all of them."},
    )
    # 128, half of `sft eval`'s 256: generation runs at every evaluation, and a model that has not yet learned
    # to stop spends the whole budget on every record. Alpaca-style answers are short (the book's 1,100 records
    # need at most 55 tokens, 12 at the median), so 128 leaves room for any of them to end at EOS.
    generation_eval_max_new_tokens: int = field(
        default=128,
        metadata={"help": "Most new tokens per response in generation_eval (sft eval's default is 256)."},
    )
    # An LLM judge of those responses (sft.evaluation.judge): `eval_judge`, the mean score from 0 to 100.
    generation_eval_judge_endpoint: str | None = field(
        default=None,
        metadata={
            "help": "With generation_eval: the OpenAI-compatible base URL of an LLM judge (e.g. "
            "http://localhost:11434/v1 for ollama) that grades every generated response against its reference "
            "from 0 to 100, logged as eval_judge; needs generation_eval_judge_model. Answers are cached in "
            "judge_cache.jsonl in output_dir."
        },
    )
    generation_eval_judge_model: str | None = field(
        default=None,
        metadata={"help": "The model the judge server grades with (with generation_eval_judge_endpoint)."},
    )
    generation_eval_judge_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "The name of the environment variable holding the judge server's API key (not the key "
            "itself; a local server such as ollama needs none)."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop training once metric_for_best_model has not improved for N evaluations in a row "
            "(e.g. with metric_for_best_model: eval_rouge_l and generation_eval: true); unset never stops early."
        },
    )

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


class RecipeParser(TrlParser):
    """TRL's parser, with a bad option value as one line instead of argparse's usage text and exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SFTError(f"{message}; see `sft train --help`")


def make_parser() -> TrlParser:
    return RecipeParser(
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
    if "--config" in argv[:-1]:
        check_recipe_file(argv[argv.index("--config") + 1])
    parser = make_parser()
    try:
        data_args, model_args, training_args = parser.parse_args_and_config(argv)
    except ValueError as error:
        raise SFTError(describe_parse_error(error)) from None
    except FileNotFoundError as error:
        raise SFTError(f"recipe not found: {error.filename}") from None
    return resolve(data_args, model_args, training_args)


def check_recipe_file(path: str) -> None:
    """The recipe file exists, is UTF-8 and holds a YAML mapping; TRL's parser would raise a traceback."""
    import yaml

    recipe = Path(path)
    if recipe.is_dir():
        raise SFTError(f"recipe {path} is a directory; pass a YAML file such as recipes/tiny.yaml")
    if not recipe.is_file():
        raise SFTError(f"recipe not found: {path}")
    data = recipe.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SFTError(
            f"recipe {path}: byte {error.start} (0x{data[error.start]:02x}) is not valid UTF-8; save the file as UTF-8"
        ) from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise SFTError(f"recipe {path}{where}: {problem}; fix the YAML there") from None
    if not isinstance(content, dict):
        raise SFTError(f"recipe {path} must hold `key: value` lines (a YAML mapping), not {type(content).__name__}")


def describe_parse_error(error: ValueError) -> str:
    text = str(error)
    if "Unknown arguments from config file" in text or "Some specified arguments are not used" in text:
        keys = text.split(":", 1)[1].strip()
        return f"unknown recipe key or option: {keys}; check the spelling against `sft train --help`"
    return text


def resolve(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingConfig) -> Recipe:
    """The fix-ups that depend on more than one field, made once, in order, after every value is checked."""
    problems = recipe_problems(model_args, training_args, data_args)
    if problems:
        raise DataError(problems)
    notes = dpo_defaults(training_args) if training_args.stage == "dpo" else []
    recipe = Recipe(
        data=data_args,
        model=model_args,
        training=training_args,
        saved=recipe_dict(data_args, model_args, training_args),
        max_record_length=training_args.max_length,
        resume=resume_target(training_args.resume_from_checkpoint),
        notes=notes,
    )
    # The token leaves the arguments before anything can print, save or pickle them.
    recipe.hub_token, training_args.hub_token = training_args.hub_token, None
    if training_args.push_to_hub:
        # sft.hub uploads a curated folder with a model card after training; the Trainer's own push would
        # upload every checkpoint and pickled file, so it is switched off.
        recipe.push_repo = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
        training_args.push_to_hub = False
    if training_args.stage == "dpo":
        # Each batch holds a pair's two responses side by side; TRL's DPOTrainer pads them (it has no padding-free
        # path), and counts the tokens it sees by the attention mask.
        training_args.padding_free = False
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


def recipe_problems(
    model_args: ModelArguments, training_args: TrainingConfig, data_args: DataArguments | None = None
) -> list[str]:
    """Values that would train nothing, or fail only after the model has loaded; one line each, naming the key.

    TRL and Transformers accept most of these and save the untrained base as the result, or fail with a
    traceback minutes later."""
    problems = []

    def positive(name: str, value: Any, whole: bool = True) -> None:
        valid = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
        if not valid or (whole and value != int(value)):
            kind = "a whole number of at least 1" if whole else "a number above 0"
            problems.append(f"{name} must be {kind}, got {value}")

    if model_args.method not in METHODS:
        problems.append(f"method {model_args.method!r} is not one of {', '.join(METHODS)}")
    args = training_args
    if args.stage not in STAGES:
        problems.append(f"stage {args.stage!r} is not one of {', '.join(STAGES)}")
    elif args.stage == "dpo":
        problems += dpo_problems(model_args, args, positive)
    if args.max_steps == 0 or args.max_steps < -1:
        problems.append(f"max_steps must be -1 (train num_train_epochs) or at least 1, got {args.max_steps}")
    if args.max_steps < 1 and not (math.isfinite(args.num_train_epochs) and args.num_train_epochs > 0):
        problems.append(f"num_train_epochs must be above 0, got {args.num_train_epochs}")
    positive("learning_rate", args.learning_rate, whole=False)
    positive("per_device_train_batch_size", args.per_device_train_batch_size)
    positive("per_device_eval_batch_size", args.per_device_eval_batch_size)
    positive("gradient_accumulation_steps", args.gradient_accumulation_steps)
    positive("logging_steps", args.logging_steps, whole=False)
    if args.max_length is not None:
        positive("max_length", args.max_length)
    if not 0 <= args.weight_decay < math.inf:
        problems.append(f"weight_decay must be 0 or more, got {args.weight_decay}")
    if args.warmup_steps < 0:
        problems.append(f"warmup_steps must be 0 or more, got {args.warmup_steps}")
    if str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps":
        positive("save_steps", args.save_steps, whole=False)
    if model_args.method in ("lora", "qlora"):
        positive("lora_r", model_args.lora_r)
        positive("lora_alpha", model_args.lora_alpha, whole=False)
        if not 0 <= model_args.lora_dropout < 1:
            problems.append(f"lora_dropout must be at least 0 and below 1, got {model_args.lora_dropout}")
    if model_args.method == "prompt_tuning":
        positive("num_virtual_tokens", model_args.num_virtual_tokens)
    problems += evaluation_problems(args, data_args, positive)
    return problems


# Where a DPO recipe leaves them at the SFT defaults: the settings of the book's DPO run. A higher learning rate
# or more epochs drive the loss to zero on the training pairs (the policy drifts from the reference).
DPO_DEFAULTS = {"learning_rate": 5e-6, "num_train_epochs": 1.0}


def dpo_defaults(args: TrainingConfig) -> list[str]:
    """Apply DPO_DEFAULTS to the keys a DPO recipe left at their SFT defaults; the notes saying so."""
    notes = []
    for name, value in DPO_DEFAULTS.items():
        if getattr(args, name) == TrainingConfig.__dataclass_fields__[name].default:
            setattr(args, name, value)
            notes.append(f"stage dpo: {name} {value:g} (the DPO default; set {name} to change it)")
    return notes


def dpo_problems(model_args: ModelArguments, args: TrainingConfig, positive: Any) -> list[str]:
    """stage dpo: beta above 0 (at 0 the loss is flat and nothing trains), a loss TRL knows, a method it can train on
    the SFT model, and no SFT-only settings."""
    problems: list[str] = []
    positive("beta", args.beta, whole=False)
    if args.dpo_loss_type not in DPO_LOSS_TYPES:
        problems.append(f"dpo_loss_type {args.dpo_loss_type!r} is not one of {', '.join(DPO_LOSS_TYPES)}")
    if model_args.method not in DPO_METHODS:
        problems.append(
            f"stage dpo trains method full or lora on the SFT model, not {model_args.method}; set method: full or lora"
        )
    if args.generation_eval:
        problems.append(
            "generation_eval applies to stage sft; a dpo run reports its reward margin and preference accuracy on the "
            "validation pairs instead (sft compare scores its answers)"
        )
    return problems


# What generation_eval adds to the evaluation metrics, without the `eval_` prefix; `judge` with a judge.
GENERATION_METRICS = ("rouge_l", "bleu", "exact_match", "ended_at_eos", "judge")
JUDGE_KEYS = ("generation_eval_judge_endpoint", "generation_eval_judge_model")


def judge_problems(args: TrainingConfig) -> list[str]:
    """The judge of generation_eval: its endpoint and model together, only with generation_eval, a URL, and the
    key's variable set where one other than OPENAI_API_KEY is named."""
    given = [name for name in JUDGE_KEYS if getattr(args, name) is not None]
    if not given:
        return []
    if len(given) == 1:
        missing = next(name for name in JUDGE_KEYS if name not in given)
        return [f"{given[0]} needs {missing} too: set both to judge the generated responses, or neither"]
    if not args.generation_eval:
        return ["generation_eval_judge_endpoint and generation_eval_judge_model judge generation_eval's responses; "
                "set generation_eval true, or leave the judge keys out"]  # fmt: skip
    try:
        judge_settings(args).check()
        judge_settings(args).api_key()
    except SFTError as error:
        return [str(error)]
    return []


def judge_settings(args: TrainingConfig) -> Any:
    """The `JudgeSettings` the recipe's generation_eval_judge_* keys give (errors name those keys)."""
    from sft.evaluation.judge import JudgeSettings

    return JudgeSettings(
        endpoint=str(args.generation_eval_judge_endpoint),
        model=str(args.generation_eval_judge_model),
        api_key_env=args.generation_eval_judge_api_key_env,
        option_prefix="generation_eval_judge_",
    )


def evaluation_problems(args: TrainingConfig, data_args: DataArguments | None, positive: Any) -> list[str]:
    """generation_eval, metric_for_best_model and early stopping: settings that would otherwise fail at the
    first evaluation, minutes into training, or never take effect."""
    problems: list[str] = []
    evaluates = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
    if args.generation_eval_records is not None:
        positive("generation_eval_records", args.generation_eval_records)
    positive("generation_eval_max_new_tokens", args.generation_eval_max_new_tokens)
    if args.generation_eval and not evaluates:
        problems.append(
            "generation_eval needs evaluations, but eval_strategy is no; set eval_strategy to epoch, "
            "or to steps with eval_steps"
        )
    if args.generation_eval and data_args is not None and data_args.train_fraction + data_args.test_fraction > 1 - 1e-9:
        problems.append(
            f"generation_eval needs a validation split, but train_fraction {data_args.train_fraction} and "
            f"test_fraction {data_args.test_fraction} leave none; lower one of them (validation gets what is left)"
        )
    problems += judge_problems(args)
    metric = args.metric_for_best_model
    if metric is not None and metric.removeprefix("eval_") in GENERATION_METRICS and not args.generation_eval:
        problems.append(
            f"metric_for_best_model {metric} is a generation metric; set generation_eval true to compute it"
        )
    elif metric == "eval_judge" and args.generation_eval_judge_endpoint is None:
        problems.append(
            "metric_for_best_model eval_judge needs a judge: set generation_eval_judge_endpoint and "
            "generation_eval_judge_model"
        )
    if args.early_stopping_patience is not None:
        positive("early_stopping_patience", args.early_stopping_patience)
        if not evaluates:
            problems.append(
                "early_stopping_patience needs evaluations, but eval_strategy is no; set eval_strategy to epoch, "
                "or to steps with eval_steps"
            )
        if metric is None:
            problems.append(
                "early_stopping_patience needs metric_for_best_model, the figure to watch: eval_loss, or "
                "eval_rouge_l with generation_eval true"
            )
    return problems


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
    from sft.data.load import display_source

    merged: dict[str, Any] = {}
    for config in configs:
        defaults = type(config)()
        for name in config.__dataclass_fields__:
            value = getattr(config, name)
            if name.startswith("_") or (name not in ALWAYS_SHOWN and getattr(defaults, name, object()) == value):
                continue
            merged[name] = GIVEN if is_secret_name(name) and value else plain(value)
    # A data or judge URL may carry credentials (user:password@, a signed query string): only scheme, host, path.
    for name in ("dataset_name", "generation_eval_judge_endpoint"):
        if isinstance(merged.get(name), str):
            merged[name] = display_source(merged[name])
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
