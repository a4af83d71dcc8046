"""Train / validation / test splits, and the data arguments that define them.

By default the split is the one the seed data set was published with: records in file order, the
first 85% train, the next 10% test, the remaining 5% validate. Keeping that layout (test before
validation, no shuffling) is what lets results be compared with the reference figures.

Every command that splits (train, eval, compare, demo, reproduce, data prepare) goes through
`split_records` with the settings of one `DataArguments`, so a model is never tested on records its
recipe trained on: `sft eval` and `sft compare` read the settings saved with the fine-tuned model.
"""

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from sft.data.load import check_targets, display_source, parse_field_map
from sft.errors import SFTError

logger = logging.getLogger(__name__)

T = TypeVar("T")
SPLITS = ("train", "validation", "test")
# n * fraction can land a hair below a whole number (0.29 * 100 == 28.999...); without this
# nudge int() would drop a record that the user plainly asked for.
EPSILON = 1e-9


@dataclass
class DataArguments:
    """Where the instruction data comes from, how it is split and how prompts are rendered."""

    dataset_name: str = field(
        default="sft-synth",
        metadata={
            "help": "Instruction data: a JSON/JSONL path, an http(s) URL, a Hub dataset id, or "
            "`sft-synth` (the built-in synthetic data)."
        },
    )
    dataset_format: str = field(
        default="auto",
        metadata={"help": "Record format.", "choices": ["auto", "alpaca", "dolly"]},
    )
    dataset_field_map: dict[str, str] | str | None = field(
        default=None,
        metadata={
            "help": "Map other field names onto instruction/input/output, e.g. instruction=question,output=answer "
            'or \'{"instruction": "question", "output": "answer"}\'.'
        },
    )
    dataset_sha256: str | None = field(
        default=None, metadata={"help": "Expected sha256 of a downloaded data file (URLs only)."}
    )
    train_fraction: float = field(
        default=0.85, metadata={"help": "Share of records for training (the first ones, unless shuffled)."}
    )
    test_fraction: float = field(
        default=0.10, metadata={"help": "Share of records held out for the final test; the rest is validation."}
    )
    split_shuffle: bool = field(default=False, metadata={"help": "Shuffle records before splitting."})
    split_seed: int = field(default=0, metadata={"help": "Seed for `split_shuffle`."})
    max_train_records: int | None = field(
        default=None, metadata={"help": "Train on only the first N training records (quick runs)."}
    )
    prompt_preamble: str | None = field(
        default=None,
        metadata={"help": "Sentence above `### Instruction:`; empty string for none; unset for the Alpaca default."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.dataset_field_map, str) and not self.dataset_field_map.strip():
            self.dataset_field_map = None  # `dataset_field_map: ""` in a recipe: no mapping
        if self.dataset_field_map is not None:
            self.dataset_field_map = field_map_setting(self.dataset_field_map)
        if self.max_train_records is not None and self.max_train_records < 1:
            raise SFTError(
                f"max_train_records must be 1 or more, got {self.max_train_records}; "
                "leave it unset to train on every training record"
            )
        check_fractions(self.train_fraction, self.test_fraction)

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], data: str | None = None) -> "DataArguments":
        """The data arguments of a saved recipe; with `data`, for that source instead. A different source
        keeps the recipe's split settings but reads its records with the default format."""
        known = {f.name for f in fields(cls)}
        settings = {key: value for key, value in recipe.items() if key in known}
        if data is not None and data != settings.get("dataset_name"):
            for key in ("dataset_format", "dataset_field_map", "dataset_sha256"):
                settings.pop(key, None)
            settings["dataset_name"] = data
        return cls(**settings)

    def describe_split(self) -> str:
        order = f"shuffled with seed {self.split_seed}" if self.split_shuffle else "in file order"
        test = self.test_fraction
        return f"{self.train_fraction:.0%} train, {test:.0%} test, the rest validation, {order}"


def field_map_setting(value: Any) -> dict[str, str]:
    """`dataset_field_map` as a mapping: given as one already (YAML), as a JSON object, or in the --format form
    `instruction=question,output=answer`."""
    usage = (
        "write it as instruction=question,output=answer or as a JSON object "
        '\'{"instruction": "question", "output": "answer"}\''
    )
    mapping: Any = value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            mapping = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise SFTError(f"dataset_field_map {value!r} is not a valid JSON object; {usage}") from None
    elif isinstance(value, str) and "=" in value:
        try:
            return parse_field_map(value)
        except SFTError as error:
            raise SFTError(f"dataset_field_map {value!r}: {error}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v.strip() for v in mapping.values()):
        raise SFTError(f"dataset_field_map {value!r} is not a mapping of field names; {usage}")
    try:
        return check_targets({str(target): field.strip() for target, field in mapping.items()})
    except SFTError as error:
        raise SFTError(f"dataset_field_map {value!r}: {error}") from None


def split_records(
    records: Sequence[T],
    train_fraction: float = 0.85,
    test_fraction: float = 0.10,
    shuffle: bool = False,
    seed: int = 0,
) -> dict[str, list[T]]:
    """`{"train", "validation", "test"}`: train first, then test, the rest is validation.

    With `shuffle`, records are first shuffled by a generator seeded with `seed`, so the same
    seed always gives the same split; the input sequence itself is never reordered.
    """
    check_fractions(train_fraction, test_fraction)
    items = list(records)
    if shuffle:
        random.Random(seed).shuffle(items)
    n_train = int(len(items) * train_fraction + EPSILON)
    n_test = min(int(len(items) * test_fraction + EPSILON), len(items) - n_train)
    return {
        "train": items[:n_train],
        "validation": items[n_train + n_test :],
        "test": items[n_train : n_train + n_test],
    }


def check_fractions(train_fraction: float, test_fraction: float) -> None:
    if not 0 < train_fraction <= 1:
        raise SFTError(f"the train fraction must be more than 0 and at most 1, got {train_fraction}")
    if not 0 <= test_fraction < 1:
        raise SFTError(f"the test fraction must be at least 0 and less than 1, got {test_fraction}")
    if train_fraction + test_fraction > 1 + EPSILON:
        raise SFTError(
            f"train ({train_fraction}) and test ({test_fraction}) fractions add up to more than 1; "
            "lower one of them (validation gets what is left)"
        )


def read_records(
    data_args: DataArguments,
    tokenizer: Any = None,
    template: Any = None,
    max_length: int | None = None,
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
) -> list[dict[str, str]]:
    """Every record of the data `data_args` names, validated (their token lengths too, given a tokenizer;
    `token_lengths` measures them instead of tokenizing here, as `validate.collect_problems` says)."""
    from sft.data.load import load_records

    return load_records(
        data_args.dataset_name,
        format=data_args.dataset_format,
        field_map=data_args.dataset_field_map,  # type: ignore[arg-type]  # parsed in __post_init__
        sha256=data_args.dataset_sha256,
        tokenizer=tokenizer,
        max_length=max_length,
        template=template,
        length_option="max_length",  # the recipe key, which is what the user of these settings sets
        token_lengths=token_lengths,
    )


def split_as(data_args: DataArguments, records: Sequence[T]) -> dict[str, list[T]]:
    """`records` split with the fractions, shuffle and seed of `data_args`."""
    return split_records(
        records,
        train_fraction=data_args.train_fraction,
        test_fraction=data_args.test_fraction,
        shuffle=data_args.split_shuffle,
        seed=data_args.split_seed,
    )


def load_splits(
    data_args: DataArguments,
    tokenizer: Any = None,
    template: Any = None,
    max_length: int | None = None,
    token_lengths: Callable[[list[dict[str, Any]]], Sequence[int]] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """The validated records, split as `data_args` says; `max_train_records` keeps only the first training
    records."""
    return split_loaded(data_args, read_records(data_args, tokenizer, template, max_length, token_lengths))


def split_loaded(data_args: DataArguments, records: Sequence[T]) -> dict[str, list[T]]:
    """`load_splits` for records already read: split, `max_train_records` applied, an empty train split
    refused, the sizes logged."""
    index = split_indices(data_args, len(records))
    splits = {name: [records[i] for i in index[name]] for name in SPLITS}
    check_train_split(data_args, splits, len(records))
    logger.info(
        "Data %s: %d train, %d validation, %d test records",
        display_source(data_args.dataset_name),
        len(splits["train"]),
        len(splits["validation"]),
        len(splits["test"]),
    )
    return splits


def split_indices(data_args: DataArguments, count: int) -> dict[str, list[int]]:
    """Which of `count` records (by position, from 0) each split of `load_splits` holds: the split depends on
    the number of records and the settings only, so these index rows of the same data tokenized elsewhere."""
    index = split_as(data_args, range(count))
    if data_args.max_train_records is not None:
        index["train"] = index["train"][: data_args.max_train_records]
    return index


def check_train_split(
    data_args: DataArguments,
    splits: Mapping[str, Sequence[Any]],
    count: int,
    options: tuple[str, str] = ("train_fraction", "test_fraction"),
) -> None:
    """Refuse a split with nothing to train on (training would fail much later, with StopIteration).

    An empty validation split is fine: training then skips validation. `options` name the two fractions
    as the user set them (recipe keys, or the command-line options of `sft data prepare`).
    """
    if splits["train"]:
        return
    records = f"{count} record gives" if count == 1 else f"{count} records give"
    train, test = options
    raise SFTError(
        f"{display_source(data_args.dataset_name)}: {records} an empty train split with {train} "
        f"{data_args.train_fraction} and {test} {data_args.test_fraction}; add more records or raise {train}"
    )


# In the recipe file of a preference-tuned (DPO) model: the instruction-data settings of the SFT model it
# started from. Its own data are preference pairs, so these are the settings its instruction splits follow.
INSTRUCTION_DATA_KEY = "instruction_data"
INSTRUCTION_DATA_FIELDS = (
    "dataset_name",
    "dataset_format",
    "dataset_field_map",
    "train_fraction",
    "test_fraction",
    "split_shuffle",
    "split_seed",
    "prompt_preamble",
)


def data_arguments_for_model(model_dir: str | Path | None, data: str | None) -> DataArguments:
    """The data arguments a fine-tuned model was trained with, applied to `data` (None: its own data); the
    defaults where the model saved no recipe (a Hub model, a base model). For a DPO model, those of the SFT
    model it started from."""
    from sft.paths import RECIPE_FILE

    path = Path(model_dir) / RECIPE_FILE if model_dir else None
    if path is None or not path.is_file():
        return DataArguments() if data is None else DataArguments(dataset_name=data)
    import yaml

    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    recipe = recipe if isinstance(recipe, dict) else {}
    if isinstance(recipe.get(INSTRUCTION_DATA_KEY), dict):
        recipe = recipe[INSTRUCTION_DATA_KEY]
    return DataArguments.from_recipe(recipe, data)


def instruction_data_settings(model_dir: str | Path) -> dict[str, Any]:
    """What a DPO model's recipe file records under INSTRUCTION_DATA_KEY for the SFT model in `model_dir`."""
    settings = data_arguments_for_model(model_dir, None)
    return {name: getattr(settings, name) for name in INSTRUCTION_DATA_FIELDS}


def select_split(data_args: DataArguments, split: str, limit: int | None = None) -> list[dict[str, str]]:
    """The records of one split (`train`, `validation`, `test`) or `all` of them, the first `limit` only."""
    if split not in (*SPLITS, "all"):
        raise SFTError(f"unknown split {split!r}; choose from {', '.join((*SPLITS, 'all'))}")
    if limit is not None and limit < 1:
        raise SFTError(f"--limit must be at least 1, got {limit}")
    records = read_records(data_args)
    chosen = records if split == "all" else split_as(data_args, records)[split]
    if not chosen:
        raise SFTError(f"the {split} split of {len(records)} records is empty; use --split all or more data")
    return chosen[:limit]
