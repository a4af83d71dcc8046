"""`sft data check | prepare | inspect | synth`: output, files written and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA

from sft.cli import main
from sft.data.load import load_records
from sft.data.synth import synth_records
from sft.data.template import PromptTemplate
from sft.data.tokenize import IGNORE_INDEX, encode_prompts

MULTILINGUAL = [
    {"instruction": "把这句话翻译成英文。", "input": "我喜欢学习。", "output": "I like studying. 📚"},
    {"instruction": "Reply with an emoji.", "input": "", "output": "👍🏽 ✨ 🧑‍🚀"},
    {"instruction": "ترجم الجملة", "input": "أنا بخير", "output": "I am fine."},
    {"instruction": "מה השעה?", "input": "", "output": "השעה שלוש."},
    {"instruction": "Mixed text", "input": "abc עברית 123 العربية", "output": "Ça va? ñ ß"},
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m sft data ...` in a child process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "sft", "data", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def write(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


# Help and exit codes -------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [None, "check", "prepare", "inspect", "synth"])
def test_help_for_every_action(action):
    result = run_cli(*([action] if action else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: sft data {action or ''}".rstrip())
    assert "examples:" in result.stdout


def test_help_answers_without_importing_the_model_stack():
    code = (
        "import sys; from sft.cli import main; main(['data', '--help']); main(['data', 'prepare', '--help']);"
        "heavy = {'torch', 'transformers', 'datasets', 'trl'} & set(sys.modules); assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_usage_errors_exit_2(capsys):
    assert main(["data", "prepare", "data.json"]) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert main(["data", "synth", "--n", "0", "--output", "x.json"]) == 2


def test_no_action_prints_help(capsys):
    assert main(["data"]) == 0
    assert "check" in capsys.readouterr().out


# check ---------------------------------------------------------------------------------------------


def test_check_valid_file(alpaca_file, capsys):
    assert main(["data", "check", str(alpaca_file)]) == 0
    assert capsys.readouterr().out == f"{alpaca_file}: 4 valid records\n"


def test_check_lists_every_problem_without_a_traceback(tmp_path):
    path = write(
        tmp_path / "bad.json",
        [
            {"instruction": "a", "input": "", "output": "b"},
            {"instruction": "a", "input": "", "output": "b"},
            {"instruction": "c", "input": 3, "output": ""},
            "text",
        ],
    )
    result = run_cli("check", str(path))
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {path}: record 1 (line 7): duplicates record 0 exactly; remove one of the two",
        f"error: {path}: record 2 (line 12): field 'input' is a number (3), not a string; write it as text in quotes",
        f"error: {path}: record 2 (line 12): field 'output' is empty; give the record the expected response "
        "or remove it",
        f"error: {path}: record 3 (line 17): is a string, not an object; each record must be an object like "
        '{"instruction": "...", "input": "...", "output": "..."}',
    ]


def test_check_malformed_json_gives_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "a",\n "output": "b",}]', encoding="utf-8")
    assert main(["data", "check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: line 2, column 16: invalid JSON")


def test_check_missing_file_is_one_error_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no such file" in err


def test_check_formats_and_mappings(tmp_path, capsys):
    dolly = tmp_path / "dolly.jsonl"
    dolly.write_text(json.dumps({"instruction": "Hi?", "context": "", "response": "Hello."}) + "\n", encoding="utf-8")
    qa = write(tmp_path / "qa.json", [{"question": "2+2?", "answer": "4"}])
    assert main(["data", "check", str(dolly), "--format", "dolly"]) == 0
    assert main(["data", "check", str(qa), "--format", "instruction=question,output=answer"]) == 0
    assert main(["data", "check", str(qa)]) == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_check_max_length(alpaca_file, capsys):
    assert main(["data", "check", str(alpaca_file), "--model", "sft-tiny-gpt2", "--max-length", "5"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 5 and errors[0].startswith(
        f"error: {alpaca_file}: 4 of 4 records are longer than --max-length 5"
    )
    assert [line.split(": ")[2] for line in errors[1:]] == [f"record {n} (line 1)" for n in range(4)]
    assert main(["data", "check", str(alpaca_file), "--model", "sft-tiny-gpt2", "--max-length", "4096"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{alpaca_file}: 4 valid records"
    assert out[1].startswith("tokens per record with sft-tiny-gpt2: min ") and out[1].endswith("(limit 4096)")


# prepare -------------------------------------------------------------------------------------------


def prepare(source: Path | str, out: Path, *extra: str) -> int:
    return main(["data", "prepare", str(source), "--output-dir", str(out), "--model", "sft-tiny-gpt2", *extra])


def read_splits(out: Path) -> dict[str, list]:
    return {
        name: json.loads((out / f"{name}.json").read_text(encoding="utf-8")) for name in ("train", "validation", "test")
    }


def test_prepare_writes_three_splits_and_prints_statistics(tmp_path, capsys):
    source = write(tmp_path / "synth.json", synth_records(40, 0))
    assert prepare(source, tmp_path / "out") == 0
    splits = read_splits(tmp_path / "out")
    assert [len(splits[n]) for n in ("train", "validation", "test")] == [34, 2, 4]
    assert splits["train"] + splits["test"] + splits["validation"] == load_records(str(source))
    assert (tmp_path / "out" / "train.json").read_text(encoding="utf-8").startswith('[\n    {\n        "instruction"')
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{source}: 40 records -> {tmp_path / 'out'}/{{train,validation,test}}.json"
    assert lines[2].split() == ["split", "records", "min", "mean", "p95", "max"]
    assert [line.split()[:2] for line in lines[3:]] == [["train", "34"], ["validation", "2"], ["test", "4"]]


def test_prepare_shuffle_and_fractions(tmp_path):
    source = write(tmp_path / "synth.json", synth_records(100, 0))
    assert (
        prepare(source, tmp_path / "a", "--shuffle", "--seed", "5", "--train-fraction", "0.5", "--test-fraction", "0.3")
        == 0
    )
    assert (
        prepare(source, tmp_path / "b", "--shuffle", "--seed", "5", "--train-fraction", "0.5", "--test-fraction", "0.3")
        == 0
    )
    first, second = read_splits(tmp_path / "a"), read_splits(tmp_path / "b")
    assert first == second
    assert [len(first[n]) for n in ("train", "validation", "test")] == [50, 20, 30]
    assert first["train"] != load_records(str(source))[:50]


def test_prepare_refuses_overlong_records_and_writes_nothing(alpaca_file, tmp_path, capsys):
    assert prepare(alpaca_file, tmp_path / "out", "--max-length", "5") == 2
    assert "4 of 4 records are longer than --max-length 5 tokens" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_utf8_round_trip_load_prepare_load(tmp_path):
    source = write(tmp_path / "multi.json", MULTILINGUAL)
    assert prepare(source, tmp_path / "out", "--train-fraction", "0.6", "--test-fraction", "0.2") == 0
    reloaded = {name: load_records(str(tmp_path / "out" / f"{name}.json")) for name in ("train", "test", "validation")}
    assert reloaded["train"] + reloaded["test"] + reloaded["validation"] == MULTILINGUAL
    text = (tmp_path / "out" / "train.json").read_text(encoding="utf-8")
    assert "我喜欢学习" in text and "👍🏽" in text and "أنا بخير" in text and "\\u" not in text


@pytest.mark.skipif(not (SHARED_DATA / "instruction-data.json").is_file(), reason="shared seed data is not available")
def test_prepare_seed_data_reproduces_the_reference_split(tmp_path, capsys):
    assert prepare(SHARED_DATA / "instruction-data.json", tmp_path / "out") == 0
    splits = read_splits(tmp_path / "out")
    assert [len(splits[n]) for n in ("train", "validation", "test")] == [935, 55, 110]
    reference = json.loads((SHARED_DATA / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    assert splits["test"] == [{k: v for k, v in r.items() if k != "model_response"} for r in reference]
    assert "1100 records" in capsys.readouterr().out


# inspect -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sft-tiny-gpt2", "sft-tiny-llama"])
def test_inspect_json_shows_ignored_prompt_and_learned_eos(alpaca_file, alpaca_records, capsys, model, request):
    tokenizer = request.getfixturevalue("gpt2_tokenizer" if model.endswith("gpt2") else "llama_tokenizer")
    assert main(["data", "inspect", str(alpaca_file), "--model", model, "--index", "2", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    record = alpaca_records[2]
    prompt = PromptTemplate().render(record["instruction"], record["input"])
    assert view["prompt"] == prompt and view["completion"] == record["output"] == "早上好 🌅"
    prompt_ids = encode_prompts(tokenizer, [prompt])[0]
    n = len(prompt_ids)
    assert view["input_ids"][:n] == prompt_ids
    assert view["labels"][:n] == [IGNORE_INDEX] * n
    assert view["labels"][n:] == view["input_ids"][n:]
    assert view["input_ids"][-1] == view["labels"][-1] == tokenizer.eos_token_id
    assert view["prompt_tokens"] == n and len(view["tokens"]) == len(view["input_ids"])
    assert tokenizer.decode(view["input_ids"][n:-1]) == record["output"]


def test_inspect_table(alpaca_file, gpt2_tokenizer, capsys):
    assert main(["data", "inspect", str(alpaca_file), "--model", "sft-tiny-gpt2", "--index", "-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{alpaca_file}: record 3, tokenized with sft-tiny-gpt2"
    assert lines[2].split() == ["pos", "token", "id", "token", "label"]
    assert lines[3].split()[0] == "0" and lines[3].endswith("-100 (ignored)")
    last = lines[-1].split()
    assert last[1] == last[-1] == str(gpt2_tokenizer.eos_token_id) and last[2] == "'<|endoftext|>'"


def test_inspect_index_out_of_range(alpaca_file, capsys):
    assert main(["data", "inspect", str(alpaca_file), "--model", "sft-tiny-gpt2", "--index", "4"]) == 2
    assert capsys.readouterr().err == f"error: --index 4 is out of range: {alpaca_file} has 4 records (0 to 3)\n"


# synth ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["synth.json", "synth.jsonl"])
def test_synth_writes_the_generated_records(tmp_path, capsys, name):
    output = tmp_path / name
    assert main(["data", "synth", "--n", "50", "--seed", "2", "--output", str(output)]) == 0
    assert load_records(str(output)) == synth_records(50, 2)
    assert capsys.readouterr().out.startswith(f"wrote 50 records (seed 2) to {output}: ")
