"""The benchmark's data: the seed file split the seed's way and tokenized the way sft trains on it.

Every path gets its records from here, so all of them see the same token ids, labels and order.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "instruction-data.json"
BATCH_SIZE = 8


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 on the prompt: completion-only loss, as sft trains


def seed_splits(data: str | Path, tokenizer: Any) -> dict[str, list[dict[str, str]]]:
    """Train / validation / test records: first 85% train, next 10% test, the rest validation."""
    from sft.data.split import DataArguments, load_splits
    from sft.data.template import PromptTemplate

    return load_splits(DataArguments(dataset_name=str(data)), tokenizer, PromptTemplate(), None)


def train_examples(data: str | Path, tokenizer: Any, count: int) -> list[Example]:
    """The first `count` training records, tokenized; training batches are consecutive runs of them."""
    from sft.data.template import PromptTemplate
    from sft.data.tokenize import tokenize_batch

    records = seed_splits(data, tokenizer)["train"][:count]
    columns = {key: [r.get(key) or "" for r in records] for key in ("instruction", "input", "output")}
    encoded = tokenize_batch(columns, tokenizer, PromptTemplate())
    return [Example(ids, labels) for ids, labels in zip(encoded["input_ids"], encoded["labels"])]


def batches(examples: list[Example], batch_size: int = BATCH_SIZE) -> list[list[Example]]:
    return [examples[i : i + batch_size] for i in range(0, len(examples) - batch_size + 1, batch_size)]


def test_prompts(data: str | Path, tokenizer: Any) -> list[dict[str, str]]:
    return seed_splits(data, tokenizer)["test"]
