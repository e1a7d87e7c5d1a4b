"""Training on a GPU: vanilla against ASA, float32 against bf16 autocast, 1 and 2 torchrun ranks,
and with ``--memory standard lean`` both training memory modes (lean only with float32).

Each configuration runs the real training loop (``asa_deploy.train.train``: DataLoader workers, RCS
windows, validation, checkpoints) in a fresh process (under ``torchrun`` for 2 ranks) on synthetic
data, and reports training samples/s (median over the epochs after the first, which warms up), the
final epoch's loss, peak GPU memory per rank and, for one rank, the samples/s of the bare training
step on fixed input (forward + backward + Adam, no data pipeline), which isolates the attention's
cost. Writes JSON with the machine it ran on. Never run by the tests or CI; on a CPU it is a smoke
check (``--device cpu``, no GPU memory figures):

    python benchmarks/gpu_train.py --memory standard lean --out benchmarks/results/gpu_train.json
    python benchmarks/gpu_train.py --device cpu --model speck-tiny --param c=4 --param fc=8 \\
        --data synthetic:gesture-tiny --T 5 --epochs 2 --workers 0 --out /tmp/gpu_train_smoke.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from asa_deploy.defaults import MEMORY_MODES
from asa_deploy.errors import ComputeDeviceError
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.train import TrainConfig, train
from asa_deploy.train.accelerator import Precision, resolve_device
from asa_deploy.train.loop import per_sample_loss
from asa_deploy.train.memory import use_lean_memory

HERE = Path(__file__).resolve()


def step_rate(config: TrainConfig, device: str, steps: int, classes: int = 6) -> float:
    """Samples/s of forward + MSE + backward + Adam on fixed random events (no data pipeline)."""
    torch.manual_seed(0)
    spec = load_model_spec(config.model).with_overrides(params=config.params, T=config.T)
    net = build_network(spec, classes, config.attention).to(device)
    if config.memory == "lean":
        use_lean_memory(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    precision = Precision(device, config.amp)
    shape = (config.batch_size, spec.T, spec.input["channels"], spec.input["height"],
             spec.input["width"])
    x = (torch.rand(shape, device=device) < 0.05).float()
    labels = torch.randint(0, classes, (config.batch_size,), device=device)

    def step():
        net.reset_states()
        with precision.autocast():
            out = net(x)
        loss = per_sample_loss(out.float(), labels, "mse").mean()
        optimizer.zero_grad()
        precision.backward(loss)
        precision.step(optimizer)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up: kernels chosen, memory pools filled
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * config.batch_size / (time.perf_counter() - t0)


def run_one(config: TrainConfig, out_dir: Path, result: Path, steps: int) -> None:
    """One configuration in this process (one rank under torchrun): train, then write this rank's
    peak memory (and for a single process the bare step rate) to ``result``.rank<N>.json."""
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config.device, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                            local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    train(config, out_dir, progress=False, verbose=False)
    record = {"rank": rank, "device": device, "wall_s": time.perf_counter() - t0,
              "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and steps:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        record["step_samples_per_s"] = step_rate(config, device, steps)
        if cuda:
            record["step_peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    Path(f"{result}.rank{rank}.json").write_text(json.dumps(record))


def launch(config: TrainConfig, ranks: int, work: Path, steps: int, port: int,
           timeout_s: float) -> dict:
    """Run one configuration in fresh processes and gather its figures."""
    name = f"{config.attention}-{config.amp}-{config.memory}-{ranks}rank"
    out_dir, result = work / name, work / f"{name}.result"
    one = [str(HERE), "--one", json.dumps(config.to_dict()), "--run-dir", str(out_dir),
           "--result", str(result), "--steps", str(steps)]
    command = ([sys.executable, *one] if ranks == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                "--master_port", str(port), *one])
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    row = {"attention": config.attention, "amp": config.amp, "memory": config.memory,
           "ranks": ranks, "wall_s": time.perf_counter() - t0}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).splitlines()
        cause = [line for line in lines if "Error" in line and "ChildFailedError" not in line]
        return {**row, "error": (cause or lines or ["no output"])[-1].strip(),
                "output_tail": "\n".join(lines[-60:])}
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    rates = [r["train_samples_per_s"] for r in log[1:]] or [log[-1]["train_samples_per_s"]]
    per_rank = [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in range(ranks)]
    peaks = [r["peak_gpu_memory_bytes"] for r in per_rank]
    return {**row, "device": per_rank[0]["device"],
            "train_samples_per_s": statistics.median(rates),
            "train_samples_per_s_per_epoch": [r["train_samples_per_s"] for r in log],
            "final_loss": log[-1]["loss"], "final_val_accuracy_recording": log[-1]["val_accuracy_recording"],
            "peak_gpu_memory_bytes_per_rank": peaks if None not in peaks else None,
            "peak_rss_bytes_per_rank": [r["peak_rss_bytes"] for r in per_rank],
            "step_samples_per_s": per_rank[0].get("step_samples_per_s"),
            "step_peak_gpu_memory_bytes": per_rank[0].get("step_peak_gpu_memory_bytes")}


def machine(device: str) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": device}
    if device.startswith("cuda"):
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the default) or cpu for a smoke check")
    p.add_argument("--data", default="synthetic:gesture")
    p.add_argument("--model", default="arch-a")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--epochs", type=int, default=4, help="the first is warm-up")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (all ranks)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers per rank")
    p.add_argument("--attention", nargs="+", default=["none", "asa2"])
    p.add_argument("--amp", nargs="+", default=["off", "bf16"])
    p.add_argument("--memory", nargs="+", default=["standard"], choices=MEMORY_MODES,
                   help="train --memory modes (lean runs with --amp off only)")
    p.add_argument("--ranks", nargs="+", type=int, default=None,
                   help="process counts; default 1, and 2 when the machine has 2 GPUs")
    p.add_argument("--steps", type=int, default=20, help="bare training steps timed (0: none)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    p.add_argument("--out", default="benchmarks/results/gpu_train.json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration, one rank
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        run_one(TrainConfig.from_dict(json.loads(args.one)), Path(args.run_dir), Path(args.result),
                args.steps)
        return
    try:
        device = resolve_device(args.device)  # without a GPU: a clear error before anything runs
    except ComputeDeviceError as err:
        sys.exit(f"gpu_train.py: {err}")
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    ranks = args.ranks or ([1, 2] if gpus >= 2 else [1])
    params = {k: int(v) for k, _, v in (item.partition("=") for item in args.param)}
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_train.") as tmp:
        combos = [c for c in itertools.product(ranks, args.attention, args.amp, args.memory)
                  if c[2] == "off" or c[3] == "standard"]  # lean computes in float32
        for i, (n, attention, amp, memory) in enumerate(combos):
            config = TrainConfig(data=args.data, model=args.model, attention=attention,
                                 epochs=args.epochs, batch_size=args.batch_size, T=args.T,
                                 params=params,
                                 device=args.device if n == 1 else "cuda" if gpus else "cpu",
                                 workers=args.workers, amp=amp, memory=memory)
            row = launch(config, n, Path(tmp), args.steps, 29600 + i, args.timeout)
            results.append(row)
            shown = ("ERROR " + row["error"] if "error" in row else
                     f"{row['train_samples_per_s']:8.1f} samples/s (step only "
                     f"{row['step_samples_per_s'] or float('nan'):8.1f}), final loss "
                     f"{row['final_loss']:.4f}, peak GPU memory "
                     f"{row['peak_gpu_memory_bytes_per_rank']}")
            print(f"{n} rank(s) {attention:5s} amp {amp:4s} memory {memory:8s}: {shown}",
                  flush=True)
    for row in results:
        base = next((r for r in results if r["attention"] == "none" and r["amp"] == row["amp"]
                     and r["memory"] == row["memory"] and r["ranks"] == row["ranks"]
                     and "error" not in r), None)
        if base is not None and "error" not in row:
            row["overhead_vs_vanilla"] = base["train_samples_per_s"] / row["train_samples_per_s"] - 1
            if row["step_samples_per_s"] and base["step_samples_per_s"]:
                row["step_overhead_vs_vanilla"] = (base["step_samples_per_s"]
                                                   / row["step_samples_per_s"] - 1)
    report = {"benchmark": "gpu_train", "data": args.data, "model": args.model, "params": params,
              "T": args.T, "epochs": args.epochs, "batch_size": args.batch_size,
              "workers": args.workers, "machine": machine(device), "results": results}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
