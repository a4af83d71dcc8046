"""Preference tuning on the tiny model: `sft prefs build`, `stage: dpo` (train, save, resume), the reference
of a DPO run on a LoRA SFT model, and the errors bad preference data gets."""

import json
from pathlib import Path

import pytest
import torch

from sft.cli import main as sft_main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")
TINY_DPO = str(REPO / "recipes" / "tiny-dpo.yaml")
# fp32 throughout, so that log-probabilities compare to 1e-5 whatever the CPU's bf16 support.
FP32 = ["--bf16", "false"]


def one_error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "tiny"
    assert sft_main(["train", TINY, "--output_dir", str(out), "--eval_strategy", "no", *FP32]) == 0
    return out


@pytest.fixture(scope="module")
def pairs(sft_run: Path) -> Path:
    # Two sampled answers per record: the barely trained model's greedy answer is often empty.
    path = sft_run.parent / "pairs.json"
    argv = ["prefs", "build", "--model", str(sft_run), "--data", "sft-synth:300", "--output", str(path)]
    assert sft_main([*argv, "--samples", "2", "--temperature", "1.0", "--max-new-tokens", "24", "--no-progress"]) == 0
    return path


def dpo(out: Path, model: Path, data: Path, *extra: str) -> list[str]:
    return ["train", TINY_DPO, "--model_name_or_path", str(model), "--dataset_name", str(data),
            "--output_dir", str(out), *FP32, *extra]  # fmt: skip


def test_prefs_build_writes_valid_pairs_of_the_training_split(sft_run, pairs, capsys) -> None:
    from sft.data.split import DataArguments, split_as
    from sft.data.template import PromptTemplate

    written = json.loads(pairs.read_text())
    assert written, "no pairs"
    template = PromptTemplate.for_model(sft_run)
    records = sft_main_records("sft-synth:300")
    train = {(r["instruction"], r["input"]) for r in split_as(DataArguments(), records)["train"]}
    for pair in written:
        assert set(pair) >= {"prompt", "chosen", "rejected", "instruction", "input", "output"}
        assert pair["prompt"] == template.render(pair["instruction"], pair["input"])
        assert pair["chosen"] == pair["output"] and pair["rejected"].strip() and pair["rejected"] != pair["chosen"]
        assert (pair["instruction"], pair["input"]) in train  # --split train: never a held-out record
    capsys.readouterr()
    assert sft_main(["data", "check", str(pairs)]) == 0
    assert f"{len(written)} valid preference pairs" in capsys.readouterr().out


def sft_main_records(source: str) -> list[dict[str, str]]:
    from sft.data.load import load_records

    return load_records(source)


def test_prefs_build_never_replaces_a_file_unasked(sft_run, pairs, tmp_path, capsys) -> None:
    before = pairs.read_bytes()
    argv = ["prefs", "build", "--model", str(sft_run), "--data", "sft-synth:300", "--output", str(pairs)]
    assert sft_main(argv) == 2
    assert "--overwrite" in one_error(capsys)
    assert pairs.read_bytes() == before
    data = tmp_path / "data.json"
    data.write_text(json.dumps(sft_main_records("sft-synth:40")))
    assert sft_main(["prefs", "build", "--model", str(sft_run), "--data", str(data), "--output", str(data)]) == 2
    assert "is the --data file" in one_error(capsys)


def test_self_pairs_pick_the_worst_answer_and_skip_exact_ones() -> None:
    from sft.preference.pairs import PairStats, self_pairs

    records = [
        {"instruction": "a", "input": "", "output": "the cat sat on the mat"},
        {"instruction": "b", "input": "", "output": "yes"},
        {"instruction": "c", "input": "", "output": "blue"},
    ]
    answers = [["the cat sat on a mat", "dogs run"], ["yes", "yes"], ["", " "]]
    stats = PairStats()
    picked = self_pairs(records, answers, stats)
    assert picked == [(0, "the cat sat on the mat", "dogs run")]
    assert (stats.already_exact, stats.no_answer) == (1, 1)


def test_judge_pairs_choose_the_best_graded_answer_over_the_worst(tmp_path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from judge_server import FakeJudge, verdict

    from sft.evaluation.judge import JudgeSettings
    from sft.preference.pairs import PairStats, judge_pairs

    records = [{"instruction": f"task {i}", "input": "", "output": "ref"} for i in range(3)]
    answers = [["fine-answer", "great-answer", "poor-answer"], ["same-a", "same-b"], ["", " "]]
    script = {"great-answer": [verdict(90)], "fine-answer": [verdict(60)], "poor-answer": [verdict(10)]}
    stats = PairStats()
    with FakeJudge(script, default=verdict(50)) as fake:
        settings = JudgeSettings(endpoint=fake.url, model="judge-m", backoff=0.01, max_backoff=0.05)
        picked = judge_pairs(records, answers, settings, tmp_path / "cache.jsonl", stats, progress=False)
        asked = len(fake.requests)
    assert picked == [(0, "great-answer", "poor-answer")]
    assert (stats.no_preference, stats.no_answer) == (1, 1)  # graded alike; only empty answers
    assert asked == 5 and (tmp_path / "cache.jsonl").is_file()


@pytest.fixture(scope="module")
def dpo_run(sft_run, pairs) -> Path:
    out = sft_run.parent / "dpo"
    assert sft_main(dpo(out, sft_run, pairs, "--logging_steps", "1")) == 0
    return out


def completion_logps(model, tokenizer, pairs: list[dict[str, str]], side: str) -> torch.Tensor:
    """Sum of the log-probabilities of each pair's `side` response (and EOS) after its prompt, as sft encodes
    them: the prompt alone, then the response ids."""
    from sft.data.tokenize import encode_completions, encode_prompts

    prompts = encode_prompts(tokenizer, [p["prompt"] for p in pairs])
    responses = encode_completions(tokenizer, [p[side] for p in pairs])
    sums = []
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            ids = torch.tensor([prompt + response])
            logits = model(input_ids=ids).logits[0, :-1].float()
            logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
            sums.append(logps[len(prompt) - 1 :].sum())
    return torch.stack(sums)


def test_dpo_trains_saves_and_reports_its_figures(sft_run, pairs, dpo_run) -> None:
    from sft.models.load import load_model, load_tokenizer

    metrics = json.loads((dpo_run / "metrics.json").read_text())
    for key in ("reward_margin", "preference_accuracy", "eval_reward_margin", "eval_preference_accuracy"):
        assert isinstance(metrics[key], float), key
    state = json.loads((dpo_run / "trainer_state.json").read_text())
    accuracies = [entry["rewards/accuracies"] for entry in state["log_history"] if "rewards/accuracies" in entry]
    assert accuracies[-1] > accuracies[0]
    assert (dpo_run / "model.safetensors").is_file() and not (dpo_run / "adapter_config.json").exists()
    assert (dpo_run / "loss.png").is_file()

    # The saved policy prefers the chosen responses of its training pairs more than the SFT model does.
    train_pairs = json.loads(pairs.read_text())[:64]
    tokenizer = load_tokenizer(str(dpo_run))
    sft_model, dpo_model = load_model(str(sft_run), dtype=torch.float32), load_model(str(dpo_run), dtype=torch.float32)
    margin = (
        completion_logps(dpo_model, tokenizer, train_pairs, "chosen")
        - completion_logps(sft_model, tokenizer, train_pairs, "chosen")
        - completion_logps(dpo_model, tokenizer, train_pairs, "rejected")
        + completion_logps(sft_model, tokenizer, train_pairs, "rejected")
    )
    assert (margin > 0).float().mean() > 0.5

    # A DPO model is evaluated on the instruction split of the SFT model it started from.
    from sft.data.split import data_arguments_for_model

    assert data_arguments_for_model(dpo_run, None).dataset_name == "sft-synth"
    assert data_arguments_for_model(dpo_run, "x.json").train_fraction == 0.85

    # Its model card says it was preference-tuned, and shows the figures.
    from sft.hub.model_card import render_model_card

    card = render_model_card(dpo_run, "you/tiny-dpo")
    assert "preference-tuned with DPO (beta 0.1)" in card and "| preference accuracy, validation pairs |" in card


def test_dpo_resumes_from_its_checkpoint(sft_run, pairs, tmp_path) -> None:
    import shutil

    out = tmp_path / "dpo"
    run = dpo(out, sft_run, pairs, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
              "--eval_strategy", "no")  # fmt: skip
    assert sft_main(run) == 0
    finished = json.loads((out / "trainer_state.json").read_text())["log_history"]
    shutil.rmtree(out / "checkpoint-4")
    for name in ("model.safetensors", "sft_config.yaml", "metrics.json", "trainer_state.json"):
        (out / name).unlink()
    assert sft_main([*run, "--resume_from_checkpoint", "true"]) == 0
    resumed = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert resumed[-1]["step"] == 4
    final = [e["loss"] for e in finished if "loss" in e][-1]
    assert [e["loss"] for e in resumed if "loss" in e][-1] == pytest.approx(final, rel=1e-4)


def test_the_reference_of_dpo_on_a_lora_sft_model_is_the_sft_model(tmp_path) -> None:
    """The trap: a LoRA SFT adapter whose "reference" silently becomes the bare base."""
    from sft.models.load import load_model, load_tokenizer
    from sft.training.config import parse_recipe
    from sft.training.run import make_stage

    sft_dir = tmp_path / "lora"
    # A high learning rate, so the adapter moves the model well away from its base.
    argv = ["train", TINY, "--method", "lora", "--learning_rate", "0.05", "--max_steps", "8", "--eval_strategy", "no"]
    assert sft_main([*argv, "--output_dir", str(sft_dir), *FP32]) == 0
    pair_file = tmp_path / "pairs.json"
    tokenizer = load_tokenizer(str(sft_dir))
    from sft.data.template import PromptTemplate

    template = PromptTemplate.for_model(sft_dir)
    records = sft_main_records("sft-synth:8")
    written = [
        {"prompt": template.render(r["instruction"], r["input"]), "chosen": r["output"], "rejected": "no idea"}
        for r in records
    ]
    pair_file.write_text(json.dumps(written))

    recipe = parse_recipe([*dpo(tmp_path / "dpo", sft_dir, pair_file)[1:], "--method", "lora"])
    stage = make_stage(recipe)
    stage.check()
    data = stage.load_data(main_process=True)
    model, peft_config = stage.load_model(data)
    trainer = stage.make_trainer(model, peft_config, data, [])
    assert trainer.ref_model is None  # the reference is the policy with its new adapter switched off
    # The first four training pairs (the split keeps file order), collated as the trainer collates a batch.
    shown = written[:4]
    batch = trainer._prepare_inputs(trainer.data_collator([data.train_set[i] for i in range(len(shown))]))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    sft_model = load_model(str(sft_dir), dtype=torch.float32)  # base + the SFT adapter applied
    base = load_model("sft-tiny-gpt2", dtype=torch.float32)
    expected = completion_logps(sft_model, tokenizer, shown, "chosen")
    bare = completion_logps(base, tokenizer, shown, "chosen")
    torch.testing.assert_close(ref_chosen.float(), expected, rtol=1e-5, atol=1e-5)
    assert (ref_chosen.float() - bare).abs().max() > 1e-2
    torch.testing.assert_close(
        ref_rejected.float(), completion_logps(sft_model, tokenizer, shown, "rejected"), rtol=1e-5, atol=1e-5
    )


BAD_PAIRS = [
    ({"prompt": "p", "rejected": "r"}, "field 'chosen' is missing"),
    ({"prompt": "p", "chosen": "c", "rejected": "  "}, "field 'rejected' is empty"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "are the same text"),
    ({"prompt": "p", "chosen": ["c"], "rejected": "r"}, "field 'chosen' is an array, not a string"),
    ({"prompt": 3, "chosen": "c", "rejected": "r"}, "field 'prompt' is a number (3), not a string"),
]


@pytest.mark.parametrize("pair, message", BAD_PAIRS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_preference_data_is_one_line_naming_record_and_field(sft_run, tmp_path, capsys, pair, message) -> None:
    path = tmp_path / "pairs.json"
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    path.write_text(json.dumps([good, pair]))
    assert sft_main(["data", "check", str(path)]) == 2
    error = one_error(capsys)
    assert f"{path.name}: record 1" in error and message in error, error
    assert sft_main(dpo(tmp_path / "out", sft_run, path)) == 2
    assert message in one_error(capsys)
    assert not [p for p in (tmp_path / "out").glob("*")], "a refused run wrote files"


def test_stages_refuse_each_others_data_in_one_line(sft_run, alpaca_file, tmp_path, capsys) -> None:
    assert sft_main(dpo(tmp_path / "out", sft_run, alpaca_file)) == 2
    assert "sft prefs build" in one_error(capsys)
    pair_file = tmp_path / "pairs.json"
    pair_file.write_text(json.dumps([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
    assert sft_main(["train", TINY, "--dataset_name", str(pair_file), "--output_dir", str(tmp_path / "o")]) == 2
    assert "stage: dpo" in one_error(capsys)


def test_dpo_recipe_mistakes_are_one_line(sft_run, pairs, tmp_path, capsys) -> None:
    cases = [
        (["--beta", "0"], "beta"),
        (["--method", "prompt_tuning"], "method full or lora"),
        (["--model_name_or_path", str(tmp_path / "nowhere")], "SFT output directory"),
        (["--output_dir", str(sft_run)], "its own output_dir"),
    ]
    for extra, message in cases:
        assert sft_main([*dpo(tmp_path / "out", sft_run, pairs), *extra]) == 2
        assert message in one_error(capsys), extra


@pytest.mark.parametrize("name", ["tiny-dpo.yaml", "smollm2-135m-dpo.yaml", "gpt2-medium-dpo.yaml"])
def test_dpo_recipes_parse_with_the_books_settings(name: str) -> None:
    from sft.training.config import parse_recipe

    recipe = parse_recipe([str(REPO / "recipes" / name)])
    args = recipe.training
    assert args.stage == "dpo" and args.beta == 0.1 and args.dpo_loss_type == "sigmoid"
    assert args.num_train_epochs == 1 and not args.padding_free
    if name != "tiny-dpo.yaml":
        assert args.learning_rate == 5e-6


def test_a_dpo_recipe_without_learning_rate_or_epochs_gets_the_dpo_defaults(tmp_path) -> None:
    from sft.training.config import parse_recipe

    path = tmp_path / "dpo.yaml"
    path.write_text("stage: dpo\nmodel_name_or_path: out/sft\ndataset_name: pairs.json\n")
    recipe = parse_recipe([str(path)])
    assert (recipe.training.learning_rate, recipe.training.num_train_epochs) == (5e-6, 1.0)
    assert recipe.saved["learning_rate"] == 5e-6 and any("DPO default" in note for note in recipe.notes)
    assert parse_recipe([str(path), "--learning_rate", "1e-4"]).training.learning_rate == 1e-4
