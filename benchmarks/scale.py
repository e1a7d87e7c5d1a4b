"""asa_deploy at DVS Gesture's scale: a synthetic data set of its size on disk, then decoding, memory,
DataLoader workers and the exact chip simulator measured on it. Never run by the tests or CI.

1. **Data** (``--data-dir``, default ``runs/scale-data``, not committed): 1,342 recordings in the
   ``events:`` layout (``.npy`` structured arrays x, y, t [us], p; ``labels.csv``; ``dataset.json``
   with the 128x128x2 sensor, DVS Gesture's 11 class names and its frame spec), each about 6 s
   (uniform in 5-7 s), each at the event rate of one of the real clips in ``--real-data`` (read with
   ``open_dataset``; the figures go into the JSON) times a factor in 0.8-1.2. The events are two
   blobs on a class-specific orbit plus 10 % uniform background noise: the point is size and rate,
   not realism. ``asa_deploy.data.synthetic`` is not used: it has at most 6 classes and about 14k
   events/s. Each recording is written atomically, so an interrupted generation resumes where it
   stopped; ``scale_data.json`` marks a finished set, which later runs reuse without generating.
2. **Measurements** (``--only``; each child is a fresh process, its memory polled from ``/proc``),
   written to ``--out`` after each one, with the machine it ran on:

   - ``decode``: ``open_dataset`` with a fresh cache folder (first run: every recording decoded,
     validated and written to the cache), again on the warm cache (second run), then the time from
     launching a training process to the start of its first training step (data opened, network
     built, first batch framed) and the step's own time (arch-a at ``--T``);
   - ``rss``: peak memory of one training process and of 2 torchrun ranks (gloo on the CPU), each
     ``--steps`` steps of ``--model`` at ``--T`` with 0 workers; plus one process framing a whole
     epoch of training windows without the model (every recording read once);
   - ``workers``: training samples/s with ``--workers-list`` DataLoader workers (0, 1, 2);
   - ``sim``: ``speck-tiny`` (IAF) trained ``--sim-epochs`` on the first ``--sim-train``
     recordings, compiled for speck2f, then ``asa-deploy simulate --engine exact
     --whole-recordings`` over every recording with each of ``--jobs`` (1, 2): real-time factor
     (recorded seconds / simulation seconds) and whether every figure of the results is identical;
   - ``memory`` (only when asked): ``open_dataset`` without the cache (all of it in RAM), the
     footprint the cache removes.

The training steps are the loop of ``asa_deploy.train.loop`` (same split, windows, DataLoader,
loss, synops meter, gradient sum across ranks) cut to ``--steps`` steps, since ``asa-deploy train``
has no step limit. Time to the first step counts from the parent's launch of the process, so
Python's start and the imports are in it. The OS page cache is not dropped between runs (that needs
root), so "first run" decoding reads recordings the generator has just written, when RAM holds them.

    python benchmarks/scale.py                       # everything, DVS Gesture's size (hours)
    python benchmarks/scale.py --recordings 24 --steps 3 --batch-size 4 --sim-train 22 \\
        --data-dir /tmp/scale-data --work-dir /tmp/scale-work --out /tmp/scale.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from asa_deploy import cli_args, io
from asa_deploy.data.datasets import GESTURE_CLASSES, GESTURE_FRAME
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.defaults import MEMORY_MODES

HERE = Path(__file__).resolve()
MARKER = "scale_data.json"  # written last: the data set is complete
PARAMS = "scale_params.json"  # written first: what is being generated (to resume, or to refuse)
MEASUREMENTS = ("decode", "rss", "workers", "sim", "memory")
DEFAULT_ONLY = "decode,rss,workers,sim"
SENSOR = (128, 128, 2)
NOISE_SHARE = 0.1
TIMING_KEYS = ("wall_seconds", "events_per_second", "synops_per_second", "jobs", "provenance",
               "file")


# ---------------------------------------------------------------------------------------------
# The data set


def real_rates(spec: str) -> dict:
    """Event rates of the real clips in ``spec``, read as asa_deploy reads them."""
    from asa_deploy.data import open_dataset

    dataset = open_dataset(spec)
    counts, spans = [], []
    for i in range(len(dataset)):
        events, _ = dataset[i]
        counts.append(len(events))
        spans.append((int(events["t"][-1]) - int(events["t"][0]) + 1) / 1e6)
    rates = [c / s for c, s in zip(counts, spans, strict=True)]
    return {"spec": spec, "clips": len(rates), "events": int(sum(counts)),
            "seconds": round(sum(spans), 6), "events_per_s": sum(counts) / sum(spans),
            "per_clip_events_per_s": [round(r) for r in rates]}


def synth_recording(index: int, seed: int, rates: list[int], duration_s: float) -> tuple[np.ndarray, int]:
    """Recording ``index``: two blobs on an orbit whose speed and shape depend on the class, plus
    uniform background noise; the class is ``index`` mod 11. Depends only on (seed, index)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    label = index % len(GESTURE_CLASSES)
    duration_us = int(rng.uniform(duration_s - 1, duration_s + 1) * 1e6)
    rate = float(rates[rng.integers(len(rates))]) * rng.uniform(0.8, 1.2)
    n = max(1, int(rate * duration_us / 1e6))
    t = np.sort(rng.integers(0, duration_us, n))
    omega = 2 * np.pi * (0.4 + 0.15 * label) * (1 if label % 2 else -1)
    centre = 64 + rng.normal(0, 6, 2)
    angle = omega * t / 1e6 + rng.uniform(0, 2 * np.pi) + np.pi * rng.integers(0, 2, n)
    x = centre[0] + (14 + 2.5 * label) * np.cos(angle) + rng.normal(0, 5, n)
    y = centre[1] + (10 + 1.5 * label) * np.sin(angle) + rng.normal(0, 5, n)
    noise = rng.random(n) < NOISE_SHARE
    x[noise] = rng.uniform(0, SENSOR[0], int(noise.sum()))
    y[noise] = rng.uniform(0, SENSOR[1], int(noise.sum()))
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["x"] = np.clip(x, 0, SENSOR[0] - 1)
    events["y"] = np.clip(y, 0, SENSOR[1] - 1)
    events["t"] = t
    events["p"] = rng.integers(0, 2, n)
    return events, label


def generate(data_dir: Path, n: int, seed: int, rates: list[int], duration_s: float) -> dict:
    """Write (or finish writing) the data set; returns what ``MARKER`` records."""
    params = {"recordings": n, "seed": seed, "duration_s": duration_s, "rates": rates,
              "generator": 1}
    marker, started = data_dir / MARKER, data_dir / PARAMS
    for path in (marker, started):
        if path.exists():
            found = json.loads(path.read_text())
            if found.get("params", found) != params:
                raise SystemExit(
                    f"scale.py: {path} describes another data set ({found.get('params', found)}), "
                    f"not {params}; pass another --data-dir, or delete {data_dir}")
    if marker.exists():
        return json.loads(marker.read_text())
    io.write_json(started, params)
    t0 = time.perf_counter()
    rows, events_total, seconds_total, made = [], 0, 0.0, 0
    for i in range(n):
        path = data_dir / f"rec{i:05d}.npy"
        if path.exists():  # written atomically by an earlier, interrupted run
            events = np.load(path, mmap_mode="r")
            label = i % len(GESTURE_CLASSES)
        else:
            events, label = synth_recording(i, seed, rates, duration_s)
            with io.atomic_output(path, durable=False) as tmp, open(tmp, "wb") as f:
                np.save(f, events)
            made += 1
        rows.append(f"{path.name},{label}\n")
        events_total += len(events)
        seconds_total += (int(events["t"][-1]) - int(events["t"][0]) + 1) / 1e6
        if (i + 1) % 100 == 0:
            print(f"  generated {i + 1}/{n} recordings", flush=True)
    io.write_text(data_dir / "labels.csv", "file,label\n" + "".join(rows))
    io.write_json(data_dir / "dataset.json", {
        "sensor_size": list(SENSOR), "class_names": GESTURE_CLASSES,
        "frame_spec": {"T": GESTURE_FRAME.T, "dt_us": GESTURE_FRAME.dt_us,
                       "downsample": GESTURE_FRAME.downsample}})
    facts = {"params": params, "recordings": n, "events": events_total,
             "recorded_seconds": seconds_total, "events_per_s": events_total / seconds_total,
             "bytes": folder_bytes(data_dir), "generated_now": made,
             "generate_seconds": time.perf_counter() - t0}
    io.write_json(marker, facts)
    return facts


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def training_subset(data_dir: Path, folder: Path, n: int) -> str:
    """An ``events:`` folder of the first ``n`` recordings (links), so the simulated network is
    trained on few recordings and then simulated on all of them as other data."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rows = (data_dir / "labels.csv").read_text().splitlines()
    for row in rows[1:n + 1]:
        name = row.split(",")[0]
        (folder / name).symlink_to((data_dir / name).resolve())
    (folder / "labels.csv").write_text("\n".join(rows[:n + 1]) + "\n")
    shutil.copy(data_dir / "dataset.json", folder / "dataset.json")
    return f"events:{folder}"


# ---------------------------------------------------------------------------------------------
# Memory of a process tree


def _proc_kb(pid: int | str, name: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/{name}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0]) * 1024
    return out


def own_memory() -> dict:
    """This process's resident memory now (anonymous, file-backed) and its peak (VmHWM)."""
    try:
        m = _proc_kb("self", "status", ("VmRSS", "VmHWM", "RssAnon", "RssFile"))
    except OSError:
        return {}
    return {"rss": m.get("VmRSS"), "peak_rss": m.get("VmHWM"), "anon": m.get("RssAnon"),
            "file": m.get("RssFile")}


class TreeMemory(threading.Thread):
    """Polls ``/proc`` for a process and its descendants: each one's peak RSS and PSS, and the peak
    of their sum at any instant, per role (launcher above the ranks, ranks, DataLoader or simulator
    workers below them). PSS splits shared pages (libraries, the cache's mapped files) between the
    processes that map them, so summed PSS does not count them twice as summed RSS does."""

    def __init__(self, root: int, rank_depth: int = 0, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.rank_depth, self.interval = root, rank_depth, interval
        self.per_pid: dict[int, dict] = {}
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def role(self, depth: int) -> str:
        return ("launcher" if depth < self.rank_depth else "rank" if depth == self.rank_depth
                else "worker")

    def tree(self) -> dict[int, int]:
        parents = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        depth, frontier = {self.root: 0}, [self.root]
        while frontier:
            frontier = [p for p, q in parents.items() if q in frontier and p not in depth]
            for p in frontier:
                depth[p] = depth[parents[p]] + 1
        return depth

    def sample(self) -> None:
        sums: dict[str, int] = {}
        for pid, depth in self.tree().items():
            try:
                status = _proc_kb(pid, "status", ("VmRSS", "RssAnon", "RssFile"))
                pss = _proc_kb(pid, "smaps_rollup", ("Pss",)).get("Pss", 0)
            except OSError:
                continue
            rss, role = status.get("VmRSS", 0), self.role(depth)
            mine = self.per_pid.setdefault(pid, {"pid": pid, "role": role, "peak_rss_bytes": 0,
                                                 "peak_pss_bytes": 0})
            if rss > mine["peak_rss_bytes"]:
                mine.update(peak_rss_bytes=rss, anon_bytes_at_peak=status.get("RssAnon"),
                            file_bytes_at_peak=status.get("RssFile"))
            mine["peak_pss_bytes"] = max(mine["peak_pss_bytes"], pss)
            for group in {role, "all", *(("ranks_and_workers",) if role != "launcher" else ())}:
                sums[f"{group}_rss"] = sums.get(f"{group}_rss", 0) + rss
                sums[f"{group}_pss"] = sums.get(f"{group}_pss", 0) + pss
        for key, value in sums.items():
            self.peaks[key] = max(self.peaks.get(key, 0), value)
        self.samples += 1

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        return {"samples": self.samples, "interval_s": self.interval,
                "peak_sum_bytes": dict(sorted(self.peaks.items())),
                "per_process": sorted(self.per_pid.values(), key=lambda r: r["pid"])}


def run_child(name: str, command: list[str], logs: Path, *, rank_depth: int = 0,
              timeout: float | None = None) -> dict:
    """Run ``command`` in a fresh process (its output to ``logs/NAME.log``), polling its memory."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launched = time.time()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        memory = TreeMemory(child.pid, rank_depth)
        memory.start()
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, 9)  # the child's own session: this child and its descendants
            code = child.wait()
    row = {"command": " ".join(command), "log": str(log), "returncode": code,
           "wall_s": time.time() - launched, "launched_at": launched, "memory": memory.stop()}
    if code != 0:
        row["error_tail"] = log.read_text(errors="replace").splitlines()[-25:]
        print(f"  {name}: FAILED (exit {code}); see {log}", flush=True)
    return row


# ---------------------------------------------------------------------------------------------
# Children (run in fresh processes)


def child_open(spec: dict) -> None:
    from asa_deploy.data import open_dataset

    imported = time.time()
    dataset = open_dataset(spec["data"], cache=spec["cache"])
    opened = time.time()
    Path(spec["result"]).write_text(json.dumps({
        "import_s": imported - spec["launched_at"], "open_s": opened - imported, "recordings": len(dataset),
        "skipped": len(dataset.skipped), "memory": own_memory()}))


def child_train(spec: dict) -> None:
    """``spec["steps"]`` steps of the training loop (``asa_deploy.train.loop._train``'s body) on
    one rank, or with ``spec["frames_only"]`` one epoch of training windows framed, no model."""
    import torch

    from asa_deploy.train import distributed as D
    from asa_deploy.train.accelerator import Precision
    from asa_deploy.train.config import TrainConfig
    from asa_deploy.train.cost import CostMeter
    from asa_deploy.train.loop import prepare, train_loader, train_step
    from asa_deploy.train.memory import apply_memory_mode

    marks = {"imported": time.time()}
    config = TrainConfig(data=spec["data"], model=spec["model"], attention=spec["attention"],
                         epochs=1, batch_size=spec["batch_size"], T=spec["T"],
                         workers=spec["workers"], device=spec["device"], memory=spec["memory"])
    group = D.init_from_env(config.device)
    precision = Precision(group.device, config.amp)
    prepared = prepare(config, cache=spec["cache"])
    marks["prepared"] = time.time()
    memory = {"after_prepare": own_memory()}
    model = prepared.model.to(group.device)
    if group.world_size > 1:
        D.use_global_batch_norm(model)
    apply_memory_mode(model, config.memory)  # as train does
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    meter = CostMeter(model)
    pin = group.device.startswith("cuda")
    epoch_batches, loader = train_loader(prepared.train_set, config, group, pin,
                                         limit=None if spec["frames_only"] else spec["steps"])
    batches, shards = epoch_batches.batches, epoch_batches.shards
    n_train, batch = epoch_batches.n_train, epoch_batches.batch
    done, losses = [], []
    model.train()
    for global_batch, (start, stop), (frames, labels, _) in zip(batches, shards, loader, strict=True):
        marks.setdefault("first_batch", time.time())  # framed and collated: the step starts
        if not spec["frames_only"]:
            loss, _, _ = train_step(model, meter, optimizer, precision, group, config, frames,
                                    labels, len(global_batch), start, stop, pin)
            losses.append(float(D.sum_tensor(loss.detach().cpu().double(), group)))
        done.append(time.time())
        if len(done) == 1:
            memory["after_first_step"] = own_memory()
    memory["end"] = own_memory()
    import resource

    steady = ((len(done) - 1) * batch / (done[-1] - done[0])) if len(done) > 1 else None
    record = {"rank": group.rank, "world_size": group.world_size, "device": group.device,
              "torch_threads": torch.get_num_threads(), "train_recordings": n_train,
              "global_batch": batch, "steps": len(done), "first_step_done_at": done[0] if done else None,
              "import_s": marks["imported"] - spec["launched_at"],
              "prepare_s": marks["prepared"] - marks["imported"],
              "first_batch_s": marks["first_batch"] - marks["prepared"] if done else None,
              "launch_to_first_batch_s": marks["first_batch"] - spec["launched_at"] if done else None,
              "first_step_s": done[0] - marks["first_batch"] if done else None,
              "samples_per_s_after_first": steady,
              "samples_per_s_all": len(done) * batch / (done[-1] - marks["prepared"]) if done else None,
              "losses": losses, "memory": memory,
              "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    D.barrier(group)
    D.shutdown(group)
    Path(f"{spec['result']}.rank{group.rank}.json").write_text(json.dumps(record))


# ---------------------------------------------------------------------------------------------
# Measurements


class Bench:
    def __init__(self, args, data_spec: str):
        self.args, self.data = args, data_spec
        self.work = Path(args.work_dir).resolve()
        self.cache = self.work / "cache"
        self.logs = self.work / "logs"
        self.results = self.work / "results"

    def child(self, mode: str, name: str, spec: dict, *, ranks: int = 1) -> tuple[dict, list[dict]]:
        """A child of this script; returns its process row and its per-rank results."""
        self.results.mkdir(parents=True, exist_ok=True)
        result = self.results / name
        for old in self.results.glob(f"{name}.rank*.json"):
            old.unlink()
        spec = {**spec, "result": str(result), "launched_at": time.time()}
        own = [str(HERE), "--child", mode, "--child-spec", json.dumps(spec)]
        if ranks == 1:
            command = [sys.executable, *own]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                       str(ranks), "--master_addr", "127.0.0.1", "--master_port", str(port), *own]
        row = run_child(name, command, self.logs, rank_depth=0 if ranks == 1 else 1,
                        timeout=self.args.timeout)
        if mode == "open":
            path = Path(result)
            return row, [json.loads(path.read_text())] if row["returncode"] == 0 else []
        ranks_out = [json.loads(p.read_text()) for p in sorted(self.results.glob(f"{name}.rank*.json"))]
        for r in ranks_out:
            if r.get("first_step_done_at"):
                r["launch_to_first_step_s"] = r["first_step_done_at"] - spec["launched_at"]
        return row, ranks_out

    def open_data(self, name: str, cache: str | None) -> dict:
        row, out = self.child("open", name, {"data": self.data, "cache": cache})
        return {**(out[0] if out else {}), "process": row}

    def train(self, name: str, workers: int, *, ranks: int = 1, frames_only: bool = False,
              steps: int | None = None) -> dict:
        a = self.args
        spec = {"data": self.data, "cache": str(self.cache), "model": a.model,
                "attention": a.attention, "T": a.T, "batch_size": a.batch_size,
                "steps": steps or a.steps, "workers": workers, "device": a.device,
                "memory": a.memory, "frames_only": frames_only}
        row, out = self.child("train", name, spec, ranks=ranks)
        return {"ranks": ranks, "workers": workers, "per_rank": out, "process": row}

    def warm_cache(self) -> dict:
        """Decode into the cache once (not measured) when ``decode`` did not run first."""
        return self.open_data("warm-cache", str(self.cache))

    def decode(self) -> dict:
        if self.cache.exists():
            shutil.rmtree(self.cache)
        first = self.open_data("decode-first", str(self.cache))
        second = self.open_data("decode-second", str(self.cache))
        to_step = self.train("first-step", 0, steps=1)
        step = to_step["per_rank"][0] if to_step["per_rank"] else {}
        out = {"first_run": first, "second_run": second, "cache_bytes": folder_bytes(self.cache),
               "second_run_to_first_step": to_step,
               "summary": {"first_run_decode_s": first.get("open_s"),
                           "second_run_open_s": second.get("open_s"),
                           "second_run_launch_to_first_batch_s": step.get("launch_to_first_batch_s"),
                           "of_which_import_s": step.get("import_s"),
                           "of_which_prepare_s": step.get("prepare_s"),
                           "of_which_first_batch_s": step.get("first_batch_s"),
                           "first_step_compute_s": step.get("first_step_s"),
                           "second_run_launch_to_first_step_done_s": step.get("launch_to_first_step_s")}}
        print(f"  decode: first run {first.get('open_s', float('nan')):.1f} s, second run open "
              f"{second.get('open_s', float('nan')):.2f} s; a training process starts its first step "
              f"{step.get('launch_to_first_batch_s', float('nan')):.1f} s after its launch and ends it "
              f"{step.get('first_step_s', float('nan')):.1f} s later", flush=True)
        return out

    def memory(self) -> dict:
        out = self.open_data("open-no-cache", None)
        print(f"  memory: no cache, peak RSS {mib(out['process']['memory']['peak_sum_bytes'].get('all_rss'))}",
              flush=True)
        return out

    def rss(self) -> dict:
        one = self.train("rss-1rank", 0)
        two = self.train("rss-2ranks", 0, ranks=2)
        frames = self.train("rss-frames-epoch", 0, frames_only=True)
        peak1 = one["process"]["memory"]["peak_sum_bytes"]
        peak2 = two["process"]["memory"]["peak_sum_bytes"]
        per_rank = [r["ru_maxrss_bytes"] for r in two["per_rank"]]
        summary = {
            "one_process_peak_rss_bytes": peak1.get("rank_rss"),
            "one_process_peak_pss_bytes": peak1.get("rank_pss"),
            "one_process_rss_after_prepare_bytes": _get(one, "after_prepare", "rss"),
            "two_ranks_peak_rss_sum_bytes": peak2.get("rank_rss"),
            "two_ranks_peak_pss_sum_bytes": peak2.get("rank_pss"),
            "two_ranks_peak_rss_per_rank_bytes": per_rank,
            "two_ranks_rss_sum_over_one": _ratio(peak2.get("rank_rss"), peak1.get("rank_rss")),
            "two_ranks_pss_sum_over_one": _ratio(peak2.get("rank_pss"), peak1.get("rank_pss")),
            "launcher_peak_rss_bytes": peak2.get("launcher_rss"),
            "frames_epoch_peak_rss_bytes": frames["process"]["memory"]["peak_sum_bytes"].get("rank_rss"),
            "frames_epoch_samples_per_s": _first(frames, "samples_per_s_all"),
        }
        print(f"  rss: 1 process {mib(summary['one_process_peak_rss_bytes'])} (after opening the "
              f"data {mib(summary['one_process_rss_after_prepare_bytes'])}), 2 ranks "
              f"{mib(summary['two_ranks_peak_rss_sum_bytes'])} ({[mib(v) for v in per_rank]}), "
              f"a whole epoch framed {mib(summary['frames_epoch_peak_rss_bytes'])}", flush=True)
        return {"one_process": one, "two_ranks": two, "frames_epoch": frames, "summary": summary}

    def workers(self) -> dict:
        rows = [self.train(f"workers-{w}", w) for w in self.args.workers_list]
        summary = [{"workers": r["workers"], "samples_per_s_after_first":
                    _first(r, "samples_per_s_after_first"),
                    "samples_per_s_all": _first(r, "samples_per_s_all"),
                    "peak_rss_with_workers_bytes":
                        r["process"]["memory"]["peak_sum_bytes"].get("ranks_and_workers_rss"),
                    "peak_pss_with_workers_bytes":
                        r["process"]["memory"]["peak_sum_bytes"].get("ranks_and_workers_pss")}
                   for r in rows]
        for s in summary:
            print(f"  workers {s['workers']}: {s['samples_per_s_after_first'] or float('nan'):.2f} "
                  f"samples/s after the first step ({s['samples_per_s_all'] or float('nan'):.2f} "
                  f"with it)", flush=True)
        return {"runs": rows, "summary": summary}

    def sim(self, recorded_s: float) -> dict:
        a = self.args
        run = self.work / "sim-run"
        if run.exists():
            shutil.rmtree(run)
        subset = training_subset(Path(a.data_dir), self.work / "sim-train-data", a.sim_train)
        cli = [sys.executable, "-m", "asa_deploy.cli"]
        cache = ["--cache-dir", str(self.cache)]
        steps = {
            "sim-train": [*cli, "train", "--data", subset, *cache, "--model", "speck-tiny",
                          "--epochs", str(a.sim_epochs), "--out", str(run), "--no-progress",
                          "--device", "cpu"],
            "sim-compile": [*cli, "compile", str(run), "--chip", "speck2f", "--bias", "drop", *cache],
        }
        out: dict = {"trained_on": subset, "simulated": self.data}
        for name, command in steps.items():
            out[name] = run_child(name, command, self.logs, timeout=a.timeout)
            if out[name]["returncode"] != 0:
                return out
        runs, first = [], None
        for jobs in a.jobs:
            name = f"sim-jobs{jobs}"
            row = run_child(name, [*cli, "simulate", str(run), "--data", self.data, *cache,
                                   "--engine", "exact", "--whole-recordings", "--jobs", str(jobs),
                                   "--json"], self.logs, timeout=a.timeout)
            if row["returncode"] != 0:
                runs.append({"jobs": jobs, "process": row})
                continue
            summary = last_json(Path(row["log"]))
            shutil.copy(summary["file"], self.work / f"{name}.json")
            figures = {k: v for k, v in summary.items() if k not in TIMING_KEYS}
            first = first or figures
            entry = {"jobs": jobs, "simulate_wall_seconds": summary["wall_seconds"],
                     "real_time_factor": recorded_s / summary["wall_seconds"],
                     "process_wall_s": row["wall_s"],
                     "real_time_factor_whole_command": recorded_s / row["wall_s"],
                     "identical_to_first": figures == first,
                     "differing": sorted(k for k in figures if figures[k] != first.get(k)),
                     "peak_rss_sum_bytes": row["memory"]["peak_sum_bytes"].get("all_rss"),
                     "peak_pss_sum_bytes": row["memory"]["peak_sum_bytes"].get("all_pss"),
                     "sim_json": str(self.work / f"{name}.json"), "process": row}
            if runs and "simulate_wall_seconds" in runs[0]:
                entry["speedup_over_first"] = runs[0]["simulate_wall_seconds"] / entry["simulate_wall_seconds"]
            runs.append(entry)
            print(f"  simulate --jobs {jobs}: {entry['simulate_wall_seconds']:.1f} s, real-time factor "
                  f"{entry['real_time_factor']:.2f}, x{entry.get('speedup_over_first', 1.0):.2f}, "
                  f"{'identical' if entry['identical_to_first'] else 'DIFFERS: ' + str(entry['differing'])}, "
                  f"peak RSS {mib(entry['peak_rss_sum_bytes'])} (all processes)", flush=True)
        out.update(recorded_seconds=recorded_s, runs=runs,
                   summary={"n_windows": (first or {}).get("n_windows"),
                            "accuracy": (first or {}).get("accuracy"),
                            "identical": all(r.get("identical_to_first") for r in runs)})
        return out


def last_json(log: Path) -> dict:
    """The JSON object ``simulate --json`` printed (its last line that is one)."""
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise SystemExit(f"scale.py: {log} holds no JSON result of asa-deploy simulate --json")


def _first(row: dict, key: str):
    return row["per_rank"][0].get(key) if row["per_rank"] else None


def _get(row: dict, when: str, key: str):
    return row["per_rank"][0]["memory"].get(when, {}).get(key) if row["per_rank"] else None


def _ratio(a, b):
    return a / b if a and b else None


def mib(value) -> str:
    return "?" if value is None else f"{value / 2**20:,.0f} MiB"


def machine() -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=HERE.parent).stdout.strip() or None
    except OSError:
        commit = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_at_start": list(os.getloadavg()), "git_commit": commit}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=cli_args.out_dir, default=Path("runs/scale-data"),
                   help="where the synthetic data set is (or goes)")
    p.add_argument("--work-dir", type=cli_args.out_dir, default=Path("runs/scale-work"),
                   help="cache, run folders, child logs (the cache is emptied by 'decode')")
    p.add_argument("--out", type=cli_args.out_file, default=Path("benchmarks/results/scale.json"))
    p.add_argument("--only", default=DEFAULT_ONLY,
                   help=f"comma-separated measurements out of {','.join(MEASUREMENTS)}; 'none': "
                        "generate the data only")
    p.add_argument("--recordings", type=cli_args.positive_int, default=1342)
    p.add_argument("--duration-s", type=cli_args.positive_float, default=6.0,
                   help="mean recording length (uniform within +-1 s)")
    p.add_argument("--real-data", default="dvsgesture:../shared/data/dvsgesture-10",
                   help="real recordings whose event rates the data set copies")
    p.add_argument("--rate", type=cli_args.positive_float, default=None,
                   help="events/s instead of measuring --real-data")
    p.add_argument("--seed", type=cli_args.seed, default=0)
    p.add_argument("--model", default="arch-a", help="network of the rss and workers steps")
    p.add_argument("--attention", default="none", help="none, sa, asa1 or asa2")
    p.add_argument("--T", type=cli_args.positive_int, default=60)
    p.add_argument("--batch-size", type=cli_args.positive_int, default=16,
                   help="global batch; on the CPU a step's activations dominate the peak RSS")
    p.add_argument("--steps", type=cli_args.positive_int, default=5,
                   help="training steps per process (the first is timed apart)")
    p.add_argument("--device", type=cli_args.torch_device, default="cpu",
                   help="where the training steps compute (cuda: activations leave the host RSS)")
    p.add_argument("--memory", choices=MEMORY_MODES, default="standard",
                   help="train --memory of the rss and workers steps")
    p.add_argument("--workers-list", type=cli_args.non_negative_int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=cli_args.positive_int, nargs="+", default=[1, 2])
    p.add_argument("--sim-train", type=cli_args.positive_int, default=110,
                   help="recordings the simulated speck-tiny is trained on")
    p.add_argument("--sim-epochs", type=cli_args.positive_int, default=1)
    p.add_argument("--timeout", type=cli_args.positive_float, default=4 * 3600,
                   help="seconds per child process")
    p.add_argument("--child", choices=("open", "train"), help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        (child_open if args.child == "open" else child_train)(json.loads(args.child_spec))
        return 0
    only = [] if args.only == "none" else [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [m for m in only if m not in MEASUREMENTS]
    if unknown:
        p.error(f"--only: unknown {unknown}; use some of {','.join(MEASUREMENTS)} or none")

    started = time.time()
    report: dict = {"benchmark": "scale", "machine": machine(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        if not k.startswith("child")}}
    if args.rate is not None:
        rates = [round(args.rate)]
        report["rate_source"] = {"given_events_per_s": args.rate}
    else:
        measured = real_rates(args.real_data)
        rates = measured["per_clip_events_per_s"]
        report["rate_source"] = measured
        print(f"real rate: {measured['events_per_s']:,.0f} events/s over {measured['clips']} clips "
              f"of {args.real_data}", flush=True)
    data_dir = Path(args.data_dir)
    print(f"data set: {args.recordings} recordings in {data_dir}", flush=True)
    report["data"] = generate(data_dir, args.recordings, args.seed, rates, args.duration_s)
    report["data"]["spec"] = data_spec = f"events:{data_dir}"
    print(f"  {report['data']['events']:,} events, {report['data']['recorded_seconds']:,.0f} s, "
          f"{report['data']['events_per_s']:,.0f} events/s, {report['data']['bytes'] / 1e9:.2f} GB",
          flush=True)

    def save() -> None:
        report["total_wall_s"] = time.time() - started
        io.write_json(args.out, report)

    bench = Bench(args, data_spec)
    save()
    if only and "decode" not in only:
        report["cache_warmup"] = bench.warm_cache()
    for name in only:
        print(f"{name} ...", flush=True)
        t0 = time.time()
        if name == "sim":
            report[name] = bench.sim(report["data"]["recorded_seconds"])
        else:
            report[name] = getattr(bench, name)()
        report[name]["measurement_wall_s"] = time.time() - t0
        save()
    report["cache_bytes"] = folder_bytes(bench.cache)
    save()
    print(f"wrote {args.out} ({time.time() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
