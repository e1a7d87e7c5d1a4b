"""Simulation in several processes (``simulate --jobs N``, ``camera --replay A B --jobs N``).

Every window starts from reset states, so windows are independent: they are cut into contiguous
chunks, each chunk is simulated whole in a worker, and the parent joins the results in window
order. Every count is then the one a single process gives (the ``fast`` engine's float32 sums hold
integers well below 2**24, so the thread count and batch size cannot change them); only
``wall_seconds`` differs, and is the parent's elapsed time, so rates stay rates of the whole run.

Workers are started with ``spawn`` (a forked torch runtime can deadlock) and use one torch thread
each, so N jobs use N cores and no more.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import replace

from tqdm import tqdm

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, SimResult, simulate

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
            futures: dict[Future, int] = {pool.submit(_simulate_chunk, [windows[i] for i in part]): k
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
    return simulate(_worker["config"], windows, _worker["engine"], monitor=_worker["monitor"])
