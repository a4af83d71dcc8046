"""Data that used to slip through or crash later: repeated keys, broken escapes, deep nesting, gzip files,
field maps in the --format form, splits too small to train on, and secrets in data URLs."""

import base64
import gzip
import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from sft.cli import main
from sft.data.load import display_source, load_records, url_filename
from sft.data.split import DataArguments, load_splits
from sft.errors import DataError, SFTError

GOOD = {"instruction": "Name a prime.", "input": "", "output": "7"}


def problems_of(path: Path, **kwargs) -> list[str]:
    with pytest.raises(DataError) as caught:
        load_records(str(path), **kwargs)
    return caught.value.problems


# 1. Repeated keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.json", "data.jsonl"])
def test_repeated_keys_in_a_record_are_reported(tmp_path, name):
    repeated = '{"instruction": "a", "output": "b", "output": "c"}'
    if name.endswith(".jsonl"):
        text = json.dumps(GOOD) + "\n" + repeated + "\n"
    else:
        text = "[\n" + json.dumps(GOOD) + ",\n" + repeated + "\n]"
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    [problem] = problems_of(path)
    line = 2 if name.endswith(".jsonl") else 3
    assert problem.startswith(f"{path}: record 1 (line {line}): key 'output' appears 2 times")
    assert "keep one" in problem


def test_repeated_keys_in_a_single_object_file_are_reported(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{"instruction": "a", "instruction": "b", "output": "c"}', encoding="utf-8")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: record 0 (line 1): key 'instruction' appears 2 times")


def test_repeated_keys_in_nested_values_are_left_alone(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"instruction": "a", "output": "b", "meta": {"x": 1, "x": 2}}]', encoding="utf-8")
    assert load_records(str(path)) == [{"instruction": "a", "input": "", "output": "b", "meta": {"x": 2}}]


# 2. Unpaired surrogates ----------------------------------------------------------------------------


def test_unpaired_surrogate_escapes_are_reported_by_check(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps(GOOD)
        + "\n"
        + '{"instruction": "Smile.", "input": "", "output": "ok \\ud800 here"}\n'
        + '{"instruction": "Smile again.", "output": "\\ud83d\\ude00", "note": ["x", "\\udfff"]}\n',
        encoding="utf-8",
    )
    problems = problems_of(path)
    assert problems == [
        f"{path}: record 1 (line 2): field 'output' holds an unpaired surrogate escape \\ud800 at character 3; "
        "fix the escape (a surrogate must be followed by its pair, as in \\ud83d\\ude00) or remove it",
        f"{path}: record 2 (line 3): field 'note' holds an unpaired surrogate escape \\udfff in a nested value; "
        "fix the escape (a surrogate must be followed by its pair, as in \\ud83d\\ude00) or remove it",
    ]
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "unpaired surrogate" in err


def test_paired_surrogate_escapes_are_fine(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"instruction": "Smile.", "output": "\\ud83d\\ude00"}]', encoding="utf-8")
    assert load_records(str(path))[0]["output"] == "😀"


# 3. Deep nesting -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("data.json", "[" * 100000),
        ("data.json", '{"a": ' * 100000),
        ("data.jsonl", json.dumps(GOOD) + "\n" + "[" * 100000),
    ],
)
def test_deeply_nested_json_is_one_clear_line(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: ") and "nested too deeply" in problem
    if name.endswith(".jsonl"):
        assert problem.startswith(f"{path}: line 2: ")


# 4. Gzip files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.json.gz", "data.jsonl.gz", "data.JSON.GZ"])
def test_gzip_files_are_decompressed(tmp_path, alpaca_records, name):
    if ".jsonl" in name:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in alpaca_records)
    else:
        text = json.dumps(alpaca_records, ensure_ascii=False, indent=2)
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    assert load_records(str(path)) == alpaca_records


def test_gzip_jsonl_problems_give_the_line(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(GOOD) + "\n" + json.dumps({"instruction": "x"}) + "\n").encode()))
    assert problems_of(path) == [
        f"{path}: record 1 (line 2): field 'output' is missing; add it (the expected response)"
    ]


@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(b"[]")[:-6]])
def test_broken_gzip_is_one_line(tmp_path, content):
    path = tmp_path / "data.json.gz"
    path.write_bytes(content)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: ") and "gzip" in problem


# 6. dataset_field_map ------------------------------------------------------------------------------


QA = {"instruction": "question", "output": "answer"}


@pytest.mark.parametrize(
    "value",
    ["instruction=question,output=answer", " instruction = question , output=answer ", json.dumps(QA), QA],
)
def test_dataset_field_map_accepts_the_format_form_and_json(tmp_path, value):
    args = DataArguments(dataset_field_map=value)
    assert args.dataset_field_map == QA
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"question": f"{n} + 1?", "answer": str(n + 1)} for n in range(20)]), encoding="utf-8")
    args = DataArguments(dataset_name=str(path), dataset_field_map=value)
    assert load_splits(args)["train"][0] == {"instruction": "0 + 1?", "input": "", "output": "1"}


@pytest.mark.parametrize(
    "value",
    ["{not json", "question", "[1, 2]", '{"instruction": 3}', "question=instruction", "instruction=", 7],
)
def test_bad_dataset_field_map_is_one_line_naming_it(value):
    with pytest.raises(SFTError) as caught:
        DataArguments(dataset_field_map=value)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("dataset_field_map ")


# 7. Splits too small to train on -------------------------------------------------------------------


def test_one_record_is_refused_when_split(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps([GOOD]), encoding="utf-8")
    with pytest.raises(SFTError) as caught:
        load_splits(DataArguments(dataset_name=str(path)))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: 1 record gives an empty train split")
    assert "train_fraction 0.85" in message and "test_fraction 0.1" in message
    assert "more records" in message


def test_an_empty_validation_split_is_fine(tmp_path):
    path = tmp_path / "ten.json"
    path.write_text(json.dumps([{**GOOD, "output": str(n)} for n in range(10)]), encoding="utf-8")
    splits = load_splits(DataArguments(dataset_name=str(path), train_fraction=0.9, test_fraction=0.1))
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [9, 0, 1]


@pytest.mark.parametrize("value", [0, -3])
def test_max_train_records_below_one_is_refused(value):
    with pytest.raises(SFTError) as caught:
        DataArguments(max_train_records=value)
    assert str(caught.value).startswith(f"max_train_records must be 1 or more, got {value}")


def test_prepare_refuses_an_empty_train_split(tmp_path, capsys):
    path = tmp_path / "one.json"
    path.write_text(json.dumps([GOOD]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["data", "prepare", str(path), "--output-dir", str(out), "--model", "sft-tiny-gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty train split" in err and "--train-fraction" in err
    assert not out.exists()


# 8. Secrets in data URLs ---------------------------------------------------------------------------

SECRETS = ("s3cretPW", "SIGabc123", "TOKxyz789")
QUERY = f"X-Amz-Signature={SECRETS[1]}&token={SECRETS[2]}"


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        (f"https://alice:{SECRETS[0]}@example.com/path/data.json?{QUERY}", "https://example.com/path/data.json?…"),
        ("https://example.com:8443/d.jsonl", "https://example.com:8443/d.jsonl"),
        (f"HTTP://bob@example.com/d.json?{QUERY}#frag", "http://example.com/d.json?…#…"),
        (f"http://[::1]:8000/x.json?token={SECRETS[2]}", "http://[::1]:8000/x.json?…"),
        ("data/train.json", "data/train.json"),
        ("sft-synth:30", "sft-synth:30"),
        ("owner/name:train", "owner/name:train"),
    ],
)
def test_display_source_drops_credentials_and_query(source, shown):
    assert display_source(source) == shown


def test_cached_file_name_has_no_query():
    assert url_filename(f"https://alice:{SECRETS[0]}@h/p/data.jsonl.gz?{QUERY}") == "data.jsonl.gz"


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, ignoring the query, and remembers the Authorization headers it was sent."""

    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[tuple[Path, str, list]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str | None] = []
    handler = type("Handler", (RecordingHandler,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text


def secret_url(host: str, path: str) -> str:
    return f"http://alice:{SECRETS[0]}@{host}/{path}?{QUERY}"


def test_url_secrets_stay_out_of_messages_logs_and_cache(server, tmp_path, isolated_cache, caplog, capsys):
    root, host, seen = server
    shown = f"http://{host}/"
    rows = [{**GOOD, "output": str(n)} for n in range(20)]
    (root / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "bad.jsonl").write_text(json.dumps({"instruction": "x", "output": ""}) + "\n", encoding="utf-8")
    (root / "data.jsonl.gz").write_bytes(gzip.compress(json.dumps(GOOD).encode()))
    texts: list[str] = []

    with caplog.at_level(logging.INFO, logger="sft.data.split"):
        splits = load_splits(DataArguments(dataset_name=secret_url(host, "data.json")))
    assert len(splits["train"]) == 17
    assert f"Data {shown}data.json?…: 17 train" in caplog.text
    assert seen[-1] == "Basic " + base64.b64encode(f"alice:{SECRETS[0]}".encode()).decode()
    assert load_records(secret_url(host, "data.jsonl.gz")) == [GOOD]

    for path, kwargs, start in [
        ("bad.jsonl", {}, f"{shown}bad.jsonl?…: record 0 (line 1): field 'output' is empty"),
        ("absent.json", {}, f"cannot download {shown}absent.json?…: HTTP 404"),
        ("data.json", {"sha256": "f" * 64}, f"{shown}data.json?…: sha256 mismatch"),
    ]:
        with pytest.raises(SFTError) as caught:
            load_records(secret_url(host, path), **kwargs)
        assert str(caught.value).startswith(start), str(caught.value)
        texts += [str(caught.value), repr(caught.value), repr(caught.value.__cause__), repr(caught.value.__context__)]

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(SFTError) as caught:
        load_records(secret_url(f"127.0.0.1:{closed}", "data.json"))
    assert str(caught.value).startswith(f"cannot download http://127.0.0.1:{closed}/data.json?…: ")
    texts.append(str(caught.value))

    capsys.readouterr()
    assert main(["data", "check", secret_url(host, "data.json")]) == 0
    assert main(["data", "check", secret_url(host, "bad.jsonl")]) == 2
    assert main(["data", "prepare", secret_url(host, "data.json"), "--output-dir", str(tmp_path / "o")]) == 0
    assert main(["data", "inspect", secret_url(host, "data.json"), "--model", "sft-tiny-gpt2", "--json"]) == 0
    assert main(["data", "inspect", secret_url(host, "data.json"), "--model", "sft-tiny-gpt2", "--index", "99"]) == 2
    captured = capsys.readouterr()
    assert f"{shown}data.json?…: 20 valid records" in captured.out
    texts += [captured.out, captured.err, caplog.text]
    texts += [path.name for path in (isolated_cache / "downloads").iterdir()]
    assert_no_secret(*texts)


def test_records_round_trip_through_gzip(tmp_path, alpaca_records) -> None:
    from sft.data.load import load_records, save_records

    for name in ("d.json.gz", "d.jsonl.gz"):
        path = save_records(tmp_path / name, alpaca_records)
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        assert load_records(str(path)) == alpaca_records


@pytest.mark.parametrize("command", ["synth", "score"])
def test_a_file_output_that_is_a_directory_is_refused_before_the_work(tmp_path, capsys, alpaca_file, command) -> None:
    from sft.cli import main

    argv = ["data", "synth", "--n", "5", "--output", str(tmp_path)]
    if command == "score":
        argv = ["score", str(alpaca_file), "--output", str(tmp_path)]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is a directory" in errors[0]


def test_url_secrets_stay_out_of_training_and_evaluation_outputs(server, tmp_path, caplog, capsys) -> None:
    """The recipe saved with the model, the log, the metrics, the report and the model card name the data
    by scheme, host and path only."""
    root, host, _ = server
    rows = [{**GOOD, "output": str(n)} for n in range(40)]
    (root / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    url = secret_url(host, "data.json")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
    model = tmp_path / "model"
    with caplog.at_level(logging.INFO):
        assert main(["train", str(recipe), "--dataset_name", url, "--output_dir", str(model), "--max_steps", "1"]) == 0
        evaluation = tmp_path / "eval"
        argv = ["eval", "--model", str(model), "--data", url, "--output-dir", str(evaluation), "--max-new-tokens", "2"]
        assert main(argv) == 0
        assert main(["push", str(model), "--repo-id", "someone/model", "--dry-run"]) == 0
    captured = capsys.readouterr()
    written = [
        p.read_text(errors="replace") for folder in (model, evaluation) for p in folder.rglob("*") if p.is_file()
    ]
    assert f"dataset_name: http://{host}/data.json?…" in (model / "sft_config.yaml").read_text()
    assert_no_secret(captured.out, captured.err, caplog.text, *written)
