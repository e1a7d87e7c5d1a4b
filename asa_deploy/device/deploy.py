"""Evaluate a compiled run on a board: the same windows as ``simulate``, each run the way the
simulators run it (neuron states reset, the board's time base reset, the window's events written
with timestamps from 0 into the chip's input, read until quiet), classes read from the monitored
output spikes (and from the readout block when the config uses it), power read from the rails
while the windows run.

``device.json`` has the keys of ``sim.json``'s summaries where they mean the same, so a board result
and a simulation compare line by line, plus the runtime settings used (``runtime``). A failing power
monitor does not lose the evaluation: ``power_error`` says what failed and the accuracy is kept.
``--monitor CORES`` also writes the monitored cores' spikes per neuron and bin to ``monitor.npz``, in
the layout ``simulate --monitor`` writes, for ``asa-deploy compare``.

Checked without a board against ``tests/samna_conformance`` (a fake samna that implements only what
public sources confirm); never run against a board here, since samna cannot be installed on the
project's machines.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asa_deploy import provenance
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.monitor import Monitor, counts_from_spikes, select_cores
from asa_deploy.chip.simulate import event_windows
from asa_deploy.data import CacheSetting
from asa_deploy.data.framing import recording_accuracy
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.device.samna_adapter import APPLY_WAIT_S, DeviceSession, require_samna
from asa_deploy.io import results_kept, write_json
from asa_deploy.rundir import CHIP_CONFIG, DEVICE_JSON, MONITOR_NPZ, data_artifact

log = logging.getLogger("asa_deploy.deploy")


def deploy_run(run_dir: str | Path, device: str, *, data: str | None = None, windows: int = TEST_WINDOWS,
               max_recordings: int | None = None, apply_wait_s: float = APPLY_WAIT_S,
               slow_clk_hz: int | None = None, pixel_kill: str = "host",
               dynapcnn_timer: str = "sinabs2", readout_average: int = 1, power: bool = True,
               monitor: Sequence[int] | str | None = None,
               monitor_out: str | Path | None = None, cache: CacheSetting = None) -> dict:
    """Run ``RUN_DIR/chip_config.json`` on the board ``device`` over the test windows of ``data``
    and write ``RUN_DIR/device.json`` (on other data ``device-<data>.json``; returned as ``file``).
    The options are ``DeviceSession``'s (``asa_deploy.device.samna_adapter``); ``power`` False
    skips the power monitor; ``monitor`` (core ids or ``"all"``) also writes their per-neuron
    counts to ``monitor_out`` (default ``RUN_DIR/monitor.npz``; returned as ``monitor_file``);
    ``cache``: where decoded recordings live (``open_dataset``)."""
    require_samna()
    run_dir = Path(run_dir)
    provenance.require_current(run_dir, CHIP_CONFIG)
    config = ChipConfig.load(run_dir / CHIP_CONFIG)
    cores = [] if monitor is None else select_cores(config, monitor, str(run_dir / CHIP_CONFIG))
    session = DeviceSession(device, config, apply_wait_s=apply_wait_s, slow_clk_hz=slow_clk_hz,
                            pixel_kill=pixel_kill, dynapcnn_timer=dynapcnn_timer,
                            readout_average=readout_average, monitor_cores=cores)
    items, described = event_windows(config, data, windows=windows, max_recordings=max_recordings,
                                     cache=cache)
    shapes = {c: config.core(c).neuron_shape for c in cores}
    counts = {c: [] for c in cores}
    predictions, readout_predictions, spikes, written = [], [], [], []
    rails, power_error = None, None
    start = time.perf_counter()
    with session:
        if power:
            try:
                session.start_power()
            except Exception as exc:  # a board fault must not lose the evaluation
                power_error = f"the power monitor did not start: {type(exc).__name__}: {exc}"
        for window in items:
            out = session.run_window(window)
            predictions.append(out.prediction(config))
            readout_predictions.append(out.readout_prediction())
            spikes.append(int(len(out.spikes)))
            written.append(out.written)
            if cores:
                binned = counts_from_spikes(out.spikes, shapes, n_bins=window.n_bins,
                                            dt_us=window.dt_us).counts
                for core in cores:
                    counts[core].append(binned[core])
        if power and power_error is None:
            try:
                rails = session.stop_power()
            except Exception as exc:  # keep the accuracy; say what failed
                power_error = f"the power monitor failed: {type(exc).__name__}: {exc}"
    labels, predictions = np.array([w.label for w in items]), np.array(predictions)
    recordings = np.unique([w.recording for w in items], return_inverse=True)[1]
    facts = {"device": device, "data": data or config.meta.get("data_spec"), "windows": windows,
             "max_recordings": max_recordings}
    summary = {"device": device, "chip": config.chip, "data": described, "n_windows": len(items),
               "accuracy_window": float(np.mean(predictions == labels)) if len(items) else None,
               "accuracy_recording": recording_accuracy(predictions, labels, recordings)
               if len(items) else None,
               "silent_windows": int((predictions < 0).sum()),
               "monitored_spikes_per_window": float(np.mean(spikes)) if spikes else None,
               "input_events_written": int(sum(written)),
               "wall_seconds": time.perf_counter() - start, "windows_per_recording": windows,
               "runtime": session.describe(),
               provenance.KEY: provenance.record(run_dir, [CHIP_CONFIG], **facts)}
    if config.readout.use_readout_block:
        summary["readout_accuracy_window"] = float(np.mean(np.array(readout_predictions) == labels)) \
            if len(items) else None
    if rails is not None:
        summary["power_over"] = "the whole evaluation: the windows and the waits between them"
        summary["power_samples"] = int(rails.pop("samples", 0))
        rails.pop("total", None)
        summary["power_mw"] = {k: v for k, v in rails.items() if not math.isnan(v)}
    if power_error is not None:
        summary["power_error"] = power_error
    elif not power:
        summary["power_error"] = "not measured (power off)"
    path = run_dir / data_artifact(DEVICE_JSON, data, config.meta.get("data_spec", ""))
    out = {**summary, "file": str(path)}
    with results_kept(out):
        write_json(path, summary)
    if cores:
        monitor_path = Path(monitor_out) if monitor_out is not None else run_dir / \
            data_artifact(MONITOR_NPZ, data, config.meta.get("data_spec", ""))
        stacked = {c: np.stack(counts[c]) if counts[c] else
                   np.zeros((0, 0, *shapes[c]), dtype=np.uint8) for c in cores}
        monitor = Monitor.from_windows(
            config, items, stacked, engine=f"device:{device}", data=described,
            provenance=provenance.record(run_dir, [CHIP_CONFIG], engine=f"device:{device}",
                                         cores=cores, **facts))
        with results_kept(out):
            out["monitor_file"] = str(monitor.save(monitor_path))
    return out
