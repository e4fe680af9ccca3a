"""Benchmark: is expansion-aware pruning better than tfmot beyond seed-to-seed noise, and which ingredient helps?

Trains every (cell, sparsity, method) on real row-wise sequential MNIST (or, with --dataset speech, the Speech
Commands v0.02 test set split by speaker, keras_expander.datasets.speech_commands) for N seeds with identical data,
epochs, optimizer and pruning steps (a seed fixes initialisation, data order and random masks; the same seed is used
for every method, so differences are paired). Methods:
  dense                no pruning
  tfmot                tfmot prune_low_magnitude + PolynomialDecay (its own in-graph top-k over the stacked matrix)
  per_gate_magnitude   ablation 1: top-k within each gate's graph, no degree floor (monitor rule)
  degree_floor         ablation 2 (ours): degree_floor_magnitude, monitor rule
  correct              ablation 3: degree_floor_magnitude with stop_rule="correct" at the same target
  random_biregular     fixed seeded degree-balanced random mask from step 0 (constant_sparsity)
  random               fixed seeded uniform random mask from step 0 (constant_sparsity)
  erk                  degree_floor with allocation="erk": Erdos-Renyi split of each layer's non-zeros between its
                       graphs (keras_expander.pruning.allocation)
  expansion            degree_floor with allocation="expansion": equal Ramanujan gap ratios (ours)
(degree_floor is allocation="uniform"; the three keep the same non-zeros per layer, and the allocation table pairs
them.) The pruned methods other than the random ones follow PolynomialDecay from step 0 to 67 % of training, every
--frequency steps. With --firmware-sparsity S, seed 0 of each allocation at S is also exported to int8, rewritten to
the sparse kernels and run on the Cortex-M4 firmware (benchmarks/mcu_footprint.py's run_row: flash, instructions,
on --firmware-samples test sequences).

Writes <out>/<name>.json (every run, per-setting statistics, paired differences to tfmot and along the ablation
chain with 95 % t intervals and paired t-test p-values from scipy.stats), <out>/<name>.md and one plot per cell
(<out>/<name>_<cell>.png: test accuracy vs sparsity, error bars = standard deviation over seeds). Every finished
run is kept in <runs>/<name>/<run>.json; a rerun skips it (resumable). Prints a progress line per run.

  python benchmarks/pruning_seeds.py --epochs 3 --seeds 5 --threads 1                     # the seed grid
  python benchmarks/pruning_seeds.py --name pruning_seeds_long --cells lstm --sparsities 0.95 \\
      --methods dense tfmot degree_floor random --seeds 3 --epochs 16 --learning-rate 2e-3 --cosine-decay \\
      --threads 1 --published                                                               # the long budget
  python benchmarks/pruning_seeds.py --name pruning_seeds_gru --cells gru --sparsities 0.9 \
      --methods dense tfmot per_gate_magnitude degree_floor --seeds 5 --threads 1         # GRU(128) at 90 %
  python benchmarks/pruning_seeds.py --name allocation_mnist --cells lstm gru --sparsities 0.9 0.95 0.98 \
      --methods dense tfmot degree_floor erk expansion --seeds 5 --threads 1 --firmware-sparsity 0.95 \
      --data-dir ../shared/data                                                  # sparsity allocation (issue 37)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tfmot's own prune_low_magnitude (the baseline here) looks RNN cells up among tf.keras' classes, so in this
# process tf.keras must be tf_keras; set before TensorFlow is imported. keras_expander itself needs no such setting.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

# method -> (train_one method, mask policy, stop rule, base schedule, allocation)
METHODS = {
    "dense": ("dense", "", "", "", "uniform"),
    "tfmot": ("tfmot", "", "", "", "uniform"),
    "per_gate_magnitude": ("expander", "per_gate_magnitude", "monitor", "polynomial_decay", "uniform"),
    "degree_floor": ("expander", "degree_floor_magnitude", "monitor", "polynomial_decay", "uniform"),
    "correct": ("expander", "degree_floor_magnitude", "correct", "polynomial_decay", "uniform"),
    "random_biregular": ("expander", "random_biregular", "monitor", "constant_sparsity", "uniform"),
    "random": ("expander", "random", "monitor", "constant_sparsity", "uniform"),
    "erk": ("expander", "degree_floor_magnitude", "monitor", "polynomial_decay", "erk"),
    "expansion": ("expander", "degree_floor_magnitude", "monitor", "polynomial_decay", "expansion"),
}
# The splits of payloads written before --dataset existed (all MNIST).
MNIST_SPLITS = "55,000 train / 5,000 validation / 10,000 test images (validation: the last training images)"
# The allocation comparisons (issue 37): (method, baseline, what).
ALLOCATION_PAIRS = (("erk", "degree_floor", "erk vs uniform"), ("expansion", "degree_floor", "expansion vs uniform"),
                    ("expansion", "erk", "expansion vs erk"))
# Acceptance of an allocation as the default: at least this many points over both others, paired 95 % interval
# above 0, at one of these sparsities.
ALLOCATION_MARGIN_POINTS = 0.5
ALLOCATION_JUDGED_SPARSITIES = (0.95, 0.98)
# Each ablation step adds one ingredient to the method before it.
ABLATION_CHAIN = (("per_gate_magnitude", "tfmot", "per-gate thresholds"),
                  ("degree_floor", "per_gate_magnitude", "degree floor"),
                  ("correct", "degree_floor", "correct stop rule"))
# Zhang and Stadie, ICLR 2020, Table: row-wise sequential MNIST, 400 units, 95 % sparsity, validation error (%).
PUBLISHED = {"lstm": {"dense": 0.80, "sparse (their method)": 1.66, "random": 2.17},
             "gru": {"dense": 0.77, "sparse (their method)": 1.46, "random": 1.50},
             "simple_rnn": {"dense": 7.08, "sparse (their method)": 7.57}}


def run_key(cell: str, sparsity: float, method: str, seed: int) -> str:
    """File stem of one run: `lstm-0.95-tfmot-seed3` (dense runs carry sparsity 0)."""
    return f"{cell}-{sparsity if method != 'dense' else 0.0:g}-{method}-seed{seed}"


def plan_runs(cells, sparsities, methods, seeds) -> list[tuple[str, float, str, int]]:
    """Every (cell, sparsity, method, seed) to train, seed-major so that early stops leave whole seeds."""
    plan = []
    for seed in seeds:
        for cell in cells:
            if "dense" in methods:
                plan.append((cell, 0.0, "dense", seed))
            plan += [(cell, s, m, seed) for s in sparsities for m in methods if m != "dense"]
    return plan


def paired(values: dict[int, float], baseline: dict[int, float]) -> dict | None:
    """Paired difference over the seeds both have: mean, 95 % t interval, paired t-test p-value.

    Args:
        values, baseline: seed -> test accuracy in [0, 1].

    Returns:
        {"seeds", "mean", "ci95": [low, high], "p_value", "ci_includes_zero"} in accuracy points (%), or None with
        fewer than 2 common seeds.
    """
    from scipy import stats

    common = sorted(set(values) & set(baseline))
    if len(common) < 2:
        return None
    differences = 100 * np.array([values[s] - baseline[s] for s in common])
    mean = float(differences.mean())
    if np.allclose(differences, differences[0]):
        low = high = mean
        p_value = 0.0 if mean else 1.0
    else:
        low, high = stats.t.interval(0.95, len(common) - 1, loc=mean, scale=stats.sem(differences))
        p_value = float(stats.ttest_rel([values[s] for s in common], [baseline[s] for s in common]).pvalue)
    return {"seeds": common, "mean": mean, "ci95": [float(low), float(high)], "p_value": p_value,
            "ci_includes_zero": bool(low <= 0.0 <= high)}


def summarize(rows: list[dict], cells, sparsities, methods, y_test) -> list[dict]:
    """Per (cell, sparsity, method): accuracy statistics over seeds and the paired differences.

    Args:
        rows: Every run (`train_one`'s row with its method `name`).
        cells, sparsities, methods: The grid to summarise.
        y_test: The test labels the runs were measured on, for the chance check.

    Returns:
        One dict per setting with runs; dense_accuracy (mean over the cell's dense seeds, None without dense runs),
        chance_accuracy (both in [0, 1]) and no_conclusion (`chance_check`: the reason no comparison is drawn for
        the cell, or None).
    """
    from benchmarks.recipes import chance_check

    def runs_of(cell, sparsity, method):
        sparsity = 0.0 if method == "dense" else sparsity
        return [r for r in rows if r["cell"] == cell and r["name"] == method and r["target_sparsity"] == sparsity]

    def accuracies(cell, sparsity, method):
        return {r["seed"]: r["test_accuracy"] for r in runs_of(cell, sparsity, method)}

    settings = []
    for cell in cells:
        dense = accuracies(cell, 0.0, "dense")
        check = chance_check(float(np.mean(list(dense.values()))) if dense else None, y_test)
        for sparsity in sparsities:
            for method in methods:
                runs = runs_of(cell, sparsity, method)
                if not runs:
                    continue
                values = {r["seed"]: r["test_accuracy"] for r in runs}
                percent = 100 * np.array(list(values.values()))
                setting = {
                    "cell": cell, "sparsity": sparsity, "method": method, "seeds": sorted(values),
                    "mean": float(percent.mean()), "std": float(percent.std(ddof=1)) if len(percent) > 1 else 0.0,
                    "min": float(percent.min()), "max": float(percent.max()),
                    "measured_sparsity_mean": float(np.mean([r["measured_sparsity"] for r in runs])),
                    "isolated_nodes_mean": float(np.mean([r["isolated_nodes"] for r in runs])),
                    "worst_delta_r_mean": float(np.mean([r["worst_delta_r"] for r in runs])),
                    "seconds_per_epoch_mean": float(np.mean([r["seconds_per_epoch"] for r in runs])),
                    "vs_tfmot": paired(values, accuracies(cell, sparsity, "tfmot")) if method != "tfmot" else None,
                    **check,
                }
                setting["allocation_pairs"] = {
                    what: paired(values, accuracies(cell, sparsity, baseline))
                    for name, baseline, what in ALLOCATION_PAIRS if name == method}
                for method_name, before, ingredient in ABLATION_CHAIN:
                    if method == method_name:
                        setting["ablation_step"] = {"ingredient": ingredient, "versus": before,
                                                    **(paired(values, accuracies(cell, sparsity, before)) or {})}
                settings.append(setting)
    return settings


def _interval(d: dict | None) -> str:
    if not d or "mean" not in d:
        return "-"
    mark = " (includes 0)" if d["ci_includes_zero"] else ""
    return f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]{mark}, p = {d['p_value']:.3f}"


def ingredient_statements(settings: list[dict]) -> list[str]:
    """One line per (cell, sparsity): which ablation step changes accuracy beyond noise (95 % interval)."""
    lines = []
    keys = sorted({(s["cell"], s["sparsity"]) for s in settings})
    for cell, sparsity in keys:
        steps = [s for s in settings if s["cell"] == cell and s["sparsity"] == sparsity and "ablation_step" in s
                 and "mean" in s["ablation_step"]]
        if not steps:
            continue
        if steps[0]["no_conclusion"]:
            lines.append(f"- {cell}, sparsity {sparsity:.2f}: {steps[0]['no_conclusion']}.")
            continue

        def described(s):
            text = f"{s['ablation_step']['ingredient']} ({s['ablation_step']['mean']:+.2f} points"
            if s["measured_sparsity_mean"] < sparsity - 0.005:  # a stop rule held before the target
                text += (f", but it ended at q = {100 * (1 - s['measured_sparsity_mean']):.1f} % instead of "
                         f"{100 * (1 - sparsity):.0f} %: it pruned less, so this is not a gain at equal sparsity")
            return text + ")"

        gains = [described(s) for s in steps
                 if not s["ablation_step"]["ci_includes_zero"] and s["ablation_step"]["mean"] > 0]
        losses = [described(s) for s in steps
                  if not s["ablation_step"]["ci_includes_zero"] and s["ablation_step"]["mean"] < 0]
        noise = [s["ablation_step"]["ingredient"] for s in steps if s["ablation_step"]["ci_includes_zero"]]
        text = f"- {cell}, sparsity {sparsity:.2f}: gain carried by " + (", ".join(gains) if gains else "none")
        if losses:
            text += f"; costs accuracy: {', '.join(losses)}"
        if noise:
            text += f"; within noise (interval includes 0): {', '.join(noise)}"
        lines.append(text + ".")
    return lines


def allocation_statements(settings: list[dict], dataset: str) -> list[str]:
    """One plain sentence per cell: which allocation, if any, beats the other two by `ALLOCATION_MARGIN_POINTS` with
    its paired 95 % intervals above 0 at a sparsity of `ALLOCATION_JUDGED_SPARSITIES` (issue 37's acceptance)."""
    lines = []
    for cell in dict.fromkeys(s["cell"] for s in settings):
        by = {(s["method"], s["sparsity"]): s for s in settings if s["cell"] == cell}
        judged = [sparsity for sparsity in ALLOCATION_JUDGED_SPARSITIES
                  if all((method, sparsity) in by for method in ("degree_floor", "erk", "expansion"))]
        if not judged:
            continue
        if by[("degree_floor", judged[0])]["no_conclusion"]:
            lines.append(f"- {cell}, {dataset}: {by[('degree_floor', judged[0])]['no_conclusion']}.")
            continue
        if not any(by[(method, sparsity)]["allocation_pairs"].get(what) for method, _, what in ALLOCATION_PAIRS
                   for sparsity in judged):  # one seed: differences, no interval
            single = "; ".join(f"{100 * (1 - sparsity):.0f} % kept: " + ", ".join(
                f"{what} {by[(method, sparsity)]['mean'] - by[(base, sparsity)]['mean']:+.2f}"
                for method, base, what in ALLOCATION_PAIRS) for sparsity in judged)
            lines.append(f"- {cell}, {dataset}: one seed, so no interval and no verdict (differences in points: "
                         f"{single}).")
            continue

        def difference(method, baseline, sparsity):
            """(mean, 95 % interval) of method - baseline in points, or None where not measured."""
            for name, base, what in ALLOCATION_PAIRS:
                pair = by[(name, sparsity)]["allocation_pairs"].get(what)
                if pair and (name, base) == (method, baseline):
                    return pair["mean"], pair["ci95"]
                if pair and (name, base) == (baseline, method):
                    return -pair["mean"], [-pair["ci95"][1], -pair["ci95"][0]]
            return None

        def beats(method, baseline, sparsity):
            found = difference(method, baseline, sparsity)
            return found is not None and found[0] >= ALLOCATION_MARGIN_POINTS and found[1][0] > 0

        winners = [(method, sparsity) for sparsity in judged for method in ("expansion", "erk", "degree_floor")
                   if all(beats(method, other, sparsity) for other in ("expansion", "erk", "degree_floor")
                          if other != method)]
        differences = "; ".join(
            f"{100 * (1 - sparsity):.0f} % kept: " + ", ".join(
                f"{what} {pair['mean']:+.2f} [{pair['ci95'][0]:+.2f}, {pair['ci95'][1]:+.2f}]"
                for method in ("erk", "expansion")
                for what, pair in by[(method, sparsity)]["allocation_pairs"].items() if pair)
            for sparsity in judged)
        if winners:
            names = {"expansion": "the expansion-derived allocation", "erk": "Erdos-Renyi (erk)",
                     "degree_floor": "the uniform split"}
            verdict = " and ".join(f"{names[m]} at {100 * s:.0f} %" for m, s in winners) + " carries the gain"
        else:
            verdict = (f"no allocation beats both others by {ALLOCATION_MARGIN_POINTS} points with its interval "
                       f"above 0: the split of non-zeros between graphs carries no measured gain")
        lines.append(f"- {cell}, {dataset}: {verdict} (paired differences in points, 95 % intervals: "
                     f"{differences}).")
    return lines


def to_markdown(payload: dict) -> str:
    args = payload["arguments"]
    settings = payload["settings"]
    data = ("sequential MNIST (row-wise, 28 x 28)" if args.get("dataset", "mnist") == "mnist" else
            "Speech Commands v0.02 test set split by speaker (49 x 40 log-mel frames, 12 classes)")
    lines = [f"# {payload['name']}: pruning over seeds on {data}", "",
             f"Command: `{payload['command']}`  ",
             f"Date: {payload['date']}. Hardware: {payload['hardware']}.  ",
             f"Budget: {args['epochs']} epochs, batch {args['batch_size']}, Adam {args['learning_rate']:g}"
             f"{' with cosine decay to 0' if args['cosine_decay'] else ''}, {args['units']} units; "
             f"{payload.get('split_sizes', MNIST_SPLITS)}; pruning from step 0 to 67 % of "
             f"training every {args['frequency']} steps (random masks: fixed from step 0). Sparsity is of kernel "
             f"and recurrent kernel together. Seeds: {', '.join(str(s) for s in args['seed_list'])}.", "",
             "Accuracy is test accuracy in %; differences are paired (same seed) in points, with the 95 % t "
             "interval and the paired t-test p-value (scipy.stats.ttest_rel).", "",
             "| cell | sparsity | method | seeds | mean | std | min | max | q (%) | isolated nodes | "
             "vs tfmot: mean [95 % CI], p |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        lines.append(f"| {s['cell']} | {s['sparsity']:.2f} | {s['method']} | {len(s['seeds'])} | {s['mean']:.2f} | "
                     f"{s['std']:.2f} | {s['min']:.2f} | {s['max']:.2f} | "
                     f"{100 * (1 - s['measured_sparsity_mean']):.2f} | {s['isolated_nodes_mean']:.1f} | "
                     f"{_interval(s['vs_tfmot'])} |")
    unjudged = {s["cell"]: s["no_conclusion"] for s in settings if s["no_conclusion"]}
    if unjudged:
        lines += [""] + [f"- {cell}: {reason}; its differences compare nothing." for cell, reason in unjudged.items()]
    steps = [s for s in settings if "mean" in s.get("ablation_step", {})]
    if steps:
        lines += ["", "## Ablation: each step adds one ingredient to the one before", "",
                  "| cell | sparsity | step | ingredient | mean [95 % CI], p |", "|---|---|---|---|---|"]
        for s in steps:
            a = s["ablation_step"]
            lines.append(f"| {s['cell']} | {s['sparsity']:.2f} | {a['versus']} -> {s['method']} | "
                         f"{a['ingredient']} | {_interval(a)} |")
        lines += ["", "Which ingredient carries the gain:", ""] + ingredient_statements(settings)
    allocated = [s for s in settings if s.get("allocation_pairs")]
    if allocated:
        lines += ["", "## Sparsity allocation: how each layer's non-zeros are split between its graphs", "",
                  "Same non-zeros per layer in every allocation (`keras_expander.pruning.allocation`); degree_floor is "
                  "the uniform split. Paired differences in points, 95 % t interval, p.", "",
                  "| cell | sparsity | comparison | mean [95 % CI], p |", "|---|---|---|---|"]
        for s in allocated:
            for what, pair in s["allocation_pairs"].items():
                lines.append(f"| {s['cell']} | {s['sparsity']:.2f} | {what} | {_interval(pair)} |")
        judged = " or ".join(f"{100 * x:.0f} %" for x in ALLOCATION_JUDGED_SPARSITIES)
        lines += ["", f"Which allocation carries the gain (at least {ALLOCATION_MARGIN_POINTS} points over both "
                  f"others, interval above 0, at {judged} sparsity):", ""]
        lines += allocation_statements(settings, args.get("dataset", "mnist"))
        graphs = [r for r in payload["runs"] if r["name"] in ("degree_floor", "erk", "expansion") and r["seed"] == 0]
        if graphs:
            lines += ["", "Per-graph Delta_R (unweighted, seed 0; docs/METHOD.md section 2) and kept edges:", "",
                      "| cell | sparsity | allocation | " + "graph: Delta_R (kept) |", "|---|---|---|---|"]
            for r in sorted(graphs, key=lambda r: (r["cell"], r["target_sparsity"], r["name"])):
                cells = ", ".join(f"{name.split('/', 1)[1]}: {values['delta_r']:.2f} ({values.get('edges', '-')})"
                                  for name, values in r["graphs"].items())
                lines.append(f"| {r['cell']} | {r['target_sparsity']:.2f} | {r['allocation']} | {cells} |")
        firmware = [r for r in payload["runs"] if r.get("firmware")]
        if firmware:
            lines += ["", "The sparse firmware of the seed-0 models (Cortex-M4, our sparse kernels, QEMU instruction "
                      "counts; flash = the model's flatbuffer):", "",
                      "| cell | sparsity | allocation | model flash (B) | arena (B) | instructions / inference | "
                      "device accuracy (%) |", "|---|---|---|---|---|---|---|"]
            for r in sorted(firmware, key=lambda r: (r["cell"], r["target_sparsity"], r["name"])):
                f = r["firmware"]
                if f.get("error"):
                    lines.append(f"| {r['cell']} | {r['target_sparsity']:.2f} | {r['allocation']} | "
                                 f"{f['error']} | | | |")
                    continue
                lines.append(f"| {r['cell']} | {r['target_sparsity']:.2f} | {r['allocation']} | "
                             f"{f['model_flash_bytes']:,} | {f['arena_bytes']:,} | "
                             f"{f['instructions_per_inference']:,.0f} | {100 * f['accuracy']:.2f} |")
    corrected = [r for r in payload["runs"] if r["name"] == "correct"]
    if corrected:
        lines += ["", "Where `correct` ended (target as for the others):", ""]
        for cell, sparsity in sorted({(r["cell"], r["target_sparsity"]) for r in corrected}):
            runs = [r for r in corrected if r["cell"] == cell and r["target_sparsity"] == sparsity]
            q = [100 * (1 - r["measured_sparsity"]) for r in runs]
            lines.append(f"- {cell} at {sparsity:.2f}: q = {np.mean(q):.2f} % on average (min {min(q):.2f}, max "
                         f"{max(q):.2f}); held in {sum(r['held_at_step'] is not None for r in runs)} of {len(runs)} "
                         f"runs; {np.mean([r['corrected_steps'] for r in runs]):.1f} pruning steps repaired.")
    published = [s for s in settings if args["published"] and s["cell"] in PUBLISHED and s["sparsity"] == 0.95]
    if published:
        lines += ["", "## Beside Zhang and Stadie (ICLR 2020), 95 % sparsity", "",
                  "Their setting differs: 400 units (ours: the units above), their own training budget, and "
                  "validation error (ours: test error on the 10,000 test images). Published: "
                  + "; ".join(f"{cell}: " + ", ".join(f"{name} {value:.2f} %"
                                                      for name, value in PUBLISHED[cell].items())
                              for cell in sorted({s["cell"] for s in published})) + ".", "",
                  "| cell | method | test error (%), mean (min-max) | published counterpart (%) |", "|---|---|---|---|"]
        for s in published:
            counterpart = PUBLISHED[s["cell"]].get(s["method"])
            lines.append(f"| {s['cell']} | {s['method']} | {100 - s['mean']:.2f} ({100 - s['max']:.2f}-"
                         f"{100 - s['min']:.2f}) | {'-' if counterpart is None else f'{counterpart:.2f}'} |")
    return "\n".join(lines) + "\n"


def plot(payload: dict, cell: str, path: str) -> None:
    """Test accuracy vs measured sparsity (mean over seeds) for one cell: a line per method, error bars = std over
    seeds; dense as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_expander.files import atomic_path

    settings = [s for s in payload["settings"] if s["cell"] == cell]
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for method in payload["arguments"]["methods"]:
        # x = measured sparsity: a stop rule that held before the target is drawn where it ended.
        points = sorted((s["measured_sparsity_mean"], s["mean"], s["std"]) for s in settings if s["method"] == method)
        if not points:
            continue
        if method == "dense":
            mean, std = points[0][1], points[0][2]
            axis.axhspan(mean - std, mean + std, color="grey", alpha=0.2)
            axis.axhline(mean, color="grey", linestyle="--", label=f"dense ({mean:.2f} %)")
            continue
        x, mean, std = zip(*points)
        axis.errorbar(100 * np.array(x), mean, yerr=std, marker="o", capsize=4, label=method)
    low, high = axis.get_xlim()
    if high - low < 4:  # one target sparsity: do not zoom into the 0.01-point spread of measured sparsities
        middle = (low + high) / 2
        axis.set_xlim(middle - 2, middle + 2)
    axis.ticklabel_format(axis="x", useOffset=False)
    axis.set_xlabel("measured sparsity (%), mean over seeds")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{cell}({payload['arguments']['units']}), {payload['arguments']['epochs']} epochs, "
                   f"mean +- std over seeds")
    axis.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png", dpi=120)
    plt.close(fig)


def firmware_run(args, sparsity: float, method: str, seed: int) -> bool:
    """Whether this run's model goes to the firmware (--firmware-sparsity: seed 0 of each allocation)."""
    return (args.firmware_sparsity is not None and seed == 0 and abs(sparsity - args.firmware_sparsity) < 1e-9
            and method in ("degree_floor", "erk", "expansion"))


def firmware_row(model_path: str, x_train, test, samples: int, folder: str) -> dict:
    """Exports a saved model to full int8, rewrites it to our sparse kernels and runs it on the Cortex-M4 firmware
    (mcu_footprint.run_row): flash, arena and instructions per inference on the first `samples` test sequences."""
    from mcu_footprint import run_row

    from keras_expander.pruning.prune import load_model
    from keras_expander.tflite import export

    content, _ = export.convert(load_model(model_path), "int8", x_train[:256])
    row = run_row(content, "cortex-m4", "ke_sparse", "sparse", test[0][:samples], test[1][:samples], folder)
    keep = ("error", "model_flash_bytes", "arena_bytes", "instructions_per_inference", "cycles_per_inference",
            "accuracy", "samples")
    return {key: row[key] for key in keep if key in row}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="pruning_seeds", help="stem of the result files (default pruning_seeds)")
    parser.add_argument("--cells", nargs="+", default=["lstm", "simple_rnn"], choices=["lstm", "simple_rnn", "gru"])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (default 5)")
    parser.add_argument("--only-seeds", type=int, nargs="+", default=None,
                        help="train only these seeds, in this order, and write no tables (a second process can "
                             "share the grid, e.g. --only-seeds 4 3)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--cosine-decay", action="store_true", help="decay the learning rate to 0 along a cosine")
    parser.add_argument("--frequency", type=int, default=100)
    parser.add_argument("--published", action="store_true",
                        help="add Zhang and Stadie's published 95 %% errors beside ours (for a budget close to theirs)")
    parser.add_argument("--train-samples", type=int, default=None, help="first N training images (smoke runs)")
    parser.add_argument("--test-samples", type=int, default=None, help="first N test images (smoke runs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow intra- and inter-op threads (default: TensorFlow's choice)")
    parser.add_argument("--dataset", choices=("mnist", "speech"), default="mnist",
                        help="row-wise sequential MNIST (default) or the speech set split by speaker")
    parser.add_argument("--firmware-sparsity", type=float, default=None,
                        help="also run seed 0 of each allocation at this sparsity on the Cortex-M4 firmware")
    parser.add_argument("--firmware-samples", type=int, default=200, help="test sequences on the firmware")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results")
    parser.add_argument("--runs", default="runs/pruning_seeds", help="per-run cache folder (resume)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1. Received: {args.seeds}")
    for sparsity in args.sparsities:
        if not 0.0 < sparsity < 1.0:
            parser.error(f"--sparsities must be in (0, 1). Received: {sparsity}")
    args.seed_list = list(range(args.seeds))
    if args.only_seeds and not set(args.only_seeds) <= set(args.seed_list):
        parser.error(f"--only-seeds must be among 0 .. {args.seeds - 1}. Received: {args.only_seeds}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from pruning_quality import train_one

    from benchmarks.recipes import VALIDATION_SIZE
    from keras_expander import datasets
    from keras_expander.expansion import analysis
    from keras_expander.files import write_atomic
    from keras_expander.frameworks import tf_keras

    if args.dataset == "speech":
        splits = datasets.speech_commands(args.data_dir)
        train, validation, (x_test, y_test) = splits["train"], splits["validation"], splits["test"]
    else:
        (x_train, y_train), (x_test, y_test) = datasets.sequential_mnist(args.data_dir)
        validation = (x_train[-VALIDATION_SIZE:], y_train[-VALIDATION_SIZE:])
        train = (x_train[:-VALIDATION_SIZE], y_train[:-VALIDATION_SIZE])
    if args.train_samples:
        train = (train[0][: args.train_samples], train[1][: args.train_samples])
    test = (x_test[: args.test_samples], y_test[: args.test_samples]) if args.test_samples else (x_test, y_test)
    data = (train, validation, test)
    split_sizes = (f"{len(train[0]):,} train / {len(validation[0]):,} validation / {len(test[0]):,} test "
                   + ("images (validation: the last training images)" if args.dataset == "mnist" else
                      "clips, split by speaker (the official test set is all the Speech Commands audio we have)"))
    hardware = f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__} CPU" + \
        (f", {args.threads} thread(s) per process" if args.threads else "")
    cache = os.path.join(args.runs, args.name)
    os.makedirs(cache, exist_ok=True)
    settings_key = {k: getattr(args, k) for k in ("epochs", "units", "batch_size", "learning_rate", "cosine_decay",
                                                 "frequency", "train_samples", "test_samples")}
    if args.dataset != "mnist":  # runs cached before --dataset existed are MNIST runs
        settings_key["dataset"] = args.dataset

    plan = plan_runs(args.cells, args.sparsities, args.methods, args.seed_list)
    if args.only_seeds:  # in the order given, e.g. from the last seed down while another process goes up
        plan = [run for seed in args.only_seeds for run in plan if run[3] == seed]
    rows, started = [], time.perf_counter()
    trained = 0
    for index, (cell, sparsity, method, seed) in enumerate(plan, 1):
        path = os.path.join(cache, run_key(cell, sparsity, method, seed) + ".json")
        if os.path.exists(path):
            with open(path) as f:
                row = json.load(f)
            if row.get("settings") != settings_key:
                raise SystemExit(f"pruning_seeds: cached run {path} was trained with other settings "
                                 f"({row.get('settings')}); use another --runs folder or delete it.")
            rows.append(row)
            print(f"[{index}/{len(plan)}] {cell} {sparsity:g} {method} seed {seed}: cached, "
                  f"{100 * row['test_accuracy']:.2f} %", flush=True)
            continue
        kind, policy, stop_rule, base, allocation = METHODS[method]
        run_start = time.perf_counter()
        tf_keras.backend.clear_session()
        model_path = path[:-len(".json")] + ".keras" if firmware_run(args, sparsity, method, seed) else None
        row = train_one(kind, cell, sparsity, stop_rule, args, data, mask_policy=policy or "degree_floor_magnitude",
                        base=base or "polynomial_decay", seed=seed, cosine_decay=args.cosine_decay,
                        allocation=allocation, model_path=model_path)
        row.update(name=method, settings=settings_key, train_seconds=time.perf_counter() - run_start)
        write_atomic(path, json.dumps(analysis.nan_to_none(row), indent=2))
        rows.append(row)
        trained += 1
        left = len(plan) - index
        eta = (time.perf_counter() - started) / trained * left
        print(f"[{index}/{len(plan)}] {cell} {sparsity:g} {method} seed {seed}: {100 * row['test_accuracy']:.2f} %, "
              f"q = {100 * (1 - row['measured_sparsity']):.2f} %, {row['train_seconds']:.0f} s; about "
              f"{eta / 60:.0f} min left", flush=True)

    for row in rows:
        if firmware_run(args, row["target_sparsity"], row["name"], row["seed"]) and "firmware" not in row:
            path = os.path.join(cache, run_key(row["cell"], row["target_sparsity"], row["name"], row["seed"]))
            row["firmware"] = firmware_row(path + ".keras", train[0], test, args.firmware_samples, path + "-firmware")
            write_atomic(path + ".json", json.dumps(analysis.nan_to_none(row), indent=2))
            print(f"[firmware] {row['cell']} {row['target_sparsity']:g} {row['name']}: {row['firmware']}", flush=True)

    if args.only_seeds:
        print("pruning_seeds: the runs are cached; run again without --only-seeds to write the tables")
        return 0
    command = "python benchmarks/pruning_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"name": args.name, "command": command.strip(), "date": time.strftime("%Y-%m-%d"),
               "hardware": hardware, "split_sizes": split_sizes, "arguments": vars(args), "runs": rows,
               "settings": summarize(rows, args.cells, args.sparsities, args.methods, test[1])}
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, f"{args.name}.json"), json.dumps(analysis.nan_to_none(payload), indent=1))
    markdown = to_markdown(payload)
    write_atomic(os.path.join(args.out, f"{args.name}.md"), markdown)
    for cell in args.cells:
        plot(payload, cell, os.path.join(args.out, f"{args.name}_{cell}.png"))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
