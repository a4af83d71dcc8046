"""Generation: response extraction, left padding, batched == one at a time, EOS reporting, the CLI."""

import pytest
import torch

from sft.data.template import PromptTemplate
from sft.inference.commands import generate_command, make_generate_parser
from sft.inference.generate import (
    Generator,
    extract_response,
    generate_response,
    generate_responses,
    left_pad,
    stop_at_header,
)
from sft.inference.settings import GenerationSettings

RECORDS = [
    {"instruction": "What is the capital of France?", "input": ""},
    {"instruction": "Rewrite the sentence.", "input": "The quick brown fox jumps over the lazy dog."},
    {"instruction": "Classify"},
    {"instruction": "Translate to Chinese.", "input": "Good morning"},
    {"instruction": "Summarise: convert, rewrite, classify, translate, and then summarise it all."},
]


@pytest.fixture(scope="module")
def tiny():
    from sft.models.load import load_model, load_tokenizer

    return load_model("sft-tiny-gpt2", dtype=torch.float32), load_tokenizer("sft-tiny-gpt2")


@pytest.fixture(scope="module")
def noisy(tiny):
    """The tiny model with large random weights: greedy output varies with the prompt (the
    standard one emits only newlines), so comparisons between batchings mean something."""
    from sft.models.load import load_model

    model = load_model("sft-tiny-gpt2", dtype=torch.float32)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    return model, tiny[1]


@pytest.fixture(scope="module")
def eager_to_stop(tiny):
    """The tiny model rigged so that EOS always has the top logit: the final layer norm outputs
    the EOS embedding, which the tied output layer scores highest."""
    from sft.models.load import load_model

    model = load_model("sft-tiny-gpt2", dtype=torch.float32)
    eos = tiny[1].eos_token_id
    with torch.no_grad():
        embedding = model.transformer.wte.weight
        embedding[eos] = torch.randn(embedding.shape[1]) * 5
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(embedding[eos])
    return model, tiny[1]


def test_extract_response_drops_markers_and_following_blocks():
    template = PromptTemplate()
    assert extract_response("  Paris.  \n\n### Instruction:\nNext task", template) == "Paris."
    assert extract_response("### Response:\nParis\n", template) == "Paris"
    assert extract_response("Line one\nLine two\n\n", template) == "Line one\nLine two"
    assert extract_response("Price: 3 ### not a header", template) == "Price: 3 ### not a header"


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_finish_cuts_at_first_eos(tiny):
    tokenizer = tiny[1]
    eos = tokenizer.eos_token_id
    generator = Generator(tiny[0], tokenizer, PromptTemplate())
    words = tokenizer("Paris is", add_special_tokens=False)["input_ids"]
    ended = generator.finish(words + [eos, eos, eos])
    assert (ended.text, ended.new_tokens, ended.ended_at_eos) == ("Paris is", len(words), True)
    cut = generator.finish(words)
    assert (cut.text, cut.new_tokens, cut.ended_at_eos) == ("Paris is", len(words), False)


def test_a_row_stopped_at_a_header_did_not_end_at_eos(tiny):
    tokenizer = tiny[1]
    eos = tokenizer.eos_token_id
    words = tokenizer("Paris\n\n### Instruction:\n", add_special_tokens=False)["input_ids"]
    padded = Generator(tiny[0], tokenizer, PromptTemplate()).finish(words + [eos, eos])  # pad is EOS here
    assert (padded.text, padded.ended_at_eos) == ("Paris", False)


def test_stop_at_header_stops_rows_that_start_a_new_block(tiny):
    tokenizer = tiny[1]
    criterion = stop_at_header(tokenizer, PromptTemplate(), 3)

    def first_stop(text):
        """The number of generated tokens after which the criterion stops the row, if it does."""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for step in range(1, len(ids) + 1):
            if criterion(torch.tensor([[7, 7, 7] + ids[:step]]), None).item():
                return step
        return None

    assert first_stop("Paris is the capital.") is None
    assert first_stop("### Response:\nParis") is None  # an echoed response header is not a new block
    assert first_stop("Use # signs and ## marks") is None
    header = "Paris\n\n### Instruction:\nName a city."
    steps = first_stop(header)
    assert steps is not None
    assert tokenizer.decode(tokenizer(header, add_special_tokens=False)["input_ids"][:steps]).startswith("Paris\n\n###")


def test_generate_response_returns_only_the_response(noisy):
    model, tokenizer = noisy
    text = generate_response(model, tokenizer, "What is the capital of France?", max_new_tokens=24)
    assert isinstance(text, str) and text
    assert text == text.strip()
    assert "###" not in text and "Below is an instruction" not in text


def test_batched_equals_one_at_a_time(noisy):
    model, tokenizer = noisy
    tokenizer.padding_side = "right"  # generation pads on the left whatever the tokenizer says
    batched = generate_responses(
        model, tokenizer, RECORDS, GenerationSettings(batch_size=3, max_new_tokens=16), progress=False
    )
    single = [
        generate_responses(model, tokenizer, [r], GenerationSettings(batch_size=1, max_new_tokens=16), progress=False)[
            0
        ]
        for r in RECORDS
    ]
    assert batched == single
    assert len({r.text for r in batched}) > 1  # the comparison is not between identical outputs


def test_results_keep_record_order(noisy):
    model, tokenizer = noisy
    forward = generate_responses(
        model, tokenizer, RECORDS, GenerationSettings(batch_size=2, max_new_tokens=8), progress=False
    )
    backward = generate_responses(
        model, tokenizer, RECORDS[::-1], GenerationSettings(batch_size=2, max_new_tokens=8), progress=False
    )
    assert forward == backward[::-1]


def test_ended_at_eos_is_reported(noisy, eager_to_stop):
    stopped = generate_responses(
        *eager_to_stop, RECORDS, GenerationSettings(batch_size=2, max_new_tokens=8), progress=False
    )
    assert all(r.ended_at_eos and r.new_tokens == 0 for r in stopped)
    running = generate_responses(*noisy, RECORDS, GenerationSettings(batch_size=2, max_new_tokens=5), progress=False)
    assert all(not r.ended_at_eos and r.new_tokens == 5 for r in running)


def test_sampling_is_reproducible_with_a_seed(noisy):
    model, tokenizer = noisy
    first = generate_responses(
        model,
        tokenizer,
        RECORDS,
        GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7),
        progress=False,
    )
    again = generate_responses(
        model,
        tokenizer,
        RECORDS,
        GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7),
        progress=False,
    )
    assert first == again


def test_rejects_bad_settings(noisy):
    from sft.errors import SFTError

    with pytest.raises(SFTError):
        generate_responses(*noisy, RECORDS, GenerationSettings(temperature=-1), progress=False)
    assert generate_responses(*noisy, [], progress=False) == []


def test_training_mode_is_restored(noisy):
    model, tokenizer = noisy
    model.train()
    generate_responses(model, tokenizer, RECORDS[:1], GenerationSettings(max_new_tokens=2), progress=False)
    assert model.training
    model.eval()


def test_a_prompt_longer_than_the_context_is_a_clear_error(noisy):
    from sft.errors import SFTError

    with pytest.raises(SFTError, match="context"):
        generate_responses(*noisy, [{"instruction": "word " * 600}], progress=False)


def test_cli_prints_one_response(tiny_model_dir, capsys):
    assert generate_command([str(tiny_model_dir), "--instruction", "Name a colour.", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_cli_help():
    with pytest.raises(SystemExit) as exit_info:
        make_generate_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
