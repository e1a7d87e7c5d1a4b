#!/usr/bin/env bash
# The fidelity ladder (docs/design.md section 4, step 5), vanilla and ASA, on N-MNIST and synthetic:gesture,
# for speck2f and dynapcnn. Trains the four source runs when missing (seed 0), copies each into
# runs/ladder/<data>-<attention>-<chip>/ and runs `asa-deploy fold` there, two at a time.
#   bash benchmarks/fold_ladder.sh            -> benchmarks/results/fold_ladder.json (+ a table)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin/asa-deploy}
NMNIST=${NMNIST:-../shared/data/nmnist-small}
export OMP_NUM_THREADS=1

train() {  # name data model attention extra-args...
  local out="runs/ladder-src/$1"
  [ -f "$out/model.pt" ] && return 0
  $BIN train --data "$2" --model "$3" --attention "$4" --seed 0 "${@:5}" --no-progress \
      --out "$out" > "$out.log" 2>&1
}
mkdir -p runs/ladder-src runs/ladder
train nmnist-none "nmnist:$NMNIST" nmnist-speck-lif none --epochs 12 --n-val 200 --eval-windows 10 &
train nmnist-asa2 "nmnist:$NMNIST" nmnist-speck-lif asa2 --epochs 12 --n-val 200 --eval-windows 10 &
wait
# as benchmarks/redundancy.sh synthetic, seed 0
train synthetic-none synthetic:gesture dvs-small none --epochs 15 --batch-size 8 --eval-windows 5 &
train synthetic-asa2 synthetic:gesture dvs-small asa2 --epochs 15 --batch-size 8 --eval-windows 5 &
wait

fold() {  # source chip
  local dst="runs/ladder/$1-$2"
  rm -rf "$dst"; cp -r "runs/ladder-src/$1" "$dst"
  $BIN fold "$dst" --chip "$2" --eval-windows 2 --no-progress > "$dst.log" 2>&1
}
for source in nmnist-none nmnist-asa2 synthetic-none synthetic-asa2; do
  fold "$source" speck2f &
  fold "$source" dynapcnn &
  wait
done
.venv/bin/python benchmarks/summarize_ladder.py runs/ladder --out benchmarks/results/fold_ladder.json
