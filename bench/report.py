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
    "lora_vs_full": (1.3, "min"),
    "lora_loss_rel_diff_vs_peft": (0.01, "max"),
}
TRAIN_LABELS = {
    "seed_loop": "seed loop (padded, book ch. 7)",
    "trl_defaults": "TRL SFTTrainer defaults (use_cpu)",
    "sft_default": "sft default (padding-free; bf16 autocast where native)",
    "sft_fp32": "sft, fp32 (summary keys)",
    "sft_lora": "sft LoRA (r 16, all linear layers, as make demo)",
    "sft_lora_peft": "LoRA through PEFT's own layer forward",
}
GENERATE_LABELS = {
    "seed_way": "seed way (1 prompt, no KV cache)",
    "hf_generate": "HF generate (1 prompt at a time)",
    "sft_batched": "sft generate_responses",
}


def training_figures(
    raw: dict[str, Any], shape: dict[str, int], peaks: dict[str, float], warmup: int = 1
) -> dict[str, Any]:
    """Throughput over the steps after the first `warmup` (`timed_steps`). MFU is against the fp32 peak, or the
    bf16 peak for a path that ran under bf16 autocast."""
    precision = "bfloat16" if raw.get("settings", {}).get("bf16_autocast") else "float32"
    peak_gflops = peaks[precision]
    run = run_description(raw, warmup)
    if not raw["step_s"]:  # the hard limit stopped the first step: there is no rate to give, only the bound
        return {
            "timed_steps": 0,
            "tokens_per_s": None,
            "precision": precision,
            "run": run,
            "bounded": True,
            "peak_rss_gb": raw["peak_rss_gb"],
            "final_loss": None,
            "mfu": None,
            "s_per_step": None,
            "cores_used": None,
        }
    timed = timed_steps(len(raw["step_s"]), warmup)
    seconds = sum(raw["step_s"][timed])
    lengths = raw["batch_lengths"][timed]
    tokens = sum(sum(batch) for batch in lengths)
    params = raw.get("settings", {}).get("matmul_params")  # trained and frozen, as the path ran
    flops = sum(training_flops(shape, batch, params) for batch in lengths)
    return {
        "run": run,
        "bounded": bool(raw.get("bounded")),
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
        "losses": raw["losses"],
    }


def run_description(raw: dict[str, Any], warmup: int = 1) -> str:
    """ "3 of 3 steps", or for a path its time budget stopped, "bounded: N of M steps in S s"."""
    done, planned = len(raw["step_s"]), raw.get("planned_steps") or len(raw["step_s"])
    same = f" ({raw['same_run_as']}'s run)" if raw.get("same_run_as") else ""
    if 0 < done <= warmup and planned > 1:
        same += "; its rate includes the warm-up"  # no step after the warm-up to time
    if not raw.get("bounded"):
        return f"{done} of {planned} steps{same}"
    seconds = raw.get("interrupted_at_s") or (raw["ends"][-1] if raw["ends"] else 0.0)
    unfinished = f" (step {done + 1} unfinished)" if raw.get("interrupted_at_s") and done < planned else ""
    return f"bounded: {done} of {planned} steps in {seconds:.0f} s{unfinished}{same}"


def add_training_ratios(paths: dict[str, dict[str, Any]], raw: dict[str, dict[str, Any]], warmup: int = 1) -> None:
    """Each path's speed over the seed loop's and TRL's defaults', over the steps both finished (`common_rate`):
    a path whose budget left it only its warm-up step is not set against another's later, faster steps."""
    for name, figures in paths.items():
        for base in ("seed_loop", "trl_defaults"):
            rates = common_rate([raw[name], raw[base]], warmup) if base in raw and name in raw else None
            if rates and rates[1]:
                figures[f"vs_{base}"] = rates[0] / rates[1]
                # Which steps the ratio covers, where that is not what the path's own rate covers.
                steps = common_steps([raw[name], raw[base]], warmup)
                if steps is not None and steps != common_steps([raw[name]], warmup):
                    figures[f"vs_{base}_over"] = steps_label(steps)


def add_generation_ratios(paths: dict[str, dict[str, Any]]) -> None:
    for figures in paths.values():
        for base in ("seed_way", "hf_generate"):
            if base in paths:
                figures[f"vs_{base}"] = figures["tokens_per_s"] / paths[base]["tokens_per_s"]


def summary(
    train: dict[str, Any] | None,
    generate: dict[str, Any] | None,
    lora: dict[str, Any] | None = None,
    static_vs_continuous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The headline ratios (GPT-2-medium shape): training on the issue's fp32 workload (sft's path held to
    fp32) and, prefixed `default_`, sft's default on this machine (bf16 autocast where the CPU runs bf16);
    generation at sft's default batch size; LoRA against full fine-tuning (SmolLM2-135M, sft's default precision
    here); continuous batching against sft's static batches; and whether each meets its target."""
    values: dict[str, float] = {}
    if lora:
        values.update(lora_summary(lora))
    if static_vs_continuous and "continuous_vs_static" in static_vs_continuous:
        values["generate_vs_static"] = static_vs_continuous["continuous_vs_static"]
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
    if static_vs_continuous:
        result["generate_vs_static_path"] = "continuous batching (model.generate_batch) over sft's static batches"
        result["generate_chosen"] = "static"  # sft.inference.generate: continuous batching was slower on CPUs
        if static_vs_continuous.get("continuous_vs_static_is_upper_bound"):
            result["generate_vs_static_is_upper_bound"] = (
                "continuous batching did not finish within its share: static's whole process time over that share"
            )
        if "identical_outputs" in static_vs_continuous:
            result["generate_identical_outputs"] = (
                f"{static_vs_continuous['identical_outputs']} of {static_vs_continuous['prompts']}"
            )
    if lora:
        result["lora_model"] = lora["model"]
        result["lora_timed_steps"] = lora["steps"] - lora["warmup_steps"]
        result["lora_paths"] = path_runs(lora["paths"])
    if train:
        result["train_timed_steps"] = train["steps"] - train["warmup_steps"]
        # How far each path got: a bounded path's rate (and its MFU) may cover fewer steps, or only the warm-up.
        result["train_paths"] = path_runs(train["paths"])
        for path, prefix in SUMMARY_PREFIXES.items():
            for base in ("seed_loop", "trl_defaults"):
                over = train["paths"].get(path, {}).get(f"vs_{base}_over")
                if over:  # a bounded path: the ratio covers fewer steps than train_timed_steps
                    result[f"{prefix}train_vs_{base}_over"] = over
    # The seed way's cost per token grows with the sequence, so its ratio depends on the length run.
    if generate:
        result["generate_max_new_tokens"] = generate["max_new_tokens"]
    result["targets"] = {}
    for key, value in values.items():
        goal = TARGETS.get(unprefixed(key))
        if goal:
            result["targets"][key] = {"target": goal[0], "kind": goal[1], "met": met(value, *goal)}
    return result


def path_runs(paths: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each path's run as the table says it ("4 of 4 steps", "bounded: ..."), with its rate where it has one."""
    return {
        name: f["run"] + ("" if f["tokens_per_s"] is None else f", {f['tokens_per_s']:.1f} real tokens/s")
        for name, f in paths.items()
    }


# Unprefixed keys: the fp32 workload the benchmark specifies; `default_`: sft's default precision here.
SUMMARY_PREFIXES = {"sft_fp32": "", "sft_default": "default_"}


def unprefixed(key: str) -> str:
    return key.removeprefix("default_")


def training_summary(paths: dict[str, dict[str, Any]], fast: str) -> dict[str, float]:
    values: dict[str, float] = {}
    sft, seed, trl = paths.get(fast), paths.get("seed_loop"), paths.get("trl_defaults")
    if not sft or sft["tokens_per_s"] is None:
        return values
    values["train_mfu"] = sft["mfu"]
    seed = seed if seed and seed["tokens_per_s"] is not None else None
    trl = trl if trl and trl["tokens_per_s"] is not None else None
    if seed:
        values["train_vs_seed_loop"] = sft["vs_seed_loop"]
        # At the last step both finished: a bounded path's final loss is that of an earlier step than the other's.
        done = min(len(sft["losses"]), len(seed["losses"]))
        if done:
            ours, theirs = sft["losses"][done - 1], seed["losses"][done - 1]
            values["train_loss_rel_diff"] = abs(ours - theirs) / theirs
    if trl:
        values["train_vs_trl_defaults"] = sft["vs_trl_defaults"]
        values["rss_vs_trl_defaults"] = sft["peak_rss_gb"] / trl["peak_rss_gb"]
    return values


def timed_steps(done: int, warmup: int = 1) -> slice:
    """Of `done` finished steps, those a rate covers: the ones after the first `warmup`, which pay one-off costs
    (allocations, the optimizer state's first touch); a run stopped sooner keeps its last step at least."""
    return slice(min(warmup, max(done - 1, 0)), done)


def common_steps(raws: list[dict[str, Any]], warmup: int = 1) -> slice | None:
    """The steps all of the paths finished, the warm-up left out (`timed_steps`)."""
    done = min(len(raw["step_s"]) for raw in raws)
    if done == 0:
        return None
    return timed_steps(done, warmup)


def steps_label(steps: slice) -> str:
    first, last = steps.start + 1, steps.stop
    return f"step {first}" if first == last else f"steps {first}-{last}"


def common_rate(raws: list[dict[str, Any]], warmup: int = 1) -> list[float] | None:
    """Real tokens/s of each path over the steps all of them finished (`common_steps`): a bounded path then is
    compared over the same batches as the others."""
    timed = common_steps(raws, warmup)
    if timed is None:
        return None
    return [sum(map(sum, raw["batch_lengths"][timed])) / sum(raw["step_s"][timed]) for raw in raws]


def lora_summary(result: dict[str, Any]) -> dict[str, float]:
    """LoRA (sft's path) over full fine-tuning in real tokens/s, over the steps both finished after the warm-up;
    against PEFT's own layer forward where that ran, its speed and how far the loss trajectories part (the largest
    relative difference over the steps both finished)."""
    values: dict[str, float] = {}
    raw, warmup = result["raw"], result["warmup_steps"]
    if "sft_lora" in raw and "sft_default" in raw:
        rates = common_rate([raw["sft_lora"], raw["sft_default"]], warmup)
        if rates:
            values["lora_vs_full"] = rates[0] / rates[1]
            values["lora_tokens_per_s"], values["full_tokens_per_s"] = rates
    if "sft_lora" in raw and "sft_lora_peft" in raw:
        rates = common_rate([raw["sft_lora"], raw["sft_lora_peft"]], warmup)
        if rates:
            values["lora_vs_peft_plain"] = rates[0] / rates[1]
        pairs = list(zip(raw["sft_lora"]["losses"], raw["sft_lora_peft"]["losses"]))
        if pairs:
            values["lora_loss_rel_diff_vs_peft"] = max(abs(a - b) / abs(b) for a, b in pairs)
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


def figure(value: float | None, form: str, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{value * scale:{form}}{suffix}"


def ratio_over(figures: dict[str, Any], key: str) -> str:
    """A ratio, with the steps it covers where that differs from the row's own rate."""
    over = figures.get(f"{key}_over")
    return ratio(figures.get(key)) + (f" ({over})" if over else "")


def training_table(model: str, result: dict[str, Any]) -> str:
    rows = []
    for name, f in result["paths"].items():
        rows.append(
            [
                TRAIN_LABELS.get(name, name),
                f.get("run", ""),
                figure(f["tokens_per_s"], ".1f"),
                figure(f["s_per_step"], ".2f"),
                ratio_over(f, "vs_seed_loop"),
                ratio_over(f, "vs_trl_defaults"),
                figure(f["mfu"], ".1f", 100, "%"),
                figure(f["peak_rss_gb"] or None, ".2f"),  # 0: the process was stopped before it reported
                figure(f["final_loss"], ".4f"),
                figure(f["cores_used"], ".1f"),
            ]
        )
    headers = [
        f"train {model}, batch {result['batch_size']}",
        "steps run",
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
    for name, why in result.get("bounded", {}).items():
        rows.append([GENERATE_LABELS.get(name, name), why, "-", "", "", "", ""])
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


def static_vs_continuous_table(result: dict[str, Any]) -> str:
    rows = []
    static = result["paths"]["static"]
    labels = {
        "static": "sft generate_responses (static batches of 32; kept)",
        "continuous": "Transformers generate_batch (continuous batching, paged attention)",
    }
    for name, f in result["paths"].items():
        if f.get("seconds") is None:
            rows.append([labels[name], f["run"], "-", "-", "-", "-"])
            continue
        same = (
            ""
            if name == "static" or "texts" not in static
            else (f"{sum(a == b for a, b in zip(static['texts'], f['texts']))} of {len(f['texts'])}")
        )
        vs = static["seconds"] / f["seconds"] if static.get("seconds") else None
        rows.append(
            [
                labels[name],
                f"{f['prompts']} x {result['max_new_tokens']}",
                f"{f['seconds']:.1f}",
                ratio(vs),
                same,
                f"{f['cores_used']:.1f}",
            ]
        )
    headers = [
        f"generate {result['model']} (base weights), greedy, fp32",
        "prompts x new tokens",
        "seconds",
        "vs static",
        "same text",
        "cores used",
    ]
    return table(headers, rows)


def summary_table(values: dict[str, Any]) -> str:
    rows = []
    for key, target in values["targets"].items():
        percent = unprefixed(key) in {"train_mfu", "train_loss_rel_diff", "lora_loss_rel_diff_vs_peft"}
        shown = f"{100 * values[key]:.1f}%" if percent else f"{values[key]:.2f}"
        if f"{key}_over" in values:
            shown += f" ({values[f'{key}_over']})"
        goal = f"{100 * target['target']:.0f}%" if percent else f"{target['target']}x"
        sign = ">=" if target["kind"] == "min" else "<="
        rows.append([key, shown, f"{sign} {goal}", "yes" if target["met"] else "NO"])
    # Figures without a target: the LoRA rates behind lora_vs_full, and continuous batching's speed over static
    # batches (sft keeps the static ones unless continuous batching is faster with the same outputs).
    for key in ("lora_tokens_per_s", "full_tokens_per_s", "lora_vs_peft_plain", "generate_vs_static"):
        if key in values:
            bound = (
                " (upper bound)"
                if key == "generate_vs_static" and "generate_vs_static_is_upper_bound" in values
                else ""
            )
            rows.append([key, f"{values[key]:.2f}{bound}", "", ""])
    title = "summary: GPT-2-medium shape, fp32 (default_: sft's default here); lora_: SmolLM2-135M"
    return table([title, "value", "target", "met"], rows)
