"""LoRA against full fine-tuning over several pairs of runs, each pair side by side taking turns step by step:

    python -m bench.lockstep [--pairs 6] [--steps 24] [--lora-args "--lora_dropout 0"]

`bench.run` measures `lora_vs_full` with one such pair (bench/child.py, `run_children_in_turns`); this repeats it,
alternating which path takes the first step, to show how far one pair's reading can be trusted. Timed one after
the other, minutes apart, the same ratio on the 2-core AVX512-BF16 EPYC (bf16 native) ran from 1.00x to 1.53x
over sixty-five pairs of runs; taking turns, consecutive steps of the two paths run a second or two apart, under
the same conditions (six pairs of 24 steps read 1.15x to 1.23x there).
What taking turns cannot remove is noise faster than a step: on that machine one bf16 matmul repeated for 30 s
ranged over about 10% between its 10th and 90th percentiles, the adapters' small products over about 19%.
"""

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.workload import BATCH_SIZE, DEFAULT_DATA


def rate(result: dict[str, Any], timed: slice) -> float:
    """Real tokens/s over the timed steps."""
    return sum(map(sum, result["batch_lengths"][timed])) / sum(result["step_s"][timed])


def main(argv: list[str] | None = None) -> int:
    from bench.child import PathFailed, run_children_in_turns
    from bench.machine import machine_class
    from bench.run import LORA_IN_TURNS, LORA_WARMUP_STEPS, MODES, RESULTS

    parser = argparse.ArgumentParser(prog="python -m bench.lockstep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="pairs of runs; which path goes first alternates")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per path and run")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the seed's instruction file")
    parser.add_argument("--out", type=Path, default=RESULTS / "lockstep.json", help="where the result goes")
    parser.add_argument(
        "--lora-args",
        default="",
        help='recipe options for the LoRA path only, after the demo recipe\'s (e.g. "--lora_dropout 0" or '
        '"--lora_target_modules q_proj k_proj v_proj o_proj"): what other LoRA settings cost',
    )
    args = parser.parse_args(argv)
    lora_args = shlex.split(args.lora_args)
    if args.steps <= LORA_WARMUP_STEPS:
        parser.error(f"--steps must exceed the {LORA_WARMUP_STEPS} warm-up steps that are not timed")
    machine = machine_class()
    print(f"machine: {machine['line']}", flush=True)
    model = MODES["full"]["lora"]["model"]
    full, lora = LORA_IN_TURNS
    timed = slice(LORA_WARMUP_STEPS, None)
    pairs = []
    for index in range(args.pairs):
        order = (full, lora) if index % 2 == 0 else (lora, full)
        specs = [
            {"path": path, "model": model, "data": args.data, "steps": args.steps, "batch_size": BATCH_SIZE}
            | ({"lora_args": lora_args} if path == lora else {})
            for path in order
        ]
        results = dict(zip(order, run_children_in_turns("bench.train_paths", (specs[0], specs[1]))))
        failed = [result for result in results.values() if isinstance(result, PathFailed)]
        if failed:
            raise SystemExit(f"bench.lockstep: {failed[0]}")
        rates = {path: rate(results[path], timed) for path in (full, lora)}
        ratio = rates[lora] / rates[full]
        pairs.append({"first": order[0], "tokens_per_s": rates, "lora_vs_full": ratio, "raw": results})
        print(
            f"pair {index + 1} ({order[0]} first): full {rates[full]:.1f}, LoRA {rates[lora]:.1f} real tokens/s, "
            f"lora_vs_full {ratio:.3f}",
            flush=True,
        )
    ratios = [pair["lora_vs_full"] for pair in pairs]
    spread = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(
        f"lora_vs_full over {len(ratios)} pairs: median {spread['median']:.3f} ({spread['min']:.3f} to "
        f"{spread['max']:.3f}), timed from step {LORA_WARMUP_STEPS + 1}"
    )
    document = {
        "machine_class": machine,
        "steps": args.steps,
        "warmup_steps": LORA_WARMUP_STEPS,
        "lora_args": lora_args,
        "lora_vs_full": spread,
        "pairs": pairs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    partial.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
