"""Does training with DataLoader workers under torchrun ever hang? (issue 19)

Before the workers were spawned, `make test` hung 9 minutes in its 2-rank-with-workers test: a
worker forked from a rank that ran other threads waited forever for a lock one of them held. This
repeats that scenario, `torchrun --nproc_per_node 2 -m asa_deploy.cli train --workers 1` on the
tiny synthetic task, ``--runs`` times, each with a timeout, and writes how each run ended::

    python benchmarks/worker_starts.py --runs 20 --out benchmarks/results/worker_starts.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--data", "synthetic:gesture-tiny", "--model", "dvs-small", "--T", "5", "--batch-size", "4",
        "--eval-windows", "2", "--seed", "3", "--param", "c1=4", "--param", "c2=8", "--param",
        "c3=8", "--param", "fc=16", "--no-progress", "--epochs", "2"]


def one_run(run: int, workers: int, timeout_s: float, port: int) -> dict:
    """One 2-rank training with ``workers`` workers per rank: how it ended and how long it took."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(port), "-m", "asa_deploy.cli", "train", *TINY,
                   "--workers", str(workers), "--out", out]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            outcome = "ok" if done.returncode == 0 else f"failed ({done.returncode})"
            tail = "" if done.returncode == 0 else done.stderr[-2000:]
        except subprocess.TimeoutExpired:
            outcome, tail = "hung", f"no end within {timeout_s:.0f} s"
    return {"run": run, "outcome": outcome, "seconds": round(time.perf_counter() - start, 1),
            "stderr_tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    parser.add_argument("--timeout-s", type=float, default=600.0,
                        help="a run still going after this long counts as hung")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worker_starts.json"))
    args = parser.parse_args()
    runs = []
    for run in range(args.runs):
        runs.append(one_run(run, args.workers, args.timeout_s, 29600 + run % 100))
        print(f"run {run + 1}/{args.runs}: {runs[-1]['outcome']} in {runs[-1]['seconds']} s",
              flush=True)
    outcomes = [r["outcome"] for r in runs]
    report = {"command": "python benchmarks/worker_starts.py " + " ".join(sys.argv[1:]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "scenario": "torchrun 2 ranks (gloo), train --workers "
                          f"{args.workers}, 2 epochs of synthetic:gesture-tiny",
              "runs": len(runs), "ok": outcomes.count("ok"), "hung": outcomes.count("hung"),
              "failed": len(runs) - outcomes.count("ok") - outcomes.count("hung"),
              "seconds": [r["seconds"] for r in runs], "details": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['ok']} of {len(runs)} ended normally, {report['hung']} hung, "
          f"{report['failed']} failed; wrote {args.out}")
    sys.exit(0 if report["ok"] == len(runs) else 1)


if __name__ == "__main__":
    main()
