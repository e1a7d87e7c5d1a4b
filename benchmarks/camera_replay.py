"""Replay every DVS Gesture clip as a virtual camera through the 128x128 DVS input layer and the
``exact`` simulator: real-time factor (``asa_deploy.device.camera``: recorded seconds over the wall
clock from loading the clip to its last decision), decision time and first-spike latency per clip.

By default the Speck network (speck-tiny) with seeded random weights is compiled for speck2f with a
T = 10 x 10 ms window; ``--run RUN_DIR`` replays through that run's ``chip_config.json`` instead.

    python benchmarks/camera_replay.py --out benchmarks/results/camera_replay.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from sim_chip import random_config  # same folder

from asa_deploy.chip.config import ChipConfig
from asa_deploy.device.camera import replay, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=Path("../shared/data/dvsgesture-10"))
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--window-ms", type=float, default=10.0, help="dt of the default network")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/camera_replay.json"))
    args = parser.parse_args()
    if args.run is not None:
        config = ChipConfig.load(args.run / "chip_config.json")
    else:
        config = random_config("speck-tiny", (2, 128, 128), 4, 11)
        config.meta["frame_spec"] = {"T": 10, "dt_us": int(args.window_ms * 1000), "downsample": 4,
                                     "binarize": False}
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads()},
              "network": str(args.run) if args.run else "speck-tiny, random weights (seed 0)",
              "clips": {}}
    for clip in sorted(args.clips.glob("*.bs2"), key=lambda p: int(p.stem)):
        done = replay(config, clip)
        summary = summarize(done.decisions, done.wall_seconds, done.duration_s)
        summary.pop("decisions")
        report["clips"][clip.name] = summary
        print(f"{clip.name:7s} {summary['windows']:3d} windows  real-time x{summary['real_time_factor']:5.1f}  "
              f"decision {summary['mean_decision_ms']:6.1f} ms  first spike "
              f"{summary['mean_first_spike_latency_ms'] or float('nan'):5.1f} ms  "
              f"{summary['input_events_per_s']:>9,.0f} events/s")
    factors = [c["real_time_factor"] for c in report["clips"].values()]
    report["min_real_time_factor"] = min(factors)
    print(f"slowest clip: real-time x{min(factors):.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
