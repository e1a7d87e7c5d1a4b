"""The ``exact`` engine: an event-driven, depth-first, integer model of the Speck/DYNAP-CNN cores.

Why our own: sinabs's ``specksim`` wrapper needs the real samna, which cannot be installed here
(docs/speck-hardware.md section 0a), and samna's specksim processes events breadth-first while the chip is
depth-first (section 3), which can change results at merges, branches and lower clamps. This engine
follows the per-event rules of section 3 with integer arithmetic, one jitted call per window.

Model (per input event, in timestamp order, stable; its whole cascade ends before the next event):

- A core receiving (c, y, x) visits every affected neuron, output channel ascending, then ky, kx
  ascending. Intra-core visit order: UNVERIFIED (the datasheet gives none). Each neuron is updated
  once per incoming event, so the order cannot change the core's own states; it only sets the
  order in which spikes leave (which the decimator and downstream lower clamps can see).
- Per neuron: ``v += w``, saturated to int16 (UNVERIFIED: section 3 marks overflow behaviour
  unverified), clamped up to ``threshold_low``; if ``v >= threshold_high`` it emits one spike (at
  most one per update, section 3) and resets to 0 (``return_to_zero``) or subtracts the threshold.
  Killed neurons are skipped (state unchanged, never spike) but their update counts as a synop.
- After the core has finished the event, its spikes are propagated in emission order, each one's
  whole downstream subtree before the next (depth-first, section 3), destinations in list order
  (an input event likewise visits the DVS layer's destinations in list order). A spike passes the
  core's decimator first (1 of N, the N-th passes, counter reset per window: UNVERIFIED, the fact
  sheet gives no phase), then counts, then goes to each destination at (o + feature_shift,
  y // pooling, x // pooling), dropped beyond the pooled map. The readout (core 12) only counts
  class-channel spikes of the readout source core, in the bin of the causing input event.
- Neuron states (and decimator counters) are reset to ``neurons_initial_value`` at the start of every
  window. The chip's ``reset_states`` behaviour differs between sinabs paths (section 0); UNVERIFIED.
- No leak: the event-driven model has no slow clock, so ``leak_enable`` is refused. Timestamps only
  order events and assign output bins (section 5: the cores do not use them).
- Not modelled: congestion balancer drops, SynOps overload (section 3, (d) and (e)).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from asa_deploy.chip.config import READOUT_CORE, ChipConfig
from asa_deploy.chip.sim.dvs import check_windows, prepare_window
from asa_deploy.chip.sim.result import MonitorCounts, SimResult, assemble
from asa_deploy.chip.sim.window import EventWindow
from asa_deploy.errors import ChipConfigError
from asa_deploy.progress import progress as progress_bar

DECIMATION = (2, 4, 8, 16, 32, 128, 256, 512)  # output_decimator 0..7 -> pass 1 of N

# Columns of the per-core geometry table handed to the jitted kernel.
CIN, HIN, WIN, COUT, HOUT, WOUT, K, SY, SX, PY, PX, THR_HI, THR_LO, RTZ, DECIM, W_OFF, S_OFF = range(17)
# Columns of a destination row.
D_CORE, D_POOL, D_SHIFT = range(3)


@dataclass
class _Packed:
    """All cores flattened into int arrays so one jitted call can run a whole window.

    Channels are innermost (weights [c_in, ky, kx, c_out], states [y, x, c_out]) so the update of all
    output channels at one kernel offset is one contiguous, vectorisable loop."""

    geom: np.ndarray        # int64 [n_cores, 17]
    weights: np.ndarray     # int32
    init: np.ndarray        # int32
    killed: np.ndarray      # uint8, same layout as init
    dest: np.ndarray        # int64 [n_cores, 2, 3]: core index (-1: readout), pooling, feature shift
    n_dest: np.ndarray      # int64 [n_cores]
    entry: np.ndarray       # int64 core indices receiving input events
    readout: int            # core index of the readout source
    class_of: np.ndarray    # int64 [c_out of readout source]: class index of a channel, -1 if none
    stack_size: int
    max_updates: int        # most neurons one event can touch in any core


def _pack(config: ChipConfig) -> _Packed:
    index = {c.core: i for i, c in enumerate(config.cores)}
    geom = np.zeros((len(config.cores), 17), dtype=np.int64)
    dest = np.zeros((len(config.cores), 2, 3), dtype=np.int64)
    n_dest = np.zeros(len(config.cores), dtype=np.int64)
    weights, init, killed = [], [], []
    w_off = s_off = 0
    stack = len(config.entry_cores())
    max_updates = 1
    for i, core in enumerate(config.cores):
        c_out, h_out, w_out = core.neuron_shape
        k = core.kernel_size
        geom[i] = (*core.input_shape, c_out, h_out, w_out, k, *core.stride, *core.padding,
                   core.threshold_high, core.threshold_low, int(core.return_to_zero),
                   0 if core.output_decimator is None else DECIMATION[core.output_decimator],
                   w_off, s_off)
        weights.append(core.weights.astype(np.int32).transpose(1, 2, 3, 0).ravel())
        init.append(core.neurons_initial_value.astype(np.int32).transpose(1, 2, 0).ravel())
        kill = core.neurons_kill if core.neurons_kill is not None else np.zeros(core.neuron_shape, bool)
        killed.append(np.asarray(kill, dtype=np.uint8).transpose(1, 2, 0).ravel())
        w_off += weights[-1].size
        s_off += init[-1].size
        for j, d in enumerate(core.destinations):
            dest[i, j] = (-1 if d.core == READOUT_CORE else index[d.core], d.pooling, d.feature_shift)
        n_dest[i] = len(core.destinations)
        updates = c_out * -(-k // core.stride[0]) * -(-k // core.stride[1])
        max_updates = max(max_updates, updates)
        # Depth-first: at most one pending batch of siblings per core on the current path (a DAG).
        stack += updates * max(1, len(core.destinations))
    readout = config.readout
    class_of = np.full(config.core(readout.source_core).neuron_shape[0], -1, dtype=np.int64)
    class_of[readout.class_channels()] = np.arange(readout.num_classes)
    return _Packed(geom, np.concatenate(weights), np.concatenate(init), np.concatenate(killed),
                   dest, n_dest, np.array([index[c] for c in config.entry_cores()], dtype=np.int64),
                   index[readout.source_core], class_of, int(stack), int(max_updates))


@numba.njit(cache=True)
def _run_window(ev_c, ev_y, ev_x, ev_bin, ev_ord, geom, weights, init, killed, dest, n_dest,
                entry, readout, class_of, stack, fired, out_spikes, spikes, synops, synops_in, mon_off,
                mon):
    """Process one window's events depth-first; return the latency in input events (-1: silent).

    ``synops_in[k]`` counts the part of ``synops[k]`` caused by input events themselves (stack
    column 4 is 1 for an input event, 0 for a core's spike).

    A core k with ``mon_off[k] >= 0`` also counts each spike per neuron and bin in
    ``mon[mon_off[k]:]``, laid out [bin, y, x, channel], where ``spikes[k]`` counts it.

    Each neuron is updated at most once per incoming event, so the updates commute: pass 1 updates
    all of them in memory order (vectorised) and flags the ones that fire; pass 2 emits the flagged
    spikes in the modelled visit order (channel, then ky, kx)."""
    state = init.copy()
    fired_words = fired.view(np.uint64)  # stale bytes past an event's flags only cost a scan
    fired_o = np.empty(fired.shape[0], dtype=np.int64)
    fired_pos = np.empty(fired.shape[0], dtype=np.int64)
    decim = np.zeros(geom.shape[0], dtype=np.int64)
    max_k = 1
    for i in range(geom.shape[0]):
        max_k = max(max_k, geom[i, K])
    voy = np.empty(max_k, dtype=np.int64)
    vox = np.empty(max_k, dtype=np.int64)
    vky = np.empty(max_k, dtype=np.int64)
    vkx = np.empty(max_k, dtype=np.int64)
    latency = -1
    for e in range(ev_c.shape[0]):
        b = ev_bin[e]
        top = 0
        for j in range(entry.shape[0] - 1, -1, -1):  # entry[0] pops first
            stack[top, 0] = entry[j]
            stack[top, 1] = ev_c[e]
            stack[top, 2] = ev_y[e]
            stack[top, 3] = ev_x[e]
            stack[top, 4] = 1
            top += 1
        while top > 0:
            top -= 1
            k = stack[top, 0]
            c = stack[top, 1]
            y = stack[top, 2]
            x = stack[top, 3]
            from_input = stack[top, 4]
            base = top
            ks = geom[k, K]
            c_out = geom[k, COUT]
            h_out = geom[k, HOUT]
            w_out = geom[k, WOUT]
            # Kernel offsets whose output position is integral and inside the map, ascending.
            ny = 0
            py = y + geom[k, PY]
            for ky in range(py % geom[k, SY], ks, geom[k, SY]):
                oy = (py - ky) // geom[k, SY]
                if 0 <= oy < h_out:
                    voy[ny] = oy
                    vky[ny] = ky
                    ny += 1
            nx = 0
            px = x + geom[k, PX]
            for kx in range(px % geom[k, SX], ks, geom[k, SX]):
                ox = (px - kx) // geom[k, SX]
                if 0 <= ox < w_out:
                    vox[nx] = ox
                    vkx[nx] = kx
                    nx += 1
            synops[k] += c_out * ny * nx
            if from_input != 0:
                synops_in[k] += c_out * ny * nx
            # int32 throughout and selects as arithmetic: this keeps the channel loop vectorised.
            thr_hi = np.int32(geom[k, THR_HI])
            thr_lo = np.int32(geom[k, THR_LO])
            rtz = np.int32(geom[k, RTZ])
            w_base = geom[k, W_OFF] + c * ks * ks * c_out
            s_base = geom[k, S_OFF]
            for iy in range(ny):
                for ix in range(nx):
                    s0 = s_base + (voy[iy] * w_out + vox[ix]) * c_out
                    w0 = w_base + (vky[iy] * ks + vkx[ix]) * c_out
                    f0 = (iy * nx + ix) * c_out
                    st = state[s0:s0 + c_out]
                    wt = weights[w0:w0 + c_out]
                    kl = killed[s0:s0 + c_out]
                    fr = fired[f0:f0 + c_out]
                    for o in range(c_out):
                        old = st[o]
                        dead = np.int32(kl[o])
                        # int16 saturation, then the lower clamp (thr_lo is itself an int16)
                        v = min(max(np.int32(old + wt[o]), thr_lo), np.int32(32767))
                        fire = np.int32(v >= thr_hi) & (np.int32(1) - dead)
                        v = np.int32(v - fire * (rtz * v + (np.int32(1) - rtz) * thr_hi))
                        st[o] = np.int32(v + (old - v) * dead)
                        fr[o] = np.uint8(fire)
            # Collect the fired neurons in visit order (channel, then ky, kx), skipping silent
            # words of flags; usually few fire, so an insertion sort is cheapest. Positions are
            # tracked incrementally: a division per flag would cost more than the update itself.
            n_pos = ny * nx
            n_flags = n_pos * c_out
            n_fired = 0
            for i in range((n_flags + 7) // 8):
                if fired_words[i] == 0:
                    continue
                pos = (i * 8) // c_out
                o = i * 8 - pos * c_out
                for j in range(i * 8, min(i * 8 + 8, n_flags)):
                    if fired[j] != 0:
                        m = n_fired
                        while m > 0 and (fired_o[m - 1] > o or (fired_o[m - 1] == o and fired_pos[m - 1] > pos)):
                            fired_o[m] = fired_o[m - 1]
                            fired_pos[m] = fired_pos[m - 1]
                            m -= 1
                        fired_o[m] = o
                        fired_pos[m] = pos
                        n_fired += 1
                    o += 1
                    if o == c_out:
                        o = 0
                        pos += 1
            n_decim = geom[k, DECIM]
            for i in range(n_fired):
                o = fired_o[i]
                oy = voy[fired_pos[i] // nx]
                ox = vox[fired_pos[i] % nx]
                if n_decim > 0:
                    decim[k] += 1
                    if decim[k] < n_decim:
                        continue
                    decim[k] = 0
                spikes[k] += 1
                if mon_off[k] >= 0:
                    mon[mon_off[k] + ((b * h_out + oy) * w_out + ox) * c_out + o] += 1
                if k == readout and class_of[o] >= 0:
                    out_spikes[b, class_of[o]] += 1
                    if latency < 0:
                        latency = ev_ord[e]
                for d in range(n_dest[k]):
                    target = dest[k, d, D_CORE]
                    if target < 0:
                        continue
                    pool = dest[k, d, D_POOL]
                    ty = oy // pool
                    tx = ox // pool
                    if ty >= geom[target, HIN] or tx >= geom[target, WIN]:
                        continue
                    stack[top, 0] = target
                    stack[top, 1] = o + dest[k, d, D_SHIFT]
                    stack[top, 2] = ty
                    stack[top, 3] = tx
                    stack[top, 4] = 0
                    top += 1
            # Reverse this event's children so the first emitted is popped (propagated) first.
            lo = base
            hi = top - 1
            while lo < hi:
                for col in range(5):
                    tmp = stack[lo, col]
                    stack[lo, col] = stack[hi, col]
                    stack[hi, col] = tmp
                lo += 1
                hi -= 1
    return latency


def simulate_exact(config: ChipConfig, windows: Sequence[EventWindow], *,
                   progress: bool = False, monitor: Sequence[int] = ()) -> SimResult:
    """``monitor``: cores whose per-neuron spike counts to keep (``SimResult.monitor``)."""
    config.validate()
    for core in config.cores:
        if core.leak_enable:
            raise ChipConfigError(
                f"core {core.core} ({core.name}) has leak_enable: leak needs a slow clock; simulate "
                f"with engine fast or compile with bias policy drop")
    n_bins = check_windows(config, windows)
    start = time.perf_counter()
    packed = _pack(config)
    stack = np.zeros((packed.stack_size, 5), dtype=np.int64)
    fired = np.zeros(-(-packed.max_updates // 8) * 8, dtype=np.uint8)
    n_cores = len(config.cores)
    n = len(windows)
    output_spikes = np.zeros((n, n_bins, config.readout.num_classes), dtype=np.int64)
    spikes = np.zeros((n, n_cores), dtype=np.int64)
    synops = np.zeros((n, n_cores), dtype=np.int64)
    synops_in = np.zeros((n, n_cores), dtype=np.int64)
    latency = np.zeros(n, dtype=np.int64)
    monitored = MonitorCounts(config, monitor, n, n_bins)
    index = {c: i for i, c in enumerate(config.core_ids())}
    mon_off = np.full(n_cores, -1, dtype=np.int64)
    size = 0
    for c, counts in monitored.arrays.items():
        mon_off[index[c]] = size
        size += counts[0].size
    mon = np.zeros(max(size, 1), dtype=np.int64)
    n_input = np.zeros(n, dtype=np.int64)
    n_dropped = np.zeros(n, dtype=np.int64)
    bar = progress_bar(windows, enabled=progress, desc="simulate exact", unit="window")
    for i, window in enumerate(bar):
        ci = prepare_window(config, window)
        n_input[i], n_dropped[i] = ci.n_input, ci.n_dropped
        latency[i] = _run_window(
            ci.c, ci.y, ci.x, ci.bin, ci.ordinal, packed.geom, packed.weights, packed.init,
            packed.killed, packed.dest, packed.n_dest, packed.entry, packed.readout, packed.class_of,
            stack, fired, output_spikes[i], spikes[i], synops[i], synops_in[i], mon_off, mon)
        for c, counts in monitored.arrays.items():
            b, ch, h, w = counts.shape[1:]
            block = mon[mon_off[index[c]]:mon_off[index[c]] + counts[0].size]
            monitored.put(c, i, block.reshape(1, b, h, w, ch).transpose(0, 1, 4, 2, 3))
        if size:
            mon[:] = 0
    return assemble("exact", config, windows, output_spikes, spikes, synops, synops_in, n_input,
                    n_dropped, latency, time.perf_counter() - start, monitored)
