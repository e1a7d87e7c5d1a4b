#!/usr/bin/env bash
# Issue 2 acceptance: N-MNIST (shared/data, stratified 800 train / 200 validation), nmnist-net with LIF
# neurons, vanilla vs asa1 vs asa2, seeds 0 1 2. Then a summary (mean, std) in JSON.
#   bash benchmarks/nmnist_redundancy.sh [RUNS_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/nmnist}
EPOCHS=${2:-15}
BIN=${BIN:-.venv/bin}
for seed in 0 1 2; do
  for attention in none asa2 asa1; do
    "$BIN/asa-deploy" train --data nmnist:../shared/data/nmnist-small --model nmnist-net \
      --attention "$attention" --epochs "$EPOCHS" --batch-size 16 --n-val 200 --eval-windows 3 \
      --seed "$seed" --no-progress --out "$RUNS/$attention-s$seed"
  done
done
"$BIN/python" benchmarks/summarize_runs.py "$RUNS" --out benchmarks/results/nmnist_redundancy.json
