"""Attention modules placed between a block's conv -> BN -> pool and its neuron.

All take and return [N, T, C, H, W] (the neuron's input current).

- ``SpatialAttention`` (``sa``): CBAM's spatial attention, one map per sample and time step.
- ``AdvancedSpatialAttention`` (``asa1`` / ``asa2``): ASA of Yao et al. 2023 as docs/asa-method.md section 4
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
from torch.autograd.function import once_differentiable


def _first_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.max`` over dims 1 and 2 of ``x`` [B, P, Q, L] taken as one axis (P major): values and
    index in [0, P * Q), the first maximum as ``torch.max`` picks it; [B, L] each, no gradient.

    ``torch.max`` with indices runs about ten times slower per element on CPU than ``amax``: from
    L = 64 on, reducing Q without indices first and searching indices in tensors Q and P times
    smaller takes a third to a half less time (below, the extra calls cost more than they save).
    """
    b, p, q, length = x.shape
    if length < 64:
        return x.view(b, p * q, length).max(dim=1)
    values, outer = x.amax(dim=2).max(dim=1)
    row = x.gather(1, outer.view(b, 1, 1, length).expand(b, 1, q, length)).squeeze(1)
    return values, outer * q + row.max(dim=1).indices


def _pool_channels_time(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial average and max pool: [N, T, C, H, W] -> two [N, T, C]. Without a gradient to
    route, the max is ``amax``, about ten times faster than ``torch.max`` with indices."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _PoolSpace.apply(x)
    return x.mean(dim=(3, 4)), x.flatten(3).amax(dim=3)


class _PoolSpace(torch.autograd.Function):
    """Spatial mean and max with the max's gradient at the first maximum, as ``torch.max`` sends
    it; the backward writes one full-size tensor where autograd's writes three and adds them."""

    @staticmethod
    def forward(ctx, x):
        flat = x.flatten(3)
        mx, index = flat.max(dim=3)
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        return flat.mean(dim=3), mx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_avg, grad_max):
        (index,) = ctx.saved_tensors
        n, t, c, h, w = ctx.shape
        grad = (grad_avg / (h * w))[..., None].expand(n, t, c, h * w).contiguous()
        return grad.scatter_add_(3, index[..., None], grad_max[..., None]).view(ctx.shape)


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
        m1 = self._group1(x)[..., None, None]
        return m1, 1 - m1

    def _group1(self, x: torch.Tensor) -> torch.Tensor:
        """M1, [N, T, C]."""
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
        if over_channels.requires_grad or over_time.requires_grad:  # asa1: differentiable XOR
            return over_channels + over_time - 2 * over_channels * over_time
        return (over_channels != over_time).to(scores.dtype)

    def spatial_maps(self, x: torch.Tensor, m1: torch.Tensor) -> torch.Tensor:
        """The two sigmoid maps of the groups M1 * x and M2 * x (M2 = 1 - M1), one per sample and
        group, shared over T and C: [N, 2, H, W]. Each group is pooled over its flattened (T, C)
        axis: mean / share and max."""
        n, t, c, h, w = x.shape
        _, maps, _, _ = _spatial_maps(x.reshape(n, t * c, h * w), m1.reshape(n, t * c),
                                      self._weight(), t, self.lam, (h, w), with_index=False)
        return maps.view(n, 2, h, w)

    def _weight(self) -> torch.Tensor:
        """The two groups' convolutions as the weight [2, 2, k, k] of one grouped convolution."""
        return torch.cat([self.spatial[0].weight, self.spatial[1].weight])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # map1 * (M1 x) + map2 * (M2 x) with M2 = 1 - M1, its backward written by hand
        return _AsaGain.apply(x, self._group1(x), self._weight(), self.lam,
                              torch.is_grad_enabled())


def _spatial_maps(flat: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, t: int, lam: float,
                  size: tuple[int, int], with_index: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """flat [N, TC, HW] and M1 [N, TC] -> the pooled groups [N, 4, H, W] (mean 1 / share, max 1,
    mean 2 / share, max 2, over TC of M1 * flat and M2 * flat), the sigmoid maps [N, 2, HW],
    (``with_index``) the maxima's indices into TC, [N, 2, HW] (the first maximum, as ``torch.max``
    picks it), and the full-size work tensor, free for the caller to reuse."""
    n, tc, hw = flat.shape
    groups = torch.stack([mask, 1 - mask], dim=1)  # [N, 2, TC]
    means = torch.bmm(groups, flat).div_(flat.new_tensor([[tc * lam], [tc * (1 - lam)]]))
    # M1 flat, then M2 flat, in one allocation (less page faulting) unless autograd records this
    # (spatial_maps): out= has no gradient
    reuse = not torch.is_grad_enabled()
    member = torch.empty_like(flat) if reuse else None
    maxima, index = [], []
    for k in range(2):
        if reuse:
            torch.mul(flat, groups[:, k, :, None], out=member)
        else:
            member = flat * groups[:, k, :, None]
        if with_index:
            values, where = _first_max(member.view(n, t, tc // t, hw))
            index.append(where)
        else:
            values = member.amax(dim=1)
        maxima.append(values)
    pooled = torch.stack([means[:, 0], maxima[0], means[:, 1], maxima[1]], dim=1).view(n, 4, *size)
    maps = torch.sigmoid(nn.functional.conv2d(pooled, weight, padding=weight.shape[-1] // 2,
                                              groups=2))
    return pooled, maps.view(n, 2, hw), torch.stack(index, dim=1) if with_index else None, member


class _AsaGain(torch.autograd.Function):
    """ASA after the masks: x [N, T, C, H, W], M1 [N, T, C] and the grouped convolution's
    weight -> x * (map1 where M1 else map2).

    The training cost of ASA is passes over the full-size tensor and fresh full-size allocations
    (page faults). Autograd's backward of the same formula made about fourteen passes and ten
    allocations (zeros and scatters for the maxima, an outer product for the means, broadcast
    reductions for the gain, accumulations); this one makes four passes and one allocation, the
    forward two allocations (the group products' memory is reused for the gain).
    """

    @staticmethod
    def forward(ctx, x, m1, weight, lam, with_index):
        n, t, c, h, w = x.shape
        flat, mask = x.reshape(n, t * c, h * w), m1.reshape(n, t * c).to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):  # one dtype, forward and backward
            weight = weight.to(x.dtype)
            pooled, maps, index, gain = _spatial_maps(flat, mask, weight, t, lam, (h, w),
                                                      with_index)
            torch.addcmul(maps[:, 1:2], mask[:, :, None], maps[:, 0:1] - maps[:, 1:2], out=gain)
        ctx.save_for_backward(flat, mask, weight, pooled, maps, gain, index)
        ctx.lam, ctx.m1_shape = lam, m1.shape
        return (flat * gain).view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        flat, mask, weight, pooled, maps, gain, index = ctx.saved_tensors
        need_x, need_m1, need_weight = ctx.needs_input_grad[:3]
        n, tc, hw = flat.shape
        grad = grad_out.reshape(n, tc, hw)
        groups = torch.stack([mask, 1 - mask], dim=1)
        grad_gain = grad * flat
        grad_pre = (torch.bmm(groups, grad_gain) * (1 - maps) * maps).view(n, 2, *pooled.shape[2:])
        padding = weight.shape[-1] // 2
        grad_pooled, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_pre, pooled, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 2,
            [need_x or need_m1, need_weight, False])
        grad_x = grad_m1 = None
        if need_x or need_m1:  # through the pooling: each group's mean and max
            grad_pooled = grad_pooled.view(n, 2, 2, hw)
            share = flat.new_tensor([[tc * ctx.lam], [tc * (1 - ctx.lam)]])
            grad_means, grad_maxima = grad_pooled[:, :, 0] / share, grad_pooled[:, :, 1]
        if need_m1:  # asa1: the gain, the means and the maxima depend on M1
            grad_m1 = (torch.bmm(grad_gain, (maps[:, 0] - maps[:, 1])[:, :, None])
                       + torch.bmm(flat, (grad_means[:, 0] - grad_means[:, 1])[:, :, None]))
            at_max = flat.new_tensor([[1.0], [-1.0]]) * grad_maxima * flat.gather(1, index)
            grad_m1 = grad_m1.squeeze(2).scatter_add_(1, index.view(n, -1), at_max.view(n, -1))
            grad_m1 = grad_m1.view(ctx.m1_shape)
        if need_x:  # into grad_gain's memory, no longer needed
            mean1, mean2 = grad_means[:, 0:1], grad_means[:, 1:2]
            grad_x = torch.addcmul(mean2, grad, gain, out=grad_gain)
            grad_x.addcmul_(mask[:, :, None], mean1 - mean2)
            grad_x.scatter_add_(1, index, grad_maxima * groups.gather(2, index))
            grad_x = grad_x.view_as(grad_out)
        return grad_x, grad_m1, grad_weight, None, None


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
