#!/usr/bin/env bash
# The paper's experiments with the budgets used for results/paper (2 CPU cores, about 110 minutes in all).
# The noisy Speech Commands runs sweep six q points instead of nine, to fit the budget.
# Each sweep is resumable: rerunning skips finished points. Usage: bash benchmarks/paper_experiments.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/paper}
PY=${PYTHON:-.venv/bin/python}
$PY examples/reproduce_paper.py --experiment mnist_rnn --epochs 3 --out "$OUT" --verbose 0
$PY examples/reproduce_paper.py --experiment speech_lstm --epochs 12 --out "$OUT" --verbose 0
$PY examples/reproduce_paper.py --experiment mnist_lstm --epochs 3 --out "$OUT" --verbose 0
$PY examples/reproduce_paper.py --experiment cifar10_lstm --epochs 3 --out "$OUT" --verbose 0
for snr in 20 10 5; do
  $PY examples/reproduce_paper.py --experiment speech_lstm --snr-db "$snr" --epochs 12 --q 50 30 20 10 5 2 \
    --out "$OUT" --verbose 0
done
