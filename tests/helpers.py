"""Plain helpers shared by several test modules."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import sinabs.layers as sl
import torch
import torch.nn as nn

from asa_deploy.data.events import EVENT_DTYPE

SUBPROCESS_TIMEOUT_S = 600
"""Every subprocess a test starts is given this long (the slowest, two torchrun ranks, takes about a
minute): a child that hangs fails its test, naming it, instead of stalling the suite."""


def random_events(n: int, *, width: int = 34, seed: int = 0) -> np.ndarray:
    """n valid events on a width x width sensor over 300 ms, sorted by time."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, width, n)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


def two_core_net() -> nn.Sequential:
    """A 2x32x32 -> 3 class IAF network of two cores with non-negative weights, so it spikes readily."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
                        sl.SumPool2d(4), nn.Flatten(), nn.Linear(4 * 8 * 8, 3, bias=False),
                        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.abs()
    return net


# ``asa-deploy train`` arguments for a dvs-small run that trains in seconds
CLI_DVS_TINY = ["--data", "synthetic:gesture-tiny", "--model", "dvs-small", "--T", "5",
                "--batch-size", "4", "--eval-windows", "2", "--seed", "3", "--param", "c1=4",
                "--param", "c2=8", "--param", "c3=8", "--param", "fc=16", "--no-progress"]


def train_one_and_two_ranks(args: list[str], single: Path, double: Path, port: int,
                            two_rank_args: tuple[str, ...] = ()) -> None:
    """``asa-deploy train ARGS`` in one process into ``single``, and under torchrun with 2 gloo
    ranks (plus ``two_rank_args``) into ``double``; one thread each, so the 2 ranks fit 2 cores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "asa_deploy.cli", *args, "--out", str(single)],
                   check=True, env=env, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(port), "-m", "asa_deploy.cli", *args, *two_rank_args, "--out", str(double)],
        env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
