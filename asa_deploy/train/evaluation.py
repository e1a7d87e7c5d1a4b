"""Accuracy (per window and under the paper's majority vote) and firing rates over a framed dataset."""

from __future__ import annotations

import numpy as np
import torch

from asa_deploy.data import predict_classes, recording_accuracy
from asa_deploy.metrics import nasfr
from asa_deploy.progress import progress as progress_bar
from asa_deploy.train.distributed import ProcessGroup, sum_tensor


def collate(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frames, labels, recordings = zip(*items, strict=True)
    return torch.stack(frames), torch.as_tensor(labels), torch.as_tensor(recordings)


def shard_items(n: int, group: ProcessGroup) -> list[int]:
    """The items of an ``n``-item dataset that ``evaluate`` runs in this process."""
    return list(range(group.rank, n, group.world_size))


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int = 64, group: ProcessGroup | None = None,
             progress: bool = False) -> dict:
    """Returns ``accuracy_window`` (a window's class is ``predict_classes``: a silent output is
    wrong, as on the chip), ``accuracy_recording`` (strict majority over each recording's windows),
    the windows with a silent output (``silent_windows``),
    per-layer spike firing rate SFR_l = spikes / (T x neurons x samples) and NASFR (their
    neuron-count-weighted mean, docs/asa-method.md section 2)."""
    group = group or ProcessGroup()
    model.eval()
    layers = model.spiking_layers()
    spikes = torch.zeros(len(layers), dtype=torch.float64)
    neurons = [0] * len(layers)
    steps = [0] * len(layers)

    def counter(i):
        def hook(_module, _inputs, out):
            spikes[i] += out.detach().sum(dtype=torch.float64).cpu()  # no float64 copy of out
            neurons[i], steps[i] = out[0, 0].numel(), out.shape[1]
        return hook

    handles = [layer.register_forward_hook(counter(i)) for i, (_, layer) in enumerate(layers)]
    n = len(dataset)
    mine = shard_items(n, group)
    predictions = torch.zeros(n, dtype=torch.float64)
    try:
        for start in progress_bar(range(0, len(mine), batch_size), desc="evaluate", unit="batch",
                                  leave=False, enabled=progress and group.is_main):
            idx = mine[start:start + batch_size]
            frames, _, _ = collate([dataset[i] for i in idx])
            model.reset_states()
            out = model(frames.to(group.device))
            predictions[idx] = torch.from_numpy(predict_classes(out.sum(1))).double()
    finally:
        for h in handles:
            h.remove()
    predictions = sum_tensor(predictions, group).long().numpy()
    spikes = sum_tensor(spikes, group)
    labels = np.asarray(dataset.labels)
    recordings = np.asarray(dataset.recordings)
    sfr = {name: float(spikes[i] / (steps[i] * neurons[i] * n)) if neurons[i] else 0.0
           for i, (name, _) in enumerate(layers)}
    counts = {name: neurons[i] for i, (name, _) in enumerate(layers)}
    return {
        "accuracy_window": float(np.mean(predictions == labels)),
        "accuracy_recording": float(recording_accuracy(predictions, labels, recordings)),
        "silent_windows": int(np.count_nonzero(predictions < 0)),
        "nasfr": nasfr(sfr, counts),
        "sfr": sfr,
        "neurons": counts,
        "windows": n,
        "recordings": int(len(np.unique(recordings))),
    }
