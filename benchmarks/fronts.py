"""Vanilla against ASA as fronts: accuracy against exact-simulator synops and spikes per window.

    python benchmarks/fronts.py synthetic --out benchmarks/results/fronts_synthetic.json
    python benchmarks/fronts.py nmnist --out benchmarks/results/fronts_nmnist.json

Every point is one deployment on speck2f, measured the same way: `asa-deploy train` (the same data,
network, epochs and seed for every point; `--synops-weight W`), then `asa-deploy fold --chip speck2f
--kill-hot-pixels --synops-weight W` (the same W in the quantization-aware fine-tuning), whose last
rung runs the `exact` simulator on the run's validation split. The knobs that trade accuracy for
cost are swept for both methods alike: the cost weight W, the first layer's channels (`--param`,
which sets the input-driven synops per event) and the neuron trained (`--neuron iaf`: chip-native
training, no LIF -> IAF conversion at fold); ASA runs are also folded with DVS pixel kills from
the first attention layer's calibrated map, keeping a share K of the pixels (`--input-mask
--input-mask-keep K`), the attention at the input that only ASA has. `--substeps 1,5` also folds
every run with `--finetune-substeps 5` (fine-tuning at 5x finer bins; a point `<run>-sub5`).

The goal (issue 11): at accuracy within 1 point of the best vanilla point, the best ASA-derived point
needs at most 0.5x that vanilla point's synops per window, and at most 0.5x its spikes. The JSON has
every point with the commands that made it, the best vanilla point and the goal's ratios; `--plot`
draws both fronts. Runs go to `--runs` (default runs/fronts/<preset>); a point whose fold.json is
newer than its model.pt is read, not rerun, so an interrupted sweep resumes. Two processes at a
time, one thread each (2 cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import ROOT, asa_deploy, run, shown  # noqa: E402

from asa_deploy.metrics import current_names  # noqa: E402

PRESETS = {
    # as benchmarks/redundancy.sh synthetic and the ladder's synthetic source runs
    "synthetic": {"train": ["--data", "synthetic:gesture", "--model", "dvs-small", "--epochs", "15",
                            "--batch-size", "8", "--eval-windows", "5"],
                  "fold": ["--eval-windows", "5"],
                  "variants": [[], ["--param", "c1=8"], ["--neuron", "iaf"]],
                  "weights": [0.0, 2.0, 8.0], "keeps": [0.5, 0.3]},
    # as the ladder's N-MNIST source runs (benchmarks/fold_ladder.sh)
    "nmnist": {"train": ["--data", f"nmnist:{ROOT.parent / 'shared/data/nmnist-small'}", "--model",
                         "nmnist-speck-lif", "--epochs", "12", "--n-val", "200",
                         "--eval-windows", "2"],
               "fold": ["--eval-windows", "2"],
               # chip-native IAF is measured on synthetic (it lost there); the N-MNIST IAF
               # network is benchmarks/sim_chip.py's nmnist-speck
               "variants": [[], ["--param", "c1=8"]],
               "weights": [0.0, 2.0, 8.0], "keeps": [0.5, 0.3]},
    # a smoke check of the script itself (seconds; the points mean nothing)
    "tiny": {"train": ["--data", "synthetic:gesture-tiny", "--model", "dvs-small", "--epochs", "2",
                       "--batch-size", "4", "--eval-windows", "2"],
             "fold": ["--eval-windows", "2", "--finetune-epochs", "1"],
             "variants": [[]], "weights": [0.0, 8.0], "keeps": [0.5]},
}
ACC = "accuracy_recording"  # the fronts compare accuracy per recording (majority vote)
ACCURACY_SLACK = 0.01  # "within 1 point"
GATE, GATE_DISTILL = "gate", "gate-distill"  # issue 12: `fold --gate 1` (+ `--distill-weight 1`)
GOAL = 0.5


def train_point(runs: Path, preset: dict, attention: str, variant: list[str], weight: float,
                seed: int) -> dict:
    tag = "-".join([attention, *(v.replace("=", "_") for v in variant[1::2]), f"w{weight:g}"])
    out = runs / tag
    command = [*asa_deploy(), "train", *preset["train"], *variant, "--attention", attention,
               "--synops-weight", f"{weight:g}", "--seed", str(seed), "--no-progress",
               "--out", str(out)]
    if not (out / "model.pt").is_file():
        out.mkdir(parents=True, exist_ok=True)
        run(command, out.parent / f"{tag}.train.log")
    return {"run": out, "tag": tag, "attention": attention, "variant": " ".join(variant),
            "synops_weight": weight, "train_command": shown(command)}


def fold_point(point: dict, preset: dict, keep: float | None, substeps: int,
               gate: str | None = None) -> dict:
    source: Path = point["run"]
    suffix = (f"-keep{keep:g}" if keep is not None else "") + (
        f"-sub{substeps}" if substeps > 1 else "") + (f"-{gate}" if gate else "")
    out = source.with_name(source.name + suffix)
    if suffix and not (out / "model.pt").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("model.pt", "train_log.jsonl"):
            shutil.copy2(source / name, out / name)
    mask = [] if keep is None else ["--input-mask", "--input-mask-keep", f"{keep:g}"]
    fine = [] if substeps == 1 else ["--finetune-substeps", str(substeps)]
    gated = []
    if gate:  # the static fold's own strategy: the gate is the only difference
        static = json.loads((source / "fold.json").read_text())
        gated = ["--strategy", static["strategy"]] if static["strategy"] != "none" else []
        gated += ["--gate", "1", *(["--distill-weight", "1"] if gate == GATE_DISTILL else [])]
    command = [*asa_deploy(), "fold", str(out), "--chip", "speck2f", "--kill-hot-pixels",
               "--synops-weight", f"{point['synops_weight']:g}", *preset["fold"], *mask, *fine,
               *gated, "--no-progress"]
    fold_json = out / "fold.json"
    if not (fold_json.is_file() and fold_json.stat().st_mtime > (out / "model.pt").stat().st_mtime):
        run(command, out.parent / f"{out.name}.fold.log")
    report = json.loads(fold_json.read_text())
    report["ladder"] = [current_names(row, "recording") for row in report["ladder"]]
    ladder = {row["step"]: row for row in report["ladder"]}
    exact = ladder["quantized, exact simulator"]
    finetuned = next((row for step, row in ladder.items() if step.startswith("fine-tuned")), None)
    method = "vanilla" if point["attention"] == "none" else point["attention"]
    return {k: v for k, v in point.items() if k != "run"} | {
        "name": out.name, "input_keep": keep, "finetune_substeps": substeps,
        "method": method + (f"+{gate}" if gate else ""), "gate": gate_cost(out, report),
        "input_mask_kept": report.get("input_mask_kept"),
        "hot_pixels_killed": len((report.get("hot_pixels") or {}).get("pixels", [])),
        "strategy": report["strategy"],
        "dynamic_float_accuracy_recording": ladder["dynamic float"][ACC],
        "finetuned_float_accuracy_recording": finetuned[ACC] if finetuned else None,
        ACC: exact[ACC], "accuracy_window": exact["accuracy_window"],
        "synops_per_window": exact["synops_per_window"],
        "input_synops_per_window": exact["input_synops_per_window"],
        "network_synops_per_window": exact["network_synops_per_window"],
        "spikes_per_window": exact["spikes_per_window"],
        "fold_command": shown(command)}


def gate_cost(run: Path, report: dict) -> dict | None:
    """What the spiking gate core itself costs per window on the exact simulator: its spikes, the
    synops it receives (exact) and those its spikes cause in the gated core (its spikes x the
    mean fan-out of the gated core's input map: an estimate at the map's edges)."""
    if not report.get("gate"):
        return None
    mapping = json.loads((run / "mapping.json").read_text())
    config = json.loads((run / "chip_config.json").read_text())
    edge = next(e for e in mapping["graph"] if e["from"].endswith(".gate"))
    core = next(c for c in config["cores"] if c["core"] == edge["to_core"])
    c_out, ky, kx = len(core["weights"]), len(core["weights"][0][0]), len(core["weights"][0][0][0])
    exact = next(r for r in report["ladder"] if r["step"] == "quantized, exact simulator")
    spikes = exact["spikes_per_core"][str(edge["from_core"])]
    sy, sx = core["stride"]
    return {"layers": report["gate"]["layers"], "core": edge["from_core"], "spikes_per_window": spikes,
            "received_synops_per_window": exact["synops_per_core"][str(edge["from_core"])],
            "sent_synops_per_window_estimate": spikes * c_out * (ky / sy) * (kx / sx),
            "feedback_weights": report["gate"]["feedback_weights"]}


def pareto(points: list[dict], cost: str) -> list[dict]:
    """The points no other point beats on both accuracy and ``cost``, cheapest first."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[cost], -p[ACC])):
        if p[ACC] > best:
            front.append(p)
            best = p[ACC]
    return front


def goal(points: list[dict]) -> dict:
    vanilla = [p for p in points if p["method"] == "vanilla"]
    asa = [p for p in points if p["method"].startswith("asa")]  # gated ASA included
    ref = max(vanilla, key=lambda p: (p[ACC], -p["synops_per_window"]))
    eligible = [p for p in asa if p[ACC] >= ref[ACC] - ACCURACY_SLACK - 1e-9]
    result = {"vanilla_reference": ref["name"], "reference_accuracy_recording": ref[ACC],
              "reference_synops_per_window": ref["synops_per_window"],
              "reference_spikes_per_window": ref["spikes_per_window"],
              "accuracy_slack": ACCURACY_SLACK, "goal_ratio": GOAL,
              "eligible_asa_points": [p["name"] for p in eligible]}
    for cost in ("synops_per_window", "spikes_per_window"):
        best = min(eligible, key=lambda p: p[cost], default=None)
        ratio = best[cost] / ref[cost] if best else None
        result[cost] = {"best_asa_point": best["name"] if best else None, "ratio": ratio,
                        "met": ratio is not None and ratio <= GOAL}
        # the same cut inside the vanilla front: do the knobs alone (weights, fewer channels,
        # IAF) do what ASA does?
        plain = min((p for p in vanilla if p[ACC] >= ref[ACC] - ACCURACY_SLACK - 1e-9),
                    key=lambda p: p[cost])
        result[cost]["cheapest_vanilla_within_slack"] = {"name": plain["name"],
                                                        "ratio": plain[cost] / ref[cost]}
        # what the cheapest ASA point at any accuracy reaches, to show how far the goal is
        cheapest = min(asa, key=lambda p: p[cost])
        result[cost]["cheapest_asa_point"] = {"name": cheapest["name"],
                                             "ratio": cheapest[cost] / ref[cost],
                                             ACC: cheapest[ACC]}
    return result


def gate_summary(points: list[dict], summary: dict) -> dict:
    """Issue 12's comparison: each gated point against its static fold (the same trained run and
    fine-tuning, no gate), and the best of each within 1 point of vanilla's best (static: with input
    masks and finer fine-tuning bins too)."""
    static = {p["name"]: p for p in points if not p["gate"] and p["input_keep"] is None}
    pairs = []
    for p in points:
        if not p["gate"]:
            continue
        twin = static[p["name"].rsplit("-gate", 1)[0]]
        pairs.append({
            "point": p["name"], "static": twin["name"], "method": p["method"],
            ACC: p[ACC], "static_accuracy_recording": twin[ACC],
            "dynamic_to_chip_loss": p["dynamic_float_accuracy_recording"] - p[ACC],
            "static_dynamic_to_chip_loss": twin["dynamic_float_accuracy_recording"] - twin[ACC],
            **{f"{cost}_ratio": p[cost] / twin[cost]
               for cost in ("synops_per_window", "spikes_per_window")},
            "gate_spikes_per_window": p["gate"]["spikes_per_window"],
            "gate_synops_per_window_estimate": p["gate"]["received_synops_per_window"]
            + p["gate"]["sent_synops_per_window_estimate"]})
    floor = summary["reference_accuracy_recording"] - ACCURACY_SLACK - 1e-9
    best = {}
    for kind, group in (("static", [p for p in points if not p["gate"] and p["method"].startswith("asa")]),
                        ("gated", [p for p in points if p["gate"] and p["method"].startswith("asa")])):
        eligible = [p for p in group if p[ACC] >= floor]
        best[kind] = {cost: (lambda b: {"name": b["name"], ACC: b[ACC], cost: b[cost]}
                             if b else None)(min(eligible, key=lambda p: p[cost], default=None))
                      for cost in ("synops_per_window", "spikes_per_window")}
    return {"pairs": pairs, "best_within_slack_of_vanilla": best}


def plot(points: list[dict], summary: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"vanilla": ("tab:gray", "o"), "asa2": ("tab:blue", "s"), "asa1": ("tab:green", "^"),
              "vanilla+gate": ("tab:brown", "P"), "asa2+gate": ("tab:orange", "P"),
              "asa2+gate-distill": ("tab:purple", "X")}
    for ax, cost, label in ((axes[0], "synops_per_window", "synaptic operations per window"),
                            (axes[1], "spikes_per_window", "spikes per window")):
        for method in sorted({p["method"] for p in points}):
            group = [p for p in points if p["method"] == method]
            color, marker = styles.get(method, ("tab:red", "D"))
            masked = [p for p in group if p["input_keep"] is not None]
            plain = [p for p in group if p["input_keep"] is None and p["finetune_substeps"] == 1]
            fine = [p for p in group if p["input_keep"] is None and p["finetune_substeps"] > 1]
            ax.scatter([p[cost] for p in plain], [p[ACC] for p in plain], color=color,
                       marker=marker, label=method)
            if fine:
                ax.scatter([p[cost] for p in fine], [p[ACC] for p in fine], color=color,
                           marker=marker, edgecolors="k", linewidths=1.5,
                           label=f"{method}, fine-tuned at finer bins")
            if masked:
                ax.scatter([p[cost] for p in masked], [p[ACC] for p in masked],
                           facecolors="none", edgecolors=color, marker=marker,
                           label=f"{method} + input mask")
            for p in group:
                ax.annotate(p["name"], (p[cost], p[ACC]), fontsize=6, alpha=0.7,
                            xytext=(3, 3), textcoords="offset points")
            front = pareto(group, cost)
            ax.plot([p[cost] for p in front], [p[ACC] for p in front], color=color, lw=1)
        ref_cost = summary[f"reference_{cost}"]
        ax.axvline(GOAL * ref_cost, color="k", ls=":", lw=1, label=f"goal: {GOAL}x best vanilla")
        ax.axhline(summary["reference_accuracy_recording"] - ACCURACY_SLACK, color="k", ls="--", lw=1,
                   label="best vanilla - 1 point")
        ratio = summary[cost]["ratio"]
        ax.set_title(f"{label}: best ASA within 1 point x{ratio:.2f}" if ratio else
                     f"{label}: no ASA point within 1 point")
        ax.set_xlabel(f"{label} (exact simulator, speck2f)")
        ax.set_ylabel("validation accuracy per recording")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of both fronts")
    parser.add_argument("--runs", type=Path, default=None, help="default: runs/fronts/<preset>")
    parser.add_argument("--attentions", default="none,asa2")
    parser.add_argument("--weights", default=None, help="comma-separated synops weights")
    parser.add_argument("--keeps", default=None, help="comma-separated input-mask keep shares")
    parser.add_argument("--substeps", default="1",
                        help="comma-separated `fold --finetune-substeps` values, each a point of "
                             "every trained run; input masks use the first")
    parser.add_argument("--variants", default=None,
                        help="comma-separated indices into the preset's variants (default: all)")
    parser.add_argument("--gates", default="",
                        help=f"comma-separated: {GATE}, {GATE_DISTILL}: also fold every trained run "
                             f"with a spiking gate (`fold --gate 1`, and `--distill-weight 1`, "
                             f"attention runs only), with the static fold's strategy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    weights = [float(w) for w in args.weights.split(",")] if args.weights else preset["weights"]
    keeps = [float(k) for k in args.keeps.split(",")] if args.keeps else preset["keeps"]
    substeps = [int(k) for k in args.substeps.split(",")]
    runs = args.runs or ROOT / "runs" / "fronts" / args.preset
    runs.mkdir(parents=True, exist_ok=True)
    variants = ([preset["variants"][int(i)] for i in args.variants.split(",")] if args.variants
                else preset["variants"])
    gates = [g for g in args.gates.split(",") if g]
    unknown = [g for g in gates if g not in (GATE, GATE_DISTILL)]
    if unknown:
        parser.error(f"--gates: unknown {unknown}")
    grid = list(itertools.product(args.attentions.split(","), variants, weights))
    with ThreadPoolExecutor(args.jobs) as pool:
        trained = list(pool.map(lambda g: train_point(runs, preset, *g, args.seed), grid))
        folds = [(t, None, k) for t in trained for k in substeps]
        folds += [(t, keep, substeps[0]) for t in trained if t["attention"] != "none"
                  for keep in keeps]
        points = list(pool.map(lambda f: fold_point(f[0], preset, f[1], f[2]), folds))
        gated = [(t, g) for t in trained for g in gates
                 if g == GATE or t["attention"] != "none"]
        points += list(pool.map(lambda f: fold_point(f[0], preset, None, substeps[0], f[1]), gated))
    for p in sorted(points, key=lambda p: p["synops_per_window"]):
        print(f"{p['name']:28s} acc {p[ACC]:.3f}  synops/window {p['synops_per_window']:>11,.0f}"
              f" (input {p['input_synops_per_window']:>11,.0f})  spikes/window "
              f"{p['spikes_per_window']:>9,.0f}")
    summary = goal(points)
    for cost in ("synops_per_window", "spikes_per_window"):
        s = summary[cost]
        print(f"{cost}: best ASA within {ACCURACY_SLACK:.0%} of vanilla's best "
              f"({summary['vanilla_reference']}, {summary['reference_accuracy_recording']:.3f}): "
              + (f"{s['best_asa_point']} x{s['ratio']:.2f} ({'met' if s['met'] else 'missed'})"
                 if s["ratio"] is not None else "none"))
    if gates:
        for pair in gate_summary(points, summary)["pairs"]:
            print(f"{pair['point']:28s} vs {pair['static']:16s} acc {pair[ACC]:.3f} vs "
                  f"{pair['static_accuracy_recording']:.3f}; synops x{pair['synops_per_window_ratio']:.2f}, "
                  f"spikes x{pair['spikes_per_window_ratio']:.2f} (gate's own ~"
                  f"{pair['gate_synops_per_window_estimate']:,.0f} synops); dynamic -> chip loss "
                  f"{pair['dynamic_to_chip_loss']:+.3f} vs {pair['static_dynamic_to_chip_loss']:+.3f}")
    record = {"benchmark": "fronts", "preset": args.preset, "chip": "speck2f",
              "engine": "exact", "split": "validation", "seed": args.seed,
              "command": " ".join(["python", "benchmarks/fronts.py", *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()},
              "goal": summary, "points": points,
              **({"gates": gate_summary(points, summary)} if gates else {}),
              "fronts": {cost: {m: [p["name"] for p in pareto(
                  [q for q in points if q["method"] == m], cost)]
                  for m in sorted({p["method"] for p in points})}
                  for cost in ("synops_per_window", "spikes_per_window")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    if args.plot:
        plot(points, summary, args.plot, f"{args.preset}: vanilla vs ASA"
             f"{' and spiking gates' if gates else ''} on speck2f (exact)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
