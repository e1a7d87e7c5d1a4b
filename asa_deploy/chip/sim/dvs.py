"""The shared input stage of both engines: input checks, windowing and the chip's DVS layer.

Both engines must see exactly the same events in the same order, so this is the one place where
events are refused, cut to the window, sorted, and pushed through the DVS layer (killed pixels ->
polarity selection / merge -> sum pooling -> ROI -> mirror, docs/speck-hardware.md section 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asa_deploy.chip.config import ChipConfig, DvsLayerConfig
from asa_deploy.chip.sim.window import EventWindow
from asa_deploy.errors import BadRecordingError


@dataclass
class ChipInput:
    """One window's events as the entry cores receive them."""

    c: np.ndarray        # int32 [M] channel, y, x in the entry cores' input coordinates
    y: np.ndarray
    x: np.ndarray
    bin: np.ndarray      # int32 [M] time bin of each event
    ordinal: np.ndarray  # int64 [M] 1-based position among the window's input events (dropped ones count)
    bin_counts: np.ndarray  # int64 [n_bins] input events per bin, dropped ones included
    n_input: int
    n_dropped: int


def common_bins(windows: Sequence[EventWindow]) -> int:
    """The n_bins every window has (the engines batch windows of one length), without reading any
    events; refused when there are no windows or their lengths differ."""
    if not windows:
        raise ValueError("simulate needs at least one EventWindow")
    n_bins = {w.n_bins for w in windows}
    if len(n_bins) != 1:
        raise ValueError(f"all windows must have the same n_bins, got {sorted(n_bins)}")
    return n_bins.pop()


def check_windows(config: ChipConfig, windows: Sequence[EventWindow]) -> int:
    """Refuse windows the engines cannot batch or would silently misread; return the common n_bins."""
    n_bins = common_bins(windows)
    for w in windows:
        if w.n_bins < 1 or w.dt_us < 1:
            raise ValueError(f"{w.recording or '<events>'}: n_bins {w.n_bins} and dt_us {w.dt_us} "
                             f"must be >= 1")
        _check_coordinates(config, w)
    return n_bins


def _check_coordinates(config: ChipConfig, window: EventWindow) -> None:
    """An event outside the chip input would index the wrong neuron, never fail; refuse it here."""
    ev = window.events
    p_max, h, w = config.input_shape()
    bad = (ev["x"] < 0) | (ev["x"] >= w) | (ev["y"] < 0) | (ev["y"] >= h) | (ev["p"] < 0) | (ev["p"] >= p_max)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadRecordingError(
            window.recording or "<events>",
            f"event (x={int(ev['x'][i])}, y={int(ev['y'][i])}, p={int(ev['p'][i])}) outside the chip "
            f"input {p_max}x{h}x{w} (PxHxW), one of {int(bad.sum())} such events; wrong sensor size, "
            f"downsampling or polarity count for this chip config")


def prepare_window(config: ChipConfig, window: EventWindow) -> ChipInput:
    """Cut to the window, sort stably by time and apply the DVS layer (or the direct input core)."""
    ev = window.events
    t = ev["t"]
    inside = (t >= window.t_start) & (t < window.t_end)
    ev = ev[inside]
    if len(ev) > 1 and np.any(np.diff(ev["t"]) < 0):
        ev = ev[np.argsort(ev["t"], kind="stable")]
    bins = ((ev["t"] - window.t_start) // window.dt_us).astype(np.int32)
    c = ev["p"].astype(np.int32)
    y = ev["y"].astype(np.int32)
    x = ev["x"].astype(np.int32)
    keep = np.ones(len(ev), dtype=bool)
    if config.dvs is not None:
        c, y, x, keep = _dvs_layer(config.dvs, c, y, x)
    ordinal = np.flatnonzero(keep).astype(np.int64) + 1
    return ChipInput(
        c=c[keep], y=y[keep], x=x[keep], bin=bins[keep], ordinal=ordinal,
        bin_counts=np.bincount(bins, minlength=window.n_bins).astype(np.int64),
        n_input=len(ev), n_dropped=int(len(ev) - keep.sum()))


def _dvs_layer(dvs: DvsLayerConfig, p: np.ndarray, y: np.ndarray, x: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map sensor events to the destination cores' input; ``keep`` marks the ones that survive."""
    keep = np.ones(len(p), dtype=bool)
    if dvs.killed_pixels:
        killed = np.zeros(dvs.sensor_shape[1:], dtype=bool)
        ky, kx = np.asarray(dvs.killed_pixels, dtype=np.int64).T
        killed[ky, kx] = True
        keep &= ~killed[y, x]
    keep &= np.where(p == 1, dvs.on_channel, dvs.off_channel)
    if dvs.merge or not (dvs.on_channel and dvs.off_channel):
        c = np.zeros_like(p)
    else:
        c = p.copy()
    y = y // dvs.pooling[0]
    x = x // dvs.pooling[1]
    h, w = dvs.pooled_shape()
    cut = dvs.cut if dvs.cut is not None else (h - 1, w - 1)
    keep &= (y >= dvs.origin[0]) & (y <= cut[0]) & (x >= dvs.origin[1]) & (x <= cut[1])
    y = y - dvs.origin[0]
    x = x - dvs.origin[1]
    if dvs.mirror[0]:
        y = (cut[0] - dvs.origin[0]) - y
    if dvs.mirror[1]:
        x = (cut[1] - dvs.origin[1]) - x
    return c, y, x, keep
