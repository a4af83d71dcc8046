"""Train / validation / test splits, by default exactly the split the seed data set was published with.

The seed's reference responses were generated for its test split, taken in file order: the first
85% of records train, the next 10% test, the remaining 5% validate. Keeping that layout (test
before validation, no shuffling) is what lets results be compared with the reference figures.
"""

import random
from collections.abc import Sequence
from typing import TypeVar

from sft.errors import SFTError

T = TypeVar("T")
# n * fraction can land a hair below a whole number (0.29 * 100 == 28.999...); without this
# nudge int() would drop a record that the user plainly asked for.
EPSILON = 1e-9


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
