"""`sft chat`: streamed responses equal generate_response's, bad input and errors survive, clean exits."""

import os
import signal
import sys
from pathlib import Path

import pexpect
import pytest
import torch

from sft.data.template import PromptTemplate
from sft.inference.chat import GOODBYE, ResponseFilter, chat_loop, stream_response
from sft.inference.commands import make_chat_parser
from sft.inference.generate import Generator
from sft.inference.settings import GenerationSettings

SFT = str(Path(sys.executable).parent / "sft")


@pytest.fixture(scope="module")
def talkative_dir(tmp_path_factory):
    """The tiny model with large random weights, saved: its greedy responses contain words."""
    from sft.models.load import load_model, load_tokenizer

    model = load_model("sft-tiny-gpt2", dtype=torch.float32)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    directory = tmp_path_factory.mktemp("talkative")
    model.save_pretrained(directory)
    load_tokenizer("sft-tiny-gpt2").save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def loaded(talkative_dir):
    from sft.inference.generate import load_for_inference

    return load_for_inference(str(talkative_dir))


def feed_all(chunks, template=None):
    shown = ResponseFilter(template or PromptTemplate())
    return "".join(shown.feed(chunk) for chunk in chunks), shown


def test_filter_stops_at_a_following_header():
    printed, shown = feed_all(["Paris", " is nice.\n", "\n#", "## Instruction:\n", "Next task"])
    assert printed == "Paris is nice." and shown.done


def test_filter_holds_a_line_that_may_become_a_header():
    printed, shown = feed_all(["Step one\n", "##"])
    assert printed == "Step one" and not shown.done
    assert shown.feed(" Two\n") == "\n## Two"  # "## " cannot become "### Instruction:" any more
    assert shown.feed("##") == ""
    assert shown.feed("# In") == ""  # still "### Input:" or "### Instruction:" in the making
    assert shown.feed("struction:\nrest") == ""  # a header of the template: the response ends
    assert shown.done


MARKDOWN = "Steps:\n### Step 1\nMix.\n### Step 2\nBake."
CUSTOM = PromptTemplate(preamble="", instruction_header="User:", input_header="Context:", response_header="Assistant:")


def test_filter_releases_markdown_headings():
    printed, shown = feed_all(["Steps:\n#", "##", " ", "Step 1", "\nMix.\n### Step 2", "\nBake."])
    assert printed == MARKDOWN and not shown.done
    printed, shown = feed_all(["Steps:\n###", " Step"])
    assert printed == "Steps:\n### Step"  # "### S" is no header of the template: shown at once
    printed, shown = feed_all([MARKDOWN, "\n\n### Inp", "ut:\n", "More"])
    assert printed == MARKDOWN and shown.done


def test_filter_headers_come_from_the_template():
    printed, shown = feed_all(["Assistant: ", MARKDOWN, "\n### Instruction:\nMore"], CUSTOM)
    assert printed == f"{MARKDOWN}\n### Instruction:\nMore" and not shown.done
    printed, shown = feed_all([MARKDOWN, "\nUs"], CUSTOM)
    assert printed == MARKDOWN and not shown.done  # "Us" may still become "User:"
    assert shown.feed("er: more") == "" and shown.done
    printed, shown = feed_all([MARKDOWN, "\nUsage: twice"], CUSTOM)
    assert printed == f"{MARKDOWN}\nUsage: twice" and not shown.done


def scripted(tokenizer, text):
    """A stand-in for `model.generate` that writes `text` then EOS, a token a step, honouring the stopping
    criteria and the streamer as transformers does."""
    script = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def generate(input_ids, max_new_tokens, stopping_criteria, streamer, **kwargs):
        ids = input_ids
        streamer.put(ids[0])
        for token in script[:max_new_tokens]:
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            streamer.put(torch.tensor([token]))
            if token == tokenizer.eos_token_id or any(c(ids, None).all() for c in stopping_criteria):
                break
        streamer.end()
        return ids

    return generate


@pytest.mark.parametrize("template", [PromptTemplate(), CUSTOM], ids=["alpaca", "custom"])
def test_a_streamed_markdown_answer_is_whole(loaded, monkeypatch, template):
    model, tokenizer, _ = loaded
    generator = Generator(model, tokenizer, template)
    for text, ended in [(MARKDOWN, True), (f"{MARKDOWN}\n\n{template.input_header}\nMore", False)]:
        monkeypatch.setattr(model, "generate", scripted(tokenizer, text))
        pieces: list[str] = []
        result = stream_response(generator, "Bake a cake.", "", GenerationSettings(), pieces.append)
        assert "".join(pieces) == result.text == MARKDOWN
        assert result.ended_at_eos == ended


def test_filter_drops_an_echoed_response_header():
    printed, _ = feed_all(["  ### Resp", "onse:\n", "Paris"])
    assert printed == "Paris"


def test_streamed_text_equals_generate_response(loaded):
    from sft.inference.generate import generate_response

    model, tokenizer, template = loaded
    for instruction, extra in [("What is the capital of France?", ""), ("Rewrite the sentence.", "The fox.")]:
        pieces: list[str] = []
        generator = Generator(model, tokenizer, template)
        result = stream_response(generator, instruction, extra, GenerationSettings(max_new_tokens=20), pieces.append)
        expected = generate_response(model, tokenizer, instruction, extra, max_new_tokens=20, template=template)
        assert "".join(pieces) == result.text == expected
        assert result.new_tokens == 20 and not result.ended_at_eos


def test_errors_during_generation_are_reported_and_the_loop_goes_on(loaded, monkeypatch, capsys):
    model, tokenizer, template = loaded

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "generate", broken)
    answers = iter(["Say hi", "", "Say bye", ""])

    def read(prompt):
        print(prompt, end="")
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    assert chat_loop(Generator(model, tokenizer, template), GenerationSettings(max_new_tokens=4), read=read) == 0
    out = capsys.readouterr().out
    assert out.count("error: no response (RuntimeError: device lost)") == 2
    assert out.rstrip().endswith(GOODBYE)


def reader(*answers):
    """A stand-in for `input` that echoes its prompt and gives `answers` in turn (an exception is raised),
    then EOF."""
    queue = iter(answers)

    def read(prompt):
        print(prompt, end="")
        answer = next(queue, EOFError())
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return read


def test_input_that_is_not_utf8_is_refused_and_asked_again(loaded, capsys):
    model, tokenizer, template = loaded
    bad = UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "invalid continuation byte")
    read = reader(bad, "Say hi", bad, "", "Say bye", "")
    assert chat_loop(Generator(model, tokenizer, template), GenerationSettings(max_new_tokens=4), read=read) == 0
    out = capsys.readouterr().out
    assert out.count("that input was not valid UTF-8; ") == 2
    assert out.count("[4 tokens in") == 2  # both instructions were answered
    assert "Instruction: that input was not valid UTF-8; " in out  # the instruction is asked again
    assert "): that input was not valid UTF-8; " in out  # so is the input, without the instruction again
    assert out.rstrip().endswith(GOODBYE)


def spawn_chat(model_dir, *extra, env=None):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TERM": "dumb", **(env or {})}
    return pexpect.spawn(
        SFT,
        ["chat", str(model_dir), "--max-new-tokens", "12", *extra],
        env=env,
        encoding="utf-8",
        codec_errors="replace",  # the terminal echoes bytes that are not UTF-8 back
        timeout=60,
        dimensions=(40, 200),
        # A shell without job control starts background commands with Ctrl-C ignored, and an ignored SIGINT
        # stays ignored across exec; the chat must see Ctrl-C as a terminal user's would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_chat_in_a_terminal(talkative_dir, loaded):
    from sft.inference.generate import generate_response

    model, tokenizer, template = loaded
    expected = generate_response(model, tokenizer, "Name a colour.", max_new_tokens=12, template=template)
    child = spawn_chat(talkative_dir)
    child.expect("Instruction: ")
    child.sendline("Name a colour.")
    child.expect(r"Input \(optional, Enter for none\): ")
    child.sendline("")
    child.expect(r"Response: (.*)\r\n\[12 tokens in [\d.]+ s, stopped at the token limit\]")
    assert child.match.group(1) == expected
    child.expect("Instruction: ")
    child.sendline("")  # bad input: no instruction
    child.expect("Please type an instruction")
    child.expect("Instruction: ")
    child.sendline("Rewrite the sentence.")
    child.expect("Input ")
    child.sendline("The quick brown fox.")
    child.expect(r"\[\d+ tokens in")
    child.expect("Instruction: ")
    child.sendeof()
    child.expect(GOODBYE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# In a C locale GNU readline hands bytes that are not UTF-8 through (in a UTF-8 locale it drops them), and
# Python decodes them strictly (PYTHONIOENCODING=utf-8:strict, as outside UTF-8 mode) or with surrogateescape.
NOT_UTF8_TERMINALS = {
    "strict": {"LC_ALL": "C", "PYTHONIOENCODING": "utf-8:strict"},
    "surrogateescape": {"LC_ALL": "C", "PYTHONIOENCODING": "utf-8:surrogateescape"},
}


@pytest.mark.parametrize("decoding", NOT_UTF8_TERMINALS)
def test_a_non_utf8_paste_in_a_terminal_is_refused(tiny_model_dir, decoding):
    child = spawn_chat(tiny_model_dir, env=NOT_UTF8_TERMINALS[decoding])
    child.expect("Instruction: ")
    os.write(child.child_fd, b"caf\xe9\n")  # Latin-1, as a terminal set to another encoding sends it
    child.expect("that input was not valid UTF-8; ")
    child.expect("Instruction: ")
    child.sendline("Name a colour.")
    child.expect(r"Input \(optional, Enter for none\): ")
    os.write(child.child_fd, b"na\xefve\n")
    child.expect("that input was not valid UTF-8; ")
    child.expect(r"Input \(optional, Enter for none\): ")
    child.sendline("")
    child.expect(r"\[12 tokens in")
    child.expect("Instruction: ")
    child.sendeof()
    child.expect(GOODBYE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_exits_cleanly(tiny_model_dir):
    child = spawn_chat(tiny_model_dir)
    child.expect("Instruction: ")
    child.sendintr()
    child.expect(GOODBYE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_help():
    with pytest.raises(SystemExit) as exit_info:
        make_chat_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
