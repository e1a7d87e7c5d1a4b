"""Attention modules placed between a block's conv -> BN -> pool and its neuron.

All take and return [N, T, C, H, W] (the neuron's input current).

- ``SpatialAttention`` (``sa``): CBAM's spatial attention, one map per sample and time step.
- ``AdvancedSpatialAttention`` (``asa1`` / ``asa2``): ASA of Yao et al. 2023 as asa-method.md section 4
  describes it. What differs from the authors' release, on purpose:
  * ``asa1`` makes the importance scores learnable for real: the XOR masks are hard in the forward pass
    and differentiable in the backward pass (straight-through estimator over a soft top-k), so the
    pooling weights a, b and the temporal MLP receive gradient. In the release they received none.
  * ``asa2`` takes importance straight from pooling (avg + max) with no MLP and no dead parameters.
  * batch size 1 and T = 1 work (the release squeezed unguarded).
  ``release_masks=True`` reproduces the release instead, to measure its effect: every sample gets
  the union over the batch of all samples' top-k marks (over channels and over time), and the
  marks are hard top-k, so the importance MLP and a, b get no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def _pool_channels_time(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial average and max pool: [N, T, C, H, W] -> two [N, T, C]."""
    return x.mean(dim=(3, 4)), x.flatten(3).max(dim=3).values


def top_k_mask(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """1.0 where an entry is among the k largest along ``dim`` (ties broken by index), else 0."""
    mask = torch.zeros_like(scores)
    if k <= 0:
        return mask
    index = scores.topk(k, dim=dim).indices
    return mask.scatter(dim, index, 1.0)


def soft_top_k_mask(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Hard top-k forward, sigmoid-relaxed backward (straight-through estimator).

    The relaxation centres a sigmoid between the k-th and (k+1)-th largest scores and scales it by the
    scores' spread along ``dim``, so its gradient is of order one whatever the input's magnitude.
    """
    hard = top_k_mask(scores, k, dim)
    n = scores.shape[dim]
    if k <= 0 or k >= n:
        return hard
    ranked = scores.detach().topk(k + 1, dim=dim).values
    boundary = 0.5 * (ranked.narrow(dim, k - 1, 1) + ranked.narrow(dim, k, 1))
    spread = scores.detach().std(dim=dim, keepdim=True) + 1e-6
    soft = torch.sigmoid((scores - boundary) / spread)
    return hard + (soft - soft.detach())


class SpatialAttention(nn.Module):
    """CBAM spatial attention: sigmoid(conv([mean_C x, max_C x])) multiplies every channel."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        flat = x.flatten(0, 1)
        pooled = torch.stack([flat.mean(1), flat.amax(1)], dim=1)
        attention_map = torch.sigmoid(self.conv(pooled))
        return (flat * attention_map).unflatten(0, (n, t))


class AdvancedSpatialAttention(nn.Module):
    """ASA: split (t, c) into two groups by an XOR of top-k marks, give each group a spatial map.

    Args:
        T: number of time steps (the importance MLP runs along T).
        variant: ``"asa1"`` (learnable importance, straight-through top-k) or ``"asa2"``
            (importance straight from pooling).
        lam: lambda, the share of channels (and of steps) marked important.
        r: reduction ratio of the temporal MLP (asa1 only).
        kernel_size: of the two spatial convolutions (3 in the paper).
        release_masks: the authors' release behaviour (batch-union marks, no gradient to the
            importance scores) instead of per-sample marks.
    """

    def __init__(self, T: int, variant: str = "asa2", lam: float = 0.5, r: int = 4,
                 kernel_size: int = 3, release_masks: bool = False):
        super().__init__()
        if variant not in ("asa1", "asa2"):
            raise ValueError(f"ASA variant must be 'asa1' or 'asa2', not {variant!r}")
        if not 0.0 < lam < 1.0:
            raise ValueError(f"ASA lambda must lie in (0, 1), got {lam}")
        self.T, self.variant, self.lam, self.r = T, variant, lam, r
        self.release_masks = release_masks
        if variant == "asa1":
            self.a = nn.Parameter(torch.tensor(0.5))
            self.b = nn.Parameter(torch.tensor(0.5))
            hidden = max(1, T // r)
            self.mlp = (nn.Linear(T, T, bias=False) if r == 1 else nn.Sequential(
                nn.Linear(T, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, T, bias=False)))
        self.spatial = nn.ModuleList(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False) for _ in range(2))

    def importance(self, x: torch.Tensor) -> torch.Tensor:
        """Importance score per sample, step and channel: [N, T, C]."""
        hard = self.variant == "asa2" or self.release_masks  # hard top-k passes no gradient:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not hard):  # skip the graph
            avg, mx = _pool_channels_time(x)
            if self.variant == "asa2":
                return avg + mx
            score = (0.5 + self.a) * avg + (0.5 + self.b) * mx
            return self.mlp(score.transpose(1, 2)).transpose(1, 2)

    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """M1 (XOR of "important over channels" and "important over time") and M2 = 1 - M1,
        each [N, T, C, 1, 1]."""
        n, t, c = x.shape[:3]
        if t != self.T:
            raise ValueError(f"ASA was built for T={self.T} steps but got an input with T={t}")
        scores = self.importance(x)
        select = soft_top_k_mask if self.variant == "asa1" and not self.release_masks else top_k_mask
        over_channels = select(scores, math.floor(c * self.lam), dim=2)
        over_time = select(scores, math.floor(t * self.lam), dim=1)
        if self.release_masks:  # the release marks every sample with the whole batch's top-k
            over_channels = over_channels.amax(dim=0, keepdim=True).expand_as(over_channels)
            over_time = over_time.amax(dim=0, keepdim=True).expand_as(over_time)
        m1 = over_channels + over_time - 2 * over_channels * over_time
        return m1[..., None, None], (1 - m1)[..., None, None]

    def spatial_maps(self, x: torch.Tensor, m1: torch.Tensor) -> torch.Tensor:
        """The two sigmoid maps of the groups M1 * x and M2 * x (M2 = 1 - M1), one per sample and
        group, shared over T and C: [N, 2, H, W].

        Each group is pooled over its flattened (T, C) axis: mean / share and max. Written to avoid
        full-size temporaries in the backward pass (the attention's main cost): the means are
        matrix products with the mask, the maxima gather at indices found without autograd.
        """
        n, t, c, h, w = x.shape
        flat = x.reshape(n, t * c, h * w)
        mask = m1.reshape(n, 1, t * c)
        total = flat.sum(dim=1)
        sum1 = torch.bmm(mask, flat).squeeze(1)
        means = (sum1 / (t * c * self.lam), (total - sum1) / (t * c * (1 - self.lam)))
        with torch.no_grad():
            group1 = flat * mask.transpose(1, 2)
            index1 = group1.max(dim=1, keepdim=True).indices
            index2 = (flat - group1).max(dim=1, keepdim=True).indices
        mask_full = mask.transpose(1, 2).expand(n, t * c, h * w)
        max1 = (flat.gather(1, index1) * mask_full.gather(1, index1)).squeeze(1)
        max2 = (flat.gather(1, index2) * (1 - mask_full.gather(1, index2))).squeeze(1)
        maps = []
        for conv, mean, mx in ((self.spatial[0], means[0], max1), (self.spatial[1], means[1], max2)):
            pooled = torch.stack([mean, mx], dim=1).view(n, 2, h, w)
            maps.append(torch.sigmoid(conv(pooled)))
        return torch.cat(maps, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m1, _ = self.masks(x)
        maps = self.spatial_maps(x, m1)
        map1, map2 = maps[:, None, 0:1], maps[:, None, 1:2]
        # map1 * (M1 x) + map2 * (M2 x) with M2 = 1 - M1, as one gain tensor times x
        return x * torch.addcmul(map2, m1, map1 - map2)


def make_attention(kind: str, *, T: int, lam: float = 0.5, r: int = 4,
                   kernel_size: int | None = None, release_masks: bool = False) -> nn.Module | None:
    """``none`` -> None; ``sa``, ``asa1``, ``asa2`` -> the module."""
    if kind == "none":
        return None
    if kind == "sa":
        return SpatialAttention(kernel_size or 7)
    if kind in ("asa1", "asa2"):
        return AdvancedSpatialAttention(T, kind, lam, r, kernel_size or 3, release_masks)
    raise ValueError(f"unknown attention {kind!r}; choose one of none, sa, asa1, asa2")
