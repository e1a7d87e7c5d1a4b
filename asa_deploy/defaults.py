"""Defaults and places shared by every stage and CLI command. Only the standard library is imported,
so the CLI can check its arguments against them before it loads torch."""

from __future__ import annotations

TEST_WINDOWS = 5
"""Test windows per recording (majority vote) for every evaluation: train's validation, evaluate,
analyze, fold's ladder, simulate and deploy. The paper evaluates 10 windows; 5 keeps the exact
event-driven simulator affordable on 2 CPU cores. One value everywhere, so that accuracies and
figures from different commands describe the same windows and can be compared."""

TORCH_DEVICE = r"auto|cpu|cuda(:[0-9]+)?"
"""``--device`` (where torch computes): auto (a GPU when torch sees one, else the CPU), cpu, cuda
(under torchrun: the GPU of the process's local rank) or cuda:N."""

AMP_MODES = ("off", "bf16", "fp16")
"""``--amp``: float32 throughout, or torch.autocast to bfloat16 (CPU and GPU) or float16 (GPU)."""

MEMORY_MODES = ("standard", "lean")
"""``train --memory``: torch's layers as they are, or conv blocks that keep less for the backward
pass, equal up to float rounding (asa_deploy.train.memory)."""

HOT_PIXEL_FACTOR = 10.0
"""A hot pixel fires more than this many times its neighbours' median rate (plus a margin; see
asa_deploy.data.hot_pixels)."""
