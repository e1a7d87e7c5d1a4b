"""Redundancy metrics of a spiking network, as defined in docs/asa-method.md section 2.

Pure functions on tensors (numpy arrays are accepted too). Shapes:

- spikes, u: ``[S, T, ...]`` (samples, time steps, then ``C, H, W`` for conv layers or ``N`` for fully
  connected ones; an FC neuron counts as a channel of one neuron);
- N-SFR maps: ``[T, ...]``, what ``n_sfr`` returns.

Everything that sums over samples (spike totals, spiking counts, MPD histograms with a fixed binning,
MPD moments, QE) is additive over batches, which is what lets ``collect`` stream a whole test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

#: Default MPD binning, in units of the layer's threshold: bins of 0.05 Vth on [-3 Vth, 3 Vth).
MPD_LOW, MPD_HIGH, MPD_STEPS_PER_THRESHOLD = -3, 3, 20


def _t(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(x)


def layer_sfr(spikes: ArrayLike) -> float:
    """SFR_l = total spikes / (T x neurons x samples): the authors' per-layer firing rate.

    Multi-spikes count fully (a neuron emitting 2 spikes in a step adds 2).
    """
    s = _t(spikes)
    return float(s.sum(dtype=torch.float64) / s.numel())


def n_sfr(spikes: ArrayLike) -> torch.Tensor:
    """N-SFR[t, n] = (samples in which neuron n spikes at step t) / samples, -> ``[T, ...]``.

    A step with several spikes counts once: N-SFR is a fraction of samples.
    """
    s = _t(spikes)
    return (s > 0).sum(0, dtype=torch.float64) / s.shape[0]


def spike_features(spikes: ArrayLike) -> torch.Tensor:
    """Spike feature of channel c at step t = its N-SFR map (an H x W image), -> ``[T, C, H, W]``."""
    s = _t(spikes)
    if s.ndim != 5:
        raise ValueError(
            f"spike features need conv spikes [S, T, C, H, W]; got shape {tuple(s.shape)}"
        )
    return n_sfr(s)


def c_sfr(nsfr: ArrayLike) -> torch.Tensor:
    """C-SFR[t, c] = mean N-SFR over the neurons of channel c at step t, -> ``[T, C]``.

    ``nsfr`` is ``[T, C, H, W]`` or ``[T, N]`` (then each neuron is its own channel).
    """
    m = _t(nsfr).double()
    return m.reshape(m.shape[0], m.shape[1], -1).mean(-1)


def t_sfr(nsfr: ArrayLike) -> torch.Tensor:
    """Layer T-SFR[t] = mean N-SFR over all the layer's neurons at step t, -> ``[T]``."""
    m = _t(nsfr).double()
    return m.reshape(m.shape[0], -1).mean(-1)


def network_t_sfr(nsfr_per_layer: Mapping[str, ArrayLike]) -> torch.Tensor:
    """Network T-SFR[t] = sum_l N_l T-SFR_l[t] / sum_l N_l: mean N-SFR over every neuron, -> ``[T]``.

    Its mean over T equals NASFR when every layer emits at most one spike per step.
    """
    maps = [_t(m) for m in nsfr_per_layer.values()]
    counts = [m[0].numel() for m in maps]
    weighted = sum(t_sfr(m) * n for m, n in zip(maps, counts, strict=True))
    return weighted / sum(counts)


@dataclass(frozen=True)
class GhostReport:
    """Near-duplicate ("ghost") spike features of one conv layer.

    ``similarity[i, j]``: cosine similarity of channels i and j, averaged over the steps where at
    least one of them fires (NaN when neither ever fires). Dead channels (never fire) get
    ``most_similar = -1`` and take part in no mean, maximum or duplicate count.
    """

    similarity: torch.Tensor
    mean_similarity: float
    most_similar: torch.Tensor
    most_similar_value: torch.Tensor
    dead: torch.Tensor
    near_duplicate: torch.Tensor
    near: float

    @property
    def near_duplicate_fraction(self) -> float:
        """Share of live channels that have a near-duplicate (NaN when all are dead)."""
        live = int((~self.dead).sum())
        return float(self.near_duplicate.sum()) / live if live else float("nan")

    @property
    def dead_fraction(self) -> float:
        """Share of all channels that never fire."""
        return float(self.dead.double().mean())


def ghost_features(features: ArrayLike, *, near: float = 0.9) -> GhostReport:
    """Pairwise cosine similarity of the channels' spike features ``[T, C, H, W]``.

    Per step t: sim_t(i, j) = <F_t,i, F_t,j> / (|F_t,i| |F_t,j|) on the flattened H x W maps; it is 0
    when exactly one of the two fires at t and undefined (skipped) when neither does. The result is
    the mean over the defined steps. A live channel has a near-duplicate when its most similar other
    live channel reaches ``near``. The mean pairwise similarity is over unordered pairs of live
    channels with a defined similarity.
    """
    f = _t(features).double()
    if f.ndim != 4:
        raise ValueError(f"ghost_features needs spike features [T, C, H, W]; got {tuple(f.shape)}")
    steps, channels = f.shape[:2]
    flat = f.reshape(steps, channels, -1)
    norms = flat.norm(dim=-1)
    active = norms > 0
    unit = flat / norms.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(-1)
    cos = unit @ unit.transpose(1, 2)
    defined = (active.unsqueeze(2) | active.unsqueeze(1)).double()
    n_defined = defined.sum(0)
    sim = torch.where(n_defined > 0, (cos * defined).sum(0) / n_defined.clamp_min(1), torch.nan)

    dead = ~active.any(0)
    others = sim.clone()
    others.fill_diagonal_(torch.nan)
    others[dead, :] = torch.nan
    others[:, dead] = torch.nan
    best = torch.nan_to_num(others, nan=-1.0).max(dim=1)
    has_other = ~torch.isnan(others).all(1)
    most_similar = torch.where(has_other, best.indices, -1)
    most_similar_value = torch.where(has_other, best.values, torch.nan)
    pairs = others[torch.triu(torch.ones_like(others, dtype=torch.bool), diagonal=1)]
    pairs = pairs[~torch.isnan(pairs)]
    return GhostReport(
        similarity=sim,
        mean_similarity=float(pairs.mean()) if pairs.numel() else float("nan"),
        most_similar=most_similar,
        most_similar_value=most_similar_value,
        dead=dead,
        near_duplicate=has_other & (most_similar_value >= near),
        near=near,
    )


def mpd_edges(
    threshold: float,
    *,
    low: int = MPD_LOW,
    high: int = MPD_HIGH,
    steps_per_threshold: int = MPD_STEPS_PER_THRESHOLD,
) -> torch.Tensor:
    """Fixed MPD bin edges: Vth * k / steps_per_threshold for k in [low, high] * steps_per_threshold.

    Default: 120 bins of 0.05 Vth on [-3 Vth, 3 Vth). Fixed edges make histograms additive over
    batches and comparable across models; Vth itself is an edge, so the bins at and above it hold
    exactly the neurons that spike (u >= Vth).
    """
    k = torch.arange(low * steps_per_threshold, high * steps_per_threshold + 1, dtype=torch.float64)
    return (threshold * (k / steps_per_threshold)).float()


@dataclass(frozen=True)
class MPDHistogram:
    """Per step and channel histogram of u: ``counts [T, C, bins]`` on half-open bins
    ``[edges[i], edges[i+1])``; values outside the edges are counted in ``underflow`` /
    ``overflow`` ``[T, C]`` rather than dropped silently."""

    counts: torch.Tensor
    edges: torch.Tensor
    underflow: torch.Tensor
    overflow: torch.Tensor

    def __add__(self, other: MPDHistogram) -> MPDHistogram:
        if not torch.equal(self.edges, other.edges):
            raise ValueError("cannot add MPD histograms with different bin edges")
        return MPDHistogram(
            self.counts + other.counts,
            self.edges,
            self.underflow + other.underflow,
            self.overflow + other.overflow,
        )


def mpd_histogram(u: ArrayLike, edges: ArrayLike) -> MPDHistogram:
    """MPD of channel c at step t: histogram of u over all its neurons and all samples.

    ``u``: ``[S, T, C, ...]``; ``edges``: increasing, e.g. from ``mpd_edges``. Loops over steps to
    bound memory.
    """
    u = _t(u)
    edges = _t(edges).to(device=u.device, dtype=u.dtype)
    steps, channels, n_bins = u.shape[1], u.shape[2], len(edges) - 1
    width = n_bins + 2  # slot 0: underflow, slots 1..n_bins: bins, last slot: overflow
    offsets = (torch.arange(channels, device=u.device) * width).view(1, channels, 1)
    out = torch.empty(steps, channels, width, dtype=torch.int64)
    for t in range(steps):
        ut = u[:, t].reshape(u.shape[0], channels, -1).contiguous()
        slot = torch.bucketize(ut, edges, right=True)  # 0 below edges[0], n_bins + 1 from edges[-1]
        out[t] = torch.bincount((slot + offsets).flatten(), minlength=channels * width).view(
            channels, width
        )
    return MPDHistogram(out[..., 1:-1], edges.float().cpu(), out[..., 0], out[..., -1])


def ptd(counts: ArrayLike, edges: ArrayLike, threshold: float) -> torch.Tensor:
    """Peak-to-threshold distance per histogram, ``counts [..., bins]`` -> ``[...]``.

    Take the three highest bins (ties: the lowest bins first), average their lower and upper edges
    to get the peak interval, PTD = centre of that interval - threshold. PTD >= 0 means most
    neurons sit at or above threshold (a noise channel). NaN for an empty histogram.
    """
    c = _t(counts)
    e = _t(edges).double()
    top = torch.sort(-c.long(), dim=-1, stable=True).indices[..., :3]
    lower = e[:-1][top].mean(-1)
    upper = e[1:][top].mean(-1)
    result = (lower + upper) / 2 - threshold
    return torch.where(c.sum(-1) > 0, result, torch.nan)


def mpd_moments(u: ArrayLike) -> torch.Tensor:
    """Count, sum and sum of squares of u per step and channel, ``[3, T, C]`` float64 (additive)."""
    x = _t(u).double()
    x = x.reshape(x.shape[0], x.shape[1], x.shape[2], -1)
    n = torch.full(x.shape[1:3], x.shape[0] * x.shape[3], dtype=torch.float64, device=x.device)
    return torch.stack([n, x.sum((0, 3)), (x * x).sum((0, 3))])


def variance_from_moments(moments: ArrayLike) -> torch.Tensor:
    """Var = E[u^2] - E[u]^2 from ``mpd_moments`` (population variance), ``[T, C]``."""
    n, s, sq = _t(moments).double()
    mean = s / n
    return (sq / n - mean * mean).clamp_min(0)


def mpd_variance(u: ArrayLike) -> torch.Tensor:
    """Variance of the MPD of each channel at each step (over its neurons and samples), ``[T, C]``.

    Exact (from moments), so values outside the histogram range count too.
    """
    return variance_from_moments(mpd_moments(u))


def qe(u: ArrayLike, spikes: ArrayLike) -> float:
    """QE = mean over samples, neurons and steps of (u - s)^2, s in {0, 1} the spike emitted.

    This is the paper's quantization error: the membrane potential u (before spike and reset)
    quantized to a spike. Multi-spikes are taken as s = 1.
    """
    u = _t(u).double()
    s = (_t(spikes) > 0).double()
    return float(((u - s) ** 2).mean())
