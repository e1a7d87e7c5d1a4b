"""Does the synops cost term (`train --synops-weight`) lower the network-driven synops per window?

    python benchmarks/cost_term.py --out benchmarks/results/cost_term.json

Six epochs on synthetic:gesture-tiny, seeds 0 and 1, each network with weight 0 and with a weight:
speck-tiny (IAF, the chip's neuron, no BatchNorm) and dvs-small (LIF + BatchNorm). The figures are
each epoch's `network_synops_per_window` of `train_log.jsonl` (training windows, averaged over the
epoch's batches); the summary is the last epoch's. Tiny on purpose: it checks the direction and the
speed of the effect, not accuracy (these runs barely learn the task). With two epochs dvs-small's
synops first rise under the term (Adam's equal-sized first steps on every parameter, BatchNorm's
batch statistics); by the fourth they are well below the unpenalised run's, hence six.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = ["--data", "synthetic:gesture-tiny", "--epochs", "6", "--batch-size", "2", "--lr", "0.01",
        "--no-progress"]
NETWORKS = {"speck-tiny": (["--model", "speck-tiny", "--param", "c=4", "--param", "fc=16", "--T", "5"],
                           100.0),
            "dvs-small": (["--model", "dvs-small"], 50.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (options, weight) in NETWORKS.items():
            for seed in (0, 1):
                for w in (0.0, weight):
                    out = Path(scratch) / f"{name}-s{seed}-w{w:g}"
                    command = [sys.executable, "-m", "asa_deploy.cli", "train", *BASE, *options,
                               "--seed", str(seed), "--synops-weight", f"{w:g}", "--out", str(out)]
                    subprocess.run(command, check=True, capture_output=True)
                    log = [json.loads(line) for line in
                           (out / "train_log.jsonl").read_text().splitlines()]
                    per_epoch = [r["network_synops_per_window"] for r in log
                                 if "network_synops_per_window" in r]
                    last = log[-1]
                    rows.append({"network": name, "seed": seed, "synops_weight": w,
                                 "network_synops_per_window": last["network_synops_per_window"],
                                 "network_synops_per_window_per_epoch": per_epoch,
                                 "command": " ".join(["asa-deploy", *command[3:-2]])})
                    print(f"{name:10s} seed {seed} weight {w:5g}: "
                          f"{last['network_synops_per_window']:12,.0f} network synops per window")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "cost_term", "machine": {
        "platform": platform.platform(), "python": platform.python_version()}, "runs": rows},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
