"""``simulate --jobs``: the chip simulator's wall time with 1 and N processes, and proof that the
results are the same.

Loads ``RUN_DIR/chip_config.json`` and cuts its windows once, as ``asa-deploy simulate`` does (test
windows of the run's validation split, or of ``--data``; ``--whole-recordings``: one per recording),
then simulates all of them once per job count, worker start-up included in the time, and compares
every per-window array of the result (and the per-neuron counts with ``--monitor``) with the first
job count's. Reports wall seconds, the speed-up over the first count and the real-time factor
(seconds of recording simulated per wall second). Nothing is written into the run directory. Exits
1 if any result differs.

    python benchmarks/sim_jobs.py runs/gesture --data dvsgesture:../shared/data/dvsgesture-10 \\
        --engine exact --whole-recordings --jobs 1 2 --out benchmarks/results/sim_jobs.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from asa_deploy import cli_args
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.monitor import select_cores
from asa_deploy.chip.sim import ENGINES, SimResult, simulate
from asa_deploy.chip.sim.parallel import simulate_parallel
from asa_deploy.chip.simulate import event_windows
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.rundir import CHIP_CONFIG


def differences(a: SimResult, b: SimResult) -> list[str]:
    """The fields in which two results differ (timing aside)."""
    out = []
    for f in fields(SimResult):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "wall_seconds":
            continue
        if f.name == "monitor":
            same = sorted(x) == sorted(y) and all(np.array_equal(x[c], y[c]) for c in x)
        elif isinstance(x, np.ndarray):
            same = x.shape == y.shape and np.array_equal(x, y)
        else:
            same = x == y
        if not same:
            out.append(f.name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=cli_args.run_dir, help="a compiled run (chip_config.json)")
    parser.add_argument("--data", type=cli_args.data_spec, default=None,
                        help="data to simulate (default: the run's validation split)")
    parser.add_argument("--engine", choices=ENGINES, default="exact")
    parser.add_argument("--windows", type=cli_args.positive_int, default=TEST_WINDOWS)
    parser.add_argument("--max-recordings", type=cli_args.positive_int, default=None)
    parser.add_argument("--whole-recordings", action="store_true")
    parser.add_argument("--monitor", type=cli_args.monitor_cores, default=None, metavar="CORES",
                        help="also compare the per-neuron counts of these cores (e.g. all)")
    parser.add_argument("--jobs", type=cli_args.positive_int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=cli_args.out_file, default=Path("benchmarks/results/sim_jobs.json"))
    args = parser.parse_args()

    run = Path(args.run_dir)
    config = ChipConfig.load(run / CHIP_CONFIG)
    cores = [] if args.monitor is None else select_cores(config, args.monitor, str(run / CHIP_CONFIG))
    start = time.perf_counter()
    windows, described = event_windows(config, args.data, windows=args.windows,
                                       max_recordings=args.max_recordings, whole=args.whole_recordings)
    load_seconds = time.perf_counter() - start
    simulate(config, windows[:1], args.engine)  # the kernel compiled (or loaded) outside the timing
    recorded_s = sum(w.n_bins * w.dt_us for w in windows) / 1e6
    print(f"{described}: {len(windows)} windows, {recorded_s:.1f} s of recording, engine "
          f"{args.engine}", flush=True)

    runs, first, ok = [], None, True
    for jobs in args.jobs:
        result = simulate_parallel(config, windows, args.engine, jobs, monitor=cores)
        if first is None:
            first = result
        differ = differences(first, result)
        ok &= not differ
        entry = {"jobs": jobs, "wall_seconds": result.wall_seconds,
                 "speedup": runs[0]["wall_seconds"] / result.wall_seconds if runs else 1.0,
                 "real_time_factor": recorded_s / result.wall_seconds,
                 "identical_to_first": not differ, "differing_fields": differ}
        runs.append(entry)
        print(f"  {jobs} job(s): {result.wall_seconds:.2f} s, x{entry['speedup']:.2f}, real-time factor "
              f"{entry['real_time_factor']:.2f}, {'identical' if not differ else f'DIFFERS in {differ}'}",
              flush=True)

    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads_one_job": torch.get_num_threads()},
        "run": str(run), "data": described, "engine": args.engine, "windows": len(windows),
        "whole_recordings": args.whole_recordings, "monitored_cores": cores,
        "recording_seconds": recorded_s, "load_seconds": load_seconds,
        "summary": first.to_dict() if first is not None else None,
        "runs": runs, "identical": ok,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
