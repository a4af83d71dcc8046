"""Figures from the raw path results: throughput, ratios, MFU, and the printed tables."""

from typing import Any

from bench.flops import training_flops

# Targets on the GPT-2-medium shape; "max" marks the one that must stay below.
TARGETS = {
    "train_vs_seed_loop": (1.5, "min"),
    "train_vs_trl_defaults": (5.0, "min"),
    "train_loss_rel_diff": (0.02, "max"),
    "train_mfu": (0.60, "min"),
    "generate_vs_seed_loop": (50.0, "min"),
    "generate_vs_hf_generate": (4.0, "min"),
    "rss_vs_trl_defaults": (1.1, "max"),
}
TRAIN_LABELS = {
    "seed_loop": "seed loop (padded, book ch. 7)",
    "trl_defaults": "TRL SFTTrainer defaults (use_cpu)",
    "sft_default": "sft default (padding-free; bf16 autocast where native)",
    "sft_fp32": "sft, fp32 (summary keys)",
}
GENERATE_LABELS = {
    "seed_way": "seed way (1 prompt, no KV cache)",
    "hf_generate": "HF generate (1 prompt at a time)",
    "sft_batched": "sft generate_responses",
}


def training_figures(raw: dict[str, Any], shape: dict[str, int], peaks: dict[str, float]) -> dict[str, Any]:
    """Throughput over the steps after the first (which pays one-off allocation and warm-up costs).
    MFU is against the fp32 peak, or the bf16 peak for a path that ran under bf16 autocast."""
    precision = "bfloat16" if raw.get("settings", {}).get("bf16_autocast") else "float32"
    peak_gflops = peaks[precision]
    timed = slice(1, None) if len(raw["step_s"]) > 1 else slice(None)
    seconds = sum(raw["step_s"][timed])
    lengths = raw["batch_lengths"][timed]
    tokens = sum(sum(batch) for batch in lengths)
    flops = sum(training_flops(shape, batch) for batch in lengths)
    return {
        "timed_steps": len(lengths),
        "s_per_step": seconds / len(lengths),
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / (peak_gflops * 1e9),
        "precision": precision,
        "final_loss": raw["losses"][-1],
        "peak_rss_gb": raw["peak_rss_gb"],
        "first_step_s": raw["step_s"][0],
        # CPU seconds per wall second over the timed steps; below the thread count means other work
        # took cores from the path.
        "cores_used": sum(raw["step_cpu_s"][timed]) / seconds,
    }


def add_training_ratios(paths: dict[str, dict[str, Any]]) -> None:
    for figures in paths.values():
        for base in ("seed_loop", "trl_defaults"):
            if base in paths:
                figures[f"vs_{base}"] = figures["tokens_per_s"] / paths[base]["tokens_per_s"]


def add_generation_ratios(paths: dict[str, dict[str, Any]]) -> None:
    for figures in paths.values():
        for base in ("seed_way", "hf_generate"):
            if base in paths:
                figures[f"vs_{base}"] = figures["tokens_per_s"] / paths[base]["tokens_per_s"]


def summary(train: dict[str, Any] | None, generate: dict[str, Any] | None) -> dict[str, Any]:
    """The headline ratios (GPT-2-medium shape): training on the issue's fp32 workload (sft's path held to
    fp32) and, prefixed `default_`, sft's default on this machine (bf16 autocast where the CPU runs bf16);
    generation at sft's default batch size; and whether each meets its target."""
    values: dict[str, float] = {}
    if train:
        for path, prefix in SUMMARY_PREFIXES.items():
            values.update({f"{prefix}{key}": value for key, value in training_summary(train["paths"], path).items()})
    if generate:
        sft = generate["paths"].get("sft_batched", {})
        if "vs_seed_way" in sft:
            values["generate_vs_seed_loop"] = sft["vs_seed_way"]
        if "vs_hf_generate" in sft:
            values["generate_vs_hf_generate"] = sft["vs_hf_generate"]
    result: dict[str, Any] = {key: round(value, 4) for key, value in values.items()}
    # The seed way's cost per token grows with the sequence, so its ratio depends on the length run.
    if train:
        result["train_timed_steps"] = train["steps"] - 1
    if generate:
        result["generate_max_new_tokens"] = generate["max_new_tokens"]
    result["targets"] = {}
    for key, value in values.items():
        goal = TARGETS.get(unprefixed(key))
        if goal:
            result["targets"][key] = {"target": goal[0], "kind": goal[1], "met": met(value, *goal)}
    return result


# Unprefixed keys: the fp32 workload the benchmark specifies; `default_`: sft's default precision here.
SUMMARY_PREFIXES = {"sft_fp32": "", "sft_default": "default_"}


def unprefixed(key: str) -> str:
    return key.removeprefix("default_")


def training_summary(paths: dict[str, dict[str, Any]], fast: str) -> dict[str, float]:
    values: dict[str, float] = {}
    sft, seed, trl = paths.get(fast), paths.get("seed_loop"), paths.get("trl_defaults")
    if not sft:
        return values
    values["train_mfu"] = sft["mfu"]
    if seed:
        values["train_vs_seed_loop"] = sft["vs_seed_loop"]
        values["train_loss_rel_diff"] = abs(sft["final_loss"] - seed["final_loss"]) / seed["final_loss"]
    if trl:
        values["train_vs_trl_defaults"] = sft["vs_trl_defaults"]
        values["rss_vs_trl_defaults"] = sft["peak_rss_gb"] / trl["peak_rss_gb"]
    return values


def met(value: float, target: float, kind: str) -> bool:
    return value >= target if kind == "min" else value <= target


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table, readable as plain text too."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def training_table(model: str, result: dict[str, Any]) -> str:
    rows = []
    for name, f in result["paths"].items():
        rows.append(
            [
                TRAIN_LABELS.get(name, name),
                f"{f['tokens_per_s']:.1f}",
                f"{f['s_per_step']:.2f}",
                ratio(f.get("vs_seed_loop")),
                ratio(f.get("vs_trl_defaults")),
                f"{100 * f['mfu']:.1f}%",
                f"{f['peak_rss_gb']:.2f}",
                f"{f['final_loss']:.4f}",
                f"{f['cores_used']:.1f}",
            ]
        )
    headers = [
        f"train {model}, batch {result['batch_size']}, {result['steps']} steps",
        "real tok/s",
        "s/step",
        "vs seed",
        "vs TRL",
        "MFU*",
        "peak RSS GB",
        "final loss",
        "cores used",
    ]
    return table(headers, rows)


def generation_label(name: str, figures: dict[str, Any]) -> str:
    if name.startswith("sft_batched"):
        default = "" if name.startswith("sft_batched_") else ", default"
        return f"sft generate_responses (batch {figures['batch_size']}{default})"
    return GENERATE_LABELS.get(name, name)


def generation_table(model: str, result: dict[str, Any]) -> str:
    rows = []
    order = sorted(result["paths"], key=lambda k: (not k.startswith("sft"), k == "seed_way", k))
    for name in order:
        f = result["paths"][name]
        measured = f"{f['prompts']} x {result['max_new_tokens']}"
        if name == "seed_way":
            measured = f"1 x {f['generated_for_real']} run, {f['timed_steps']}/{f['new_tokens']} steps timed"
        rows.append(
            [
                generation_label(name, f),
                measured,
                f"{f['tokens_per_s']:.2f}",
                ratio(f.get("vs_seed_way")),
                ratio(f.get("vs_hf_generate")),
                "yes" if f["same_first_response"] else "no",
                f"{f['cores_used']:.1f}",
            ]
        )
    headers = [
        f"generate {model}, greedy, fp32",
        "prompts x new tokens",
        "tok/s",
        "vs seed way",
        "vs HF generate",
        "same output",
        "cores used",
    ]
    return table(headers, rows)


def summary_table(values: dict[str, Any]) -> str:
    rows = []
    for key, target in values["targets"].items():
        percent = unprefixed(key) in {"train_mfu", "train_loss_rel_diff"}
        shown = f"{100 * values[key]:.1f}%" if percent else f"{values[key]:.2f}"
        goal = f"{100 * target['target']:.0f}%" if percent else f"{target['target']}x"
        sign = ">=" if target["kind"] == "min" else "<="
        rows.append([key, shown, f"{sign} {goal}", "yes" if target["met"] else "NO"])
    title = "summary, GPT-2-medium shape, fp32 (default_: sft's default here, bf16 autocast where native)"
    return table([title, "value", "target", "met"], rows)
