"""Shared fixtures: tiny models and tokenizers built in the test session, small data, no network."""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each test session gets its own sft cache; the Hub is never contacted."""
    cache = tmp_path_factory.mktemp("sft-cache")
    os.environ["SFT_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return cache


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """GPT-2 style: byte-level BPE, no pad token of its own (pad becomes EOS)."""
    from sft.models.load import load_tokenizer

    return load_tokenizer("sft-tiny-gpt2")


@pytest.fixture(scope="session")
def llama_tokenizer():
    """Llama style: BOS prepended, `</s>` as EOS and pad."""
    from sft.models.load import load_tokenizer

    return load_tokenizer("sft-tiny-llama")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A two-layer GPT-2 shaped model directory, loadable by every command."""
    from sft.models.tiny import tiny_model_dir

    return tiny_model_dir("sft-tiny-gpt2")


@pytest.fixture
def alpaca_records() -> list[dict[str, str]]:
    return [
        {
            "instruction": "Rewrite the sentence in passive voice.",
            "input": "The cat chased the mouse.",
            "output": "The mouse was chased by the cat.",
        },
        {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
        {"instruction": "Translate to Chinese.", "input": "Good morning", "output": "早上好 🌅"},
        {"instruction": "Classify the sentiment.", "input": "I love it!", "output": "Positive"},
    ]


@pytest.fixture
def alpaca_file(tmp_path: Path, alpaca_records) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(alpaca_records, ensure_ascii=False), encoding="utf-8")
    return path
