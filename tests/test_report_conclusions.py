"""Reports that conclude from accuracy (knees, crossings, stop-rule verdicts, method comparisons, export checks) draw
no conclusion when the dense model is near chance (`keras_expander.predictions.near_chance`): they store the dense and
chance accuracy, record the verdict as None with the reason, and print the reason instead of yes / no.

The report-building functions are called on results shaped like the experiments' own (training models that never
learn, for every report, would take minutes); a control beside each case shows the verdict is still drawn for a
model that learned."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TEN_BALANCED_CLASSES = [100] * 10  # test-label counts: chance 10 %
NEAR_CHANCE = 0.12  # 2 points above chance: a dense model that never learned
LEARNED = 0.90


def paper_points(dense_accuracy: float) -> list[dict]:
    """A reproduce_paper sweep whose accuracy drops by 1.5 points at q = 20, where Delta_R crosses zero."""
    points = [{"method": "dense", "q": 100.0, "test_accuracy": dense_accuracy, "seconds": 1.0, "delta_r": 3.0,
               "delta_s": 3.0, "weighted_delta_r": 2.0, "weighted_delta_s": 2.0}]
    for method in ("tfmot", "expander", "random"):
        for q, drop, delta in ((50.0, 0.0, 1.0), (20.0, 0.015, 0.1), (10.0, 0.02, -1.0), (5.0, 0.02, -2.0)):
            points.append({"method": method, "q": q, "test_accuracy": dense_accuracy - drop, "seconds": 1.0,
                           "delta_r": delta, "delta_s": delta + 1.0, "weighted_delta_r": delta + 1.0,
                           "weighted_delta_s": delta + 1.0})
    return points


PAPER_HEADER = {"experiment": "audio_folder_lstm", "title": "Your audio folder (--data-dir), LSTM", "snr_db": None,
                "settings": {}, "command": "python examples/reproduce_paper.py --experiment audio_folder_lstm",
                "data": "a labelled audio folder", "hardware": "2 CPU cores, TensorFlow CPU"}


def write_paper_json(folder: Path, dense_accuracy: float) -> None:
    from examples import reproduce_paper

    reproduce_paper.write_results(str(folder / "audio_folder_lstm.json"), PAPER_HEADER, paper_points(dense_accuracy),
                                  TEN_BALANCED_CLASSES)


def test_reproduce_paper_draws_no_knee_or_crossing_verdict_from_a_dense_model_near_chance(tmp_path):
    from examples import reproduce_paper

    # The README is rebuilt from the sweep's JSON: its points and the class counts of its test labels.
    (tmp_path / "audio_folder_lstm.json").write_text(json.dumps(
        {**PAPER_HEADER, "points": paper_points(NEAR_CHANCE), "test_label_counts": TEN_BALANCED_CLASSES}))
    table = Path(reproduce_paper.write_summary(str(tmp_path))).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| tfmot |")]
    assert rows[-1].endswith("| no conclusion: the dense model is at 12.0 %, within 10 points of chance (10.0 %, "
                             "always the most frequent label) |"), rows[-1]  # old main: "yes (delta_r, ...)"
    write_paper_json(tmp_path, NEAR_CHANCE)
    result = json.loads((tmp_path / "audio_folder_lstm.json").read_text())
    assert result["dense_accuracy"] == pytest.approx(NEAR_CHANCE) and result["chance_accuracy"] == pytest.approx(0.1)
    assert result["no_conclusion"].startswith("no conclusion: the dense model is at 12.0 %")
    for found in result["findings"].values():
        assert found["knee_q"] is None and set(found["knee_within_5_points"].values()) == {None}
        assert found["no_conclusion"] == result["no_conclusion"]
        assert found["crossing_q"]["delta_r"] is not None  # read from Delta, not accuracy: kept


def test_reproduce_paper_real_sweep_of_a_model_that_never_learned_draws_no_conclusion(data_dir, tmp_path):
    from examples import reproduce_paper

    # 64 training images, 1 epoch, 4 units: a real dense model a few points above chance (12 s on 2 cores).
    argv = ["--experiment", "mnist_lstm", "--q", "20", "--methods", "tfmot", "--epochs", "1", "--units", "4",
            "--train-samples", "64", "--data-dir", str(data_dir), "--out", str(tmp_path), "--verbose", "0"]
    assert reproduce_paper.main(argv) == 0
    result = json.loads((tmp_path / "mnist_lstm.json").read_text())
    assert result["chance_accuracy"] == pytest.approx(0.1135)  # the digit 1 in MNIST's test set
    assert result["findings"]["tfmot"]["knee_q"] is None
    assert result["findings"]["tfmot"]["no_conclusion"] == result["no_conclusion"]
    assert result["no_conclusion"].startswith(f"no conclusion: the dense model is at "
                                              f"{100 * result['dense_accuracy']:.1f} %")
    assert f"| {result['no_conclusion']} |" in (tmp_path / "README.md").read_text()


def test_reproduce_paper_still_concludes_for_a_dense_model_that_learned(tmp_path):
    from examples import reproduce_paper

    write_paper_json(tmp_path, LEARNED)
    result = json.loads((tmp_path / "audio_folder_lstm.json").read_text())
    assert result["no_conclusion"] is None and result["findings"]["tfmot"]["knee_q"] == 20.0
    assert result["findings"]["tfmot"]["knee_within_5_points"]["delta_r"] is True
    assert "| yes (delta_r" in Path(reproduce_paper.write_summary(str(tmp_path))).read_text()


def test_reproduce_paper_json_without_test_labels_draws_no_conclusion(tmp_path):
    from examples import reproduce_paper

    found = reproduce_paper.findings(paper_points(LEARNED), None)  # a JSON written before labels were stored
    assert found["tfmot"]["knee_q"] is None and "rerun the same command" in found["tfmot"]["no_conclusion"]


def knee_records(dense_accuracy: float, label_counts: list[int], q_grid=(50.0, 10.0)) -> list[dict]:
    """stop_rule_knee runs of one (cell, dataset, seed): accuracy flat to q = 50, 3 points down at q = 10."""
    import stop_rule_knee

    def record(q, accuracy, **more):
        return {"cell": "lstm", "dataset": "speech", "seed": 0, "q": q, "live": None, "test_accuracy": accuracy,
                "test_label_counts": label_counts, "seconds": 1.0, "epochs": 1, "measured_q": 100.0, **more}

    views = {view: {"delta_r": 1.0, "delta_s": 1.0, "relative_delta_r": 0.5}
             for view in ("per_gate", "union", "stacked")}
    steps = [{"step": step, "q": q, "views": views, "holdout_accuracy": dense_accuracy,
              "holdout_accuracy_before_step": dense_accuracy} for step, q in ((1, 50.0), (2, 10.0))]
    live = [{**record(min(q_grid), dense_accuracy - 0.002), "live": name, "measured_q": 50.0}
            for name in stop_rule_knee.LIVE_RULES]  # the tolerance rules (the default among them) stop at q = 50
    return [record("pretrained", dense_accuracy), record(100.0, dense_accuracy), record(50.0, dense_accuracy),
            record(min(q_grid), dense_accuracy - 0.03, steps=steps, reference_holdout_accuracy=dense_accuracy), *live]


def knee_payload(rows):
    return {"date": "2026-12-05", "command": "python benchmarks/stop_rule_knee.py", "protocol": "test.",
            "rows": rows}


def test_stop_rule_knee_draws_no_knee_or_verdict_from_a_dense_model_near_chance():
    import stop_rule_knee

    # Two classes, 61 % of the test labels in one: a dense model at 65 % is above the benchmark's 50 % floor, but
    # only 4 points above always answering the frequent label.
    rows = stop_rule_knee.summarize(knee_records(0.65, [300, 190]), [50.0, 10.0])
    for row in rows:
        assert row["knee_q"] is None and row["within_5_of_knee"] is None and row["accuracy_within_1"] is None
        assert row["counted"] is False  # old main: knee 50, counted, tolerance_1 "ok"
        assert row["dense_accuracy"] == pytest.approx(65.0)
        assert row["chance_accuracy"] == pytest.approx(61.22, abs=0.01)
        assert row["no_conclusion"].startswith("no conclusion: the dense model is at 65.0 %")
    markdown = stop_rule_knee.to_markdown(knee_payload(rows))
    assert f"| {rows[0]['no_conclusion']} |" in markdown  # in the knee column
    assert "**ok** |" not in markdown and "on 0 of 0 rows." in markdown
    assert "Not judged: lstm speech (no conclusion" in markdown
    assert "The rule with the most rows met" not in markdown


def test_stop_rule_knee_still_judges_a_dense_model_that_learned():
    import stop_rule_knee

    rows = stop_rule_knee.summarize(knee_records(0.95, [300, 190]), [50.0, 10.0])
    default = next(r for r in rows if r["rule"]["name"] == "delta_r_per_gate")
    assert default["no_conclusion"] is None and default["knee_q"] == 50.0
    assert default["within_5_of_knee"] is False and default["counted"] is True  # never fails: stops at 10, knee 50
    markdown = stop_rule_knee.to_markdown(knee_payload(rows))
    assert "**tolerance_1** (default) | 50.0 / -0.20 **ok** |" in markdown and "Not judged" not in markdown


def test_stop_rule_knee_runs_without_test_labels_draw_no_conclusion():
    import stop_rule_knee

    records = [{k: v for k, v in r.items() if k != "test_label_counts"} for r in knee_records(0.95, [300, 190])]
    rows = stop_rule_knee.summarize(records, [50.0, 10.0])
    assert rows[0]["knee_q"] is None and "do not record their test labels" in rows[0]["no_conclusion"]


def seed_rows(dense_accuracy: float) -> list[dict]:
    """pruning_seeds runs of one cell over 3 seeds: each ablation step 1 point better than the one before."""
    rows = []
    for seed in range(3):
        for offset, name in enumerate(("dense", "tfmot", "per_gate_magnitude", "degree_floor", "correct")):
            accuracy = dense_accuracy + (0.0 if name == "dense" else 0.01 * offset + 0.001 * seed * offset)
            rows.append({"cell": "lstm", "name": name, "target_sparsity": 0.0 if name == "dense" else 0.9,
                         "seed": seed, "test_accuracy": accuracy, "measured_sparsity": 0.9, "isolated_nodes": 0,
                         "worst_delta_r": 1.0, "seconds_per_epoch": 1.0, "held_at_step": None,
                         "corrected_steps": 0})
    return rows


def seeds_payload(rows, y_test):
    import pruning_seeds

    methods = ["dense", "tfmot", "per_gate_magnitude", "degree_floor", "correct"]
    arguments = {"epochs": 1, "batch_size": 128, "learning_rate": 1e-3, "cosine_decay": False, "units": 8,
                 "frequency": 2, "seed_list": [0, 1, 2], "methods": methods, "published": False}
    return {"name": "seeds", "command": "python benchmarks/pruning_seeds.py", "date": "2026-12-05",
            "hardware": "2 CPU cores", "arguments": arguments, "runs": rows,
            "settings": pruning_seeds.summarize(rows, ["lstm"], [0.9], methods, y_test)}


def test_pruning_seeds_names_no_ingredient_when_the_dense_model_is_near_chance():
    import pruning_seeds

    payload = seeds_payload(seed_rows(NEAR_CHANCE), np.repeat(np.arange(10), 100))
    for setting in payload["settings"]:
        assert setting["dense_accuracy"] == pytest.approx(NEAR_CHANCE)
        assert setting["chance_accuracy"] == pytest.approx(0.1)
        assert setting["no_conclusion"].startswith("no conclusion: the dense model is at 12.0 %")
    statements = pruning_seeds.ingredient_statements(payload["settings"])
    assert statements == [f"- lstm, sparsity 0.90: {payload['settings'][0]['no_conclusion']}."]
    markdown = pruning_seeds.to_markdown(payload)
    assert "gain carried by" not in markdown and "its differences compare nothing" in markdown


def test_pruning_seeds_still_names_the_ingredients_of_a_model_that_learned():
    import pruning_seeds

    payload = seeds_payload(seed_rows(LEARNED), np.repeat(np.arange(10), 100))
    assert payload["settings"][0]["no_conclusion"] is None
    assert "gain carried by per-gate thresholds" in pruning_seeds.ingredient_statements(payload["settings"])[0]


def quality_rows(dense_accuracy: float) -> list[dict]:
    row = {"cell": "lstm", "stop_rule": "", "target_sparsity": 0.0, "measured_sparsity": 0.0, "worst_delta_r": 1.0,
           "worst_delta_s": 1.0, "worst_weighted_delta_r": 1.0, "isolated_nodes": 0, "seconds_per_epoch": 1.0}
    return [{**row, "method": "dense", "test_accuracy": dense_accuracy},
            {**row, "method": "tfmot", "target_sparsity": 0.9, "measured_sparsity": 0.9, "test_accuracy": 0.11},
            {**row, "method": "expander", "stop_rule": "monitor", "target_sparsity": 0.9, "measured_sparsity": 0.9,
             "test_accuracy": 0.13}]


def test_pruning_quality_flags_the_comparison_of_a_dense_model_near_chance():
    import pruning_quality

    y_test = np.repeat(np.arange(10), 100)
    checks = pruning_quality.dense_checks(quality_rows(NEAR_CHANCE), y_test)
    assert checks["lstm"]["dense_accuracy"] == pytest.approx(NEAR_CHANCE)
    assert checks["lstm"]["chance_accuracy"] == pytest.approx(0.1)
    args = argparse.Namespace(epochs=1, units=8, sparsities=[0.9], cells=["lstm"], frequency=2, seed=0, out="r",
                              batch_size=128)
    markdown = pruning_quality.to_markdown(quality_rows(NEAR_CHANCE), args, "2 CPU cores", checks)
    assert f"- lstm: {checks['lstm']['no_conclusion']}; its methods' accuracies compare nothing." in markdown
    learned = pruning_quality.dense_checks(quality_rows(LEARNED), y_test)
    assert learned["lstm"]["no_conclusion"] is None
    assert "no conclusion" not in pruning_quality.to_markdown(quality_rows(LEARNED), args, "2 CPU cores", learned)


def export_runs(dense_accuracy: float) -> dict:
    def reports(accuracy, gzip_bytes):
        return {"float32": {"keras_accuracy": accuracy, "tflm_accuracy": accuracy, "gzip_bytes": 4 * gzip_bytes,
                            "arena_bytes": 8000},
                "int8": {"keras_accuracy": accuracy, "tflm_accuracy": accuracy, "gzip_bytes": gzip_bytes,
                         "arena_bytes": 8000}}

    return {"pruned": {"reports": reports(0.113, 2000)}, "dense": {"reports": reports(dense_accuracy, 10000)}}


def test_export_accuracy_check_draws_no_conclusion_from_a_dense_model_near_chance():
    import export_mnist

    y_test = np.repeat(np.arange(10), 100)
    checks = export_mnist.acceptance_checks(export_runs(NEAR_CHANCE), y_test)
    assert checks["int8_tflm_within_0.5_points_of_keras_float"] is None
    assert checks["no_conclusion"].startswith("no conclusion: the dense model is at 12.0 %")
    assert checks["dense_keras_float_accuracy"] == NEAR_CHANCE and checks["chance_accuracy"] == pytest.approx(0.1)
    assert checks["gzip_ratio_at_most_0.30"] is True and checks["arena_at_most_16_KiB"] is True  # not from accuracy
    learned = export_mnist.acceptance_checks(export_runs(LEARNED), y_test)
    assert learned["int8_tflm_within_0.5_points_of_keras_float"] is True and learned["no_conclusion"] is None
