"""Collect one or more run directories' artifacts and compute the report's figures (JSON-ready).

Every number in the report comes from an artifact a stage wrote; nothing is re-run here. Per run:

* the chip simulator's per-core spikes and synaptic operations per window (``sim.json``, engine
  ``exact`` preferred, else ``fast``; without ``sim.json``, the last simulator rows of the fold
  ladder in ``fold.json``), SynOps/s per core (rates, power and energy per the windows' own mean
  duration: ``sim.json``'s ``recorded_seconds`` / ``n_windows``, T x dt for the fold ladder), NeuroBench-named metrics (effective ACs, activation
  and connection sparsity, footprint), the chip power model's static / dynamic split and the energy
  per inference, measured power rails (``device.json``) when present;
* accuracy (float network and chip simulator, ``accuracy_window`` and ``accuracy_recording``;
  artifacts of older versions read through ``asa_deploy.metrics.current_names``), NASFR, the
  fidelity ladder,
  the core mapping (with the connections of a network that branches and merges) and quantization
  statistics, and the paths of the analysis figures;
* every missing artifact, with the command that produces it.

``build_report`` returns ``{"runs": {label: entry}, "comparison": ..., ...}``; ``render`` turns it into
Markdown and HTML and ``write_report`` writes all three files.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asa_deploy import io, provenance
from asa_deploy.data.framing import SILENT_CHIP_REMEDY, SILENT_FLOAT_REMEDY, silent_output_warning
from asa_deploy.errors import ArtifactError, AsaDeployError
from asa_deploy.metrics import current_names
from asa_deploy.rundir import (
    ANALYSIS_JSON,
    CHIP_CONFIG,
    DEVICE_JSON,
    EVAL_JSON,
    FOLD_JSON,
    FOLD_MAPS,
    FOLDED,
    MODEL,
    SIM_JSON,
)
from asa_deploy.rundir import MAPPING as MAPPING_JSON

REPORT_FORMAT = 2  # 2: accuracy_window / accuracy_recording; rates per the windows' own duration
ENGINES = ("exact", "fast")
ANALYSIS_FIGURES = {
    "spike_features": "spike features (N-SFR maps of the first conv layer)",
    "t_sfr": "T-SFR over time",
    "mpd": "membrane potential distributions (MPD)",
    "layer_sfr": "spike firing rate per layer",
}
DEFAULT_CHIP = "speck2f"

BANDWIDTH_NOTE = (
    "The per-core SynOps/s limit is not published: docs/speck-hardware.md section 2 says each core has a "
    "maximum SynOps/s beyond which the chip stalls, but gives no number (UNVERIFIED, sinabs docs "
    "tips_for_training.md). The report therefore shows the rates without a limit to compare them to.")
EFFECTIVE_ACS_NOTE = (
    "Effective ACs here are the chip's synaptic operations: every kernel read the cores performed, "
    "zero weights (and killed neurons) included. NeuroBench's effective ACs count only non-zero "
    "weights, so this is an upper bound of NeuroBench's figure for the same activity.")
ACTIVATION_SPARSITY_NOTE = (
    "Activation sparsity = 1 - spikes / (neurons x time steps) per window, neurons from the chip "
    "cores' neuron shapes (before destination pooling); a neuron can spike more than once per step, "
    "so it can go below 0.")
FOOTPRINT_NOTE = ("Footprint = int8 weights (1 byte each) + 16-bit biases (2 bytes) + 16-bit initial "
                  "neuron states (2 bytes), as held in chip_config.json.")
POWER_NOTE = ("Estimated processor power P = resting + e_spike x spikes/s + e_synop x SynOps/s + "
              "e_event x input events/s (the chip's hw_config power model; the processor is its "
              "processor_rails, VDD_RAM + VDD_LOGIC on Speck), with rates = counts per window / "
              "window duration (the simulated windows' own, on average: a whole recording's is its "
              "length); static = resting power, dynamic = P - resting. The band is P at "
              "the hw_config's lowest and highest energy per spike (the spread of the published "
              "operating points it was fitted to); it does not cover the reading of their time base "
              "nor the power monitor's offset. Dev kit = P + the idle power of the other measured "
              "rails (IO and the sensor's pixel rails on Speck), held at idle. Energy per "
              "inference = P x window duration (one window = one inference).")


# ---- small helpers ---------------------------------------------------------------------------------

def attention_label(kind: str | None) -> str:
    return "vanilla" if kind in (None, "none") else str(kind)


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN / infinities become None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _read_json(path: Path, problems: list[dict], produce: str) -> dict | None:
    """An optional JSON artifact: None when absent; when unreadable, None and a problem entry."""
    if not path.exists():
        return None
    try:
        return io.load_json(path, path.name, remedy=produce)
    except ArtifactError as exc:
        problems.append({"artifact": path.name, "problem": f"unreadable ({exc.problem})",
                         "command": produce})
        return None


def _load_model(run_dir: Path) -> dict:
    from asa_deploy.export.importer import is_imported, load_imported_record
    from asa_deploy.train.loop import load_model_record

    if is_imported(run_dir):  # asa-deploy import: the same record keys, no training metrics
        return {k: v for k, v in load_imported_record(run_dir).items() if k != "network"}
    if not (run_dir / MODEL).exists():
        raise AsaDeployError(f"{run_dir}: no {MODEL}, so this is not a trained run; train one first "
                             f"with `asa-deploy train --out {run_dir} ...` (or bring a model: "
                             f"`asa-deploy import MODEL --out {run_dir}`)")
    return load_model_record(run_dir)


def _current(run_dir: Path, name: str, value, problems: list[dict], command: str,
             entry: str | None = None):
    """``value`` (an artifact's content) when it was made from the files now in ``run_dir``,
    else None with the reason in ``problems``; one without a record is used, and said so."""
    if value is None:
        return None
    if entry is not None:
        record = value.get(provenance.KEY) if isinstance(value, dict) else None
        found = provenance.problems(run_dir, name, record or {})
        label = f"{name} '{entry}' entry"
    else:
        found = provenance.problems(run_dir, name)
        label = name
    stale = provenance.stale(found)
    if stale:
        problems.append({"artifact": label, "problem": "is stale and not used: " + "; ".join(stale),
                         "command": command})
        return None
    if found:
        problems.append({"artifact": label, "problem": "has no provenance record, so it is used "
                         "unchecked", "command": command})
    return value


def _labels(entries: list[tuple[Path, str]]) -> list[str]:
    """"vanilla" / the attention name; the folder name where those collide; a suffix if still equal."""
    base = [label for _, label in entries]
    labels = [label if base.count(label) == 1 else run.name for run, label in entries]
    out: list[str] = []
    for label in labels:
        candidate, n = label, 2
        while candidate in out:
            candidate, n = f"{label} ({n})", n + 1
        out.append(candidate)
    return out


# ---- per-run pieces ---------------------------------------------------------------------------------

def _commands(run_dir: Path, others: list[Path], chip: str) -> dict[str, str]:
    compare = "".join(f" --compare {o}" for o in others)
    return {
        "model": f"asa-deploy train --out {run_dir} ...",
        "eval": f"asa-deploy evaluate {run_dir}",
        "analysis": f"asa-deploy analyze {run_dir}{compare}",
        "fold": f"asa-deploy fold {run_dir} --chip {chip}",
        "compile": f"asa-deploy fold {run_dir} --chip {chip}",
        "compile_alt": f"asa-deploy compile {run_dir} --chip {chip}",
        "sim_exact": f"asa-deploy simulate {run_dir} --engine exact",
        "sim_fast": f"asa-deploy simulate {run_dir} --engine fast",
    }


def _chip_config(run_dir: Path, problems: list[dict], produce: str):
    from asa_deploy.chip.config import ChipConfig

    path = run_dir / CHIP_CONFIG
    if not path.exists():
        return None
    try:
        return ChipConfig.load(path)
    except AsaDeployError as exc:
        problem = exc.problem if isinstance(exc, ArtifactError) else str(exc)
        problems.append({"artifact": CHIP_CONFIG, "problem": f"unreadable ({problem})",
                         "command": produce})
        return None


def _cores_static(config) -> list[dict]:
    """Per core: layer, neurons, weights (zero share) and footprint, from chip_config.json."""
    rows = []
    for core in config.cores:
        c, h, w = core.neuron_shape
        weights = int(core.weights.size)
        zeros = int(np.count_nonzero(core.weights == 0))
        rows.append({
            "core": int(core.core), "layer": core.name, "neuron_shape": [c, h, w],
            "neurons": int(c * h * w), "weights": weights, "zero_weights": zeros,
            "connection_sparsity": zeros / weights if weights else None,
            "footprint_bytes": {"weights": weights, "biases": 2 * int(core.biases.size),
                                "states": 2 * int(core.neurons_initial_value.size)},
        })
    for row in rows:
        row["footprint_bytes"]["total"] = sum(row["footprint_bytes"].values())
    return rows


SPLIT_KEYS = ("input_synops_per_core", "network_synops_per_core")


def _per_core(values: dict | None) -> dict | None:
    """Per-core means keyed by core id string; None where the artifact predates the split."""
    return None if values is None else {str(k): float(v) for k, v in values.items()}


def _simulation(sim: dict | None, fold: dict | None, engine: str | None) -> tuple[dict | None, str | None]:
    """The simulator summary the report uses, in one shape, and why none was found (if so);
    ``window_s``: its windows' mean own duration, None where the artifact does not record it."""
    if sim:
        order = [engine] if engine else [*ENGINES, *[k for k in sim if k not in ENGINES]]
        for name in order:
            entry = sim.get(name)
            if isinstance(entry, dict) and "spikes_per_core" in entry:
                entry = current_names(entry, "window")
                n = max(int(entry.get("n_windows") or 0), 1)
                recorded = entry.get("recorded_seconds")
                return {
                    "source": f"{SIM_JSON} ({name} engine)", "engine": name,
                    "n_windows": entry.get("n_windows"), "data": entry.get("data"),
                    "chip": entry.get("chip"),
                    "spikes_per_core": {str(k): float(v)
                                        for k, v in entry["spikes_per_core"]["mean"].items()},
                    "synops_per_core": {str(k): float(v)
                                        for k, v in entry["synops_per_core"]["mean"].items()},
                    **{key: _per_core((entry.get(key) or {}).get("mean")) for key in SPLIT_KEYS},
                    "input_events_per_window": entry["input_events"] / n
                    if entry.get("input_events") is not None else None,
                    "dropped_events_per_window": entry["dropped_events"] / n
                    if entry.get("dropped_events") is not None else None,
                    "mean_latency_events": entry.get("mean_latency_events"),
                    "silent_windows": entry.get("silent_windows"),
                    "windows": entry.get("n_windows"),
                    "accuracy_window": entry.get("accuracy_window"),
                    "accuracy_recording": entry.get("accuracy_recording"),
                    "windows_per_recording": entry.get("windows_per_recording"),
                    "whole_recordings": bool(entry.get("whole_recordings")),
                    "window_s": recorded / n if recorded else None,
                }, None
    if fold:
        rows = [r for r in fold.get("ladder", []) if "spikes_per_core" in r]
        wanted = [engine] if engine else list(ENGINES)
        for name in wanted:
            for row in reversed(rows):
                if name in row["step"]:
                    row = current_names(row, "recording")
                    return {
                        "source": f"{FOLD_JSON} ladder row '{row['step']}'", "engine": name,
                        "n_windows": None, "data": "the run's validation split (fold --eval-windows)",
                        "chip": fold.get("chip"),
                        "spikes_per_core": {str(k): float(v) for k, v in row["spikes_per_core"].items()},
                        "synops_per_core": {str(k): float(v) for k, v in row["synops_per_core"].items()},
                        **{key: _per_core(row.get(key)) for key in SPLIT_KEYS},
                        "input_events_per_window": None, "dropped_events_per_window": None,
                        "mean_latency_events": None, "silent_windows": row.get("silent_windows"),
                        "windows": row.get("windows"),
                        "accuracy_window": row.get("accuracy_window"),
                        "accuracy_recording": row.get("accuracy_recording"),
                        "windows_per_recording": fold.get("windows_per_recording"),
                        "whole_recordings": False, "window_s": None,
                    }, None
    what = f"{engine} engine results" if engine else "simulator results"
    return None, f"no {what} in {SIM_JSON} or in {FOLD_JSON}'s ladder"


def _power_sources(spec) -> dict:
    power = spec.power
    text = f"{power.resting_source} {power.idle_rails_source} {power.dynamic_source}"
    tags = sorted(set(re.findall(r"\bS\d+\b", text)), key=lambda t: int(t[1:]))
    return {"resting_source": power.resting_source, "idle_rails_source": power.idle_rails_source,
            "dynamic_source": power.dynamic_source,
            "tags": {tag: spec.sources[tag] for tag in tags if tag in spec.sources}}


def _power(spec, spikes_per_window: float, synops_per_window: float, events_per_window: float | None,
           window_s: float) -> dict:
    power = spec.power
    spikes_s = spikes_per_window / window_s
    synops_s = synops_per_window / window_s
    events_s = events_per_window / window_s if events_per_window is not None else None
    total = power.power_mw(spikes_s, synops_s, events_s or 0.0)
    terms = {"spikes": power.energy_per_spike_nj * spikes_s * 1e-6,
             "synops": power.energy_per_synop_nj * synops_s * 1e-6,
             "input_events": power.energy_per_input_event_nj * (events_s or 0.0) * 1e-6}
    notes = []
    if events_s is None:
        notes.append("input events per window unknown (the fold ladder does not store them): the "
                     "input-event term is left out"
                     + (" (its energy per event is 0 in this model, so the estimate is unchanged)"
                        if power.energy_per_input_event_nj == 0 else ", so the estimate is low"))
    band = list(power.band_mw(spikes_s, synops_s, events_s or 0.0))
    other = power.other_rails_idle_mw
    devkit = None
    if other is not None:
        devkit = {"other_rails": [r for r in power.idle_rail_mw if r not in power.processor_rails],
                  "other_rails_idle_mw": other, "static_mw": power.resting_mw + other,
                  "total_mw": total + other, "band_mw": [p + other for p in band],
                  "energy_per_inference_uj": (total + other) * window_s * 1e3,
                  "energy_band_uj": [(p + other) * window_s * 1e3 for p in band]}
    return {
        "chip": spec.name, "hw_config": spec.path,
        "model": {"resting_mw": power.resting_mw, "energy_per_spike_nj": power.energy_per_spike_nj,
                  "energy_per_spike_low_nj": power.energy_per_spike_low_nj,
                  "energy_per_spike_high_nj": power.energy_per_spike_high_nj,
                  "energy_per_synop_nj": power.energy_per_synop_nj,
                  "energy_per_input_event_nj": power.energy_per_input_event_nj,
                  "idle_rail_mw": dict(power.idle_rail_mw),
                  "processor_rails": list(power.processor_rails)},
        "rates": {"spikes_per_s": spikes_s, "synops_per_s": synops_s, "input_events_per_s": events_s},
        "static_mw": power.resting_mw,
        "dynamic_mw": total - power.resting_mw,
        "dynamic_band_mw": [p - power.resting_mw for p in band],
        "dynamic_terms_mw": terms,
        "total_mw": total,  # the processor's
        "band_mw": band,
        "window_s": window_s,
        "energy_per_inference_uj": total * window_s * 1e3,
        "energy_band_uj": [p * window_s * 1e3 for p in band],
        "dynamic_energy_per_inference_uj": (total - power.resting_mw) * window_s * 1e3,
        "devkit": devkit,
        "sources": _power_sources(spec),
        "notes": notes,
    }


def _measured(device: dict | None, window_s: float | None, estimate: dict | None) -> dict | None:
    """device.json's measured rails, with the model's figure beside each rail, the processor and
    the dev kit."""
    if not device:
        return None
    rails = device.get("power_mw")
    if not isinstance(rails, dict) or not rails:
        why = f": {device['power_error']}" if device.get("power_error") else ""
        return {"error": f"device.json has no 'power_mw' {{rail: mW}} table{why}", "raw": device}
    bad = {str(k): v for k, v in rails.items() if isinstance(v, bool) or not isinstance(v, int | float)}
    if bad:
        return {"error": f"device.json 'power_mw' has rails that are not numbers (mW): {bad}",
                "raw": device}
    rails = {str(k): float(v) for k, v in rails.items()}
    total = sum(v for v in rails.values() if math.isfinite(v))
    rows, notes = _side_by_side(estimate, rails)
    devkit = next((r for r in rows if r["rail"] == DEVKIT_ROW), None)
    return {
        "rails_mw": rails, "total_mw": total,
        "energy_per_inference_uj": total * window_s * 1e3 if window_s else None,
        "estimate_over_measured": _ratio(devkit["model_mw"], devkit["measured_mw"]) if devkit else None,
        "side_by_side": rows, "side_by_side_notes": notes,
        "other": {k: v for k, v in device.items() if k != "power_mw"},
    }


DEVKIT_ROW = "dev kit (all rails)"


def _side_by_side(estimate: dict | None, rails: dict[str, float]) -> tuple[list[dict], list[str]]:
    """Model and measurement per rail (rail names matched ignoring case), then the processor's rails
    summed and all rails summed; a sum is compared only where the same rails were measured."""
    if not estimate:
        return [], ["no power estimate to compare with (no simulator results or no chip hw_config)"]
    model = estimate["model"]
    idle, processor = model["idle_rail_mw"], model["processor_rails"]
    measured = {rail.upper(): mw for rail, mw in rails.items() if math.isfinite(mw)}
    known = {rail.upper() for rail in idle}
    rows = [{"rail": rail, "model_mw": mw, "band_mw": None, "measured_mw": measured.get(rail.upper()),
             "model": "idle" + (" (processor rail)" if rail in processor else "")}
            for rail, mw in idle.items()]
    rows += [{"rail": rail, "model_mw": None, "band_mw": None,
              "measured_mw": mw if math.isfinite(mw) else None, "model": "not in the hw_config"}
             for rail, mw in rails.items() if rail.upper() not in known]
    notes = []
    if idle:
        notes.append("Per-rail model figures are idle power: no source splits the dynamic term "
                     "between rails, so it appears only in the processor and dev-kit rows.")
    in_processor = [measured.get(rail.upper()) for rail in processor]
    processor_measured = sum(in_processor) if processor and None not in in_processor else None
    if processor and processor_measured is None:
        notes.append(f"device.json lacks a processor rail ({', '.join(processor)}): the processor "
                     f"is not compared.")
    rows.append({"rail": f"processor ({' + '.join(processor)})" if processor else "processor",
                 "model_mw": estimate["total_mw"], "band_mw": estimate["band_mw"],
                 "measured_mw": processor_measured, "model": "resting + dynamic"})
    devkit = estimate.get("devkit")
    if devkit:
        same = known == set(measured)
        if not same:
            notes.append(f"device.json's rails {sorted(rails)} are not the hw_config's "
                         f"{sorted(idle)}: the dev-kit totals are not compared.")
        rows.append({"rail": DEVKIT_ROW, "model_mw": devkit["total_mw"], "band_mw": devkit["band_mw"],
                     "measured_mw": sum(measured.values()) if same else None,
                     "model": "processor + other rails at idle"})
    else:
        notes.append("The hw_config has no per-rail idle figures: no dev-kit estimate to compare.")
    for row in rows:
        row["measured_over_model"] = _ratio(row["measured_mw"], row["model_mw"])
    return rows, notes


def _float_metrics(artifact: dict, eval_json: dict | None, analysis: dict | None,
                   fold: dict | None) -> tuple[dict, dict]:
    """Float-network accuracy and NASFR, each with where it came from."""
    val = current_names((artifact.get("metrics") or {}).get("val") or {}, "recording")
    own = f"{artifact['data']['spec']} (validation split)"
    candidates = []  # (source, {accuracy_window, accuracy_recording, nasfr, ...}, data, windows)
    if eval_json:
        candidates.append((EVAL_JSON, current_names(eval_json, "recording"), eval_json.get("data"),
                           eval_json.get("windows_per_recording")))
    if fold and fold.get("ladder"):
        row = fold["ladder"][0]
        candidates.append((f"{FOLD_JSON} ladder row '{row['step']}'",
                           current_names(row, "recording"), own, fold.get("windows_per_recording")))
    if analysis:
        candidates.append((ANALYSIS_JSON, current_names(analysis, "recording"), analysis.get("data"),
                           analysis.get("windows_per_recording")))
    if val:
        candidates.append((f"{MODEL} validation metrics (best epoch)", val, own,
                           (artifact.get("train_config") or {}).get("eval_windows")))
    accuracy = {"accuracy_window": None, "accuracy_recording": None, "source": None, "data": None,
                "windows_per_recording": None}
    for source, figures, data, windows in candidates:
        if figures.get("accuracy_recording") is not None:
            accuracy = {"accuracy_window": figures.get("accuracy_window"),
                        "accuracy_recording": figures["accuracy_recording"], "source": source,
                        "data": data, "windows_per_recording": windows}
            break
    by_source = {source: figures["nasfr"] for source, figures, _, _ in candidates
                 if figures.get("nasfr") is not None}
    first = next(iter(by_source.items()), (None, None))
    return accuracy, {"value": first[1], "source": first[0], "by_source": by_source}


def _silent_output(artifact: dict, eval_json: dict | None, simulation: dict | None) -> list[str]:
    """The loud lines for an output layer that stays silent, float network and chip alike."""
    float_result = eval_json or (artifact.get("metrics") or {}).get("val") or {}
    where = EVAL_JSON if eval_json else f"{MODEL} validation metrics"
    lines = [silent_output_warning(float_result.get("silent_windows"), float_result.get("windows"),
                                   SILENT_FLOAT_REMEDY, f"float network, {where}")]
    if simulation:
        lines.append(silent_output_warning(simulation["silent_windows"], simulation["windows"],
                                           SILENT_CHIP_REMEDY, f"chip, {simulation['source']}"))
    return [line for line in lines if line]


def _figures(run_dir: Path) -> dict[str, str]:
    """Analysis figures: RUN/figures (analyze), else the parent's figures/ (quickstart)."""
    found = {}
    for folder in (run_dir / "figures", run_dir.parent / "figures"):
        for name in ANALYSIS_FIGURES:
            path = folder / f"{name}.png"
            if name not in found and path.is_file():
                found[name] = str(path)
    return found


def _activity(simulation: dict, static: list[dict] | None, T: float | None,
              window_s: float | None) -> dict:
    """Per-core and total spikes / SynOps per window, rates per ``window_s`` (the windows' mean
    duration), activation sparsity over ``T`` (their mean time steps)."""
    by_core = {row["core"]: row for row in static or []}
    ids = [row["core"] for row in static] if static else []
    ids += [int(k) for k in simulation["spikes_per_core"] if int(k) not in ids]
    cores = []
    for core in ids:
        info = by_core.get(core, {})
        spikes = simulation["spikes_per_core"].get(str(core))
        synops = simulation["synops_per_core"].get(str(core))
        fed, network = ((simulation.get(key) or {}).get(str(core)) for key in SPLIT_KEYS)
        neurons = info.get("neurons")
        sparsity = (1 - spikes / (neurons * T)) if spikes is not None and neurons and T else None
        cores.append({
            "core": core, "layer": info.get("layer"), "neurons": neurons,
            "spikes_per_window": spikes, "synops_per_window": synops,
            "input_synops_per_window": fed, "network_synops_per_window": network,
            "spikes_per_s": spikes / window_s if spikes is not None and window_s else None,
            "synops_per_s": synops / window_s if synops is not None and window_s else None,
            "activation_sparsity": sparsity,
            "connection_sparsity": info.get("connection_sparsity"),
            "footprint_bytes": (info.get("footprint_bytes") or {}).get("total"),
        })
    spikes = sum(c["spikes_per_window"] or 0.0 for c in cores)
    synops = sum(c["synops_per_window"] or 0.0 for c in cores)
    split = {f"{part}_synops_per_window": sum(c[f"{part}_synops_per_window"] for c in cores)
             if cores and all(c[f"{part}_synops_per_window"] is not None for c in cores) else None
             for part in ("input", "network")}
    neurons = sum(c["neurons"] or 0 for c in cores) if static else None
    return {
        "cores": cores,
        "spikes_per_window": spikes,
        "synops_per_window": synops,
        **split,
        "spikes_per_s": spikes / window_s if window_s else None,
        "synops_per_s": synops / window_s if window_s else None,
        "input_events_per_window": simulation["input_events_per_window"],
        "neurons": neurons,
        "activation_sparsity": 1 - spikes / (neurons * T) if neurons and T else None,
        "window_s": window_s,
        "bandwidth_limit_synops_per_s": None,
        "bandwidth_note": BANDWIDTH_NOTE,
    }


def _mapping_summary(mapping: dict | None) -> dict | None:
    if not mapping:
        return None
    used = [row for row in mapping.get("cores", []) if row.get("layer")]
    quant = mapping.get("quantization") or {}
    return {
        "chip": mapping.get("chip"),
        "cores": used,
        "free_cores": [row["core"] for row in mapping.get("cores", []) if not row.get("layer")],
        "graph": mapping.get("graph"),  # a branching network's connections; None for a chain
        "quantization": {
            name: {k: q.get(k) for k in ("scale", "limited_by", "relative_weight_error",
                                          "weights_zeroed", "weights_total", "weights_clipped",
                                          "threshold_high", "threshold_low")}
            for name, q in quant.items()},
        "notes": list(mapping.get("notes") or []),
    }


def _run_entry(run_dir: Path, others: list[Path], engine: str | None) -> dict:
    artifact = _load_model(run_dir)
    problems: list[dict] = []
    missing: list[dict] = []
    data = artifact["data"]
    attention = artifact["attention"]
    imported = artifact.get("kind") == "imported"  # no float stages: evaluate, analyze, fold

    fold_cmd_chip = DEFAULT_CHIP
    fold = _read_json(run_dir / FOLD_JSON, problems, "")
    if fold and fold.get("chip"):
        fold_cmd_chip = fold["chip"]
    cmd = _commands(run_dir, others, fold_cmd_chip)
    for p in problems:
        p["command"] = cmd["fold"]
    eval_json = _read_json(run_dir / EVAL_JSON, problems, cmd["eval"])
    analysis = _read_json(run_dir / ANALYSIS_JSON, problems, cmd["analysis"])
    # fold compiles too, but rerunning it for a run that was never folded would add a stage
    folded = (run_dir / FOLD_JSON).exists() or (run_dir / FOLDED).exists()
    recompile = cmd["compile"] if folded else cmd["compile_alt"]
    mapping = _read_json(run_dir / MAPPING_JSON, problems, recompile)
    sim = _read_json(run_dir / SIM_JSON, problems, cmd["sim_exact"])
    device = _read_json(run_dir / DEVICE_JSON, problems, "a board measurement")
    config = _chip_config(run_dir, problems, recompile)
    if config is not None:
        fold_cmd_chip = config.chip
        cmd = _commands(run_dir, others, config.chip)

    # Only artifacts made from the files now in the run directory (provenance.py) are used.
    eval_json = _current(run_dir, EVAL_JSON, eval_json, problems, cmd["eval"])
    analysis = _current(run_dir, ANALYSIS_JSON, analysis, problems, cmd["analysis"])
    fold = _current(run_dir, FOLD_JSON, fold, problems, cmd["fold"])
    mapping = _current(run_dir, MAPPING_JSON, mapping, problems, cmd["compile"])
    config = _current(run_dir, CHIP_CONFIG, config, problems, cmd["compile"])
    device = _current(run_dir, DEVICE_JSON, device, problems, "asa-deploy deploy")
    if sim is not None:
        sim = {name: entry for name, entry in sim.items()
               if _current(run_dir, SIM_JSON, entry, problems, f"asa-deploy simulate {run_dir} --engine {name}",
                           entry=name) is not None} or None

    def lack(artifact_name: str, command: str, effect: str, alternative: str | None = None) -> None:
        if imported:  # evaluate, analyze and fold need asa_deploy's own trained network
            if artifact_name in (EVAL_JSON, ANALYSIS_JSON, FOLD_JSON, FOLD_MAPS) \
                    or artifact_name.startswith("figures/"):
                return
            if command == cmd["compile"]:
                command, alternative = cmd["compile_alt"], None
        missing.append({"artifact": artifact_name, "command": command, "effect": effect,
                        "alternative": alternative})

    if eval_json is None and not (run_dir / EVAL_JSON).is_file():
        lack(EVAL_JSON, cmd["eval"], "float accuracy and NASFR are taken from "
             + ("fold.json / analysis.json" if fold or analysis else "model.pt's validation metrics"))
    if analysis is None and not (run_dir / ANALYSIS_JSON).is_file():
        lack(ANALYSIS_JSON, cmd["analysis"], "no per-layer spike firing rates; analysis figures "
             "only where another run's analyze drew them")
    figures = _figures(run_dir)
    absent = [name for name in ANALYSIS_FIGURES if name not in figures]
    if absent:
        lack(", ".join(f"figures/{n}.png" for n in absent), cmd["analysis"],
             "the paper's figures are not shown")
    if fold is None and not (run_dir / FOLD_JSON).is_file():
        lack(FOLD_JSON, cmd["fold"], "no fidelity ladder")
    has_attention = attention not in (None, "none")
    fold_maps = run_dir / FOLD_MAPS
    if has_attention and not fold_maps.is_file():
        lack(FOLD_MAPS, cmd["fold"], "the calibrated attention maps are not shown")
    if config is None and not (run_dir / CHIP_CONFIG).is_file():
        lack(CHIP_CONFIG, cmd["compile"], "no neuron counts, connection sparsity or footprint "
             "from the compiled chip", cmd["compile_alt"])
    if mapping is None and not (run_dir / MAPPING_JSON).is_file():
        lack(MAPPING_JSON, cmd["compile"], "no core memory table", cmd["compile_alt"])
    simulation, why = _simulation(sim, fold, engine)
    if sim is None and not (run_dir / SIM_JSON).is_file():
        effect = (f"chip figures come from {simulation['source']}" if simulation
                  else "no chip activity, sparsity, power or energy figures")
        lack(SIM_JSON, cmd["sim_exact"], effect)
    elif sim is not None and "exact" not in sim and engine in (None, "exact"):
        lack(f"{SIM_JSON} 'exact' entry", cmd["sim_exact"],
             f"chip figures come from {simulation['source']}" if simulation else why)
    if engine and simulation is None and sim is not None:
        lack(f"{SIM_JSON} '{engine}' entry", f"asa-deploy simulate {run_dir} --engine {engine}", why)
    if device is None and not (run_dir / DEVICE_JSON).is_file():
        lack(DEVICE_JSON, f"asa-deploy deploy {run_dir} --device speck2fdevkit:0 (needs a board)",
             "power and energy are model estimates only")

    # ---- figures -----------------------------------------------------------------------------------
    frame_spec = (config.meta.get("frame_spec") if config is not None else None) or data["frame_spec"]
    T = int(frame_spec["T"])
    dt_s = int(frame_spec["dt_us"]) * 1e-6
    frame_window_s = T * dt_s
    notes: list[str] = []
    # rates, power and energy per the simulated windows' own duration (whole recordings: theirs)
    window_s = (simulation or {}).get("window_s") or frame_window_s
    if simulation and simulation["whole_recordings"] and not simulation["window_s"]:
        notes.append(f"{simulation['source']} was made by an older version that did not record "
                     f"its whole recordings' durations: rates, power and energy assume T x dt "
                     f"({frame_window_s * 1e3:g} ms) and are wrong; rerun `asa-deploy simulate "
                     f"{run_dir} --engine {simulation['engine']} --whole-recordings`")
    static = _cores_static(config) if config is not None else None
    chip_name = (config.chip if config is not None else None) or (simulation or {}).get("chip") \
        or (fold or {}).get("chip")

    spec, spec_error = None, None
    if chip_name:
        from asa_deploy.chip.spec import load_chip_spec

        try:
            spec = load_chip_spec(chip_name)
        except AsaDeployError as exc:
            spec_error = str(exc)

    activity = _activity(simulation, static, window_s / dt_s, window_s) if simulation else None
    power = None
    if activity and spec is not None:
        power = _power(spec, activity["spikes_per_window"], activity["synops_per_window"],
                       activity["input_events_per_window"], window_s)
    elif activity and spec is None:
        notes.append(f"power not estimated: the chip's hw_config could not be loaded ({spec_error})")
    elif not activity:
        notes.append(f"chip activity, sparsity and power not computed: {why}")

    float_accuracy, nasfr = _float_metrics(artifact, eval_json, analysis, fold)
    warnings = _silent_output(artifact, eval_json, simulation)
    chip_accuracy = None
    if simulation:
        chip_accuracy = {"accuracy_window": simulation["accuracy_window"],
                         "accuracy_recording": simulation["accuracy_recording"],
                         "source": simulation["source"], "n_windows": simulation["n_windows"],
                         "data": simulation["data"],
                         "windows_per_recording": simulation["windows_per_recording"]}
    neurobench = None
    if static is not None or activity:
        weights = sum(r["weights"] for r in static) if static else None
        zeros = sum(r["zero_weights"] for r in static) if static else None
        footprint = None
        if static:
            footprint = {k: sum(r["footprint_bytes"][k] for r in static)
                         for k in ("weights", "biases", "states", "total")}
        neurobench = {
            "effective_acs_per_inference": activity["synops_per_window"] if activity else None,
            "effective_macs_per_inference": 0 if activity else None,
            "activation_sparsity": activity["activation_sparsity"] if activity else None,
            "connection_sparsity": zeros / weights if weights else None,
            "footprint_bytes": footprint,
            "parameters": weights,
            "notes": {"effective_acs": EFFECTIVE_ACS_NOTE,
                      "activation_sparsity": ACTIVATION_SPARSITY_NOTE, "footprint": FOOTPRINT_NOTE},
        }

    layers = None
    if analysis and isinstance(analysis.get("layers"), dict):
        layers = {name: {"neurons": layer.get("neurons"), "sfr": layer.get("sfr"),
                         "qe": layer.get("qe"), "kind": layer.get("kind")}
                  for name, layer in analysis["layers"].items()}

    fold_summary = None
    if fold:
        fold_summary = {
            "chip": fold.get("chip"), "strategy": fold.get("strategy"),
            "strategies": {name: {k: current_names(s, "recording").get(k)
                                  for k in ("accuracy_window", "accuracy_recording", "nasfr")}
                           for name, s in (fold.get("strategies") or {}).items()},
            "calibration_data": fold.get("calibration_data"),
            "ladder": [current_names(row, "recording") for row in fold.get("ladder") or []],
            "fold_maps": str(fold_maps) if fold_maps.is_file() else None,
        }

    return {
        "run_dir": str(run_dir),
        "attention": attention,
        "model": artifact["model_spec"].get("name"),
        "imported": ({k: artifact["import"].get(k) for k in ("source", "sha256", "format",
                                                               "warnings")}
                     if imported else None),
        "data": {"spec": data.get("spec"), "class_names": list(data.get("class_names", [])),
                 "sensor_size": list(data.get("sensor_size", [])), "frame_spec": frame_spec,
                 "time_steps": T, "window_s": frame_window_s},
        "chip": chip_name,
        "artifacts": {name: (run_dir / name).is_file()
                      for name in (MODEL, EVAL_JSON, ANALYSIS_JSON, FOLD_JSON, CHIP_CONFIG,
                                   MAPPING_JSON, SIM_JSON, DEVICE_JSON)},
        "missing": missing,
        "problems": problems,
        "accuracy": {"float": float_accuracy, "chip": chip_accuracy},
        "nasfr": nasfr,
        "simulation": simulation,
        "activity": activity,
        "neurobench": neurobench,
        "power": power,
        "measured": _measured(device, frame_window_s, power),  # deploy's windows are T x dt
        "layers": layers,
        "fold": fold_summary,
        "mapping": _mapping_summary(mapping),
        "figures": figures,
        "notes": notes,
        "warnings": warnings,
    }


# ---- comparison ------------------------------------------------------------------------------------

COMPARISON_ROWS = [
    # (key, title with units, getter)
    ("chip_accuracy_window", "chip accuracy, per window",
     lambda r: (r["accuracy"]["chip"] or {}).get("accuracy_window")),
    ("chip_accuracy_recording", "chip accuracy, per recording",
     lambda r: (r["accuracy"]["chip"] or {}).get("accuracy_recording")),
    ("float_accuracy_window", "float accuracy, per window",
     lambda r: r["accuracy"]["float"].get("accuracy_window")),
    ("float_accuracy_recording", "float accuracy, per recording",
     lambda r: r["accuracy"]["float"].get("accuracy_recording")),
    ("nasfr", "NASFR (float; spikes / neuron / step)", lambda r: r["nasfr"]["value"]),
    ("spikes_per_window", "spikes / window (chip)",
     lambda r: (r["activity"] or {}).get("spikes_per_window")),
    ("synops_per_window", "SynOps / window (chip, = effective ACs)",
     lambda r: (r["activity"] or {}).get("synops_per_window")),
    ("activation_sparsity", "activation sparsity",
     lambda r: (r["activity"] or {}).get("activation_sparsity")),
    ("power_mw", "estimated processor power (mW)", lambda r: (r["power"] or {}).get("total_mw")),
    ("devkit_power_mw", "estimated dev-kit power (mW, all rails)",
     lambda r: ((r["power"] or {}).get("devkit") or {}).get("total_mw")),
    ("dynamic_power_mw", "estimated dynamic power (mW)",
     lambda r: (r["power"] or {}).get("dynamic_mw")),
    ("energy_per_inference_uj", "energy / inference (uJ)",
     lambda r: (r["power"] or {}).get("energy_per_inference_uj")),
    ("measured_power_mw", "measured power (mW, device.json, all its rails)",
     lambda r: (r["measured"] or {}).get("total_mw")),
]


def _comparison(runs: dict[str, dict]) -> dict | None:
    if len(runs) < 2:
        return None
    labels = list(runs)
    baseline = "vanilla" if "vanilla" in runs else labels[0]
    others = [label for label in labels if label != baseline]
    rows = []
    for key, title, get in COMPARISON_ROWS:
        values = {label: get(run) for label, run in runs.items()}
        if all(v is None for v in values.values()):
            continue
        rows.append({"key": key, "title": title, "values": values,
                     "ratios": {label: _ratio(values[label], values[baseline]) for label in others}})
    return {"baseline": baseline, "labels": labels, "rows": rows, "warnings": _unlike(runs)}


def _unlike(runs: dict[str, dict]) -> list[str]:
    """What differs between the runs besides the method, so a ratio is not read as like for like."""
    facts = {
        "trained on different data": lambda r: r["data"]["spec"],
        "framed differently": lambda r: json.dumps(r["data"]["frame_spec"], sort_keys=True),
        "on different chips": lambda r: r["chip"],
        "chip figures from different engines": lambda r: (r["simulation"] or {}).get("engine"),
        "chip accuracy on different data": lambda r: (r["accuracy"]["chip"] or {}).get("data"),
        "chip accuracy over different windows per recording":
            lambda r: (r["accuracy"]["chip"] or {}).get("windows_per_recording"),
        "float accuracy on different data": lambda r: r["accuracy"]["float"]["data"],
        "float accuracy over different windows per recording":
            lambda r: r["accuracy"]["float"]["windows_per_recording"],
    }
    out = []
    for what, get in facts.items():
        values = {label: get(run) for label, run in runs.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            out.append(f"the runs are {what}: "
                       + ", ".join(f"{label} {value}" for label, value in values.items()))
    return out


def build_report(run_dirs: list[Path], *, engine: str | None = None) -> dict:
    """Collect and compute the report of ``run_dirs`` (JSON-ready).

    ``engine``: the simulator whose results to use (``exact`` / ``fast``); None: ``exact`` if
    ``sim.json`` has it, else ``fast``, else the fold ladder's last simulator rows.
    Raises ``AsaDeployError`` for a folder without ``model.pt`` (not a trained run).
    """
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise AsaDeployError("report needs at least one run directory")
    entries = []
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise AsaDeployError(f"{run_dir}: no such run directory; create one with "
                                 f"`asa-deploy train --out {run_dir} ...`")
        others = [r for r in run_dirs if r != run_dir]
        entries.append(_run_entry(run_dir, others, engine))
    labels = _labels([(run_dir, "imported" if e["imported"] else attention_label(e["attention"]))
                      for run_dir, e in zip(run_dirs, entries, strict=True)])
    runs = {}
    for label, entry in zip(labels, entries, strict=True):
        runs[label] = {"label": label, **entry}
    chips = {}
    for entry in runs.values():
        if entry["power"] and entry["chip"] not in chips:
            chips[entry["chip"]] = {"hw_config": entry["power"]["hw_config"],
                                    "model": entry["power"]["model"], **entry["power"]["sources"]}
    report = {
        "format_version": REPORT_FORMAT,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "engine_requested": engine,
        "runs": runs,
        "comparison": _comparison(runs),
        "power_model_sources": chips,
        "definitions": {"power": POWER_NOTE, "effective_acs": EFFECTIVE_ACS_NOTE,
                        "activation_sparsity": ACTIVATION_SPARSITY_NOTE,
                        "footprint": FOOTPRINT_NOTE, "bandwidth": BANDWIDTH_NOTE},
    }
    return jsonable(report)
