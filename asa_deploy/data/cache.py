"""Decoded recordings on disk: each recording is decoded once into a memory-mapped ``.npy`` file, so
a data set of any size keeps RAM bounded, and later runs and every torchrun rank skip decoding.

Layout of a cache folder (``open_dataset(..., cache=...)``, ``--cache-dir``)::

    CACHE/<scheme>-<data folder name>-<hash of its absolute path>/   one folder per data set
      index.json   {"decoder": DECODER_VERSION, "recordings": {absolute source path: entry}}
      <hash>.npy   one EVENT_DTYPE array per good recording, opened with np.load(mmap_mode="r")

An entry records the source file's size and mtime, and either the problem that made it a bad
file (so it is named and counted by every later run without being decoded again; I/O errors and
running out of memory are not remembered, they may pass) or its cache file with the facts the
data set needs without reading the events (count, extent, first and last timestamp) and the
results of checking it against each sensor size (``check_events`` reads every event).

Nothing in the cache is trusted that cannot be verified: an index that cannot be read or was
written by another ``DECODER_VERSION`` is started afresh, an entry whose source changed size or
mtime is decoded again, and a cache file whose size or ``.npy`` header disagrees with its entry
(truncated, overwritten) is rebuilt. Every file is written to a temporary name and renamed
(``io.atomic_output``), so runs sharing the folder (torchrun ranks) never read a half-written
file; two ranks decoding the same recording write the same bytes.

Why not tonic's ``DiskCachedDataset``: it stores ``dataset[index]`` (after transforms) as
``<index>_<copy>.hdf5`` and "will simply check if there is a file present with the index", so an
edited, added or removed recording, or a new decoder, silently serves stale data; a recording
that fails to decode is only an exception, so it is decoded (and fails) again in every run and
cannot be skipped and counted; each sample is read whole into memory from compressed HDF5
instead of being memory-mapped; and it writes straight to the final name, which another rank may
read half-written. The data set here needs the cache keyed by source identity, holding the
validation results, below the transforms (framing happens per epoch with fresh RCS windows).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asa_deploy import io
from asa_deploy.data.events import EVENT_DTYPE, SensorSize, as_events, check_events
from asa_deploy.errors import ArtifactError, BadRecordingError, DataSpecError

logger = logging.getLogger("asa_deploy.data")

# Bump whenever a reader (readers.py) or as_events decodes any file differently: every cache
# entry written before is then decoded again.
DECODER_VERSION = 1
INDEX = "index.json"
# ``open_dataset``'s ``cache``: None or False (memory), True (the default folder) or a folder.
CacheSetting = bool | str | os.PathLike | None


def decode(source: str, load: Callable[[], np.ndarray]) -> np.ndarray:
    """One recording as ``EVENT_DTYPE``; any decoder failure is one bad file, not a crash."""
    try:
        events = load()
        return events if events.dtype == EVENT_DTYPE else as_events(events, source)
    except BadRecordingError:
        raise
    except Exception as exc:
        raise BadRecordingError(source, f"cannot decode ({type(exc).__name__}: {exc})") from exc


class InMemory:
    """A decoded recording held in RAM (synthetic data, ``from_arrays``, no cache). Read-only, so a
    transform cannot silently change the data seen by later epochs; the caller's own array stays
    writeable."""

    def __init__(self, events: np.ndarray):
        self._events = events.view()
        self._events.flags.writeable = False

    def events(self) -> np.ndarray:
        return self._events

    @property
    def extent(self) -> tuple[int, int] | None:
        """Largest x + 1 and y + 1 (None without events): what a sensor must hold."""
        ev = self._events
        return (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1) if len(ev) else None

    @property
    def span(self) -> tuple[int, int] | None:
        """First and last timestamp (None without events)."""
        return (int(self._events["t"][0]), int(self._events["t"][-1])) if len(self._events) else None

    def check(self, sensor_size: SensorSize, source: str) -> None:
        check_events(self._events, sensor_size, source)


class Cached:
    """A recording in the disk cache, memory-mapped anew on each access: RAM holds only the pages
    in use, and no file stays open (a data set may hold 100,000 recordings)."""

    def __init__(self, path: Path, source: str, entry: dict):
        self.path, self.source, self.n = path, source, entry["n"]
        self.extent = tuple(entry["extent"]) if entry["extent"] else None
        self.span = tuple(entry["span"]) if entry["span"] else None
        self._checks: dict[str, str | None] = entry["checks"]  # the index's own: results are saved

    def events(self) -> np.ndarray:
        try:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                raise DataSpecError(
                    f"{self.path}: too many cached recordings in use at once (each holds an open "
                    f"file while its array lives); raise the open-file limit (ulimit -n) or pass "
                    f"--no-cache") from exc
            why = io.brief(exc)
        except ValueError as exc:
            why = io.brief(exc)
        else:
            if mapped.dtype == EVENT_DTYPE and mapped.shape == (self.n,):
                return np.asarray(mapped)  # a plain read-only ndarray over the mapping
            why = f"it holds {mapped.shape} {mapped.dtype}, not the {self.n} events cached"
        raise DataSpecError(
            f"{self.path}: the cached events of {self.source} changed or vanished while in use "
            f"({why}); rerun the command (the cache entry is rebuilt), or pass --no-cache")

    def check(self, sensor_size: SensorSize, source: str) -> None:
        """``check_events`` once per sensor size; the result is kept in the index."""
        key = "x".join(map(str, sensor_size))
        if key not in self._checks:
            try:
                check_events(self.events(), sensor_size, source)
            except BadRecordingError as exc:
                self._checks[key] = exc.problem
                raise
            self._checks[key] = None
        elif self._checks[key] is not None:
            raise BadRecordingError(source, self._checks[key])


class DiskCache:
    """One data set's folder in the cache: decodes what its index does not hold, trusted, and
    writes the index back (``save``) when anything changed."""

    def __init__(self, folder: Path):
        _allow_open_files()
        self.folder = folder
        self._index_path = folder / INDEX
        self._entries = self._read_index()
        self._saved = self._index_text()

    def _read_index(self) -> dict:
        if not self._index_path.exists():
            return {}
        try:
            index = io.load_json(self._index_path, "decoded-event cache index",
                                 remedy="rebuilding it (every recording is decoded again)")
        except ArtifactError as exc:
            logger.warning("%s", exc)
            return {}
        if index.get("decoder") != DECODER_VERSION or not isinstance(index.get("recordings"), dict):
            logger.info("%s: written by decoder version %r, this is %d; decoding every recording "
                        "again", self._index_path, index.get("decoder"), DECODER_VERSION)
            return {}
        return index["recordings"]

    def _index_text(self) -> str:
        return json.dumps({"decoder": DECODER_VERSION, "recordings": self._entries}, indent=1)

    def cached(self, source: str) -> Cached | None:
        """The recording when the cache holds it, trusted, else None; decodes and writes nothing
        (a cached bad file raises its problem)."""
        key, identity = _key(source)
        entry = self._entries.get(key)
        return None if entry is None or identity is None else self._lookup(entry, identity, source)

    def decode(self, source: str, load: Callable[[], np.ndarray]) -> Cached | InMemory:
        """The recording from the cache when its entry can be trusted, else decoded and cached;
        a bad file raises ``BadRecordingError`` with its problem, cached or new."""
        key, identity = _key(source)
        if identity is None:  # no file (e.g. listed in labels.csv but missing): nothing to key on
            return InMemory(decode(source, load))
        cached = self.cached(source)
        if cached is not None:
            return cached
        try:
            events = decode(source, load)
        except BadRecordingError as exc:
            if not isinstance(exc.__cause__, OSError | MemoryError):  # those may pass: retry
                self._entries[key] = {**identity, "problem": exc.problem}
            raise
        path = self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
        try:
            with io.atomic_output(path, durable=False) as tmp, open(tmp, "wb") as f:
                np.save(f, events)
        except OSError as exc:
            raise DataSpecError(
                f"cannot write the decoded-event cache file {path} ({exc.strerror or exc}); free "
                f"space in {self.folder}, give another folder with --cache-dir DIR, or pass "
                "--no-cache") from exc
        memory = InMemory(events)
        entry = {**identity, "problem": None, "file": path.name, "bytes": path.stat().st_size,
                 "n": len(events), "extent": memory.extent, "span": memory.span, "checks": {}}
        self._entries[key] = entry
        return Cached(path, source, entry)

    def _lookup(self, entry, identity: dict, source: str) -> Cached | None:
        """The cached recording when ``entry`` still describes ``source`` and its cache file is
        intact; a cached bad file raises its problem; None: decode it again."""
        try:
            if {k: entry[k] for k in identity} != identity:
                logger.info("%s changed since it was cached; decoding it again", source)
                return None
            if entry["problem"] is not None:
                raise BadRecordingError(source, str(entry["problem"]))
            path = self.folder / entry["file"]
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            size = path.stat().st_size
            if (version, dtype, shape, size) == ((1, 0), EVENT_DTYPE, (entry["n"],), entry["bytes"]):
                return Cached(path, source, entry)
            why = (f"{size} bytes holding {shape} {dtype}, not {entry['bytes']} bytes of "
                   f"{entry['n']} events")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = io.brief(exc)
        logger.warning("cache entry of %s is truncated or unreadable (%s); decoding it again",
                       source, why)
        return None

    def save(self) -> None:
        """Write the index when it changed (new entries or check results)."""
        text = self._index_text()
        if text != self._saved:
            try:
                io.write_text(self._index_path, text + "\n")
            except OSError as exc:
                logger.warning("cannot write %s (%s); the next run decodes again",
                               self._index_path, exc.strerror or exc)
            self._saved = text


def _key(source: str) -> tuple[str, dict | None]:
    """A source's index key and identity (size and mtime; None when it cannot be stat'ed)."""
    try:
        st = os.stat(source)
    except OSError:
        return os.path.abspath(source), None
    return os.path.abspath(source), {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/asa_deploy``, else ``~/.cache/asa_deploy``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asa_deploy"


def open_cache(cache: CacheSetting, scheme: str, root: Path) -> DiskCache | None:
    """The cache of the data set in ``root`` (see ``open_dataset``'s ``cache``), or None: memory."""
    if not cache:
        return None
    root = root.resolve()
    name = f"{scheme}-{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
    if cache is not True:
        folder = Path(cache).expanduser()
        why = io.unwritable_reason(folder / name)
        if why:
            raise DataSpecError(
                f"cannot write the decoded-event cache in {folder} ({why}); give a writable folder "
                "with --cache-dir DIR, or pass --no-cache to keep decoded recordings in memory")
        return DiskCache(folder / name)
    # The user's cache folder, never the data folder: a shared data set stays as it was given.
    folder = user_cache_dir()
    why = io.unwritable_reason(folder / name)
    if not why:
        return DiskCache(folder / name)
    logger.warning(
        "cannot write a decoded-event cache in %s (%s); keeping every decoded recording in memory "
        "instead, which takes RAM for the whole data set in every process (each torchrun rank) "
        "and decodes it again in every run; pass --cache-dir DIR (a writable folder) to cache it, "
        "or --no-cache to choose memory", folder, why)
    return None


def _allow_open_files() -> None:
    """Lift the soft limit of open files (often 1024) to the hard one, as systemd advises programs
    that need many: a memory map holds a file descriptor while its array lives, and ``simulate``
    keeps every window's recording (1,342 for all of DVS Gesture)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # macOS refuses an unlimited soft limit: keep what there is
            pass
