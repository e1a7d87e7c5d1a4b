"""Bring your own model, measured: a network trained briefly in sinabs (and in snnTorch and Norse,
where they are installed) on the shared N-MNIST, exported with the framework's own NIR exporter,
then `asa-deploy import`, `compile --chip speck2f` and `simulate --engine exact --whole-recordings`
on recordings held out of training. Writes JSON with the commands, the accuracies (the framework's
float network and the exact chip simulator, both on whole recordings) and the machine.

The sinabs network has the shape of SynSense's NIR-to-Speck tutorial model (the NIR paper's N-MNIST
CNN: conv 2->16 k5 s2, conv 16->16, sum-pool 2, conv 16->8, sum-pool 2, 128->256->10). snnTorch
0.9.4's exporter maps no SumPool2d, so its network average-pools (the import turns that into sum
pooling and scales the next weights by 1/4); Norse 1.1's exporter maps neither pooling nor Flatten,
so its network uses stride-2 convolutions and full-kernel convolutions instead.

    python benchmarks/import_nir.py --out benchmarks/results/import_nir.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nir
import numpy as np
import sinabs.activation as sa
import sinabs.layers as sl
import torch
import torch.nn.functional as F
from torch import nn

from asa_deploy.data import FramedDataset, FrameSpec, open_dataset, stratified_split
from asa_deploy.export.importer import complete_shapes

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nmnist-small"
FRAMES = FrameSpec(T=30, dt_us=10_000)  # training: whole recordings (~306 ms) in 30 bins


# ---- data ----------------------------------------------------------------------------------------

def held_out_folder(dataset, test_idx, folder: Path) -> str:
    """The held-out recordings as an nmnist: folder (links + labels.csv) the CLI can simulate."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in test_idx:
        source = Path(dataset.sources[int(i)])
        link = folder / f"{source.parent.name}_{source.name}"
        if not link.exists():
            link.symlink_to(source.resolve())
        rows.append(f"{link.name},{dataset.class_names[int(dataset.labels[int(i)])]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return f"nmnist:{os.path.relpath(folder, ROOT)}"


def batches(framed: FramedDataset, batch: int, rng: np.random.Generator | None):
    order = rng.permutation(len(framed)) if rng is not None else np.arange(len(framed))
    for start in range(0, len(order), batch):
        items = [framed[int(i)] for i in order[start:start + batch]]
        yield torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items])


# ---- the three frameworks --------------------------------------------------------------------------

class SinabsNet:
    name = "sinabs"

    def __init__(self, batch: int):
        def iaf():
            return sl.IAFSqueeze(batch_size=batch, min_v_mem=-1.0, spike_fn=sa.MultiSpike)

        self.net = nn.Sequential(
            nn.Conv2d(2, 16, 5, 2, 1, bias=False), iaf(),
            nn.Conv2d(16, 16, 3, 1, 1, bias=False), iaf(), sl.SumPool2d(2),
            nn.Conv2d(16, 8, 3, 1, 1, bias=False), iaf(), sl.SumPool2d(2),
            nn.Flatten(), nn.Linear(128, 256, bias=False), iaf(),
            nn.Linear(256, 10, bias=False), iaf())

    def counts(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, C, H, W] -> [B, classes]
        b, t = x.shape[:2]
        for m in self.net:
            if isinstance(m, sl.IAFSqueeze):
                m.batch_size = b
                m.reset_states()
        return self.net(x.flatten(0, 1)).reshape(b, t, -1).sum(1)

    def export(self, path: Path) -> None:
        import sinabs

        for m in self.net:
            if isinstance(m, sl.IAFSqueeze):
                m.batch_size = 1
                m.reset_states()
        graph = sinabs.to_nir(self.net, torch.rand(1, 2, 34, 34))
        with contextlib.redirect_stdout(io.StringIO()):
            graph.infer_types()  # sets Conv2d.input_shape, which nir.write needs
        nir.write(path, graph)

    # trained with min_v_mem = -spike_threshold, which the graph cannot say (NIR has no floor)
    import_options = ["--floor", "threshold"]


class SnntorchNet:
    name = "snntorch"

    def __init__(self, batch: int, beta: float = 0.95):
        import snntorch as snn

        self.snn = snn

        def leaky(**kw):
            return snn.Leaky(beta=beta, init_hidden=True, **kw)

        self.net = nn.Sequential(
            nn.Conv2d(2, 16, 5, 2, 1, bias=False), leaky(),
            nn.Conv2d(16, 16, 3, 1, 1, bias=False), leaky(), nn.AvgPool2d(2),
            nn.Conv2d(16, 8, 3, 1, 1, bias=False), leaky(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(128, 256, bias=False), leaky(),
            nn.Linear(256, 10, bias=False), leaky(output=True))
        self.beta = beta

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        from snntorch import utils

        utils.reset(self.net)
        total = 0
        for t in range(x.shape[1]):
            spikes, _mem = self.net(x[:, t])
            total = total + spikes
        return total

    def export(self, path: Path) -> None:
        from snntorch.export_nir import export_to_nir

        graph = export_to_nir(self.net, torch.zeros(1, 2, 34, 34))
        # snnTorch 0.9.4 leaves Conv2d.input_shape and Flatten's type None, and nir 1.0.4's
        # infer_types fails on its scalar Leaky parameters: fill the shapes so nir.write works
        nir.write(path, complete_shapes(graph))

    import_options: list[str] = []


class NorseNet:
    name = "norse"

    def __init__(self, batch: int):
        import norse.torch as nt

        self.net = nt.SequentialState(
            nn.Conv2d(2, 16, 5, 2, 1), nt.IAFCell(),
            nn.Conv2d(16, 16, 3, 2, 1), nt.IAFCell(),
            nn.Conv2d(16, 8, 3, 2, 1), nt.IAFCell(),
            nn.Conv2d(8, 256, 4), nt.IAFCell(),
            nn.Conv2d(256, 10, 1), nt.IAFCell())
        # Norse 1.1's exporter reads conv.bias.detach() (bias=False crashes it): zero, frozen biases
        for m in self.net.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.data.zero_()
                m.bias.requires_grad_(False)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        state, total = None, 0
        for t in range(x.shape[1]):
            out, state = self.net(x[:, t], state)
            total = total + out
        return total.flatten(1)

    def export(self, path: Path) -> None:
        import norse.torch as nt

        nir.write(path, complete_shapes(nt.to_nir(self.net, torch.zeros(1, 2, 34, 34))))

    # Norse's IAF resets to v_reset = 0; its nir 1.0.4 graph cannot say so (IF subtracts there)
    import_options = ["--reset", "zero"]


FRAMEWORKS = {"sinabs": SinabsNet, "snntorch": SnntorchNet, "norse": NorseNet}


# ---- one framework end to end -----------------------------------------------------------------------

def accuracy(model, framed: FramedDataset) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in batches(framed, 50, None):
            counts = model.counts(x)
            pred = torch.where(counts.sum(1) > 0, counts.argmax(1), -1)
            correct += int((pred == y).sum())
            total += len(y)
    return correct / total


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "asa_deploy.cli", *args], capture_output=True,
                            text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"asa-deploy {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def run_framework(name: str, dataset, train_idx, test_spec: str, test_idx, out: Path,
                  epochs: int, batch: int, seed: int, lr: float, init_gain: float) -> dict:
    torch.manual_seed(seed)
    try:
        model = FRAMEWORKS[name](batch)
    except ImportError as exc:
        return {"framework": name, "skipped": f"not installed here ({exc})"}
    train_set = FramedDataset(dataset, train_idx, FRAMES, mode="whole")
    test_set = FramedDataset(dataset, test_idx, FRAMES, mode="whole")
    with torch.no_grad():  # the same initial gain everywhere: enough spikes that every layer learns
        for m in model.net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(init_gain)
    params = [p for p in model.net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    log, start = [], time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for x, y in batches(train_set, batch, rng):
            loss = F.cross_entropy(model.counts(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        log.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                    "seconds": time.perf_counter() - start})
        print(f"{name}: epoch {epoch + 1}/{epochs} loss {log[-1]['loss']:.3f} "
              f"({log[-1]['seconds']:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - start
    float_accuracy = accuracy(model, test_set)
    nir_path = out / f"{name}.nir"
    model.export(nir_path)
    run_dir = out / name
    rel = os.path.relpath
    commands = [
        ["import", rel(nir_path, ROOT), "--out", rel(run_dir, ROOT), "--data", test_spec,
         "--T", str(FRAMES.T), "--dt-ms", str(FRAMES.dt_us / 1000), *model.import_options],
        ["compile", rel(run_dir, ROOT), "--chip", "speck2f"],
        ["simulate", rel(run_dir, ROOT), "--engine", "fast", "--whole-recordings", "--json"],
        ["simulate", rel(run_dir, ROOT), "--engine", "exact", "--whole-recordings", "--json"],
    ]
    outputs = [cli(*c) for c in commands]
    fast, sim = (json.loads(o.strip().splitlines()[-1]) for o in outputs[-2:])
    imported = torch.load(run_dir / "imported.pt", weights_only=False)["import"]
    return {
        "framework": name, "framework_version": _version(name),
        "train": {"recordings": len(train_idx), "epochs": epochs, "batch": batch, "lr": lr,
                  "init_gain": init_gain, "loss": "cross-entropy on output spike counts",
                  "frames": "whole recordings, 30 bins", "seconds": train_seconds, "log": log},
        "float_accuracy_recording": float_accuracy,  # whole recordings: one window each
        "chip_accuracy_recording_exact": sim["accuracy_recording"],
        "chip_accuracy_recording_fast": fast["accuracy_recording"],
        "test_recordings": len(test_idx), "silent_windows": sim["silent_windows"],
        "spikes_per_core": sim["spikes_per_core"]["mean"],
        "commands": ["asa-deploy " + " ".join(c) for c in commands],
        "import_notes": imported["notes"], "import_warnings": imported["warnings"],
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default="sinabs,snntorch,norse")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--init-gain", type=float, default=3.0,
                        help="initial weights x this (torch's default init fires too little)")
    parser.add_argument("--test", type=int, default=200, help="held-out recordings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "import_nir")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/import_nir.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent: this benchmark needs the shared N-MNIST")
    dataset = open_dataset(f"nmnist:{DATA}")
    train_idx, test_idx = stratified_split(dataset.labels, n_val=args.test, seed=args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    test_spec = held_out_folder(dataset, test_idx, args.work / "nmnist-heldout")
    results = [run_framework(name, dataset, train_idx, test_spec, test_idx, args.work, args.epochs,
                             args.batch, args.seed, args.lr, args.init_gain)
               for name in args.frameworks.split(",")]
    report = {"data": f"{DATA.name}: {len(train_idx)} training / {len(test_idx)} held-out "
                      f"recordings (stratified, seed {args.seed})",
              "results": results,
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": args.threads,
                          "cpus": os.cpu_count()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        if "skipped" in r:
            print(f"{r['framework']}: skipped, {r['skipped']}")
        else:
            print(f"{r['framework']}: accuracy per recording (whole recordings) float "
                  f"{r['float_accuracy_recording']:.3f}, chip (exact) "
                  f"{r['chip_accuracy_recording_exact']:.3f} on "
                  f"{r['test_recordings']} held-out recordings")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
