"""Human ratings of a responses file: what a reviewer gave each record on `sft ui`'s review tab.

The ratings live beside the responses file they rate, in one JSON file whose format is fixed (agreement
figures are computed from it):

    {"responses": "responses.json",
     "ratings": [{"index": 0, "relevance": 4, "accuracy": 3, "fluency": 5, "completeness": 4}, ...]}

`index` counts records from 0 in the responses file's order; entries are sorted by it, one per record, and
every entry has all four scores, whole numbers from 1 to 5. Each rating is written at once and atomically,
so a reviewer who stops (or whose machine does) loses nothing and resumes at the first unrated record.
"""

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.paths import HUMAN_RATINGS_FILE, atomic_write_json

DIMENSIONS = ("relevance", "accuracy", "fluency", "completeness")  # as the judge's dimensions rubric
RATING_RANGE = LOWEST, HIGHEST = (1, 5)

# One writer at a time within a process: a rating is a read, an update and a write of the whole file.
_write_lock = threading.Lock()


def ratings_path(responses_path: str | os.PathLike) -> Path:
    """Where the ratings of `responses_path` are kept: `human_ratings.json` in the same folder."""
    return Path(responses_path).parent / HUMAN_RATINGS_FILE


def is_score(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and LOWEST <= value <= HIGHEST


def check_scores(scores: Mapping[str, Any], where: str) -> dict[str, int]:
    """The four scores of `scores` (other keys ignored), or an SFTError naming `where` and what is wrong."""
    for dimension in DIMENSIONS:
        value = scores.get(dimension)
        if not is_score(value):
            shown = "missing" if dimension not in scores else json.dumps(value)
            raise SFTError(f"{where}: `{dimension}` is {shown}, not a whole number from {LOWEST} to {HIGHEST}")
    return {name: scores[name] for name in DIMENSIONS}


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SFTError(f"{path}: cannot be read ({error.__class__.__name__}: {error})") from None
    except ValueError as error:
        raise SFTError(f"{path}: not valid JSON ({error}); fix or remove it") from None


def parse_ratings(path: Path, data: Any, n_records: int | None = None) -> tuple[str, dict[int, dict[str, Any]]]:
    """The rated responses file's name and the entries by record index, each checked: a malformed file,
    entry or value is one line naming the file and the entry. With `n_records`, an index past the responses
    file's last record is refused too. Entries keep any keys of their own (a note, the rater's name)."""
    where = str(path)
    if not isinstance(data, dict):
        raise SFTError(f'{where}: must hold a JSON object {{"responses": ..., "ratings": [...]}}, not a list or value')
    responses = data.get("responses")
    if not isinstance(responses, str) or not responses.strip():
        raise SFTError(f"{where}: `responses` must name the rated responses file, such as responses.json")
    if not isinstance(data.get("ratings"), list):
        raise SFTError(f"{where}: `ratings` must be a list of objects, one per rated record")
    entries: dict[int, dict[str, Any]] = {}
    for position, entry in enumerate(data["ratings"]):
        name = f"{where}: ratings[{position}]"
        if not isinstance(entry, dict):
            raise SFTError(f"{name} must be an object with index, relevance, accuracy, fluency and completeness")
        index = entry.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise SFTError(f"{name}: `index` must be a record number counted from 0, not {json.dumps(index)}")
        if n_records is not None and index >= n_records:
            raise SFTError(f"{name}: `index` {index} is past the last record ({n_records} records, counted from 0)")
        if index in entries:
            raise SFTError(f"{name}: record {index} is rated twice")
        check_scores(entry, f"{name} (record {index})")
        entries[index] = entry
    return responses.strip(), entries


def load_ratings(responses_path: str | os.PathLike) -> dict[int, dict[str, int]]:
    """The ratings kept for `responses_path`: record index -> its four scores; empty when there are none yet.

    A file that is not in the format above, or that rates another responses file, is a one-line SFTError
    naming it."""
    _, entries = read_ratings_file(responses_path)
    return {index: {name: entry[name] for name in DIMENSIONS} for index, entry in entries.items()}


def read_ratings_file(responses_path: str | os.PathLike) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The ratings file of `responses_path` as saved (an empty one when there is none), and its entries by
    record index, each checked. Ratings of another responses file are refused: the review would mix them."""
    path = ratings_path(responses_path)
    name = Path(responses_path).name
    if not path.exists():
        return {"responses": name, "ratings": []}, {}
    data = read_json_file(path)
    rated, entries = parse_ratings(path, data)
    if rated != name:
        raise SFTError(
            f"{path}: holds ratings of {rated!r}, not of {name!r}; move one of the responses files to its own folder"
        )
    return data, entries


def save_rating(responses_path: str | os.PathLike, index: int, scores: Mapping[str, Any]) -> Path:
    """Keep the four `scores` of record `index` (counted from 0) of `responses_path`, replacing any earlier
    scores of it (other keys of its entry, and of the file, stay); the file is rewritten whole and atomically,
    entries sorted by index. Returns its path."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise SFTError(f"record index {index!r} is not a record number counted from 0")
    rating = check_scores(scores, f"the rating of record {index}")
    with _write_lock:
        data, entries = read_ratings_file(responses_path)
        entries[index] = {**entries.get(index, {}), "index": index, **rating}
        data = {**data, "responses": Path(responses_path).name, "ratings": [entries[i] for i in sorted(entries)]}
        return atomic_write_json(ratings_path(responses_path), data)


def read_responses(responses_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a responses file written by `sft eval` (`instruction`, `input`, `output` and
    `model_response`), checked whole first: a record without a text `model_response` is an SFTError."""
    from sft.data.load import load_records

    records = load_records(str(responses_path))
    missing = [str(i) for i, record in enumerate(records) if not isinstance(record.get("model_response"), str)]
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SFTError(
            f"{responses_path}: {len(missing)} of {len(records)} records have no model_response (records {listed}); "
            "give a responses file written by `sft eval`"
        )
    return records


def first_unrated(ratings: Mapping[int, Any], count: int) -> int | None:
    """The first of `count` records without a rating, or None when every one is rated."""
    return next((index for index in range(count) if index not in ratings), None)
