"""Human ratings of a responses file, and how well an LLM judge agrees with them.

The review tab of `sft ui` saves a person's ratings beside the responses file they rate, as
`human_ratings.json` in the same folder:

    {
      "responses": "responses.json",
      "ratings": [
        {"index": 0, "relevance": 4, "accuracy": 3, "fluency": 5, "completeness": 3},
        {"index": 7, "relevance": 2, "accuracy": 1, "fluency": 4, "completeness": 2}
      ]
    }

- `responses`: the file name (no folder) of the responses file rated, such as `responses.json` of `sft eval`.
  Ratings that name another file are not read for this one.
- `ratings`: one object per rated record, in any order. `index` is the record's position in the responses
  file, counted from 0 in the file's order (as every sft command counts records). `relevance`, `accuracy`,
  `fluency` and `completeness` (the judge's `dimensions` rubric, same meanings) are each a whole number from
  1 (very poor) to 5 (excellent); all four are needed. A record not rated has no entry; no record is rated
  twice. Other keys of an entry (a note, the rater's name) are allowed and ignored.

From them `sft score` (and `sft eval`'s report, when the file is in its output directory) reports the number of
rated records, each dimension's mean and the human overall (the mean of the four dimensions), each with a 95%
bootstrap interval over the rated records. Where the judge scored the same records (judgements.json beside the
responses file, or `judge_score` in its records), it reports their agreement: Pearson, Spearman and Kendall
(tau-b) correlations between the human overall and the judge's 0-100 score over the records both scored, with
that count; with the dimensions rubric, also each dimension's human rating against the judge's. Correlations
need at least three such records; one side giving every record the same score leaves them undefined.
"""

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft.errors import SFTError
from sft.evaluation.ratings import DIMENSIONS, check_scores, parse_ratings, ratings_path, read_json_file
from sft.paths import JUDGEMENTS_FILE

if TYPE_CHECKING:
    from sft.evaluation.bootstrap import BootstrapSettings

OVERALL = "overall"  # the human overall: the mean of the four dimensions
MIN_PAIRED = 3  # fewest records rated by both for a correlation
CORRELATIONS = ("pearson", "spearman", "kendall")
LABELS = {"pearson": "Pearson", "spearman": "Spearman", "kendall": "Kendall"}


@dataclass(frozen=True)
class HumanRatings:
    """A read human_ratings.json: the file name it rates, and per record index the four dimensions."""

    path: Path
    responses: str
    ratings: dict[int, dict[str, int]]

    def overall(self, index: int) -> float:
        return sum(self.ratings[index][name] for name in DIMENSIONS) / len(DIMENSIONS)


@dataclass(frozen=True)
class JudgeScore:
    """The judge's score of one record (0-100) and, with the dimensions rubric, its four ratings (1-5)."""

    score: float
    dimensions: dict[str, int] | None = None


def read_human_ratings(path: str | os.PathLike, n_records: int | None = None) -> HumanRatings:
    """The ratings in `path`, checked by the review tab's own reader (sft.evaluation.ratings)."""
    path = Path(path)
    responses, entries = parse_ratings(path, read_json_file(path), n_records)
    return HumanRatings(path, responses, {index: check_scores(entry, str(path)) for index, entry in entries.items()})


def judge_scores_from_judgements(judgements: Sequence[Any]) -> dict[int, JudgeScore]:
    """Index -> JudgeScore for the scored records of judgements (judge.py's `Judgement` or judgements.json's
    entries, which hold `index`, `score`, `scored` and, with the dimensions rubric, `dimensions`)."""
    scores = {}
    for judgement in judgements:
        entry = judgement if isinstance(judgement, Mapping) else vars(judgement)
        score, index = entry.get("score"), entry.get("index")
        if entry.get("scored") and isinstance(score, (int, float)) and isinstance(index, int):
            dimensions = entry.get("dimensions")
            scores[index] = JudgeScore(float(score), dict(dimensions) if isinstance(dimensions, Mapping) else None)
    return scores


def judge_scores_beside(
    responses_path: str | os.PathLike, records: Sequence[Mapping[str, Any]]
) -> dict[int, JudgeScore]:
    """The judge's scores of a responses file: judgements.json beside it (what `sft judge` and `sft eval` with a
    judge write), else `judge_score` (and `judge_<dimension>`) in its records; empty where there are none."""
    beside = Path(responses_path).parent / JUDGEMENTS_FILE
    if beside.is_file():
        try:
            judgements = json.loads(beside.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise SFTError(f"{beside}: not a readable judgements file ({error.__class__.__name__})") from None
        if not isinstance(judgements, list) or not all(isinstance(j, dict) for j in judgements):
            raise SFTError(f"{beside}: must hold a list of judgements, as `sft judge` writes it")
        return judge_scores_from_judgements(judgements)
    scores = {}
    for index, record in enumerate(records):
        score = record.get("judge_score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            found = {name: record.get(f"judge_{name}") for name in DIMENSIONS}
            dimensions = found if all(isinstance(v, (int, float)) for v in found.values()) else None
            scores[index] = JudgeScore(float(score), dimensions)
    return scores


def correlations(human: Sequence[float], judge: Sequence[float]) -> dict[str, Any]:
    """Pearson, Spearman and Kendall (tau-b) correlations of two paired lists, each with its p-value, and the
    count; below MIN_PAIRED pairs, or where one side is constant, the correlations are None with a note."""
    n = len(human)
    result: dict[str, Any] = {"n": n}
    if n < MIN_PAIRED:
        result.update({name: None for name in CORRELATIONS})
        result["note"] = f"correlations need at least {MIN_PAIRED} records rated by both"
        return result
    if len(set(human)) < 2 or len(set(judge)) < 2:
        result.update({name: None for name in CORRELATIONS})
        side = "the person" if len(set(human)) < 2 else "the judge"
        result["note"] = f"undefined: {side} gave every record the same score"
        return result
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns of ties and small samples; the count is reported
        found = {
            "pearson": stats.pearsonr(human, judge),
            "spearman": stats.spearmanr(human, judge),
            "kendall": stats.kendalltau(human, judge),
        }
    for name, outcome in found.items():
        value, p_value = float(outcome[0]), float(outcome[1])
        result[name] = value if math.isfinite(value) else None
        result[f"{name}_p"] = p_value if math.isfinite(p_value) else None
    return result


def agreement(ratings: HumanRatings, judge: Mapping[int, JudgeScore]) -> dict[str, Any]:
    """Per figure (`overall`: the human overall against the judge's score; each dimension where the judge rated
    dimensions), the correlations over the records both scored."""
    both = sorted(index for index in ratings.ratings if index in judge)
    found = {OVERALL: correlations([ratings.overall(i) for i in both], [judge[i].score for i in both])}
    with_dimensions = [i for i in both if judge[i].dimensions]
    if with_dimensions:
        for name in DIMENSIONS:
            human = [float(ratings.ratings[i][name]) for i in with_dimensions]
            found[name] = correlations(human, [float(judge[i].dimensions[name]) for i in with_dimensions])
    return found


def ratings_summary(
    ratings: HumanRatings,
    n_records: int,
    judge: Mapping[int, JudgeScore] | None = None,
    bootstrap: "BootstrapSettings | None" = None,
) -> dict[str, Any]:
    """The rated count, each dimension's mean and the human overall with their 95% bootstrap intervals over the
    rated records, and the agreement with the judge where it scored some of them."""
    from sft.evaluation.bootstrap import BootstrapSettings, mean_interval

    bootstrap = bootstrap or BootstrapSettings()
    rated = sorted(ratings.ratings)
    means, intervals = {}, {}
    for name in (*DIMENSIONS, OVERALL):
        values = [ratings.overall(i) if name == OVERALL else float(ratings.ratings[i][name]) for i in rated]
        means[name] = sum(values) / len(values) if values else None
        intervals[name] = mean_interval(values, bootstrap)
    summary: dict[str, Any] = {
        "file": ratings.path.name,
        "responses": ratings.responses,
        "rated": len(rated),
        "n": n_records,
        "means": means,
        "intervals": intervals,
        "bootstrap": bootstrap.record(),
    }
    if judge:
        summary["agreement"] = agreement(ratings, judge)
    return summary


def ratings_beside(
    responses_path: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    judge: Mapping[int, JudgeScore] | None = None,
    bootstrap: "BootstrapSettings | None" = None,
) -> dict[str, Any] | None:
    """`ratings_summary` of human_ratings.json beside a local responses file; None where there is none. Ratings
    of another file (their `responses` names another) give only a note that they were left out. `judge`
    defaults to the judge's scores found beside the file."""
    path = ratings_path(responses_path)
    if not path.is_file():
        return None
    ratings = read_human_ratings(path, len(records))
    name = Path(responses_path).name
    if Path(ratings.responses).name != name:  # a path where a file name is expected is read by its name
        return {
            "file": path.name,
            "responses": ratings.responses,
            "left_out": f"they rate {ratings.responses}, not {name}",
        }
    if judge is None:
        judge = judge_scores_beside(responses_path, records)
    return ratings_summary(ratings, len(records), judge, bootstrap)


# Showing them ----------------------------------------------------------------------------------------------


def figure_label(name: str) -> str:
    return "overall (mean of 4)" if name == OVERALL else name


def number(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def interval(values: Any) -> str:
    return f"[{values[0]:.2f}, {values[1]:.2f}]" if isinstance(values, (list, tuple)) and len(values) == 2 else "–"


def agreement_rows(summary: Mapping[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for name, found in (summary.get("agreement") or {}).items():
        cells = [number(found.get(kind), 4) for kind in CORRELATIONS]
        rows.append((f"{figure_label(name)}", str(found["n"]), *cells, found.get("note", "")))
    return rows


def format_ratings(summary: Mapping[str, Any]) -> str:
    """Console lines: the rated count, each dimension's mean with its interval, and the judge's agreement."""
    from sft.evaluation.report import aligned

    if summary.get("left_out"):
        return f"human ratings: {summary['file']} left out: {summary['left_out']}"
    lines = [f"human ratings ({summary['file']}): {summary['rated']} of {summary['n']} records rated, 1-5"]
    rows = [(f"  {figure_label(name)}", number(mean), interval(summary["intervals"][name]))
            for name, mean in summary["means"].items()]  # fmt: skip
    lines += aligned(rows, (False, True, False))
    rows = agreement_rows(summary)
    if rows:
        lines.append("agreement of the human ratings with the judge (records rated by both):")
        header = ("  human vs judge", "records", *(LABELS[kind] for kind in CORRELATIONS), "")
        lines += aligned([header, *((f"  {row[0]}", *row[1:]) for row in rows)], (False, True, True, True, True, False))
    elif "agreement" not in summary:
        lines.append("no judge scores beside the file (judgements.json), so no agreement to report")
    return "\n".join(lines)


def ratings_sections(summary: Mapping[str, Any]) -> list[str]:
    """report.md's section: the means with intervals, then the agreement table."""
    from sft.evaluation.report import markdown_table

    sections = ["## Human ratings"]
    if summary.get("left_out"):
        return [*sections, f"`{summary['file']}` was left out: {summary['left_out']}."]
    bootstrap = summary.get("bootstrap") or {}
    sections.append(
        f"`{summary['file']}`: {summary['rated']} of {summary['n']} records rated by a person, each dimension "
        f"from 1 to 5; overall is the mean of the four. 95% intervals: bootstrap over the rated records, "
        f"{bootstrap.get('resamples')} resamples, seed {bootstrap.get('seed')}."
    )
    rows = [
        (figure_label(name), number(mean), interval(summary["intervals"][name]))
        for name, mean in summary["means"].items()
    ]
    sections.append(markdown_table(("dimension", "mean", "95% interval"), rows))
    rows = agreement_rows(summary)
    if rows:
        sections.append(
            "Agreement with the judge over the records both scored: correlations of the human rating with the "
            "judge's score (overall: the human overall against the judge's 0-100 score)."
        )
        header = ("human vs judge", "records", *(LABELS[kind] for kind in CORRELATIONS), "note")
        sections.append(markdown_table(header, rows))
    return sections
