"""benchmarks/pruning_seeds.py: the paired statistics in closed form, and a slow smoke run of the whole benchmark on
a tiny subset (2 seeds) that checks the JSON fields, the plots and that a rerun trains nothing."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import pruning_seeds  # noqa: E402


def test_paired_difference_has_the_t_interval_in_closed_form():
    ours = {0: 0.95, 1: 0.93, 2: 0.96}
    base = {0: 0.94, 1: 0.93, 2: 0.94, 3: 0.99}  # seed 3 has no pair and is left out
    result = pruning_seeds.paired(ours, base)
    differences = np.array([1.0, 0.0, 2.0])  # points
    half_width = 4.302652729911275 * differences.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 df)
    assert result["seeds"] == [0, 1, 2]
    assert result["mean"] == pytest.approx(1.0)
    assert result["ci95"] == pytest.approx([1.0 - half_width, 1.0 + half_width])
    assert result["ci_includes_zero"]
    # ttest_rel's statistic: mean / (sd / sqrt(n)) = 1 / (1 / sqrt(3)); two-sided p with 2 df.
    assert result["p_value"] == pytest.approx(2 * (1 - 0.5 * (1 + math.sqrt(3) / math.sqrt(3 + 2))), rel=1e-6)
    assert pruning_seeds.paired({0: 0.9}, {0: 0.8}) is None  # one pair: no interval


def test_identical_differences_give_a_zero_width_interval():
    result = pruning_seeds.paired({0: 0.95, 1: 0.96}, {0: 0.94, 1: 0.95})
    assert result["ci95"] == pytest.approx([1.0, 1.0]) and not result["ci_includes_zero"]


def test_plan_is_seed_major_with_one_dense_run_per_cell():
    plan = pruning_seeds.plan_runs(["lstm"], [0.9, 0.95], ["dense", "tfmot", "random"], [0, 1])
    assert plan[:5] == [("lstm", 0.0, "dense", 0), ("lstm", 0.9, "tfmot", 0), ("lstm", 0.9, "random", 0),
                        ("lstm", 0.95, "tfmot", 0), ("lstm", 0.95, "random", 0)]
    assert len(plan) == 10 and plan[5][3] == 1


def allocation_rows(accuracy: dict, seeds) -> list[dict]:
    """Synthetic runs: method -> test accuracy per seed (a list), at 95 % on an LSTM, with a dense run."""
    rows = []
    for method, values in accuracy.items():
        for seed in seeds:
            rows.append({"cell": "lstm", "name": method, "seed": seed, "test_accuracy": values[seed],
                         "target_sparsity": 0.0 if method == "dense" else 0.95, "measured_sparsity": 0.95,
                         "isolated_nodes": 0, "worst_delta_r": -1.0, "seconds_per_epoch": 1.0})
    return rows


def test_allocation_verdict_names_the_winner_and_refuses_one_seed():
    y_test = np.arange(1000) % 10
    accuracy = {"dense": [0.97] * 5, "degree_floor": [0.900, 0.902, 0.898, 0.901, 0.899],
                "erk": [0.903, 0.905, 0.901, 0.904, 0.902],  # +0.3 points: under the 0.5 margin
                "expansion": [0.910, 0.913, 0.907, 0.911, 0.909]}  # +1.0 over uniform, +0.7 over erk, every seed
    methods = list(accuracy)
    settings = pruning_seeds.summarize(allocation_rows(accuracy, range(5)), ["lstm"], [0.95], methods, y_test)
    [line] = pruning_seeds.allocation_statements(settings, "mnist")
    assert line.startswith("- lstm, mnist: the expansion-derived allocation at 95 % carries the gain")
    settings = pruning_seeds.summarize(allocation_rows(accuracy, [0]), ["lstm"], [0.95], methods, y_test)
    [line] = pruning_seeds.allocation_statements(settings, "mnist")
    assert line == ("- lstm, mnist: one seed, so no interval and no verdict (differences in points: 5 % kept: erk vs "
                    "uniform +0.30, expansion vs uniform +1.00, expansion vs erk +0.70).")


@pytest.mark.slow
def test_smoke_run_writes_every_field_and_resumes(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks/pruning_seeds.py"), "--name", "smoke", "--seeds", "2",
               "--epochs", "1", "--train-samples", "512", "--test-samples", "200", "--frequency", "2",
               "--sparsities", "0.9", "--threads", "1", "--out", str(tmp_path / "results"), "--runs",
               str(tmp_path / "runs")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    payload = json.loads((tmp_path / "results/smoke.json").read_text())
    methods = list(pruning_seeds.METHODS)
    assert len(payload["runs"]) == 2 * 2 * len(methods)  # 2 seeds x 2 cells x (dense + 6 pruned methods)
    for run in payload["runs"]:
        if run["name"] not in ("dense", "correct"):
            assert run["measured_sparsity"] == pytest.approx(0.9, abs=1e-3)
    for setting in payload["settings"]:
        assert setting["seeds"] == [0, 1]
        assert setting["min"] <= setting["mean"] <= setting["max"]
        if setting["method"] != "tfmot":
            assert set(setting["vs_tfmot"]) == {"seeds", "mean", "ci95", "p_value", "ci_includes_zero"}
    assert {s["method"] for s in payload["settings"] if "ablation_step" in s} == {
        "per_gate_magnitude", "degree_floor", "correct"}
    for cell in ("lstm", "simple_rnn"):
        assert (tmp_path / f"results/smoke_{cell}.png").stat().st_size > 1000
    markdown = (tmp_path / "results/smoke.md").read_text()
    assert "Which ingredient carries the gain" in markdown and "vs tfmot" in markdown
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout.count(": cached,") == len(payload["runs"])
