"""`sft judge`: the real openai client against a scripted OpenAI-compatible server on 127.0.0.1, and once
against `transformers serve` itself."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from judge_server import FakeJudge, error, hang, reply, verdict

from sft.cli import main as cli
from sft.errors import DataError, SFTError
from sft.evaluation.bootstrap import mean_interval
from sft.evaluation.judge import (
    DIMENSIONS,
    JudgeCache,
    Judgement,
    JudgeSettings,
    JudgeStats,
    UnusableReply,
    cache_key,
    judge_file,
    judge_records,
    judge_summary,
    read_reply,
)
from sft.paths import JUDGE_CACHE_FILE

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-judgeTestSecretThatMustNeverLeak0123"
FAST = dict(backoff=0.01, max_backoff=0.05)


def record(marker: str, output: str = "The reference answer.") -> dict[str, str]:
    return {"instruction": f"{marker}: do the task", "input": "", "output": output, "model_response": "An answer."}


def responses_file(tmp_path: Path, markers: list[str], name: str = "responses.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps([record(marker) for marker in markers]), encoding="utf-8")
    return path


def settings(fake: FakeJudge, **overrides) -> JudgeSettings:
    return JudgeSettings(endpoint=fake.url, model="judge-m", **{**FAST, **overrides})


def judge(fake: FakeJudge, markers: list[str], stats: JudgeStats | None = None, **overrides) -> list[Judgement]:
    records = [record(marker) for marker in markers]
    return judge_records(records, [r["model_response"] for r in records], settings(fake, **overrides), stats=stats)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Replies -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"reason": "close", "score": 85}', 85),
        ('```json\n{"reason": "ok", "score": 70}\n```', 70),
        ('Here is my verdict: {"score": 40, "reason": "half"} Thanks.', 40),
        ('<think>the score could be 10</think>{"reason": "r", "score": 90}', 90),
        ('{"reason": "r", "score": 85.0}', 85),
        ('{"reason": "r", "score": "77"}', 77),
        ("Score: 85", 85),
        ("I would give it 85/100.", 85),
        ("It is decent. 62 out of 100", 62),
        ("**73**", 73),
        ('{"reason": "r", "score": 150}', None),
        ('{"reason": "r", "score": 85.5}', None),
        ('{"reason": "r", "score": true}', None),
        ('{"reason": "no number"}', None),
        ("Score: -5", None),
        ("I cannot judge this.", None),
        ("", None),
        (None, None),
    ],
)
def test_reading_a_reference_reply(text, score) -> None:
    if score is None:
        with pytest.raises(UnusableReply):
            read_reply(text, "reference")
    else:
        assert read_reply(text, "reference").score == score


def test_reading_a_dimensions_reply() -> None:
    found = read_reply(
        '{"reason": "good", "relevance": 5, "accuracy": 4, "fluency": 5, "completeness": 3, "overall": 80}',
        "dimensions",
    )
    assert (found.score, found.dimensions, found.reason) == (
        80,
        {"relevance": 5, "accuracy": 4, "fluency": 5, "completeness": 3},
        "good",
    )
    prose = read_reply("Relevance: 4/5\nAccuracy: 3\nFluency: 5\nCompleteness: 2\nOverall: 65/100", "dimensions")
    assert (prose.score, prose.dimensions["completeness"]) == (65, 2)
    for bad in (
        '{"relevance": 6, "accuracy": 4, "fluency": 5, "completeness": 3, "overall": 80}',
        '{"relevance": 5, "accuracy": 4, "overall": 80}',
        "Overall: 80",
    ):
        with pytest.raises(UnusableReply):
            read_reply(bad, "dimensions")


# Requests ------------------------------------------------------------------------------------------------


def test_scores_retries_and_what_every_request_asks() -> None:
    """JSON, prose, a 429, a hang past the timeout and a 500 each end scored, with the retries counted; an
    out-of-range score is asked again with a follow-up; garbage every time ends unscored with its raw reply."""
    script = {
        "json": [verdict(85, "close to the reference")],
        "prose": [reply("The answer is mostly right. I would give it 72/100.")],
        "rate": [error(429, "slow down"), verdict(70)],
        "hang": [hang(1.5), verdict(60)],
        "fail": [error(500, "boom"), verdict(55)],
        "range": [verdict(150), verdict(90)],
        "garbage": [reply("blah blah")],
    }
    stats = JudgeStats()
    with FakeJudge(script) as fake:
        found = judge(fake, list(script), stats, timeout=0.5, seed=7, concurrency=3)
        bodies = fake.bodies()
        follow_up = fake.requests_for("range")[1]["body"]["messages"]
    by_marker = dict(zip(script, found))
    assert [j.score for j in found] == [85, 72, 70, 60, 55, 90, None]
    assert by_marker["json"].reason == "close to the reference"
    assert {name: (j.attempts, j.replies) for name, j in by_marker.items()} == {
        "json": (1, 1),
        "prose": (1, 1),
        "rate": (2, 1),
        "hang": (2, 1),
        "fail": (2, 1),
        "range": (2, 2),
        "garbage": (3, 3),  # reply_retries=2 follow-ups, then unscored
    }
    garbage = by_marker["garbage"]
    assert not garbage.scored and garbage.reply == "blah blah" and "no score" in garbage.problem
    assert [j.index for j in found] == list(range(len(script)))
    assert len(bodies) == stats.requests == 13
    for body in bodies:
        assert body["temperature"] == 0 and body["seed"] == 7 and body["model"] == "judge-m"
        assert body["response_format"]["type"] == "json_schema"
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["required"] == ["reason", "score"]
        assert schema["properties"]["score"] == {"type": "integer", "minimum": 0, "maximum": 100}
    # The follow-up quotes the unusable reply and says what was wrong with it.
    assert [m["role"] for m in follow_up] == ["system", "user", "assistant", "user"]
    assert "150" in follow_up[2]["content"] and "outside 0 to 100" in follow_up[3]["content"]


def test_dimensions_rubric_and_its_summary() -> None:
    script = {
        "first": [verdict(80, relevance=5, accuracy=4, fluency=5, completeness=3)],
        "second": [verdict(60, relevance=6, accuracy=4, fluency=5, completeness=3), reply(
            "Relevance: 3\nAccuracy: 2\nFluency: 4\nCompleteness: 2\nOverall: 40"
        )],
    }  # fmt: skip
    with FakeJudge(script) as fake:
        found = judge(fake, ["first", "second"], rubric="dimensions")
        schema = fake.bodies()[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["reason", *DIMENSIONS, "overall"]
    assert [(j.score, j.replies) for j in found] == [(80, 1), (40, 2)]
    summary = judge_summary(found)
    assert summary["judge_score"] == 60
    assert summary["dimensions"] == {"relevance": 4, "accuracy": 3, "fluency": 4.5, "completeness": 2.5}


def test_concurrency_keeps_n_requests_in_flight() -> None:
    for concurrency in (4, 1):
        with FakeJudge(delay=0.15) as fake:
            found = judge(fake, [f"r{i}" for i in range(8)], concurrency=concurrency)
            assert fake.max_in_flight == concurrency
        assert all(j.scored for j in found)


def test_identical_records_are_asked_once() -> None:
    with FakeJudge() as fake:
        found = judge(fake, ["same", "same", "other"])
        assert len(fake.requests) == 2
    assert [j.index for j in found] == [0, 1, 2] and all(j.scored for j in found)


def test_a_server_refusing_the_schema_is_asked_without_it() -> None:
    stats = JudgeStats()
    with FakeJudge(default=reply("Score: 64"), reject_schema=True) as fake:
        found = judge(fake, ["a", "b"], stats, concurrency=1)
        with_schema = ["response_format" in body for body in fake.bodies()]
    assert [j.score for j in found] == [64, 64]
    assert with_schema == [True, False, False] and not stats.json_schema


# Faults the user must fix ----------------------------------------------------------------------------------


def test_unreachable_endpoint_is_one_line(tmp_path: Path, capsys) -> None:
    path = responses_file(tmp_path, ["a"])
    endpoint = f"http://127.0.0.1:{free_port()}/v1"
    argv = ["judge", str(path), "--endpoint", endpoint, "--judge-model", "m", "--output-dir", str(tmp_path / "out")]
    assert cli([*argv, "--retries", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not reachable" in err and "connection refused" in err and "ollama serve" in err and endpoint in err


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (401, f"Incorrect API key provided: {SECRET[:8]}***{SECRET[-4:]}", "refused the API key (401)"),
        (404, "model 'judge-m' not found, try pulling it first", "has no model 'judge-m' (404"),
    ],
)
def test_key_and_model_errors_are_not_retried(status, message, expected, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeJudge(default=error(status, message)) as fake:
        with pytest.raises(SFTError) as raised:
            judge(fake, ["a"], concurrency=1)
        assert len(fake.requests) == 1
        assert fake.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert expected in str(raised.value)
    assert SECRET[:8] not in str(raised.value)


def test_a_named_key_variable_must_be_set(monkeypatch) -> None:
    monkeypatch.delenv("SFT_JUDGE_UNSET_KEY", raising=False)
    with FakeJudge() as fake, pytest.raises(SFTError, match="SFT_JUDGE_UNSET_KEY, which is not set"):
        judge(fake, ["a"], api_key_env="SFT_JUDGE_UNSET_KEY")


def test_a_record_the_server_keeps_failing_is_unscored_and_asked_again_next_run(tmp_path: Path) -> None:
    """Once the server has answered, a record whose requests fail every try is kept unscored, not cached."""
    markers = ["ok", "down"]
    path = responses_file(tmp_path, markers)
    with FakeJudge({"down": [error(503, "overloaded")]}) as fake:
        run = judge_file(path, settings(fake, retries=1, concurrency=1), tmp_path / "out", progress=False)
        down = run.judgements[1]
        assert not down.scored and down.attempts == 2 and "no answer after 2 tries" in down.problem
        assert len((tmp_path / "out" / JUDGE_CACHE_FILE).read_text().splitlines()) == 1
        fake.requests.clear()
        fake.script = {}
        again = judge_file(path, settings(fake, concurrency=1), tmp_path / "out", progress=False)
        assert len(fake.requests) == 1
    assert [j.scored for j in again.judgements] == [True, True]
    assert [j.cached for j in again.judgements] == [True, False]


def test_bad_input_is_refused_and_an_evaluation_beside_the_judgement_stays(tmp_path: Path) -> None:
    no_responses = tmp_path / "data.json"
    no_responses.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}]), encoding="utf-8")
    good = JudgeSettings(endpoint="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(SFTError, match="no record has a `model_response`"):
        judge_file(no_responses, good, tmp_path / "out")
    some = tmp_path / "some.json"
    some.write_text(json.dumps([record("a"), {**record("b"), "model_response": 3}]), encoding="utf-8")
    with pytest.raises(DataError, match="record 1: `model_response` is missing or not text"):
        judge_file(some, good, tmp_path / "out")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(SFTError, match="is a file"):
        judge_file(some, good, a_file)
    with pytest.raises(SFTError, match="--endpoint must be an http"):
        judge_file(some, JudgeSettings(endpoint="localhost:11434", model="m"), tmp_path / "out")


# Files, resume, secrets ----------------------------------------------------------------------------------


def test_judge_command_writes_its_files_and_never_the_key(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SFT_JUDGE_TEST_KEY", SECRET)
    markers = [f"r{i}" for i in range(12)] + ["garbage"]
    path = responses_file(tmp_path, markers)
    script = {f"r{i}": [verdict(10 * (i % 11), f"reason {i}")] for i in range(12)} | {"garbage": [reply("???")]}
    out = tmp_path / "out"
    with FakeJudge(script) as fake:
        argv = ["judge", str(path), "--endpoint", f"{fake.url}?sig=query-secret", "--judge-model", "judge-m"]
        code = cli([*argv, "--output-dir", str(out), "--api-key-env", "SFT_JUDGE_TEST_KEY", "--concurrency", "2"])
        assert {request["headers"]["authorization"] for request in fake.requests} == {f"Bearer {SECRET}"}
        assert {request["path"] for request in fake.requests} == {"/v1/chat/completions?sig=query-secret"}
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["judgements.json", "judge_metrics.json", "judge_report.md", JUDGE_CACHE_FILE]
    )
    written = "".join(p.read_text(encoding="utf-8") for p in out.iterdir())
    for text in (captured.out, captured.err, written):
        assert SECRET not in text and "query-secret" not in text
    metrics = json.loads((out / "judge_metrics.json").read_text())
    scores = [10 * (i % 11) for i in range(12)]
    assert metrics["judge_score"] == pytest.approx(sum(scores) / 12)
    low, high = metrics["judge_score_ci"]
    assert low < metrics["judge_score"] < high
    assert (metrics["scored"], metrics["unscored"], metrics["n"]) == (12, 1, 13)
    assert (metrics["judge_model"], metrics["rubric"]) == ("judge-m", "reference")
    assert metrics["bootstrap"] == {"resamples": 1000, "seed": 0, "confidence": 0.95}
    assert metrics["endpoint"] == fake.url + "?…"
    assert metrics["settings"]["api_key_env"] == "SFT_JUDGE_TEST_KEY"
    judgements = json.loads((out / "judgements.json").read_text())
    assert [j["index"] for j in judgements] == list(range(13))
    assert judgements[0] | {"from_cache": None} == {
        "index": 0, "score": 0, "reason": "reason 0", "reply": '{"reason": "reason 0", "score": 0}', "scored": True,
        "attempts": 1, "replies": 1, "problem": None, "from_cache": None,
    }  # fmt: skip
    assert judgements[12]["scored"] is False and judgements[12]["reply"] == "???"
    report = (out / "judge_report.md").read_text()
    assert "The 10 records the judge scored lowest" in report and "reason 0" in report
    assert "Unscored records" in report and "???" in report
    assert "judge score" in captured.out and "(95% CI" in captured.out and "12 of 13 (1 unscored)" in captured.out
    assert f"results in {out}/" in captured.out


def test_a_killed_run_resumes_without_asking_again(tmp_path: Path) -> None:
    """SIGKILL part way: the answers already cached are not asked for again; a cut-off last line is ignored."""
    markers = [f"r{i}" for i in range(8)]
    path = responses_file(tmp_path, markers)
    out = tmp_path / "out"
    cache = out / JUDGE_CACHE_FILE
    with FakeJudge(delay=0.3) as fake:
        argv = [sys.executable, "-m", "sft", "judge", str(path), "--endpoint", fake.url, "--judge-model", "judge-m"]
        argv += ["--output-dir", str(out), "--concurrency", "1", "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not cache.exists() or len(cache.read_bytes().splitlines()) < 3):
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        cached = len(cache.read_bytes().splitlines())
        assert 3 <= cached < 8
        with open(cache, "ab") as handle:
            handle.write(b'{"key": "cut off by the kill')
        first_run = len(fake.requests)
        fake.delay = 0
        run = judge_file(path, settings(fake), out, progress=False)
        second_run = len(fake.requests) - first_run
    assert second_run == 8 - cached
    assert run.metrics["from_cache"] == cached and run.metrics["requests"] == second_run
    assert sum(j.cached for j in run.judgements) == cached and all(j.scored for j in run.judgements)
    lines = cache.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line)["scored"] for line in lines)


def test_cache_and_summary() -> None:
    settings_ = JudgeSettings(endpoint="http://127.0.0.1:9/v1", model="m")
    base = cache_key(settings_, record("a"), "x")
    assert base == cache_key(settings_, record("a"), "x")
    assert base != cache_key(settings_, record("a"), "y")
    assert base != cache_key(JudgeSettings(endpoint="http://h/v1", model="m", rubric="dimensions"), record("a"), "x")
    assert base != cache_key(JudgeSettings(endpoint="http://h/v1", model="other"), record("a"), "x")
    assert base == cache_key(JudgeSettings(endpoint="http://other/v1", model="m", seed=3), record("a"), "x")
    assert mean_interval([70.0]) == [70.0, 70.0] and mean_interval([]) is None
    values = [float(v) for v in range(0, 101, 5)]
    assert mean_interval(values) == mean_interval(values)
    made = [Judgement(i, s, "r", "{}", True, 1, 1) for i, s in enumerate([20, 80])]
    made.append(Judgement(2, None, None, "??", False, 3, 3, problem="no score"))
    summary = judge_summary(made)
    assert (summary["judge_score"], summary["scored"], summary["unscored"], summary["n"]) == (50, 2, 1, 3)
    assert 20 <= summary["judge_score_ci"][0] <= 50 <= summary["judge_score_ci"][1] <= 80


def test_cache_ignores_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / JUDGE_CACHE_FILE
    settings_ = JudgeSettings(endpoint="http://127.0.0.1:9/v1", model="m")
    path.write_text('{"key": "k1", "scored": true, "score": 5}\n{"key": "k2", "sco', encoding="utf-8")
    cache = JudgeCache(path)
    assert list(cache.load()) == ["k1"]
    cache.append("k3", settings_, {"score": 7, "scored": True})
    assert list(cache.load()) == ["k1", "k3"]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2
    # A last line that is whole but for its newline is kept.
    path.write_text('{"key": "k1", "scored": true, "score": 5}', encoding="utf-8")
    fresh = JudgeCache(path)
    fresh.append("k2", settings_, {"score": 6, "scored": True})
    assert list(fresh.load()) == ["k1", "k2"]


# The real protocol ---------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def servable_tiny_model(source: Path, target: Path) -> Path:
    """A copy of the tiny test model that `transformers serve` can answer with. The tiny model has no chat
    template, and the server answers 500 without one (ValueError in apply_chat_template): the copy gets a
    plain one, in chat_template.jinja. Its context is 512 positions and the judge's prompt is about 800 of its
    tokens, which the server also answers with a 500 (IndexError in the position embedding): the copy has
    2048, the new positions drawn at random like the rest of its weights. The replies are noise either way."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(source / "model.safetensors")
    positions = weights["transformer.wpe.weight"]
    extra = np.random.default_rng(0).normal(0, 0.02, (2048 - len(positions), positions.shape[1]))
    weights["transformer.wpe.weight"] = np.concatenate([positions, extra.astype(positions.dtype)])
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "n_positions": 2048}), encoding="utf-8")
    (target / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    return target


def test_against_transformers_serve(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Every request reaches the real server and every record ends with its raw reply, scored or not."""
    model_dir = servable_tiny_model(tiny_model_dir, tmp_path / "tiny-chat")
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below, after the server stops)
    command = ["transformers", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        endpoint = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "transformers serve did not start"
                time.sleep(0.1)
        records = [record(f"case {i}") for i in range(2)]
        stats = JudgeStats()
        found = judge_records(
            records,
            [r["model_response"] for r in records],
            JudgeSettings(endpoint=endpoint, model=str(model_dir), max_tokens=12, concurrency=2, timeout=30, **FAST),
            stats=stats,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    served = (tmp_path / "serve.log").read_text(errors="replace")
    assert len(found) == 2
    for judgement in found:
        assert isinstance(judgement.reply, str)
        assert judgement.scored or (judgement.problem and judgement.replies == 3)
    # Each reply the judge read is one request the server received and answered (no transport retries).
    assert stats.requests == sum(j.replies for j in found) == served.count('"POST /v1/chat/completions HTTP/1.1" 200')
    assert "Ignoring unsupported fields in the request: {'response_format'}" in served


def test_a_judgement_beside_its_evaluation_keeps_the_evaluation_s_files(tmp_path: Path) -> None:
    """Judge files never share names with eval's: judging into the evaluation's directory replaces nothing."""
    out = tmp_path / "eval"
    out.mkdir()
    path = responses_file(out, ["r0"])
    (out / "report.md").write_text("the evaluation's", encoding="utf-8")
    (out / "eval_metrics.json").write_text("{}", encoding="utf-8")
    with FakeJudge({"r0": [verdict(70, "fine")]}) as fake:
        judge_file(path, settings(fake), out, progress=False)
    assert (out / "report.md").read_text() == "the evaluation's" and (out / "eval_metrics.json").read_text() == "{}"
    assert json.loads((out / "judge_metrics.json").read_text())["judge_score"] == 70


def test_eval_and_compare_take_the_judge_s_options_with_judge_in_front() -> None:
    """One helper builds both sets: the same defaults, choices and help; only the names differ."""
    from sft.evaluation.commands import JUDGE_OPTIONS, make_compare_parser, make_eval_parser, make_judge_parser

    def actions(parser):
        return {option: action for action in parser._actions for option in action.option_strings}

    judge = actions(make_judge_parser())
    for embedded in (actions(make_eval_parser()), actions(make_compare_parser())):
        for name, _, _ in JUDGE_OPTIONS:
            own, prefixed = (
                judge[f"--{name}"],
                embedded[f"--{name}" if name.startswith("judge-") else f"--judge-{name}"],
            )
            for attribute in ("help", "choices", "type", "dest", "metavar"):
                assert getattr(own, attribute) == getattr(prefixed, attribute), (name, attribute)
            assert prefixed.default is None and not prefixed.required
            assert own.required == (name in ("endpoint", "judge-model"))
    assert judge["--rubric"].default == "reference" and judge["--api-key-env"].default == "OPENAI_API_KEY"
    assert JudgeSettings(endpoint="http://x/v1", model="m", option_prefix="judge-").option("rubric") == "--judge-rubric"
    assert (
        JudgeSettings(endpoint="http://x/v1", model="m").record()
        == JudgeSettings("http://x/v1", "m", "reference", option_prefix="judge-").record()
    )
