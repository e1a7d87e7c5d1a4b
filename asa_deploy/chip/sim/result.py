"""What both simulators take (``EventWindow``) and give back (``SimResult``), so every report,
benchmark and comparison reads one shape whichever engine ran."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from asa_deploy.chip.sim.window import EventWindow
from asa_deploy.data.framing import predict_classes

if TYPE_CHECKING:
    from asa_deploy.chip.config import ChipConfig


@dataclass
class SimResult:
    """Per-window counts of one simulation run; arrays are int64 with windows along axis 0."""

    engine: str
    core_ids: list[int]            # column order of the per-core arrays
    class_names: list[str]
    output_spikes: np.ndarray      # [N, n_bins, num_classes] spikes on the readout class channels
    predictions: np.ndarray        # [N] argmax of summed output spikes (ties: lowest), -1 if silent
    labels: np.ndarray             # [N]
    spikes_per_core: np.ndarray    # [N, n_cores] after decimation, before destination pooling
    synops_per_core: np.ndarray    # [N, n_cores] neuron updates (zero weights, killed neurons included)
    # synops_per_core split by what caused the update: an event entering the chip (from the DVS
    # layer or the host) or a spike of another core; the two sum to synops_per_core.
    input_synops_per_core: np.ndarray    # [N, n_cores]
    network_synops_per_core: np.ndarray  # [N, n_cores]
    input_events: np.ndarray       # [N] events inside the window
    dropped_events: np.ndarray     # [N] of those, removed by the DVS layer
    latency_events: np.ndarray     # [N] input events processed until the first output spike; -1: none
    wall_seconds: float
    recordings: list[str] = field(default_factory=list)
    # Per-neuron output spikes of the monitored cores: {core: uint [N, n_bins, C, H, W]}, counted
    # where ``spikes_per_core`` is (after decimation, before destination pooling), so they sum to it.
    monitor: dict[int, np.ndarray] = field(default_factory=dict)

    def accuracy_window(self) -> float:
        """Mean of ``predictions == labels`` over labelled windows (NaN when none is labelled)."""
        labelled = self.labels >= 0
        if not labelled.any():
            return math.nan
        return float(np.mean(self.predictions[labelled] == self.labels[labelled]))

    def to_dict(self) -> dict:
        """A JSON-ready summary (no per-window arrays); NaN-free so strict JSON parsers accept it."""
        n = len(self.labels)
        accuracy = self.accuracy_window()
        spiked = self.latency_events >= 0
        total_events = int(self.input_events.sum())
        total_synops = int(self.synops_per_core.sum())
        def rate(count: int) -> float | None:
            return count / self.wall_seconds if self.wall_seconds > 0 else None

        def per_core(array: np.ndarray) -> dict:
            return {
                "total": {str(c): int(array[:, i].sum()) for i, c in enumerate(self.core_ids)},
                "mean": {str(c): float(array[:, i].mean()) if n else 0.0
                         for i, c in enumerate(self.core_ids)},
            }

        return {
            "engine": self.engine,
            "n_windows": n,
            "accuracy_window": None if math.isnan(accuracy) else accuracy,
            "spikes_per_core": per_core(self.spikes_per_core),
            "synops_per_core": per_core(self.synops_per_core),
            "input_synops_per_core": per_core(self.input_synops_per_core),
            "network_synops_per_core": per_core(self.network_synops_per_core),
            "input_events": total_events,
            "dropped_events": int(self.dropped_events.sum()),
            "mean_latency_events": float(self.latency_events[spiked].mean()) if spiked.any() else None,
            "silent_windows": int(n - spiked.sum()),
            "wall_seconds": float(self.wall_seconds),
            "events_per_second": rate(total_events),
            "synops_per_second": rate(total_synops),
        }

    @staticmethod
    def concatenate(results: list[SimResult]) -> SimResult:
        """Join runs of the same engine on the same config (e.g. chunks of a dataset)."""
        if not results:
            raise ValueError("SimResult.concatenate needs at least one result")
        first = results[0]
        for r in results[1:]:
            if (r.engine, r.core_ids, r.class_names) != (first.engine, first.core_ids, first.class_names):
                raise ValueError("SimResult.concatenate: results differ in engine, cores or classes "
                                 f"({r.engine}, {r.core_ids} vs {first.engine}, {first.core_ids})")
            if sorted(r.monitor) != sorted(first.monitor):
                raise ValueError(f"SimResult.concatenate: results monitor different cores "
                                 f"({sorted(r.monitor)} vs {sorted(first.monitor)})")

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(r, name) for r in results], axis=0)

        return SimResult(
            engine=first.engine, core_ids=list(first.core_ids), class_names=list(first.class_names),
            output_spikes=cat("output_spikes"), predictions=cat("predictions"), labels=cat("labels"),
            spikes_per_core=cat("spikes_per_core"), synops_per_core=cat("synops_per_core"),
            input_synops_per_core=cat("input_synops_per_core"),
            network_synops_per_core=cat("network_synops_per_core"),
            input_events=cat("input_events"), dropped_events=cat("dropped_events"),
            latency_events=cat("latency_events"),
            wall_seconds=float(sum(r.wall_seconds for r in results)),
            recordings=[name for r in results for name in r.recordings],
            monitor={core: np.concatenate([r.monitor[core] for r in results]) for core in first.monitor},
        )


def assemble(engine: str, config: ChipConfig, windows: Sequence[EventWindow], output_spikes: np.ndarray,
             spikes_per_core: np.ndarray, synops_per_core: np.ndarray, input_synops: np.ndarray,
             input_events: np.ndarray, dropped_events: np.ndarray, latency_events: np.ndarray,
             wall_seconds: float, monitor: MonitorCounts | None = None) -> SimResult:
    """The one place both engines turn their counts into a ``SimResult``; ``input_synops``
    [N, n_cores] is the input-driven part of ``synops_per_core``, the rest is network-driven;
    ``input_events`` / ``dropped_events`` [N]: each window's ``ChipInput.n_input`` / ``n_dropped``
    (the engines keep these counts, not the windows' ``ChipInput``s: 24 bytes per event)."""
    readout = config.readout
    return SimResult(
        engine=engine,
        core_ids=config.core_ids(),
        class_names=list(readout.class_names) or [str(k) for k in range(readout.num_classes)],
        output_spikes=output_spikes,
        predictions=predict(output_spikes),
        labels=np.array([w.label for w in windows], dtype=np.int64),
        spikes_per_core=spikes_per_core,
        synops_per_core=synops_per_core,
        input_synops_per_core=input_synops,
        network_synops_per_core=synops_per_core - input_synops,
        input_events=np.asarray(input_events, dtype=np.int64),
        dropped_events=np.asarray(dropped_events, dtype=np.int64),
        latency_events=latency_events,
        wall_seconds=wall_seconds,
        recordings=[w.recording for w in windows],
        monitor={} if monitor is None else monitor.arrays,
    )


def count_dtype(largest: int) -> np.dtype:
    """The smallest unsigned integer type that holds counts up to ``largest``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class MonitorCounts:
    """Per-neuron spike counts of some cores, filled window by window.

    Each array [N, n_bins, C, H, W] starts as uint8 and is widened only when a count needs it, so a
    monitored neuron costs one byte per window and bin unless it fires more than 255 times in a bin;
    unmonitored cores cost nothing."""

    def __init__(self, config: ChipConfig, cores: Sequence[int], n_windows: int, n_bins: int):
        self.arrays = {int(c): np.zeros((n_windows, n_bins, *config.core(c).neuron_shape), np.uint8)
                       for c in cores}

    def put(self, core: int, first: int, counts: np.ndarray) -> None:
        """Store ``counts`` [n, n_bins, C, H, W] (non-negative integers, any numeric dtype) as
        windows ``first .. first + n - 1`` of ``core``."""
        target = self.arrays[core]
        largest = counts.max(initial=0)
        if largest > np.iinfo(target.dtype).max:
            target = self.arrays[core] = target.astype(count_dtype(int(largest)))
        target[first:first + len(counts)] = counts


def predict(output_spikes: np.ndarray) -> np.ndarray:
    """Classes of ``output_spikes`` [N, bins, classes] by the project's one rule (silent: -1)."""
    return predict_classes(output_spikes.sum(axis=1))
