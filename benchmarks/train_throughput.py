"""Training throughput (samples/s) of the same network and batch, vanilla against SA and ASA.

Measures forward + backward + Adam step on random event frames (the data pipeline is excluded, so the
ratio isolates the attention's cost). Writes JSON with the machine it ran on. ``--memory standard
lean`` measures each network's layers under both ``train --memory`` modes as well (their peak memory,
and the cost of the heap bound lean sets for the whole process, are in
``benchmarks/train_memory.py``: one process here holds all of them).

    python benchmarks/train_throughput.py --model nmnist-net --batch 32 --out benchmarks/results/train_throughput.json
    python benchmarks/train_throughput.py --model arch-a --batch 16 --attention none asa2 \
        --memory standard lean --out benchmarks/results/train_throughput_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from asa_deploy.defaults import MEMORY_MODES
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.train.loop import per_sample_loss
from asa_deploy.train.memory import use_lean_memory


def make_step(model_name: str, attention: str, batch: int, T: int | None, seed: int = 0,
              memory: str = "standard"):
    """One training step (forward, MSE loss, backward, Adam) of a fresh network on fixed input."""
    torch.manual_seed(seed)
    spec = load_model_spec(model_name).with_overrides(T=T)
    net = build_network(spec, 10, attention)
    if memory == "lean":
        use_lean_memory(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    shape = (batch, spec.T, spec.input["channels"], spec.input["height"], spec.input["width"])
    x = (torch.rand(shape) < 0.05).float()
    labels = torch.randint(0, 10, (batch,))

    def step():
        net.reset_states()
        loss = per_sample_loss(net(x), labels, "mse").mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def measure(model_name: str, attentions: list[str], batch: int, steps: int, repeats: int,
            T: int | None, memories: tuple[str, ...] = ("standard",)) -> list[dict]:
    """Median samples/s per attention kind and memory mode; they take turns within every repeat so
    that slow drift of the machine (other load, frequency) affects all of them alike."""
    kinds = [(a, m) for m in memories for a in attentions]
    step_fns = {k: make_step(model_name, k[0], batch, T, memory=k[1]) for k in kinds}
    for step in step_fns.values():  # warm-up
        step()
        step()
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind, step in step_fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            rates[kind].append(steps * batch / (time.perf_counter() - t0))
    return [{"attention": a, "memory": m, "samples_per_s": statistics.median(r),
             "runs_samples_per_s": r} for (a, m), r in rates.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="nmnist-net")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--attention", nargs="+", default=["none", "sa", "asa2", "asa1"])
    p.add_argument("--memory", nargs="+", choices=MEMORY_MODES, default=["standard"],
                   help="train --memory modes to measure each network under")
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = p.parse_args()
    results = measure(args.model, args.attention, args.batch, args.steps, args.repeats, args.T,
                      tuple(args.memory))
    for r in results:
        print(f"{r['attention']:5s} {r['memory']:8s} {r['samples_per_s']:8.1f} samples/s")
    for r in results:  # against vanilla in the same memory mode
        base = next(b for b in results if b["attention"] == "none" and b["memory"] == r["memory"])
        r["overhead_vs_vanilla"] = base["samples_per_s"] / r["samples_per_s"] - 1
    report = {
        "benchmark": "train_throughput", "model": args.model, "batch": args.batch,
        "T": args.T or load_model_spec(args.model).T, "steps": args.steps, "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    for r in results:
        print(f"{r['attention']:5s} {r['memory']:8s} overhead vs vanilla: "
              f"{100 * r['overhead_vs_vanilla']:+.1f} %")


if __name__ == "__main__":
    main()
