"""Argument types for the ``asa-deploy`` parser: every value is checked while the command line is parsed.

Each type turns one string into a checked value or raises ``argparse.ArgumentTypeError``, which
argparse prints as ``asa-deploy CMD: error: argument --OPTION: ...`` and exits with status 2. The
checks run before a command imports torch, so a bad value is refused in a fraction of a second, never
with a traceback, and never silently replaced by a default. Only the standard library is imported
here; the places a value must exist in (model specs, hw_configs) are found without the heavy modules.
Paths are tested with ``os.path``, whose tests answer False (not an exception) for names that are
too long or hold a NUL byte.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from asa_deploy.defaults import TORCH_DEVICE
from asa_deploy.shipped import hw_configs_dir, models_dir

DATA_SCHEMES = ("nmnist", "dvsgesture", "events", "synthetic")  # as asa_deploy.data.datasets.SCHEMES
PATH_SCHEMES = ("nmnist", "dvsgesture", "events")
SEED_MAX = 2**32 - 1  # numpy's legacy seeding and most tools accept 32-bit seeds
MIN_BIN_MS = 0.001  # event timestamps are in microseconds
MAX_CORE = 8  # the highest core id (chip.config.ChipConfig.validate refuses others)
_SPEC_FORMS = "nmnist:PATH, dvsgesture:PATH, events:PATH or synthetic:NAME"
_DEVICE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(:[0-9]+)?")


def _integer(name: str, what: str, ok: Callable[[int], bool]) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    convert.__name__ = convert.__qualname__ = name
    return convert


def _real(name: str, what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    convert.__name__ = convert.__qualname__ = name
    return convert


positive_int = _integer("positive_int", "a positive integer", lambda v: v >= 1)
non_negative_int = _integer("non_negative_int", "a non-negative integer", lambda v: v >= 0)
seed = _integer("seed", f"an integer from 0 to {SEED_MAX}", lambda v: 0 <= v <= SEED_MAX)
positive_float = _real("positive_float", "a finite number > 0", lambda v: v > 0)
non_negative_float = _real("non_negative_float", "a finite number >= 0", lambda v: v >= 0)
# ASA's lambda must leave some channels and steps on either side: both ends excluded.
open_share = _real("open_share", "a number in (0, 1), both ends excluded", lambda v: 0 < v < 1)
# A validation share: 0 holds out nothing (training keeps its last epoch); 1 would leave no training.
val_share = _real("val_share", "a number in [0, 1)", lambda v: 0 <= v < 1)
share = _real("share", "a number in (0, 1]", lambda v: 0 < v <= 1)
odd_int = _integer("odd_int", "an odd positive integer", lambda v: v >= 1 and v % 2 == 1)
# Below 1 a pixel merely as busy as its neighbours would count as hot.
hot_pixel_factor = _real("hot_pixel_factor", "a number >= 1", lambda v: v >= 1)
bin_ms = _real("bin_ms", f"a bin width of at least {MIN_BIN_MS} ms (1 us, the timestamp unit)",
               lambda v: v >= MIN_BIN_MS)


def layer_name(text: str) -> str:
    """A chip layer's name as ``fold.json`` and ``mapping.json`` print it, e.g. ``block1.conv``."""
    if not text or any(c.isspace() for c in text) or "," in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one layer name such as block1.conv "
                                         f"(give several separated by spaces)")
    return text


def model_param(text: str) -> tuple[str, int]:
    """``KEY=VALUE`` overriding a model spec parameter; those are widths and sizes: positive ints."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. c1=32, got {text!r}")
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: KEY must be a parameter name such as c1")
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the value must be a positive integer (parameters are widths and sizes)")
    return key, number


def run_dir(text: str) -> str:
    """An existing run directory (kept as typed: commands print it back)."""
    if not text:
        raise argparse.ArgumentTypeError("must name a run directory, got ''")
    if os.path.isdir(text):
        return text
    if os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a run directory")
    raise argparse.ArgumentTypeError(f"run directory {text} does not exist")


def _existing_file(name: str, what: str, folder_hint: str) -> Callable[[str], Path]:
    """A type for an existing file: ``folder_hint`` says what to give instead of a folder."""
    def convert(text: str) -> Path:
        if text and os.path.isfile(text):
            return Path(text)
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text} is a folder; {folder_hint}")
        raise argparse.ArgumentTypeError(f"no such {what}: {text!r}")

    convert.__name__ = convert.__qualname__ = name
    return convert


existing_file = _existing_file("existing_file", "file", "give a recording file")
monitor_file = _existing_file("monitor_file", "file", "give a monitor .npz file")
# A model to import: its content is checked by the import itself, which names a file that is no model.
model_file = _existing_file("model_file", "model file", "give a .nir graph or a torch.save file (an "
                            "asa-deploy run directory needs no import)")


def input_shape(text: str) -> tuple[int, int, int]:
    """``C,H,W`` (or ``CxHxW``): three positive integers, channels first."""
    parts = [p.strip() for p in re.split(r"[,x]", text.strip().lower())]
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"must be C,H,W (three positive integers, e.g. 2,34,34), "
                                         f"got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def out_dir(text: str) -> Path:
    """A folder to write into: it may be missing (it is created), but it must not be a file."""
    if not text:
        raise argparse.ArgumentTypeError("must name a folder, got ''")
    path = Path(text)
    for at in (path, *path.parents):
        if os.path.exists(at):
            if os.path.isdir(at):
                return path
            where = "is" if at == path else f"is inside {at}, which is"
            raise argparse.ArgumentTypeError(
                f"{text} {where} an existing file, not a folder; give a folder path")
    return path


def data_spec(text: str) -> str:
    """A data spec with a known scheme whose folder exists (parsed as ``open_dataset`` does)."""
    scheme, sep, rest = text.partition(":")
    scheme = scheme.strip().lower()
    if not sep and scheme == "synthetic":
        return text
    if not sep:
        hint = f" (to read the folder {text}, write 'events:{text}')" if os.path.isdir(text) else ""
        raise argparse.ArgumentTypeError(f"data spec {text!r} has no scheme{hint}; use {_SPEC_FORMS}")
    if scheme not in DATA_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"data spec {text!r}: unknown scheme {scheme!r}; use {_SPEC_FORMS}")
    if scheme in PATH_SCHEMES:
        if not rest.strip():
            raise argparse.ArgumentTypeError(
                f"data spec {text!r} names no folder; write e.g. '{scheme}:PATH'")
        folder = os.path.expanduser(rest.strip())
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(
                f"data spec {text!r}: {folder} is a file; give the folder that holds it")
        if not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(f"data spec {text!r}: folder {folder} does not exist")
    return text


def model_spec(text: str) -> str:
    """A model spec file, or the name of one in ``models_dir()`` (as ``load_model_spec`` finds it)."""
    if text and (os.path.isfile(text) or os.path.isfile(models_dir() / f"{text}.yaml")):
        return text
    known = ", ".join(sorted(p.stem for p in models_dir().glob("*.yaml"))) or "(none found)"
    raise argparse.ArgumentTypeError(f"no model spec {text!r}: not a file, and not one of the named "
                                     f"models in {models_dir()}: {known}")


def chip(text: str) -> str:
    """A hw_config name or the path of a ``.toml`` file (as ``load_chip_spec`` resolves it)."""
    if Path(text).suffix == ".toml":
        if os.path.isfile(text):
            return text
        raise argparse.ArgumentTypeError(f"no such hw_config file: {text!r}")
    if text and os.path.isfile(hw_configs_dir() / f"{text}.toml"):
        return text
    known = ", ".join(sorted(p.stem for p in hw_configs_dir().glob("*.toml"))) or "(none found)"
    raise argparse.ArgumentTypeError(
        f"unknown chip {text!r}; known: {known} (in {hw_configs_dir()}), or pass the path of a "
        f".toml file")


def device(text: str) -> str:
    """A board as ``KIND[:INDEX]``; whether KIND is a board samna knows is checked when it opens."""
    if _DEVICE.fullmatch(text.strip()):
        return text
    raise argparse.ArgumentTypeError(f"must be KIND[:INDEX], e.g. speck2fdevkit:0, got {text!r}")


def torch_device(text: str) -> str:
    """Where torch computes: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Only the spelling is checked
    here (torch is not imported while parsing); whether torch sees that GPU is checked when the
    command starts (asa_deploy.train.accelerator.resolve_device)."""
    value = text.strip().lower()
    if re.fullmatch(TORCH_DEVICE, value):
        return value
    raise argparse.ArgumentTypeError(
        f"must be auto, cpu, cuda or cuda:N (N a GPU index, e.g. cuda:0), got {text!r}")


def monitor_cores(text: str) -> tuple[int, ...] | str:
    """``all`` or core ids separated by commas, e.g. ``0,3`` (Speck and DYNAP-CNN number their cores
    0..8); whether the config uses them is checked once it is loaded."""
    if text.strip().lower() == "all":
        return "all"
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or "" in parts:
        raise argparse.ArgumentTypeError(f"expected 'all' or core ids separated by commas, e.g. 0,3, "
                                         f"got {text!r}")
    cores = []
    for part in parts:
        if not part.isdigit() or int(part) > MAX_CORE:
            raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not a core id; cores are "
                                             f"numbered 0..{MAX_CORE}")
        cores.append(int(part))
    return tuple(sorted(set(cores)))


def out_file(text: str) -> Path:
    """A file to write: not an existing folder, and not inside a file (missing folders are made)."""
    if not text:
        raise argparse.ArgumentTypeError("must name a file, got ''")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    path = Path(text)
    for at in path.parents:
        if os.path.exists(at):
            if os.path.isdir(at):
                return path
            raise argparse.ArgumentTypeError(f"{text} is inside {at}, which is a file; give a file "
                                             f"path in a folder")
    return path
