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
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = dist_fn.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def use_global_batch_norm(model: nn.Module) -> None:
    """Swap every BatchNorm2d for GlobalBatchNorm2d in place (same parameters and buffers)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
