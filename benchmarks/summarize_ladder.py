"""Collect every runs/ladder/*/fold.json into one JSON and print the ladder side by side.

    python benchmarks/summarize_ladder.py runs/ladder --out benchmarks/results/fold_ladder.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from asa_deploy.metrics import current_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {}
    for path in sorted(args.folder.glob("*/fold.json")):
        report = json.loads(path.read_text())
        runs[path.parent.name] = {k: report[k] for k in ("chip", "attention", "strategy")}
        runs[path.parent.name]["ladder"] = [current_names(row, "recording") for row in report["ladder"]]
        runs[path.parent.name]["strategies"] = {
            name: {k: current_names(s, "recording")[k]
                   for k in ("accuracy_window", "accuracy_recording", "nasfr")}
            for name, s in report["strategies"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"platform": platform.platform(),
                                                "cpus": os.cpu_count()}, "runs": runs}, indent=2) + "\n")
    for name, run in runs.items():
        print(f"\n{name} (strategy {run['strategy']})")
        for row in run["ladder"]:
            extra = (f"NASFR {row['nasfr']:.4f}" if "nasfr" in row
                     else f"synops/window {row['synops_per_window']:,.0f}")
            print(f"  {row['step']:60s} accuracy per window {row['accuracy_window']:.3f}, per "
                  f"recording {row['accuracy_recording']:.3f}  {extra}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
