"""Atomic artifact writing: a crash never leaves a half-written file that a later stage would trust."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    return _atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def save_torch(path: Path, obj: Any) -> Path:
    return _atomic(path, lambda f: torch.save(obj, f))


def json_line(obj: Any) -> str:
    return json.dumps(obj, sort_keys=False) + "\n"
