"""Two simulators over a ``ChipConfig`` with one result type.

``fast`` is time-stepped batched torch (what sinabs computes, the training-side reference);
``exact`` is event-driven, depth-first and integer (what the chip computes, as far as documented).
Their differences are the deployment gap a report should show, so both read the same
``EventWindow``s through the same DVS-layer code and return the same ``SimResult``.
"""

from __future__ import annotations

from collections.abc import Sequence

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim.exact import simulate_exact
from asa_deploy.chip.sim.fast import simulate_fast
from asa_deploy.chip.sim.result import SimResult
from asa_deploy.chip.sim.window import EventWindow, loaded

ENGINES = ("fast", "exact")

__all__ = ["ENGINES", "EventWindow", "SimResult", "simulate"]


def simulate(config: ChipConfig, windows: Sequence[EventWindow], engine: str = "fast", *,
             progress: bool = False, monitor: Sequence[int] = ()) -> SimResult:
    """Run ``windows`` through ``config`` on ``engine``; each window starts from reset states.
    ``monitor``: cores whose per-neuron output spike counts ``SimResult.monitor`` keeps. Events
    given as ``MappedEvents`` are mapped for the call (all at once: ``simulate_parallel`` bounds
    memory by calling this a chunk at a time)."""
    windows = loaded(windows)
    if engine == "fast":
        return simulate_fast(config, windows, progress=progress, monitor=monitor)
    if engine == "exact":
        return simulate_exact(config, windows, progress=progress, monitor=monitor)
    raise ValueError(f"unknown simulation engine {engine!r}; choose one of {ENGINES}")
