"""`sft chat`: streamed responses equal generate_response's, bad input and errors survive, clean exits."""

import os
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
    assert shown.feed(" Two\n") == "\n## Two"  # "## " cannot become "### " any more
    assert shown.feed("##") == ""
    assert shown.feed("#\nrest") == ""  # "###" then a line break: a header, the response ends
    assert shown.done


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


def spawn_chat(model_dir, *extra):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TERM": "dumb"}
    return pexpect.spawn(
        SFT,
        ["chat", str(model_dir), "--max-new-tokens", "12", *extra],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
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
