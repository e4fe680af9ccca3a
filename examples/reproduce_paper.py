"""The paper's experiments on real data: accuracy and Delta against remaining edges q (Kalra et al., arXiv 2403.11100).

For one experiment it sweeps q (% of kernel and recurrent-kernel entries kept), trains every point with the same
budget and seed for each method, and records test accuracy and Delta_S / Delta_R (unweighted and weighted, per
graph and per-layer worst):
  dense      q = 100, no pruning (shared by all methods)
  tfmot      tfmot prune_low_magnitude + PolynomialDecay (magnitude pruning, the paper's setting)
  expander   keras_expander degree_floor_magnitude + ExpanderPruningSchedule(stop_rule="monitor")
  random     a seeded uniformly random mask per gate graph, fixed from step 0 (random-pruning baseline)
Pruning runs over the first half of training; the second half fine-tunes at the final sparsity.

The sweep is resumable: <out>/<name>.json keeps every finished point, and a restarted sweep skips them. After
each point it redraws <out>/<name>.png (accuracy on the left axis, Delta on the right axis, vertical lines at the
first zero crossings, like the paper's Figures 1-8) and rewrites <out>/README.md with a table per experiment.

  python examples/reproduce_paper.py --experiment mnist_lstm --epochs 3
  python examples/reproduce_paper.py --experiment speech_lstm --snr-db 10 --epochs 20
  python examples/reproduce_paper.py --experiment mnist_lstm --redraw   # figures and README from the JSONs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

# tfmot's own prune_low_magnitude (the baseline here) looks RNN cells up among tf.keras' classes, so in this
# process tf.keras must be tf_keras; set before TensorFlow is imported. keras_expander itself needs no such setting.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from keras_expander.frameworks import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything loads TensorFlow: no start-up log lines in the job's output
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import keras_expander as ke  # noqa: E402
from benchmarks.recipes import (  # noqa: E402
    VALIDATION_SIZE,
    build_model,
    chance_check,
    label_counts,
    labels_from_counts,
    measure_trained_model,
)
from keras_expander import datasets  # noqa: E402
from keras_expander.cli import add_audio_split_arguments  # noqa: E402
from keras_expander.expansion.analysis import nan_to_none  # noqa: E402
from keras_expander.files import atomic_path, write_atomic  # noqa: E402

EXPERIMENTS = {
    "mnist_rnn": {"cell": "simple_rnn", "data": "mnist", "title": "Sequential MNIST, SimpleRNN"},
    "mnist_lstm": {"cell": "lstm", "data": "mnist", "title": "Sequential MNIST, LSTM"},
    "cifar10_lstm": {"cell": "lstm", "data": "cifar10", "title": "Sequential CIFAR-10, LSTM"},
    "speech_lstm": {"cell": "lstm", "data": "speech", "title": "Speech Commands (12 classes), LSTM"},
    "audio_folder_lstm": {"cell": "lstm", "data": "audio_folder", "title": "Your audio folder (--data-dir), LSTM"},
}
DEFAULT_Q = (100, 50, 30, 20, 10, 7, 5, 3, 2, 1)
METHODS = ("tfmot", "expander", "random")
DATA_NOTES = {
    "mnist": "MNIST IDX files, row-wise 28 x 28; train 55,000, validation = last 5,000 training images, test 10,000",
    "cifar10": "CIFAR-10 JPEG copy (quality 75; close to, not identical with, the original pickles), 32 rows x 96 "
               "features; train 45,000, validation = last 5,000 training images, test 10,000",
    "speech": "Speech Commands v0.02 official test set only (4,890 clips), split by speaker (SHA-1 of the speaker "
              "id mod 100: 80/10/10) into train/validation/test; 49 x 40 standardised log-mel frames; background "
              "noise from the _silence_ clips of the same split mixed at the given SNR (the standard v0.01 / v0.02 "
              "layouts, when --data-dir holds one, use the official lists instead: datasets.speech_commands)",
    "audio_folder": "a labelled audio folder <label>/*.wav (--data-dir), split by its official lists when it has "
                    "them, else by speaker (SHA-1 mod 100: 80/10/10, every split given a speaker where there are 3; "
                    "--split-by, --speaker-pattern); 49 x 40 standardised log-mel frames (datasets.audio_folder)",
}


def load_data(name: str, data_dir, snr_db, seed, split_by=None, speaker_pattern=None):
    """((x_train, y_train), (x_val, y_val), (x_test, y_test)) for a data set name (split_by and speaker_pattern:
    audio_folder's)."""
    if name in ("speech", "audio_folder"):
        splits = (datasets.speech_commands(data_dir, snr_db=snr_db, seed=seed) if name == "speech"
                  else datasets.audio_folder(data_dir, split_by=split_by, speaker_pattern=speaker_pattern))
        return splits["train"], splits["validation"], splits["test"]
    loader = datasets.sequential_mnist if name == "mnist" else datasets.sequential_cifar10
    (x_train, y_train), test = loader(data_dir)
    return ((x_train[:-VALIDATION_SIZE], y_train[:-VALIDATION_SIZE]),
            (x_train[-VALIDATION_SIZE:], y_train[-VALIDATION_SIZE:]), test)


def train_point(experiment: dict, data, method: str, q: float, args) -> dict:
    """Trains one (method, q) point and returns its measurements."""
    from keras_expander.frameworks import tf_keras, tfmot

    (x_train, y_train), validation, (x_test, y_test) = data
    tf_keras.utils.set_random_seed(args.seed)
    classes = int(max(y_train.max(), y_test.max()) + 1)
    model = build_model(experiment["cell"], args.units, x_train.shape[1], x_train.shape[2], classes)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    pruning_steps = max(1, int(0.5 * steps_per_epoch * args.epochs))
    frequency = max(1, pruning_steps // 20)
    end_step = frequency * max(1, pruning_steps // frequency)
    sparsity = 1.0 - q / 100.0
    callbacks = []
    if method == "tfmot":
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency))
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    elif method in ("expander", "random"):
        random = method == "random"
        schedule = ke.ExpanderPruningSchedule(
            final_sparsity=sparsity, begin_step=0, end_step=-1 if random else end_step,
            frequency=steps_per_epoch if random else frequency,
            base="constant_sparsity" if random else "polynomial_decay", stop_rule="monitor")
        model = ke.prune_expander(model, schedule, mask_policy="random" if random else "degree_floor_magnitude",
                                  seed=args.seed)
        callbacks.append(ke.ExpanderPruningCallback())
    model.compile(optimizer=tf_keras.optimizers.Adam(args.learning_rate),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # monitor-mode crossing warnings: the sweep records Delta
        history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                            validation_data=validation, verbose=args.verbose, callbacks=callbacks)
    seconds = time.perf_counter() - start
    accuracy, report, summaries = measure_trained_model(model, x_test, y_test)
    summary = summaries[0]
    return {
        "method": method, "q": q, "test_accuracy": float(accuracy),
        "validation_accuracy": float(history.history["val_accuracy"][-1]),
        "measured_sparsity": summary.sparsity, "seconds": seconds,
        "delta_r": summary.worst_delta_r, "delta_s": summary.worst_delta_s,
        "weighted_delta_r": summary.worst_weighted_delta_r, "weighted_delta_s": summary.worst_weighted_delta_s,
        "isolated_nodes": summary.isolated_nodes,
        "graphs": {r.name: {"delta_r": r.unweighted.delta_r, "delta_s": r.unweighted.delta_s,
                            "weighted_delta_r": r.weighted.delta_r, "weighted_delta_s": r.weighted.delta_s}
                   for r in report},
    }


def series(points: list[dict], method: str, key: str) -> tuple[list[float], list[float]]:
    """(q descending, values) of one method, with the shared dense point at q = 100."""
    chosen = sorted((p for p in points if p["method"] in (method, "dense")), key=lambda p: -p["q"])
    return [p["q"] for p in chosen], [float("nan") if p[key] is None else p[key] for p in chosen]


def knee(points: list[dict], method: str, drop_points: float = 1.0) -> float | None:
    """Largest q < 100 whose test accuracy is more than `drop_points` below dense, or None."""
    dense = [p["test_accuracy"] for p in points if p["method"] == "dense"]
    if not dense:
        return None
    below = [p["q"] for p in points if p["method"] == method and 100 * (dense[0] - p["test_accuracy"]) > drop_points]
    return max(below) if below else None


def crossing_qs(points: list[dict], method: str) -> dict:
    """First zero crossing q of each Delta of one method (None where it does not cross)."""
    crossings = {}
    for key in ("delta_r", "delta_s", "weighted_delta_r", "weighted_delta_s"):
        q, values = series(points, method, key)
        crossings[key] = ke.first_zero_crossing(q, values) if len(q) > 1 else None
    return crossings


def dense_check(points: list[dict], test_label_counts) -> dict:
    """`chance_check` of the sweep's dense point on its test labels (class counts, as the JSON stores them); with no
    counts (a JSON from before they were stored) a reason that says so, since chance cannot be told."""
    dense = next((p["test_accuracy"] for p in points if p["method"] == "dense"), None)
    if test_label_counts is None:
        return {"dense_accuracy": dense, "chance_accuracy": None,
                "no_conclusion": "no conclusion: the JSON does not record its test labels' chance accuracy (made "
                                 "before it did); rerun the same command (finished points are skipped)"}
    return chance_check(dense, labels_from_counts(test_label_counts))


def findings(points: list[dict], test_label_counts) -> dict:
    """Per method: accuracy knee, first zero crossings of each Delta, and whether the knee is within 5 q-points.

    Args:
        points: The sweep's points (the dense one at q = 100 shared by all methods).
        test_label_counts: Class counts of the test labels (`label_counts`), or None when unknown.

    Returns:
        method -> {"knee_q", "crossing_q", "knee_within_5_points", "no_conclusion"}. When the dense model is near
        chance (or chance is unknown) the knee and the verdicts are None and "no_conclusion" gives the reason; the
        crossings, read from the masks' Delta, stay.
    """
    out = {}
    reason = dense_check(points, test_label_counts)["no_conclusion"]
    for method in METHODS:
        if not any(p["method"] == method for p in points):
            continue
        crossings = crossing_qs(points, method)
        accuracy_knee = None if reason else knee(points, method)
        near = {key: None if reason else (accuracy_knee is not None and value is not None
                                          and abs(accuracy_knee - value) <= 5.0)
                for key, value in crossings.items()}
        out[method] = {"knee_q": accuracy_knee, "crossing_q": crossings, "knee_within_5_points": near,
                       "no_conclusion": reason}
    return out


def plot(points: list[dict], path: str, title: str) -> None:
    """Accuracy (left axis) and Delta of the magnitude-pruned (tfmot) masks (right axis) against q."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 5.8))
    colours = {"tfmot": "tab:blue", "expander": "tab:green", "random": "tab:grey"}
    tfmot_crossings = crossing_qs(points, "tfmot") if any(p["method"] == "tfmot" for p in points) else {}
    for axis, weighted in zip(axes, (False, True)):
        prefix = "weighted_" if weighted else ""
        for method, colour in colours.items():
            q, accuracy = series(points, method, "test_accuracy")
            if len(q) > 1:
                axis.plot(q, 100 * np.asarray(accuracy), "o-", color=colour, label=f"accuracy, {method}")
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.set_xlabel("remaining edges q (%)")
        axis.set_ylabel("test accuracy (%)")
        delta_axis = axis.twinx()
        for key, style in ((f"{prefix}delta_r", "s--"), (f"{prefix}delta_s", "^:")):
            q, values = series(points, "tfmot", key)
            if len(q) > 1:
                delta_axis.plot(q, values, style, color="tab:red", label=f"{key} (tfmot masks, worst graph)")
                crossing = tfmot_crossings.get(key)
                if crossing is not None:
                    delta_axis.axvline(crossing, color="tab:red", linestyle=style[1:], linewidth=1,
                                       label=f"{key} = 0 at q = {crossing:.1f} %")
        delta_axis.axhline(0.0, color="black", linewidth=0.6)
        delta_axis.set_ylabel(("weighted " if weighted else "unweighted ") + "Delta (dimensionless)")
        handles = axis.get_legend_handles_labels()
        more = delta_axis.get_legend_handles_labels()
        axis.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper center",
                    bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)  # below the axes: never over a curve
        axis.set_title(f"{title}: {'weighted' if weighted else 'unweighted'} graphs", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)


def _fmt(value, scale=1.0, digits=2):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{scale * value:.{digits}f}"


def write_summary(out_dir: str) -> str:
    """Rewrites <out_dir>/README.md from every experiment JSON in the folder; returns its path."""
    lines = ["# The paper's experiments on our data", "",
             "Generated by `examples/reproduce_paper.py` from the JSON files beside this page. Accuracy is test "
             "accuracy (%); Delta values are the worst over the per-gate graphs of the recurrent layer "
             "(dimensionless; w. = weighted, mean non-zero |w| scaled to 1); crossing q is the first zero crossing "
             "going down in q (linear interpolation); the knee is the largest q whose accuracy is more than 1 point "
             "below dense.", ""]
    for name in sorted(f for f in os.listdir(out_dir) if f.endswith(".json")):
        with open(os.path.join(out_dir, name)) as stream:
            result = json.load(stream)
        points = result["points"]
        lines += [f"## {result['title']} (`{name}`)", "",
                  f"Command: `{result['command']}`  ",
                  f"Data: {result['data']}.  ",
                  f"Hardware: {result['hardware']}; wall time of the points so far: "
                  f"{sum(p['seconds'] for p in points) / 60:.1f} min.", "",
                  f"![{name}]({name[:-5]}.png)", "",
                  "| q (%) | acc. dense | acc. tfmot | acc. expander | acc. random | Delta_R tfmot | Delta_S tfmot | "
                  "w.Delta_R tfmot | w.Delta_S tfmot | Delta_R expander | Delta_S expander |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        by_key = {(p["method"], p["q"]): p for p in points}
        for q in sorted({p["q"] for p in points}, reverse=True):
            dense = by_key.get(("dense", q), {})
            get = lambda method, key: by_key.get((method, q), dense).get(key)  # noqa: E731
            lines.append(f"| {q:g} | {_fmt(dense.get('test_accuracy'), 100)} | "
                         + " | ".join(_fmt(by_key.get((m, q), {}).get("test_accuracy"), 100) for m in METHODS)
                         + f" | {_fmt(get('tfmot', 'delta_r'))} | {_fmt(get('tfmot', 'delta_s'))} | "
                           f"{_fmt(get('tfmot', 'weighted_delta_r'))} | {_fmt(get('tfmot', 'weighted_delta_s'))} | "
                           f"{_fmt(get('expander', 'delta_r'))} | {_fmt(get('expander', 'delta_s'))} |")
        lines += ["", "| method | accuracy knee q | crossing q: Delta_R / Delta_S / w.Delta_R / w.Delta_S "
                      "| knee within +-5 of a crossing |", "|---|---|---|---|"]
        for method, found in findings(points, result.get("test_label_counts")).items():
            crossings = found["crossing_q"]
            within = [key for key, ok in found["knee_within_5_points"].items() if ok]
            verdict = found["no_conclusion"] or ("yes (" + ", ".join(within) + ")" if within else "no")
            lines.append(f"| {method} | {_fmt(found['knee_q'], digits=1)} | "
                         + " / ".join(_fmt(crossings[k], digits=1) for k in ("delta_r", "delta_s", "weighted_delta_r",
                                                                             "weighted_delta_s"))
                         + f" | {verdict} |")
        lines.append("")
    path = os.path.join(out_dir, "README.md")
    write_atomic(path, "\n".join(lines))
    return path


def write_results(json_path: str, header: dict, points: list[dict], test_label_counts: list[int]) -> None:
    """Writes a sweep's JSON: `header` (experiment, settings, command, ...), its points, the test labels' class
    counts, the dense and chance accuracy and the findings."""
    payload = {**header, "points": points, "test_label_counts": test_label_counts,
               **dense_check(points, test_label_counts), "findings": findings(points, test_label_counts)}
    write_atomic(json_path, json.dumps(payload, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), help="required unless --redraw")
    parser.add_argument("--snr-db", type=float, default=None, help="speech_lstm: background noise SNR in dB")
    parser.add_argument("--q", type=float, nargs="+", default=list(DEFAULT_Q), help="remaining edges (%%) to sweep")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--train-samples", type=int, default=None, help="use only the first N training samples")
    parser.add_argument("--data-dir", default=None)
    add_audio_split_arguments(parser)  # audio_folder_lstm's, as the command line's export and firmware take them
    parser.add_argument("--out", default="results/paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--redraw", action="store_true",
                        help="only redraw every figure and README.md in --out from its JSON files (no training)")
    args = parser.parse_args(argv)
    if args.redraw:
        for name in sorted(f for f in os.listdir(args.out) if f.endswith(".json")):
            with open(os.path.join(args.out, name)) as stream:
                result = json.load(stream)
            plot(result["points"], os.path.join(args.out, name[:-5] + ".png"), result["title"])
        print(f"wrote {write_summary(args.out)}")
        return 0
    if args.experiment is None:
        parser.error("--experiment is required (unless --redraw)")
    if args.experiment == "audio_folder_lstm" and args.data_dir is None:
        parser.error("--experiment audio_folder_lstm needs --data-dir (the folder holding <label>/*.wav)")
    if args.snr_db is not None and args.experiment != "speech_lstm":
        parser.error("--snr-db applies to --experiment speech_lstm only")
    if any(not 0 < q <= 100 for q in args.q):
        parser.error(f"--q values must be in (0, 100]. Received: {args.q}")
    experiment = EXPERIMENTS[args.experiment]
    name = args.experiment + ("" if args.snr_db is None else f"_snr{args.snr_db:g}db")
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"{name}.json")
    settings = {key: getattr(args, key) for key in ("epochs", "units", "batch_size", "learning_rate",
                                                   "train_samples", "seed")}
    points = []
    if os.path.exists(json_path):
        with open(json_path) as stream:
            previous = json.load(stream)
        if previous["settings"] != settings:
            parser.error(f"{json_path} was made with other settings {previous['settings']}; use another --out")
        points = previous["points"]
    done = {(p["method"], p["q"]) for p in points}

    data = load_data(experiment["data"], args.data_dir, args.snr_db, args.seed, args.split_by, args.speaker_pattern)
    test_label_counts = label_counts(data[2][1])
    if args.train_samples:
        data = ((data[0][0][: args.train_samples], data[0][1][: args.train_samples]), data[1], data[2])
    plan = [("dense", 100.0)] + [(m, float(q)) for q in sorted(set(args.q), reverse=True) if q < 100
                                 for m in args.methods]
    title = experiment["title"] + ("" if args.snr_db is None else f", noise at {args.snr_db:g} dB SNR")
    command = "python examples/reproduce_paper.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = {"experiment": args.experiment, "title": title, "snr_db": args.snr_db, "settings": settings,
              "command": command, "data": DATA_NOTES[experiment["data"]],
              "hardware": f"{os.cpu_count()} CPU cores, TensorFlow CPU"}
    for index, (method, q) in enumerate(plan):
        if (method, q) in done:
            print(f"[{index + 1}/{len(plan)}] {method} q={q:g} %: done before, skipped")
            continue
        print(f"[{index + 1}/{len(plan)}] {method} q={q:g} %", flush=True)
        points.append(nan_to_none(train_point(experiment, data, method, q, args)))
        write_results(json_path, header, points, test_label_counts)
        plot(points, os.path.join(args.out, f"{name}.png"), title)
        write_summary(args.out)
    if all(point in done for point in plan):  # nothing trained: still record the test labels on a JSON without them
        write_results(json_path, header, points, test_label_counts)
        write_summary(args.out)
    print(json.dumps(findings(points, test_label_counts), indent=2))
    print(f"wrote {json_path}, {os.path.join(args.out, name + '.png')}, {os.path.join(args.out, 'README.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
