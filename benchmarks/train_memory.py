"""Peak RSS of training steps, ``--memory standard`` against ``lean``, with and without the fixed
glibc mmap threshold (``asa_deploy.train.memory.bound_heap_growth``). Never run by the tests.

Each configuration runs in a fresh process: ``--steps`` steps (forward, MSE loss, synops meter,
backward, Adam) of ``--model`` on random spikes (5 % of the inputs), the peak RSS (``ru_maxrss``)
after every step, and before the first: after Python's start, torch's import, sinabs's and the
network's construction (what a process holds whatever its batch). The data pipeline is left out (``benchmarks/scale.py`` measures the whole training
process on a data set). Writes JSON with the machine it ran on.

    python benchmarks/train_memory.py --model arch-a --T 60 --batch 16 --steps 5 \\
        --out benchmarks/results/train_memory.json
    python benchmarks/train_memory.py --batch 8 --steps 3 --memory lean --heap-bound on
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MODES = [("standard", True), ("standard", False), ("lean", True), ("lean", False)]


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args) -> dict:
    stages = {"python": peak_rss()}  # what the process holds before any batch, stage by stage
    import torch

    stages["import torch"] = peak_rss()
    import sinabs  # noqa: F401  (asa_deploy's layers; sinabs imports matplotlib's pylab)

    stages["import sinabs"] = peak_rss()
    from asa_deploy.nn import build_network, load_model_spec
    from asa_deploy.train.cost import CostMeter
    from asa_deploy.train.loop import per_sample_loss
    from asa_deploy.train.memory import bound_heap_growth, use_lean_memory

    bounded = bound_heap_growth() if args.heap_bound == "on" else False
    torch.manual_seed(0)
    spec = load_model_spec(args.model).with_overrides(T=args.T)
    model = build_network(spec, 11, args.attention)
    if args.memory == "lean":
        use_lean_memory(model)
    meter = CostMeter(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    stages["asa_deploy imported, network and optimizer built"] = peak_rss()
    shape = (args.batch, spec.T, spec.input["channels"], spec.input["height"], spec.input["width"])
    peaks, t0 = [], time.perf_counter()
    for _ in range(args.steps):
        x = (torch.rand(shape) < 0.05).float()
        labels = torch.randint(0, 11, (args.batch,))
        model.reset_states()
        loss = per_sample_loss(model(x), labels, "mse").mean()
        meter.synops(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        peaks.append(peak_rss())
    return {"memory": args.memory, "heap_bound": bounded, "peak_rss_bytes_by_stage": stages,
            "peak_rss_bytes_after_step": peaks,
            "peak_rss_mib": peaks[-1] / 2**20,
            "samples_per_s": args.steps * args.batch / (time.perf_counter() - t0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="arch-a")
    p.add_argument("--attention", default="none")
    p.add_argument("--T", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/train_memory.json")
    p.add_argument("--memory", choices=("standard", "lean"),
                   help="only this configuration, in this process (with --heap-bound): one JSON "
                        "line on stdout, no --out")
    p.add_argument("--heap-bound", choices=("on", "off"), default="off",
                   help="with --memory: fix glibc's heap thresholds as train --memory lean does")
    args = p.parse_args()
    if args.memory:  # one configuration, in this process
        print(json.dumps(child(args)))
        return
    load, rows = os.getloadavg(), []
    for memory, bounded in MODES:
        command = [sys.executable, __file__, "--model", args.model, "--attention", args.attention,
                   "--T", str(args.T), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--memory", memory, "--heap-bound", "on" if bounded else "off"]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"--memory {memory:8s} heap bound {'on ' if bounded else 'off'}: peak RSS "
              f"{row['peak_rss_mib']:,.0f} MiB after {args.steps} steps "
              f"({', '.join(f'{b / 2**20:,.0f}' for b in row['peak_rss_bytes_after_step'])}), "
              f"{row['samples_per_s']:.2f} samples/s", flush=True)
    import torch

    report = {"benchmark": "train_memory", "args": vars(args),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                          "load_average_at_start": load},
              "results": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
