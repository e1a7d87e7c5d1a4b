"""Simulation in several processes (``simulate --jobs N``, ``camera --replay A B --jobs N``).

Every window starts from reset states, so windows are independent: they are cut into contiguous
chunks, each chunk is simulated whole in a worker, and the parent joins the results in window
order. Every count is then the one a single process gives (the ``fast`` engine's float32 sums hold
integers well below 2**24, so the thread count and batch size cannot change them); only
``wall_seconds`` differs, and is the parent's elapsed time, so rates stay rates of the whole run.

Workers are started with ``spawn`` (a forked torch runtime can deadlock) and use one torch thread
each, so N jobs use N cores and no more. A recording memory-mapped from the decoded-event cache
goes to a worker as its file, offset and length (``MappedEvents``), which the worker maps again:
pickled, its events would pass through a pipe and sit in the worker's RAM, a chunk at a time, so
memory would grow with the data set (with 2 jobs a chunk is 1/8 of the windows: about 1.1 GB of
events at DVS Gesture's size, benchmarks/scale.py).
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, SimResult, simulate
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.errors import DataSpecError

CHUNKS_PER_JOB = 4  # more chunks than workers, so one slow chunk does not idle the others

log = logging.getLogger("asa_deploy.simulate")
_worker: dict = {}  # what a worker's initializer received, kept for every task it runs


def process_pool(jobs: int, initializer: Callable | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """``jobs`` spawned workers with one torch thread each; more jobs than cores is allowed, with a
    warning, as each job then shares a core and the run gets slower, not faster."""
    cores = os.cpu_count() or 1
    if jobs > cores:
        log.warning("%d jobs on %d CPU cores: jobs share cores, which costs time; use --jobs %d "
                    "or fewer", jobs, cores, cores)
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(initializer, initargs))


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    import torch

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def chunks(n: int, count: int) -> list[range]:
    """``n`` items cut into at most ``count`` contiguous ranges of nearly equal size, in order."""
    count = max(1, min(n, count))
    bounds = [n * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def simulate_parallel(config: ChipConfig, windows: Sequence[EventWindow], engine: str, jobs: int, *,
                      progress: bool = False, monitor: Sequence[int] = ()) -> SimResult:
    """``simulate`` over ``jobs`` processes; the result equals one process's but for ``wall_seconds``
    (``jobs`` 1, or a single window: ``simulate`` itself, in this process)."""
    if jobs <= 1 or len(windows) <= 1:
        return simulate(config, windows, engine, progress=progress, monitor=monitor)
    start = time.perf_counter()
    parts = chunks(len(windows), jobs * CHUNKS_PER_JOB)
    jobs = min(jobs, len(parts))
    results: dict[int, SimResult] = {}
    pool = process_pool(jobs, _keep, (config, engine, tuple(monitor)))
    try:
        with tqdm(total=len(windows), disable=None if progress else True,
                  desc=f"simulate {engine} ({jobs} jobs)", unit="window") as bar:
            futures: dict[Future, int] = {
                pool.submit(_simulate_chunk, [replace(windows[i], events=by_reference(windows[i].events))
                                              for i in part]): k
                for k, part in enumerate(parts)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(len(parts[futures[future]]))
    finally:  # on an error, chunks not started yet are dropped, not simulated for nothing
        pool.shutdown(cancel_futures=True)
    joined = SimResult.concatenate([results[k] for k in range(len(parts))])
    return replace(joined, wall_seconds=time.perf_counter() - start)


def _keep(config: ChipConfig, engine: str, monitor: tuple[int, ...]) -> None:
    _worker.update(config=config, engine=engine, monitor=monitor)


def _simulate_chunk(windows: list[EventWindow]) -> SimResult:
    mapped: dict[MappedEvents, np.ndarray] = {}  # a recording's windows share one mapping
    for i, w in enumerate(windows):
        if isinstance(w.events, MappedEvents):
            if w.events not in mapped:
                mapped[w.events] = w.events.load()
            windows[i] = replace(w, events=mapped[w.events])
    return simulate(_worker["config"], windows, _worker["engine"], monitor=_worker["monitor"])


@dataclass(frozen=True)
class MappedEvents:
    """Events that lie in a file (``count`` events from byte ``offset``), sent to a worker in place
    of the array; ``size`` and ``mtime_ns`` tell whether the file is still the one mapped."""

    path: str
    offset: int
    count: int
    size: int
    mtime_ns: int

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
