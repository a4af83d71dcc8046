"""`sft serve`: an OpenAI-compatible server whose greedy chat answers are the text `sft generate` prints.

Servers run as `python -m sft serve MODEL --port 0` on 127.0.0.1, one per module for each model: a full fine-tune
of the tiny model (scripted, so that its answers hold words and run on into a new block of the template), quiet
and with a bearer key, and (marked slow) a LoRA adapter trained on it, verbose and without a key. The official
`openai` client talks to them.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import torch

from sft.cli import main as sft_main

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "SFT_TEST_SERVE_KEY"
KEY = "sk-test-3b1f9e0c"
# (instruction, input): a chat sends the instruction as a user message and a non-empty input as a second one.
RECORDS = [
    ("Name a colour.", ""),
    ("Rewrite the sentence.", "The quick brown fox."),
    ("What is 2 + 2?", ""),
    ("Classify the sentiment.", "I love it!"),
    ("Summarise.", "Paris is nice."),
    ("Translate to French.", "Good morning"),
]
MAX_TOKENS = 24
STARTUP = re.compile(r"^Serving (?P<name>.+) at (?P<url>http://127\.0\.0\.1:\d+/v1) \((?P<notes>.*)\)\. Ctrl-C stops\.")


# What the scripted model says, over and over: a response, a Markdown heading (response), a new block of the
# template (not response), EOS. Where a prompt ends decides where in the script its response starts.
SCRIPT = (
    "\nParis is the capital of France.\n### Step 1\nConvert the fox.\n\n### Instruction:\nRewrite it.\n\n"
    "### Response:\nThe quick brown fox."
)


def script_model(directory: Path) -> None:
    """Rig the GPT-2 shaped model in `directory` so that its greedy continuation at position p is token p of
    SCRIPT (and EOS), cycled, whatever the prompt: attention and MLP blocks add nothing, and each position
    embedding points at its token's embedding (unit rows with zero mean, so the final layer norm keeps the
    direction and the tied output layer scores that token highest)."""
    from sft.models.load import load_model, load_tokenizer

    model = load_model(str(directory), dtype=torch.float32)
    tokenizer = load_tokenizer(str(directory))
    script = tokenizer(SCRIPT, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    transformer = model.transformer
    with torch.no_grad():
        torch.manual_seed(0)
        embeddings = torch.randn_like(transformer.wte.weight)
        embeddings -= embeddings.mean(dim=1, keepdim=True)
        embeddings /= embeddings.norm(dim=1, keepdim=True)
        transformer.wte.weight.copy_(embeddings)
        for position in range(transformer.wpe.weight.shape[0]):
            transformer.wpe.weight[position] = 100 * embeddings[script[(position + 1) % len(script)]]
        for block in transformer.h:
            for layer in (block.attn.c_proj, block.mlp.c_proj):
                layer.weight.zero_()
                layer.bias.zero_()
    model.save_pretrained(directory)


class Server:
    """`python -m sft serve MODEL --port 0 ...` in a subprocess, its output collected as it comes."""

    def __init__(self, model: Path, *args: str, env: dict[str, str] | None = None):
        self.directory, self.name = model, str(model)
        self.url = self.notes = ""
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sft", "serve", self.name, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_started(self, timeout: float = 60) -> None:
        """Until the startup line, which names the model and the address (the port was picked at random)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if match := STARTUP.match(line.rstrip("\n")):
                    assert match["name"] == self.name
                    self.url, self.notes = match["url"], match["notes"]
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server did not start:\n{self.output}")

    def wait_for(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            time.sleep(0.05)

    def interrupt(self) -> None:
        """Ctrl-C, as a user stops it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def stop(self) -> int:
        """Ctrl-C, then the exit code once it has ended."""
        self.interrupt()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=5)
        return self.process.returncode


def training(output_dir: Path, *options: str) -> None:
    recipe = str(REPO / "recipes" / "tiny.yaml")
    argv = ["train", recipe, "--output_dir", str(output_dir), "--max_steps", "1", "--eval_strategy", "no", *options]
    assert sft_main(argv) == 0


@contextlib.contextmanager
def serving(model: Path, *args: str, env: dict[str, str] | None = None):
    """A started server; stopped with Ctrl-C at the end, which must end it cleanly."""
    server = Server(model, *args, env=env)
    try:
        server.wait_started()
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.output


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory) -> Path:
    """The tiny recipe trained for one step (so it carries sft's chat template and generation config), then
    scripted (`script_model`) so that its answers hold words, Markdown headings and following template blocks."""
    directory = tmp_path_factory.mktemp("serve") / "full"
    training(directory)
    script_model(directory)
    return directory


@pytest.fixture(scope="module")
def full(full_dir):
    with serving(full_dir, "--api-key-env", KEY_ENV, env={KEY_ENV: KEY}) as server:
        yield server


@pytest.fixture(scope="module")
def lora(full_dir):
    """A LoRA adapter trained for one step on the scripted fine-tune, served with --verbose and no key."""
    directory = full_dir.parent / "lora"
    training(directory, "--model_name_or_path", str(full_dir), "--method", "lora")
    with serving(directory, "--verbose") as server:
        yield server


def client(server: Server, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=60)


def messages(instruction: str, input: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": instruction}] + ([{"role": "user", "content": input}] if input else [])


def sft_generate(capsys, model: Path, instruction: str, input: str, *options: str) -> str:
    """What `sft generate MODEL --instruction ... --input ... --max-new-tokens N [OPTIONS]` prints."""
    capsys.readouterr()
    argv = ["generate", str(model), "--instruction", instruction, "--input", input]
    assert sft_main([*argv, "--max-new-tokens", str(MAX_TOKENS), *options]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    return out[:-1]


def sft_generate_all(model: Path) -> list[str]:
    """`sft_generate` for every record, at the cost of one model load: what `generate_command` runs."""
    from sft.inference.generate import generate_responses, load_for_inference
    from sft.inference.settings import GenerationSettings

    records = [{"instruction": instruction, "input": input} for instruction, input in RECORDS]
    settings = GenerationSettings(max_new_tokens=MAX_TOKENS, batch_size=1)
    model, tokenizer, template = load_for_inference(str(model))
    return [result.text for result in generate_responses(model, tokenizer, records, settings, template, False)]


KINDS = ["full", pytest.param("lora", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_chat_answers_are_what_sft_generate_prints(kind, request, capsys) -> None:
    server = request.getfixturevalue(kind)
    api = client(server)
    assert [model.id for model in api.models.list().data] == [server.name]
    answers = []
    for instruction, input in RECORDS:
        reply = api.chat.completions.create(
            model=server.name, messages=messages(instruction, input), temperature=0, max_tokens=MAX_TOKENS
        )
        answers.append(reply.choices[0].message.content)
    expected = sft_generate_all(server.directory)
    assert expected[1] == sft_generate(capsys, server.directory, *RECORDS[1])  # the command itself, once
    assert answers == expected
    # The script's cases are all there: ended at EOS, cut before a following `### Instruction:` block, a
    # Markdown heading kept, and a line that might have become a header when the token limit came.
    assert "brown fox." in expected and "Convert the fox." in expected, expected
    assert any("### Step 1\nConvert" in text for text in expected) and any(
        text.endswith("\n\n###") for text in expected
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_streamed_chat_joins_to_the_same_text(kind, request) -> None:
    server = request.getfixturevalue(kind)
    api = client(server)
    for instruction, input in RECORDS:
        request = {"model": server.name, "messages": messages(instruction, input), "temperature": 0}
        whole = api.chat.completions.create(**request, max_tokens=MAX_TOKENS).choices[0].message.content
        chunks = list(api.chat.completions.create(**request, max_tokens=MAX_TOKENS, stream=True))
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert text == whole
        assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    # The raw event stream ends as OpenAI's does, for clients that read it without the openai package.
    for path, body in (
        ("/chat/completions", {"messages": messages(*RECORDS[0])}),
        ("/completions", {"prompt": "Hello"}),
    ):
        body = {"model": server.name, "max_tokens": 4, "stream": True, **body}
        request = urllib.request.Request(
            server.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            events = [line for line in response.read().decode().splitlines() if line.startswith("data:")]
        assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1, events[-3:]


def test_a_seeded_sample_is_what_sft_generate_draws(full, capsys) -> None:
    """temperature above 0 samples (transformers serve alone would still decode greedily), as `sft generate
    --temperature T --top-p P --seed S` samples."""
    api = client(full)
    instruction, input = RECORDS[1]

    def draw(seed: int) -> str:
        request = {"messages": messages(instruction, input), "temperature": 1.5, "top_p": 0.95, "seed": seed}
        reply = api.chat.completions.create(model=full.name, max_tokens=MAX_TOKENS, **request)
        return reply.choices[0].message.content

    drawn = [draw(seed) for seed in (5, 5, 6, 7)]
    options = ["--temperature", "1.5", "--top-p", "0.95", "--seed", "5"]
    assert drawn[0] == drawn[1] == sft_generate(capsys, full.directory, instruction, input, *options)
    assert len(set(drawn[1:])) > 1 and sft_generate_all(full.directory)[1] not in drawn, drawn  # drawn, not greedy


def test_completions_continue_the_raw_prompt(full) -> None:
    """No template and no cutting: the greedy continuation of the prompt as it is, as `generate` gives it."""
    from sft.models.load import load_model, load_tokenizer

    server = full
    prompt = "### Instruction:\nThe quick brown fox"
    reply = client(server).completions.create(model=server.name, prompt=prompt, temperature=0, max_tokens=12)
    model = load_model(str(server.directory), dtype=torch.float32).eval()
    tokenizer = load_tokenizer(str(server.directory))
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**ids, max_new_tokens=12, do_sample=False)
    expected = tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.choices[0].text == expected and expected.strip()
    streamed = client(server).completions.create(
        model=server.name, prompt=prompt, temperature=0, max_tokens=12, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == expected


def raw_request(server: Server, path: str, headers: dict[str, str], body: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(server.url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_key_is_required_and_never_shown(full) -> None:
    server = full
    assert f"requests need `Authorization: Bearer ${KEY_ENV}`" in server.notes
    with pytest.raises(openai.AuthenticationError):
        client(server, key="sk-wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(server, key=KEY + "x").chat.completions.create(
            model=server.name, messages=messages("Name a colour.", ""), max_tokens=2
        )
    chat = {"model": server.name, "messages": messages("Name a colour.", ""), "max_tokens": 2}
    assert raw_request(server, "/chat/completions", {}, chat) == 401  # no Authorization header at all
    assert raw_request(server, "/models", {"Authorization": KEY}) == 401  # not as a bearer token
    assert raw_request(server, "/models", {"Authorization": f"Bearer {KEY}"}) == 200
    assert raw_request(server, "/chat/completions", {"Authorization": f"bearer {KEY}"}, chat) == 200
    # Quiet by default: the startup line, which names the variable but not the key, and nothing per request.
    assert server.output.count("\n") == 1 and KEY not in server.output, server.output


@pytest.mark.slow
def test_verbose_shows_requests_and_no_key_is_needed(lora) -> None:
    assert lora.notes == "no API key needed"  # the adapter carries sft's chat template: nothing added
    assert raw_request(lora, "/models", {}) == 200
    lora.wait_for('"GET /v1/models HTTP/1.1" 200')
    assert '"GET /v1/models HTTP/1.1" 200' in lora.output  # uvicorn's access log, with --verbose only


def test_a_request_for_another_model_is_refused(full) -> None:
    with pytest.raises(openai.BadRequestError, match="pinned"):
        client(full).chat.completions.create(model="gpt-4o", messages=messages("Name a colour.", ""))
    assert raw_request(full, "/responses", {"Authorization": f"Bearer {KEY}"}, {}) == 404  # not adapted: left out


# In process: errors the user can fix, and how a model is prepared for serving.


def test_a_port_in_use_is_one_line_naming_it(capsys) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert sft_main(["serve", "sft-tiny-gpt2", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err


def test_a_model_that_cannot_load_is_sft_s_one_line(tmp_path, capsys) -> None:
    assert sft_main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: model path") and "does not exist" in err


def test_an_unset_key_variable_is_refused(capsys, monkeypatch) -> None:
    monkeypatch.delenv("SFT_TEST_NO_SUCH_KEY", raising=False)
    assert sft_main(["serve", "sft-tiny-gpt2", "--port", "0", "--api-key-env", "SFT_TEST_NO_SUCH_KEY"]) == 2
    assert "SFT_TEST_NO_SUCH_KEY, which is not set" in capsys.readouterr().err


def test_a_model_without_a_chat_template_gets_sft_s(tiny_model_dir) -> None:
    from sft.inference.serve import load_served_model

    served = load_served_model("sft-tiny-gpt2")
    assert served.tokenizer.chat_template and served.sft_prompted
    assert "no chat template" in served.notes[0]


def test_another_chat_template_is_kept_and_left_alone(tiny_model_dir, tmp_path) -> None:
    import shutil

    from transformers import AutoTokenizer

    from sft.inference.serve import load_served_model

    directory = tmp_path / "chatml"
    shutil.copytree(tiny_model_dir, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    tokenizer.save_pretrained(directory)
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": 7}))
    served = load_served_model(str(directory))
    assert not served.sft_prompted and served.notes == ["chats are prompted with the model's own chat template"]
    assert served.tokenizer.chat_template == tokenizer.chat_template
    # Like `sft generate`, generation stops at the tokenizer's EOS too, not only at the configured one.
    assert set(served.model.generation_config.eos_token_id) == {7, served.tokenizer.eos_token_id}


def test_help_names_the_options(capsys) -> None:
    with contextlib.suppress(SystemExit):
        sft_main(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(option in out for option in ("--host", "--port", "--api-key-env", "127.0.0.1"))
