"""The benchmark's bounds on slow paths and its machine class (bench/instrument.py, bench/machine.py, bench/run.py)."""

import time

import pytest

from bench.instrument import OverBudget, StepLog
from bench.machine import FORCE_NO_BF16, machine_class, matmul_peak_gflops
from bench.report import (
    add_training_ratios,
    common_rate,
    run_description,
    summary,
    training_figures,
    training_summary,
)
from bench.run import STAGE_SHARES, Deadline


def fake_steps(log: StepLog, seconds: list[float]) -> None:
    """Step ends as if each step took the given seconds."""
    log.begin()
    total = 0.0
    for step in seconds:
        total += step
        log.ends.append(total)
        log.cpu_ends.append(total)
        log.batch_lengths.append([10])
        log.losses.append(1.0)
        if log.should_stop():
            break


def test_no_step_starts_that_would_end_past_the_budget() -> None:
    log = StepLog(planned_steps=5, budget_s=10.0)
    fake_steps(log, [4.0, 4.0, 4.0, 4.0, 4.0])
    result = log.result()
    # After two steps (8 s) a third would end at 12 s: the path stops, and says so.
    assert result["completed_steps"] == 2 and result["bounded"]
    assert run_description(result) == "bounded: 2 of 5 steps in 8 s"


def test_the_step_after_warm_up_is_estimated_at_half_of_it() -> None:
    log = StepLog(planned_steps=3, budget_s=10.0)
    fake_steps(log, [6.0, 3.0, 3.0])
    result = log.result()
    # Step 1 (6 s, one-off costs included) lets step 2 start (6 + 3 <= 10); step 2's 3 s then stops step 3.
    assert result["completed_steps"] == 2 and result["bounded"]
    one = StepLog(planned_steps=3, budget_s=10.0)
    fake_steps(one, [8.0, 3.0, 3.0])
    assert run_description(one.result()) == "bounded: 1 of 3 steps in 8 s; its rate includes the warm-up"


def test_a_path_within_its_budget_is_not_bounded() -> None:
    log = StepLog(planned_steps=3, budget_s=100.0)
    fake_steps(log, [1.0, 1.0, 1.0])
    result = log.result()
    assert result["completed_steps"] == 3 and not result["bounded"]
    assert run_description(result) == "3 of 3 steps"


def test_hard_limit_interrupts_a_step() -> None:
    log = StepLog(planned_steps=3, budget_s=0.1, hard_s=0.2)
    try:
        log.begin()
        log.batch_lengths.append([10])  # the step has started
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # a step far longer than the budget
            pass
        pytest.fail("the hard limit did not interrupt the step")
    except OverBudget:
        log.interrupted()
    finally:
        log.end()
    result = log.result()
    assert result["completed_steps"] == 0 and result["batch_lengths"] == []
    assert result["bounded"] and 0.15 < result["interrupted_at_s"] < 2
    assert run_description(result) == "bounded: 0 of 3 steps in 0 s (step 1 unfinished)"


def test_ratios_use_the_steps_every_path_finished() -> None:
    full = {"step_s": [5.0, 2.0], "batch_lengths": [[100], [40]]}
    lora = {"step_s": [3.0, 1.0, 1.0, 1.0], "batch_lengths": [[100], [40], [60], [60]]}
    # Step 2 alone (step 1 is warm-up): 40 tokens in 1 s against 40 in 2 s.
    assert common_rate([lora, full]) == [40.0, 20.0]
    assert common_rate([lora, {"step_s": [], "batch_lengths": []}]) is None


def test_lora_against_full_leaves_out_full_fine_tunings_slow_early_steps() -> None:
    """Full fine-tuning's steps 2 and 3 still pay first-touch costs; LoRA's comparison times steps 4 on."""
    lengths = [[100], [40], [40], [40], [50], [50], [50]]

    def raw(step_s: list[float]) -> dict[str, object]:
        return {"step_s": step_s, "step_cpu_s": step_s, "batch_lengths": lengths, "losses": [1.0] * 7,
                "planned_steps": 7, "peak_rss_gb": 1.0}  # fmt: skip

    full, lora = raw([9.0, 4.0, 3.0, 2.0, 2.5, 2.5, 2.5]), raw([3.0, 1.0, 1.0, 1.0, 1.25, 1.25, 1.25])
    # Steps 4-7: 190 tokens in 9.5 s against 4.75 s; from step 2 it would have read 2.44x.
    assert common_rate([lora, full], 3) == [pytest.approx(40.0), pytest.approx(20.0)]
    assert common_rate([lora, full])[0] / common_rate([lora, full])[1] == pytest.approx(16.5 / 6.75)
    peaks = {"float32": 100.0, "bfloat16": 200.0}
    shape = {"matmul_params": 1000, "layers": 2, "width": 8}
    paths = {name: training_figures(r, shape, peaks, 3) for name, r in (("sft_default", full), ("sft_lora", lora))}
    assert paths["sft_default"]["timed_steps"] == 4 and paths["sft_default"]["tokens_per_s"] == pytest.approx(20.0)
    lora_result = {"model": "m", "steps": 7, "warmup_steps": 3, "paths": paths, "raw": {"sft_default": full,
                   "sft_lora": lora}}  # fmt: skip
    result = summary(None, None, lora_result)
    assert result["lora_vs_full"] == pytest.approx(2.0) and result["lora_timed_steps"] == 4
    assert result["lora_paths"]["sft_default"] == "7 of 7 steps, 20.0 real tokens/s"


def test_a_run_stopped_within_the_warm_up_is_timed_on_its_last_step_and_says_so() -> None:
    bounded = {"step_s": [9.0, 4.0], "batch_lengths": [[100], [40]], "planned_steps": 7, "bounded": True,
               "ends": [9.0, 13.0]}  # fmt: skip
    other = {"step_s": [3.0, 1.0, 1.0, 1.0], "batch_lengths": [[100], [40], [40], [40]]}
    assert common_rate([other, bounded], 3) == [40.0, 10.0]  # step 2, the last both finished
    assert run_description(bounded, 3) == "bounded: 2 of 7 steps in 13 s; its rate includes the warm-up"
    assert run_description(bounded) == "bounded: 2 of 7 steps in 13 s"
    assert run_description({**other, "planned_steps": 7}, 3) == "4 of 7 steps"


def test_speed_ratios_use_the_steps_both_paths_finished() -> None:
    """sft finished three steps, the seed loop only its warm-up: the ratio is over step 1 for both."""
    raw = {
        "sft_default": {"step_s": [12.0, 4.0, 4.0], "batch_lengths": [[480], [400], [400]]},
        "seed_loop": {"step_s": [24.0], "batch_lengths": [[480]]},
    }
    paths = {"sft_default": {"tokens_per_s": 100.0}, "seed_loop": {"tokens_per_s": 20.0}}
    add_training_ratios(paths, raw)
    assert paths["sft_default"]["vs_seed_loop"] == pytest.approx(2.0)  # 40 against 20 tokens/s, not 100 against 20
    assert paths["sft_default"]["vs_seed_loop_over"] == "step 1"  # its own rate is over steps 2-3: the table says so
    assert paths["seed_loop"]["vs_seed_loop"] == pytest.approx(1.0) and "vs_seed_loop_over" not in paths["seed_loop"]
    assert "vs_trl_defaults" not in paths["sft_default"]


def test_losses_are_compared_at_a_step_both_paths_finished() -> None:
    """A bounded seed loop that finished one step is compared with the other path's first step, not its last."""
    sft = {"tokens_per_s": 100.0, "mfu": 0.5, "vs_seed_loop": 2.0, "losses": [10.9756, 9.3176, 9.618]}
    seed = {"tokens_per_s": 50.0, "losses": [10.9752]}
    values = training_summary({"sft_default": sft, "seed_loop": seed}, "sft_default")
    assert values["train_loss_rel_diff"] == pytest.approx(0.0004 / 10.9752)


def test_the_summary_says_how_far_each_training_path_got() -> None:
    """A path bounded after its warm-up step gives train_mfu from that step alone: summary.json says so."""
    shape = {"matmul_params": 1000, "layers": 2, "width": 8}
    peaks = {"float32": 100.0, "bfloat16": 200.0}

    def raw(step_s: list[float], planned: int) -> dict[str, object]:
        log = StepLog(planned_steps=planned, budget_s=20.0)
        fake_steps(log, step_s)
        return {**log.result(), "peak_rss_gb": 1.0}

    raws = {"sft_fp32": raw([18.0, 9.0, 9.0], 3), "sft_default": raw([6.0, 3.0, 3.0], 3)}
    paths = {name: training_figures(r, shape, peaks) for name, r in raws.items()}
    result = summary({"steps": 3, "warmup_steps": 1, "paths": paths}, None)
    assert result["train_paths"]["sft_fp32"].startswith("bounded: 1 of 3 steps in 18 s; its rate includes the warm-up")
    assert result["train_paths"]["sft_default"].startswith("3 of 3 steps, ")
    assert result["train_mfu"] == pytest.approx(paths["sft_fp32"]["mfu"], abs=1e-4)


def test_time_cap_shares_out_among_stages_and_children() -> None:
    start = time.monotonic()
    deadline = Deadline(115.0, ["train", "lora"], start)  # 100 s after the final reserve of 15 s
    deadline.start_stage("train")
    # train's share against the stages left, split over four children.
    share = STAGE_SHARES["train"] / (STAGE_SHARES["train"] + STAGE_SHARES["lora"])
    assert deadline.child_s(4) == pytest.approx(100 * share / 4, abs=0.5)
    assert Deadline(None, ["train"], start).child_s(1) > 600  # the full run has no cap
    # The last stage gets all that is left: here LoRA's share, unused, goes to training.
    last = Deadline(115.0, ["lora", "train"], start)
    last.start_stage("lora")
    last.start_stage("train")
    assert last.child_s(2) == pytest.approx(100 / 2, abs=0.5)


def test_machine_class_names_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = {"float32": 72.0, "bfloat16": 9.0}
    monkeypatch.setenv(FORCE_NO_BF16, "1")
    forced = machine_class(peaks)
    assert forced["bf16_native"] is False and forced["bf16_forced_off"] is True
    assert f"{FORCE_NO_BF16}=1" in forced["line"] and "fp32 matmul peak 72 GFLOP/s" in forced["line"]
    assert forced["line"].startswith(f"{forced['cores']}-core ")
    monkeypatch.delenv(FORCE_NO_BF16)
    plain = machine_class(peaks)
    assert plain["bf16_forced_off"] is False
    assert ("bf16 native" in plain["line"]) == plain["bf16_native"]


def test_machine_class_follows_a_onednn_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    peaks = {"float32": 150.0, "bfloat16": 2.0}
    monkeypatch.delenv(FORCE_NO_BF16, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    capped = machine_class(peaks)
    assert capped["bf16_native"] is False and capped["onednn_isa_cap"] == "AVX2"
    assert "bf16 emulated (oneDNN capped to AVX2)" in capped["line"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # its bf16 kernels stay allowed
    assert machine_class(peaks)["line"].count("capped") == 0


def test_peak_measurement_keeps_to_its_budget() -> None:
    start = time.perf_counter()
    assert matmul_peak_gflops("float32", budget_s=0.5) > 0
    assert time.perf_counter() - start < 10


def test_peak_of_a_slow_dtype_keeps_to_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """An emulated dtype (a few GFLOP/s) is measured at a size that fits the budget, not at the largest one."""
    import torch

    gflops = 2.0

    def emulated(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        time.sleep(2 * a.shape[0] * a.shape[1] * b.shape[1] / gflops / 1e9)
        return a

    monkeypatch.setattr(torch, "matmul", emulated)
    start = time.perf_counter()
    measured = matmul_peak_gflops("bfloat16", budget_s=2.0)
    assert time.perf_counter() - start < 3.0  # at 2048, one product alone would take 8.6 s
    assert measured == pytest.approx(gflops, rel=0.3)


def test_one_run_stands_for_sfts_default_where_it_is_fp32(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import bench.assets
    import bench.child
    import bench.run

    ran: list[str] = []

    def child(module: str, spec: dict, timeout_s: float) -> dict:
        ran.append(spec["path"])
        log = StepLog(planned_steps=spec["steps"])
        fake_steps(log, [1.0] * spec["steps"])
        return {**log.result(), "peak_rss_gb": 1.0}

    monkeypatch.setattr(bench.child, "run_child", child)
    monkeypatch.setattr(bench.assets, "model_dir", lambda model: model)
    monkeypatch.setattr(bench.run, "model_shape", lambda model: {"matmul_params": 1000, "layers": 2, "width": 8})
    names = ("sft_default", "sft_fp32", "seed_loop")

    def benchmark() -> dict:
        deadline = Deadline(None, ["train"], time.monotonic())
        return bench.run.train_benchmark("m", 3, names, tmp_path, {"float32": 1.0, "bfloat16": 1.0}, 0, None, deadline)

    monkeypatch.setenv(FORCE_NO_BF16, "1")
    result = benchmark()
    assert ran == ["sft_fp32", "seed_loop"]
    assert result["raw"]["sft_default"]["same_run_as"] == "sft_fp32"
    assert "sft_fp32's run" in result["paths"]["sft_default"]["run"]
    assert result["paths"]["sft_default"]["tokens_per_s"] == result["paths"]["sft_fp32"]["tokens_per_s"]
    monkeypatch.delenv(FORCE_NO_BF16)
    monkeypatch.setattr("bench.machine.bf16_native", lambda: True)
    ran.clear()
    benchmark()
    assert ran == list(names)  # bf16 native: the default is its own path


def test_a_limit_reached_after_the_last_step_cuts_nothing_short() -> None:
    log = StepLog(planned_steps=3, budget_s=100.0)
    fake_steps(log, [1.0, 1.0, 1.0])
    log.interrupted()  # the timer fired in the trainer's shut-down, after every step
    result = log.result()
    assert not result["bounded"] and result["interrupted_at_s"] is None
    assert run_description(result) == "3 of 3 steps"


def test_the_paths_in_turns_run_as_one_pair_that_shares_its_budget(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import bench.assets
    import bench.child
    import bench.run

    pairs: list[list[str]] = []
    singles: list[str] = []
    budgets: dict[str, float] = {}

    def fake_run(spec: dict) -> dict:
        budgets[spec["path"]] = spec["budget_s"]
        log = StepLog(planned_steps=spec["steps"])
        fake_steps(log, [1.0] * spec["steps"])
        return {**log.result(), "peak_rss_gb": 1.0}

    def pair(module: str, specs: tuple, timeout_s: float) -> list:
        pairs.append([spec["path"] for spec in specs])
        # The first ran past its time; the other's result stands.
        return [bench.child.PathFailed(f"{module} {specs[0]['path']} ran past 9 s"), fake_run(specs[1])]

    def child(module: str, spec: dict, timeout_s: float) -> dict:
        singles.append(spec["path"])
        return fake_run(spec)

    monkeypatch.setattr(bench.child, "run_children_in_turns", pair)
    monkeypatch.setattr(bench.child, "run_child", child)
    monkeypatch.setattr(bench.assets, "model_dir", lambda model: model)
    monkeypatch.setattr(bench.run, "model_shape", lambda model: {"matmul_params": 1000, "layers": 2, "width": 8})
    monkeypatch.setattr("bench.machine.bf16_native", lambda: True)
    names = ("sft_default", "sft_lora", "sft_lora_peft")
    deadline = Deadline(None, ["lora"], time.monotonic())
    peaks = {"float32": 1.0, "bfloat16": 1.0}
    result = bench.run.train_benchmark("m", 3, names, tmp_path, peaks, 0, 10.0, deadline, 1, names[:2])
    assert pairs == [["sft_default", "sft_lora"]] and singles == ["sft_lora_peft"]
    # Each clock of the pair runs through both paths' steps, so each gets both budgets.
    assert budgets == {"sft_lora": 20.0, "sft_lora_peft": 10.0}
    assert result["paths"]["sft_default"]["tokens_per_s"] is None  # reported as unfinished, not dropped
    assert result["paths"]["sft_default"]["run"].startswith("bounded: 0 of 3 steps")
    assert result["paths"]["sft_lora"]["tokens_per_s"] == pytest.approx(10.0)


def test_a_frozen_base_costs_four_flops_per_weight_and_token() -> None:
    from peft import LoraConfig, get_peft_model

    from bench.flops import matmul_params, matmul_params_by_training, shape_of, training_flops
    from sft.models.tiny import build_model

    model = build_model("llama", vocab_size=100)
    shape = shape_of(model)
    full = matmul_params_by_training(model)
    assert full == {"trained": matmul_params(model), "frozen": 0}
    lora = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    split = matmul_params_by_training(lora)
    # The base (tied head included) is frozen; the adapters, rank 2 on every linear layer, are what trains.
    assert split["frozen"] == full["trained"]
    adapters = sum(p.numel() for name, p in lora.named_parameters() if "lora_" in name)
    assert split["trained"] == adapters > 0
    lengths = [5, 7]
    attention = 6 * shape["layers"] * shape["width"] * (25 + 49)
    assert training_flops(shape, lengths) == 6 * full["trained"] * 12 + attention
    assert training_flops(shape, lengths, split) == (4 * full["trained"] + 6 * adapters) * 12 + attention


def test_lora_args_override_the_demo_recipes_lora_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # bench.lockstep's --lora-args reach the LoRA path after the demo recipe's own settings, so they win.
    import bench.train_paths as train_paths
    from sft.training.config import parse_recipe

    specs: list[dict] = []
    monkeypatch.setattr(train_paths, "sft_default", lambda spec, log: specs.append(spec))
    spec = {"model": "tiny", "data": "data.json", "steps": 4, "batch_size": 8}
    train_paths.sft_lora(spec, StepLog(planned_steps=4))
    changed = ["--lora_dropout", "0", "--lora_target_modules", "q_proj", "v_proj"]
    train_paths.sft_lora({**spec, "lora_args": changed}, StepLog(planned_steps=4))
    demo, other = (parse_recipe(train_paths.sft_argv(s, "out")).model for s in specs)
    assert (demo.method, demo.lora_dropout, demo.lora_target_modules) == ("lora", 0.05, "all-linear")
    assert (other.method, other.lora_dropout, other.lora_target_modules) == ("lora", 0.0, ["q_proj", "v_proj"])
    assert other.lora_r == demo.lora_r == 16
