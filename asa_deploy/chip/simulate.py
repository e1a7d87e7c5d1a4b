"""The simulate stage: a compiled ``chip_config.json`` and event data in, ``sim.json`` out.

Windows are cut from raw events exactly as the run was evaluated (the test windows of its frame
spec, stored in the config's ``meta`` at compile time), so the chip simulators see the same time
spans as the float network, but as events in sensor coordinates: the DVS input layer does the
pooling. ``agreement`` compares two engines the way the NIR paper compared simulators and chips:
classification agreement and the cosine similarity of per-core activity.

``whole=True`` (``simulate --whole-recordings``) instead feeds every recording whole, as one window
from its first event (bins of the frame spec's ``dt_us``, as many as the longest recording needs),
states reset per recording, the class being the channel with the most output spikes: how published
chip accuracies are measured (SynSense's NIR-to-Speck tutorial streams each N-MNIST sample and takes
the most frequent output feature).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from asa_deploy import provenance
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.monitor import MONITOR_NPZ, CountSpool, Monitor, engine_of, select_cores
from asa_deploy.chip.sim import EventWindow, SimResult
from asa_deploy.chip.sim.parallel import simulate_parallel
from asa_deploy.chip.sim.window import by_reference
from asa_deploy.data import (
    CacheSetting,
    FrameSpec,
    check_class_names,
    check_input_shape,
    open_dataset,
)
from asa_deploy.data.framing import recording_accuracy as framing_recording_accuracy
from asa_deploy.data.framing import test_window_starts
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.errors import ArtifactError, ChipConfigError, DataSpecError
from asa_deploy.io import load_json, results_kept, write_json
from asa_deploy.rundir import CHIP_CONFIG, SIM_JSON, data_artifact

log = logging.getLogger("asa_deploy.simulate")


def event_windows(config: ChipConfig, data: str | None = None, *, windows: int = TEST_WINDOWS,
                  max_recordings: int | None = None, whole: bool = False,
                  cache: CacheSetting = None, references: bool = False
                  ) -> tuple[list[EventWindow], str]:
    """Test windows of ``data`` (default: the compiled run's validation split), with a description;
    ``whole``: one window per recording spanning all of it (``windows`` is then not used);
    ``cache``: where decoded recordings live (``open_dataset``); ``references``: the windows of a
    cached recording hold a ``MappedEvents`` (``by_reference``), not its mapped events, so that
    no page of the cache stays resident (``simulate_parallel`` maps a chunk at a time)."""
    meta = config.meta
    if "frame_spec" not in meta:
        raise ChipConfigError("this chip_config.json has no frame_spec in its meta (compiled from a "
                              "bare network); pass windows explicitly through the Python API")
    frames = FrameSpec(**meta["frame_spec"])
    spec = data or meta.get("data_spec")
    if spec is None:
        raise DataSpecError("this chip config was compiled from a model imported without --data, "
                            "so it names no data to simulate: pass --data SPEC")
    split = meta.get("split", {})
    dataset = open_dataset(spec, seed=split.get("seed", 0), cache=cache)
    target = f"the chip config of model {meta.get('model', '?')!r}"
    check_input_shape(dataset.sensor_size, None, config.input_shape(), target=target, data=spec,
                      fix=f"it was compiled for {meta.get('data_spec', 'other data')}; simulate "
                          "it on data from that sensor, or compile a model trained on this data")
    if config.readout.class_names:
        check_class_names(dataset.class_names, config.readout.class_names, data=spec, target=target)
    if spec == meta.get("data_spec") and "val" in split:
        indices, what = list(split["val"]), "validation split"
        if not indices:
            raise DataSpecError(f"{spec}: the run was trained without a validation split; pass "
                                f"--data SPEC to simulate other recordings")
    else:
        indices, what = list(range(len(dataset))), "all recordings"
    if max_recordings is not None:
        indices = indices[:max_recordings]
    if whole:
        return whole_recording_windows(dataset, indices, frames.dt_us, references=references), (
            f"{spec} ({what}, {len(indices)} whole recordings, one window each)")
    out = []
    for index in indices:
        events, label = dataset[index]
        held = by_reference(events) if references else events
        for start in test_window_starts(events, frames, windows):
            out.append(EventWindow(held, int(start), frames.T, frames.dt_us, int(label),
                                   str(dataset.sources[index])))
    return out, f"{spec} ({what}, {len(indices)} recordings x {windows} windows)"


def whole_recording_windows(dataset, indices, dt_us: int, *,
                            references: bool = False) -> list[EventWindow]:
    """One window per recording from its first event, all with the bins the longest one needs (the
    simulators batch windows of one length; a shorter recording's last bins stay empty), each with
    its own duration (``duration_us``: the bins its events span); ``references`` as in
    ``event_windows``."""
    recordings = []
    for i in indices:
        ev, label = dataset[i]
        recordings.append((by_reference(ev) if references else ev, int(ev["t"][0]),
                           int(ev["t"][-1]), int(label), str(dataset.sources[i])))
    span = max((last - first + 1 for _, first, last, _, _ in recordings), default=1)
    n_bins = max(1, math.ceil(span / dt_us))
    return [EventWindow(ev, first, n_bins, dt_us, label, source,
                        duration_us=math.ceil((last - first + 1) / dt_us) * dt_us)
            for ev, first, last, label, source in recordings]


def recording_accuracy(result: SimResult) -> float:
    """The paper's protocol (as ``evaluate``): a recording is correct when strictly more than half
    of its windows are; a silent window counts as wrong."""
    names = sorted(set(result.recordings))
    index = np.array([names.index(r) for r in result.recordings])
    return framing_recording_accuracy(result.predictions, result.labels, index)


def agreement(a: SimResult, b: SimResult) -> dict:
    """How closely two simulations of the same windows agree (NIR paper's measures)."""
    if len(a.predictions) != len(b.predictions) or a.core_ids != b.core_ids:
        raise ValueError("the two results simulate different windows or cores")
    cores = {}
    for j, core in enumerate(a.core_ids):
        x, y = a.spikes_per_core[:, j].astype(float), b.spikes_per_core[:, j].astype(float)
        norm = np.linalg.norm(x) * np.linalg.norm(y)
        cores[str(core)] = float(x @ y / norm) if norm else float(np.array_equal(x, y))
    per_bin_a = a.output_spikes.reshape(len(a.predictions), -1).astype(float)
    per_bin_b = b.output_spikes.reshape(len(b.predictions), -1).astype(float)
    return {
        "classification_agreement": float(np.mean(a.predictions == b.predictions)),
        "activity_cosine_per_core": cores,
        "output_spikes_equal_fraction": float(np.mean(np.all(per_bin_a == per_bin_b, axis=1))),
        "total_spikes": {a.engine: int(a.spikes_per_core.sum()), b.engine: int(b.spikes_per_core.sum())},
    }


def simulate_run(run_dir: str | Path, data: str | None = None, *, engine: str = "fast",
                 windows: int = TEST_WINDOWS, max_recordings: int | None = None,
                 progress: bool = False, monitor: Sequence[int] | str | None = None,
                 monitor_out: str | Path | None = None, whole_recordings: bool = False,
                 jobs: int = 1, cache: CacheSetting = None) -> dict:
    """Simulate ``RUN_DIR/chip_config.json`` and write ``RUN_DIR/sim.json`` (one key per engine;
    on other data ``sim-<data>.json``; returned as ``file``). Refuses a chip config made from a
    model that has changed since. Another engine's entry is kept while it was made from the current
    chip config, whatever its windows (each entry says its own); the engine's earlier entry is
    replaced, and a warning says so when its windows differed, or why another engine's was dropped.
    Each entry's ``recorded_seconds`` is the sum of its windows' own durations
    (``EventWindow.seconds``): what its rates, power and energy are per.

    ``monitor`` (core ids or ``"all"``): also write the per-neuron counts of those cores to
    ``monitor_out`` (default ``RUN_DIR/monitor.npz``, on other data ``monitor-<data>.npz``;
    returned as ``monitor_file``); a core the config does not use is refused before simulating.

    ``whole_recordings``: one window per recording spanning it (see the module docstring); the
    entry records ``windows_per_recording`` 1, ``whole_recordings`` true and ``accuracy_window``
    None (only ``accuracy_recording`` is measured).

    ``jobs``: processes to simulate in (``chip.sim.parallel``); every count, and so ``sim.json`` and
    the monitor file, is the same for any number, only the timing differs (``jobs`` is recorded).

    ``cache``: where decoded recordings live (``open_dataset``)."""
    run_dir = Path(run_dir)
    provenance.require_current(run_dir, CHIP_CONFIG)
    config = ChipConfig.load(run_dir / CHIP_CONFIG)
    cores = [] if monitor is None else select_cores(config, monitor, str(run_dir / CHIP_CONFIG))
    items, described = event_windows(config, data, windows=windows, max_recordings=max_recordings,
                                     whole=whole_recordings, cache=cache, references=True)
    if whole_recordings:
        windows = 1
    facts = {"data": data or config.meta.get("data_spec"), "windows": windows,
             "max_recordings": max_recordings, "whole_recordings": whole_recordings}
    monitor_path = None if not cores else Path(monitor_out) if monitor_out is not None else \
        run_dir / data_artifact(MONITOR_NPZ, facts["data"], config.meta.get("data_spec", ""))
    # monitor counts go to disk a chunk at a time: every window's at once would grow with the data
    path = run_dir / data_artifact(SIM_JSON, data, config.meta.get("data_spec", ""))
    with CountSpool(monitor_path.parent, cores) if cores else nullcontext() as spool:
        result = simulate_parallel(config, items, engine, jobs, progress=progress, monitor=cores,
                                   monitor_to=spool)
        summary = {"data": described, "chip": config.chip, "windows_per_recording": windows,
                   "whole_recordings": whole_recordings, **result.to_dict(), "jobs": jobs,
                   "accuracy_recording": recording_accuracy(result),
                   "recorded_seconds": float(sum(w.seconds for w in items)),
                   provenance.KEY: provenance.record(run_dir, [CHIP_CONFIG], engine=engine,
                                                     **facts)}
        if whole_recordings:  # one window per recording: no per-window figure
            summary["accuracy_window"] = None
        if spool is not None:
            with results_kept({**summary, "file": str(path)}):
                monitor_file = _write_monitor(
                    config, items, spool, monitor_path, engine=engine, described=described,
                    prov=provenance.record(run_dir, [CHIP_CONFIG], engine=engine, cores=cores,
                                           **facts))
    previous = {}
    if path.exists():
        try:
            previous = load_json(path, "simulation results", remedy="it is replaced now")
        except ArtifactError as exc:
            log.warning("%s; only the %s entry is written", exc, engine)
    kept = _kept_entries(run_dir, path.name, previous, engine, facts)
    out = {**summary, "file": str(path)}
    if cores:
        out["monitor_file"] = str(monitor_file)
    with results_kept(out):
        write_json(path, {**kept, engine: summary})
    return out


def _write_monitor(config: ChipConfig, items: list[EventWindow], spool: CountSpool, path: Path, *,
                   engine: str, described: str, prov: dict) -> Path:
    previous = engine_of(path) if path.is_file() else None
    if previous is not None and previous != engine:
        log.warning("replacing %s (engine %s) with engine %s's counts; pass --monitor-out FILE to "
                    "keep both", path, previous, engine)
    monitor = Monitor.from_windows(config, items, spool.counts(), engine=engine, data=described,
                                   provenance=prov)
    return monitor.save(path)


def _kept_entries(run_dir: Path, name: str, previous: dict, engine: str, facts: dict) -> dict:
    """The other engines' entries of ``previous`` made from the current chip config; a warning
    for each entry dropped, and for ``engine``'s own when its windows were not ``facts``'."""
    kept = {}
    for other, entry in previous.items():
        prov = entry.get(provenance.KEY) if isinstance(entry, dict) else None
        if other == engine:
            before = _windows_setting(prov or {})
            if before != _windows_setting(facts):
                log.warning("%s: the %s entry (%s) is replaced by one on %s", name, engine, before,
                            _windows_setting(facts))
        elif isinstance(prov, dict) and not provenance.problems(run_dir, SIM_JSON, prov):
            kept[other] = entry
        else:
            log.warning("%s: the %s entry is dropped: it was not made from the current %s",
                        name, other, CHIP_CONFIG)
    return kept


def _windows_setting(facts: dict) -> str:
    """What a sim.json entry simulated, in words (its provenance facts)."""
    if "windows" not in facts:
        return "windows not recorded"
    n = facts["windows"]
    what = ("whole recordings" if facts.get("whole_recordings")
            else f"{n} window{'s' if n != 1 else ''} per recording")
    if facts.get("max_recordings") is not None:
        what += f", the first {facts['max_recordings']} recordings"
    return f"{what} of {facts.get('data')}"
