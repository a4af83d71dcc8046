"""Bootstrap intervals: a hand-checked case, the point estimate inside, BLEU statistics equal to sacrebleu's
corpus BLEU, paired deltas of identical models, reproducibility, speed, and the compare summary."""

import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import sacrebleu

from sft.evaluation.bootstrap import (
    BootstrapSettings,
    bleu_from_statistics,
    bleu_statistics,
    figure_intervals,
    paired_change_intervals,
    percentile_interval,
    resample_indices,
)
from sft.evaluation.compare import wins_ties_losses
from sft.evaluation.metrics import score_responses
from sft.evaluation.score import score_records

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "hat", "big", "small", "red", "blue", "slowly"]


def sentences(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(n)]


def noisy_copies(rng: random.Random, references: list[str]) -> list[str]:
    """Responses that share some words with their reference."""
    return [" ".join(w if rng.random() < 0.6 else rng.choice(WORDS) for w in ref.split()) for ref in references]


def test_hand_checked_percentiles():
    # Seed 0 draws these 4 resamples of 4 records (numpy's PCG64 stream, the same on every machine):
    indices = resample_indices(4, BootstrapSettings(resamples=4, seed=0))
    assert indices.tolist() == [[3, 2, 2, 1], [1, 0, 0, 0], [0, 3, 2, 3], [2, 2, 3, 2]]
    # With values 0, 0.25, 0.5, 1 the resample means are 2.25/4, 0.25/4, 2.5/4, 2.5/4; sorted:
    # 0.0625, 0.5625, 0.625, 0.625. The 2.5th percentile sits at rank 0.025 * 3 = 0.075:
    # 0.0625 + 0.075 * (0.5625 - 0.0625) = 0.1; the 97.5th at rank 2.925, between 0.625 and 0.625.
    per_record = [{"rouge_l": v} for v in (0.0, 0.25, 0.5, 1.0)]
    intervals = figure_intervals(per_record, ["a"] * 4, ["a"] * 4, settings=BootstrapSettings(resamples=4, seed=0))
    assert intervals["rouge_l_ci"] == pytest.approx([0.1, 0.625], abs=1e-12)
    assert intervals["bootstrap"] == {"resamples": 4, "seed": 0, "confidence": 0.95}


def test_percentiles_agree_with_a_plain_sort():
    rng = np.random.default_rng(5)
    values = rng.random(1000)
    ordered = sorted(values)
    # Linear interpolation between order statistics at rank p * (N - 1).
    expected = [ordered[24] + 0.975 * (ordered[25] - ordered[24]), ordered[974] + 0.025 * (ordered[975] - ordered[974])]
    assert percentile_interval(values) == pytest.approx(expected, abs=1e-12)


def test_equal_values_give_a_zero_width_interval_at_the_value():
    per_record = [{"rouge_l": 0.25, "exact_match": 1.0, "exact_match_normalized": 0.0} for _ in range(9)]
    intervals = figure_intervals(per_record, ["the cat sat on the mat"] * 9, ["the cat sat on the mat"] * 9)
    assert intervals["rouge_l_ci"] == [0.25, 0.25]
    assert intervals["exact_match_ci"] == [1.0, 1.0]
    assert intervals["exact_match_normalized_ci"] == [0.0, 0.0]
    assert intervals["bleu_ci"] == pytest.approx([100.0, 100.0])


def test_one_record_gives_its_own_values():
    scores = score_records([{"output": "the cat sat", "model_response": "the cat sat down"}])
    assert scores["rouge_l_ci"] == pytest.approx([scores["rouge_l"]] * 2)
    assert scores["bleu_ci"] == pytest.approx([scores["bleu"]] * 2)


@pytest.mark.parametrize("seed", range(6))
def test_the_interval_holds_the_point_estimate(seed):
    rng = random.Random(seed)
    references = sentences(rng, rng.randint(5, 60))
    predictions = noisy_copies(rng, references)
    for i in rng.sample(range(len(predictions)), len(predictions) // 5):
        predictions[i] = references[i]  # some exact matches
    scores = score_records([{"output": r, "model_response": p} for r, p in zip(references, predictions)])
    for key in ("rouge_l", "bleu", "exact_match", "exact_match_normalized"):
        low, high = scores[f"{key}_ci"]
        assert low - 1e-9 <= scores[key] <= high + 1e-9, (key, low, scores[key], high)
        assert low < high or key.startswith("exact")


@pytest.mark.parametrize(
    ("predictions", "references"),
    [
        (["the cat sat on the mat", "a dog", ""], ["the cat was on the mat", "the dog ran", "hello there"]),
        (["我爱北京天安门", "good morning"], ["我爱上海", "good morning to you"]),  # zh tokenizer
        (["こんにちは世界", "ありがとう"], ["こんにちは", "ありがとうございます"]),  # char tokenizer
        (["cafe\u0301 au lait ."], ["café au lait ."]),  # decomposed accent: NFC first, as the metric does
    ],
)
def test_summed_statistics_give_sacrebleu_corpus_bleu(predictions, references):
    scores = score_responses(predictions, references)
    stats = bleu_statistics(predictions, references, scores["bleu_tokenize"])
    assert stats.shape == (len(predictions), 10)
    full = bleu_from_statistics(stats.sum(axis=0))[0]
    assert full == scores["bleu"]  # exactly the metric module's corpus BLEU
    import unicodedata

    nfc = [unicodedata.normalize("NFC", t) for t in predictions], [unicodedata.normalize("NFC", t) for t in references]
    assert full == sacrebleu.corpus_bleu(nfc[0], [nfc[1]], tokenize=scores["bleu_tokenize"]).score


def test_summed_statistics_on_random_corpora():
    rng = random.Random(11)
    for _ in range(5):
        references = sentences(rng, 40)
        predictions = noisy_copies(rng, references)
        stats = bleu_statistics(predictions, references)
        assert bleu_from_statistics(stats.sum(axis=0))[0] == sacrebleu.corpus_bleu(predictions, [references]).score
        # A resample's BLEU is the corpus BLEU of the resampled records.
        chosen = rng.choices(range(40), k=40)
        expected = sacrebleu.corpus_bleu([predictions[i] for i in chosen], [[references[i] for i in chosen]]).score
        assert bleu_from_statistics(stats[chosen].sum(axis=0))[0] == pytest.approx(expected, abs=1e-9)


def per_record_of(predictions, references):
    return score_responses(predictions, references)["per_record"]


def test_identical_models_give_zero_width_changes_within_noise():
    from sft.evaluation.compare import paired_changes
    from sft.evaluation.evaluate import Evaluation

    rng = random.Random(2)
    references = sentences(rng, 30)
    predictions = noisy_copies(rng, references)
    records = [{"output": r} for r in references]
    scores = score_responses(predictions, references)
    for entry in scores["per_record"]:
        entry["ended_at_eos"] = entry["index"] % 3 == 0
    metrics = {"per_record": scores["per_record"], "bleu_tokenize": scores["bleu_tokenize"]}
    evaluation = Evaluation(metrics, [{"model_response": p} for p in predictions])
    changes = paired_changes(records, evaluation, evaluation)
    keys = {"rouge_l", "bleu", "exact_match", "exact_match_normalized", "ended_at_eos"}
    assert set(changes["change_ci"]) == set(changes["within_noise"]) == set(changes["wins_ties_losses"]) == keys
    assert all(interval == [0.0, 0.0] for interval in changes["change_ci"].values())
    assert all(changes["within_noise"].values())
    assert all(counts == {"wins": 0, "ties": 30, "losses": 0} for counts in changes["wins_ties_losses"].values())


def test_a_clear_gain_is_outside_noise_and_paired_is_narrower():
    rng = random.Random(4)
    references = sentences(rng, 80)
    base_predictions = noisy_copies(rng, references)
    better = [ref if i % 2 else pred for i, (ref, pred) in enumerate(zip(references, base_predictions))]
    base, model = per_record_of(base_predictions, references), per_record_of(better, references)
    stats = bleu_statistics(base_predictions, references), bleu_statistics(better, references)
    changes = paired_change_intervals(base, model, *stats)
    for key in ("rouge_l", "bleu", "exact_match"):
        assert changes[key][0] > 0, key
    # Pairing removes the records' shared difficulty: narrower than the two separate intervals together.
    base_ci = figure_intervals(base, base_predictions, references)["rouge_l_ci"]
    model_ci = figure_intervals(model, better, references)["rouge_l_ci"]
    separate = (base_ci[1] - base_ci[0]) + (model_ci[1] - model_ci[0])
    assert changes["rouge_l"][1] - changes["rouge_l"][0] < separate


def test_wins_ties_losses():
    assert wins_ties_losses([0.5, 0.5, 0.2, 1.0], [0.7, 0.5, 0.1, 1.0 + 1e-12]) == {"wins": 1, "ties": 2, "losses": 1}
    assert wins_ties_losses([False, True], [True, True]) == {"wins": 1, "ties": 1, "losses": 0}


def test_depends_only_on_the_data_and_the_seed():
    rng = random.Random(8)
    references = sentences(rng, 25)
    predictions = noisy_copies(rng, references)
    records = [{"output": r, "model_response": p} for r, p in zip(references, predictions)]
    first = score_records(records)
    # Other random state, other call paths: the same intervals.
    np.random.seed(123)
    random.seed(456)
    np.random.random(10)
    again = score_records(records)
    direct = figure_intervals(first["per_record"], predictions, references, first["bleu_tokenize"])
    keys = ("rouge_l_ci", "bleu_ci", "exact_match_ci", "exact_match_normalized_ci", "bootstrap")
    for key in keys:
        assert first[key] == again[key] == direct[key], key
    # Another process, another hash seed: the same intervals.
    code = (
        "import json, sys\n"
        "from sft.evaluation.score import score_records\n"
        "s = score_records(json.load(sys.stdin))\n"
        f"print(json.dumps({{k: s[k] for k in {keys!r}}}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "99"}
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(records), capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {key: first[key] for key in keys}
    # The seed does matter, the resample count too; the figures do not move.
    other = score_records(records, bootstrap=BootstrapSettings(seed=1))
    assert other["rouge_l_ci"] != first["rouge_l_ci"] and other["rouge_l"] == first["rouge_l"]
    assert other["bootstrap"]["seed"] == 1


def test_no_records():
    scores = score_records([])
    assert scores["n"] == 0 and scores["rouge_l_ci"] is None and scores["bleu_ci"] is None


def test_settings_are_checked():
    with pytest.raises(ValueError):
        BootstrapSettings(resamples=0)


def test_a_thousand_resamples_of_110_records_are_fast():
    rng = random.Random(3)
    references = sentences(rng, 110)
    predictions = noisy_copies(rng, references)
    per_record = per_record_of(predictions, references)
    for entry in per_record:
        entry["ended_at_eos"] = True
    started = time.perf_counter()
    figure_intervals(per_record, predictions, references)  # every figure, BLEU statistics included
    stats = bleu_statistics(predictions, references)
    paired_change_intervals(per_record, per_record, stats, stats)
    assert time.perf_counter() - started < 1.0
