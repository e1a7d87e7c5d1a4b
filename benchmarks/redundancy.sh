#!/usr/bin/env bash
# Vanilla vs asa2 vs asa1 over seeds 0 1 2 on one data set, two runs at a time with one thread each
# (2 cores), then mean and spread per attention kind (benchmarks/summarize_runs.py).
#
# Issue 2 acceptance, N-MNIST (stratified 800 train / 200 validation, nmnist-net, LIF):
#   bash benchmarks/redundancy.sh nmnist
# and the synthetic default (dvs-small, 240 train / 60 validation):
#   bash benchmarks/redundancy.sh synthetic
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  nmnist) ARGS="--data nmnist:../shared/data/nmnist-small --model nmnist-net --n-val 200 \
                --epochs 15 --batch-size 16 --eval-windows 3" ;;
  synthetic) ARGS="--data synthetic:gesture --model dvs-small --epochs 15 --batch-size 8 \
                   --eval-windows 5" ;;
  *) echo "usage: $0 nmnist|synthetic" >&2; exit 2 ;;
esac
export RUNS=runs/$1 ARGS BIN=${BIN:-.venv/bin} OMP_NUM_THREADS=1
mkdir -p "$RUNS"
for seed in 0 1 2; do for attention in none asa2 asa1; do echo "$attention $seed"; done; done |
  xargs -P 2 -L 1 sh -c '"$BIN/asa-deploy" train $ARGS --attention "$0" --seed "$1" \
    --no-progress --out "$RUNS/$0-s$1" > "$RUNS/$0-s$1.log" 2>&1'
"$BIN/python" benchmarks/summarize_runs.py "$RUNS" --out "benchmarks/results/redundancy_$1.json"
