"""What every artifact was made from (docs/design.md section 5), so that no stage and no report silently
combines artifacts of different models or data.

Each artifact a stage writes into a run directory carries a ``provenance`` record: the SHA-256 of
every run file it was made from (``made_from``) and the facts that change its figures (data spec,
split, test windows, engine). ``problems`` walks that chain back to ``model.pt``: an artifact is
current only when every file it was made from still has the recorded hash and is itself current.
Retraining moves the old artifacts aside (``rundir.supersede``), and an evaluation on other data gets a
file of its own (``rundir.data_artifact``) instead of overwriting the run's.

Written here rather than taken from a library: DVC and MLflow track files through a repository or a
server; a run directory must stay a plain folder that can be copied to a lab machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from asa_deploy import __version__, rundir
from asa_deploy.errors import AsaDeployError

KEY = "provenance"
NO_RECORD = "records no provenance"  # an artifact older than provenance: nothing to compare
# Per (path, size, modification time): a report or a chain check asks about the same files often.
_hash_cache: dict[tuple[str, int, int], str] = {}
_record_cache: dict[tuple[str, int, int], dict | None] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


class StaleArtifactError(AsaDeployError):
    """An artifact made from files that have changed since (e.g. a chip config of an older model)."""


def content_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (cached per path, size and modification time)."""
    path = Path(path)
    key = _file_key(path)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _hash_cache[key] = digest.hexdigest()
    return _hash_cache[key]


def record(run_dir: str | Path, made_from: Iterable[str] = (), **facts) -> dict:
    """The provenance record of an artifact made now from the run files ``made_from``."""
    run_dir = Path(run_dir)
    return {"made_from": {name: content_hash(run_dir / name) for name in made_from},
            **facts, "asa_deploy": __version__,
            "written_utc": datetime.now(UTC).isoformat(timespec="seconds")}


def read(path: Path) -> dict | None:
    """The provenance record stored in an artifact, None when it has none (or cannot be read)."""
    try:
        key = _file_key(path)
    except OSError:
        return None
    if key not in _record_cache:
        _record_cache[key] = _read_record(path)
    return _record_cache[key]


def _read_record(path: Path) -> dict | None:
    try:
        if path.suffix == ".pt":
            import torch

            value = torch.load(path, weights_only=False, map_location="cpu")
        elif path.suffix == ".json":
            value = json.loads(path.read_text(encoding="utf-8"))
            if path.name == rundir.CHIP_CONFIG:
                value = value.get("meta", {}) if isinstance(value, dict) else None
        else:
            return None
    except Exception:  # noqa: BLE001 - unreadable artifacts are reported by their own loaders
        return None
    found = value.get(KEY) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else None


def problems(run_dir: str | Path, name: str, prov: dict | None = None,
             _checked: dict | None = None) -> list[str]:
    """Why ``run_dir/name`` is not current (empty when it is). ``prov`` overrides the record read
    from the file (for the per-engine entries of ``sim.json``). ``model.pt`` (or an imported run's
    ``imported.pt``) is the root."""
    run_dir = Path(run_dir)
    checked = {} if _checked is None else _checked
    if prov is None:
        if name in checked:
            return checked[name]
        if not (run_dir / name).is_file():
            return [f"{name} is missing"]
        if name in rundir.ROOTS:
            checked[name] = []
            return []
        prov = read(run_dir / name)
    if prov is None or not isinstance(prov.get("made_from"), dict):
        found = [f"{name} {NO_RECORD} (written by an older asa_deploy or by hand), so "
                 f"what it was made from cannot be checked"]
    else:
        found = []
        for source, digest in prov["made_from"].items():
            path = run_dir / source
            if not path.is_file():
                found.append(f"{name} was made from {source}, which is gone")
            elif content_hash(path) != digest:
                found.append(f"{name} was made from an earlier {source} (it has changed since)")
            else:
                found += problems(run_dir, source, _checked=checked)
    checked.setdefault(name, found)
    return found


def stale(found: list[str]) -> list[str]:
    """Of ``problems``' answer, the changed or missing inputs (not the artifacts without a record)."""
    return [p for p in found if NO_RECORD not in p]


def require_current(run_dir: str | Path, name: str) -> None:
    """Refuse to build on ``run_dir/name`` when it was made from files that have changed since.

    An artifact without a record (older asa_deploy) is accepted: there is nothing to compare; a
    missing one is left to its loader, which says which command makes it.
    """
    if not (Path(run_dir) / name).is_file():
        return
    found = stale(problems(run_dir, name))
    if found:
        raise StaleArtifactError(f"{Path(run_dir) / name}: " + "; ".join(found)
                                 + f". Rerun `{rundir.rewrite_command(run_dir, name)}` first")
