"""Live inference, one interface for a real chip and for a recording replayed as a virtual camera.

A ``Camera`` yields one ``WindowDecision`` per window of the compiled run's frame spec (T x dt):
the class, the output spikes, the input events, the latency from the window's first input event to its
first output spike (the earliest moment a decision is possible; event timestamps, so the same
measure on chip and in simulation), and how long the decision took on the host. ``ReplayCamera``
cuts a recording (any format ``asa_deploy.data.readers`` reads) into windows and runs each through
the ``exact`` simulator, optionally paced to the wall clock (``realtime``); ``DeviceCamera`` reads the
same decisions from a board's monitored output spikes through the samna adapter. On a board,
``spikes`` counts the monitored cores' spikes only (the others never reach the host), and
``input_events`` the DVS layer's output events (after its pooling and region of interest).

``replay_files`` replays several recordings, in worker processes with ``jobs`` > 1 (one file per
worker at a time; a file's windows follow each other, as on a camera), each file's decisions the
same as when it is replayed alone.

The real-time factor is one quantity for one file or many, any ``jobs``: recorded seconds / wall-clock
seconds of processing them (``summarize``), the wall clock running from the replay's start to its
last decision, so reading the files, the simulator's start-up and the worker processes' are in it
(above 1: faster than the camera records). For a whole command that is the total recorded duration
over the total wall time; for one recording of several (``Replay``), its duration over its own time
in its worker, from loading it to its last decision. The host's compute for the decisions alone is
``decision_seconds`` (the sum of the windows' ``decision_ms``), and recorded seconds over it is
``decision_speed``: how much faster than real time the simulator decides, start-up left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.chip.sim.parallel import process_pool
from asa_deploy.data.framing import FrameSpec
from asa_deploy.data.readers import read_recording
from asa_deploy.errors import BadRecordingError, ChipConfigError


@dataclass
class WindowDecision:
    index: int
    t_start_us: int
    prediction: int          # -1: no output spike in the window
    class_name: str
    output_spikes: int
    input_events: int
    spikes: int              # all cores
    first_spike_latency_ms: float | None  # window's first input event -> first output spike
    decision_ms: float       # host time to produce the decision after the window closed


def window_spec(config: ChipConfig) -> FrameSpec:
    if "frame_spec" not in config.meta:
        raise ChipConfigError("this chip_config.json has no frame_spec in its meta; compile it from "
                              "a run directory (asa-deploy compile RUN_DIR)")
    return FrameSpec(**config.meta["frame_spec"])


class ReplayCamera:
    """A recording as a virtual DVS camera, decided window by window by the ``exact`` simulator."""

    def __init__(self, config: ChipConfig, path: str | Path, *, realtime: bool = False,
                 engine: str = "exact"):
        self.config, self.path, self.realtime, self.engine = config, Path(path), realtime, engine
        self.frames = window_spec(config)
        p, h, w = config.input_shape()
        self.events = read_recording(self.path, (w, h, p))
        if int(self.events["p"].max()) >= p:
            raise BadRecordingError(str(self.path), f"polarity {int(self.events['p'].max())} but the "
                                                    f"chip input has {p} polarity channel(s)")
        self.names = config.readout.class_names or [str(i) for i in range(config.readout.num_classes)]
        # compile the simulator's kernel now, not inside the first window's decision time
        simulate(config, [EventWindow(self.events[:1], int(self.events["t"][0]), 1, 1)], engine)

    @property
    def duration_s(self) -> float:
        return float(self.events["t"][-1] - self.events["t"][0] + 1) / 1e6

    def __iter__(self) -> Iterator[WindowDecision]:
        window_us = self.frames.T * self.frames.dt_us
        t0 = int(self.events["t"][0])
        starts = range(t0, int(self.events["t"][-1]) + 1, window_us)
        wall0 = time.perf_counter()
        for index, start in enumerate(starts):
            if self.realtime:  # pace: a window is decided no earlier than it has been "recorded"
                due = (start + window_us - t0) / 1e6
                time.sleep(max(0.0, due - (time.perf_counter() - wall0)))
            begin = time.perf_counter()
            window = EventWindow(self.events, start, self.frames.T, self.frames.dt_us,
                                 recording=str(self.path))
            result = simulate(self.config, [window], self.engine)
            decision_ms = (time.perf_counter() - begin) * 1e3
            yield self._decision(index, start, window_us, result, decision_ms)

    def _decision(self, index, start, window_us, result, decision_ms) -> WindowDecision:
        inside = self.events["t"][(self.events["t"] >= start) & (self.events["t"] < start + window_us)]
        latency = None
        k = int(result.latency_events[0])
        if k > 0 and len(inside):
            latency = float(np.sort(inside)[k - 1] - inside.min()) / 1e3
        prediction = int(result.predictions[0])
        return WindowDecision(
            index=index, t_start_us=int(start), prediction=prediction,
            class_name=self.names[prediction] if prediction >= 0 else "-",
            output_spikes=int(result.output_spikes[0].sum()), input_events=int(len(inside)),
            spikes=int(result.spikes_per_core[0].sum()), first_spike_latency_ms=latency,
            decision_ms=decision_ms)


@dataclass
class Replay:
    """One recording replayed whole: its decisions and the wall-clock time from loading it to its
    last decision."""

    path: Path
    duration_s: float
    decisions: list[WindowDecision]
    wall_seconds: float

    def summary(self) -> dict:
        return {"file": str(self.path), **summarize(self.decisions, self.wall_seconds, self.duration_s)}


def replay(config: ChipConfig, path: str | Path, *, realtime: bool = False,
           on_decision: Callable[[Path, WindowDecision], None] | None = None) -> Replay:
    """``path`` through a ``ReplayCamera``; ``on_decision`` sees each decision as it is made."""
    start = time.perf_counter()
    camera = ReplayCamera(config, path, realtime=realtime)
    decisions = []
    for decision in camera:
        decisions.append(decision)
        if on_decision is not None:
            on_decision(camera.path, decision)
    return Replay(camera.path, camera.duration_s, decisions, time.perf_counter() - start)


def replay_files(config: ChipConfig, paths: Sequence[str | Path], *, jobs: int = 1,
                 realtime: bool = False,
                 on_decision: Callable[[Path, WindowDecision], None] | None = None) -> Iterator[Replay]:
    """Each of ``paths`` replayed, yielded in the order given. ``jobs`` > 1: that many files at once
    in worker processes, ``on_decision`` called once a file is handed back; pacing to the wall clock
    (``realtime``) is then refused, as several files would not play in real time each."""
    if jobs <= 1 or len(paths) <= 1:
        for path in paths:
            yield replay(config, path, realtime=realtime, on_decision=on_decision)
        return
    if realtime:
        raise ValueError("realtime replay is one file at a time: use jobs=1")
    pool = process_pool(min(jobs, len(paths)))
    try:
        futures = [pool.submit(replay, config, path) for path in paths]
        for future in futures:
            done = future.result()
            for decision in done.decisions if on_decision is not None else ():
                on_decision(done.path, decision)
            yield done
    finally:  # on an error, files not started yet are dropped, not replayed for nothing
        pool.shutdown(cancel_futures=True)


class DeviceCamera:
    """The chip's own DVS, decided window by window as the replay is: each window the board's
    neuron states and time base are reset, it listens one window with its sensor passed into the
    network (``pass_sensor_events`` True, the only case: NB play_with_speck_dvs), and the class is
    read from its monitored output spikes. The DVS layer's output is monitored too (layer-13
    ``Spike``s), so input events and the first-spike latency are counted as the replay counts them.
    The board listens ``window`` out of every ``window + apply_wait_s`` seconds (the reset's wait).
    ``session`` options: ``asa_deploy.device.samna_adapter.DeviceSession``."""

    def __init__(self, config: ChipConfig, device: str, *, duration_s: float = 10.0, **session):
        from asa_deploy.device.samna_adapter import DeviceSession, require_samna

        require_samna()
        self.config, self.duration_s = config, duration_s
        self.frames = window_spec(config)
        self.session = DeviceSession(device, config, sensor_events=True, monitor_input=True,
                                     **session)
        self.names = config.readout.class_names or [str(i) for i in range(config.readout.num_classes)]

    @property
    def window_us(self) -> int:
        return self.frames.T * self.frames.dt_us

    @property
    def n_windows(self) -> int:
        return max(1, int(self.duration_s * 1e6) // self.window_us)

    def __iter__(self) -> Iterator[WindowDecision]:
        with self.session as session:
            for index in range(self.n_windows):
                out = session.listen_window(self.window_us)
                begin = time.perf_counter()
                prediction = out.prediction(self.config)
                counts = out.class_counts(self.config)
                first_out = out.spikes["timestamp"][
                    out.spikes["layer"] == self.config.readout.source_core]
                latency = None
                if len(first_out) and len(out.inputs):
                    latency = float(int(first_out.min()) - int(out.inputs["timestamp"].min())) / 1e3
                yield WindowDecision(
                    index=index, t_start_us=index * self.window_us, prediction=prediction,
                    class_name=self.names[prediction] if prediction >= 0 else "-",
                    output_spikes=int(counts.sum()), input_events=int(len(out.inputs)),
                    spikes=int(len(out.spikes)), first_spike_latency_ms=latency,
                    decision_ms=(time.perf_counter() - begin) * 1e3)


def summarize(decisions: list[WindowDecision], wall_seconds: float, duration_s: float) -> dict:
    """Totals over a camera session of ``duration_s`` recorded seconds processed in
    ``wall_seconds``: rates, latency, class histogram, real-time factor (module docstring)."""
    latencies = [d.first_spike_latency_ms for d in decisions if d.first_spike_latency_ms is not None]
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.class_name] = counts.get(d.class_name, 0) + 1
    events = sum(d.input_events for d in decisions)
    decision_s = sum(d.decision_ms for d in decisions) / 1e3
    return {
        "windows": len(decisions), "predictions": counts,
        "silent_windows": sum(d.prediction < 0 for d in decisions),
        "mean_first_spike_latency_ms": float(np.mean(latencies)) if latencies else None,
        "mean_decision_ms": float(np.mean([d.decision_ms for d in decisions])) if decisions else None,
        "input_events_per_s": events / duration_s if duration_s else None,
        "spikes_per_s": sum(d.spikes for d in decisions) / duration_s if duration_s else None,
        "recording_seconds": duration_s, "wall_seconds": wall_seconds,
        "real_time_factor": duration_s / wall_seconds if wall_seconds else None,
        "decision_seconds": decision_s,
        "decision_speed": duration_s / decision_s if decision_s else None,
        "decisions": [asdict(d) for d in decisions],
    }

