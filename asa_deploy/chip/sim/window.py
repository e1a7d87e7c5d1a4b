"""``EventWindow``: the unit both simulators, the DVS layer and the board runtime consume. Its own
module so that the DVS layer and the result type both build on it without importing each other.

A window's events may also be a ``MappedEvents``: a reference to a stretch of the decoded-event
cache (file, offset, length), mapped only while its chunk of windows is simulated. A window that
held the mapped array itself would keep every page of it that was ever read resident, so a list
of all windows of a data set would hold the data set (``simulate`` on DVS Gesture: 20 GB).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.errors import DataSpecError


@dataclass(frozen=True)
class MappedEvents:
    """Events that lie in a file (``count`` events from byte ``offset``), held in place of the
    array; ``size`` and ``mtime_ns`` tell whether the file is still the one mapped."""

    path: str
    offset: int
    count: int
    size: int
    mtime_ns: int

    @property
    def nbytes(self) -> int:
        return self.count * EVENT_DTYPE.itemsize

    def load(self) -> np.ndarray:
        try:
            st = os.stat(self.path)
            if (st.st_size, st.st_mtime_ns) == (self.size, self.mtime_ns):
                return np.asarray(np.memmap(self.path, dtype=EVENT_DTYPE, mode="r",
                                            offset=self.offset, shape=(self.count,)))
            why = "it was rewritten"
        except OSError as exc:
            why = exc.strerror or str(exc)
        raise DataSpecError(f"{self.path}: the cached events changed or vanished while simulating "
                            f"({why}); rerun the command (the cache entry is rebuilt), or pass "
                            "--no-cache")


@dataclass
class EventWindow:
    """One stretch of events fed to a freshly reset chip.

    ``events`` (``EVENT_DTYPE``, sensor coordinates = ``config.input_shape()``) should be sorted by
    ``t``; or a ``MappedEvents`` (``loaded`` maps it). Bin b holds ``t_start + b*dt_us <= t <
    t_start + (b+1)*dt_us``; events outside ``[t_start, t_start + n_bins*dt_us)`` are ignored and
    counted nowhere. ``duration_us``: the time the window stands for when its last bins only pad
    it to its batch's length (a whole recording among longer ones); None: all ``n_bins``.
    """

    events: np.ndarray | MappedEvents
    t_start: int
    n_bins: int
    dt_us: int
    label: int = -1
    recording: str = ""
    duration_us: int | None = None

    @property
    def t_end(self) -> int:
        return self.t_start + self.n_bins * self.dt_us

    @property
    def seconds(self) -> float:
        """The window's own duration: what its rates, power and energy are per."""
        return (self.n_bins * self.dt_us if self.duration_us is None else self.duration_us) / 1e6


def by_reference(events: np.ndarray) -> np.ndarray | MappedEvents:
    """``events`` as a ``MappedEvents`` when they are a contiguous stretch of a read-only
    ``np.memmap`` (a cached recording, or part of one), else ``events`` themselves (also when the
    file is gone: the mapping still holds the events)."""
    root = events
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not (isinstance(root, np.memmap) and root.mode == "r" and root.filename and len(events)
            and events.dtype == EVENT_DTYPE and events.ndim == 1 and events.flags.c_contiguous):
        return events
    offset = root.offset + events.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    try:
        st = os.stat(root.filename)
    except OSError:
        return events
    return MappedEvents(root.filename, offset, len(events), st.st_size, st.st_mtime_ns)


def loaded(windows: Sequence[EventWindow]) -> list[EventWindow]:
    """``windows`` with every ``MappedEvents`` mapped (once per reference: a recording's windows
    share one mapping); the mappings live as long as the returned windows."""
    mapped: dict[MappedEvents, np.ndarray] = {}
    out = []
    for w in windows:
        if isinstance(w.events, MappedEvents):
            if w.events not in mapped:
                mapped[w.events] = w.events.load()
            w = replace(w, events=mapped[w.events])
        out.append(w)
    return out
