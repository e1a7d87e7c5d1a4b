"""Evaluate a compiled run on a board: the same windows as ``simulate``, written into the chip's DVS
input layer, classes read from its monitored output spikes, power read from its rails.

Never run against a board here (samna cannot be installed on the project's machines); the windowing,
the class read-out and the result file are shared with the simulators so a board result and a
simulation compare line by line (``device.json`` has the keys of ``sim.json``'s summaries).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from asa_deploy import provenance
from asa_deploy.chip.compile import CHIP_CONFIG
from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.simulate import event_windows
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.io import write_json

DEVICE_JSON = "device.json"


def deploy_run(run_dir: str | Path, device: str, *, data: str | None = None, windows: int = TEST_WINDOWS,
               max_recordings: int | None = None, settle_s: float = 0.05,
               power_seconds: float = 5.0) -> dict:
    from asa_deploy.device.samna_adapter import DeviceSession, require_samna

    require_samna()
    run_dir = Path(run_dir)
    provenance.require_current(run_dir, CHIP_CONFIG)
    config = ChipConfig.load(run_dir / CHIP_CONFIG)
    items, described = event_windows(config, data, windows=windows, max_recordings=max_recordings)
    channels = config.readout.class_channels()
    predictions, labels, spikes = [], [], []
    start = time.perf_counter()
    with DeviceSession(device, config) as session:
        for window in items:
            session.reset_states()
            t = window.events["t"]
            inside = window.events[(t >= window.t_start) & (t < window.t_end)]
            session.write_events(inside)
            time.sleep(window.n_bins * window.dt_us / 1e6 + settle_s)
            out = session.read_spikes()
            mine = out[out["layer"] == config.readout.source_core]
            counts = np.array([(mine["feature"] == c).sum() for c in channels])
            predictions.append(int(counts.argmax()) if counts.sum() else -1)
            labels.append(window.label)
            spikes.append(int(len(out)))
        rails = session.read_power(power_seconds)
    samples = int(rails.pop("samples", 0))
    rails.pop("total", None)
    predictions, labels = np.array(predictions), np.array(labels)
    summary = {"device": device, "chip": config.chip, "data": described, "n_windows": len(items),
               "accuracy": float(np.mean(predictions == labels)) if len(items) else None,
               "monitored_spikes_per_window": float(np.mean(spikes)) if spikes else None,
               "power_mw": rails, "power_samples": samples,
               "wall_seconds": time.perf_counter() - start, "windows_per_recording": windows,
               provenance.KEY: provenance.record(
                   run_dir, [CHIP_CONFIG], device=device, data=data or config.meta.get("data_spec"),
                   windows=windows, max_recordings=max_recordings)}
    write_json(run_dir / provenance.data_artifact(DEVICE_JSON, data,
                                                  config.meta.get("data_spec", "")), summary)
    return summary
