#!/usr/bin/env bash
# Why the IAF neuron's surrogate is 2.0 wide (asa_deploy/nn/neurons.py): train nmnist-speck on N-MNIST
# (800/200, seed 0, 6 epochs) with surrogate widths 1.0 and 2.0, and with MultiSpike, and collect the
# best validation accuracy of each into benchmarks/results/iaf_surrogate.json.
#   bash benchmarks/iaf_surrogate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
NMNIST=${NMNIST:-../shared/data/nmnist-small}
OUT=runs/iaf-surrogate
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
variant() {  # name neuron_options
  sed -e "s/^name: nmnist-speck/name: nmnist-speck-$1/" -e "s/^neuron_options: .*/neuron_options: $2/" \
      models/nmnist-speck.yaml > "$OUT/$1.yaml"
  "$BIN/asa-deploy" train --data "nmnist:$NMNIST" --model "$OUT/$1.yaml" --epochs 6 --seed 0 \
      --n-val 200 --eval-windows 10 --no-progress --out "$OUT/$1" > "$OUT/$1.log" 2>&1
}
variant width1 "{threshold: 1.0, min_v_mem: -1.0, surrogate_width: 1.0}" &
variant width2 "{threshold: 1.0, min_v_mem: -1.0, surrogate_width: 2.0}" &
wait
variant multispike "{threshold: 1.0, min_v_mem: -1.0, surrogate_width: 1.0, multi_spike: true}"
"$BIN/python" - "$OUT" <<'PY'
import json, sys, torch
from pathlib import Path
out = Path(sys.argv[1])
result = {}
for name in ("width1", "width2", "multispike"):
    metrics = torch.load(out / name / "model.pt", weights_only=False)["metrics"]
    result[name] = {"best_epoch": metrics["best_epoch"],
                    "val_accuracy_window": metrics["val"]["accuracy_window"],
                    "val_accuracy_recording": metrics["val"]["accuracy_recording"],
                    "val_nasfr": metrics["val"]["nasfr"]}
    print(name, result[name])
Path("benchmarks/results/iaf_surrogate.json").write_text(json.dumps(result, indent=2) + "\n")
print("wrote benchmarks/results/iaf_surrogate.json")
PY
