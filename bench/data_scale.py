"""Alpaca-sized data: how `sft data check`, `sft data prepare`, `sft data dedup` and `sft train` (to its first
optimizer step) scale to 52,000 records, and whether their peak memory stays flat in the record count.

    python -m bench.data_scale                  # make bench-data: 13K, 26K and 52K records
    python -m bench.data_scale --sizes 52000    # one size

The records come from sft's synthesiser (`sft data synth --n N`, whose records for a smaller N are the first
N of a larger one); the seed data is measured beside them for dedup. Every command runs as its own process
(`python -m sft ...`, as a user runs it), so its wall time covers imports and its peak RSS (`ru_maxrss` from
`wait4`) is its own. Training runs the offline default recipe (`recipes/smollm2-135m.yaml --max_steps 1`)
twice per size: first with the records' tokenized cache removed, then reading it. Its time is from launching
the process to the end of the first optimizer step, taken by a TrainerCallback in the training process,
which then exits (the evaluation that would follow is not part of the start-up). Results go to
bench/results/data_scale.json with the machine class.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.workload import DEFAULT_DATA, REPO

RESULTS = REPO / "bench" / "results"
SIZES = (13000, 26000, 52000)
RECIPE = "recipes/smollm2-135m.yaml"
TIMEOUT_S = 1800
# The targets, for the largest size (the Alpaca data set holds 52,002 records).
TARGETS = {"check_s": 10.0, "prepare_s": 30.0, "train_first_step_s": 60.0}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    """The machine class the figures belong to (found in a child process: torch stays out of this one)."""
    run = measured([sys.executable, "-m", "bench.data_scale", "--machine"])
    return json.loads(run["output"].strip().splitlines()[-1])


def machine_info() -> dict[str, Any]:
    """bench.machine's class (CPU, bf16 native or not, measured matmul peaks) with the versions and the load."""
    import platform

    import torch

    from bench.machine import machine_class

    return {
        **machine_class(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_start": round(os.getloadavg()[0], 2),
    }


def machine_line(info: dict[str, Any]) -> str:
    return f"{info['line']}; torch {info['torch']}"


def measured(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `command` in its own process: its wall time, CPU time and peak RSS.

    `ru_maxrss` of a child counts what it had when it was forked from this process too, so this process keeps
    small (no torch, no records loaded): every figure here is then the child's own.
    """
    with tempfile.TemporaryFile("w+") as log:
        start = time.time()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        watchdog = threading.Timer(TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)  # blocks: the wall time is exact
        finally:
            watchdog.cancel()
        wall = time.time() - start
        process.returncode = code = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        "exit_code": code,
        "started": start,
        "output": output,
    }


def sft(*args: str) -> list[str]:
    return [sys.executable, "-m", "sft", *args]


def synthesise(size: int, folder: Path) -> tuple[Path, dict[str, Any]]:
    path = folder / f"synth-{size}.json"
    run = measured(sft("data", "synth", "--n", str(size), "--seed", "0", "--output", str(path)))
    if run["exit_code"] != 0:
        raise SystemExit(f"sft data synth --n {size} failed:\n{run['output'][-2000:]}")
    counted = measured([sys.executable, "-m", "bench.data_scale", "--count", str(path)])
    counts = json.loads(counted["output"].strip().splitlines()[-1])
    return path, {**counts, "synth_s": run["wall_s"]}


def count(path: str) -> dict[str, int]:
    """Records in a synthesised file, and how many are distinct (instruction, input, output)."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return {"records": len(records), "distinct": len({(r["instruction"], r["input"], r["output"]) for r in records})}


def command_figures(name: str, command: list[str], expect: tuple[int, ...] = (0,)) -> dict[str, Any]:
    run = measured(command)
    if run["exit_code"] not in expect:
        raise SystemExit(f"{' '.join(command[2:])} exited with {run['exit_code']}:\n{run['output'][-2000:]}")
    figures = {key: run[key] for key in ("wall_s", "cpu_s", "peak_rss_mb", "exit_code")}
    say(f"  {name}: {figures['wall_s']:.2f} s ({figures['cpu_s']:.2f} s CPU), peak RSS {figures['peak_rss_mb']:.0f} MB")
    return figures


def dedup_figures(path: Path, method: str) -> dict[str, Any]:
    command = sft("data", "dedup", str(path), "--method", method, "--json")
    run = measured(command)
    if run["exit_code"] not in (0, 1):
        raise SystemExit(f"sft data dedup {path} failed:\n{run['output'][-2000:]}")
    report = json.loads(run["output"][run["output"].index("{") :])
    pairs = report["pairs"]
    figures = {
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "pairs": len(pairs),
        "identical_pairs": sum(1 for pair in pairs if not pair["differs"]),
        "records_to_remove": len(report["records_to_remove"]),
    }
    say(
        f"  dedup {method}: {figures['pairs']} pairs, {figures['wall_s']:.2f} s ({figures['cpu_s']:.2f} s CPU), "
        f"peak RSS {figures['peak_rss_mb']:.0f} MB"
    )
    return {**figures, "pair_set": [[pair["first"], pair["second"]] for pair in pairs]}


def train_figures(path: Path, cold: bool, folder: Path) -> dict[str, Any]:
    result = folder / f"first-step-{'cold' if cold else 'warm'}.json"
    result.unlink(missing_ok=True)
    spec = {"data": str(path), "output_dir": str(folder / f"train-{'cold' if cold else 'warm'}"), "cold": cold}
    spec["result"] = str(result)
    run = measured([sys.executable, "-m", "bench.data_scale", "--first-step", json.dumps(spec)])
    if run["exit_code"] != 0 or not result.is_file():
        raise SystemExit(f"sft train on {path} failed:\n{run['output'][-3000:]}")
    inside = json.loads(result.read_text())
    figures = {
        "first_step_s": round(inside["first_step_at"] - run["started"], 2),
        "tokenize_s": round(inside["tokenize_s"], 2),
        "near_duplicate_check_s": round(inside["near_duplicate_check_s"], 2),
        "cpu_s": run["cpu_s"],
        "peak_rss_mb": run["peak_rss_mb"],
    }
    say(
        f"  train ({'cache removed' if cold else 'cache reused'}): first step at {figures['first_step_s']:.1f} s "
        f"(tokenizing {figures['tokenize_s']:.1f} s, near-duplicate check {figures['near_duplicate_check_s']:.1f} s), "
        f"peak RSS {figures['peak_rss_mb']:.0f} MB"
    )
    return figures


def first_step(spec: dict[str, Any]) -> None:
    """The training child: `sft train` on the offline default, timed to the end of its first optimizer step."""
    from transformers import TrainerCallback

    import sft.training.run as run
    from sft.data import tokenize
    from sft.training import loss

    times = {"tokenize_s": 0.0, "near_duplicate_check_s": 0.0}
    cached: list[str] = []

    def remove_cached(key: str | None) -> None:
        path = tokenize.tokenized_cache_path(key) if key else None
        if path is not None:
            shutil.rmtree(path.parent, ignore_errors=True)

    tokenize_records, warn = tokenize.tokenize_records, run.warn_near_duplicates

    def timed_tokenize(records: Any, tokenizer: Any, template: Any) -> Any:
        if spec["cold"]:  # the first run of a size: no token ids cached for these records
            remove_cached(tokenize.tokenized_cache_key(records, tokenizer, template))
        key = tokenize.tokenized_cache_key(records, tokenizer, template)
        if key:
            cached.append(key)
        start = time.perf_counter()
        dataset = tokenize_records(records, tokenizer, template)
        times["tokenize_s"] += time.perf_counter() - start
        return dataset

    def timed_warning(*args: Any) -> None:
        start = time.perf_counter()
        warn(*args)
        times["near_duplicate_check_s"] += time.perf_counter() - start

    class FirstStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            Path(spec["result"]).write_text(json.dumps({"first_step_at": time.time(), **times}))
            if not spec["cold"]:  # the benchmark's files leave the user's cache as they found it
                for key in cached:
                    remove_cached(key)
            sys.stdout.flush()
            os._exit(0)  # the start-up is measured; the evaluation and saving that follow are not

    tokenize.tokenize_records = timed_tokenize
    run.warn_near_duplicates = timed_warning
    trainer_init = loss.LeanLossSFTTrainer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        trainer_init(self, *args, **kwargs)
        self.add_callback(FirstStep())

    loss.LeanLossSFTTrainer.__init__ = init  # type: ignore[method-assign]
    from sft.cli import main

    main(
        [
            "train",
            RECIPE,
            "--dataset_name",
            spec["data"],
            "--max_steps",
            "1",
            "--output_dir",
            spec["output_dir"],
            "--overwrite_output_dir",
            "true",
        ]
    )
    raise SystemExit("training ended without an optimizer step")


def ratio(values: list[float]) -> float:
    return round(values[-1] / values[0], 3) if values and values[0] else float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.data_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="record counts, comma-separated")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="seed data, measured by dedup too")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where data_scale.json goes")
    parser.add_argument("--skip-train", action="store_true", help="leave out the training runs")
    # The children: training to its first step, the machine's description, a file's distinct records.
    parser.add_argument("--first-step", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--machine", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", metavar="PATH", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.first_step:
        first_step(json.loads(args.first_step))
        return 1
    if args.machine or args.count:
        print(json.dumps(machine_info() if args.machine else count(args.count)))
        return 0
    sizes = sorted(int(size) for size in args.sizes.split(","))
    info = machine()
    say(f"machine: {machine_line(info)}; load average {info['load_average_start']}")
    results: dict[str, Any] = {"machine": info, "machine_line": machine_line(info), "sizes": {}, "recipe": RECIPE}
    with tempfile.TemporaryDirectory(prefix="sft-data-scale-") as tmp:
        work = Path(tmp)
        for size in sizes:
            path, synth = synthesise(size, work)
            say(f"{size} records: {synth['distinct']} distinct, synthesised in {synth['synth_s']:.1f} s")
            if synth["distinct"] < size:
                say(f"  the synthesiser made only {synth['distinct']} distinct records of {size}")
            figures: dict[str, Any] = {"synth": synth}
            figures["check"] = command_figures("check", sft("data", "check", str(path)))
            prepare = sft("data", "prepare", str(path), "--output-dir", str(work / f"split-{size}"))
            figures["prepare"] = command_figures("prepare", prepare)
            figures["dedup_minhash"] = dedup_figures(path, "minhash")
            if size == sizes[-1]:
                figures["dedup_ngram"] = dedup_figures(path, "ngram")
            if not args.skip_train:
                figures["train_cold"] = train_figures(path, True, work)
                figures["train_warm"] = train_figures(path, False, work)
            results["sizes"][str(size)] = figures
        if args.data.is_file():
            say(f"seed data {args.data.name}:")
            results["seed"] = {method: dedup_figures(args.data, method) for method in ("minhash", "ngram")}
    summarise(results, sizes)
    info["load_average_end"] = round(os.getloadavg()[0], 2)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "data_scale.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results, sizes))
    say(f"results in {args.results / 'data_scale.json'}")
    return 0


def summarise(results: dict[str, Any], sizes: list[int]) -> None:
    """Agreement of the two dedup methods, memory ratios across sizes, targets at the largest size."""
    for where in [results["sizes"][str(sizes[-1])], results.get("seed")]:
        if not where or "dedup_ngram" not in where and "ngram" not in where:
            continue
        fast = where.get("dedup_minhash") or where["minhash"]
        exact = where.get("dedup_ngram") or where["ngram"]
        found, every = {tuple(p) for p in fast.pop("pair_set")}, {tuple(p) for p in exact.pop("pair_set")}
        where["minhash_vs_ngram"] = {
            "pairs_ngram": len(every),
            "pairs_minhash": len(found),
            "missed_by_minhash": len(every - found),
            "not_in_ngram": len(found - every),
            "speedup": round(exact["wall_s"] / max(fast["wall_s"], 1e-9), 2),
        }
    for figures in results["sizes"].values():
        for key in ("dedup_minhash", "dedup_ngram"):
            figures.get(key, {}).pop("pair_set", None)
    memory = {}
    for step in ("check", "prepare", "dedup_minhash", "train_cold", "train_warm"):
        values = [
            results["sizes"][str(size)][step]["peak_rss_mb"] for size in sizes if step in results["sizes"][str(size)]
        ]
        if len(values) == len(sizes):
            memory[step] = {"peak_rss_mb": values, f"ratio_{sizes[-1]}_vs_{sizes[0]}": ratio(values)}
    results["memory"] = memory
    largest = results["sizes"][str(sizes[-1])]
    reached = {
        "check_s": largest["check"]["wall_s"],
        "prepare_s": largest["prepare"]["wall_s"],
        "train_first_step_s": largest.get("train_cold", {}).get("first_step_s"),
    }
    results["targets"] = {
        key: {"target": target, "value": reached[key], "met": reached[key] is not None and reached[key] <= target}
        for key, target in TARGETS.items()
    }


def table(results: dict[str, Any], sizes: list[int]) -> str:
    from bench.report import table as markdown

    rows = []
    for size in sizes:
        f = results["sizes"][str(size)]
        cold, warm = f.get("train_cold", {}), f.get("train_warm", {})
        rows.append(
            [
                f"{size:,}",
                f"{f['check']['wall_s']:.2f}",
                f"{f['prepare']['wall_s']:.1f}",
                f"{f['dedup_minhash']['wall_s']:.1f}",
                f"{cold['first_step_s']:.1f}" if cold else "-",
                f"{warm['first_step_s']:.1f}" if warm else "-",
                f"{cold['tokenize_s']:.1f} / {warm['tokenize_s']:.2f}" if cold else "-",
                f"{f['check']['peak_rss_mb']:.0f} / {f['prepare']['peak_rss_mb']:.0f}"
                + (f" / {cold['peak_rss_mb']:.0f}" if cold else ""),
            ]
        )
    lines = [
        f"machine: {results['machine_line']}",
        "",
        markdown(
            [
                "records",
                "check s",
                "prepare s",
                "dedup s",
                "train to step 1 s",
                "again (cached) s",
                "tokenize s (first / cached)",
                "peak RSS MB (check / prepare / train)",
            ],
            rows,
        ),
        "",
    ]
    for step, figures in results["memory"].items():
        key = next(k for k in figures if k.startswith("ratio"))
        lines.append(f"peak RSS {step}: {figures['peak_rss_mb']} MB, {key.replace('_', ' ')} {figures[key]}")
    for name, where in (("largest size", results["sizes"][str(sizes[-1])]), ("seed data", results.get("seed"))):
        if where and "minhash_vs_ngram" in where:
            c = where["minhash_vs_ngram"]
            fast = where.get("dedup_minhash") or where["minhash"]
            exact = where.get("dedup_ngram") or where["ngram"]
            lines.append(
                f"dedup on the {name}: minhash {fast['wall_s']:.2f} s, {c['pairs_minhash']} pairs; ngram "
                f"{exact['wall_s']:.2f} s, {c['pairs_ngram']} pairs; minhash missed {c['missed_by_minhash']}, "
                f"{c['speedup']}x faster"
            )
    for key, target in results["targets"].items():
        verdict = "not measured" if target["value"] is None else "met" if target["met"] else "NOT met"
        lines.append(f"target {key} <= {target['target']}: {target['value']} ({verdict})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
