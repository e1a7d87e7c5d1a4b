#!/usr/bin/env bash
# Issue 2 acceptance: N-MNIST (shared/data, stratified 800 train / 200 validation), nmnist-net with LIF
# neurons, vanilla vs asa2 vs asa1, seeds 0 1 2, two runs at a time with one thread each (2 cores).
# Ends with the mean and spread per attention kind in benchmarks/results/nmnist_redundancy.json.
#   bash benchmarks/nmnist_redundancy.sh [RUNS_DIR] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNS=${1:-runs/nmnist} EPOCHS=${2:-15} BIN=${BIN:-.venv/bin} OMP_NUM_THREADS=1
for seed in 0 1 2; do for attention in none asa2 asa1; do echo "$attention $seed"; done; done |
  xargs -P 2 -L 1 sh -c '"$BIN/asa-deploy" train --data nmnist:../shared/data/nmnist-small \
    --model nmnist-net --attention "$0" --seed "$1" --epochs "$EPOCHS" --batch-size 16 \
    --n-val 200 --eval-windows 3 --no-progress --out "$RUNS/$0-s$1" > "$RUNS.$0-s$1.log" 2>&1'
"$BIN/python" benchmarks/summarize_runs.py "$RUNS" --out benchmarks/results/nmnist_redundancy.json
