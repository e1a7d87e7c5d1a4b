"""The ``analyze`` stage: redundancy metrics of a model on a data set, as JSON (``analysis.json``).

``summarize`` turns ``collect``'s records into a JSON-able dict; ``analyze`` runs both. Arrays for
figures stay in the records (``figures.plot_comparison`` takes them), not in the JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asa_deploy.analysis import metrics
from asa_deploy.analysis.collect import LayerRecord, LayerRecords, collect
from asa_deploy.data.framing import recording_accuracy
from asa_deploy.io import write_text
from asa_deploy.metrics import nasfr


def _nan_mean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def _ghost_summary(report: metrics.GhostReport) -> dict[str, Any]:
    return {
        "mean_similarity": report.mean_similarity,
        "near_duplicate_fraction": report.near_duplicate_fraction,
        "dead_channels": int(report.dead.sum()),
        "dead_fraction": report.dead_fraction,
        "most_similar": report.most_similar.tolist(),
        "most_similar_value": report.most_similar_value.tolist(),
    }


def _layer_summary(layer: LayerRecord, near: float) -> dict[str, Any]:
    nsfr = layer.nsfr
    ptd = layer.ptd
    ptd_pooled = metrics.ptd(layer.mpd.counts.sum(0), layer.mpd.edges, layer.threshold)
    valid = ~torch.isnan(ptd)
    outside = layer.mpd.underflow.sum() + layer.mpd.overflow.sum()
    summary = {
        "kind": "conv" if layer.is_conv else "fc",
        "shape": list(layer.shape),
        "neurons": layer.neurons,
        "threshold": layer.threshold,
        "alpha": layer.alpha,
        "sfr": layer.sfr,
        "t_sfr": metrics.t_sfr(nsfr).tolist(),
        "c_sfr": metrics.c_sfr(nsfr).tolist(),
        "qe": layer.qe,
        "ptd_mean": _nan_mean(ptd),
        "noise_channel_step_fraction": float((ptd[valid] >= 0).double().mean())
        if valid.any()
        else float("nan"),
        "noise_channel_fraction": float((ptd_pooled >= 0).double().mean()),
        "mpd_variance_mean": float(layer.mpd_variance.mean()),
        "mpd_outside_fraction": float(outside) / float(layer.moments[0].sum()),
        "u_spike_mismatches": layer.mismatches,
    }
    if layer.is_conv:
        summary["ghost"] = _ghost_summary(metrics.ghost_features(nsfr, near=near))
    return summary


def summarize(records: LayerRecords, *, near: float = 0.9) -> dict[str, Any]:
    """JSON-able summary of ``collect``'s records (keys documented in ``analyze``)."""
    layers = records.layers
    correct = records.predictions == records.labels
    sfr = {r.name: r.sfr for r in layers}
    neurons = {r.name: r.neurons for r in layers}
    return {
        "n_samples": records.n_samples,
        "time_steps": records.time_steps,
        "accuracy_window": float(correct.double().mean()),
        "accuracy_recording": recording_accuracy(
            records.predictions.numpy(), records.labels.numpy(), records.recordings.numpy()
        ),
        "n_recordings": int(torch.unique(records.recordings).numel()),
        "nasfr": nasfr(sfr, neurons),
        "t_sfr": metrics.network_t_sfr({r.name: r.nsfr for r in layers}).tolist(),
        "qe": sum(r.qe_sum for r in layers) / sum(r.qe_count for r in layers),
        "mpd_binning": {
            "unit": "threshold",
            "low": metrics.MPD_LOW,
            "high": metrics.MPD_HIGH,
            "bin_width": 1 / metrics.MPD_STEPS_PER_THRESHOLD,
        },
        "near_duplicate_similarity": near,
        "layers": {r.name: _layer_summary(r, near) for r in layers},
    }


def analyze(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    max_samples: int | None = None,
    device: str | torch.device = "cpu",
    near: float = 0.9,
    progress: bool = True,
) -> dict[str, Any]:
    """Redundancy analysis of ``model`` on ``loader`` (see ``collect``), as a JSON-able dict.

    Keys: ``n_samples``, ``time_steps``; ``accuracy_window``, ``accuracy_recording`` (more than half
    of a recording's windows right), ``n_recordings``; ``nasfr``; ``t_sfr`` (network T-SFR per step);
    ``qe`` (all layers, weighted by neuron-steps); ``mpd_binning``; ``near_duplicate_similarity``;
    ``layers``: {name: {``kind`` (conv / fc), ``shape``, ``neurons``, ``threshold``, ``alpha``,
    ``sfr``, ``t_sfr`` [T], ``c_sfr`` [T][C], ``qe``, ``ptd_mean``, ``noise_channel_step_fraction``
    (channel-steps with PTD >= 0), ``noise_channel_fraction`` (channels whose MPD pooled over steps
    has PTD >= 0), ``mpd_variance_mean``, ``mpd_outside_fraction`` (u outside the histogram range),
    ``u_spike_mismatches``, and for conv layers ``ghost`` {``mean_similarity``,
    ``near_duplicate_fraction`` (of live channels), ``dead_channels``, ``dead_fraction``,
    ``most_similar`` [C] (-1: dead), ``most_similar_value`` [C]}}}. Undefined values are NaN
    (``write_analysis`` writes them as null).
    """
    records = collect(
        model, loader, max_samples=max_samples, device=device, raw_bytes=0, progress=progress
    )
    return summarize(records, near=near)


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_analysis(result: dict[str, Any], path: str | Path) -> Path:
    """Write ``result`` as JSON, atomically (temporary file in the same folder, then rename)."""
    return write_text(path, json.dumps(_jsonable(result), indent=1, allow_nan=False) + "\n")
