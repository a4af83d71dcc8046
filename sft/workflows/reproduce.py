"""The results run: split an instruction file as the recipe says, fine-tune the offline default with the
project's best recipe, generate and score the test responses, and compare with the base model and,
where available, the book's GPT-2 medium responses. With the `dpo` stage, the fine-tune then answers its
training split, those answers become preference pairs against the references, DPO trains on them, and the
result gets its own row."""

import time
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.workflows.timing import minutes

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "recipes" / "smollm2-135m.yaml"
DEFAULT_DPO_RECIPE = REPO / "recipes" / "smollm2-135m-dpo.yaml"
STAGES = ("sft", "dpo")
REFERENCE_NAME = "instruction-data-with-response.json"
HEADLINE_KEYS = ("rouge_l", "bleu", "exact_match", "ended_at_eos", "n")


def parse_stages(text: str) -> tuple[str, ...]:
    """`sft` or `sft,dpo`: the stages to run, in order; DPO needs the SFT model it starts from."""
    stages = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown or not stages or stages[0] != "sft" or len(set(stages)) != len(stages):
        raise SFTError(f"--stages must be sft or sft,dpo (DPO starts from the SFT model), not {text!r}")
    return stages


def reproduce(
    data: str,
    out: Path,
    recipe_path: Path,
    overrides: list[str],
    reference: str | None,
    skip_base: bool,
    stages: tuple[str, ...] = ("sft",),
    dpo_recipe_path: Path = DEFAULT_DPO_RECIPE,
    pair_settings: Any = None,
) -> dict[str, Any]:
    from sft.data.load import display_source, save_records
    from sft.data.split import load_splits
    from sft.evaluation.evaluate import evaluate_model
    from sft.evaluation.report import results_table
    from sft.evaluation.score import score_file
    from sft.paths import EVAL_DIR, LOSS_PLOTS, atomic_write_json, atomic_write_text
    from sft.training.config import parse_recipe
    from sft.training.run import train

    if not recipe_path.is_file():
        raise SFTError(f"recipe not found: {recipe_path}")
    model_dir = out / "model"
    recipe = parse_recipe([str(recipe_path), *overrides, "--dataset_name", data, "--output_dir", str(model_dir)])
    dpo_dir, pairs_path = out / "dpo-model", out / "data" / "pairs.json"
    dpo_recipe = None
    if "dpo" in stages:  # parsed now, so that a bad DPO recipe fails before the SFT run, not after it
        if not dpo_recipe_path.is_file():
            raise SFTError(f"recipe not found: {dpo_recipe_path}")
        dpo_argv = [str(dpo_recipe_path), "--model_name_or_path", str(model_dir), "--dataset_name", str(pairs_path)]
        dpo_argv += ["--output_dir", str(dpo_dir), *[a for a in overrides if a.startswith("--overwrite_output_dir")]]
        dpo_recipe = parse_recipe(dpo_argv)
    # The split training will use, the same settings; saved so that every split can be inspected.
    splits = load_splits(recipe.data)
    for name, records in splits.items():
        save_records(out / "data" / f"{name}.json", records)
    print(
        f"split {display_source(data)}: {len(splits['train'])} train, {len(splits['validation'])} validation, "
        f"{len(splits['test'])} test ({recipe.data.describe_split()}) -> {out / 'data'}"
    )

    started = time.perf_counter()
    train_metrics = train(recipe)
    train_seconds = time.perf_counter() - started
    base_name = recipe.model.model_name_or_path
    rows: dict[str, dict[str, Any]] = {}
    if not skip_base:
        rows[f"{base_name} (base)"] = evaluate_model(
            base_name, splits["test"], out / "base-eval", data=data, split="test"
        ).metrics
    tuned = evaluate_model(str(model_dir), splits["test"], out / EVAL_DIR, data=data, split="test").metrics
    rows[f"{base_name} fine-tuned ({recipe_path.name})"] = tuned
    reference_path = Path(reference) if reference else Path(data).with_name(REFERENCE_NAME)
    if reference_path.is_file():
        rows["book's GPT-2 medium (355M) responses"] = score_file(reference_path)
    for plot in LOSS_PLOTS:
        if (model_dir / plot).is_file():
            (out / EVAL_DIR / plot).write_bytes((model_dir / plot).read_bytes())
    dpo_summary: dict[str, Any] = {}
    if dpo_recipe is not None:
        dpo_summary = preference_stage(model_dir, splits["train"], pairs_path, dpo_recipe, pair_settings)
        dpo_metrics = evaluate_model(str(dpo_dir), splits["test"], out / "dpo-eval", data=data, split="test").metrics
        rows[f"{base_name} fine-tuned + DPO ({dpo_recipe_path.name})"] = dpo_metrics

    table = results_table(rows)
    summary = {
        "data": display_source(data),
        "recipe": str(recipe_path),
        "stages": list(stages),
        "overrides": overrides,
        "train_seconds": round(train_seconds, 1),
        "train_metrics": train_metrics,
        **dpo_summary,
        "rows": {name: {key: metrics.get(key) for key in HEADLINE_KEYS} for name, metrics in rows.items()},
    }
    atomic_write_json(out / "results.json", summary)
    timing = f"training time: {minutes(train_seconds)}"
    if dpo_summary:
        timing += (
            f"; preference pairs: {minutes(dpo_summary['pairs_seconds'])}; "
            f"DPO training: {minutes(dpo_summary['dpo_train_seconds'])}"
        )
    atomic_write_text(out / "results.md", f"{table}\n\n{timing[0].upper()}{timing[1:]} (wall clock).\n")
    print(f"\n{table}\n\n{timing}; test records: {len(splits['test'])}")
    written = f"{out / EVAL_DIR} (responses.json, eval_metrics.json, report.md, loss.png)"
    print(f"wrote {written}, {model_dir}, {out / 'results.md'}")
    return summary


def preference_stage(
    model_dir: Path, train_records: list[dict[str, Any]], pairs_path: Path, dpo_recipe: Any, settings: Any = None
) -> dict[str, Any]:
    """Self pairs (`settings`, a PairSettings; greedy by default) from the SFT model's answers to its own
    training split, then DPO on them; the timings."""
    from dataclasses import replace

    from sft.inference.generate import load_for_inference
    from sft.paths import atomic_write_json
    from sft.preference.pairs import PairSettings, build_pairs
    from sft.training.run import train

    # Answers up to a quarter of the DPO max_length, so that prompt and the longer side of a pair fit in it.
    settings = replace(
        settings or PairSettings(), max_new_tokens=max(16, min(256, dpo_recipe.training.max_length // 4))
    )
    started = time.perf_counter()
    model, tokenizer, template = load_for_inference(str(model_dir))
    pairs, stats = build_pairs(model, tokenizer, template, train_records, settings)
    del model
    if not pairs:
        raise SFTError(f"no preference pairs to train DPO on: {stats.summary()}")
    atomic_write_json(pairs_path, pairs)
    pairs_seconds = time.perf_counter() - started
    print(f"preference pairs: {stats.summary()} -> {pairs_path}")
    started = time.perf_counter()
    dpo_metrics = train(dpo_recipe)
    return {
        "pairs": stats.pairs,
        "pairs_skipped": stats.records - stats.pairs,
        "pairs_seconds": round(pairs_seconds, 1),
        "dpo_train_seconds": round(time.perf_counter() - started, 1),
        "dpo_train_metrics": dpo_metrics,
    }
