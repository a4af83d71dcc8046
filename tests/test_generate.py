"""Generation: response extraction, left padding, batched == one at a time, EOS reporting, the CLI."""

import pytest
import torch

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.commands import generate_command, make_generate_parser
from sft.inference.generate import (
    Generator,
    extract_response,
    generate_response,
    generate_responses,
    header_reached,
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
# A response with Markdown headings: the model must be free to write it, as training taught it to.
MARKDOWN = "Steps:\n### Step 1\nMix.\n### Step 2\nBake."
# Headers of another layout than Alpaca's, with no `#` in them.
CUSTOM = PromptTemplate(preamble="", instruction_header="User:", input_header="Context:", response_header="Assistant:")


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


def record_of_length(generator, length, letters="abcdefgh"):
    """A record whose prompt is exactly `length` tokens."""
    text = ""
    while len(generator.encode([{"instruction": "Summarise.", "input": text}])[0]) < length:
        text += letters[len(text) % len(letters)]
    assert len(generator.encode([{"instruction": "Summarise.", "input": text}])[0]) == length
    return {"instruction": "Summarise.", "input": text}


def test_batch_size_does_not_change_responses(noisy):
    model, tokenizer = noisy
    generator = Generator(model, tokenizer, PromptTemplate())
    near_limit = [
        record_of_length(generator, generator.limit - 20),
        record_of_length(generator, generator.limit - 20, "hgfedcba"),  # the same room as the one above
        record_of_length(generator, generator.limit - 41, "zyxw"),
    ]
    records = [RECORDS[0], near_limit[0], *RECORDS[1:3], near_limit[2], *RECORDS[3:], near_limit[1]]
    runs = {
        size: generate_responses(
            model, tokenizer, records, GenerationSettings(batch_size=size, max_new_tokens=64), progress=False
        )
        for size in (1, 8)
    }
    assert runs[1] == runs[8]
    assert len({r.text for r in runs[8]}) > 3  # the comparison is not between identical outputs
    # every record ran to its own room: 64 new tokens, or what the context leaves after a long prompt
    assert [r.new_tokens for r in runs[8]] == [64, 20, 64, 64, 41, 64, 64, 20]


def test_a_record_beside_a_long_prompt_gets_all_its_new_tokens(tiny):
    model, tokenizer = tiny  # the standard tiny model writes newlines to the token limit
    generator = Generator(model, tokenizer, PromptTemplate())
    records = [RECORDS[0], record_of_length(generator, generator.limit - 27), RECORDS[1]]
    results = generate_responses(
        model, tokenizer, records, GenerationSettings(batch_size=8, max_new_tokens=64), progress=False
    )
    assert [r.new_tokens for r in results] == [64, 27, 64]
    assert not any(r.ended_at_eos for r in results)


def test_a_prompt_that_fills_the_context_names_its_record(noisy, monkeypatch):
    model, tokenizer = noisy
    long_record = {"instruction": "word " * 600}
    tokens = len(Generator(model, tokenizer, PromptTemplate()).encode([long_record])[0])

    def not_called(*args, **kwargs):
        raise AssertionError("generation started before every prompt was checked")

    monkeypatch.setattr(model, "generate", not_called)
    with pytest.raises(SFTError) as error:
        generate_responses(model, tokenizer, [RECORDS[0], RECORDS[1], long_record], progress=False)
    message = str(error.value)
    assert message.startswith(f"record 2: its prompt of {tokens} tokens fills the model's context of 512 tokens")
    assert "\n" not in message
    with pytest.raises(SFTError, match=r"^record 0: .*\(2 more records do not fit either: 2, 3\)$"):
        generate_responses(model, tokenizer, [long_record, RECORDS[0], long_record, long_record], progress=False)


def test_markdown_headings_are_part_of_the_response():
    template = PromptTemplate()
    assert extract_response(MARKDOWN, template) == MARKDOWN
    assert extract_response(f"### Response:\n{MARKDOWN}\n", template) == MARKDOWN
    assert not header_reached(MARKDOWN, template)
    for header in ("### Instruction:", "### Input:", "### Response:"):
        following = f"{MARKDOWN}\n\n{header}\nNext task"
        assert extract_response(following, template) == MARKDOWN
        assert header_reached(following, template)
    assert extract_response("Use ### Instruction: inside a line", template) == "Use ### Instruction: inside a line"


def test_headers_come_from_the_template():
    assert extract_response(f"Assistant: {MARKDOWN}\n### Instruction:\nMore", CUSTOM) == (
        f"{MARKDOWN}\n### Instruction:\nMore"
    )
    assert extract_response(f"{MARKDOWN}\nUser: next question", CUSTOM) == MARKDOWN
    assert extract_response(f"{MARKDOWN}\nContext: more", CUSTOM) == MARKDOWN
    assert header_reached("Paris\nAssistant: again", CUSTOM)
    assert not header_reached("Paris\n### Instruction:\n", CUSTOM)
    assert not header_reached("Assistant", CUSTOM)  # may still be an echoed response header


def first_stop(tokenizer, template, text):
    """The number of tokens of `text` after which `stop_at_header` stops the row, if it does."""
    criterion = stop_at_header(tokenizer, template, 3)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for step in range(1, len(ids) + 1):
        if criterion(torch.tensor([[7, 7, 7] + ids[:step]]), None).item():
            return tokenizer.decode(ids[:step])
    return None


def test_stop_at_header_lets_markdown_through(tiny):
    tokenizer = tiny[1]
    assert first_stop(tokenizer, PromptTemplate(), MARKDOWN) is None
    assert first_stop(tokenizer, PromptTemplate(), f"{MARKDOWN}\n\n### Instruction:\nMore") == (
        f"{MARKDOWN}\n\n### Instruction:"
    )
    assert first_stop(tokenizer, CUSTOM, f"{MARKDOWN}\n### Instruction:\nMore") is None
    assert first_stop(tokenizer, CUSTOM, f"{MARKDOWN}\nUser: more") == f"{MARKDOWN}\nUser:"


def scripted(tokenizer, text):
    """A stand-in for `model.generate` that writes `text` (then EOS) in every row, a token a step, and
    honours the stopping criteria and streamer as transformers does."""
    script = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def generate(input_ids, max_new_tokens, stopping_criteria, pad_token_id, streamer=None, **kwargs):
        ids, done = input_ids, torch.zeros(input_ids.shape[0], dtype=torch.bool)
        if streamer is not None:
            streamer.put(ids[0])
        for token in script[:max_new_tokens]:
            step = torch.where(done, pad_token_id, token)
            ids = torch.cat([ids, step[:, None]], dim=1)
            if streamer is not None:
                streamer.put(step)
            done |= step == tokenizer.eos_token_id
            for criterion in stopping_criteria:
                done |= criterion(ids, None)
            if done.all():
                break
        if streamer is not None:
            streamer.end()
        return ids

    return generate


@pytest.mark.parametrize("template", [PromptTemplate(), CUSTOM], ids=["alpaca", "custom"])
def test_a_markdown_answer_round_trip(tiny, monkeypatch, template):
    model, tokenizer = tiny
    monkeypatch.setattr(model, "generate", scripted(tokenizer, MARKDOWN))
    whole = generate_responses(model, tokenizer, RECORDS[:2], GenerationSettings(), template, progress=False)
    assert [(r.text, r.ended_at_eos) for r in whole] == [(MARKDOWN, True)] * 2
    assert generate_response(model, tokenizer, "Bake a cake.", template=template) == MARKDOWN
    monkeypatch.setattr(model, "generate", scripted(tokenizer, f"{MARKDOWN}\n\n{template.instruction_header}\nMore"))
    cut = generate_responses(model, tokenizer, RECORDS[:2], GenerationSettings(), template, progress=False)
    assert [(r.text, r.ended_at_eos) for r in cut] == [(MARKDOWN, False)] * 2
    script_length = len(tokenizer(f"{MARKDOWN}\n\n{template.instruction_header}", add_special_tokens=False).input_ids)
    assert all(r.new_tokens <= script_length for r in cut)  # stopped at the header, not at the token limit


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "sft-tiny-gpt2", "--instruction", "x", "--temperature", "nan"],
        ["generate", "sft-tiny-gpt2", "--instruction", "x", "--temperature", "inf"],
        ["generate", "sft-tiny-gpt2", "--instruction", "x", "--top-p", "nan"],
        ["chat", "sft-tiny-gpt2", "--temperature", "nan"],
        ["eval", "--model", "sft-tiny-gpt2", "--data", "missing.json", "--temperature", "inf"],
        ["compare", "--base", "sft-tiny-gpt2", "--model", "sft-tiny-gpt2", "--data", "x.json", "--top-p", "nan"],
    ],
    ids=["generate-temperature-nan", "generate-temperature-inf", "generate-top-p-nan", "chat", "eval", "compare"],
)
def test_non_finite_settings_are_refused_before_a_model_loads(command, monkeypatch, capsys):
    import sft.inference.generate
    import sft.models.load
    from sft.cli import main

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(sft.inference.generate, "load_for_inference", no_loading)
    monkeypatch.setattr(sft.models.load, "load_model", no_loading)
    assert main(command) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    option = "--temperature" if "--temperature" in command else "--top-p"
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0]
    assert "Loading" not in captured.out
