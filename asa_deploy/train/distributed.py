"""Data-parallel training over torch.distributed (``torchrun``), gloo on CPU, NCCL on GPU.

Every process holds the same model and takes a contiguous shard of each global batch; gradients are
summed with ``all_reduce``. Two pieces make N processes give the same model as one, up to float
rounding: batch norm computed over the global batch, and dropout masks drawn for the global batch
(``BatchDropout`` in nn/network.py). torch's own ``SyncBatchNorm`` refuses CPU tensors, hence
``GlobalBatchNorm2d`` below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn
from torch.autograd.function import once_differentiable

from asa_deploy.train.accelerator import resolve_device


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """[start, stop) of this process's rows in a global batch of n rows."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)


def init_from_env(device: str = "auto") -> ProcessGroup:
    """Join the process group that ``torchrun`` describes in the environment, if any, on ``device``
    (a ``--device`` value; under torchrun a GPU means each process's ``cuda:LOCAL_RANK``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device, world_size=world_size,
                            local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if world_size == 1:
        return ProcessGroup(device=device)
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return ProcessGroup(rank, world_size, device)


def shutdown(group: ProcessGroup) -> None:
    if group.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def sum_gradients(model: nn.Module, group: ProcessGroup) -> None:
    if group.world_size == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def sum_tensor(t: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """The sum over processes of ``t``, on ``t``'s device. NCCL reduces only GPU tensors, so a CPU
    tensor (a logged loss, counts) travels through the group's device and back."""
    if group.world_size > 1:
        moved = t.to(group.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        t = moved.to(t.device)
    return t


def barrier(group: ProcessGroup) -> None:
    if group.world_size > 1:
        dist.barrier()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process (CPU-capable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        x = x.float()  # under autocast a bfloat16 / float16 input: statistics in float32
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        handover: dict = {}  # _Normalise's gradient for x, which _Sums's backward adds to
        stats = torch.cat([*_Sums.apply(x, handover), count])
        stats = dist_fn.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        update_running_stats(self, mean.detach(), var.detach(), n)
        return _Normalise.apply(x, mean, var, self.weight, self.bias, self.eps, handover)


@torch.no_grad()
def update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n) -> None:
    """BN's running statistics after a batch of ``n`` values per channel with these (biased)
    statistics, as torch's BN updates them: the variance unbiased, momentum None a cumulative
    average."""
    bn.num_batches_tracked += 1
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.lerp_(mean, factor)
    bn.running_var.lerp_(var * n / (n - 1), factor)


# GlobalBatchNorm2d was (x - mean) * rsqrt(var + eps) * weight + bias in plain operations, with mean
# and var from all-reduced x.sum and (x * x).sum. Autograd kept x - mean and its scaled copy as well
# as x, and its backward held up to six input-sized tensors at once: for arch-a at T = 60, 105 MiB
# per sample more than BatchNorm2d, which made 2 ranks 1.5x one process. The two functions below
# keep x only and make autograd's operations on that graph, in its order (the gradients reaching x
# are added as autograd added them: normalisation, x * x twice, x.sum), in place where autograd
# allocated, so the gradients are the same bit for bit (tests/test_training_memory.py).


class _Sums(torch.autograd.Function):
    """x [N, C, H, W] -> (x.sum, (x * x).sum) over N, H, W."""

    @staticmethod
    def forward(ctx, x, handover):
        dims = (0, 2, 3)
        ctx.save_for_backward(x)
        ctx.handover = handover
        return x.sum(dims), (x * x).sum(dims)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sum, grad_squares):
        (x,) = ctx.saved_tensors
        shape = (1, x.shape[1], 1, 1)
        grad = ctx.handover.pop("x", None)
        if grad_squares is not None:
            product = grad_squares.view(shape) * x  # x * x sends it twice: as self and as other
            grad = product if grad is None else grad.add_(product)
            grad.add_(product)
        if grad_sum is not None:
            spread = grad_sum.view(shape).expand_as(x)
            grad = spread.clone() if grad is None else grad.add_(spread)
        return grad, None


class _Normalise(torch.autograd.Function):
    """(x - mean) * rsqrt(var + eps) * weight + bias for x [N, C, H, W] and [C] statistics and
    parameters; its gradient for x goes to ``handover`` for ``_Sums`` (which runs later)."""

    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps, handover):
        shape = (1, x.shape[1], 1, 1)
        out = x - mean.view(shape)
        out.mul_(torch.rsqrt(var.view(shape) + eps)).mul_(weight.view(shape))
        ctx.save_for_backward(x, mean, var, weight)
        ctx.eps, ctx.handover = eps, handover
        return out.add_(bias.view(shape))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, mean, var, weight = ctx.saved_tensors
        c = x.shape[1]
        shape, dims = (1, c, 1, 1), (0, 2, 3)  # autograd's sum_to(grad, [1, C, 1, 1])
        scale = torch.rsqrt(var.view(shape) + ctx.eps)
        mean, weight = mean.view(shape), weight.view(shape)
        # autograd's input-sized products (y = (x - mean) * scale, grad_y = grad * weight) made
        # a block of rows at a time into one buffer: element by element the same operations
        work = torch.empty_like(x)
        rows = [slice(i, i + 64) for i in range(0, x.shape[0], 64)]
        for r in rows:  # grad * y
            torch.mul((x[r] - mean).mul_(scale), grad[r], out=work[r])
        grad_weight = work.sum(dims, keepdim=True).view(c)
        grad_bias = grad.sum(dims, keepdim=True).view(c)
        for r in rows:  # grad_y * (x - mean)
            torch.mul(grad[r] * weight, x[r] - mean, out=work[r])
        grad_scale = work.sum(dims, keepdim=True)
        for r in rows:  # grad_y * scale
            torch.mul(grad[r], weight, out=work[r]).mul_(scale)
        grad_centred = work
        grad_var = (-0.5 * grad_scale * scale.pow(3)).view(c)
        grad_mean = grad_centred.sum(dims, keepdim=True).neg_().view(c)  # sum of -grad, exactly
        ctx.handover["x"] = grad_centred
        return None, grad_mean, grad_var, grad_weight, grad_bias, None, None


def use_global_batch_norm(model: nn.Module) -> None:
    """Swap every BatchNorm2d for GlobalBatchNorm2d in place (same parameters and buffers)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
