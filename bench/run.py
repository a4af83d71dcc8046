"""Benchmarks: sft's training and generation paths against the seed's and the libraries' defaults.

    python -m bench.run --quick     # GPT-2-medium shape, short runs (make bench-quick)
    python -m bench.run --full      # longer runs, every prompt, SmolLM2-135M too (make bench)

Every comparison runs its paths side by side in this one invocation, on the same data and machine,
each training path in its own process. Results go to bench/results/*.json; tables are printed.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.workload import BATCH_SIZE, DEFAULT_DATA, REPO

RESULTS = REPO / "bench" / "results"
# Steps per training run (the first is warm-up and is not timed). Generation: prompts per path, each
# continued for max_new_tokens; the quick run uses a shorter continuation to stay within a few minutes.
# The seed's way re-runs the whole sequence for every token (about a token a second here): it generates
# a few tokens for real and its full-length time comes from timed steps.
TRAIN_PATHS = ("sft_default", "sft_fp32", "seed_loop", "trl_defaults")
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "train": {"gpt2-medium": 3},
        "train_paths": TRAIN_PATHS,
        "generate": {
            "max_new_tokens": 96,
            "sft_prompts": 32,
            "hf_prompts": 1,
            "seed_real_tokens": 8,
            "seed_samples": 6,
            "extra_batch_sizes": [],
        },
    },
    "full": {
        "train": {"gpt2-medium": 6, "smollm2-135m-instruct": 6},
        "train_paths": TRAIN_PATHS,
        "generate": {
            "max_new_tokens": 256,
            "sft_prompts": 110,
            "hf_prompts": 8,
            "seed_real_tokens": 32,
            "seed_samples": 16,
            "extra_batch_sizes": [],
        },
    },
}
CHILD_TIMEOUT_S = 3600


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="short runs (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="longer runs, every prompt")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"seed data file (default {DEFAULT_DATA})")
    parser.add_argument("--only", choices=["train", "generate"], help="run one benchmark")
    parser.add_argument(
        "--train-paths", help=f"comma-separated training paths instead of the mode's, from {', '.join(TRAIN_PATHS)}"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON results go")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each path, wait up to SECONDS for other processes to leave the CPU idle",
    )
    parser.set_defaults(mode="quick")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def model_shape(model: str) -> dict[str, int]:
    """Parameter counts from the config alone (meta tensors: nothing is allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.flops import shape_of
    from sft.models.load import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model))
    with torch.device("meta"):
        return shape_of(AutoModelForCausalLM.from_config(config))


def settle(max_wait_s: float) -> None:
    if max_wait_s <= 0:
        return
    from bench.quiet import wait_until_quiet

    waited, busy = wait_until_quiet(max_wait_s)
    if busy:
        say(f"  still busy after {waited:.0f} s: {'; '.join(busy)[:200]}")
    elif waited > 10:
        say(f"  waited {waited:.0f} s for the CPU to be idle")


def train_benchmark(
    model: str, steps: int, names: tuple[str, ...], data: Path, peaks: dict[str, float], wait_s: float
) -> dict[str, Any]:
    from bench.assets import model_dir
    from bench.child import run_child

    paths: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    shape = model_shape(model_dir(model))
    for path in names:
        settle(wait_s)
        say(f"train {model}: {path}, {steps} steps of {BATCH_SIZE} records")
        spec = {"path": path, "model": model_dir(model), "data": str(data), "steps": steps, "batch_size": BATCH_SIZE}
        raw[path] = run_child("bench.train_paths", spec, CHILD_TIMEOUT_S)
        paths[path] = report.training_figures(raw[path], shape, peaks)
        f = paths[path]
        say(
            f"  {f['tokens_per_s']:.1f} real tokens/s, {f['s_per_step']:.2f} s/step, "
            f"peak RSS {f['peak_rss_gb']:.2f} GB, final loss {f['final_loss']:.4f}, {f['cores_used']:.1f} cores used"
        )
    same = all(r["batch_lengths"] == raw[names[0]]["batch_lengths"] for r in raw.values())
    if not same:
        raise SystemExit(f"train {model}: the paths did not see the same batches; see the raw results")
    report.add_training_ratios(paths)
    return {"model": model, "steps": steps, "batch_size": BATCH_SIZE, "shape": shape, "paths": paths, "raw": raw}


def generate_benchmark(settings: dict[str, Any], data: Path, wait_s: float) -> dict[str, Any]:
    """One process per path. `generate` runs first: the seed way's sampled steps need its continuation."""
    from bench.assets import model_dir
    from bench.child import run_child
    from sft.inference.settings import DEFAULT_BATCH_SIZE

    limit = settings["max_new_tokens"]
    base = {"model": model_dir("gpt2-medium"), "data": str(data), "max_new_tokens": limit}
    runs = [("hf_generate", {"path": "hf_generate", "prompts": settings["hf_prompts"]})]
    for batch_size in [DEFAULT_BATCH_SIZE, *settings["extra_batch_sizes"]]:
        name = "sft_batched" if batch_size == DEFAULT_BATCH_SIZE else f"sft_batched_{batch_size}"
        runs.append((name, {"path": "sft_batched", "prompts": settings["sft_prompts"], "batch_size": batch_size}))
    runs.append(
        (
            "seed_way",
            {"path": "seed_way", "real_tokens": settings["seed_real_tokens"], "samples": settings["seed_samples"]},
        )
    )
    paths: dict[str, dict[str, Any]] = {}
    for name, spec in runs:
        settle(wait_s)
        if name == "seed_way":
            spec["continuation"] = paths["hf_generate"]["continuation"]
            say(
                f"generate gpt2-medium: {name}, 1 prompt, {spec['real_tokens']} tokens for real, {limit} from "
                f"{spec['samples']} timed steps"
            )
        else:
            say(f"generate gpt2-medium: {name}, {spec['prompts']} prompts x {limit} new tokens")
        paths[name] = run_child("bench.generate_paths", {**base, **spec}, CHILD_TIMEOUT_S)
        f = paths[name]
        say(
            f"  {f['tokens_per_s']:.2f} tokens/s{' (estimated)' if name == 'seed_way' else ''}, "
            f"{f['cores_used']:.1f} cores used"
        )
    reference = paths["hf_generate"]["first_response"]
    for name, f in paths.items():
        f["same_first_response"] = f.pop("same_tokens") if name == "seed_way" else f["first_response"] == reference
    paths["hf_generate"].pop("continuation")
    report.add_generation_ratios(paths)
    return {
        "model": "gpt2-medium",
        "max_new_tokens": limit,
        "default_batch_size": DEFAULT_BATCH_SIZE,
        "settings": settings,
        "paths": paths,
    }


def environment() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "load_average_start": os.getloadavg()[0],
    }


def write(results_dir: Path, name: str, data: dict[str, Any]) -> None:
    from sft.paths import atomic_write_json

    atomic_write_json(results_dir / f"{name}.json", data)


def main(argv: list[str] | None = None) -> int:
    from bench.assets import gpt2_medium_dir
    from bench.flops import matmul_peak_gflops

    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"seed data not found: {args.data}; pass --data PATH")
    settings = dict(MODES[args.mode])
    if args.train_paths:
        settings["train_paths"] = tuple(args.train_paths.split(","))
        unknown = set(settings["train_paths"]) - set(report.TRAIN_LABELS)
        if unknown:
            raise SystemExit(f"unknown training path(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    env = environment()
    if env["load_average_start"] > 0.5:
        say(f"note: load average {env['load_average_start']:.1f}: other work shares the CPU, timings will be noisy")
    gpt2_medium_dir()  # built once (tokenizer from the whisper sdist, seeded random weights)
    settle(args.wait_quiet)
    peaks_start = {dtype: matmul_peak_gflops(dtype) for dtype in ("float32", "bfloat16")}
    say(
        f"matmul peak {peaks_start['float32']:.0f} GFLOP/s fp32, {peaks_start['bfloat16']:.0f} bf16 "
        f"({env['torch_threads']} threads)"
    )

    train_results: dict[str, Any] = {}
    if args.only in (None, "train"):
        for model, steps in settings["train"].items():
            train_results[model] = train_benchmark(
                model, steps, settings["train_paths"], args.data, peaks_start, args.wait_quiet
            )
    generate_result = None
    if args.only in (None, "generate"):
        generate_result = generate_benchmark(settings["generate"], args.data, args.wait_quiet)

    # The peaks are measured again at the end: MFU is taken against the better of the two.
    settle(args.wait_quiet)
    peaks_end = {dtype: matmul_peak_gflops(dtype) for dtype in ("float32", "bfloat16")}
    peaks = {dtype: max(peaks_start[dtype], peaks_end[dtype]) for dtype in peaks_start}
    env.update(
        matmul_peak_gflops={"start": peaks_start, "end": peaks_end, "used": peaks},
        load_average_end=os.getloadavg()[0],
        mode=args.mode,
        wall_s=time.perf_counter() - started,
    )
    for model, result in train_results.items():
        shape = result["shape"]
        result["paths"] = {k: report.training_figures(result["raw"][k], shape, peaks) for k in result["raw"]}
        report.add_training_ratios(result["paths"])
        write(args.results, f"train-{model}", {"environment": env, **result})
    if generate_result:
        write(args.results, "generate-gpt2-medium", {"environment": env, **generate_result})
    values = report.summary(train_results.get("gpt2-medium"), generate_result)
    write(args.results, "summary", {**values, "environment": env})

    print()
    for model, result in train_results.items():
        print(report.training_table(model, result), end="\n\n")
    if generate_result:
        print(report.generation_table("gpt2-medium", generate_result), end="\n\n")
    print(report.summary_table(values))
    print(
        f"\n*MFU: model FLOPs/s over the fp32 matmul peak ({peaks['float32']:.0f} GFLOP/s here), or the bf16 "
        f"peak ({peaks['bfloat16']:.0f}) for paths under bf16 autocast."
    )
    print(
        f"{args.mode} run, {env['wall_s'] / 60:.1f} min; load average {env['load_average_start']:.1f} at start, "
        f"{env['load_average_end']:.1f} at end; results in {args.results}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
