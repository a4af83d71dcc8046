"""Loading records from files (JSON, JSON Lines), URLs, the Hub and the built-in synthetic set."""

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from sft.data.load import load_records, save_records
from sft.errors import DataError, SFTError

MULTILINGUAL = [
    {"instruction": "翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."},
    {"instruction": "Describe the mood.", "input": "🎉🥳👩‍👩‍👧‍👦", "output": "Festive 🎊, with a family emoji."},
    {"instruction": "ترجم إلى الإنجليزية", "input": "صباح الخير", "output": "Good morning"},
    {"instruction": "תרגם לאנגלית", "input": "", "output": "שלום means hello, mixed with English text."},
    {"instruction": "Keep the separators.", "input": "a\u2028b\u2029c\x85d", "output": "e\u0301 Å ﬁ"},
]


def write_json(path: Path, data, **kwargs) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, **kwargs), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_json_array(alpaca_file, alpaca_records):
    assert load_records(str(alpaca_file)) == alpaca_records


def test_jsonl_with_blank_lines(tmp_path, alpaca_records):
    path = write_jsonl(tmp_path / "data.jsonl", alpaca_records)
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert load_records(str(path)) == alpaca_records


def test_jsonl_content_in_a_json_file_is_recognised(tmp_path, alpaca_records):
    path = write_jsonl(tmp_path / "data.json", alpaca_records)
    assert load_records(str(path)) == alpaca_records


def test_single_line_object_is_one_record(tmp_path, alpaca_records):
    path = write_json(tmp_path / "one.json", alpaca_records[0])
    assert load_records(str(path)) == alpaca_records[:1]


def test_missing_or_null_input_becomes_empty_and_extra_fields_keep_their_order(tmp_path):
    raw = [
        {"id": 7, "instruction": "Say hi.", "output": "Hi.", "kind": "writing"},
        {"instruction": "Say bye.", "input": None, "output": "Bye.", "model_response": "Bye!"},
    ]
    records = load_records(str(write_json(tmp_path / "d.json", raw)))
    assert [list(r) for r in records] == [
        ["id", "instruction", "input", "output", "kind"],
        ["instruction", "input", "output", "model_response"],
    ]
    assert records[0]["input"] == records[1]["input"] == ""
    assert records[0]["id"] == 7 and records[1]["model_response"] == "Bye!"


def test_dolly_format_detected_and_explicit(tmp_path):
    raw = [
        {"instruction": "Summarise.", "context": "Long text.", "response": "Short.", "category": "summarization"},
        {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "open_qa"},
    ]
    path = write_jsonl(tmp_path / "dolly.jsonl", raw)
    expected = [
        {"instruction": "Summarise.", "input": "Long text.", "output": "Short.", "category": "summarization"},
        {"instruction": "Name a colour.", "input": "", "output": "Blue.", "category": "open_qa"},
    ]
    assert load_records(str(path)) == expected
    assert load_records(str(path), format="dolly") == expected
    assert [list(r) for r in load_records(str(path))] == [["instruction", "input", "output", "category"]] * 2


def test_field_mapping_as_dict_and_as_format_string(tmp_path):
    raw = [{"question": "2 + 2?", "answer": "4", "source": "quiz"}]
    path = write_json(tmp_path / "qa.json", raw)
    expected = [{"instruction": "2 + 2?", "input": "", "output": "4", "source": "quiz"}]
    assert load_records(str(path), field_map={"instruction": "question", "output": "answer"}) == expected
    assert load_records(str(path), format="instruction=question, output=answer") == expected


def test_mapping_problems_name_the_users_field(tmp_path):
    path = write_json(tmp_path / "qa.json", [{"question": "2 + 2?", "answer": ""}])
    with pytest.raises(DataError) as caught:
        load_records(str(path), field_map={"instruction": "question", "output": "answer"})
    assert caught.value.problems == [
        f"{path}: record 0 (line 1): field 'answer' (mapped to output) is empty; "
        "give the record the expected response or remove it"
    ]


def test_bad_formats_and_mappings_are_explained(tmp_path, alpaca_file):
    with pytest.raises(SFTError, match="unknown format 'yaml'"):
        load_records(str(alpaca_file), format="yaml")
    with pytest.raises(SFTError, match="targets must be instruction, input or output"):
        load_records(str(alpaca_file), field_map={"question": "instruction"})
    with pytest.raises(SFTError, match="TARGET=FIELD"):
        load_records(str(alpaca_file), format="instruction=,output=answer")
    unknown = write_json(tmp_path / "odd.json", [{"q": "a", "a": "b"}])
    with pytest.raises(SFTError, match=r"cannot tell the format from the fields \(a, q\)"):
        load_records(str(unknown))


def test_utf8_round_trip_through_save_and_load(tmp_path):
    source = write_json(tmp_path / "multi.json", MULTILINGUAL, indent=2)
    records = load_records(str(source))
    assert records == MULTILINGUAL
    for name in ("again.json", "again.jsonl"):
        saved = save_records(tmp_path / name, records)
        assert load_records(str(saved)) == MULTILINGUAL
        text = saved.read_text(encoding="utf-8")
        assert "今天天气很好" in text and "صباح الخير" in text and "🎉" in text, "written as text, not escapes"


def test_byte_order_mark_is_tolerated(tmp_path, alpaca_records):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(alpaca_records).encode())
    assert load_records(str(path)) == alpaca_records


def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "c"}\n]', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_records(str(path))
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: line 3, column 3: invalid JSON (Expecting ',' delimiter)")


def test_malformed_jsonl_reports_every_bad_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n\n{"x": 1,}\n', encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_records(str(path))
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}: line 2, column 17: invalid JSON")
    assert problems[1].startswith(f"{path}: line 4, column 9: invalid JSON")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b'["ok", "\xff"]', "byte 8 (0xff) is not valid UTF-8"),
        (b'{\n  "data": [{"instruction": "a", "output": "b"}]\n}', "the records may be the list under 'data'"),
        (b"[]", "holds no records"),
        (b'"just a string"', "the top level is a string, not an array of records"),
    ],
)
def test_unusable_files_are_explained(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_records(str(path))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}: ") and message in caught.value.problems[0]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SFTError, match="no such file"):
        load_records(str(tmp_path / "absent.json"))
    with pytest.raises(SFTError, match="is a directory"):
        load_records(str(tmp_path))


def test_local_file_sha256_pin(alpaca_file, alpaca_records):
    digest = hashlib.sha256(alpaca_file.read_bytes()).hexdigest()
    assert load_records(str(alpaca_file), sha256=digest.upper()) == alpaca_records
    with pytest.raises(SFTError, match="sha256 mismatch"):
        load_records(str(alpaca_file), sha256="0" * 64)
    with pytest.raises(SFTError, match="not a sha256 digest"):
        load_records(str(alpaca_file), sha256="abc")


def test_synthetic_source():
    records = load_records("sft-synth")
    assert len(records) == 1200
    assert load_records("sft-synth:30") == records[:30]
    assert all(r["kind"] for r in records)
    with pytest.raises(SFTError, match="positive whole number"):
        load_records("sft-synth:many")


def test_hub_id_fails_fast_and_clearly_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(SFTError) as caught:
        load_records("someone/no-such-dataset")
    assert time.monotonic() - start < 30
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("someone/no-such-dataset: not a local file") and "HF_HUB_OFFLINE" in message


# URLs ----------------------------------------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path, monkeypatch) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_download_with_matching_pin_is_cached_once(http_root, alpaca_records):
    root, base = http_root
    path = write_json(root / "data.json", alpaca_records)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_records(f"{base}/data.json", sha256=digest) == alpaca_records
    path.unlink()  # a second load must not need the server
    assert load_records(f"{base}/data.json", sha256=digest) == alpaca_records
    assert load_records(f"{base}/data.json") == alpaca_records


def test_url_with_wrong_pin_fails_and_keeps_nothing(http_root, alpaca_records):
    root, base = http_root
    path = write_jsonl(root / "data.jsonl", alpaca_records)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SFTError) as caught:
        load_records(f"{base}/data.jsonl", sha256="f" * 64)
    assert "sha256 mismatch" in str(caught.value) and actual in str(caught.value)
    path.unlink()
    with pytest.raises(SFTError, match="HTTP 404"):
        load_records(f"{base}/data.jsonl")


def test_url_problems_name_the_url(http_root):
    root, base = http_root
    write_json(root / "bad.json", [{"instruction": "x", "output": ""}])
    with pytest.raises(DataError) as caught:
        load_records(f"{base}/bad.json")
    assert caught.value.problems[0].startswith(f"{base}/bad.json: record 0 (line 1): field 'output' is empty")
