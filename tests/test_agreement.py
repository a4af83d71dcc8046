"""Human ratings (human_ratings.json) and their agreement with the judge: the reader, the figures checked by hand
and against scipy, and the one-line errors of a malformed file."""

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from sft.errors import SFTError
from sft.evaluation.agreement import (
    HumanRatings,
    JudgeScore,
    agreement,
    correlations,
    format_ratings,
    judge_scores_beside,
    ratings_beside,
    ratings_sections,
    ratings_summary,
    read_human_ratings,
)
from sft.paths import HUMAN_RATINGS_FILE


def rating(index: int, *values: int) -> dict:
    relevance, accuracy, fluency, completeness = values if len(values) == 4 else values * 4
    return {"index": index, "relevance": relevance, "accuracy": accuracy, "fluency": fluency,
            "completeness": completeness}  # fmt: skip


def ratings_of(*entries: dict) -> HumanRatings:
    ratings = {entry["index"]: {k: v for k, v in entry.items() if k != "index"} for entry in entries}
    return HumanRatings(Path(HUMAN_RATINGS_FILE), "responses.json", ratings)


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / HUMAN_RATINGS_FILE
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_perfectly_monotone_and_linear_agree_fully() -> None:
    found = correlations([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0])
    assert found["n"] == 4
    assert found["pearson"] == pytest.approx(1.0) and found["spearman"] == pytest.approx(1.0)
    assert found["kendall"] == pytest.approx(1.0)
    # Monotone but not linear: the ranks agree fully, Pearson less than 1 (as scipy and the formula say).
    human, judge = [1.0, 2.0, 3.0, 5.0], [10.0, 20.0, 30.0, 40.0]
    found = correlations(human, judge)
    assert found["spearman"] == pytest.approx(1.0) and found["kendall"] == pytest.approx(1.0)
    mh, mj = sum(human) / 4, sum(judge) / 4
    by_hand = sum((h - mh) * (j - mj) for h, j in zip(human, judge)) / math.sqrt(
        sum((h - mh) ** 2 for h in human) * sum((j - mj) ** 2 for j in judge)
    )
    assert found["pearson"] == pytest.approx(by_hand) == pytest.approx(stats.pearsonr(human, judge)[0])
    assert 0.95 < found["pearson"] < 1
    assert found["pearson_p"] == pytest.approx(stats.pearsonr(human, judge)[1])
    reversed_ = correlations(human, judge[::-1])
    assert reversed_["spearman"] == pytest.approx(-1.0) and reversed_["kendall"] == pytest.approx(-1.0)


def test_one_swap_in_three_by_hand() -> None:
    """Pairs (1,2) and (1,3) concordant, (2,3) discordant: Kendall (2 - 1) / 3; ranks differ by 0, 1, 1:
    Spearman 1 - 6 * 2 / (3 * 8) = 0.5."""
    human, judge = [1.0, 2.0, 3.0], [1.0, 3.0, 2.0]
    found = correlations(human, judge)
    assert found["kendall"] == pytest.approx(1 / 3) and found["spearman"] == pytest.approx(0.5)
    assert found["pearson"] == pytest.approx(0.5)  # centred (-1, 0, 1) and (-1, 1, 0): 1 / 2
    assert found["kendall"] == pytest.approx(stats.kendalltau(human, judge)[0])
    assert found["spearman"] == pytest.approx(stats.spearmanr(human, judge)[0])


def test_too_few_or_constant_scores_leave_correlations_undefined() -> None:
    few = correlations([1.0, 2.0], [3.0, 4.0])
    assert few["n"] == 2 and few["pearson"] is None and "at least 3" in few["note"]
    flat = correlations([3.0, 3.0, 3.0], [10.0, 20.0, 30.0])
    assert flat["kendall"] is None and "the person gave every record the same score" in flat["note"]


def test_summary_overall_and_per_dimension_agreement() -> None:
    ratings = ratings_of(
        {"index": 0, "relevance": 1, "accuracy": 1, "fluency": 2, "completeness": 2},
        {"index": 2, "relevance": 3, "accuracy": 2, "fluency": 4, "completeness": 3},
        {"index": 3, "relevance": 5, "accuracy": 5, "fluency": 5, "completeness": 5},
        {"index": 4, "relevance": 4, "accuracy": 4, "fluency": 4, "completeness": 4},
    )
    assert ratings.overall(0) == 1.5 and ratings.overall(2) == 3.0
    dims = {"relevance": 1, "accuracy": 2, "fluency": 2, "completeness": 1}
    judge = {0: JudgeScore(10, dims), 2: JudgeScore(50, {**dims, "relevance": 3}), 3: JudgeScore(95, dims)}
    judge[1] = JudgeScore(40, dims)  # not rated by the person: left out
    summary = ratings_summary(ratings, 6, judge)
    assert (summary["rated"], summary["n"]) == (4, 6)
    assert summary["means"]["relevance"] == pytest.approx(13 / 4)
    assert summary["means"]["overall"] == pytest.approx((1.5 + 3 + 5 + 4) / 4)
    low, high = summary["intervals"]["overall"]
    assert 1.5 <= low <= summary["means"]["overall"] <= high <= 5
    overall = summary["agreement"]["overall"]
    assert overall["n"] == 3 and overall["spearman"] == pytest.approx(1.0) and overall["kendall"] == pytest.approx(1.0)
    human, scores = [1.5, 3.0, 5.0], [10, 50, 95]
    assert overall["pearson"] == pytest.approx(stats.pearsonr(human, scores)[0])
    # relevance: human 1, 3, 5 against the judge's 1, 3, 1; accuracy: the judge constant, so undefined.
    assert summary["agreement"]["relevance"]["pearson"] == pytest.approx(stats.pearsonr([1, 3, 5], [1, 3, 1])[0])
    assert summary["agreement"]["accuracy"]["pearson"] is None
    text = format_ratings(summary)
    assert "4 of 6 records rated" in text and "Spearman" in text and "at least" not in text
    assert "judge gave every record the same score" in text
    markdown = "\n\n".join(ratings_sections(summary))
    assert "## Human ratings" in markdown and "| overall (mean of 4) | 3 | " in markdown
    # No judge: only the means; a judge without dimensions: only the overall.
    assert "agreement" not in ratings_summary(ratings, 6, {})
    assert set(agreement(ratings, {0: JudgeScore(1), 2: JudgeScore(2), 3: JudgeScore(3)})) == {"overall"}


def test_reading_a_file_and_the_judge_beside_it(tmp_path: Path) -> None:
    data = {"responses": "responses.json", "ratings": [rating(1, 4, 3, 5, 2), {**rating(0, 2), "note": "short"}]}
    read = read_human_ratings(write(tmp_path, data), n_records=3)
    assert read.responses == "responses.json" and read.ratings == {
        1: {"relevance": 4, "accuracy": 3, "fluency": 5, "completeness": 2},
        0: {"relevance": 2, "accuracy": 2, "fluency": 2, "completeness": 2},
    }
    records = [{"instruction": "a", "output": "b", "model_response": "c", "judge_score": 70}, {}, {}]
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(records))
    assert judge_scores_beside(responses, records) == {0: JudgeScore(70.0, None)}
    judgements = [{"index": 0, "score": 20, "scored": True}, {"index": 1, "score": None, "scored": False}]
    (tmp_path / "judgements.json").write_text(json.dumps(judgements))
    assert judge_scores_beside(responses, records) == {0: JudgeScore(20.0, None)}  # judgements.json first
    summary = ratings_beside(responses, records)
    assert summary["rated"] == 2 and summary["agreement"]["overall"]["n"] == 1
    other = ratings_beside(tmp_path / "other.json", records)
    assert other == {"file": HUMAN_RATINGS_FILE, "responses": "responses.json", "left_out": other["left_out"]}
    assert other["left_out"] == "they rate responses.json, not other.json"
    assert ratings_beside(tmp_path / "sub" / "responses.json", records) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ([], "must hold a JSON object"),
        ({"ratings": []}, "`responses` must name the rated responses file"),
        ({"responses": "responses.json", "ratings": {}}, "`ratings` must be a list"),
        ({"responses": "responses.json", "ratings": [3]}, "ratings[0] must be an object"),
        ({"responses": "responses.json", "ratings": [{**rating(0, 3), "index": "0"}]}, "ratings[0]: `index` must be"),
        ({"responses": "responses.json", "ratings": [rating(0, 3), rating(9, 3)]}, "ratings[1]: `index` 9 is past"),
        ({"responses": "responses.json", "ratings": [rating(1, 3), rating(1, 4)]}, "ratings[1]: record 1 is rated"),
        (
            {"responses": "responses.json", "ratings": [rating(0, 3), rating(2, 3, 6, 3, 3)]},
            "ratings[1] (record 2): `accuracy` is 6, not a whole number from 1 to 5",
        ),
        (
            {"responses": "responses.json", "ratings": [{"index": 0, "relevance": 3, "accuracy": 3, "fluency": 3}]},
            "ratings[0] (record 0): `completeness` is missing",
        ),
        ({"responses": "responses.json", "ratings": [rating(0, 3, 3, 3.5, 3)]}, "`fluency` is 3.5"),
        ({"responses": "responses.json", "ratings": [rating(0, 3, "4", 3, 3)]}, '`accuracy` is "4"'),
        ({"responses": "responses.json", "ratings": [rating(0, True, 3, 3, 3)]}, "`relevance` is true"),
    ],
)
def test_a_malformed_file_is_one_line_naming_it_and_the_entry(tmp_path: Path, data, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(SFTError) as raised:
        read_human_ratings(path, n_records=5)
    text = str(raised.value)
    assert "\n" not in text and str(path) in text and message in text, text
