"""Where training and evaluation compute (``--device``) and in what precision (``--amp``).

The CLI parser checks only the spelling (it must not import torch); whether the device exists is
checked here when a command starts, so ``--device cuda`` where torch sees no GPU is an error that
says so, never a silent run on the CPU.

Mixed precision: ``torch.autocast`` over the forward pass only. Matrix products and convolutions run
in bfloat16 / float16; the sinabs neurons keep their float32 membrane states (a float32 state plus a
low-precision input is float32), and losses and synops are computed in float32.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

import torch

from asa_deploy.defaults import AMP_MODES, TORCH_DEVICE
from asa_deploy.errors import ComputeDeviceError

NO_GPU_FIX = ("use --device cpu (or --device auto: a GPU when torch sees one, else the CPU), or run "
              "on a machine with an NVIDIA GPU, its driver and a CUDA build of torch")


def _no_gpu_reason() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    hidden = ("CUDA_VISIBLE_DEVICES is empty" if os.environ.get("CUDA_VISIBLE_DEVICES") == ""
              else "no NVIDIA driver or GPU found")
    return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, but {hidden}"


def resolve_device(requested: str = "auto", *, world_size: int = 1, local_rank: int = 0) -> str:
    """``cpu`` or ``cuda:N`` for a ``--device`` value: ``auto`` takes a GPU when torch sees one;
    under torchrun (``world_size`` > 1) ``cuda`` means the GPU of this process's local rank."""
    text = str(requested).strip().lower()
    if not re.fullmatch(TORCH_DEVICE, text):
        raise ComputeDeviceError(f"--device {requested!r} unknown; use auto, cpu, cuda or cuda:N")
    available = torch.cuda.is_available()
    if text == "cpu" or (text == "auto" and not available):
        return "cpu"
    if not available:
        raise ComputeDeviceError(
            f"--device {text}: torch.cuda.is_available() is False ({_no_gpu_reason()}), so there is "
            f"no GPU to run on, and asa-deploy never falls back to the CPU silently; {NO_GPU_FIX}")
    count = torch.cuda.device_count()
    if world_size > 1:
        if ":" in text:
            raise ComputeDeviceError(
                f"--device {text} under torchrun: each process uses the GPU of its local rank "
                f"(cuda:LOCAL_RANK); pass --device cuda (or auto)")
        if local_rank >= count:
            raise ComputeDeviceError(
                f"--device {text}: torchrun started local rank {local_rank}, but torch sees {count} "
                f"GPU(s); start at most {count} processes per machine (--nproc_per_node {count}), "
                f"or train on the CPU with --device cpu")
        return f"cuda:{local_rank}"
    index = int(text.partition(":")[2] or 0)
    if index >= count:
        raise ComputeDeviceError(
            f"--device {text}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}; pick one of "
            f"those (CUDA_VISIBLE_DEVICES renumbers them from 0)")
    return f"cuda:{index}"


@dataclass
class Precision:
    """``--amp`` on ``device``: the forward pass's autocast, and for float16 the loss scaling
    (``torch.amp.GradScaler``) that keeps small gradients from flushing to zero."""

    device: str
    amp: str = "off"
    scaler: torch.amp.GradScaler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ComputeDeviceError(f"--amp {self.amp!r} unknown; use one of {', '.join(AMP_MODES)}")
        cuda = self.device.startswith("cuda")
        if self.amp == "fp16" and not cuda:
            raise ComputeDeviceError(
                f"--amp fp16 on {self.device}: float16 mixed precision needs a GPU (its loss "
                f"scaling, torch.amp.GradScaler, is for CUDA, and float16 on the CPU is slow and "
                f"not tested here); use --amp bf16 (bfloat16 autocast runs on the CPU) or --amp off")
        if self.amp == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise ComputeDeviceError(
                f"--amp bf16 on {self.device}: this GPU has no bfloat16 arithmetic "
                f"(torch.cuda.is_bf16_supported() is False); use --amp fp16 or --amp off")
        if self.amp == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")

    def autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step (skipped by the scaler when float16 gradients overflowed)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
