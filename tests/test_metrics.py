"""Metrics against values worked out by hand, CJK handling, and normalised exact match."""

import math

import pytest

from sft.evaluation.metrics import load_metric, metric_path, score_responses
from sft.evaluation.metrics.text import CJKTokenizer, bleu_tokenizer, normalize


def test_metric_scripts_are_shipped_in_the_package():
    for name in ("rouge_l", "bleu", "exact_match"):
        assert metric_path(name).is_file()


def test_metrics_are_evaluate_modules_loaded_locally():
    import evaluate

    metric = load_metric("rouge_l")
    assert isinstance(metric, evaluate.Metric)
    assert load_metric("rouge_l") is metric  # loaded once per process


def test_rouge_l_lcs_by_hand():
    # LCS of "the cat sat on the mat" / "the cat was on the mat" is 5 of 6 tokens each side.
    scores = score_responses(["the cat sat on the mat"], ["the cat was on the mat"])
    assert scores["rouge_l"] == pytest.approx(5 / 6)


def test_rouge_l_stems_and_averages_over_records():
    scores = score_responses(["Running dogs!", "completely different"], ["run dog", "nothing alike here"])
    assert [r["rouge_l"] for r in scores["per_record"]] == [pytest.approx(1.0), pytest.approx(0.0)]
    assert scores["rouge_l"] == pytest.approx(0.5)


def test_corpus_bleu_by_hand():
    # n-gram precisions 4/5, 3/4, 2/3, 1/2 and equal lengths: BLEU = (0.2) ** (1/4).
    scores = score_responses(["the cat sat on mat"], ["the cat sat on hat"])
    assert scores["bleu"] == pytest.approx(100 * 0.2**0.25, abs=1e-6)
    assert scores["bleu_tokenize"] == "13a"


def test_bleu_brevity_penalty_by_hand():
    # Every n-gram matches; 4 of 6 reference tokens: brevity penalty exp(1 - 6/4).
    scores = score_responses(["a b c d"], ["a b c d e f"])
    assert scores["bleu"] == pytest.approx(100 * math.exp(-0.5), abs=1e-6)


def test_exact_match_strict_and_normalized():
    predictions = [" Paris \n", "paris.", "Hello   World!!", "Hello, world", "Yes"]
    references = ["Paris", "Paris", "hello world", "hello world", "No"]
    scores = score_responses(predictions, references)
    assert [r["exact_match"] for r in scores["per_record"]] == [1, 0, 0, 0, 0]
    assert [r["exact_match_normalized"] for r in scores["per_record"]] == [1, 1, 1, 0, 0]
    assert scores["exact_match"] == pytest.approx(0.2)
    assert scores["exact_match_normalized"] == pytest.approx(0.6)


def test_normalize():
    assert normalize("  The  Answer\tIS 42 .") == "the answer is 42"
    assert normalize("是的。") == "是的"
    assert normalize("e.g.") == "e.g"


@pytest.mark.parametrize("text", ["早上好，世界。", "今日は良い天気です", "안녕하세요 세계", "早上好 🌅"])
def test_identical_cjk_response_scores_perfectly(text):
    scores = score_responses([text], [text])
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["exact_match"] == 1.0


def test_partial_cjk_overlap_counts_characters():
    # 我爱北京 / 我爱上海: 2 of 4 characters in common, in order.
    assert score_responses(["我爱北京"], ["我爱上海"])["rouge_l"] == pytest.approx(0.5)


def test_cjk_tokenizer_keeps_latin_words_stemmed():
    assert CJKTokenizer().tokenize("Running 早上好 dogs!") == ["run", "早", "上", "好", "dog"]


def test_cjk_tokenizer_equals_rouge_score_on_latin_text():
    from rouge_score.tokenizers import DefaultTokenizer

    text = "The quick brown foxes, jumping over 2 lazy dogs; café naïve"
    assert CJKTokenizer().tokenize(text) == DefaultTokenizer(use_stemmer=True).tokenize(text)


def test_bleu_tokenizer_choice():
    assert bleu_tokenizer(["plain English", "more"]) == "13a"
    assert bleu_tokenizer(["早上好", "plain English"]) == "zh"
    assert bleu_tokenizer(["今日は良い天気です", "こんにちは"]) == "char"
    assert bleu_tokenizer(["안녕하세요", "감사합니다", "ok"]) == "char"


def test_per_record_and_counts():
    scores = score_responses(["a", "b", "c"], ["a", "x", "c"])
    assert scores["n"] == 3
    assert set(scores) >= {"rouge_l", "bleu", "exact_match", "exact_match_normalized", "n", "per_record"}
    assert [r["index"] for r in scores["per_record"]] == [0, 1, 2]
    assert set(scores["per_record"][0]) == {"index", "rouge_l", "bleu", "exact_match", "exact_match_normalized"}


def test_empty_and_mismatched_inputs():
    assert score_responses([], [])["n"] == 0
    with pytest.raises(ValueError):
        score_responses(["a"], [])
