"""Bad-input harness (issue 9): how the CLI answers corrupt files, bad arguments and data that does
not fit, recorded case by case so a fixed checkout can be compared with the original one.

Every case runs ``python -m asa_deploy.cli ...`` as a subprocess in a scratch folder this script
creates (tiny runs on ``synthetic:gesture-tiny`` with one epoch, subsets of ../shared/data copied in,
corrupted copies of the artifacts). ``--code DIR`` selects the checkout under test by prepending DIR
to PYTHONPATH, which wins over the editable install; the script checks where ``asa_deploy`` is
imported from before it starts. Per case it records the command, exit code, wall seconds, whether
stderr holds a Traceback, the last meaningful line of stderr (else stdout) and, where the command
succeeds on bad input, what it silently did (``observed``). About 4 minutes on 2 cores.

    python benchmarks/bad_inputs.py --code /tmp/asa_before \\
        --out benchmarks/results/bad_inputs_before.json --markdown benchmarks/results/bad_inputs_before.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# asa_deploy.data.EVENT_DTYPE, repeated here so the inputs do not depend on the code under test.
EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
TINY = "synthetic:gesture-tiny"
TRAIN_TINY = ("train", "--data", TINY, "--epochs", "1", "--no-progress")


def _train_tiny(*extra: str) -> tuple[str, ...]:
    """TRAIN_TINY with ``extra`` options; an --epochs in ``extra`` replaces the default one."""
    base = [a for a in TRAIN_TINY if a not in ("--epochs", "1")] if "--epochs" in extra else TRAIN_TINY
    return (*base, *extra)
_PROGRESS = re.compile(r"\d+%\||\r|it/s\]|s/it\]")

# Run by the code under test (python -c), to see what a command that did not fail made of its input.
PROBE_DATASET = """
import json, sys
import numpy as np
from asa_deploy.data import open_dataset
ds = open_dataset(sys.argv[1])
recs = []
for i in range(len(ds)):
    ev, label = ds[i]
    recs.append({"file": str(ds.sources[i]).replace("\\\\", "/").rsplit("/", 1)[-1],
                 "label": int(label), "events": int(len(ev)),
                 "p_values": sorted(int(v) for v in np.unique(ev["p"]))[:8],
                 "x_values": sorted(int(v) for v in np.unique(ev["x"]))[:4],
                 "x_max": int(ev["x"].max()) if len(ev) else None})
print(json.dumps({"sensor_size": [int(v) for v in ds.sensor_size],
                  "class_names": list(ds.class_names), "recordings": recs,
                  "skipped": [[str(s).rsplit("/", 1)[-1], w] for s, w in getattr(ds, "skipped", [])]}))
"""
PROBE_MODEL = """
import json, sys
from pathlib import Path
import torch
run = Path(sys.argv[1])
a = torch.load(run / "model.pt", weights_only=False, map_location="cpu")
tc, d = a.get("train_config", {}), a.get("data", {})
keys = ("epochs", "batch_size", "lr", "eval_windows", "T", "dt_us", "downsample", "asa_lambda",
        "params", "n_val", "attention", "model")
split = d.get("split", {})
log = run / "train_log.jsonl"
lines = log.read_text().splitlines() if log.is_file() else []
last = json.loads(lines[-1]) if lines else {}
val = a.get("metrics", {}).get("val") or {}
print(json.dumps({"train_config": {k: tc.get(k) for k in keys}, "frame_spec": d.get("frame_spec"),
                  "n_train": len(split.get("train", [])), "n_val": len(split.get("val", [])),
                  "val_accuracy_recording": val.get("accuracy_recording"),
                  "val_windows": val.get("windows"),
                  "val_recordings": val.get("recordings"),
                  "best_epoch": a.get("metrics", {}).get("best_epoch"),
                  "epochs_logged": len(lines),
                  "last_epoch_loss": last.get("loss"),
                  "last_epoch_train_samples_per_s": last.get("train_samples_per_s")},
                 default=str))
"""
# Makes the output layer's weights and bias all negative (strictly): its neurons never spike, in
# float and on the chip alike (an all-zero layer would be refused by compile), a silent network.
SILENCE_MODEL = """
import sys
from pathlib import Path
import torch
path = Path(sys.argv[1]) / "model.pt"
a = torch.load(path, weights_only=False, map_location="cpu")
w = a["weights"]
blocks = sorted({int(k.split(".")[1]) for k in w if k.startswith("blocks.") and ".synapse" in k})
last = f"blocks.{blocks[-1]}.synapse"
changed = [k for k in w if k.startswith(last) and k.rsplit(".", 1)[-1] in ("weight", "bias")]
for k in changed:
    w[k] = -w[k].abs() - 0.01
torch.save(a, path)
print(",".join(changed))
"""


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _tail_lines(text: str) -> list[str]:
    """Non-blank lines that are not progress bars (tqdm draws with carriage returns)."""
    return [ln.rstrip() for ln in text.splitlines() if ln.strip() and not _PROGRESS.search(ln)]


def _last_meaningful(stderr: str, stdout: str) -> str:
    """The last line of stderr that is not progress or an INFO/DEBUG log line, else of stdout."""
    errors = [ln for ln in _tail_lines(stderr) if not re.match(r"(INFO|DEBUG) ", ln)]
    lines = errors or _tail_lines(stdout)
    return lines[-1].strip() if lines else ""


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _events(seed: int, *, n: int = 3000, width: int = 128, height: int = 128,
            duration_us: int = 600_000) -> np.ndarray:
    """Uniform random events over the sensor and the duration, sorted by time."""
    rng = np.random.default_rng(seed)
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["t"] = np.sort(rng.integers(0, duration_us, n))
    ev["p"] = rng.integers(0, 2, n)
    ev["x"][0], ev["y"][0] = width - 1, height - 1  # the full sensor, for an inferred size
    return ev


class Harness:
    """Runs the CLI of one checkout in one scratch folder and keeps every record."""

    def __init__(self, code: Path, scratch: Path, shared: Path, timeout: float):
        self.code, self.scratch, self.shared, self.timeout = code, scratch, shared, timeout
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(code), os.environ.get("PYTHONPATH", "")) if p)
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write into the checkout under test
        self.env["NUMBA_CACHE_DIR"] = str(scratch / ".numba_cache")
        self.env.setdefault("MPLBACKEND", "Agg")
        self.setup: list[dict] = []
        self.cases: list[dict] = []
        self._fixtures: dict[str, object] = {}

    # ---- running ------------------------------------------------------------------------------

    def _display(self, argv: list[str]) -> str:
        shown = ["python" if a == sys.executable else self._hide(a) for a in argv]
        return " ".join(shown)

    def _run(self, argv: list[str]) -> dict:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=self.scratch, env=self.env, capture_output=True,
                                  text=True, timeout=self.timeout)
            rc, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            rc, timed_out = None, True
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return {"argv": argv, "command": self._display(argv), "exit_code": rc,
                "wall_s": round(time.perf_counter() - t0, 2), "timed_out": timed_out,
                "traceback": "Traceback" in err, "last_line": _last_meaningful(err, out),
                "stdout": out, "stderr": err}

    def cli(self, *args: str) -> dict:
        return self._run([sys.executable, "-m", "asa_deploy.cli", *args])

    def prepare(self, name: str, *args: str, python: str | None = None) -> dict:
        """A setup step (CLI, or ``python -c`` when ``python`` is given), kept in ``setup``."""
        argv = ([sys.executable, "-c", python, *args] if python is not None
                else [sys.executable, "-m", "asa_deploy.cli", *args])
        res = self._run(argv)
        self.setup.append({"name": name, **self._slim(res)})
        if res["exit_code"] != 0:
            print(f"  setup {name} failed ({res['exit_code']}): {res['last_line']}", flush=True)
        return res

    def probe(self, code: str, *args: str) -> dict:
        """JSON printed by ``python -c code`` under the code under test, or its error line."""
        res = self._run([sys.executable, "-c", code, *args])
        if res["exit_code"] == 0:
            try:
                return json.loads(res["stdout"].strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
        return {"probe_error": res["last_line"]}

    def _hide(self, text: str) -> str:
        return text.replace(str(self.scratch), "$SCRATCH").replace(str(self.shared), "$SHARED")

    def _slim(self, res: dict) -> dict:
        """The record as stored: tails of the outputs instead of all of them, scratch paths as
        ``$SCRATCH`` (so that two runs of the harness compare line by line)."""
        out = {k: v for k, v in res.items() if k not in ("stdout", "stderr", "argv")}
        out["last_line"] = self._hide(res["last_line"])
        out["stderr_tail"] = self._hide("\n".join(_tail_lines(res["stderr"])[-8:]))
        out["stdout_tail"] = self._hide("\n".join(_tail_lines(res["stdout"])[-12:]))
        return out

    def case(self, cid: str, title: str, *args: str, observe: Callable[[dict], dict] | None = None,
             summary: Callable[[dict, dict], str] | None = None) -> dict:
        """Run one case; ``observe(result)`` adds what the command did (mainly when it succeeded)."""
        res = self.cli(*args)
        observed = {}
        if observe is not None:
            try:
                observed = observe(res)
            except Exception as exc:  # noqa: BLE001 - an observation failing must not stop the harness
                observed = {"observe_error": f"{type(exc).__name__}: {exc}"}
        observed = json.loads(self._hide(json.dumps(observed, default=str)))
        record = {"id": cid, "title": title, **self._slim(res), "observed": observed}
        record["summary"] = self._hide(summary(record, observed)) if summary else ""
        self.cases.append(record)
        flag = " TRACEBACK" if record["traceback"] else ""
        print(f"[{cid}] exit {record['exit_code']} {record['wall_s']:.1f}s{flag}: "
              f"{(record['summary'] or record['last_line'])[:150]}", flush=True)
        return record

    # ---- scratch inputs -----------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.scratch / name

    def copy_run(self, source: str, name: str) -> Path:
        dest = self.path(name)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.path(source), dest)
        return dest

    def fixture(self, name: str) -> object:
        if name not in self._fixtures:
            self._fixtures[name] = getattr(self, f"_make_{name}")()
        return self._fixtures[name]

    def _make_base(self) -> Path:
        """One epoch on gesture-tiny, evaluated, compiled and simulated: the run most cases copy."""
        run = self.path("base")
        self.prepare("train base", *TRAIN_TINY, "--out", str(run))
        self.prepare("evaluate base", "evaluate", str(run), "--eval-windows", "2")
        self.prepare("compile base", "compile", str(run), "--bias", "drop")
        self.prepare("simulate base", "simulate", str(run), "--max-recordings", "2")
        return run

    def _make_class_names(self) -> list[str]:
        self.fixture("base")
        probe = self.probe("import json, sys, torch; a = torch.load(sys.argv[1], weights_only=False);"
                           " print(json.dumps(a['data']['class_names']))",
                           str(self.path("base") / "model.pt"))
        return probe if isinstance(probe, list) else [str(i) for i in range(6)]

    def _make_evalrun(self) -> Path:
        """A copy of base whose eval.json may be overwritten by the data cases."""
        self.fixture("base")
        return self.copy_run("base", "evalrun")

    def events_folder(self, name: str, recordings: dict[str, np.ndarray], labels: list[tuple[str, str]],
                      *, dataset_json: bool = True, bom: bool = False,
                      extra_files: dict[str, bytes] | None = None) -> Path:
        """An ``events:`` folder: .npy recordings, labels.csv (rows in the given order) and, unless
        told otherwise, a dataset.json with the 128x128 sensor and base's class names."""
        folder = self.path("data") / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, events in recordings.items():
            np.save(folder / file, events)
        for file, raw in (extra_files or {}).items():
            (folder / file).write_bytes(raw)
        text = "file,label\n" + "".join(f"{f},{lab}\n" for f, lab in labels)
        (folder / "labels.csv").write_text(text, encoding="utf-8-sig" if bom else "utf-8")
        if dataset_json:
            meta = {"sensor_size": [128, 128, 2], "class_names": self.fixture("class_names")}
            (folder / "dataset.json").write_text(json.dumps(meta))
        return folder

    def good_recordings(self, n: int = 6, seed: int = 100) -> tuple[dict, list]:
        recs = {f"rec{i}.npy": _events(seed + i) for i in range(n)}
        return recs, [(f"rec{i}.npy", str(i % 6)) for i in range(n)]

    def _make_nmnist_subset(self) -> Path:
        """Three recordings per digit of ../shared/data/nmnist-small, copied into the scratch folder."""
        src = self.shared / "nmnist-small" / "Train"
        dest = self.path("data") / "nmnist-sub"
        for digit in sorted(p for p in src.iterdir() if p.is_dir()):
            (dest / "Train" / digit.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(digit.glob("*.bin"))[:3]:
                shutil.copy2(f, dest / "Train" / digit.name / f.name)
        return dest

    def hw_config(self) -> Path:
        for root in (self.code, REPO):
            path = root / "hw_configs" / "speck2f.toml"
            if path.is_file():
                return path
        raise SystemExit("no hw_configs/speck2f.toml next to the code under test")


# ---- observations ---------------------------------------------------------------------------------

def _model_probe(h: Harness, run: Path) -> dict:
    return h.probe(PROBE_MODEL, str(run)) if (run / "model.pt").is_file() else {"model.pt": "absent"}


def _sim(run: Path) -> dict:
    sim = _json(run / "sim.json") or {}
    out = {}
    for engine, s in sim.items():
        if isinstance(s, dict):
            out[engine] = {k: s.get(k) for k in ("data", "n_windows", "accuracy_window",
                                                 "accuracy_recording", "silent_windows")}
    return out


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _train_summary(record: dict, obs: dict) -> str:
    if record["exit_code"] != 0:
        return ""
    tc = obs.get("train_config", {})
    frames = obs.get("frame_spec") or {}
    return (f"accepted: frames T={frames.get('T')} dt_us={frames.get('dt_us')} "
            f"downsample={frames.get('downsample')}; {obs.get('n_train')} train / {obs.get('n_val')} "
            f"val; {obs.get('epochs_logged')} epoch(s) logged, last loss "
            f"{_fmt(obs.get('last_epoch_loss'))} at {_fmt(obs.get('last_epoch_train_samples_per_s'))} "
            f"samples/s; val accuracy per recording {_fmt(obs.get('val_accuracy_recording'))} over "
            f"{obs.get('val_windows')} "
            f"windows; stored config {json.dumps({k: v for k, v in tc.items() if v is not None})}")


def _problems(report: object, found: list[str] | None = None) -> list[str]:
    """Every non-empty value under a key that names a warning in report.json."""
    found = [] if found is None else found
    if isinstance(report, dict):
        for key, value in report.items():
            if re.search(r"problem|warn|stale|mismatch|inconsist", key, re.I) and value:
                found.append(f"{key}: {json.dumps(value)[:300]}")
            else:
                _problems(value, found)
    elif isinstance(report, list):
        for value in report:
            _problems(value, found)
    return found


def _warning_lines(record: dict) -> list[str]:
    text = record.get("stderr_tail", "") + "\n" + record.get("stdout_tail", "")
    return [ln for ln in text.splitlines()
            if re.search(r"warn|stale|older|differ|mismatch|not made from|before", ln, re.I)]


# ---- the cases (numbered as in issue 9) -----------------------------------------------------------

def cases_1(h: Harness) -> None:
    h.fixture("base")
    recs, labels = h.good_recordings()
    other = h.events_folder("other", recs, labels)
    run = h.copy_run("base", "c1_eval_other")
    before = _json(run / "eval.json") or {}
    sha_before = _sha(run / "eval.json")

    def observe_overwrite(_res):
        after = _json(run / "eval.json") or {}
        return {"eval_json_changed": _sha(run / "eval.json") != sha_before,
                "data_before": before.get("data"), "data_after": after.get("data"),
                "accuracy_recording_before": before.get("accuracy_recording"),
                "accuracy_recording_after": after.get("accuracy_recording")}

    h.case("1.1", "evaluate RUN --data OTHER: does it overwrite the run's eval.json?",
           "evaluate", str(run), "--data", f"events:{other}", "--eval-windows", "2",
           observe=observe_overwrite,
           summary=lambda r, o: (f"eval.json {'OVERWRITTEN' if o.get('eval_json_changed') else 'kept'}: "
                                 f"data {o.get('data_before')!r} -> {o.get('data_after')!r}"))

    run = h.copy_run("base", "c1_retrain")
    artifacts = ("model.pt", "eval.json", "chip_config.json", "mapping.json", "sim.json")
    hashes = {name: _sha(run / name) for name in artifacts}
    (run / "checkpoint.pt").unlink()

    def observe_retrain(_res):
        now = {name: _sha(run / name) for name in artifacts}
        return {"model_pt_changed": now["model.pt"] != hashes["model.pt"],
                "left_from_old_model": [n for n in artifacts[1:] if now[n] and now[n] == hashes[n]],
                "removed": [n for n in artifacts if hashes[n] and not now[n]],
                "superseded": (run / "superseded").is_dir()}

    h.case("1.2", "retrain into the same folder (checkpoint.pt deleted, --seed 1): old artifacts left?",
           *TRAIN_TINY, "--seed", "1", "--out", str(run), observe=observe_retrain,
           summary=lambda r, o: (f"model.pt changed: {o.get('model_pt_changed')}; left unchanged from "
                                 f"the old model: {', '.join(o.get('left_from_old_model', [])) or 'none'}; "
                                 f"no longer in the folder: {', '.join(o.get('removed', [])) or 'none'}"
                                 + (" (moved to superseded/)" if o.get("superseded") else "")))

    def observe_report(res):
        report = _json(run / "report.json")
        return {"report_problems": _problems(report) if report else ["no report.json"]}

    h.case("1.3", "report on that retrained run: does it warn that the artifacts are stale?",
           "report", str(run), observe=observe_report,
           summary=lambda r, o: ("no warning printed" if not _warning_lines(r) else
                                 "printed: " + " / ".join(_warning_lines(r))[:200])
           + f"; report.json problems: {o.get('report_problems') or 'none'}")

    # Another model's model.pt copied over a compiled and simulated run's (no retraining there).
    swapped = h.copy_run("base", "c1_swapped")
    shutil.copy2(run / "model.pt", swapped / "model.pt")
    sim_sha = _sha(swapped / "sim.json")
    h.case("1.4", "simulate a run whose model.pt was replaced by another model's after compiling",
           "simulate", str(swapped), "--max-recordings", "2",
           observe=lambda _res: {"sim_json_rewritten": _sha(swapped / "sim.json") != sim_sha},
           summary=lambda r, o: ("" if r["exit_code"] else
                                 f"accepted: sim.json rewritten from the older model's chip config: "
                                 f"{o.get('sim_json_rewritten')}"))

    def observe_swapped_report(_res):
        report = _json(swapped / "report.json")
        return {"report_problems": _problems(report) if report else ["no report.json"]}

    h.case("1.5", "report on that run: are the older model's chip figures shown?",
           "report", str(swapped), observe=observe_swapped_report,
           summary=lambda r, o: f"report.json problems: {o.get('report_problems') or 'none'}")


def cases_2(h: Harness) -> None:
    h.fixture("base")
    size = (h.path("base") / "model.pt").stat().st_size
    rng = np.random.default_rng(2)
    corruptions = {
        "truncated": lambda raw: raw[: len(raw) // 2],
        "random": lambda raw: rng.integers(0, 256, len(raw), dtype=np.uint8).tobytes(),
        "empty": lambda raw: b"",
    }
    commands = {
        "evaluate": lambda run: ("evaluate", str(run), "--eval-windows", "2"),
        "compile": lambda run: ("compile", str(run), "--bias", "drop"),
        "export": lambda run: ("export", str(run)),
        "analyze": lambda run: ("analyze", str(run), "--max-samples", "4"),
    }
    n = 0
    for kind, corrupt in corruptions.items():
        run = h.copy_run("base", f"c2_{kind}")
        raw = (run / "model.pt").read_bytes()
        (run / "model.pt").write_bytes(corrupt(raw))
        for cmd, argv in commands.items():
            n += 1
            h.case(f"2.{n}", f"{cmd} with a {kind} model.pt ({size} bytes originally)", *argv(run))
    run = h.copy_run("base", "c2_checkpoint")
    raw = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    h.case(f"2.{n + 1}", "train (resume) with a truncated checkpoint.pt", *TRAIN_TINY,
           "--out", str(run))


def cases_3(h: Harness) -> None:
    bad_train = [
        ("--epochs", "0"), ("--epochs", "-1"), ("--batch-size", "0"), ("--batch-size", "-4"),
        ("--lr", "-1"), ("--eval-windows", "0"), ("--asa-lambda", "2", "--attention", "asa2"),
        ("--param", "c1=-5"), ("--T", "0"), ("--dt-ms", "0"), ("--downsample", "0"),
    ]
    for i, extra in enumerate(bad_train, 1):
        run = h.path(f"c3_train_{i}")
        shutil.rmtree(run, ignore_errors=True)
        h.case(f"3.{i}", "train " + " ".join(extra), *_train_tiny(*extra), "--out", str(run),
               observe=lambda res, run=run: _model_probe(h, run) if res["exit_code"] == 0 else {},
               summary=_train_summary)
    h.fixture("base")
    i = len(bad_train)
    for extra in (("--windows", "0"), ("--max-recordings", "0"), ("--max-recordings", "-1")):
        i += 1
        run = h.copy_run("base", f"c3_sim_{i}")
        (run / "sim.json").unlink(missing_ok=True)
        h.case(f"3.{i}", "simulate " + " ".join(extra), "simulate", str(run), *extra,
               observe=lambda res, run=run: {
                   **_sim(run), "validation_split_recordings": _model_probe(h, run).get("n_val")},
               summary=lambda r, o: (f"accepted: the validation split holds "
                                     f"{o.get('validation_split_recordings')} recordings; sim.json "
                                     f"{json.dumps(o.get('fast'))[:220]}"
                                     if r["exit_code"] == 0 else ""))
    run = h.copy_run("base", "c3_fold")

    def observe_fold(res):
        fold = _json(run / "fold.json") or {}
        return {"ladder": [(row.get("step"), row.get("accuracy_recording"))
                           for row in fold.get("ladder", [])],
                "calibration": {k: v for k, v in (fold.get("calibration") or {}).items()
                                if not isinstance(v, (dict, list))}}

    h.case(f"3.{i + 1}", "fold --calib-recordings 0", "fold", str(run), "--calib-recordings", "0",
           "--finetune-epochs", "0", "--eval-windows", "1", "--no-progress", observe=observe_fold,
           summary=lambda r, o: (f"accepted: calibration {o.get('calibration')}, ladder "
                                 f"{o.get('ladder')}"[:300] if r["exit_code"] == 0 else ""))


def cases_4(h: Harness) -> None:
    run = h.fixture("evalrun")
    nmnist = h.fixture("nmnist_subset")
    h.case("4.1", "evaluate a gesture-tiny run (2x32x32 input) on nmnist:<30-file subset> (34x34)",
           "evaluate", str(run), "--data", f"nmnist:{nmnist}", "--eval-windows", "2")
    h.case("4.2", "analyze the same run on the nmnist subset",
           "analyze", str(run), "--data", f"nmnist:{nmnist}", "--max-samples", "6")
    recs, labels = h.good_recordings(3, seed=400)
    wide = _events(404)
    wide["x"][len(wide) // 2] = 30000
    recs["wide.npy"] = wide
    labels.append(("wide.npy", "3"))
    folder = h.events_folder("xbig", recs, labels, dataset_json=False)
    h.case("4.3", "evaluate on an events: folder without dataset.json where one event has x = 30000",
           "evaluate", str(run), "--data", f"events:{folder}", "--eval-windows", "2",
           observe=lambda res: {"dataset_as_loaded": h.probe(PROBE_DATASET, f"events:{folder}")},
           summary=lambda r, o: (f"inferred sensor {o['dataset_as_loaded'].get('sensor_size')}, "
                                 f"skipped {o['dataset_as_loaded'].get('skipped')}; "
                                 + (r["last_line"] if r["exit_code"] else "accepted")))


def cases_5(h: Harness) -> None:
    gesture = h.shared / "dvsgesture-10"
    h.case("5.1", "models (which spec takes 128x128 / 4 = 2x32x32 input: dvs-small)", "models")
    for cid, extra in (("5.2", ()), ("5.3", ("--n-val", "0"))):
        run = h.path(f"c5_{cid}")
        shutil.rmtree(run, ignore_errors=True)
        h.case(cid, f"train --data dvsgesture:dvsgesture-10 (one clip per class) --model dvs-small "
                    f"--epochs 1 {' '.join(extra)}".strip(),
               "train", "--data", f"dvsgesture:{gesture}", "--model", "dvs-small", "--epochs", "1",
               "--eval-windows", "2", "--no-progress", *extra, "--out", str(run),
               observe=lambda res, run=run: _model_probe(h, run) if res["exit_code"] == 0 else {},
               summary=_train_summary)


def cases_6(h: Harness) -> None:
    h.fixture("base")
    run = h.copy_run("base", "c6_silent")
    for name in ("eval.json", "sim.json", "chip_config.json", "mapping.json"):
        (run / name).unlink(missing_ok=True)
    changed = h.prepare("silence model.pt (output layer all negative)", str(run),
                        python=SILENCE_MODEL)
    h.case("6.1", "evaluate a silent network (defaults; output layer's weights and bias made "
                  f"negative: {changed['stdout'].strip()})",
           "evaluate", str(run),
           observe=lambda res: {k: (_json(run / "eval.json") or {}).get(k)
                                for k in ("accuracy_window", "accuracy_recording", "nasfr",
                                          "windows", "recordings")},
           summary=lambda r, o: (f"float accuracy per window {_fmt(o.get('accuracy_window'))}, per "
                                 f"recording {_fmt(o.get('accuracy_recording'))}, NASFR "
                                 f"{_fmt(o.get('nasfr'))}, "
                                 f"{o.get('windows')} windows" if r["exit_code"] == 0 else ""))
    h.case("6.2", "compile the silent network", "compile", str(run), "--bias", "drop")
    h.case("6.3", "simulate the same silent network (compiled in 6.2; fast engine, defaults)",
           "simulate", str(run),
           observe=lambda res: _sim(run),
           summary=lambda r, o: (f"chip accuracy per window "
                                 f"{_fmt(o.get('fast', {}).get('accuracy_window'))}, per recording "
                                 f"{_fmt(o.get('fast', {}).get('accuracy_recording'))}, "
                                 f"{o.get('fast', {}).get('silent_windows')} of "
                                 f"{o.get('fast', {}).get('n_windows')} windows silent"
                                 if r["exit_code"] == 0 else ""))
    for i, cmd in enumerate(("evaluate", "simulate", "analyze", "fold", "quickstart"), 4):
        h.case(f"6.{i}", f"{cmd} --help: default windows per recording", cmd, "--help",
               observe=lambda res: {"windows_defaults": _window_defaults(res["stdout"])},
               summary=lambda r, o: f"defaults: {o.get('windows_defaults')}")


def _accuracy_line(record: dict) -> str:
    """evaluate's 'N recordings, M windows' and 'accuracy ...' lines."""
    found = [ln.strip() for ln in record["stdout_tail"].splitlines()
             if re.match(r"\s*(accuracy|.*recordings, \d+ windows)", ln)]
    return ", ".join(found) or record["last_line"]


def _window_defaults(help_text: str) -> dict[str, str]:
    text = " ".join(help_text.split())
    found = re.findall(r"(--[\w-]*windows)\s+[A-Z_]+\s+(?:.*?)\(default:\s*([^)]+)\)", text)
    return dict(found)


def cases_7(h: Harness) -> None:
    run = h.fixture("evalrun")

    def evaluate_on(cid: str, title: str, folder: Path, describe: Callable[[dict], str]) -> None:
        h.case(cid, title, "evaluate", str(run), "--data", f"events:{folder}", "--eval-windows", "2",
               observe=lambda res: {"dataset_as_loaded": h.probe(PROBE_DATASET, f"events:{folder}")},
               summary=lambda r, o: describe(o["dataset_as_loaded"]) + "; evaluate: "
               + (_accuracy_line(r) if r["exit_code"] == 0 else r["last_line"])[:160])

    def one(file: str, content: str):
        def describe(loaded: dict) -> str:
            if "probe_error" in loaded:
                return f"loading: {loaded['probe_error']}"[:160]
            rec = next((r for r in loaded.get("recordings", []) if r["file"] == file), None)
            skipped = [s for s in loaded.get("skipped", []) if s[0] == file]
            if rec is None:
                return f"{content}; {file} skipped: {skipped[0][1] if skipped else 'absent'}"[:200]
            return (f"{content}; loaded as label {rec['label']}, p values {rec['p_values']}, "
                    f"x values {rec['x_values'][:3]}...")
        return describe

    recs, labels = h.good_recordings(5, seed=700)
    bad = _events(707)
    bad["p"][::2] = 7
    recs["pol7.npy"] = bad
    folder = h.events_folder("pol7", recs, [*labels, ("pol7.npy", "1")])
    evaluate_on("7.1", "polarity 7 in half the events of one .npy (saved as EVENT_DTYPE)", folder,
                one("pol7.npy", "file: p = 7 in half its events, label 1"))

    recs, labels = h.good_recordings(5, seed=710)
    ev = _events(717)
    floaty = np.empty(len(ev), dtype=[("x", "<f8"), ("y", "<f8"), ("t", "<i8"), ("p", "<i1")])
    for name in ("y", "t", "p"):
        floaty[name] = ev[name]
    floaty["x"] = 16.5
    recs["xfloat.npy"] = floaty
    folder = h.events_folder("xfloat", recs, [*labels, ("xfloat.npy", "2")])
    evaluate_on("7.2", "x = 16.5 (float x field) in every event of one .npy", folder,
                one("xfloat.npy", "file: x = 16.5 everywhere, label 2"))

    recs, labels = h.good_recordings(6, seed=720)
    folder = h.events_folder("dup_bad", recs, [*labels, ("rec0.npy", "not_a_class")])
    evaluate_on("7.3", "rec0.npy listed twice in labels.csv: good row (0) first, bad row "
                       "('not_a_class') second", folder,
                one("rec0.npy", "rows: rec0.npy,0 then rec0.npy,not_a_class"))
    folder = h.events_folder("dup_conflict", recs, [*labels, ("rec0.npy", "3")])
    evaluate_on("7.4", "rec0.npy listed twice: label 0 first, a conflicting valid label 3 second",
                folder, one("rec0.npy", "rows: rec0.npy,0 then rec0.npy,3"))
    folder = h.events_folder("bom", recs, labels, bom=True)
    evaluate_on("7.5", "labels.csv saved with a UTF-8 BOM (Excel)", folder,
                lambda loaded: (f"{len(loaded.get('recordings', []))} recordings loaded"
                                if "probe_error" not in loaded else
                                f"loading: {loaded['probe_error']}"[:160]))


def cases_8(h: Harness) -> None:
    base = h.fixture("base")
    run = h.fixture("evalrun")
    recs, labels = h.good_recordings(5, seed=800)
    garbage = np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    folder = h.events_folder("garbage", recs, [*labels, ("garbage.npy", "0")],
                             extra_files={"garbage.npy": garbage})
    h.case("8.1", "evaluate on an events: folder holding a garbage garbage.npy (4 KiB random bytes)",
           "evaluate", str(run), "--data", f"events:{folder}", "--eval-windows", "2",
           observe=lambda res: {"dataset_as_loaded": h.probe(PROBE_DATASET, f"events:{folder}")},
           summary=lambda r, o: "; ".join(
               [f"{name} skipped ({why[:70]}...)" for name, why
                in o["dataset_as_loaded"].get("skipped", [])]
               + ["evaluate: " + (_accuracy_line(r) if r["exit_code"] == 0 else r["last_line"])]))
    h.case("8.2", "camera --replay garbage.npy", "camera", str(base), "--replay",
           str(folder / "garbage.npy"), "--json")

    def edit_chip_config(name: str, edit: Callable[[dict], None]) -> Path:
        target = h.copy_run("base", name)
        config = json.loads((target / "chip_config.json").read_text())
        edit(config)
        (target / "chip_config.json").write_text(json.dumps(config))
        (target / "sim.json").unlink(missing_ok=True)
        return target

    def weight_300(config: dict) -> None:
        config["cores"][0]["weights"][0][0][0][0] = 300

    target = edit_chip_config("c8_weight300", weight_300)
    h.case("8.3", "simulate a chip_config.json with weight 300 in an int8 weight (core 0)",
           "simulate", str(target), "--max-recordings", "2", observe=lambda res: _sim(target),
           summary=lambda r, o: (f"accepted: {json.dumps(o)[:200]}" if r["exit_code"] == 0 else ""))

    target = h.copy_run("base", "c8_unreadable")
    (target / "chip_config.json").write_bytes(b"\x00\x01 not json {")
    for name in ("fold.json", "folded.pt"):
        (target / name).unlink(missing_ok=True)

    def observe_report(res):
        report = _json(target / "report.json")
        return {"report_problems": _problems(report) if report else ["no report.json"]}

    h.case("8.4", "report on a never-folded run whose chip_config.json is unreadable",
           "report", str(target), observe=observe_report,
           summary=lambda r, o: (f"exit {r['exit_code']}; report.json problems: "
                                 f"{o.get('report_problems') or 'none'}")[:260])

    text = h.hw_config().read_text()
    variants = {
        "kernel_memory = -1": re.sub(r"(?m)^kernel_memory = .*$", "kernel_memory = -1", text),
        "kernel_memory = [-1] * 9": re.sub(r"(?m)^kernel_memory = .*$",
                                           "kernel_memory = [" + ", ".join(["-1"] * 9) + "]", text),
        "weight_bits = 0": re.sub(r"(?m)^weight_bits = .*$", "weight_bits = 0", text),
    }
    (h.path("hw")).mkdir(exist_ok=True)
    for i, (what, edited) in enumerate(variants.items(), 5):
        toml = h.path("hw") / f"speck2f_variant{i}.toml"
        toml.write_text(edited)
        h.case(f"8.{i}", f"compile --check --chip <speck2f.toml copy with {what}>",
               "compile", str(base), "--check", "--bias", "drop", "--chip", str(toml),
               summary=_check_summary)

    def speck9(config: dict) -> None:
        config["chip"] = "speck9"

    target = edit_chip_config("c8_speck9", speck9)
    h.case("8.8", 'simulate a chip_config.json whose "chip" is "speck9"', "simulate", str(target),
           "--max-recordings", "2", observe=lambda res: _sim(target),
           summary=lambda r, o: (f"accepted: {json.dumps(o)[:200]}" if r["exit_code"] == 0 else ""))


def _check_summary(record: dict, _obs: dict) -> str:
    """compile --check's violations and mapping lines (stdout), then its verdict."""
    lines = [ln.strip() for ln in record["stdout_tail"].splitlines()
             if ln.strip().startswith(("violation", "mapping:"))]
    return "; ".join([*lines[:3], record["last_line"]])


def cases_9(h: Harness) -> None:
    h.case("9.1", "baseline: train --help (interpreter start and CLI parser, no torch)", "train",
           "--help", summary=lambda r, o: f"{r['wall_s']} s to print the help")
    h.case("9.2", "baseline: models (interpreter start and torch import)", "models",
           summary=lambda r, o: f"{r['wall_s']} s to list the models")
    run = h.path("c9_nofit")
    shutil.rmtree(run, ignore_errors=True)
    h.prepare("train a model that fits no core (dvs-small --param fc=512: a 512x512 FC layer)",
              *TRAIN_TINY, "--param", "fc=512", "--out", str(run))
    h.case("9.3", "fold (defaults) a model that fits no core: time to the error", "fold", str(run),
           "--no-progress")


CASES: dict[str, Callable[[Harness], None]] = {
    "1": cases_1, "2": cases_2, "3": cases_3, "4": cases_4, "5": cases_5, "6": cases_6,
    "7": cases_7, "8": cases_8, "9": cases_9,
}
GROUPS = {
    "1": "Artifacts from different models or data mixed in one run",
    "2": "Corrupt model.pt / checkpoint.pt",
    "3": "Out-of-range arguments",
    "4": "Data that does not fit the model",
    "5": "Tiny real data: dvsgesture-10, --n-val 0",
    "6": "A silent network: float vs chip accuracy; default windows per command",
    "7": "Polarity, float coordinates, labels.csv duplicates and BOM",
    "8": "Garbage recordings, bad chip configs and hw_configs",
    "9": "Time to an error",
}


# ---- output ---------------------------------------------------------------------------------------

def _git(code: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _code_identity(code: Path) -> dict:
    """Git commit (when CODE is a checkout's root) and a hash of the sources (always)."""
    top = _git(code, "rev-parse", "--show-toplevel")
    is_root = top is not None and Path(top).resolve() == code.resolve()
    digest = hashlib.sha256()
    files = sorted([*code.glob("asa_deploy/**/*.py"), *code.glob("hw_configs/*.toml"),
                    *code.glob("models/*.yaml")])
    for f in files:
        digest.update(f.relative_to(code).as_posix().encode())
        digest.update(f.read_bytes())
    return {"git_commit": _git(code, "rev-parse", "HEAD") if is_root else None,
            "git_dirty": bool(_git(code, "status", "--porcelain")) if is_root else None,
            "sources_sha256": digest.hexdigest()[:16], "source_files": len(files)}


def _machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages: wall times are only comparable on a quiet machine."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cell(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def write_markdown(result: dict, path: Path) -> None:
    code = result["code"]
    lines = [
        f"# Bad-input harness: {code['path']}",
        "",
        f"Commit {code.get('git_commit') or 'n/a (not a git checkout)'}"
        + (" (with uncommitted changes)" if code.get("git_dirty") else "")
        + f", sources sha256 {code['sources_sha256']}; asa_deploy imported from "
          f"`{code['asa_deploy_file']}`.",
        f"Machine: {result['machine']['platform']}, Python {result['machine']['python']}, "
        f"{result['machine']['cpu_count']} CPUs, load average (1/5/15 min) "
        f"{result['machine']['load_average_start']} at the start and "
        f"{result['machine']['load_average_end']} at the end. Total {result['total_wall_s']:.0f} s. "
        "Generated by `benchmarks/bad_inputs.py`; `$SCRATCH` is the scratch folder, `$SHARED` the "
        "shared data folder (../shared/data), `python` the interpreter. Exit 2 is a handled `asa-deploy CMD: error: ...`; 1 is an uncaught exception "
        "(or a failed check); 0 means the input was accepted (what it became is in the last column).",
        "",
    ]
    setup_failed = [s for s in result["setup"] if s["exit_code"] != 0]
    if setup_failed:
        lines += ["**Setup steps that failed** (cases depending on them are not meaningful):", ""]
        lines += [f"- {s['name']}: exit {s['exit_code']}: {_cell(s['last_line'])}" for s in setup_failed]
        lines.append("")
    for group, title in GROUPS.items():
        rows = [c for c in result["cases"] if c["id"].split(".")[0] == group]
        if not rows:
            continue
        lines += [f"## {group}. {title}", "",
                  "| id | case | command | exit | s | traceback | last line of stderr (or stdout) / "
                  "what was accepted |",
                  "|---|---|---|---|---|---|---|"]
        for c in rows:
            exit_code = "timeout" if c["timed_out"] else c["exit_code"]
            shown = c["summary"] or c["last_line"]
            if c["summary"] and c["exit_code"] not in (0, None) and c["last_line"] not in shown:
                shown = f"{c['summary']} — {c['last_line']}"
            lines.append(f"| {c['id']} | {_cell(c['title'], 120)} | `{_cell(c['command'], 220)}` | "
                         f"{exit_code} | {c['wall_s']:.1f} | {'yes' if c['traceback'] else 'no'} | "
                         f"{_cell(shown, 320)} |")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=REPO,
                        help="checkout to test (prepended to PYTHONPATH)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="Markdown table")
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding nmnist-small/ and dvsgesture-10/")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="scratch folder (default: a new temporary one, deleted at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--only", nargs="*", default=None, metavar="N",
                        help="case groups to run (1-9); default all")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per command")
    parser.add_argument("--commit", default=None,
                        help="git commit to record when CODE is a copy without .git")
    args = parser.parse_args(argv)

    code = args.code.resolve()
    if not (code / "asa_deploy" / "__init__.py").is_file():
        parser.error(f"{code} holds no asa_deploy package")
    for needed in ("nmnist-small", "dvsgesture-10"):
        if not (args.shared_data / needed).is_dir():
            parser.error(f"{args.shared_data / needed} not found; pass --shared-data")
    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="asa_bad_inputs_"))).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    h = Harness(code, scratch, args.shared_data.resolve(), args.timeout)

    where = h.probe("import json, asa_deploy; print(json.dumps(asa_deploy.__file__))")
    if not isinstance(where, str) or not Path(where).resolve().is_relative_to(code):
        raise SystemExit(f"asa_deploy is not imported from {code} under PYTHONPATH: {where}")
    identity = {"path": str(code), "asa_deploy_file": where, **_code_identity(code)}
    if args.commit:
        identity["git_commit"], identity["git_commit_source"] = args.commit, "--commit"
    print(f"testing {where} in {scratch}", flush=True)

    started, load_before = time.time(), _load()
    t0 = time.perf_counter()
    for group, run_cases in CASES.items():
        if args.only is None or group in args.only:
            run_cases(h)
    result = {
        "benchmark": "bad_inputs", "code": identity,
        "machine": {**_machine(), "load_average_start": load_before, "load_average_end": _load()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "setup": h.setup, "cases": h.cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    if args.markdown:
        write_markdown(result, args.markdown)
    print(f"{len(h.cases)} cases in {result['total_wall_s']:.0f} s -> {args.out}"
          + (f", {args.markdown}" if args.markdown else ""))
    if args.scratch is None and not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"scratch folder kept: {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
