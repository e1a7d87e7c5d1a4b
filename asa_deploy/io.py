"""Artifact files (docs/design.md section 5): atomic writes, so a crash never leaves a half-written file
that a later stage would trust, and guarded reads, so a missing, truncated, corrupt or foreign file
is an ``ArtifactError`` naming the file, what is wrong and the command that rewrites it, never a raw
``EOFError`` or ``PytorchStreamReader`` traceback. A write that fails (read-only folder, full disk)
is a ``WriteFailedError`` naming the file, which can carry the results it was to hold
(``results_kept``).

torch is imported inside the torch functions: light modules (``chip.config``) import this one.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asa_deploy.errors import ArtifactError, WriteFailedError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` in one rename.

    The temporary name keeps ``path``'s suffix so that writers guessing a format from it still work.
    ``durable=False`` skips the fsync (milliseconds per file) for files that are verified when read
    and can be rebuilt, such as the decoded-event cache's.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as exc:
        raise WriteFailedError(str(path), exc) from exc
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except WriteFailedError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except OSError as exc:  # the disk filled up, the folder became read-only, ...
        Path(tmp).unlink(missing_ok=True)
        raise WriteFailedError(str(path), exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def results_kept(result: Any) -> Iterator[None]:
    """Attach ``result`` to a ``WriteFailedError`` raised inside: what a command computed before
    its write failed, for it to print instead of losing it."""
    try:
        yield
    except WriteFailedError as err:
        err.result = result
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def json_line(obj: Any) -> str:
    return json.dumps(obj) + "\n"


def save_torch(path: str | Path, obj: Any, *, keep_previous: str | Path | None = None) -> Path:
    """``torch.save`` atomically; with ``keep_previous``, the file ``path`` held until now is renamed
    there (atomically, after the new one is fully written) instead of being overwritten."""
    import torch

    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
        if keep_previous is not None and path.is_file():
            os.replace(path, keep_previous)
    return path


# ---- guarded reads ---------------------------------------------------------------------------------

def brief(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters (torch's are long)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def artifact_error(path: str | Path, problem: str, remedy: str) -> ArtifactError:
    """The error for ``path`` holding ``problem`` (e.g. weights that fit no network), with the fix."""
    return ArtifactError(f"{path}: {problem}; {remedy}", path=str(path), problem=problem)


def _existing(path: str | Path, kind: str, remedy: str, if_missing: str | None) -> Path:
    path = Path(path)
    if not path.exists():
        problem = f"not found (the {kind})"
        raise ArtifactError(f"{path} {problem}; {if_missing or remedy}", path=str(path),
                            problem=problem)
    if not path.is_file():
        raise artifact_error(path, f"not a regular file, so not the {kind}", remedy)
    if path.stat().st_size == 0:
        raise artifact_error(path, f"the {kind} is empty (0 bytes: a write that never "
                                   f"finished?)", remedy)
    return path


def missing_keys(obj: dict, keys: Iterable[str]) -> list[str]:
    """The ``keys`` absent from ``obj``; ``"a.b"`` looks for ``b`` in the dict ``obj["a"]`` (and
    reports ``"a"`` alone when that is missing, ``"a (not a dict)"`` when it is something else)."""
    out: list[str] = []
    for key in keys:
        value: Any = obj
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(value, dict) or part not in value:
                shown = (".".join(parts[:depth + 1]) if isinstance(value, dict)
                         else ".".join(parts[:depth]) + " (not a dict)")
                if shown not in out:
                    out.append(shown)
                break
            value = value[part]
    return out


def load_torch(path: str | Path, kind: str, *, remedy: str, required_keys: Iterable[str] = (),
               if_missing: str | None = None, map_location: Any = "cpu") -> dict:
    """The dict ``save_torch`` wrote to ``path`` (``kind`` names it in messages, e.g. "trained
    model"). Missing, empty, truncated, corrupt, not a dict, or lacking one of ``required_keys``:
    an ``ArtifactError`` naming the file and ending in ``remedy`` (``if_missing`` when absent)."""
    import torch

    path = _existing(path, kind, remedy, if_missing)
    try:
        obj = torch.load(path, weights_only=False, map_location=map_location)
    except Exception as exc:  # noqa: BLE001 - zip, pickle, EOF, unknown class: all mean unreadable
        raise artifact_error(path, f"the {kind} cannot be read: truncated, corrupt or not a torch file "
                          f"({brief(exc)})", remedy) from exc
    if not isinstance(obj, dict):
        raise artifact_error(path, f"holds a {type(obj).__name__}, not the {kind} (a dict written by "
                          f"asa-deploy)", remedy)
    missing = missing_keys(obj, required_keys)
    if missing:
        what = ("a bare state_dict (tensors only)"
                if obj and all(isinstance(v, torch.Tensor) for v in obj.values()) else "a dict")
        raise artifact_error(path, f"not the {kind}: {what} without {', '.join(missing)}", remedy)
    return obj


def read_text(path: str | Path, kind: str, *, remedy: str, if_missing: str | None = None) -> str:
    """The UTF-8 text of ``path``; an ``ArtifactError`` naming it when missing, empty or binary."""
    path = _existing(path, kind, remedy, if_missing)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise artifact_error(path, f"the {kind} cannot be read as text: corrupt or not a text file "
                          f"({brief(exc)})", remedy) from exc


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def load_json(path: str | Path, kind: str, *, remedy: str, expect: type | None = dict,
              required_keys: Iterable[str] = (), if_missing: str | None = None) -> Any:
    """The JSON value in ``path``, of type ``expect`` (an object by default), with
    ``required_keys``; anything else is an ``ArtifactError`` as in ``load_torch``."""
    text = read_text(path, kind, remedy=remedy, if_missing=if_missing)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise artifact_error(path, f"the {kind} is not valid JSON: truncated or corrupt ({exc.msg} at "
                          f"line {exc.lineno}, column {exc.colno})", remedy) from exc
    except (ValueError, RecursionError) as exc:  # 4300+ digit numbers, nesting past the stack
        raise artifact_error(path, f"the {kind} cannot be parsed ({brief(exc)})", remedy) from exc
    if expect is not None and not isinstance(value, expect):
        wanted = _json_type(expect())
        raise artifact_error(path, f"the {kind} holds a JSON {_json_type(value)} where "
                          f"{'an' if wanted[0] in 'aeiou' else 'a'} {wanted} was expected", remedy)
    missing = missing_keys(value, required_keys) if isinstance(value, dict) else []
    if missing:
        raise artifact_error(path, f"not the {kind}: no {', '.join(missing)}", remedy)
    return value


@dataclass(frozen=True)
class Streamed:
    """An array ``write_npz`` writes a block at a time, so that it is never whole in memory:
    ``blocks()`` yields arrays that, joined along axis 0, make ``shape``; each is cast to ``dtype``."""

    dtype: Any
    shape: tuple[int, ...]
    blocks: Callable[[], Iterable[Any]]


def write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """``numpy.savez_compressed`` atomically: the same zip of ``.npy`` members, written as numpy
    writes it, where a ``Streamed`` value is written a block at a time."""
    import zipfile

    import numpy as np

    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED,
                                                     allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                if not isinstance(value, Streamed):
                    np.lib.format.write_array(member, np.asanyarray(value))
                    continue
                dtype = np.dtype(value.dtype)
                np.lib.format.write_array_header_1_0(member, {
                    "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                    "shape": tuple(value.shape)})
                rows = 0
                for block in value.blocks():
                    block = np.ascontiguousarray(block, dtype=dtype)
                    if block.shape[1:] != tuple(value.shape[1:]):
                        raise ValueError(f"write_npz {name}: a block of shape {block.shape} in an "
                                         f"array of shape {value.shape}")
                    member.write(block.data.cast("B"))
                    rows += len(block)
                if rows != value.shape[0]:
                    raise ValueError(f"write_npz {name}: blocks of {rows} rows in total for an "
                                     f"array of shape {value.shape}")
    return Path(path)


def load_npz(path: str | Path, kind: str, *, remedy: str, required_keys: Iterable[str] = (),
             if_missing: str | None = None) -> dict[str, Any]:
    """Every array of the ``.npz`` file ``path`` (no pickled objects), with ``required_keys``;
    missing, empty, truncated, corrupt or foreign: an ``ArtifactError`` as in ``load_torch``."""
    import zipfile
    import zlib

    import numpy as np

    path = _existing(path, kind, remedy, if_missing)
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(b"PK"):  # numpy would try to unpickle it and say so
        what = "a single array (.npy)" if magic == b"\x93NUMPY" else "not a zip archive"
        raise artifact_error(path, f"the {kind} is not an .npz file: {what}", remedy)
    try:
        found = np.load(path, allow_pickle=False)
        with found:
            arrays = {name: found[name] for name in found.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise artifact_error(path, f"the {kind} cannot be read: truncated, corrupt or not an .npz "
                                   f"file ({brief(exc)})", remedy) from exc
    missing = [key for key in required_keys if key not in arrays]
    if missing:
        raise artifact_error(path, f"not the {kind}: no {', '.join(missing)}", remedy)
    return arrays


def unwritable_reason(folder: Path) -> str | None:
    """Why nothing can be written into ``folder`` (made if missing), None when a probe file can be
    created, written and removed there. A folder without write permission bits counts as
    read-only even for root, who could write into it: it was made read-only on purpose."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    mode = existing.stat().st_mode if existing is not None else 0o777
    if not mode & 0o222:
        return f"{existing} is read-only ({stat.filemode(mode)})"
    probe = folder / f".asa-deploy-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe" * 200)  # a full disk refuses data, not always an empty file
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
