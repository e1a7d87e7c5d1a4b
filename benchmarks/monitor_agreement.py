"""Fast vs exact simulator, neuron by neuron, on a quickly trained speck-tiny run.

Trains speck-tiny on the built-in ``synthetic:gesture-tiny`` task, compiles it for speck2f,
simulates its validation windows on both engines with every core monitored, and compares the two
monitor files (per-neuron and per-channel cosine over windows x bins, count ratio exact / fast).
Every step is the ``asa-deploy`` command recorded in the JSON, so the figures can be reproduced
by hand. Writes JSON with the machine it ran on.

    python benchmarks/monitor_agreement.py --out benchmarks/results/monitor_agreement.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "asa_deploy.cli"]
RUN = "$RUN"  # the run directory, in the recorded commands


def clamp_ablation(run_dir: Path) -> dict:
    """Spikes per core of both engines as compiled and with every lower clamp removed
    (threshold_low = -32768), on the same windows: how much of the gap the clamp explains."""
    from asa_deploy.chip.config import ChipConfig
    from asa_deploy.chip.sim import simulate
    from asa_deploy.chip.simulate import event_windows

    config = ChipConfig.load(run_dir / "chip_config.json")
    windows, _ = event_windows(config)
    out = {}
    for label in ("as compiled", "no lower clamp"):
        if label == "no lower clamp":
            for core in config.cores:
                core.threshold_low = -32768
        totals = {e: simulate(config, windows, e).spikes_per_core.sum(axis=0) for e in ("fast", "exact")}
        out[label] = {str(c): {"fast": int(totals["fast"][i]), "exact": int(totals["exact"][i]),
                               "ratio": round(float(totals["exact"][i] / totals["fast"][i]), 4)
                               if totals["fast"][i] else None}
                      for i, c in enumerate(config.core_ids())}
    return out


def run_in(run_dir: Path, argv: list[str], log: list[dict]) -> str:
    """Run ``asa-deploy ARGV``, log it with the run directory written as $RUN (a temporary folder
    by default), and return its output (with $RUN too)."""
    start = time.perf_counter()
    done = subprocess.run(CLI + argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"asa-deploy {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    log.append({"command": ("asa-deploy " + shlex.join(argv)).replace(str(run_dir), RUN),
                "wall_seconds": round(seconds, 2)})
    return done.stdout.replace(str(run_dir), RUN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/monitor_agreement.json"))
    parser.add_argument("--run", type=Path, default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or Path(tmp) / "speck-tiny"
        log: list[dict] = []
        run_in(run_dir, ["train", "--data", "synthetic:gesture-tiny", "--model", "speck-tiny", "--epochs",
             str(args.epochs), "--batch-size", "4", "--seed", str(args.seed), "--out", str(run_dir),
             "--no-progress"], log)
        run_in(run_dir, ["compile", str(run_dir), "--chip", "speck2f", "--bias", "drop"], log)
        sims = {}
        for engine in ("fast", "exact"):
            out = run_in(run_dir, ["simulate", str(run_dir), "--engine", engine, "--monitor", "all",
                       "--monitor-out", str(run_dir / f"monitor-{engine}.npz"), "--json"], log)
            summary = json.loads(out.strip().splitlines()[-1])
            sims[engine] = {k: summary[k] for k in ("accuracy_window", "accuracy_recording", "n_windows",
                                                    "wall_seconds")}
        table = run_in(run_dir, ["compare", str(run_dir / "monitor-fast.npz"), str(run_dir / "monitor-exact.npz"),
                     "--out", str(run_dir / "compare.json")], log)
        report = json.loads((run_dir / "compare.json").read_text())
        ablation = clamp_ablation(run_dir)
    cores = {core: {k: v for k, v in r.items() if not k.startswith("per_")}
             for core, r in report["cores"].items()}
    result = {
        "what": "fast vs exact engine, per neuron, speck-tiny trained on synthetic:gesture-tiny",
        "commands": log,
        "simulations": sims,
        "windows": report["windows"], "bins": report["bins"], "data": report["data"],
        "cores": cores,
        "table": table.strip().splitlines(),
        "spikes_per_core_clamp_ablation": ablation,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(result["table"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
