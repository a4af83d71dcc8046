"""Metrics against values worked out by hand, tokens for every script, and normalised exact match."""

import math
import unicodedata

import pytest

from sft.evaluation.metrics import load_metric, metric_path, score_responses
from sft.evaluation.metrics.text import ScriptAwareTokenizer, bleu_tokenizer, normalize


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
    assert normalize("ΟΔΟΣ Straße！") == normalize("οδος strasse") == "οδοσ strasse"


def test_tokenizer_keeps_latin_words_stemmed_beside_cjk():
    assert ScriptAwareTokenizer().tokenize("Running 早上好 dogs! 2024年") == [
        "run",
        "早",
        "上",
        "好",
        "dog",
        "2024",
        "年",
    ]


# Varied English (ASCII) text: the tokens must be exactly rouge-score's, so English scores do not move.
ASCII_SENTENCES = [
    "The quick brown foxes, jumping over 2 lazy dogs.",
    "It's 5 o'clock; don't you think we're late?",
    "State-of-the-art models were trained on 1,000,000 examples in the 1990s.",
    "RUNNING Runs ran runner's running",
    "snake_case and camelCase and kebab-case identifiers",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=2.",
    "    leading and trailing whitespace\t\n  ",
    "Tabs\tand\nnewlines\r\nbetween words",
    "A B C d e f 1 2 3",
    "Generalization, generalizations, generalized, generalizing.",
    "The cat sat on the mat.",
    "x = (a + b) * c / d - e ^ f % g",
    "def tokenize(text): return text.split()",
    "3.14159 is pi; 2.71828 is e; 10^6 is a million.",
    "Mr. and Mrs. Smith went to Washington, D.C., on Jan. 5th.",
    "Hello!!! Are you there??? Yes... I am.",
    "The U.S.A. and the U.K. signed the treaty in 1945.",
    "connection connections connective connected connecting",
    "Happiness, happier, happiest; flies, flying, flew.",
    "An apple a day keeps the doctor away.",
    "Is it 9am or 9 a.m.? #hashtag @mention $100 50% [brackets] {braces} <angle>",
    "a",
    "",
    "...",
    "Name the capital of France: Paris.",
    "Rewrite the sentence in passive voice: The chef cooked the meal.",
    "Convert 45 kilometers to meters: 45000 meters.",
    "The synonym of 'quick' is 'fast'.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Sorting algorithms: quicksort, mergesort, heapsort, and bubblesort.",
    "WORDS IN CAPITALS SHOULD BE LOWERED AND STEMMED",
    "agreed agreement agreeing agree; ponies caresses cats",
    "I'm sure they'll've finished by 10:30pm -- probably.",
    "Version 2.0.1-beta was released on 2023-07-15T12:00:00Z.",
    "The ratio is 3:1, i.e. three to one (approximately).",
]


@pytest.mark.parametrize("text", ASCII_SENTENCES)
def test_tokenizer_equals_rouge_score_on_ascii_text(text):
    from nltk.stem import porter
    from rouge_score import tokenize as rouge_tokenize

    assert ScriptAwareTokenizer().tokenize(text) == rouge_tokenize.tokenize(text, porter.PorterStemmer())
    assert ScriptAwareTokenizer(use_stemmer=False).tokenize(text) == rouge_tokenize.tokenize(text, None)


def test_tokenizer_keeps_thai_marks_on_their_consonants():
    # กิน "eat": vowel sign ิ (a combining mark) stays on ก; นี้ keeps both its vowel and tone marks.
    assert ScriptAwareTokenizer().tokenize("กิน") == ["กิ", "น"]
    assert ScriptAwareTokenizer().tokenize("วันนี้") == ["วั", "น", "นี้"]
    tokens = ScriptAwareTokenizer().tokenize("วันนี้อากาศดีมาก เราจึงจะไปเดินเล่นที่สวนสาธารณะ")
    assert "".join(tokens) == "วันนี้อากาศดีมากเราจึงจะไปเดินเล่นที่สวนสาธารณะ"  # nothing dropped
    assert not any(unicodedata.category(token[0]).startswith("M") for token in tokens)


def test_tokenizer_keeps_indic_signs_and_stacked_consonants():
    # Devanagari vowel signs and virama are part of the word; a Khmer coeng keeps its subscript consonant.
    assert ScriptAwareTokenizer().tokenize("हिन्दी में।") == ["हिन्दी", "में"]
    assert ScriptAwareTokenizer().tokenize("ខ្មែរ") == ["ខ្មែ", "រ"]


def test_tokenizer_on_mixed_english_and_russian():
    tokens = ScriptAwareTokenizer().tokenize("Running models: Я люблю машинное обучение, and Python!")
    assert tokens == ["run", "model", "я", "люблю", "машинное", "обучение", "and", "python"]


def test_tokenizer_folds_case_and_unicode_forms():
    tokenizer = ScriptAwareTokenizer()
    assert tokenizer.tokenize("ΟΔΟΣ Straße") == tokenizer.tokenize("οδος STRASSE")
    composed, decomposed = "Hôm nay trời đẹp", unicodedata.normalize("NFD", "Hôm nay trời đẹp")
    assert composed != decomposed
    assert tokenizer.tokenize(composed) == tokenizer.tokenize(decomposed) == ["hôm", "nay", "trời", "đẹp"]
    assert tokenizer.tokenize("ｶﾀｶﾅ") == tokenizer.tokenize("カタカナ") == ["カ", "タ", "カ", "ナ"]


def test_tokenizer_ignores_punctuation_symbols_and_emoji():
    tokenizer = ScriptAwareTokenizer()
    assert tokenizer.tokenize("❤️ 👨‍👩‍👧 «¡¿—…» € ™ ½") == ["1", "2"]  # NFKC: ½ is 1⁄2
    assert tokenizer.tokenize("مرحبا، عالم؟") == ["مرحبا", "عالم"]
    assert tokenizer.tokenize("می‌خواهیم") == ["می\u200cخواهیم"]  # the non-joiner is part of the Persian word


# A realistic sentence per script, and the same sentence with one word changed.
SCRIPTS = [
    (
        "English",
        "The weather is lovely today, so we are going for a walk in the park.",
        "The weather is lovely today, so we are going for a walk in the garden.",
    ),
    (
        "French",
        "Le médecin a conseillé à sa fille de prendre des vacances cet été.",
        "Le médecin a conseillé à sa fille de prendre des vacances cet hiver.",
    ),
    (
        "Vietnamese",
        "Hôm nay trời đẹp nên chúng tôi đi dạo trong công viên.",
        "Hôm nay trời đẹp nên chúng tôi đi dạo trong thành phố.",
    ),
    (
        "Russian",
        "Сегодня хорошая погода, поэтому мы идём гулять в парк.",
        "Сегодня плохая погода, поэтому мы идём гулять в парк.",
    ),
    (
        "Ukrainian",
        "Сьогодні гарна погода, тому ми йдемо гуляти в парк.",
        "Сьогодні гарна погода, тому ми йдемо гуляти в місто.",
    ),
    (
        "Greek",
        "Σήμερα ο καιρός είναι ωραίος, οπότε πηγαίνουμε βόλτα στο πάρκο.",
        "Σήμερα ο καιρός είναι ωραίος, οπότε πηγαίνουμε βόλτα στη θάλασσα.",
    ),
    (
        "Arabic",
        "الطقس جميل اليوم، لذلك سنذهب في نزهة إلى الحديقة.",
        "الطقس جميل اليوم، لذلك سنذهب في نزهة إلى البحر.",
    ),
    (
        "Persian",
        "امروز هوا خوب است، بنابراین می‌خواهیم در پارک قدم بزنیم.",
        "امروز هوا خوب است، بنابراین می‌خواهیم در ساحل قدم بزنیم.",
    ),
    (
        "Hebrew",
        "מזג האוויר נעים היום, ולכן אנחנו הולכים לטייל בפארק.",
        "מזג האוויר נעים היום, ולכן אנחנו הולכים לטייל בעיר.",
    ),
    (
        "Hindi",
        "आज मौसम बहुत अच्छा है, इसलिए हम पार्क में टहलने जा रहे हैं।",
        "आज मौसम बहुत खराब है, इसलिए हम पार्क में टहलने जा रहे हैं।",
    ),
    (
        "Bengali",
        "আজ আবহাওয়া খুব ভালো, তাই আমরা পার্কে হাঁটতে যাচ্ছি।",
        "আজ আবহাওয়া খুব ভালো, তাই আমরা বাজারে হাঁটতে যাচ্ছি।",
    ),
    (
        "Tamil",
        "இன்று வானிலை நன்றாக உள்ளது, எனவே நாங்கள் பூங்காவில் நடக்கப் போகிறோம்.",
        "இன்று வானிலை நன்றாக உள்ளது, எனவே நாங்கள் கடற்கரையில் நடக்கப் போகிறோம்.",
    ),
    ("Thai", "วันนี้อากาศดีมาก เราจึงจะไปเดินเล่นที่สวนสาธารณะ", "วันนี้อากาศดีมาก เราจึงจะไปเดินเล่นที่ชายหาด"),
    ("Lao", "ມື້ນີ້ອາກາດດີ ພວກເຮົາຈະໄປຍ່າງຫຼິ້ນຢູ່ສວນສາທາລະນະ", "ມື້ນີ້ອາກາດດີ ພວກເຮົາຈະໄປຍ່າງຫຼິ້ນຢູ່ຕະຫຼາດ"),
    ("Khmer", "ថ្ងៃនេះអាកាសធាតុល្អណាស់ ដូច្នេះយើងទៅដើរលេងនៅសួនច្បារ។", "ថ្ងៃនេះអាកាសធាតុល្អណាស់ ដូច្នេះយើងទៅដើរលេងនៅផ្សារ។"),
    ("Myanmar", "ဒီနေ့ ရာသီဥတု သာယာလို့ ပန်းခြံမှာ လမ်းလျှောက်ကြမယ်။", "ဒီနေ့ ရာသီဥတု သာယာလို့ ကမ်းခြေမှာ လမ်းလျှောက်ကြမယ်။"),
    (
        "Georgian",
        "დღეს კარგი ამინდია, ამიტომ პარკში სასეირნოდ მივდივართ.",
        "დღეს ცუდი ამინდია, ამიტომ პარკში სასეირნოდ მივდივართ.",
    ),
    (
        "Armenian",
        "Այսօր եղանակը լավ է, ուստի մենք գնում ենք զբոսնելու այգում։",
        "Այսօր եղանակը վատ է, ուստի մենք գնում ենք զբոսնելու այգում։",
    ),
    ("Amharic", "ዛሬ የአየሩ ሁኔታ ጥሩ ስለሆነ በፓርኩ ውስጥ እንራመዳለን።", "ዛሬ የአየሩ ሁኔታ መጥፎ ስለሆነ በፓርኩ ውስጥ እንራመዳለን።"),
    ("Chinese", "今天天气很好，所以我们去公园散步。", "今天天气很好，所以我们去海边散步。"),
    ("Japanese", "今日は天気がいいので、公園を散歩します。", "今日は天気がいいので、海辺を散歩します。"),
    ("Korean", "오늘은 날씨가 좋아서 공원에 산책하러 갑니다.", "오늘은 날씨가 좋아서 바닷가에 산책하러 갑니다."),
]
SCRIPT_IDS = [name for name, _, _ in SCRIPTS]


@pytest.mark.parametrize(("script", "reference", "changed"), SCRIPTS, ids=SCRIPT_IDS)
def test_identical_response_scores_perfectly_in_every_script(script, reference, changed):
    scores = score_responses([reference], [reference])
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["exact_match"] == 1.0
    assert scores["bleu"] == pytest.approx(100.0)


@pytest.mark.parametrize(("script", "reference", "changed"), SCRIPTS, ids=SCRIPT_IDS)
def test_one_changed_word_scores_partially_in_every_script(script, reference, changed):
    assert changed != reference
    scores = score_responses([changed], [reference])
    assert 0.0 < scores["rouge_l"] < 1.0
    assert 0.0 < scores["bleu"] < 100.0
    assert scores["exact_match"] == 0.0


def test_scores_do_not_depend_on_unicode_form():
    reference = "Hôm nay trời đẹp nên chúng tôi đi dạo trong công viên."
    decomposed = unicodedata.normalize("NFD", reference)
    assert decomposed != reference
    scores = score_responses([decomposed], [reference])
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["exact_match"] == 1.0


@pytest.mark.parametrize("text", ["早上好，世界。", "今日は良い天気です", "안녕하세요 세계", "早上好 🌅"])
def test_identical_cjk_response_scores_perfectly(text):
    scores = score_responses([text], [text])
    assert scores["rouge_l"] == pytest.approx(1.0)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["exact_match"] == 1.0


def test_partial_cjk_overlap_counts_characters():
    # 我爱北京 / 我爱上海: 2 of 4 characters in common, in order.
    assert score_responses(["我爱北京"], ["我爱上海"])["rouge_l"] == pytest.approx(0.5)


def test_bleu_tokenizer_choice():
    assert bleu_tokenizer(["plain English", "more"]) == "13a"
    assert bleu_tokenizer(["Сегодня хорошая погода", "Καλημέρα", "مرحبا", "नमस्ते"]) == "13a"
    assert bleu_tokenizer(["早上好", "plain English"]) == "zh"
    assert bleu_tokenizer(["今日は良い天気です", "こんにちは"]) == "char"
    assert bleu_tokenizer(["안녕하세요", "감사합니다", "ok"]) == "char"
    assert bleu_tokenizer(["วันนี้อากาศดี", "ສະບາຍດີ", "ok"]) == "char"
    assert bleu_tokenizer(["សួស្តី", "မင်္ဂလာပါ"]) == "char"
    assert bleu_tokenizer(["วันนี้อากาศดี", "plain English", "more"]) == "13a"  # mostly English


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
