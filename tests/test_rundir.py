"""The run directory (asa_deploy/rundir.py): one table names every artifact, retraining moves all of
them aside, one command writes into a run directory at a time, and an unwritable one is refused
before the work, while a write that fails after it still prints the results."""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asa_deploy import rundir
from asa_deploy.cli import main
from asa_deploy.data import open_dataset
from asa_deploy.pipeline import compile_run
from asa_deploy.train import TrainConfig, train

PACKAGE = Path(rundir.__file__).parent
ROOT = PACKAGE.parent
TINY = dict(data="synthetic:gesture-tiny", model="speck-tiny", T=5, batch_size=4, eval_windows=2,
            seed=0, params={"c": 4, "fc": 8}, attention="none")
CLI_TINY = ["--data", "synthetic:gesture-tiny", "--model", "speck-tiny", "--T", "5",
            "--batch-size", "4", "--eval-windows", "2", "--param", "c=4", "--param", "fc=8",
            "--no-progress"]
# File names modules may spell out: none of them lies in a run directory.
NOT_IN_A_RUN = {
    "quickstart.json": "quickstart's folder, above its two runs",
    "index.json": "the decoded-event cache's index",
    "dataset.json": "a data folder's description (read)",
    "asa_deploy.nir": "a format tag inside NIR metadata",
    "A.npz": "compare's metavar", "B.npz": "compare's metavar",
    "spike_features.png": "inside figures/", "t_sfr.png": "inside figures/",
    "mpd.png": "inside figures/", "layer_sfr.png": "inside figures/",
}
ARTIFACT_NAME = re.compile(r"^[\w.\-*]+\.(json|jsonl|pt|npz|npy|png|nir|md|html)$")


# ---- the table -------------------------------------------------------------------------------------

def _named_files(path: Path) -> set[str]:
    """Every string literal of ``path`` that is a whole file name of an artifact's kind."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and ARTIFACT_NAME.match(node.value)}


def test_only_the_table_spells_out_a_run_file_name():
    """A stage that wrote a file the table lacks would spell its name out: none does, so retraining
    (which moves what the table names) misses nothing."""
    stray = {f"{path.relative_to(ROOT)}: {name}" for path in PACKAGE.rglob("*.py")
             if path.name != "rundir.py" for name in _named_files(path) - set(NOT_IN_A_RUN)}
    assert stray == set()
    in_table = {name for a in rundir.ARTIFACTS for name in a.patterns}
    assert _named_files(PACKAGE / "rundir.py") - in_table <= {rundir.LOCK}
    assert not set(NOT_IN_A_RUN) & in_table


def _examples(entry: rundir.Artifact) -> list[str]:
    """A name of each kind ``entry`` stands for: itself and the per-data variant a stage makes."""
    if entry.name == rundir.COMPARE_JSON:
        return [rundir.compare_json(Path("monitor.npz"), Path("monitor-exact.npz")).name]
    names = [entry.name]
    if entry.per_data:
        names.append(rundir.data_artifact(entry.name, "nmnist:/data/x", "synthetic:gesture"))
    return names


def test_supersede_moves_every_kind_of_artifact_aside_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    (run / rundir.SUPERSEDED / "20250101T000000Z").mkdir(parents=True)
    made = []
    for entry in rundir.ARTIFACTS:
        for name in _examples(entry):
            assert rundir.artifact(name) is entry, name
            if entry.folder:
                (run / name).mkdir()
                (run / name / "a.png").write_bytes(b"png")
            else:
                (run / name).write_bytes(b"x")
            made.append(name)
    (run / "notes.txt").write_text("mine")
    (run / rundir.LOCK).write_text("")
    target, moved = rundir.supersede(run)
    assert sorted(moved) == sorted(made)
    assert sorted(p.name for p in target.iterdir()) == sorted(made)
    assert (target / rundir.FIGURES / "a.png").read_bytes() == b"png"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [rundir.LOCK, "notes.txt", rundir.SUPERSEDED])
    assert len(list((run / rundir.SUPERSEDED).iterdir())) == 2


def test_every_artifact_has_its_rewrite_command():
    assert rundir.rewrite_command("runs/x", "sim-nmnist-data-x-1234abcd.json") == \
        "asa-deploy simulate runs/x"
    assert rundir.rewrite_command("runs/x", rundir.CHIP_CONFIG).startswith("asa-deploy fold runs/x")
    for entry in rundir.ARTIFACTS:
        assert entry.rewrite.startswith("asa-deploy "), entry.name
        assert set(entry.made_from) <= {a.name for a in rundir.ARTIFACTS}, entry.name


# ---- one writer at a time --------------------------------------------------------------------------

def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


HOLD = """
import sys
from asa_deploy import rundir
with rundir.lock({run!r}, "asa-deploy holder --seed 7"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = _python(HOLD.format(run=str(run)), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "held\n"
        for argv in (["simulate", str(run)], ["evaluate", str(run)],
                     ["train", *CLI_TINY, "--out", str(run)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"{run} is in use: `asa-deploy holder --seed 7` (pid {holder.pid} on " in err
            assert ("wait until it ends, or pass --out with another folder" if argv[0] == "train"
                    else f"wait until it ends, or copy the run somewhere writable (cp -r {run} "
                         f"COPY) and run `asa-deploy {argv[0]} COPY ...`") in err
        assert not (run / rundir.MODEL).exists()
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert not (run / rundir.LOCK).exists()  # released and removed


def test_a_lock_left_by_a_killed_command_is_taken_over_with_a_warning(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    killed = _python(HOLD.format(run=str(run)).replace(
        'sys.stdin.read()', 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'),
        stdout=subprocess.PIPE)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((run / rundir.LOCK).read_text())["pid"] == killed.pid
    with rundir.lock(run, "asa-deploy next"):
        assert json.loads((run / rundir.LOCK).read_text())["command"] == "asa-deploy next"
    assert f"taking over the lock of `asa-deploy holder --seed 7` (pid {killed.pid}" in caplog.text
    assert not (run / rundir.LOCK).exists()


def _wait_for_lock(run: Path, process: subprocess.Popen) -> dict:
    """The lock record once ``process`` holds ``run``'s lock (it imports torch first)."""
    path = run / rundir.LOCK
    while process.poll() is None:
        try:
            held = json.loads(path.read_text())
            if held["pid"] == process.pid:
                return held
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"exited {process.returncode} without taking the lock: "
                         f"{process.communicate(timeout=60)}")


def test_two_trainings_into_one_folder_the_second_is_refused_the_first_intact(tmp_path):
    run = tmp_path / "x"
    command = [sys.executable, "-m", "asa_deploy.cli", "train", *CLI_TINY, "--epochs", "1",
               "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([*command, "--seed", "0"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        held = _wait_for_lock(run, first)
        first.send_signal(signal.SIGSTOP)  # it holds the lock for as long as the second one runs
        second = subprocess.run([*command, "--seed", "1"], env=env, text=True,
                                capture_output=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2
    assert held["command"].endswith("--seed 0") and held["host"]
    assert (f"asa-deploy train: error: {run} is in use: `{held['command']}` (pid {first.pid} "
            f"on {held['host']}, since {held['since']})") in second.stderr
    assert "Traceback" not in second.stderr
    model = torch.load(run / rundir.MODEL, weights_only=False)
    assert model["train_config"]["seed"] == 0
    assert not (run / rundir.LOCK).exists()


# ---- unwritable run directories --------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rundir") / "run"
    train(TrainConfig(epochs=1, **TINY), out, progress=False, verbose=False)
    compile_run(out, "speck2f", bias_policy="drop")
    return out


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


READ_ONLY_COMMANDS = {
    "simulate": ["simulate", "{run}", "--windows", "1"],
    "evaluate": ["evaluate", "{run}"],
    "analyze": ["analyze", "{run}"],
    "report": ["report", "{run}"],
    "compile": ["compile", "{run}", "--bias", "drop"],
    "fold": ["fold", "{run}", "--finetune-epochs", "0"],
    "camera": ["camera", "{run}", "--replay", "{recording}"],
    "export": ["export", "{run}"],
    "train": ["train", *CLI_TINY, "--out", "{run}"],
    "import": ["import", "{recording}", "--out", "{run}"],
}


@pytest.mark.parametrize("command", sorted(READ_ONLY_COMMANDS))
def test_a_read_only_run_directory_is_refused_before_the_work(compiled_run, tmp_path, capsys,
                                                              command):
    """Root writes into a 0o555 folder anyway; a folder without write bits is refused all the same,
    as read-only on purpose, so this holds under root too."""
    recording = tmp_path / "events.npy"
    np.save(recording, np.zeros(0))
    run = shutil.copytree(compiled_run, tmp_path / "run")
    before = _snapshot(run)
    run.chmod(0o555)
    try:
        argv = [a.format(run=run, recording=recording) for a in READ_ONLY_COMMANDS[command]]
        assert main(argv) == 2
    finally:
        run.chmod(0o755)
    captured = capsys.readouterr()
    assert captured.err.startswith(f"asa-deploy {command}: error: cannot write into {run}: {run} "
                                   f"is read-only (dr-xr-xr-x); nothing was done. Make the folder "
                                   f"writable (or free space on its disk), or ")
    fix = "pass --out with" if command in ("train", "import", "report") else f"cp -r {run} COPY"
    assert fix in captured.err
    assert captured.out == "" and _snapshot(run) == before


def test_a_read_only_folder_for_other_outputs_is_refused_before_the_work(compiled_run, tmp_path,
                                                                         capsys):
    shelf = tmp_path / "shelf"
    shelf.mkdir(mode=0o555)
    before = _snapshot(compiled_run)
    assert main(["analyze", str(compiled_run), "--figures", str(shelf / "figures")]) == 2
    assert main(["simulate", str(compiled_run), "--monitor", "0", "--monitor-out",
                 str(shelf / "m.npz")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"asa-deploy {c}: error: cannot write into {f}: {shelf} is read-only "
                   f"(dr-xr-xr-x); nothing was done. Make the folder writable (or free space on "
                   f"its disk), or copy the run somewhere writable (cp -r {compiled_run} COPY) and "
                   f"run `asa-deploy {c} COPY ...`"
                   for c, f in (("analyze", shelf / "figures"), ("simulate", shelf))]
    assert _snapshot(compiled_run) == before


@pytest.fixture
def disk_full_at(monkeypatch):
    """Make the disk fill up as the named file is committed (its fsync fails, as a full disk's
    delayed allocation does); every other write works."""
    def fail_at(name: str) -> None:
        stem, suffix = Path(name).stem, Path(name).suffix
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            written = Path(os.readlink(f"/proc/self/fd/{fd}")).name  # atomic_output's temporary
            if written.startswith(f".{stem}.") and written.endswith(suffix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell which file an fsync is for")
    return fail_at


DISK_FULL = {  # command, the file the disk fills up at, a line of the results printed anyway
    "simulate": (["simulate", "{run}", "--windows", "1"], rundir.SIM_JSON, "input events "),
    "evaluate": (["evaluate", "{run}", "--windows", "1"], rundir.EVAL_JSON, "NASFR "),
    "compile": (["compile", "{run}", "--bias", "drop"], rundir.MAPPING, "synops per event"),
    "analyze": (["analyze", "{run}", "--windows", "1"], rundir.ANALYSIS_JSON, "NASFR"),
    "report": (["report", "{run}"], rundir.REPORT_MD, "# "),
    "fold": (["fold", "{run}", "--finetune-epochs", "0", "--windows", "1",
              "--calib-recordings", "8"], rundir.FOLD_JSON, "quantized, exact simulator"),
    "camera": (["camera", "{run}", "--replay", "{recording}"], rundir.CAMERA_JSON,
               "real-time factor"),
}


@pytest.mark.parametrize("command", sorted(DISK_FULL))
def test_a_write_that_fails_after_the_work_still_prints_the_results(compiled_run, tmp_path, capsys,
                                                                    disk_full_at, command):
    run = shutil.copytree(compiled_run, tmp_path / "run")
    events, _ = open_dataset(TINY["data"], seed=0)[0]
    np.save(tmp_path / "recording.npy", events)
    argv, name, printed = DISK_FULL[command]
    before = (run / name).read_bytes() if (run / name).exists() else None
    disk_full_at(name)
    assert main([a.format(run=run, recording=tmp_path / "recording.npy") for a in argv]) == 2
    captured = capsys.readouterr()
    assert printed in captured.out
    error = captured.err[captured.err.index(f"asa-deploy {command}: error: "):]  # after warnings
    assert error.startswith(
        f"asa-deploy {command}: error: cannot write {run / name}: No space left on device (the "
        f"results above are not saved). Make the folder writable (or free space on its disk), or ")
    assert "Traceback" not in captured.err
    assert ((run / name).read_bytes() if (run / name).exists() else None) == before
    assert not list(run.glob(f".{Path(name).stem}.*"))  # no temporary file left behind


@pytest.mark.parametrize("command", ["simulate", "evaluate"])
def test_json_results_reach_stdout_when_the_write_fails(compiled_run, tmp_path, capsys,
                                                        disk_full_at, command):
    run = shutil.copytree(compiled_run, tmp_path / "run")
    disk_full_at(rundir.SIM_JSON if command == "simulate" else rundir.EVAL_JSON)
    assert main([command, str(run), "--windows", "1", "--json"]) == 2
    captured = capsys.readouterr()
    assert 0 <= json.loads(captured.out)["accuracy_recording"] <= 1
    assert "No space left on device (the results above are not saved)" in captured.err
