"""DataLoader worker processes that cannot deadlock when they start.

A forked child inherits every lock of its parent in the state the parent's other threads left it
(torch's intra-op pool, tqdm's monitor, torch.distributed's gloo threads). A child forked while one
of them held CPython's thread-state lock waits forever (issue 19: rank 0's worker stuck in
``PyOS_AfterFork_Child`` while rank 1 waited in ``all_reduce``). So workers are *spawned*: a fresh
interpreter inherits no lock. It is the start method torch's documentation advises for processes
that run threads, the default on macOS and Windows, and the one ``simulate --jobs`` and
``camera --jobs`` use (``asa_deploy.chip.sim.parallel``).

A spawned worker pays its start-up (importing torch, about a second) once per DataLoader, so
training keeps its workers for all epochs (``persistent_workers``), and every DataLoader gets a
timeout: a worker that stops answering is an error naming the cause, never a silent wait.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from typing import Any

from asa_deploy.errors import AsaDeployError

WORKER_START_METHOD = "spawn"
WORKER_TIMEOUT_S = 600.0
"""Longest wait for one batch from a worker. Framing a batch takes well under a second; a worker
that needs ten minutes is hung (or the machine swaps), and saying so beats waiting forever."""


class WorkerTimeoutError(AsaDeployError):
    """A DataLoader worker sent no batch within ``WORKER_TIMEOUT_S``."""


def worker_options(workers: int, *, persistent: bool) -> dict[str, Any]:
    """DataLoader keyword arguments for ``workers`` spawned processes (none for 0: the batches are
    framed in the calling process). ``persistent``: the workers live as long as the DataLoader."""
    if workers == 0:
        return {}
    return {"num_workers": workers, "timeout": WORKER_TIMEOUT_S, "persistent_workers": persistent,
            "multiprocessing_context": multiprocessing.get_context(WORKER_START_METHOD)}


def batches_of(loader: Iterable) -> Iterator:
    """``loader``'s batches; a worker's timeout (torch raises a bare RuntimeError) becomes a
    ``WorkerTimeoutError`` that says what to try."""
    try:
        yield from loader
    except RuntimeError as exc:
        if "DataLoader timed out" not in str(exc):
            raise
        raise WorkerTimeoutError(
            f"a data loader worker sent no batch for {WORKER_TIMEOUT_S:.0f} s ({exc}); the "
            f"machine may be out of memory (each worker holds its own copy of in-memory data) or "
            f"a worker hung: rerun with --workers 0, or with fewer workers") from exc
