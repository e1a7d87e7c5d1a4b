"""Collect every runs/ladder/*/fold.json into one JSON and print the ladder side by side.

    python benchmarks/summarize_ladder.py runs/ladder --out benchmarks/results/fold_ladder.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {}
    for path in sorted(args.folder.glob("*/fold.json")):
        report = json.loads(path.read_text())
        runs[path.parent.name] = {k: report[k] for k in ("chip", "attention", "strategy", "ladder")}
        runs[path.parent.name]["strategies"] = {
            name: {"accuracy": s["accuracy"], "nasfr": s["nasfr"]}
            for name, s in report["strategies"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"platform": platform.platform(),
                                                "cpus": os.cpu_count()}, "runs": runs}, indent=2) + "\n")
    for name, run in runs.items():
        print(f"\n{name} (strategy {run['strategy']})")
        for row in run["ladder"]:
            extra = (f"NASFR {row['nasfr']:.4f}" if "nasfr" in row
                     else f"synops/window {row['synops_per_window']:,.0f}")
            print(f"  {row['step']:60s} acc {row['accuracy']:.3f}  {extra}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
