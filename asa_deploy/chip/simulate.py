"""The simulate stage: a compiled ``chip_config.json`` and event data in, ``sim.json`` out.

Windows are cut from raw events exactly as the run was evaluated (the test windows of its frame
spec, stored in the config's ``meta`` at compile time), so the chip simulators see the same time
spans as the float network, but as events in sensor coordinates: the DVS input layer does the
pooling. ``agreement`` compares two engines the way the NIR paper compared simulators and chips:
classification agreement and the cosine similarity of per-core activity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim import EventWindow, SimResult, simulate
from asa_deploy.data import FrameSpec, open_dataset
from asa_deploy.data.framing import recording_accuracy as framing_recording_accuracy
from asa_deploy.data.framing import test_window_starts
from asa_deploy.errors import ChipConfigError
from asa_deploy.io import write_json

SIM_JSON = "sim.json"


def event_windows(config: ChipConfig, data: str | None = None, *, windows: int = 1,
                  max_recordings: int | None = None) -> tuple[list[EventWindow], str]:
    """Test windows of ``data`` (default: the compiled run's validation split), with a description."""
    meta = config.meta
    if "frame_spec" not in meta:
        raise ChipConfigError("this chip_config.json has no frame_spec in its meta (compiled from a "
                              "bare network); pass windows explicitly through the Python API")
    frames = FrameSpec(**meta["frame_spec"])
    spec = data or meta.get("data_spec")
    split = meta.get("split", {})
    dataset = open_dataset(spec, seed=split.get("seed", 0))
    if spec == meta.get("data_spec") and "val" in split:
        indices, what = list(split["val"]), "validation split"
    else:
        indices, what = list(range(len(dataset))), "all recordings"
    if max_recordings is not None:
        indices = indices[:max_recordings]
    out = []
    for index in indices:
        events, label = dataset[index]
        for start in test_window_starts(events, frames, windows):
            out.append(EventWindow(events, int(start), frames.T, frames.dt_us, int(label),
                                   str(dataset.sources[index])))
    return out, f"{spec} ({what}, {len(indices)} recordings x {windows} windows)"


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
                 windows: int = 1, max_recordings: int | None = None,
                 progress: bool = False) -> dict:
    """Simulate ``RUN_DIR/chip_config.json`` and write ``RUN_DIR/sim.json`` (one key per engine)."""
    run_dir = Path(run_dir)
    config = ChipConfig.load(run_dir / "chip_config.json")
    items, described = event_windows(config, data, windows=windows, max_recordings=max_recordings)
    result = simulate(config, items, engine, progress=progress)
    summary = {"data": described, "chip": config.chip, **result.to_dict(),
               "recording_accuracy": recording_accuracy(result)}
    path = run_dir / SIM_JSON
    previous = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    write_json(path, {**previous, engine: summary})
    return summary
