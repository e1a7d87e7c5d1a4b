"""Figures comparing models side by side: spike features, T-SFR, MPD and per-layer SFR.

Drawn on bare ``matplotlib.figure.Figure`` objects (rendered by Agg), so importing this module never
changes the pyplot backend of a notebook or script.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from asa_deploy.analysis import metrics
from asa_deploy.analysis.collect import LayerRecord, LayerRecords
from asa_deploy.io import atomic_output
from asa_deploy.metrics import nasfr


def _save(fig: Figure, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def _first_conv(records: LayerRecords) -> LayerRecord | None:
    return next((r for r in records.layers if r.is_conv), None)


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()})


def plot_spike_features(
    results: Mapping[str, LayerRecords], path: Path, *, channels: int = 8, steps: int = 4
) -> Path | None:
    """Grid of the first conv layer's spike features (N-SFR maps): channels x a few steps, one
    block per model, on one colour scale so that the models compare. None if no model has a conv
    layer."""
    convs = {name: layer for name, rec in results.items() if (layer := _first_conv(rec))}
    if not convs:
        return None
    shown = {
        name: (
            layer.nsfr.numpy(),
            list(range(min(channels, layer.shape[0]))),
            _spread(layer.time_steps, steps),
        )
        for name, layer in convs.items()
    }
    vmax = max(float(m[np.ix_(ts, cs)].max()) for m, cs, ts in shown.values()) or 1.0
    rows = max(len(cs) for _, cs, _ in shown.values())
    cols = sum(len(ts) for _, _, ts in shown.values())
    fig = Figure(figsize=(1.3 * cols + 1.5, 1.3 * rows + 1.0), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(1, len(shown), wspace=0.02))
    image = None
    for sub, (name, (maps, cs, ts)) in zip(subfigs, shown.items(), strict=True):
        sub.suptitle(f"{name}: {convs[name].name}", fontsize=11)
        axes = sub.subplots(rows, len(ts), squeeze=False)
        for i, ax_row in enumerate(axes):
            for j, ax in enumerate(ax_row):
                ax.set_xticks([])
                ax.set_yticks([])
                if i >= len(cs):
                    ax.set_axis_off()
                    continue
                image = ax.imshow(maps[ts[j], cs[i]], cmap="magma", vmin=0, vmax=vmax)
                if i == 0:
                    ax.set_title(f"t = {ts[j]}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"ch {cs[i]}", fontsize=9)
    subfigs[-1].colorbar(image, ax=subfigs[-1].axes, shrink=0.6, label="N-SFR")
    fig.suptitle("Spike features (N-SFR maps) of the first conv layer")
    return _save(fig, path)


def plot_t_sfr(results: Mapping[str, LayerRecords], path: Path) -> Path:
    """Network T-SFR over time, one line per model (NASFR in the legend)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for name, rec in results.items():
        curve = metrics.network_t_sfr({r.name: r.nsfr for r in rec.layers}).numpy()
        rate = nasfr({r.name: r.sfr for r in rec.layers}, {r.name: r.neurons for r in rec.layers})
        ax.plot(np.arange(len(curve)), curve, marker=".", label=f"{name} (NASFR {rate:.3f})")
    ax.set_xlabel("time step t")
    ax.set_ylabel("network T-SFR (mean N-SFR)")
    ax.set_title("T-SFR over time")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_mpd(
    results: Mapping[str, LayerRecords],
    path: Path,
    *,
    layer: str | None = None,
    channels: int = 4,
    step: int | None = None,
) -> Path:
    """MPD histograms of a few channels of one layer at one step, one row per model.

    The layer defaults to the first conv one and the step to T // 2; the channels are spread over
    the range of PTD (pooled over steps), lowest first. The threshold is the dashed red line.
    """
    fig = Figure(figsize=(3.2 * channels, 2.6 * len(results) + 0.6), layout="constrained")
    axes = fig.subplots(len(results), channels, squeeze=False)
    for ax_row, (name, rec) in zip(axes, results.items(), strict=True):
        lay = rec[layer] if layer else (_first_conv(rec) or rec.layers[0])
        t = rec.time_steps // 2 if step is None else step
        pooled = metrics.ptd(lay.mpd.counts.sum(0), lay.mpd.edges, lay.threshold).numpy()
        order = np.argsort(np.nan_to_num(pooled, nan=np.inf), kind="stable")
        picks = [int(order[i]) for i in _spread(len(order), channels)]
        edges = lay.mpd.edges.numpy()
        ptd_t = lay.ptd[t].numpy()
        for ax, c in zip(ax_row, picks, strict=False):
            counts = lay.mpd.counts[t, c].numpy()
            inside = counts.sum()
            outside = int(lay.mpd.underflow[t, c] + lay.mpd.overflow[t, c])
            ax.stairs(counts / max(inside + outside, 1), edges, fill=True, alpha=0.7)
            ax.axvline(lay.threshold, color="red", linestyle="--", label="threshold")
            title = f"{name} {lay.name} ch {c}, t={t}\nPTD {ptd_t[c]:+.3f}"
            if outside:
                title += f", {outside / (inside + outside):.0%} off-range"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("membrane potential u")
        ax_row[0].set_ylabel("fraction of neurons x samples")
        ax_row[0].legend(fontsize=8)
        for ax in ax_row[len(picks) :]:
            ax.set_axis_off()
    fig.suptitle("Membrane potential distributions (before spike and reset)")
    return _save(fig, path)


def plot_layer_sfr(results: Mapping[str, LayerRecords], path: Path) -> Path:
    """Per-layer SFR, grouped bars (one colour per model)."""
    names: list[str] = []
    for rec in results.values():
        names += [r.name for r in rec.layers if r.name not in names]
    x = np.arange(len(names))
    width = 0.8 / len(results)
    fig = Figure(figsize=(max(6.0, 1.2 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    for i, (model, rec) in enumerate(results.items()):
        sfr = {r.name: r.sfr for r in rec.layers}
        values = [sfr.get(n, np.nan) for n in names]
        ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=model)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_xlabel("spiking layer")
    ax.set_ylabel("SFR (spikes / neuron / step)")
    ax.set_title("Spike firing rate per layer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_comparison(
    results: Mapping[str, LayerRecords],
    out_dir: str | Path,
    *,
    channels: int = 8,
    steps: int = 4,
    mpd_layer: str | None = None,
    mpd_channels: int = 4,
) -> list[Path]:
    """Draw the four comparison figures for ``{model name: collect(...) records}`` into
    ``out_dir``: spike_features.png (if any conv layer), t_sfr.png, mpd.png, layer_sfr.png."""
    if not results:
        raise ValueError("plot_comparison needs at least one model's records")
    out = Path(out_dir)
    paths = [
        plot_spike_features(results, out / "spike_features.png", channels=channels, steps=steps),
        plot_t_sfr(results, out / "t_sfr.png"),
        plot_mpd(results, out / "mpd.png", layer=mpd_layer, channels=mpd_channels),
        plot_layer_sfr(results, out / "layer_sfr.png"),
    ]
    return [p for p in paths if p is not None]
