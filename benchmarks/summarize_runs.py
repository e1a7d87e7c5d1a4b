"""Mean and spread of validation accuracy and NASFR over seeds, per attention kind, from run
directories named ``<attention>-s<seed>`` (as benchmarks/nmnist_redundancy.sh writes them).

    python benchmarks/summarize_runs.py runs/nmnist --out benchmarks/results/nmnist_redundancy.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from asa_deploy.metrics import current_names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    groups: dict[str, list[dict]] = {}
    for model_file in sorted(args.runs.glob("*/model.pt")):
        artifact = torch.load(model_file, weights_only=False)
        val = current_names(artifact["metrics"]["val"], "recording")
        groups.setdefault(artifact["attention"], []).append({
            "run": str(model_file.parent), "seed": artifact["train_config"]["seed"],
            "best_epoch": artifact["metrics"]["best_epoch"],
            "accuracy_window": val["accuracy_window"], "accuracy_recording": val["accuracy_recording"],
            "nasfr": val["nasfr"]})
    summary = {}
    for attention, runs in groups.items():
        acc = [r["accuracy_recording"] for r in runs]
        nasfr = [r["nasfr"] for r in runs]
        summary[attention] = {
            "runs": runs, "accuracy_recording_mean": statistics.mean(acc),
            "accuracy_recording_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "nasfr_mean": statistics.mean(nasfr),
            "nasfr_std": statistics.stdev(nasfr) if len(nasfr) > 1 else 0.0}
    if "none" in summary:
        base = summary["none"]
        for s in summary.values():
            s["accuracy_recording_minus_vanilla"] = (s["accuracy_recording_mean"]
                                                     - base["accuracy_recording_mean"])
            s["nasfr_ratio_to_vanilla"] = s["nasfr_mean"] / base["nasfr_mean"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "summary": summary}, indent=2))
    print(f"{'attention':10s} {'n':>2s} {'accuracy/recording':>18s} {'NASFR':>18s} {'NASFR/vanilla':>14s}")
    for attention, s in summary.items():
        print(f"{attention:10s} {len(s['runs']):2d}   {s['accuracy_recording_mean']:.3f} +- "
              f"{s['accuracy_recording_std']:.3f}"
              f"   {s['nasfr_mean']:.4f} +- {s['nasfr_std']:.4f} "
              f"{s.get('nasfr_ratio_to_vanilla', float('nan')):14.2f}")


if __name__ == "__main__":
    main()
