"""Splits: the seed's published layout by default, reproducible shuffles, sensible fractions."""

import json

import pytest
from conftest import SHARED_DATA

from sft.data.load import load_records
from sft.data.split import split_records
from sft.errors import SFTError

SEED = SHARED_DATA / "instruction-data.json"
REFERENCE = SHARED_DATA / "instruction-data-with-response.json"
needs_seed = pytest.mark.skipif(
    not (SEED.is_file() and REFERENCE.is_file()), reason="shared seed data is not available"
)


def test_default_split_keeps_order_train_then_test_then_validation():
    splits = split_records(list(range(1100)))
    assert list(splits) == ["train", "validation", "test"]
    assert splits["train"] == list(range(935))
    assert splits["test"] == list(range(935, 1045))
    assert splits["validation"] == list(range(1045, 1100))


@pytest.mark.parametrize("n", [0, 1, 7, 10, 19, 100, 1000, 1101])
def test_every_record_lands_in_exactly_one_split(n):
    splits = split_records(list(range(n)))
    assert splits["train"] + splits["test"] + splits["validation"] == list(range(n))
    assert len(splits["train"]) == int(n * 0.85 + 1e-9)


def test_fractions_that_are_whole_numbers_of_records_are_not_rounded_down():
    # 0.29 * 100 is 28.999999999999996 in floating point
    splits = split_records(list(range(100)), train_fraction=0.29, test_fraction=0.71)
    assert (len(splits["train"]), len(splits["test"]), len(splits["validation"])) == (29, 71, 0)


def test_shuffle_is_reproducible_and_leaves_the_input_alone():
    items = list(range(200))
    first = split_records(items, shuffle=True, seed=3)
    assert items == list(range(200))
    assert first == split_records(items, shuffle=True, seed=3)
    assert first != split_records(items, shuffle=True, seed=4)
    assert first["train"] != items[:170]
    assert sorted(first["train"] + first["validation"] + first["test"]) == items


@pytest.mark.parametrize(("train", "test"), [(0, 0.1), (1.2, 0), (0.9, 0.2), (0.5, -0.1), (0.5, 1)])
def test_impossible_fractions_are_refused(train, test):
    with pytest.raises(SFTError, match="fraction"):
        split_records(list(range(10)), train_fraction=train, test_fraction=test)


@needs_seed
def test_seed_split_reproduces_the_published_test_set():
    records = load_records(str(SEED))
    splits = split_records(records)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [935, 55, 110]
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    without_responses = [{k: v for k, v in r.items() if k != "model_response"} for r in reference]
    assert splits["test"] == without_responses == records[935:1045]
