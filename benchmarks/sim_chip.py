"""Chip simulators on real recordings: throughput, real-time factor, and exact-vs-fast agreement.

For each data set, the network is either a compiled run (``--gesture-run`` / ``--nmnist-run``:
their ``chip_config.json``) or, by default, the model spec compiled with seeded random weights
(``speck-tiny`` for the DVS Gesture clips through the 128x128 DVS layer pooled by 4,
``nmnist-speck`` for N-MNIST). Each recording is one whole window. Reports, per engine: input
events/s and synaptic operations/s of wall time, the real-time factor (recording seconds simulated
per wall second), and between engines the NIR paper's agreement measures (classification agreement,
cosine similarity of per-core spike counts). Writes JSON with the machine it ran on.

    python benchmarks/sim_chip.py --out benchmarks/results/sim_chip.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import sinabs.layers as sl
import torch

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.chip.simulate import agreement
from asa_deploy.data import open_dataset
from asa_deploy.nn import build_network, load_model_spec


def random_config(model: str, sensor: tuple[int, int, int], downsample: int, classes: int,
                  seed: int = 0) -> ChipConfig:
    """The model with seeded random weights and BN statistics, compiled for speck2f (bias dropped)."""
    torch.manual_seed(seed)
    net = build_network(load_model_spec(model), classes).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    spec = net.spec.input
    shape = (int(spec["channels"]), int(spec["height"]), int(spec["width"]))
    return compile_network(net, "speck2f", input_shape=shape, sensor=SensorInput(sensor, downsample),
                           bias_policy="drop").config


def nine_core_compile_seconds() -> float:
    """Wall time to lower, check, quantize and map a 9-layer network onto all 9 cores."""
    layers: list[torch.nn.Module] = []
    for i in range(9):
        layers += [torch.nn.Conv2d(2 if i == 0 else 8, 8, 3, padding=1, bias=False),
                   sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0)]
    start = time.perf_counter()
    compiled = compile_network(torch.nn.Sequential(*layers), "speck2f", input_shape=(2, 32, 32))
    seconds = time.perf_counter() - start
    assert sorted(compiled.mapping.assignment.values()) == list(range(9))
    return seconds


def whole_windows(data: str, dt_us: int, limit: int | None) -> tuple[list[EventWindow], float]:
    """Each recording as one window; all get the longest recording's number of bins (batching)."""
    dataset = open_dataset(data)
    indices = range(len(dataset) if limit is None else min(limit, len(dataset)))
    recordings = [dataset[i] for i in indices]
    spans = [int(e["t"][-1]) - int(e["t"][0]) + 1 for e, _ in recordings]
    n_bins = -(-max(spans) // dt_us)
    windows = [EventWindow(e, int(e["t"][0]), n_bins, dt_us, int(label), str(dataset.sources[i]))
               for i, (e, label) in zip(indices, recordings, strict=True)]
    return windows, sum(spans) / 1e6


def measure(config: ChipConfig, windows: list[EventWindow], seconds: float) -> dict:
    simulate(config, windows[:1], "exact")  # compile the numba kernel outside the timing
    results = {engine: simulate(config, windows, engine) for engine in ("fast", "exact")}
    out = {"recordings": len(windows), "recording_seconds": seconds, "engines": {}}
    for engine, result in results.items():
        summary = result.to_dict()
        out["engines"][engine] = {
            "wall_seconds": result.wall_seconds,
            "input_events_per_s": summary["events_per_second"],
            "synops_per_s": summary["synops_per_second"],
            "real_time_factor": seconds / result.wall_seconds,
            "input_events": summary["input_events"],
            "spikes_per_core": summary["spikes_per_core"]["total"],
            "synops_per_core": summary["synops_per_core"]["total"],
        }
    out["agreement"] = agreement(results["fast"], results["exact"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gesture", default="dvsgesture:../shared/data/dvsgesture-10")
    parser.add_argument("--nmnist", default="nmnist:../shared/data/nmnist-small")
    parser.add_argument("--gesture-run", type=Path, default=None)
    parser.add_argument("--nmnist-run", type=Path, default=None)
    parser.add_argument("--nmnist-limit", type=int, default=200, help="N-MNIST recordings")
    parser.add_argument("--dt-ms", type=float, default=10.0, help="time bin of the fast engine")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sim_chip.json"))
    args = parser.parse_args()
    dt_us = int(args.dt_ms * 1000)
    cases = {
        "dvsgesture": (args.gesture, args.gesture_run, ("speck-tiny", (2, 128, 128), 4, 11), None),
        "nmnist": (args.nmnist, args.nmnist_run, ("nmnist-speck", (2, 34, 34), 1, 10),
                   args.nmnist_limit),
    }
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
              "dt_ms": args.dt_ms, "nine_core_compile_seconds": nine_core_compile_seconds(),
              "cases": {}}
    print(f"9-layer network compiled and mapped in {report['nine_core_compile_seconds']:.3f} s")
    for name, (data, run, default, limit) in cases.items():
        config = (ChipConfig.load(run / "chip_config.json") if run is not None
                  else random_config(*default))
        windows, seconds = whole_windows(data, dt_us, limit)
        result = measure(config, windows, seconds)
        result["network"] = str(run) if run is not None else f"{default[0]} (random weights, seed 0)"
        report["cases"][name] = result
        e, f = result["engines"]["exact"], result["engines"]["fast"]
        print(f"{name}: {len(windows)} recordings, {seconds:.1f} s of events")
        for engine, r in (("fast", f), ("exact", e)):
            print(f"  {engine:5s} {r['input_events_per_s']:>12,.0f} events/s "
                  f"{r['synops_per_s']:>14,.0f} synops/s  real-time x{r['real_time_factor']:.1f}")
        a = result["agreement"]
        cos = ", ".join(f"{c}: {v:.3f}" for c, v in a["activity_cosine_per_core"].items())
        print(f"  agreement {a['classification_agreement']:.3f}; activity cosine per core {cos}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
