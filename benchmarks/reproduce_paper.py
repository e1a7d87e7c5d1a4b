"""The paper's Table 1 shape (accuracy / NASFR, vanilla vs asa2 / asa1) under both training recipes.

    python benchmarks/reproduce_paper.py synthetic --out benchmarks/results/reproduce_paper_synthetic.json
    python benchmarks/reproduce_paper.py nmnist --out benchmarks/results/reproduce_paper_nmnist.json

For each recipe (`--recipe default`: BN weight at the threshold, lr 1e-3; `--recipe paper`: Yao et al.
2023's BN weight 1, rectangular surrogate 0.5 wide and 2 high, reset gradient through the spike,
dropout, lr 1e-4), each attention (none, asa2, asa1, and asa1 with the authors' release masks,
`--release-masks`) and seeds 0, 1, 2: `asa-deploy train` on the same data split, then the best epoch's
validation accuracy and NASFR from `model.pt` (the paper's measure: neuron-weighted mean firing rate
over every spiking layer). The paper recipe gets more epochs (`paper_epochs`): at lr 1e-4 its vanilla
network needs them to learn at all, and the JSON keeps every run's validation-accuracy curve to show
whether it did. Runs go to runs/paper/<preset>/<recipe>-<attention>-s<seed>; a finished run is read,
not retrained. Two processes at a time, one thread each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from asa_deploy.metrics import current_names

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import ROOT, asa_deploy, run, shown  # noqa: E402

PRESETS = {
    # benchmarks/redundancy.sh's protocols
    "synthetic": {"train": ["--data", "synthetic:gesture", "--model", "dvs-small", "--batch-size", "8",
                            "--eval-windows", "5"], "epochs": 15, "paper_epochs": 40},
    "nmnist": {"train": ["--data", f"nmnist:{ROOT.parent / 'shared/data/nmnist-small'}", "--model",
                         "nmnist-net", "--n-val", "200", "--batch-size", "16", "--eval-windows", "3"],
               "epochs": 15, "paper_epochs": 30},
    # a smoke check of the script (seconds; the numbers mean nothing)
    "tiny": {"train": ["--data", "synthetic:gesture-tiny", "--model", "dvs-small", "--batch-size", "4",
                       "--eval-windows", "2"], "epochs": 1, "paper_epochs": 2},
}
ATTENTIONS = {"none": [], "asa2": [], "asa1": [], "asa1-release": ["--release-masks"]}


def train_run(runs: Path, preset: dict, recipe: str, attention: str, seed: int,
              train: bool = True) -> dict | None:
    """One run's row (training it first when missing; ``train`` False: None when missing)."""
    out = runs / f"{recipe}-{attention}-s{seed}"
    epochs = preset["paper_epochs" if recipe == "paper" else "epochs"]
    command = [*asa_deploy(), "train", *preset["train"], "--epochs", str(epochs), "--recipe", recipe,
               "--attention", attention.split("-")[0], *ATTENTIONS[attention], "--seed", str(seed),
               "--no-progress", "--out", str(out)]
    if not (out / "model.pt").is_file():
        if not train:
            return None
        out.mkdir(parents=True, exist_ok=True)
        run(command, out.parent / f"{out.name}.log")
    artifact = torch.load(out / "model.pt", weights_only=False, map_location="cpu")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    val = current_names(artifact["metrics"]["val"], "recording")
    return {"recipe": recipe, "attention": attention, "seed": seed, "epochs": epochs,
            "best_epoch": artifact["metrics"]["best_epoch"],
            "accuracy_window": val["accuracy_window"], "accuracy_recording": val["accuracy_recording"],
            "nasfr": val["nasfr"],
            "val_accuracy_recording_per_epoch": [
                current_names(r, "recording", prefix="val_").get("val_accuracy_recording")
                for r in log if "epoch" in r],
            "command": shown(command)}


def summarise(rows: list[dict]) -> dict:
    table: dict[str, dict] = {}
    for recipe in sorted({r["recipe"] for r in rows}):
        per_attention = {}
        for attention in ATTENTIONS:
            group = [r for r in rows if r["recipe"] == recipe and r["attention"] == attention]
            if not group:
                continue
            acc, nasfr = [r["accuracy_recording"] for r in group], [r["nasfr"] for r in group]
            per_attention[attention] = {
                "seeds": len(group), "accuracy_recording_mean": statistics.mean(acc),
                "accuracy_recording_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "nasfr_mean": statistics.mean(nasfr),
                "nasfr_std": statistics.stdev(nasfr) if len(nasfr) > 1 else 0.0}
        base = per_attention.get("none")
        for entry in per_attention.values():
            if base:
                entry["nasfr_ratio_to_vanilla"] = entry["nasfr_mean"] / base["nasfr_mean"]
                entry["accuracy_recording_minus_vanilla"] = (entry["accuracy_recording_mean"]
                                                             - base["accuracy_recording_mean"])
        table[recipe] = per_attention
    return table


def markdown(table: dict, preset: str) -> str:
    lines = [f"| {preset} recipe | " + " | ".join(f"{a} acc / NASFR" for a in ATTENTIONS) + " |",
             "|---|" + "---|" * len(ATTENTIONS)]
    for recipe, per_attention in table.items():
        cells = []
        for attention in ATTENTIONS:
            e = per_attention.get(attention)
            if e is None:
                cells.append("")
                continue
            ratio = (f" (x{e['nasfr_ratio_to_vanilla']:.2f})"
                     if attention != "none" and "nasfr_ratio_to_vanilla" in e else "")
            cells.append(f"{e['accuracy_recording_mean']:.3f} +- {e['accuracy_recording_std']:.3f} / "
                         f"{e['nasfr_mean']:.4f} +- {e['nasfr_std']:.4f}{ratio}")
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (and a .md beside)")
    parser.add_argument("--recipes", default="default,paper")
    parser.add_argument("--attentions", default=",".join(ATTENTIONS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", type=Path, default=None, help="default: runs/paper/<preset>")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--existing-only", action="store_true",
                        help="summarise the finished runs of the grid, train nothing (a grid point "
                             "without a finished run is listed under `missing`)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    runs = args.runs or ROOT / "runs" / "paper" / args.preset
    grid = list(itertools.product(args.recipes.split(","), args.attentions.split(","),
                                  [int(s) for s in args.seeds.split(",")]))
    unknown = {a for _, a, _ in grid} - set(ATTENTIONS)
    if unknown:
        parser.error(f"--attentions: unknown {sorted(unknown)}; valid: {list(ATTENTIONS)}")
    with ThreadPoolExecutor(args.jobs) as pool:
        found = list(pool.map(lambda g: train_run(runs, preset, *g, not args.existing_only), grid))
    rows = [r for r in found if r is not None]
    missing = [f"{r}-{a}-s{s}" for (r, a, s), row in zip(grid, found, strict=True) if row is None]
    table = summarise(rows)
    text = markdown(table, args.preset)
    if missing:
        text += "\n\nnot run: " + ", ".join(missing)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "reproduce_paper", "preset": args.preset, "split": "validation",
        "command": " ".join(["python", "benchmarks/reproduce_paper.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "table": table, "runs": rows, "missing": missing}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
