"""Simulation in several processes (``simulate --jobs N``, ``camera --replay A B --jobs N``).

Every window starts from reset states, so windows are independent: they are cut into contiguous
chunks (``plan_chunks``), each chunk is simulated whole, in a worker or with one job in this
process, and the results are joined in window order. Every count is then the one a single
``simulate`` call gives (the ``fast`` engine's float32 sums hold integers well below 2**24, so the
thread count and batch size cannot change them); only ``wall_seconds`` differs, and is the parent's
elapsed time, so rates stay rates of the whole run.

Memory is bounded by a chunk, not by the data set: a chunk holds at most ``CHUNK_BYTES`` of events
and per-window results, and a recording of the decoded-event cache travels as its file, offset and
length (``MappedEvents``), mapped only while its chunk is simulated. Holding every window's events
at once (mapped pages stay resident while a view lives), and each event's DVS-layer output until
the end, took 20.6 GB with one job and 7.3 GB with two over DVS Gesture's size
(benchmarks/scale.py). With ``monitor_to`` the per-neuron counts leave a chunk's result too.

Workers are started with ``spawn`` (a forked torch runtime can deadlock) and use one torch thread
each, so N jobs use N cores and no more.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import replace

import numpy as np

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, SimResult, simulate
from asa_deploy.chip.sim.dvs import common_bins
from asa_deploy.chip.sim.window import MappedEvents, by_reference
from asa_deploy.progress import progress as progress_bar

CHUNKS_PER_JOB = 4  # more chunks than workers, so one slow chunk does not idle the others
CHUNK_BYTES = 64 * 2**20  # events and per-window results of one chunk, at most (but one window's)

__all__ = ["CHUNKS_PER_JOB", "CHUNK_BYTES", "plan_chunks", "process_pool", "simulate_parallel"]

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


def plan_chunks(windows: Sequence[EventWindow], jobs: int, window_bytes: int = 0) -> list[range]:
    """``windows`` cut into contiguous ranges, in order, each of at most ``min(CHUNK_BYTES,
    total / (jobs * CHUNKS_PER_JOB))`` bytes but at least one window: a recording's events count
    once per range (its windows follow each other), and every window adds ``window_bytes``."""
    def shared(i: int) -> bool:  # window i reads the events of window i - 1
        a, b = windows[i].events, windows[i - 1].events
        return a is b or (isinstance(a, MappedEvents) and isinstance(b, MappedEvents) and a == b)

    total = sum(window_bytes + (0 if i and shared(i) else w.events.nbytes)
                for i, w in enumerate(windows))
    target = max(1, min(CHUNK_BYTES, math.ceil(total / (max(1, jobs) * CHUNKS_PER_JOB))))
    parts, first, size = [], 0, 0
    for i, w in enumerate(windows):
        cost = window_bytes + (0 if i > first and shared(i) else w.events.nbytes)
        if i > first and cost and size + cost > target:
            parts.append(range(first, i))
            first, size, cost = i, 0, window_bytes + w.events.nbytes
        size += cost
    if len(windows):
        parts.append(range(first, len(windows)))
    return parts


def simulate_parallel(config: ChipConfig, windows: Sequence[EventWindow], engine: str, jobs: int, *,
                      progress: bool = False, monitor: Sequence[int] = (),
                      monitor_to: Callable[[int, dict[int, np.ndarray]], None] | None = None
                      ) -> SimResult:
    """``simulate`` of ``windows`` a chunk at a time (``plan_chunks``), in ``jobs`` processes, or in
    this one with ``jobs`` 1: only one chunk's events per process are mapped or loaded at once.
    The result equals one ``simulate`` call's but for ``wall_seconds``.

    ``monitor_to(k, counts)``: takes the monitor counts {core: array} of chunk k (numbered in window
    order, handed over in any order), which the result then leaves out (its ``monitor`` is empty)."""
    n_bins = common_bins(windows)
    start = time.perf_counter()
    monitor = tuple(monitor)
    per_window = n_bins * (8 * config.readout.num_classes
                           + sum(math.prod(config.core(c).neuron_shape) for c in monitor))
    parts = plan_chunks(windows, jobs, per_window)
    jobs = min(jobs, len(parts))
    results: dict[int, SimResult] = {}

    def take(k: int, result: SimResult) -> None:
        if monitor_to is not None:
            monitor_to(k, result.monitor)
            result = replace(result, monitor={})
        results[k] = result
        bar.update(len(parts[k]))

    with progress_bar(total=len(windows), enabled=progress, unit="window",
                      desc=f"simulate {engine}" + (f" ({jobs} jobs)" if jobs > 1 else "")) as bar:
        if jobs <= 1:
            for k, part in enumerate(parts):
                take(k, simulate(config, [windows[i] for i in part], engine, monitor=monitor))
        else:
            pool = process_pool(jobs, _keep, (config, engine, monitor))
            try:
                futures: dict[Future, int] = {
                    pool.submit(_simulate_chunk, [replace(windows[i], events=by_reference(windows[i].events))
                                                  for i in part]): k
                    for k, part in enumerate(parts)}
                for future in as_completed(futures):  # popped: a done future holds its result
                    take(futures.pop(future), future.result())
            finally:  # on an error, chunks not started yet are dropped, not simulated for nothing
                pool.shutdown(cancel_futures=True)
    joined = SimResult.concatenate([results[k] for k in range(len(parts))])
    return replace(joined, wall_seconds=time.perf_counter() - start)


def _keep(config: ChipConfig, engine: str, monitor: tuple[int, ...]) -> None:
    _worker.update(config=config, engine=engine, monitor=monitor)


def _simulate_chunk(windows: list[EventWindow]) -> SimResult:
    return simulate(_worker["config"], windows, _worker["engine"], monitor=_worker["monitor"])
