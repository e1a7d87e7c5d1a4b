"""Per-neuron monitoring: the output spikes of chosen cores, neuron by neuron and bin by bin, from
a simulator (``asa-deploy simulate --monitor``) or a board (``asa-deploy deploy --monitor``), in one
file layout, so that any two can be compared neuron by neuron (``asa-deploy compare``).

Per-core totals tell that a deployment differs from its simulation; per-neuron counts tell where:
which channel, which part of the map, from which bin on.

``monitor.npz`` (numpy ``.npz``, nothing pickled; ``Monitor.load`` checks every field):

- ``core<k>``: unsigned int [windows, bins, C, H, W], one per monitored core k: output spikes of
  each neuron (channel, row, column of the core's convolution output, before any destination
  pooling) in each time bin, counted after the output decimator, where ``sim.json``'s
  ``spikes_per_core`` counts them, so summed over neurons and bins they equal it. The dtype is
  the smallest of uint8/16/32/64 that holds the largest count.
- ``cores``: int64 [K] the monitored core ids, ascending; ``core_names``: str [K] their layers.
- ``labels``: int64 [windows] (-1: unlabelled); ``recordings``: str [windows] the recording each
  window was cut from; ``t_start``: int64 [windows] where it starts in that recording (us);
  ``bin_us``: int64 [windows] its bin width (us).
- ``engine``: str: ``fast``, ``exact`` or ``device:KIND[:INDEX]``; ``chip``: str; ``data``: str,
  the windows' description; ``provenance``: str, the JSON provenance record (made from
  ``chip_config.json``; engine, data, windows); ``format``: str, ``FORMAT``.

Bins: a simulator counts a spike in the bin of the input event that caused it; a board in the bin
of the spike's own timestamp (``counts_from_spikes``), a processing latency later (microseconds
on Speck, so it matters only at bin edges).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim.result import MonitorCounts, count_dtype
from asa_deploy.chip.sim.window import EventWindow
from asa_deploy.errors import ArtifactError, AsaDeployError
from asa_deploy.io import Streamed, artifact_error, load_npz, write_json, write_npz
from asa_deploy.rundir import CHIP_CONFIG, MONITOR_NPZ, compare_json

FORMAT = "asa_deploy.monitor/1"
REMEDY = ("write it again with `asa-deploy simulate RUN_DIR --monitor CORES` (or `asa-deploy deploy "
          "RUN_DIR --monitor CORES`)")
_WINDOW_KEYS = ("labels", "recordings", "t_start", "bin_us")
_SCALARS = ("engine", "chip", "data", "provenance", "format")
COMPARE_CHUNK_BYTES = 64 * 2**20  # int64 working arrays per chunk of windows in ``compare``

__all__ = ["FORMAT", "MONITOR_NPZ", "CountSpool", "Monitor", "MonitorCounts", "MonitorError",
           "SpikeCounts", "SpooledCounts", "compare", "compare_files", "count_dtype",
           "counts_from_spikes", "format_comparison", "select_cores"]

log = logging.getLogger("asa_deploy.monitor")


class MonitorError(AsaDeployError):
    """Monitoring asked of cores a config does not use, or two monitor files that do not match."""


def select_cores(config: ChipConfig, requested: Sequence[int] | str, source: str) -> list[int]:
    """The cores ``--monitor`` names (``"all"``: every core of ``config``), refused unless
    ``config`` (read from ``source``) uses each of them."""
    used = config.core_ids()
    if isinstance(requested, str):
        if requested != "all":
            raise ValueError(f"monitor cores: expected 'all' or core ids, got {requested!r}")
        return sorted(used)
    unused = [c for c in requested if c not in used]
    if unused:
        names = ", ".join(f"{c} ({config.core(c).name})" for c in sorted(used))
        raise MonitorError(f"--monitor names core{'s' if len(unused) > 1 else ''} "
                           f"{', '.join(map(str, unused))}, which {source} does not use; it uses "
                           f"cores {names}: name some of those, or --monitor all")
    return sorted(set(requested))


@dataclass(frozen=True)
class SpooledCounts:
    """One core's counts [windows, bins, C, H, W] lying in a ``CountSpool``'s files, a chunk of
    windows per file; ``Monitor.save`` writes them a chunk at a time."""

    shape: tuple[int, ...]
    largest: int
    files: tuple[Path, ...]

    def streamed(self) -> Streamed:
        def blocks() -> Iterator[np.ndarray]:
            for path in self.files:
                yield np.load(path, mmap_mode="r", allow_pickle=False)
        return Streamed(count_dtype(self.largest), self.shape, blocks)


class CountSpool:
    """Monitor counts kept on disk, a chunk of windows at a time, as a simulation makes them
    (``simulate_parallel``'s ``monitor_to``): in RAM, every window's counts would be held until the
    file is written (every core of speck-tiny over DVS Gesture's 1,342 whole recordings: 8.6 GiB).
    Use as a context manager, in the folder of the monitor file (the same disk); the spool's
    temporary folder is removed on leaving it."""

    def __init__(self, folder: str | Path, cores: Sequence[int]):
        self.cores = [int(c) for c in cores]
        self.folder = Path(folder)
        self._dir: Path | None = None
        self._rows: dict[int, int] = {}  # chunk -> windows
        self._tail: dict[int, tuple[int, ...]] = {}
        self._largest = dict.fromkeys(self.cores, 0)

    def __enter__(self) -> CountSpool:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(dir=self.folder, prefix=".monitor-spool-"))
        return self

    def __exit__(self, *exc) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __call__(self, chunk: int, counts: Mapping[int, np.ndarray]) -> None:
        """Keep chunk ``chunk``'s counts {core: [n, bins, C, H, W]} (chunks in any order)."""
        if self._dir is None:
            raise RuntimeError("CountSpool used outside its with block")
        if sorted(counts) != sorted(self.cores):
            raise ValueError(f"monitor counts of cores {sorted(counts)}, expected {sorted(self.cores)}")
        for core, array in counts.items():
            np.save(self._dir / f"core{core}-{chunk}.npy", array, allow_pickle=False)
            self._largest[core] = max(self._largest[core], int(array.max(initial=0)))
            self._tail[core] = array.shape[1:]
            self._rows[chunk] = len(array)

    def counts(self) -> dict[int, SpooledCounts]:
        """Every chunk's counts so far, per core, in chunk order (chunks 0, 1, ... all present)."""
        chunks = sorted(self._rows)
        if chunks != list(range(len(chunks))):
            raise ValueError(f"CountSpool: chunks {chunks} are not 0..{len(chunks) - 1}")
        n = sum(self._rows.values())
        return {c: SpooledCounts((n, *self._tail.get(c, ())), self._largest[c],
                                 tuple(self._dir / f"core{c}-{k}.npy" for k in chunks))
                for c in self.cores}


@dataclass
class Monitor:
    """One monitor file in memory (the module docstring gives the layout)."""

    counts: dict[int, np.ndarray | SpooledCounts]  # spooled: only from a simulation, to be saved
    core_names: dict[int, str]
    labels: np.ndarray
    recordings: np.ndarray
    t_start: np.ndarray
    bin_us: np.ndarray
    engine: str
    chip: str
    data: str
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_windows(cls, config: ChipConfig, windows: Sequence[EventWindow],
                     counts: Mapping[int, np.ndarray], *, engine: str, data: str,
                     provenance: dict) -> Monitor:
        """The file of ``counts`` {core: [len(windows), bins, C, H, W]} taken on ``windows``;
        ``engine`` is ``fast``, ``exact`` or ``device:KIND[:INDEX]``."""
        for core, array in counts.items():
            expected = (len(windows), windows[0].n_bins if windows else 0, *config.core(core).neuron_shape)
            if array.shape != expected:
                raise ValueError(f"monitor counts of core {core}: shape {array.shape}, expected {expected}")
        return cls(
            counts={int(c): counts[c] for c in sorted(counts)},
            core_names={int(c): config.core(c).name for c in sorted(counts)},
            labels=np.array([w.label for w in windows], dtype=np.int64),
            recordings=np.array([str(w.recording) for w in windows], dtype=str),
            t_start=np.array([w.t_start for w in windows], dtype=np.int64),
            bin_us=np.array([w.dt_us for w in windows], dtype=np.int64),
            engine=engine, chip=config.chip, data=data, provenance=provenance)

    @property
    def n_windows(self) -> int:
        return len(self.labels)

    @property
    def n_bins(self) -> int:
        return next(iter(self.counts.values())).shape[1] if self.counts else 0

    def config_hash(self) -> str | None:
        """SHA-256 of the ``chip_config.json`` the counts were made from (from the provenance)."""
        made_from = self.provenance.get("made_from")
        return made_from.get(CHIP_CONFIG) if isinstance(made_from, dict) else None

    def save(self, path: str | Path) -> Path:
        """Write atomically; the counts keep their (smallest sufficient) unsigned dtypes."""
        arrays = {f"core{c}": a.streamed() if isinstance(a, SpooledCounts)
                  else a.astype(count_dtype(int(a.max(initial=0))), copy=False)
                  for c, a in self.counts.items()}
        return write_npz(path, {
            **arrays,
            "cores": np.array(sorted(self.counts), dtype=np.int64),
            "core_names": np.array([self.core_names[c] for c in sorted(self.counts)], dtype=str),
            "labels": self.labels, "recordings": self.recordings, "t_start": self.t_start,
            "bin_us": self.bin_us, "engine": np.array(self.engine), "chip": np.array(self.chip),
            "data": np.array(self.data), "provenance": np.array(json.dumps(self.provenance)),
            "format": np.array(FORMAT)})

    @classmethod
    def load(cls, path: str | Path) -> Monitor:
        """A monitor file, every field checked: anything else is an ``ArtifactError`` naming it."""
        path = Path(path)
        raw = load_npz(path, "monitor file", remedy=REMEDY,
                       required_keys=("format", "cores", "core_names", *_WINDOW_KEYS, *_SCALARS))

        def bad(problem: str) -> ArtifactError:
            return artifact_error(path, problem, REMEDY)

        scalars = {}
        for key in _SCALARS:
            value = raw[key]
            if value.ndim != 0 or value.dtype.kind != "U":
                raise bad(f"field {key!r} is not a string")
            scalars[key] = str(value)
        if scalars["format"] != FORMAT:
            raise bad(f"format {scalars['format']!r}, this asa_deploy reads {FORMAT!r}")
        try:
            prov = json.loads(scalars["provenance"])
        except ValueError as exc:
            raise bad(f"its provenance is not valid JSON ({exc})") from exc
        if not isinstance(prov, dict):
            raise bad("its provenance is not a JSON object")
        cores, names = raw["cores"], raw["core_names"]
        if cores.ndim != 1 or cores.dtype.kind not in "iu" or names.shape != cores.shape:
            raise bad("fields 'cores' and 'core_names' must be equally long lists of ids and names")
        windows = raw["labels"]
        if windows.ndim != 1 or windows.dtype.kind not in "iu":
            raise bad("field 'labels' must be a list of integers")
        n = len(windows)
        for key in ("recordings", "t_start", "bin_us"):
            kind = "U" if key == "recordings" else "iu"
            if raw[key].shape != (n,) or raw[key].dtype.kind not in kind:
                raise bad(f"field {key!r} must hold one {'name' if kind == 'U' else 'integer'} per "
                          f"window ({n}), got shape {raw[key].shape} of {raw[key].dtype}")
        counts, bins = {}, set()
        for core in cores.tolist():
            key = f"core{core}"
            if key not in raw:
                raise bad(f"lists core {core} but holds no {key!r}")
            array = raw[key]
            if array.ndim != 5 or array.shape[0] != n or array.dtype.kind != "u":
                raise bad(f"{key!r} must be unsigned counts [windows={n}, bins, C, H, W], got "
                          f"shape {array.shape} of {array.dtype}")
            counts[int(core)] = array
            bins.add(array.shape[1])
        extra = sorted(k for k in raw if k.startswith("core") and k not in {f"core{c}" for c in counts}
                       and k not in ("cores", "core_names"))
        if extra or len(bins) > 1:
            raise bad(f"arrays {extra} are not listed in 'cores'" if extra
                      else f"the cores have different numbers of bins {sorted(bins)}")
        return cls(counts=counts, core_names=dict(zip(cores.tolist(), names.tolist(), strict=True)),
                   labels=windows.astype(np.int64), recordings=raw["recordings"],
                   t_start=raw["t_start"].astype(np.int64), bin_us=raw["bin_us"].astype(np.int64),
                   engine=scalars["engine"], chip=scalars["chip"], data=scalars["data"],
                   provenance=prov)


def engine_of(path: str | Path) -> str | None:
    """The engine a monitor file at ``path`` was written by (None: none there, or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as found:
            return str(found["engine"])
    except Exception:  # noqa: BLE001 - only used to warn before replacing a file
        return None


# ---- a board's monitored spikes ------------------------------------------------------------------

@dataclass
class SpikeCounts:
    """``counts_from_spikes``'s answer: the counts and the spikes that could not be binned."""

    counts: dict[int, np.ndarray]  # {core: uint [n_bins, C, H, W]}
    early: int = 0         # before the window's start (stale events of an earlier window): dropped
    late: int = 0          # at or after its end (the last events' cascades): in the last bin
    other_layers: int = 0  # from cores not monitored (e.g. the DVS layer, 13): ignored


def counts_from_spikes(spikes: np.ndarray, shapes: Mapping[int, Sequence[int]], *, n_bins: int,
                       dt_us: int, t_start: int = 0) -> SpikeCounts:
    """One window's monitored ``Spike`` events as counts per neuron and bin, the layout a
    simulator writes (``Monitor.counts[core][window]``).

    ``spikes``: records with fields ``layer`` (core), ``feature`` (channel), ``x`` (column), ``y``
    (row) and ``timestamp`` (us), as ``DeviceSession.read_spikes`` returns them (sinabs's
    ``ChipFactory.events_to_raster`` reads the same fields: raster[t, feature, y, x]).
    ``shapes``: {core: (C, H, W)} of the monitored cores' neurons (``CoreConfig.neuron_shape``).
    Bin b holds ``t_start + b*dt_us <= timestamp < t_start + (b+1)*dt_us``; later spikes are counted
    in the last bin (the board reads until quiet, so they belong to this window). A spike whose
    neuron lies outside its core's shape means the board runs another configuration (or swaps x
    and y): refused, never dropped silently. Coordinates are taken as the neuron's own, before the
    destination pooling (a core's two destinations may pool differently, so the monitored copy
    cannot be pooled); UNVERIFIED on a board.
    """
    if n_bins < 1 or dt_us < 1:
        raise ValueError(f"n_bins {n_bins} and dt_us {dt_us} must be >= 1")
    spikes = np.asarray(spikes)
    missing = [f for f in ("layer", "feature", "x", "y", "timestamp")
               if spikes.dtype.names is None or f not in spikes.dtype.names]
    if missing:
        raise ValueError(f"spike records need fields layer, feature, x, y, timestamp; missing {missing}")
    layer = spikes["layer"].astype(np.int64)
    mine = np.isin(layer, list(shapes))
    t = spikes["timestamp"].astype(np.int64)[mine] - int(t_start)
    early = t < 0
    bins = np.minimum(t // dt_us, n_bins - 1)
    result = SpikeCounts(counts={}, early=int(early.sum()), late=int((t >= n_bins * dt_us).sum()),
                         other_layers=int((~mine).sum()))
    kept = ~early
    layer, bins = layer[mine][kept], bins[kept]
    feature = spikes["feature"].astype(np.int64)[mine][kept]
    y = spikes["y"].astype(np.int64)[mine][kept]
    x = spikes["x"].astype(np.int64)[mine][kept]
    for core, shape in shapes.items():
        c, h, w = (int(s) for s in shape)
        at = layer == core
        outside = at & ((feature >= c) | (y >= h) | (x >= w))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise MonitorError(
                f"a monitored spike of core {core} at (feature={feature[i]}, y={y[i]}, x={x[i]}) lies "
                f"outside its {c}x{h}x{w} (CxHxW) neurons ({int(outside.sum())} such spikes): the "
                f"board runs another configuration than this chip_config.json")
        flat = ((bins[at] * c + feature[at]) * h + y[at]) * w + x[at]
        counts = np.bincount(flat, minlength=n_bins * c * h * w)
        result.counts[int(core)] = counts.astype(count_dtype(int(counts.max(initial=0)))).reshape(
            n_bins, c, h, w)
    return result


# ---- comparing two monitor files ---------------------------------------------------------------

def _check_comparable(a: Monitor, b: Monitor, name_a: str, name_b: str) -> list[int]:
    """The cores both files monitor; refuse files of different configs or windows."""
    what = f"{name_a} and {name_b} cannot be compared"
    hash_a, hash_b = a.config_hash(), b.config_hash()
    for name, digest in ((name_a, hash_a), (name_b, hash_b)):
        if digest is None:
            raise MonitorError(f"{what}: {name} records no chip_config.json in its provenance, so "
                               f"which configuration it ran is unknown; {REMEDY}")
    if hash_a != hash_b:
        raise MonitorError(f"{what}: they were made from different chip configs (chip_config.json "
                           f"sha256 {hash_a[:12]}... vs {hash_b[:12]}...); monitor both runs of the "
                           f"same compiled config")
    if (a.n_windows, a.n_bins) != (b.n_windows, b.n_bins):
        raise MonitorError(f"{what}: {name_a} holds {a.n_windows} windows of {a.n_bins} bins "
                           f"({a.data}), {name_b} {b.n_windows} of {b.n_bins} ({b.data}); monitor "
                           f"both with the same --data, --windows and --max-recordings")
    for key in _WINDOW_KEYS:
        differ = np.flatnonzero(getattr(a, key) != getattr(b, key))
        if len(differ):
            i = int(differ[0])
            raise MonitorError(
                f"{what}: their windows differ ({len(differ)} of {a.n_windows} in {key}); first at "
                f"window {i}: {name_a} {a.recordings[i]} from {a.t_start[i]} us, bins of "
                f"{a.bin_us[i]} us, label {a.labels[i]}; {name_b} {b.recordings[i]} from "
                f"{b.t_start[i]} us, bins of {b.bin_us[i]} us, label {b.labels[i]}; monitor both "
                f"with the same --data, --windows and --max-recordings")
    common = sorted(set(a.counts) & set(b.counts))
    if not common:
        raise MonitorError(f"{what}: they monitor no core in common ({name_a}: cores "
                           f"{sorted(a.counts)}, {name_b}: {sorted(b.counts)})")
    return common


def _cosine(dot: np.ndarray, ss_a: np.ndarray, ss_b: np.ndarray) -> np.ndarray:
    """Cosine similarity from sums; NaN where both vectors are zero, 0 where only one is."""
    dot, ss_a, ss_b = (np.asarray(v, dtype=np.float64) for v in (dot, ss_a, ss_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dot / np.sqrt(ss_a * ss_b)
    out = np.where((ss_a == 0) ^ (ss_b == 0), 0.0, out)
    return np.where((ss_a == 0) & (ss_b == 0), np.nan, out)


def _ratio(sum_a: np.ndarray, sum_b: np.ndarray) -> np.ndarray:
    """B's count over A's; NaN where both are 0, inf where only A is."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sum_b, dtype=np.float64) / np.asarray(sum_a, dtype=np.float64)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _json_array(values: np.ndarray) -> list:
    """Nested lists with NaN and inf as null (strict JSON), rounded to 6 digits."""
    rounded = np.round(values.astype(np.float64), 6)
    return np.where(np.isfinite(rounded), rounded, None).tolist()


def _stats(values: np.ndarray, quantiles: dict[str, float]) -> dict:
    values = values[np.isfinite(values)]
    if not len(values):
        return {name: None for name in quantiles} | {"mean": None, "n": 0}
    return {name: float(np.quantile(values, q)) for name, q in quantiles.items()} | {
        "mean": float(values.mean()), "n": int(len(values))}


def _compare_core(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-neuron and per-channel agreement of counts [N, T, C, H, W] of one core."""
    c, h, w = a.shape[2:]
    n = c * h * w
    sums = {k: np.zeros(n, dtype=np.int64) for k in ("dot", "ss_a", "ss_b", "sum_a", "sum_b")}
    step = max(1, COMPARE_CHUNK_BYTES // (8 * 2 * max(1, a.shape[1] * n)))
    chunks_a, chunks_b = [], []
    for first in range(0, len(a), step):
        x = a[first:first + step].reshape(-1, n).astype(np.int64)
        y = b[first:first + step].reshape(-1, n).astype(np.int64)
        sums["dot"] += (x * y).sum(axis=0)
        sums["ss_a"] += (x * x).sum(axis=0)
        sums["ss_b"] += (y * y).sum(axis=0)
        sums["sum_a"] += x.sum(axis=0)
        sums["sum_b"] += y.sum(axis=0)
        chunks_a.append(x.reshape(-1, c, h * w).sum(axis=2))
        chunks_b.append(y.reshape(-1, c, h * w).sum(axis=2))
    empty = np.zeros((0, c), dtype=np.int64)
    channel_a, channel_b = np.concatenate([empty, *chunks_a]), np.concatenate([empty, *chunks_b])
    neuron_cos = _cosine(sums["dot"], sums["ss_a"], sums["ss_b"])
    neuron_ratio = _ratio(sums["sum_a"], sums["sum_b"])
    channel_cos = _cosine((channel_a * channel_b).sum(0), (channel_a ** 2).sum(0),
                          (channel_b ** 2).sum(0))
    channel_ratio = _ratio(channel_a.sum(0), channel_b.sum(0))
    active_a, active_b = sums["sum_a"] > 0, sums["sum_b"] > 0
    total_a, total_b = int(sums["sum_a"].sum()), int(sums["sum_b"].sum())
    core_cos = _cosine(sums["dot"].sum(), sums["ss_a"].sum(), sums["ss_b"].sum())
    spread = {"median": 0.5, "p10": 0.1, "min": 0.0}
    return {
        "neurons": n,
        "shape": [c, h, w],
        "spikes": {"a": total_a, "b": total_b},
        "count_ratio": _finite(total_b / total_a) if total_a else None,
        "cosine": _finite(float(core_cos)),
        "neurons_active": {"a": int(active_a.sum()), "b": int(active_b.sum()),
                           "both": int((active_a & active_b).sum()),
                           "only_a": int((active_a & ~active_b).sum()),
                           "only_b": int((active_b & ~active_a).sum()),
                           "neither": int((~active_a & ~active_b).sum())},
        "neuron_cosine": _stats(neuron_cos, spread),
        "neuron_count_ratio": _stats(neuron_ratio[active_a & active_b],
                                     {"median": 0.5, "p10": 0.1, "p90": 0.9}),
        "channel_cosine": _stats(channel_cos, spread),
        "channel_count_ratio": _stats(channel_ratio[np.isfinite(channel_ratio)],
                                      {"median": 0.5, "min": 0.0, "max": 1.0}),
        "per_channel": {"cosine": _json_array(channel_cos), "count_ratio": _json_array(channel_ratio),
                        "spikes_a": channel_a.sum(0).tolist(), "spikes_b": channel_b.sum(0).tolist()},
        "per_neuron": {"cosine": _json_array(neuron_cos.reshape(c, h, w)),
                       "count_ratio": _json_array(neuron_ratio.reshape(c, h, w)),
                       "spikes_a": sums["sum_a"].reshape(c, h, w).tolist(),
                       "spikes_b": sums["sum_b"].reshape(c, h, w).tolist()},
    }


def compare(a: Monitor, b: Monitor, *, name_a: str = "A", name_b: str = "B") -> dict:
    """Per core: cosine similarity (over windows x bins) and count ratio B/A, per neuron and per
    channel, with summaries. Each neuron's counts form one vector over all windows and bins;
    cosine 1 means the same spikes up to a scale, the count ratio gives that scale. Undefined
    values are null in JSON: a cosine of a neuron silent in both, a ratio of one silent in A."""
    cores = _check_comparable(a, b, name_a, name_b)
    return {
        "a": {"file": name_a, "engine": a.engine, "cores": sorted(a.counts)},
        "b": {"file": name_b, "engine": b.engine, "cores": sorted(b.counts)},
        "chip": a.chip, "data": a.data, "windows": a.n_windows, "bins": a.n_bins,
        "chip_config_sha256": a.config_hash(),
        "cores": {str(c): {"layer": a.core_names.get(c, ""), **_compare_core(a.counts[c], b.counts[c])}
                  for c in cores},
    }


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def format_comparison(report: dict) -> str:
    """The summary table ``asa-deploy compare`` prints (the JSON holds every number)."""
    a, b = report["a"], report["b"]
    lines = [f"A: {a['file']} ({a['engine']})",
             f"B: {b['file']} ({b['engine']})",
             f"{report['windows']} windows x {report['bins']} bins of {report['data']} on "
             f"{report['chip']}; cosine over windows x bins, ratio = B / A",
             f"{'core':>4s} {'layer':12s} {'neurons':>7s} {'active A/B/both':>17s} {'spikes A':>10s} "
             f"{'spikes B':>10s} {'ratio':>6s} {'cosine':>6s} {'neuron cos med (p10)':>20s} "
             f"{'channel cos mean (min)':>22s}"]
    for core, r in report["cores"].items():
        act = r["neurons_active"]
        nc, cc = r["neuron_cosine"], r["channel_cosine"]
        lines.append(
            f"{core:>4s} {r['layer'][:12]:12s} {r['neurons']:7d} "
            f"{act['a']:>5d}/{act['b']:>5d}/{act['both']:>5d} {r['spikes']['a']:10d} "
            f"{r['spikes']['b']:10d} {_fmt(r['count_ratio'], '6.3f'):>6s} {_fmt(r['cosine'], '6.3f'):>6s} "
            f"{_fmt(nc['median']):>12s} ({_fmt(nc['p10'])}) {_fmt(cc['mean']):>14s} ({_fmt(cc['min'])})")
    return "\n".join(lines)


def compare_files(path_a: str | Path, path_b: str | Path, out: str | Path | None = None) -> dict:
    """``compare`` two monitor files and write the JSON (default: beside A, named after both);
    returns the report with ``file`` set to where it was written."""
    path_a, path_b = Path(path_a), Path(path_b)
    report = compare(Monitor.load(path_a), Monitor.load(path_b), name_a=str(path_a), name_b=str(path_b))
    out = Path(out) if out is not None else compare_json(path_a, path_b)
    write_json(out, report)
    return {**report, "file": str(out)}
