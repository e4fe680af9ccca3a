"""Benchmark: where does `make demo`'s stop rule land against the knee at the demo's own budget, and what does the
rule cost in training time? (Issue 36.)

The demo is examples/sequential_mnist.py with its defaults (LSTM(128), sequential MNIST, 3 epochs, pruning from 33 %
to 67 % of training towards 90 %, stop_rule="tolerance"). Per seed, this runs it:
  - with stop_rule="monitor" at every remaining-edges q of the grid (final_sparsity = 1 - q / 100; q = 100 prunes
    nothing and is the dense model of the same budget): the knee is the smallest q whose mean test accuracy over the
    seeds is within 1 point of the dense mean;
  - with the default rule (the demo itself) and each --rules variant: where it ends (q) and its test accuracy.
Training time: the rule's fit against the monitor fit to the same final sparsity (q = 10), each timed by the
example (`train_seconds`), one after the other, plus --time-repeats alternating repeats on seed 0; the ratio of their
fastest runs is the rule's cost (as Python's timeit reports the minimum: on this VM identical runs take 28 s or 42 s,
the slower ones disturbed from outside).

Writes <out>/demo_knee.json and .md; every run is kept as --runs/seed<s>-<rule>-q<q>/summary.json (resumable).

  python benchmarks/demo_knee.py --data-dir ../shared/data --seeds 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from benchmarks.recipes import run_main_job, write_report  # noqa: E402

Q_GRID = (100.0, 50.0, 30.0, 20.0, 15.0, 10.0, 7.0, 5.0)
DEMO_Q = 10.0  # the demo's final_sparsity 0.9
# rule name -> the example's arguments
RULES = {"tolerance": [], "tolerance_trend": ["--tolerance-reference", "trend"]}


def run(args, seed: int, rule: str, q: float, repeat: int = 0) -> dict:
    """One run of the main job, as a user runs it (kept: resumed from its summary.json when there is one); repeat
    k > 0 is a timing repeat of the same run."""
    out = os.path.join(args.runs, f"seed{seed}-{rule}-q{q:g}" + (f"-repeat{repeat}" if repeat else ""))
    path = os.path.join(out, "summary.json")
    if os.path.exists(path):
        with open(path) as stream:
            summary = json.load(stream)
    else:
        stop = ["--stop-rule", "monitor"] if rule == "monitor" else RULES[rule]
        summary = run_main_job(["--final-sparsity", f"{1 - q / 100:.4f}", "--seed", str(seed), "--out", out,
                                "--verbose", "0", *(["--data-dir", args.data_dir] if args.data_dir else []), *stop])
    layer = summary["layers"][0]
    return {"seed": seed, "rule": rule, "final_sparsity_q": q, "q": 100 * (1 - layer["sparsity"]),
            "test_accuracy": 100 * summary["test_accuracy"], "train_seconds": summary["train_seconds"],
            "repeat": repeat}


def summarize(records: list[dict], seeds: list[int]) -> dict:
    """Knee, each rule's mean q and accuracy, and the rule's time over the monitor run's."""
    grid = {q: float(np.mean([r["test_accuracy"] for r in records if r["rule"] == "monitor"
                              and r["final_sparsity_q"] == q and not r["repeat"]])) for q in Q_GRID}
    dense = grid[100.0]
    knee = min(q for q in Q_GRID if grid[q] >= dense - 1.0)
    monitor_seconds = [r["train_seconds"] for r in records
                       if r["rule"] == "monitor" and r["final_sparsity_q"] == DEMO_Q]
    rules = {}
    for rule in RULES:
        runs = [r for r in records if r["rule"] == rule and not r["repeat"]]
        if not runs:
            continue
        q, accuracy = float(np.mean([r["q"] for r in runs])), float(np.mean([r["test_accuracy"] for r in runs]))
        seconds = [r["train_seconds"] for r in records if r["rule"] == rule]
        rules[rule] = {"q": q, "test_accuracy": accuracy, "minus_dense": accuracy - dense,
                       "within_5_of_knee": abs(q - knee) <= 5.0, "accuracy_within_1": accuracy >= dense - 1.0,
                       "q_per_seed": [r["q"] for r in runs], "train_seconds": seconds,
                       "time_over_monitor": min(seconds) / min(monitor_seconds)}
    return {"seeds": seeds, "mean_accuracy_by_q": {f"{q:g}": a for q, a in grid.items()}, "dense_accuracy": dense,
            "knee_q": knee, "monitor_train_seconds": monitor_seconds, "rules": rules}


def to_markdown(payload: dict) -> str:
    lines = [f"# The demo's stop rule against its knee, {payload['date']}", "",
             f"Reproduce: `{payload['command']}`. {payload['protocol']}", "",
             "| seeds | " + " | ".join(f"q={q}" for q in payload["mean_accuracy_by_q"]) + " | knee q |",
             "|---|" + "---|" * (len(payload["mean_accuracy_by_q"]) + 1),
             f"| {len(payload['seeds'])} | " + " | ".join(f"{a:.2f}" for a in payload["mean_accuracy_by_q"].values())
             + f" | {payload['knee_q']:g} |", "",
             "| rule | ends at q (mean) | per seed | accuracy - dense (points) | within 5 of the knee and 1 point "
             "of dense | training time / monitor's (fastest runs) |", "|---|---|---|---|---|---|"]
    for name, rule in payload["rules"].items():
        ok = rule["within_5_of_knee"] and rule["accuracy_within_1"]
        lines.append(f"| {name} | {rule['q']:.2f} | {', '.join(f'{q:.2f}' for q in rule['q_per_seed'])} | "
                     f"{rule['minus_dense']:+.2f} | {'yes' if ok else 'no'} | {rule['time_over_monitor']:.3f} |")
    seconds = ", ".join(f"{t:.1f}" for t in payload["monitor_train_seconds"])
    lines += ["", f"Training seconds, monitor to q = 10: {seconds}"
              + "".join(f"; {name}: {', '.join(f'{t:.1f}' for t in rule['train_seconds'])}"
                        for name, rule in payload["rules"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--time-repeats", type=int, default=2,
                        help="more runs of the monitor fit to q = 10 and of each rule, alternating, on seed 0: "
                             "this machine's speed varies by up to 1.5 x between runs; the fastest run counts")
    parser.add_argument("--runs", default="runs/demo_knee")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    records = []
    for seed in range(args.seeds):
        # the monitor run to the demo's q last, right before the rules' runs that are timed against it
        for q in sorted(Q_GRID, key=lambda q: q == DEMO_Q):
            records.append(run(args, seed, "monitor", q))
        records += [run(args, seed, rule, DEMO_Q) for rule in args.rules]
    for repeat in range(1, args.time_repeats + 1):
        records += [run(args, 0, rule, DEMO_Q, repeat) for rule in ("monitor", *args.rules)]
    payload = {"command": "python benchmarks/demo_knee.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "date": datetime.date.today().isoformat(),
               "protocol": "examples/sequential_mnist.py with its defaults (the demo: LSTM(128), 3 epochs, pruning "
                           "from 33 % to 67 % of training towards q = 10 %), stop_rule='monitor' at each q for the "
                           "knee (q = 100: dense, same budget); the rules' runs are the demo itself. Time: the "
                           "fastest train_seconds of the rule's fits over the monitor fits' to q = 10 (each seed's "
                           f"run and {args.time_repeats} alternating repeats on seed 0).",
               **summarize(records, list(range(args.seeds))), "runs": records}
    write_report(args.out, "demo_knee", payload, to_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
