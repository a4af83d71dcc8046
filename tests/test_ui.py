"""`sft ui`: ratings are kept safely and resume where the reviewer stopped; the page, in headless Chromium,
streams chat answers equal to `sft generate`'s, takes ratings by keyboard and mouse, keeps them over a
reload, and asks nothing of any host but its own."""

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from browser import chromium, requested_urls, unavailable

from sft.errors import SFTError
from sft.evaluation.ratings import (
    first_unrated,
    load_ratings,
    ratings_path,
    read_responses,
    save_rating,
)
from sft.paths import HUMAN_RATINGS_FILE

SFT = str(Path(sys.executable).parent / "sft")
SCREENSHOT_COPY = Path("/tmp/sft-ui-screenshot.png")
REVIEW_SCREENSHOT_COPY = Path("/tmp/sft-ui-review-screenshot.png")
BROWSER_MISSING = unavailable()  # why the browser test cannot run here, or None
TOKENS = "96"  # new tokens per answer, set on the page
SCORES = {"relevance": 4, "accuracy": 3, "fluency": 5, "completeness": 4}


@pytest.fixture(scope="module")
def talkative_dirs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models with large random weights, saved: their greedy answers are long and hold words."""
    root = tmp_path_factory.mktemp("talkative")
    model = talkative(root / "model", seed=2, spread=1.0)
    return {"model": model, "base": talkative(root / "base", seed=3, spread=0.3)}


@pytest.fixture
def responses_file(tmp_path, alpaca_records) -> Path:
    records = [{**r, "model_response": f"Answer {i}: {r['output']}"} for i, r in enumerate(alpaca_records)]
    path = tmp_path / "eval" / "responses.json"
    path.parent.mkdir()
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# Ratings file --------------------------------------------------------------------------------------------


def test_ratings_are_saved_sorted_in_the_fixed_format(responses_file):
    assert load_ratings(responses_file) == {}
    save_rating(responses_file, 2, {**SCORES, "note": "ignored"})
    save_rating(responses_file, 0, SCORES)
    save_rating(responses_file, 2, {**SCORES, "fluency": 1})  # a change replaces the earlier rating
    path = responses_file.parent / HUMAN_RATINGS_FILE
    assert ratings_path(responses_file) == path
    assert json.loads(path.read_text()) == {
        "responses": "responses.json",
        "ratings": [{"index": 0, **SCORES}, {"index": 2, **SCORES, "fluency": 1}],
    }
    assert load_ratings(responses_file) == {0: SCORES, 2: {**SCORES, "fluency": 1}}
    assert sorted(p.name for p in path.parent.iterdir()) == [HUMAN_RATINGS_FILE, "responses.json"]  # no temp file


def test_a_change_keeps_what_else_the_file_holds(responses_file):
    kept = {"responses": "responses.json", "rater": "ada", "ratings": [{"index": 1, **SCORES, "note": "terse"}]}
    ratings_path(responses_file).write_text(json.dumps(kept))
    save_rating(responses_file, 1, {**SCORES, "accuracy": 5})
    save_rating(responses_file, 0, SCORES)
    assert json.loads(ratings_path(responses_file).read_text()) == {
        "responses": "responses.json",
        "rater": "ada",
        "ratings": [{"index": 0, **SCORES}, {"index": 1, **SCORES, "accuracy": 5, "note": "terse"}],
    }


def test_a_failed_write_keeps_the_earlier_file_whole(responses_file, monkeypatch):
    save_rating(responses_file, 0, SCORES)
    before = ratings_path(responses_file).read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SFTError, match="human_ratings.json: the disk is full"):
        save_rating(responses_file, 1, SCORES)
    assert ratings_path(responses_file).read_bytes() == before
    assert sorted(p.name for p in responses_file.parent.iterdir()) == [HUMAN_RATINGS_FILE, "responses.json"]


def test_resume_at_the_first_unrated_record(responses_file):
    assert first_unrated({}, 4) == 0
    for index in (0, 1, 3):
        save_rating(responses_file, index, SCORES)
    assert first_unrated(load_ratings(responses_file), 4) == 2
    save_rating(responses_file, 2, SCORES)
    assert first_unrated(load_ratings(responses_file), 4) is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"responses": "other.json", "ratings": []}', "holds ratings of 'other.json'"),
        ('{"responses": "responses.json", "ratings": [3]}', "ratings\\[0\\] must be an object"),
        (
            '{"responses": "responses.json", "ratings": [{"index": -1}]}',
            "`index` must be a record number counted from 0, not -1",
        ),
        ('{"responses": "responses.json", "ratings": [{"index": 0, "relevance": 4}]}', "`accuracy` is missing"),
        (
            '{"responses": "responses.json", "ratings": [{"index": 0, "relevance": 6, "accuracy": true, '
            '"fluency": 1, "completeness": 1}]}',
            "`relevance` is 6",
        ),
        (
            '{"responses": "responses.json", "ratings": ['
            '{"index": 1, "relevance": 1, "accuracy": 1, "fluency": 1, "completeness": 1}, '
            '{"index": 1, "relevance": 1, "accuracy": 1, "fluency": 1, "completeness": 1}]}',
            "record 1 is rated twice",
        ),
    ],
)
def test_a_malformed_ratings_file_is_one_line_naming_it(responses_file, content, message):
    ratings_path(responses_file).write_text(content)
    with pytest.raises(SFTError, match=message) as caught:
        load_ratings(responses_file)
    assert str(caught.value).startswith(str(ratings_path(responses_file)))
    assert "\n" not in str(caught.value)
    with pytest.raises(SFTError):  # nothing is written over a file that cannot be read
        save_rating(responses_file, 0, SCORES)
    assert ratings_path(responses_file).read_text() == content


def test_scores_must_be_whole_numbers_from_1_to_5(responses_file):
    for bad in [{**SCORES, "accuracy": 0}, {**SCORES, "fluency": 2.5}, {"relevance": 3}]:
        with pytest.raises(SFTError):
            save_rating(responses_file, 0, bad)
    with pytest.raises(SFTError):
        save_rating(responses_file, -1, SCORES)
    assert not ratings_path(responses_file).exists()


def test_a_responses_file_needs_model_responses(alpaca_file, responses_file):
    first = read_responses(responses_file)[0]
    assert first["model_response"] == "Answer 0: The mouse was chased by the cat."
    with pytest.raises(SFTError, match="4 of 4 records have no model_response"):
        read_responses(alpaca_file)


# Command line --------------------------------------------------------------------------------------------


def test_bad_files_and_a_taken_port_fail_before_a_model_loads(alpaca_file, responses_file):
    from sft.inference.commands import ui_command

    with pytest.raises(SFTError, match="no model_response"):
        ui_command(["no-such-model", "--responses", str(alpaca_file), "--port", str(free_port())])
    ratings_path(responses_file).write_text("{")
    with pytest.raises(SFTError, match="human_ratings.json: not valid JSON"):
        ui_command(["no-such-model", "--responses", str(responses_file), "--port", str(free_port())])
    save = ratings_path(responses_file)
    save.write_text(json.dumps({"responses": "responses.json", "ratings": [{"index": 9, **SCORES}]}))
    with pytest.raises(SFTError, match="rates record 9, but .* has 4 records"):
        ui_command(["no-such-model", "--responses", str(responses_file), "--port", str(free_port())])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SFTError, match="already in use"):
            ui_command(["no-such-model", "--port", str(taken.getsockname()[1])])


# The page, without a browser ---------------------------------------------------------------------------


def test_answers_stream_together_and_stop_when_asked(talkative_dirs):
    from sft.inference.generate import Generator, generate_responses, load_for_inference
    from sft.inference.settings import GenerationSettings
    from sft.inference.ui import Cancelled, ChatModel, stream_answers

    generator = Generator(*load_for_inference(str(talkative_dirs["model"])))
    models = [ChatModel("model", generator, "model"), ChatModel("again", generator, "base")]
    settings = GenerationSettings(max_new_tokens=48, batch_size=1)
    steps = list(stream_answers(models, "Name the capital of France.", "", settings, threading.Event()))
    texts, outcomes = steps[-1]
    want = generate_responses(
        generator.model,
        generator.tokenizer,
        [{"instruction": "Name the capital of France."}],
        settings,
        generator.template,
        progress=False,
    )[0].text
    assert texts == [want, want] and [outcome.text for outcome in outcomes] == texts
    assert len({step[0][0] for step in steps}) > 3  # the answer grew piece by piece

    cancel = threading.Event()
    settings = GenerationSettings(max_new_tokens=400, batch_size=1)
    for step in stream_answers(models[:1], "Tell a story.", "", settings, cancel):
        if step[0][0]:
            cancel.set()  # as the Stop button does, once the answer has begun
    texts, outcomes = step
    assert isinstance(outcomes[0], Cancelled)
    assert 0 < len(texts[0]) < len(want) * 4


def test_the_page_builds_with_and_without_a_responses_file(responses_file):
    from sft.inference.ui import ChatModel, build_page, launch_options

    options = launch_options()
    assert options["share"] is False and options["quiet"] is True and options["ssr_mode"] is False
    for page in [
        build_page([ChatModel("out/model", None, "model")]),
        build_page(
            [ChatModel("out/model", None, "model"), ChatModel("base-model", None, "base")],
            responses_file,
            read_responses(responses_file),
        ),
    ]:
        assert page.title == "sft ui · out/model"
        assert page.analytics_enabled is False


# The page in a browser -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def talkative(directory: Path, seed: int, spread: float) -> Path:
    """The tiny model with weights drawn anew (`seed`, normal with std `spread`), saved."""
    import torch

    from sft.models.load import load_model, load_tokenizer

    model = load_model("sft-tiny-gpt2", dtype=torch.float32)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, spread)
    model.save_pretrained(directory)
    load_tokenizer("sft-tiny-gpt2").save_pretrained(directory)
    return directory


class Server:
    """`sft ui` in a subprocess, its output read line by line."""

    def __init__(self, args: list[str]):
        command = [SFT, "ui", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from sft ui; it said:\n{''.join(self.output)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait(condition, timeout: float = 20, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out waiting for {what}")


BOT = "#chat-{role} [data-testid='bot'] .message-content"


def bot_texts(driver, role: str) -> list[str]:
    script = "return Array.from(document.querySelectorAll(arguments[0])).map(m => m.textContent);"
    return driver.execute_script(script, BOT.format(role=role))


def text_of(driver, element_id: str) -> str:
    script = "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';"
    return driver.execute_script(script, element_id)


def field(driver, element_id: str) -> str | None:
    """The text in a text box."""
    script = "const e = document.querySelector('#' + arguments[0] + ' textarea'); return e ? e.value : null;"
    return driver.execute_script(script, element_id)


def field_of(driver, selector: str) -> str | None:
    script = "const e = document.querySelector(arguments[0]); return e ? e.value : null;"
    return driver.execute_script(script, selector)


def focused(driver) -> str | None:
    """The id of the dimension the score keys rate."""
    return driver.execute_script("const e = document.querySelector('.sft-focused'); return e ? e.id : null;")


def chosen(driver) -> list[str | None]:
    script = (
        "return ['relevance', 'accuracy', 'fluency', 'completeness'].map(d => {"
        " const c = document.querySelector('#rate-' + d + ' input:checked'); return c ? c.value : null; });"
    )
    return driver.execute_script(script)


# Records, in the page, the length of the newest answer of the fine-tune at every change of its column.
WATCH_ANSWER = """
const [selector, before] = arguments;
window.sftLengths = [];
window.sftWatch && window.sftWatch.disconnect();
window.sftWatch = new MutationObserver(() => {
  const answers = document.querySelectorAll(selector);
  if (answers.length > before) window.sftLengths.push(answers[answers.length - 1].textContent.length);
});
window.sftWatch.observe(document.querySelector("#chat-model"), {childList: true, subtree: true, characterData: true});
"""


def ask(driver, instruction: str, by_enter: bool, answer: str) -> list[int]:
    """Send `instruction` and wait until the fine-tune's answer on the page reads `answer`; returns the lengths it had
    while it streamed. The status line can show both models finished a moment before the chat has drawn the last
    update, so the finished status alone is not the end of the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(bot_texts(driver, "model"))
    driver.execute_script(WATCH_ANSWER, BOT.format(role="model"), before)
    box = driver.find_element(By.CSS_SELECTOR, "#chat-instruction textarea")
    box.send_keys(instruction)
    if by_enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "chat-send").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = text_of(driver, "chat-status")
        answers = bot_texts(driver, "model")
        answered = len(answers) > before and len(bot_texts(driver, "base")) > before
        if status.count("tokens in") == 2 and answered and answers[-1] == answer:
            return driver.execute_script("window.sftWatch.disconnect(); return window.sftLengths;")
        time.sleep(0.05)
    raise AssertionError(
        f"no answer {answer!r} to {instruction!r}; the page shows {bot_texts(driver, 'model')[before:]!r}, "
        f"status {text_of(driver, 'chat-status')!r}"
    )


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def saved(responses: Path) -> dict:
    path = ratings_path(responses)
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")
def test_the_page_in_a_browser(tmp_path, responses_file, talkative_dirs, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from sft.inference.commands import generate_command

    model, base = talkative_dirs["model"], talkative_dirs["base"]
    port = free_port()
    server = Server([str(model), "--base", str(base), "--responses", str(responses_file), "--port", str(port)])
    try:
        instructions = ["Name the capital of France.", "Rewrite the sentence in passive voice."]
        expected = []
        for instruction in instructions:  # what `sft generate` prints for each, while the page starts
            assert generate_command([str(model), "--instruction", instruction, "--max-new-tokens", TOKENS]) == 0
            expected.append(capsys.readouterr().out.removesuffix("\n"))
        assert all(len(text) > 40 for text in expected)
        line = server.wait_for("sft ui:", timeout=90)
        url = f"http://127.0.0.1:{port}/"
        assert line.strip() == f"sft ui: open {url} in a browser; Ctrl-C stops."
        with chromium(tmp_path) as driver:
            driver.get(url)
            wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#chat-instruction textarea"), what="the chat tab")

            # Chat: two messages, the first by the Send button, the second by Enter; answers stream in.
            tokens = driver.find_element(By.CSS_SELECTOR, "#chat-max input[type='number']")
            tokens.send_keys(Keys.CONTROL, "a")
            tokens.send_keys(TOKENS, Keys.TAB)
            wait(lambda: field_of(driver, "#chat-max input[type='range']") == TOKENS, what="the token limit")
            lengths = ask(driver, instructions[0], by_enter=False, answer=expected[0])
            growing = list(dict.fromkeys(lengths))
            assert len(growing) >= 3 and growing == sorted(growing), lengths  # it grew in steps, never shrank
            assert growing[-1] == len(expected[0])
            assert f"model: {TOKENS} tokens in" in text_of(driver, "chat-status")
            ask(driver, instructions[1], by_enter=True, answer=expected[1])
            assert bot_texts(driver, "model") == expected
            assert len(bot_texts(driver, "base")) == 2  # the base model answered beside it
            assert "Name the capital of France." in driver.find_element(By.ID, "chat-model").text
            driver.save_screenshot(str(tmp_path / "chat.png"))

            # Review: record 1 rated with the keyboard, record 2 with the mouse.
            driver.find_element(By.ID, "tab-review-button").click()
            wait(lambda: "Record 1 of 4" in text_of(driver, "review-position"), what="record 1")
            assert "1-5 rate the highlighted dimension" in text_of(driver, "review-keys")  # the keys are documented
            assert field(driver, "review-instruction") == "Rewrite the sentence in passive voice."
            assert field(driver, "review-input") == "The cat chased the mouse."
            assert field(driver, "review-reference") == "The mouse was chased by the cat."
            assert field(driver, "review-response") == "Answer 0: The mouse was chased by the cat."
            press(driver, "4", "3", "5", "4")
            wait(lambda: saved(responses_file).get("ratings"), what="the first rating in human_ratings.json")
            assert chosen(driver) == ["4", "3", "5", "4"]
            assert focused(driver) == "rate-completeness"
            press(driver, Keys.ENTER)
            wait(lambda: "Record 2 of 4" in text_of(driver, "review-position"), what="record 2")
            assert focused(driver) == "rate-relevance"
            wait(lambda: chosen(driver) == [None] * 4, what="record 2's empty scores")
            for dimension, score in zip(SCORES, (2, 1, 3, 5)):
                driver.find_element(By.CSS_SELECTOR, f"#rate-{dimension} [data-testid='{score}-radio-label']").click()
            wait(lambda: len(saved(responses_file).get("ratings", [])) == 2, what="the second rating")
            driver.find_element(By.ID, "review-next").click()
            wait(lambda: "Record 3 of 4" in text_of(driver, "review-position"), what="record 3")
            wait(lambda: "2 of 4 rated" in text_of(driver, "review-status"), what="the count of ratings")

            # A reload resumes at the first unrated record, with both ratings kept.
            driver.refresh()
            wait(lambda: driver.find_elements(By.ID, "tab-review-button"), what="the reloaded page")
            driver.find_element(By.ID, "tab-review-button").click()
            wait(lambda: "Record 3 of 4" in text_of(driver, "review-position"), what="record 3 after the reload")
            assert chosen(driver) == [None] * 4
            assert saved(responses_file) == {
                "responses": "responses.json",
                "ratings": [
                    {"index": 0, "relevance": 4, "accuracy": 3, "fluency": 5, "completeness": 4},
                    {"index": 1, "relevance": 2, "accuracy": 1, "fluency": 3, "completeness": 5},
                ],
            }
            press(driver, Keys.ARROW_LEFT)
            wait(lambda: "Record 2 of 4" in text_of(driver, "review-position"), what="record 2 again")
            wait(lambda: chosen(driver) == ["2", "1", "3", "5"], what="record 2's kept scores")
            driver.find_element(By.ID, "review-previous").click()
            wait(lambda: chosen(driver) == ["4", "3", "5", "4"], what="record 1's kept scores")
            driver.save_screenshot(str(tmp_path / "review.png"))

            # Nothing was asked of any host but the page's own.
            foreign = [u for u in requested_urls(driver) if u.startswith(("http:", "https:", "ws:", "wss:"))]
            foreign = [u for u in foreign if not u.startswith((url, f"ws://127.0.0.1:{port}/"))]
            assert foreign == []
        for name, copy in [("chat.png", SCREENSHOT_COPY), ("review.png", REVIEW_SCREENSHOT_COPY)]:
            assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
            shutil.copyfile(tmp_path / name, copy)
    finally:
        server.stop()
    server.wait_for("sft ui: stopped.", timeout=10)
    assert server.process.returncode == 0
