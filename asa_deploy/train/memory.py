"""``train --memory lean``: a conv block's conv -> BN -> avg pool run as one autograd node that
keeps less for the backward pass, and a fixed glibc mmap threshold. It pays where activations are
large (arch-a at T = 60: faster than torch's layers); on small networks its extra passes over the
data cost 15-25 % of speed (README).

Why: BPTT keeps every time step's activations until the backward pass. With torch's layers, arch-a
at T = 60 keeps about 100 MiB per sample, and its backward briefly holds three more tensors the size
of its largest conv output (that output, the gradient arriving from the pool, BN's gradient). Part
of that is not needed: the conv keeps its input as float32 although it is spikes, and BN's forward
and backward work on whole [B * T, C, H, W] tensors at once. No torch or sinabs layer does it with
less; activation checkpointing would recompute every conv and still run BN on whole tensors.

What the node keeps: its input as one byte per value when the input holds two values, 0 and v (the
spikes of the block before, or spikes through dropout: v = 1 / (1 - p)), else as it is; the conv
output, unless the conv is cheap enough to recompute (``RECOMPUTE_MACS``: the first layer); BN's
batch statistics. Both passes walk the rows in chunks of ``CHUNK_BYTES``: the forward makes the
conv output, sums its statistics (float64) and writes the normalised, pooled output chunk by chunk;
the backward sums BN's two per-channel reductions in a first pass and makes BN's input gradient and
the conv's gradients in a second. No whole-batch temporary is left but the conv output itself.

The arithmetic is BN's training formula written out (torch's fused kernel cannot run on chunks), so
results agree with the standard path up to float rounding, not bit for bit
(tests/test_train_memory_lean.py): ``--memory`` is an execution setting like ``--device``, and a
run resumes under either. Under torchrun the statistics and the two reductions are summed over the
ranks, as ``GlobalBatchNorm2d`` does. What the node does not cover runs torch's layers: max pool,
BN without affine parameters or running statistics, string padding, autocast, evaluation.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from asa_deploy.nn.network import avg_pool_args, avg_pool_input_grad
from asa_deploy.train.distributed import GlobalBatchNorm2d, update_running_stats

log = logging.getLogger("asa_deploy.train")
# Rows of the conv output the lean node handles at once, forward and backward: below the mmap
# threshold, so the chunks' temporaries are served again and again from the heap.
CHUNK_BYTES = 4 * 2**20
# A conv whose output values cost at most this many multiply-adds each (in channels x kernel area /
# groups) is recomputed in the backward instead of kept: the first layer reading 2 polarity channels
# with a 3x3 kernel costs 18 per value (arch-a: 15 MiB per sample kept, about 1 % of its conv work
# to recompute), the next 576.
RECOMPUTE_MACS = 64


# glibc serves allocations below its mmap threshold from the heap, and raises that threshold up to
# 32 MiB whenever a larger block is freed. A training step frees and allocates whole-batch tensors
# of every size, the heap fragments and its resident size climbs over the first steps. With the
# threshold fixed, larger blocks are mapped and go back to the system when freed. Fixing it also
# stops glibc from raising the trim threshold, and at its default of 128 KiB the heap's top was
# given back and faulted in again all the time (17 % slower); it is set as glibc's own rule would,
# twice the mmap threshold (benchmarks/train_memory.py measures both).
MMAP_THRESHOLD_BYTES = 16 * 2**20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


def bound_heap_growth() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (``train --memory lean`` does: it
    changes where memory comes from, not any result). False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        log.debug("not glibc: the heap's thresholds stay as they are")
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


class LeanConvBlock(nn.Sequential):
    """A conv block's ``nn.Sequential(conv, BN[, avg pool])`` whose training forward is
    ``_ConvNormPool``; same children, parameters and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _lean_applies(self, x):
            return super().forward(x)
        conv, bn, *rest = self
        pool = rest[0] if rest else None
        return _ConvNormPool.apply(x, conv.weight, conv.bias, bn.weight, bn.bias,
                                   _Plan(conv, bn, pool))


def apply_memory_mode(model: nn.Module, mode: str) -> int:
    """What ``train --memory MODE`` does to ``model`` and to this process: ``lean`` turns its conv
    blocks lean and bounds heap growth, ``standard`` nothing; returns how many blocks are lean."""
    if mode != "lean":
        return 0
    count = use_lean_memory(model)
    bound_heap_growth()
    return count


def use_lean_memory(model: nn.Module) -> int:
    """Turn every conv block of ``model`` (``nn.Sequential`` of Conv2d, BatchNorm2d and an optional
    AvgPool2d) into a ``LeanConvBlock`` in place; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Sequential and _is_conv_block(module):
            module.__class__ = LeanConvBlock
            count += 1
    return count


def _is_conv_block(seq: nn.Sequential) -> bool:
    layers = list(seq)
    return (len(layers) in (2, 3) and isinstance(layers[0], nn.Conv2d)
            and isinstance(layers[1], nn.BatchNorm2d)
            and (len(layers) == 2 or isinstance(layers[2], nn.AvgPool2d)))


def _lean_applies(block: LeanConvBlock, x: torch.Tensor) -> bool:
    conv, bn = block[0], block[1]
    return (torch.is_grad_enabled() and bn.training and x.dtype == torch.float32 and x.dim() == 4
            and not torch.is_autocast_enabled(x.device.type)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and bn.affine and bn.track_running_stats and bn.running_mean is not None
            and (x.requires_grad or conv.weight.requires_grad))


class _Plan:
    """The non-tensor arguments of ``_ConvNormPool``: the layers' settings, BN's buffers (updated in
    the forward as torch's BN updates them) and whether statistics span the torchrun ranks."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, pool: nn.AvgPool2d | None):
        self.conv_args = (conv.stride, conv.padding, conv.dilation, conv.groups)
        self.bn = bn
        self.pool_args = None if pool is None else avg_pool_args(pool)
        self.ranks = (isinstance(bn, GlobalBatchNorm2d) and dist.is_available()
                      and dist.is_initialized() and dist.get_world_size() > 1)


def _all_reduce(tensor: torch.Tensor, plan: _Plan) -> torch.Tensor:
    if plan.ranks:
        dist.all_reduce(tensor)
    return tensor


def _chunks(shape: tuple[int, ...] | torch.Size, element_size: int) -> list[slice]:
    """Row ranges of a tensor of ``shape`` of about ``CHUNK_BYTES`` each."""
    per_row = max(1, math.prod(shape[1:]) * element_size)
    rows = max(1, CHUNK_BYTES // per_row)
    return [slice(i, i + rows) for i in range(0, shape[0], rows)]


def _conv_output_shape(x: torch.Tensor, weight: torch.Tensor, plan: _Plan) -> tuple[int, ...]:
    stride, padding, dilation, _ = plan.conv_args
    size = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight.shape[2 + i] - 1) - 1)
            // stride[i] + 1 for i in range(2)]
    return (x.shape[0], weight.shape[0], *size)


def _compact(x: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """x as bool and its one non-zero value when it holds only 0 and that value (a silent layer's
    zeros too), else x itself; checked and converted a chunk of rows at a time (no whole-batch
    temporaries)."""
    value = float(x.max())
    value = value if value > 0 else 1.0  # all zeros: any value restores them
    rows = _chunks(x.shape, x.element_size())
    if not all(bool(((x[r] == 0) | (x[r] == value)).all()) for r in rows):
        return x, None
    stored = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    for r in rows:
        torch.ne(x[r], 0, out=stored[r])
    return stored, value


def _expand(stored: torch.Tensor, value: float | None, rows: slice) -> torch.Tensor:
    if value is None:
        return stored[rows]
    return stored[rows].to(torch.float32).mul_(value)


class _ConvNormPool(torch.autograd.Function):
    """avg_pool(batch_norm(conv2d(x))) in training mode; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, conv_bias, bn_weight, bn_bias, plan: _Plan):
        stride, padding, dilation, groups = plan.conv_args
        recompute = weight[0].numel() <= RECOMPUTE_MACS
        shape_y = _conv_output_shape(x, weight, plan)
        rows_y = _chunks(shape_y, x.element_size())
        y = None if recompute else x.new_empty(shape_y)
        channels, dims = shape_y[1], (0, 2, 3)
        stats = torch.zeros((2, channels), dtype=torch.float64, device=x.device)
        for rows in rows_y:  # sum and sum of squares in float64: no y-sized temporary
            part = F.conv2d(x[rows], weight, conv_bias, stride, padding, dilation, groups)
            if y is not None:
                y[rows] = part
            part = part.double()
            stats[0] += part.sum(dims)
            stats[1] += part.square_().sum(dims)
        n = float(_all_reduce(torch.tensor([x.shape[0] * shape_y[2] * shape_y[3]],
                                           dtype=torch.float64, device=x.device), plan))
        stats = _all_reduce(stats, plan) / n
        mean = stats[0].float()
        var = (stats[1] - stats[0].square()).clamp_min_(0).float()
        update_running_stats(plan.bn, mean, var, n)
        invstd = torch.rsqrt(var + plan.bn.eps)
        shape = (1, channels, 1, 1)
        scale = (bn_weight * invstd).view(shape)
        shift = bn_bias.view(shape) - mean.view(shape) * scale
        out = None
        for rows in rows_y:
            part = y[rows] if y is not None else F.conv2d(x[rows], weight, conv_bias, stride,
                                                         padding, dilation, groups)
            normed = part.mul_(scale) if y is None else part * scale
            normed.add_(shift)
            if plan.pool_args is not None:
                normed = F.avg_pool2d(normed, *plan.pool_args)
            if out is None:
                out = normed.new_empty((x.shape[0], *normed.shape[1:]))
            out[rows] = normed
        stored, value = _compact(x)
        ctx.save_for_backward(stored, y, mean, invstd, weight, conv_bias, bn_weight)
        ctx.plan, ctx.value, ctx.n, ctx.rows = plan, value, n, rows_y
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        stored, y, mean, invstd, weight, conv_bias, bn_weight = ctx.saved_tensors
        plan = ctx.plan
        stride, padding, dilation, groups = plan.conv_args
        shape, dims = (1, weight.shape[0], 1, 1), (0, 2, 3)
        mean, invstd = mean.view(shape), invstd.view(shape)

        def conv_output(rows: slice) -> torch.Tensor:
            if y is not None:
                return y[rows]
            return F.conv2d(_expand(stored, ctx.value, rows), weight, conv_bias, stride, padding,
                            dilation, groups)

        def grad_normed(rows: slice, like: torch.Tensor) -> torch.Tensor:
            if plan.pool_args is None:
                return grad_out[rows]
            return avg_pool_input_grad(grad_out[rows], like, plan.pool_args)

        sums = grad_out.new_zeros((2, weight.shape[0]))  # sum of g and of g * xhat, per channel
        for rows in ctx.rows:
            y_rows = conv_output(rows)
            g = grad_normed(rows, y_rows)
            sums[0] += g.sum(dims)
            sums[1] += (g * ((y_rows - mean) * invstd)).sum(dims)
        grad_bn_bias, grad_bn_weight = sums[0].clone(), sums[1].clone()  # this rank's share
        means = _all_reduce(sums, plan) / ctx.n
        mean_g, mean_gx = means[0].view(shape), means[1].view(shape)
        gain = bn_weight.view(shape) * invstd

        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        for rows in ctx.rows:
            y_rows = conv_output(rows)
            xhat = (y_rows - mean).mul_(invstd)
            grad_y = (grad_normed(rows, y_rows) - mean_g).sub_(xhat.mul_(mean_gx)).mul_(gain)
            gi, gw, gb = torch.ops.aten.convolution_backward(
                grad_y, _expand(stored, ctx.value, rows), weight,
                None if conv_bias is None else [weight.shape[0]], stride, padding, dilation, False,
                [0, 0], groups, [need_x, need_w, need_b])
            if need_x:
                if grad_x is None:
                    grad_x = gi.new_empty((stored.shape[0], *gi.shape[1:]))
                grad_x[rows] = gi
            if need_w:
                grad_w = gw if grad_w is None else grad_w.add_(gw)
            if need_b:
                grad_b = gb if grad_b is None else grad_b.add_(gb)
        return grad_x, grad_w, grad_b, grad_bn_weight, grad_bn_bias, None
