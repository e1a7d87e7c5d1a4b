"""The run directory: every artifact's name, the command that writes it, what it is made from and
the command that rewrites it (``ARTIFACTS``); moving a previous model's artifacts aside
(``supersede``); and the guard every writing command takes first (``claim``): the folder is
writable, and no other command writes into it at the same time.

Stages take their file names from here, so that the table is the whole list: retraining moves
exactly what some stage can write, and a test checks that no module names a file the table lacks.
Light on purpose (no torch, no asa_deploy module but io and errors): every stage imports it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

from asa_deploy import io
from asa_deploy.errors import AsaDeployError

log = logging.getLogger("asa_deploy.rundir")

MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the one before: resume falls back to it
TRAIN_LOG = "train_log.jsonl"
IMPORTED = "imported.pt"
EVAL_JSON = "eval.json"
ANALYSIS_JSON = "analysis.json"
FIGURES = "figures"
FOLDED = "folded.pt"
FOLD_MAPS = "fold_maps.png"
FOLD_JSON = "fold.json"
CHIP_CONFIG = "chip_config.json"
MAPPING = "mapping.json"
SIM_JSON = "sim.json"
MONITOR_NPZ = "monitor.npz"
COMPARE_JSON = "compare-*.json"  # compare_json's names
MODEL_NIR = "model.nir"
QUANTIZED_NIR = "model_quantized.nir"
CAMERA_JSON = "camera.json"
DEVICE_JSON = "device.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_FIGURES = "report_figures"
SUPERSEDED = "superseded"  # where supersede moves a previous model's artifacts
LOCK = ".asa-deploy.lock"
ROOTS = (MODEL, IMPORTED)  # what every other artifact is made from, in the end


@dataclass(frozen=True)
class Artifact:
    """One entry of the run directory. ``name`` is a file or folder name (or a glob);
    ``per_data``: on other data than the run's the stage writes ``data_artifact``'s name instead;
    ``made_from``: the run files its provenance may name (alternatives: the first one present);
    ``rewrite``: the command that writes it again (``{run}``: the run directory)."""

    name: str
    written_by: str
    made_from: tuple[str, ...]
    rewrite: str
    per_data: bool = False
    folder: bool = False

    @property
    def patterns(self) -> tuple[str, ...]:
        """Globs, run-relative, of this artifact and its per-data variants."""
        if not self.per_data:
            return (self.name,)
        stem, dot, suffix = self.name.partition(".")
        return self.name, f"{stem}-*{dot}{suffix}"


_CHIP_LAYERS = (FOLDED, MODEL, IMPORTED)
ARTIFACTS = (
    Artifact(MODEL, "train", (), "asa-deploy train --out {run}"),
    Artifact(CHECKPOINT, "train (every epoch)", (), "asa-deploy train --out {run}"),
    Artifact(PREVIOUS_CHECKPOINT, "train (every epoch)", (), "asa-deploy train --out {run}"),
    Artifact(TRAIN_LOG, "train (every epoch)", (), "asa-deploy train --out {run}"),
    Artifact(IMPORTED, "import", (), "asa-deploy import MODEL --out {run}"),
    Artifact(EVAL_JSON, "evaluate", (MODEL,), "asa-deploy evaluate {run}", per_data=True),
    Artifact(ANALYSIS_JSON, "analyze", (MODEL,), "asa-deploy analyze {run}", per_data=True),
    Artifact(FIGURES, "analyze", (MODEL,), "asa-deploy analyze {run}", per_data=True, folder=True),
    Artifact(FOLDED, "fold", (MODEL,), "asa-deploy fold {run}"),
    Artifact(FOLD_MAPS, "fold", (MODEL,), "asa-deploy fold {run}"),
    Artifact(FOLD_JSON, "fold", (MODEL, FOLDED, CHIP_CONFIG), "asa-deploy fold {run}"),
    Artifact(CHIP_CONFIG, "fold, compile", _CHIP_LAYERS,
             "asa-deploy fold {run} (or asa-deploy compile {run})"),
    Artifact(MAPPING, "fold, compile", _CHIP_LAYERS,
             "asa-deploy fold {run} (or asa-deploy compile {run})"),
    Artifact(SIM_JSON, "simulate", (CHIP_CONFIG,), "asa-deploy simulate {run}", per_data=True),
    Artifact(MONITOR_NPZ, "simulate --monitor, deploy --monitor", (CHIP_CONFIG,),
             "asa-deploy simulate {run} --monitor CORES", per_data=True),
    Artifact(COMPARE_JSON, "compare (beside its first monitor file)", (),
             "asa-deploy compare A.npz B.npz"),
    Artifact(MODEL_NIR, "export", _CHIP_LAYERS, "asa-deploy export {run}"),
    Artifact(QUANTIZED_NIR, "export", (CHIP_CONFIG,), "asa-deploy export {run}"),
    Artifact(CAMERA_JSON, "camera", (CHIP_CONFIG,), "asa-deploy camera {run} --replay FILE"),
    Artifact(DEVICE_JSON, "deploy", (CHIP_CONFIG,), "asa-deploy deploy {run} --device KIND",
             per_data=True),
    Artifact(REPORT_JSON, "report", (), "asa-deploy report {run}"),
    Artifact(REPORT_MD, "report", (), "asa-deploy report {run}"),
    Artifact(REPORT_HTML, "report", (), "asa-deploy report {run}"),
    Artifact(REPORT_FIGURES, "report", (), "asa-deploy report {run}", folder=True),
)


def artifact(name: str) -> Artifact | None:
    """The table's entry for a run file name (a per-data variant included), None if none."""
    return next((a for a in ARTIFACTS if any(fnmatch(name, p) for p in a.patterns)), None)


def rewrite_command(run_dir: str | Path, name: str) -> str:
    """The command that writes ``run_dir/name`` again."""
    entry = artifact(name)
    return entry.rewrite.format(run=run_dir) if entry else "rerun the stage that writes it"


def data_artifact(base: str, data: str | None, run_data: str) -> str:
    """File name of an artifact computed on ``data``: ``base`` itself for the run's own data,
    else ``stem-<data>.json`` so that another data set never overwrites the run's figures."""
    if data is None or data == run_data:
        return base
    stem, dot, suffix = base.partition(".")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", data).strip("-")[-40:]
    tag = hashlib.sha256(data.encode()).hexdigest()[:8]
    return f"{stem}-{slug}-{tag}{dot}{suffix}"


def compare_json(monitor_a: Path, monitor_b: Path) -> Path:
    """Where ``compare`` writes by default: beside A, named after both monitor files."""
    return monitor_a.parent / COMPARE_JSON.replace("*", f"{monitor_a.stem}-vs-{monitor_b.stem}")


def supersede(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """Move every artifact of ``ARTIFACTS`` (the previous model's, and all made from it) into
    ``run_dir/superseded/<UTC time>/``; returns that folder and the moved names."""
    run_dir = Path(run_dir)
    found = sorted({p for a in ARTIFACTS for pattern in a.patterns for p in run_dir.glob(pattern)})
    if not found:
        return None, []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = run_dir / SUPERSEDED / stamp
    target.mkdir(parents=True)
    for path in found:
        shutil.move(str(path), target / path.name)
    return target, [p.name for p in found]


# ---- the guard: writable, and one writer at a time -------------------------------------------------

class UnwritableError(AsaDeployError):
    """A folder a command would write into that is read-only, full or not a folder."""


class RunDirBusyError(AsaDeployError):
    """A run directory another command is writing into now."""


WRITABLE_FIX = "Make the folder writable (or free space on its disk), or "


def require_writable(folder: str | Path, elsewhere: str) -> None:
    """``UnwritableError`` naming ``folder`` and why when it cannot be written; ``elsewhere``: how
    the command writes somewhere else instead."""
    why = io.unwritable_reason(Path(folder))
    if why is not None:
        raise UnwritableError(f"cannot write into {folder}: {why}; nothing was done. "
                              f"{WRITABLE_FIX}{elsewhere}")


def _holder(text: str) -> str:
    try:
        held = json.loads(text)
        return (f"`{held['command']}` (pid {held['pid']} on {held['host']}, since "
                f"{held['since']})")
    except (ValueError, KeyError, TypeError):
        return "a command that left no record"


@contextmanager
def lock(run_dir: str | Path, command: str, *,
         elsewhere: str = "work on a copy") -> Iterator[None]:
    """Hold ``run_dir``'s lock while the block runs; ``RunDirBusyError`` at once, naming the
    holder, when another command holds it (``elsewhere``: how to write somewhere else instead).

    ``fcntl.flock`` on ``run_dir/.asa-deploy.lock``, which holds the holder's command line, pid,
    host and start time for that message. The kernel releases a lock when its process ends, however
    it ends (Linux NFS clients map flock onto NFS locks, which the server releases when a client is
    gone), so a lock whose holder died is taken over, with a warning naming it when it left its
    record; no pid check, which would misjudge a reused pid or another host's. Written here, not
    taken from filelock: that names no holder. The lock file is removed on release, under the lock;
    a waiting command that locked the removed file sees that its inode is gone and tries again.
    """
    path = Path(run_dir) / LOCK
    for _attempt in range(100):  # another command removing the file as this one opens it
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            text = _read_fd(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.warning("%s: cannot lock (%s); another command writing into it at the same "
                            "time would not be noticed", path, exc.strerror)
                yield
                return
            raise RunDirBusyError(
                f"{run_dir} is in use: {_holder(text)} is writing into it; wait until it ends, "
                f"or {elsewhere}") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise RunDirBusyError(f"{path}: could not take the lock (removed and made again 100 "
                              f"times while trying); another command is starting there")
    left = _read_fd(fd)
    if left:
        log.warning("%s: taking over the lock of %s, which ended without releasing it", run_dir,
                    _holder(left))
    record = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")


@contextmanager
def claim(run_dirs: Iterable[str | Path], command: str, *, elsewhere: str,
          also_writes: Iterable[str | Path] = ()) -> Iterator[None]:
    """What a command does before it writes into ``run_dirs``: check that they (and the folders
    ``also_writes``) are writable, and hold each run directory's lock until the block ends;
    ``elsewhere`` says how the command writes somewhere else when it may not write there. Folders made for the check that are still empty then
    are removed again (a command refused later, e.g. for a bad option, leaves nothing behind)."""
    run_dirs = list(dict.fromkeys(Path(r) for r in run_dirs))
    folders = [*run_dirs, *map(Path, also_writes)]
    made = sorted({p for folder in folders for p in (folder, *folder.parents) if not p.exists()},
                  key=lambda p: len(p.parts), reverse=True)  # deepest first
    try:
        for folder in folders:
            require_writable(folder, elsewhere)
        with ExitStack() as stack:
            for run_dir in run_dirs:
                stack.enter_context(lock(run_dir, command, elsewhere=elsewhere))
            yield
    finally:
        for folder in made:
            with suppress(OSError):  # not empty (the command wrote there), or gone
                folder.rmdir()
