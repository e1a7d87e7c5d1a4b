"""Running `asa-deploy` commands from the benchmark scripts: one thread per process (the sweeps run
two at a time on 2 cores), a log file per command, and the command as a user would type it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def asa_deploy() -> list[str]:
    """The CLI under this interpreter (the venv's), whatever is on PATH."""
    return [sys.executable, "-m", "asa_deploy.cli"]


def run(command: list[str], log: Path) -> None:
    """Run ``command`` in the repository root with one thread; stop the sweep if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{shown(command)} failed ({done.returncode}); see {log}")


def shown(command: list[str]) -> str:
    """``command`` as typed: `asa-deploy ...` instead of the interpreter and module."""
    return " ".join(["asa-deploy", *command[3:]])
