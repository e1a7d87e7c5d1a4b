"""The ``fast`` engine: time-stepped, batched torch, i.e. what sinabs's own simulation computes.

Events are counted into [N, n_bins, C, H, W] frames, and each core is ``conv2d`` with its integer
weights followed by a sinabs ``IAFSqueeze`` (MultiSpike, the reset the core is configured with,
``min_v_mem = threshold_low``) and sum pooling on the way to each destination. This is the same
computation as sinabs's ``DynapcnnNetwork`` software forward, so it is the reference the trained
network was judged by; where it differs from the chip (several spikes per bin, clamping after the
bin's whole input, leak) is listed in docs/speck-hardware.md section 3, and ``exact`` models the chip.

Modelling choices:

- ``leak_enable``: ``biases[c]`` is added to every neuron of channel c once per time bin, i.e. the
  slow clock is assumed to tick exactly once per bin, in phase with the bins (UNVERIFIED on chip).
- Killed neurons (``neurons_kill``) get no input and their spikes are zeroed, so they never spike
  and their state stays at the initial value (unless that value is itself beyond a threshold, where
  sinabs resets or clamps it once; no output depends on it).
- ``output_decimator`` is refused: which spike it passes depends on the order of events inside a
  bin, which a time-stepped model does not have.
- ``latency_events`` has bin resolution: all input events up to the end of the first bin with an
  output spike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import sinabs.activation as sa
import torch
import torch.nn.functional as F
from sinabs.layers import IAFSqueeze

from asa_deploy.chip.config import READOUT_CORE, ChipConfig, CoreConfig
from asa_deploy.chip.sim.dvs import ChipInput, check_windows, prepare_window
from asa_deploy.chip.sim.result import MonitorCounts, SimResult, assemble
from asa_deploy.chip.sim.window import EventWindow
from asa_deploy.errors import ChipConfigError
from asa_deploy.progress import progress as progress_bar

FRAME_BUDGET_BYTES = 512 * 2**20  # float32 tensors alive per chunk of windows, roughly


def fanout_map(core: CoreConfig) -> np.ndarray:
    """int64 [H, W]: neurons one input spike at (y, x) updates (C_out x valid kernel offsets).

    A kernel offset counts when the output position it lands on is integral (stride) and inside
    the output map; zero weights count too, as the chip reads them all."""
    _, h, w = core.input_shape
    c_out, h_out, w_out = core.neuron_shape
    k = core.kernel_size

    def per_axis(size: int, stride: int, pad: int, size_out: int) -> np.ndarray:
        pos = np.arange(size)[:, None] + pad - np.arange(k)[None, :]
        valid = (pos >= 0) & (pos % stride == 0) & (pos // stride < size_out)
        return valid.sum(axis=1).astype(np.int64)

    return c_out * np.outer(per_axis(h, core.stride[0], core.padding[0], h_out),
                            per_axis(w, core.stride[1], core.padding[1], w_out))


def run_frames(config: ChipConfig, frames: torch.Tensor) -> dict:
    """Run all cores on ``frames`` [N, T, C, H, W] given to the entry core(s), bypassing the DVS layer.

    Returns ``{"spikes": {core_id: float32 [N, T, C_out, H_out, W_out]}, "synops": {core_id: int64
    [N]}, "input_synops": {core_id: int64 [N]}}``; spikes are before destination pooling;
    ``input_synops`` is the part of ``synops`` caused by ``frames`` (the rest: other cores' spikes)."""
    frames = frames.to(torch.float32)
    n, t = frames.shape[:2]
    entry = set(config.entry_cores())
    pending: dict[int, torch.Tensor] = {}
    spikes: dict[int, torch.Tensor] = {}
    synops: dict[int, np.ndarray] = {}
    input_synops: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for cid in config.topological_order():
            core = config.core(cid)
            x = pending.pop(cid, None)
            network = np.zeros(n, dtype=np.int64) if x is None else _synops(core, x)
            input_synops[cid] = _synops(core, frames) if cid in entry else np.zeros(n, dtype=np.int64)
            synops[cid] = network + input_synops[cid]  # synops are linear in the input counts
            if cid in entry:
                x = frames if x is None else x + frames
            if x is None:
                x = frames.new_zeros((n, t, *core.input_shape))
            out = _run_core(core, x)
            spikes[cid] = out
            for d in core.destinations:
                if d.core == READOUT_CORE:
                    continue
                pooled = _sum_pool(out, d.pooling)
                target = pending.setdefault(d.core, frames.new_zeros((n, t, *config.core(d.core).input_shape)))
                target[:, :, d.feature_shift:d.feature_shift + pooled.shape[2]] += pooled
    return {"spikes": spikes, "synops": synops, "input_synops": input_synops}


def _synops(core: CoreConfig, x: torch.Tensor) -> np.ndarray:
    per_pixel = x.sum(dim=(1, 2), dtype=torch.float64).numpy()  # exact: integer counts
    return np.einsum("nhw,hw->n", per_pixel.astype(np.int64), fanout_map(core))


def _run_core(core: CoreConfig, x: torch.Tensor) -> torch.Tensor:
    n, t = x.shape[:2]
    weights = torch.from_numpy(core.weights.astype(np.float32))
    bias = torch.from_numpy(core.biases.astype(np.float32)) if core.leak_enable else None
    current = F.conv2d(x.flatten(0, 1), weights, bias, stride=tuple(core.stride),
                       padding=tuple(core.padding))
    killed = None if core.neurons_kill is None else torch.from_numpy(np.asarray(core.neurons_kill, dtype=bool))
    if killed is not None:
        current = current.masked_fill(killed, 0.0)
    iaf = IAFSqueeze(
        batch_size=n,
        spike_threshold=float(core.threshold_high),
        min_v_mem=float(core.threshold_low),
        spike_fn=sa.MultiSpike,
        reset_fn=sa.MembraneReset() if core.return_to_zero else sa.MembraneSubtract(),
    )
    iaf.init_state_with_shape((n, *core.neuron_shape))
    init = torch.from_numpy(core.neurons_initial_value.astype(np.float32))
    iaf.v_mem = init.expand(n, *core.neuron_shape).clone()
    out = iaf(current)
    if killed is not None:
        out = out.masked_fill(killed, 0.0)
    return out.unflatten(0, (n, t))


def _sum_pool(x: torch.Tensor, pooling: int) -> torch.Tensor:
    if pooling == 1:
        return x
    pooled = F.avg_pool2d(x.flatten(0, 1), pooling) * (pooling * pooling)  # exact: pooling is 2 or 4
    return pooled.unflatten(0, x.shape[:2])


def simulate_fast(config: ChipConfig, windows: Sequence[EventWindow], *,
                  progress: bool = False, monitor: Sequence[int] = ()) -> SimResult:
    """``monitor``: cores whose per-neuron spike counts to keep (``SimResult.monitor``)."""
    config.validate()
    for core in config.cores:
        if core.output_decimator is not None:
            raise ChipConfigError(
                f"core {core.core} ({core.name}) has output_decimator {core.output_decimator}: which "
                f"spikes it passes depends on event order; simulate with engine exact")
    n_bins = check_windows(config, windows)
    start = time.perf_counter()
    source = config.core(config.readout.source_core)
    channels = config.readout.class_channels()
    entry_shape = tuple(config.core(config.entry_cores()[0]).input_shape)
    chunk = _chunk_size(config, n_bins)
    core_ids = config.core_ids()
    monitored = MonitorCounts(config, monitor, len(windows), n_bins)
    outputs, spikes, synops, input_synops, latency, n_input, n_dropped = [], [], [], [], [], [], []
    with progress_bar(total=len(windows), enabled=progress, desc="simulate fast",
                      unit="window") as bar:
        for first in range(0, len(windows), chunk):
            part = [prepare_window(config, w) for w in windows[first:first + chunk]]
            result = run_frames(config, _frames(part, n_bins, entry_shape))
            out = result["spikes"][source.core][:, :, channels].sum(dim=(3, 4), dtype=torch.float64)
            outputs.append(out.numpy().astype(np.int64))
            latency.extend(_latency(o, ci) for o, ci in zip(outputs[-1], part, strict=True))
            n_input.extend(ci.n_input for ci in part)
            n_dropped.extend(ci.n_dropped for ci in part)
            spikes.append(np.stack([result["spikes"][c].sum(dim=(1, 2, 3, 4), dtype=torch.float64)
                                    .numpy().astype(np.int64) for c in core_ids], axis=1))
            synops.append(np.stack([result["synops"][c] for c in core_ids], axis=1))
            input_synops.append(np.stack([result["input_synops"][c] for c in core_ids], axis=1))
            for c in monitored.arrays:
                monitored.put(c, first, result["spikes"][c].numpy())
            bar.update(len(part))
    return assemble("fast", config, windows, np.concatenate(outputs), np.concatenate(spikes),
                    np.concatenate(synops), np.concatenate(input_synops), np.array(n_input),
                    np.array(n_dropped), np.array(latency, dtype=np.int64),
                    time.perf_counter() - start, monitored)


def _frames(inputs: list[ChipInput], n_bins: int, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    flat = np.concatenate([
        (((i * n_bins + ci.bin.astype(np.int64)) * c + ci.c) * h + ci.y) * w + ci.x
        for i, ci in enumerate(inputs)])
    size = len(inputs) * n_bins * c * h * w
    counts = np.bincount(flat, minlength=size).astype(np.float32)
    return torch.from_numpy(counts).reshape(len(inputs), n_bins, c, h, w)


def _latency(output_spikes: np.ndarray, chip_input: ChipInput) -> int:
    spiking_bins = np.flatnonzero(output_spikes.sum(axis=1))
    if len(spiking_bins) == 0:
        return -1
    return int(chip_input.bin_counts[:spiking_bins[0] + 1].sum())


def _chunk_size(config: ChipConfig, n_bins: int) -> int:
    """Windows per batch so the frames of every core stay within ``FRAME_BUDGET_BYTES``."""
    per_bin = sum(int(np.prod(c.input_shape)) + 3 * int(np.prod(c.neuron_shape)) for c in config.cores)
    return max(1, FRAME_BUDGET_BYTES // (4 * n_bins * per_bin))
