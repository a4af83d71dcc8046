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
# Steps per training run (the first is warm-up and is not timed; LoRA's comparison leaves out three, below).
# Generation: prompts per path, each continued for max_new_tokens; the quick run uses a shorter continuation to
# stay within a few minutes.
# The seed's way re-runs the whole sequence for every token (about a token a second here): it generates
# a few tokens for real and its full-length time comes from timed steps.
#
# Bounds: `budget_s` is the seconds of training steps a path may spend at most (None: what the time cap gives it).
# No step starts that would end past its budget (bench.instrument estimates the next step), and a step still
# running when the child's time is spent is interrupted, so that a path far slower than the others (bf16 autocast
# where the CPU emulates bf16: half an hour for TRL's defaults on an AVX2-only machine) is timed over what fits and
# reported as "bounded: N of M steps in S s". `total_s` caps the whole quick run: each child process is given at
# most what is left of it, less a share for those after it.
TRAIN_PATHS = ("sft_default", "sft_fp32", "seed_loop", "trl_defaults")
# LoRA against full fine-tuning leaves out three steps, not one: full fine-tuning's second and third steps still
# touch its gradients and optimizer state for the first time and run slower than its later ones, while LoRA's
# have almost nothing new to touch, so timing them favoured LoRA (measured: bench/README.md, LoRA section).
LORA_WARMUP_STEPS = 3
# Full fine-tuning and LoRA side by side, taking turns step by step (bench/child.py): timed one after the other,
# their ratio on the 2-core AVX512-BF16 EPYC ran from 1.00x to 1.53x over sixty-five pairs of runs, the drift between
# runs; taking turns, six pairs read 1.15x to 1.23x (bench/README.md, LoRA section).
LORA_IN_TURNS = ("sft_default", "sft_lora")
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "train": {"gpt2-medium": 3},
        "train_paths": TRAIN_PATHS,
        "budget_s": None,  # the last stage: each path takes its share of what the others left
        "lora": {
            "model": "smollm2-135m-instruct",
            "steps": 12,
            "warmup_steps": LORA_WARMUP_STEPS,
            "budget_s": 20.0,
            "paths": ("sft_default", "sft_lora"),
            "in_turns": LORA_IN_TURNS,
        },
        "generate": {
            "max_new_tokens": 16,
            "sft_prompts": 32,
            "hf_prompts": 1,
            "seed_real_tokens": 8,
            "seed_samples": 6,
            "extra_batch_sizes": [],
        },
        "static_vs_continuous": {"model": "smollm2-135m-instruct", "prompts": 16, "max_new_tokens": 16},
        "total_s": 270.0,
    },
    "full": {
        "train": {"gpt2-medium": 6, "smollm2-135m-instruct": 6},
        "train_paths": TRAIN_PATHS,
        "budget_s": 300.0,
        "lora": {
            "model": "smollm2-135m-instruct",
            "steps": 12,
            "warmup_steps": LORA_WARMUP_STEPS,
            "budget_s": 120.0,
            "paths": ("sft_default", "sft_lora", "sft_lora_peft"),
            "in_turns": LORA_IN_TURNS,
        },
        "generate": {
            "max_new_tokens": 256,
            "sft_prompts": 110,
            "hf_prompts": 8,
            "seed_real_tokens": 32,
            "seed_samples": 16,
            "extra_batch_sizes": [],
        },
        "static_vs_continuous": {"model": "smollm2-135m-instruct", "prompts": 110, "max_new_tokens": 128},
        "total_s": None,
    },
}
CHILD_TIMEOUT_S = 3600
# What a child process needs at the least (imports, model load, one step or batch): kept back from the quick run's
# remaining time for every child still to come.
CHILD_RESERVE_S = 10.0
CHILD_GRACE_S = 10.0


# The quick run's time cap is shared out among its stages (a stage gets its share of what is left when it starts,
# against the stages still to come), and within a stage equally among the child processes still to run; the
# end-of-run peak measurement keeps FINAL_RESERVE_S. The stages run in this order: those whose work is small and
# fixed first, so that what they leave unused goes to GPT-2-medium training, which can use any time it gets (its
# first step alone, paying one-off costs, took 13 to 24 s a path on a 2-core EPYC).
STAGE_SHARES = {"lora": 0.25, "generate": 0.25, "static_vs_continuous": 0.15, "train": 0.35}
FINAL_RESERVE_S = 15.0


class Deadline:
    """The run's time cap: how long each child process may take so that the ones after it still fit."""

    def __init__(self, total_s: float | None, stages: list[str], started: float):
        """`started`: the run's start on `time.monotonic`'s clock."""
        self.end = None if total_s is None else started + total_s - FINAL_RESERVE_S
        self.stages = list(stages)
        self.stage_end: float | None = None

    def start_stage(self, name: str) -> None:
        if self.end is None:
            return
        shares = [STAGE_SHARES[stage] for stage in self.stages[self.stages.index(name) :]]
        left = self.end - time.monotonic()
        self.stage_end = time.monotonic() + left * shares[0] / sum(shares)

    def child_s(self, children_left: int) -> float:
        """Seconds for the next child, with `children_left` children (this one included) left in the stage."""
        if self.end is None or self.stage_end is None:
            return CHILD_TIMEOUT_S
        left = (self.stage_end - time.monotonic()) / max(children_left, 1)
        return max(CHILD_RESERVE_S, min(CHILD_TIMEOUT_S, left))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="short runs (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="longer runs, every prompt")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"seed data file (default {DEFAULT_DATA})")
    parser.add_argument(
        "--only",
        choices=["train", "lora", "generate", "static_vs_continuous"],
        help="run one benchmark: train (lora, then the GPT-2-medium paths), lora (LoRA against full fine-tuning), "
        "generate (GPT-2-medium paths, then static_vs_continuous), static_vs_continuous",
    )
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
    model: str,
    steps: int,
    names: tuple[str, ...],
    data: Path,
    peaks: dict[str, float],
    wait_s: float,
    budget_s: float | None,
    deadline: Deadline,
    warmup: int = 1,
    in_turns: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Each path in its own process over the same batches, the two `in_turns` side by side taking turns; rates
    leave out the first `warmup` steps."""
    from bench.assets import model_dir
    from bench.child import PathFailed, run_child, run_children_in_turns
    from bench.machine import bf16_native

    raw: dict[str, Any] = {}
    shape = model_shape(model_dir(model))
    # Where bf16 is not native, sft's default is its fp32 path: one run stands for both rows, and its time goes to
    # the other paths (on an AVX2-only CPU a GPT-2-medium step takes seconds, and the quick run has a cap).
    same_run = {"sft_default": "sft_fp32"} if "sft_fp32" in names and not bf16_native() else {}
    to_run = [path for path in names if path not in same_run]
    # The paths of `in_turns` run side by side, taking turns step by step; the others one after another.
    paired = tuple(in_turns) if len(in_turns) == 2 and all(path in to_run for path in in_turns) else ()
    units = ([paired] if paired else []) + [(path,) for path in to_run if path not in paired]
    for index, unit in enumerate(units):
        settle(wait_s)
        # A pair gets the time of two children. Start-up and loading take about CHILD_RESERVE_S of a child's time
        # (a pair loads side by side); the steps get the rest. A step still running when that is spent is
        # interrupted; the parent stops a child not ended CHILD_GRACE_S later.
        limit = deadline.child_s(sum(map(len, units[index:]))) * len(unit)
        steps_s = max(limit - CHILD_RESERVE_S, 2.0)
        # Each child's clock of a pair runs through the other's steps too, so its budget covers both.
        budget = min((budget_s or steps_s) * len(unit), steps_s)
        what = " and ".join(unit) + (", taking turns," if len(unit) == 2 else "")
        say(f"train {model}: {what} {steps} steps of {BATCH_SIZE} records (budget {budget:.0f} s of steps)")
        specs = [
            {
                "path": path,
                "model": model_dir(model),
                "data": str(data),
                "steps": steps,
                "batch_size": BATCH_SIZE,
                "budget_s": budget,
                "hard_s": max(budget, steps_s),
            }
            for path in unit
        ]
        if len(unit) == 2:
            outcomes = run_children_in_turns("bench.train_paths", (specs[0], specs[1]), limit + CHILD_GRACE_S)
        else:
            try:
                outcomes = [run_child("bench.train_paths", specs[0], limit + CHILD_GRACE_S)]
            except PathFailed as error:
                outcomes = [error]
        for path, outcome in zip(unit, outcomes):
            if isinstance(outcome, PathFailed):
                if "ran past" not in str(outcome):
                    raise outcome
                outcome = unfinished_run(steps, limit)
            raw[path] = outcome
            f = report.training_figures(raw[path], shape, peaks, warmup)  # for the log line; the table's come below
            if f["tokens_per_s"] is None:
                say(f"  {path}: {f['run']}")
            else:
                say(
                    f"  {path}: {f['run']}: {f['tokens_per_s']:.1f} real tokens/s, {f['s_per_step']:.2f} s/step, "
                    f"peak RSS {f['peak_rss_gb']:.2f} GB, final loss {f['final_loss']:.4f}, "
                    f"{f['cores_used']:.1f} cores used"
                )
    for path, ran in same_run.items():
        say(f"train {model}: {path} is {ran}'s run (bf16 is not native here, so sft's default is fp32)")
        raw[path] = {**raw[ran], "same_run_as": ran}
    raw = {path: raw[path] for path in names}
    paths = {path: report.training_figures(raw[path], shape, peaks, warmup) for path in names}
    # Paths that ran the same number of steps must have seen the same batches.
    for name, r in raw.items():
        reference = next(v for v in raw.values() if len(v["batch_lengths"]) >= len(r["batch_lengths"]))
        if r["batch_lengths"] != reference["batch_lengths"][: len(r["batch_lengths"])]:
            raise SystemExit(f"train {model}: {name} did not see the same batches as the others; see the raw results")
    report.add_training_ratios(paths, raw, warmup)
    return {
        "model": model,
        "steps": steps,
        "warmup_steps": warmup,
        "batch_size": BATCH_SIZE,
        "shape": shape,
        "paths": paths,
        "raw": raw,
    }


def unfinished_run(steps: int, seconds: float) -> dict[str, Any]:
    """A path whose process the run's time cap stopped before it wrote anything (still loading, or in step 1)."""
    return {
        "step_s": [],
        "ends": [],
        "step_cpu_s": [],
        "batch_lengths": [],
        "losses": [],
        "planned_steps": steps,
        "bounded": True,
        "interrupted_at_s": seconds,
        "peak_rss_gb": 0.0,
    }


def static_vs_continuous(settings: dict[str, Any], data: Path, wait_s: float, deadline: Deadline) -> dict[str, Any]:
    """sft's static batches against Transformers' continuous batching, same prompts, greedy, each in its own process."""
    from bench.child import PathFailed, run_child

    paths: dict[str, Any] = {}
    for index, path in enumerate(("static", "continuous")):
        settle(wait_s)
        limit = deadline.child_s(2 - index)
        say(
            f"generate {settings['model']}: {path}, {settings['prompts']} prompts x "
            f"{settings['max_new_tokens']} new tokens"
        )
        spec = {"path": path, "data": str(data), **settings}
        try:
            paths[path] = run_child("bench.generate_paths", spec, limit)
            f = paths[path]
            say(f"  {f['seconds']:.1f} s, {f['responses_per_s']:.2f} responses/s, {f['cores_used']:.1f} cores used")
        except PathFailed as error:
            if "ran past" not in str(error):
                raise
            paths[path] = {
                "path": path,
                "seconds": None,
                "limit_s": limit,
                "run": f"bounded: not finished within {limit:.0f} s",
            }
            say(f"  {paths[path]['run']}")
    static, continuous = paths["static"], paths["continuous"]
    result: dict[str, Any] = {**settings, "paths": paths}
    if static.get("seconds") and continuous.get("seconds"):
        result["continuous_vs_static"] = static["seconds"] / continuous["seconds"]
        same = [a == b for a, b in zip(static["texts"], continuous["texts"])]
        result["identical_outputs"] = sum(same)
        result["differing_records"] = [i for i, s in enumerate(same) if not s]
    elif static.get("seconds") and continuous.get("limit_s"):
        # Continuous batching ran past its share (process start and load included): its ratio is at most this.
        result["continuous_vs_static"] = static["process_wall_s"] / continuous["limit_s"]
        result["continuous_vs_static_is_upper_bound"] = True
    return result


def generate_benchmark(settings: dict[str, Any], data: Path, wait_s: float, deadline: Deadline) -> dict[str, Any]:
    """One process per path. `generate` runs first: the seed way's sampled steps need its continuation. A path
    the run's time cap stops is reported as bounded, without a rate."""
    from bench.assets import model_dir
    from bench.child import PathFailed, run_child
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
    bounded: dict[str, str] = {}
    for index, (name, spec) in enumerate(runs):
        settle(wait_s)
        cap = deadline.child_s(len(runs) - index)
        if name == "seed_way" and "hf_generate" not in paths:
            bounded[name] = "bounded: not run (it needs HF generate's continuation, which the time cap stopped)"
            continue
        if name == "seed_way":
            spec["continuation"] = paths["hf_generate"]["continuation"]
            say(
                f"generate gpt2-medium: {name}, 1 prompt, {spec['real_tokens']} tokens for real, {limit} from "
                f"{spec['samples']} timed steps"
            )
        else:
            say(f"generate gpt2-medium: {name}, {spec['prompts']} prompts x {limit} new tokens")
        try:
            paths[name] = run_child("bench.generate_paths", {**base, **spec}, cap)
        except PathFailed as error:
            if "ran past" not in str(error):
                raise
            bounded[name] = f"bounded: not finished within {cap:.0f} s"
            say(f"  {bounded[name]}")
            continue
        f = paths[name]
        say(
            f"  {f['tokens_per_s']:.2f} tokens/s{' (estimated)' if name == 'seed_way' else ''}, "
            f"{f['cores_used']:.1f} cores used"
        )
    reference = paths["hf_generate"]["first_response"] if "hf_generate" in paths else None
    for name, f in paths.items():
        f["same_first_response"] = f.pop("same_tokens") if name == "seed_way" else f["first_response"] == reference
    if "hf_generate" in paths:
        paths["hf_generate"].pop("continuation")
    report.add_generation_ratios(paths)
    return {
        "bounded": bounded,
        "model": "gpt2-medium",
        "max_new_tokens": limit,
        "default_batch_size": DEFAULT_BATCH_SIZE,
        "settings": settings,
        "paths": paths,
    }


def environment(machine: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers
    import trl

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine_class": machine,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": machine["cpu_model"],
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
    from bench.machine import machine_class, matmul_peak_gflops

    args = parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"seed data not found: {args.data}; pass --data PATH")
    settings = dict(MODES[args.mode])
    if args.train_paths:
        settings["train_paths"] = tuple(args.train_paths.split(","))
        unknown = set(settings["train_paths"]) - set(report.TRAIN_LABELS)
        if unknown:
            raise SystemExit(f"unknown training path(s): {', '.join(sorted(unknown))}")
    started, started_monotonic = time.perf_counter(), time.monotonic()
    gpt2_medium_dir()  # built once (tokenizer from the whisper sdist, seeded random weights)
    settle(args.wait_quiet)
    machine = machine_class()
    peaks_start = dict(machine["matmul_peak_gflops"])
    env = environment(machine)
    say(f"machine class: {machine['line']}")
    if env["load_average_start"] > 0.5:
        say(f"note: load average {env['load_average_start']:.1f}: other work shares the CPU, timings will be noisy")

    wanted = {
        None: ["train", "lora", "generate", "static_vs_continuous"],
        "train": ["train", "lora"],
        "generate": ["generate", "static_vs_continuous"],
    }.get(args.only, [args.only])
    stages = [stage for stage in STAGE_SHARES if stage in wanted]
    deadline = Deadline(settings["total_s"], stages, started_monotonic)
    train_results: dict[str, Any] = {}
    generate_result = cb_result = None
    for stage in stages:
        deadline.start_stage(stage)
        if stage == "train":
            for model, steps in settings["train"].items():
                train_results[model] = train_benchmark(
                    model,
                    steps,
                    settings["train_paths"],
                    args.data,
                    peaks_start,
                    args.wait_quiet,
                    settings["budget_s"],
                    deadline,
                )
        elif stage == "lora":
            lora = settings["lora"]
            train_results[f"lora-{lora['model']}"] = train_benchmark(
                lora["model"],
                lora["steps"],
                lora["paths"],
                args.data,
                peaks_start,
                args.wait_quiet,
                lora["budget_s"],
                deadline,
                lora["warmup_steps"],
                lora["in_turns"],
            )
        elif stage == "generate":
            generate_result = generate_benchmark(settings["generate"], args.data, args.wait_quiet, deadline)
        else:
            cb_result = static_vs_continuous(settings["static_vs_continuous"], args.data, args.wait_quiet, deadline)
    # Tables and files in the order of the pipeline: full training, then LoRA.
    train_results = dict(sorted(train_results.items(), key=lambda item: item[0].startswith("lora-")))

    # The peaks are measured again at the end: MFU is taken against the better of the two.
    settle(args.wait_quiet)
    peaks_end = {dtype: matmul_peak_gflops(dtype) for dtype in ("float32", "bfloat16")}
    peaks = {dtype: max(peaks_start[dtype], peaks_end[dtype]) for dtype in peaks_start}
    machine = machine_class(peaks)
    env.update(
        machine_class=machine,
        matmul_peak_gflops={"start": peaks_start, "end": peaks_end, "used": peaks},
        load_average_end=os.getloadavg()[0],
        mode=args.mode,
        wall_s=time.perf_counter() - started,
    )
    for name, result in train_results.items():
        shape = result["shape"]
        warmup = result["warmup_steps"]
        result["paths"] = {k: report.training_figures(result["raw"][k], shape, peaks, warmup) for k in result["raw"]}
        report.add_training_ratios(result["paths"], result["raw"], warmup)
        write(args.results, f"train-{name}", {"machine_class": machine["line"], "environment": env, **result})
    if generate_result:
        write(
            args.results,
            "generate-gpt2-medium",
            {"machine_class": machine["line"], "environment": env, **generate_result},
        )
    if cb_result:
        write(
            args.results,
            f"generate-{cb_result['model']}",
            {"machine_class": machine["line"], "environment": env, **cb_result},
        )
    lora_result = train_results.get(f"lora-{settings['lora']['model']}")
    values = report.summary(train_results.get("gpt2-medium"), generate_result, lora_result, cb_result)
    write(args.results, "summary", {"machine_class": machine["line"], **values, "environment": env})

    print(f"\nmachine class: {machine['line']}\n")
    for name, result in train_results.items():
        print(report.training_table(name, result), end="\n\n")
    if generate_result:
        print(report.generation_table("gpt2-medium", generate_result), end="\n\n")
    if cb_result:
        print(report.static_vs_continuous_table(cb_result), end="\n\n")
    print(report.summary_table(values))
    print(
        f"\n*MFU: model FLOPs/s over the fp32 matmul peak ({peaks['float32']:.0f} GFLOP/s here), or the bf16 "
        f"peak ({peaks['bfloat16']:.0f}) for paths under bf16 autocast."
    )
    print(
        f"{args.mode} run, {env['wall_s'] / 60:.1f} min on {machine['line']}; load average "
        f"{env['load_average_start']:.1f} at start, {env['load_average_end']:.1f} at end; results in {args.results}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
