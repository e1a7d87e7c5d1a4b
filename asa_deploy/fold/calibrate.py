"""Calibration: what each attention layer does on average, G(c, y, x) = E[M1 A1 + M2 A2].

A chip core cannot multiply by an input-dependent map, so the best it can hold is a fixed gain per
neuron. Over a calibration set we record, per attention layer, the mean effective gain the neuron
input receives, its spread (how input-dependent the attention really is), how often each channel
falls in group 1 (ASA's M1), and the mean spatial maps. Forward hooks on the trained modules read
the gain without changing the network's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from asa_deploy.data import FramedDataset
from asa_deploy.errors import AsaDeployError
from asa_deploy.io import atomic_output
from asa_deploy.nn.attention import AdvancedSpatialAttention, SpatialAttention
from asa_deploy.progress import progress as progress_bar

MIN_CALIBRATION_WINDOWS = 8


@dataclass
class LayerCalibration:
    name: str
    gain_mean: torch.Tensor        # [C, H, W]: G
    gain_std: torch.Tensor         # [C, H, W]: spread over samples and steps
    group1_frequency: torch.Tensor  # [C]: share of (sample, step) in ASA's group 1 (SA: ones)
    maps_mean: torch.Tensor        # [groups, H, W]: mean spatial maps (ASA: 2, SA: 1)
    windows: int

    def to_dict(self) -> dict:
        g = self.gain_mean
        return {"windows": self.windows, "gain_mean": float(g.mean()), "gain_min": float(g.min()),
                "gain_max": float(g.max()), "gain_std_mean": float(self.gain_std.mean()),
                "relative_spread": float((self.gain_std / g.clamp_min(1e-6)).mean()),
                "group1_frequency": [round(float(v), 4) for v in self.group1_frequency]}


def attention_gain(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
    """(gain [N, T, C, H, W] with module(x) == gain * x, group-1 mask [N, T, C], maps [N, G, H, W])."""
    n, t, c, h, w = x.shape
    if isinstance(module, AdvancedSpatialAttention):
        m1, _ = module.masks(x)
        maps = module.spatial_maps(x, m1)
        gain = maps[:, None, 1:2] + m1 * (maps[:, None, 0:1] - maps[:, None, 1:2])
        return gain.expand(n, t, c, h, w), m1[..., 0, 0], maps
    if isinstance(module, SpatialAttention):
        flat = x.flatten(0, 1)
        pooled = torch.stack([flat.mean(1), flat.amax(1)], dim=1)
        maps = torch.sigmoid(module.conv(pooled)).unflatten(0, (n, t))  # [N, T, 1, H, W]
        return maps.expand(n, t, c, h, w), torch.ones(n, t, c), maps.mean(1)
    raise AsaDeployError(f"cannot calibrate attention {type(module).__name__}")


def calibrate(model, dataset: FramedDataset, *, batch_size: int = 16,
              progress: bool = False) -> dict[str, LayerCalibration]:
    """Mean gain of every attention layer of ``model`` (a SpikingNetwork) over ``dataset``."""
    layers = dict(model.attention_layers())
    if not layers:
        raise AsaDeployError("the network has no attention layer to calibrate (a vanilla run): "
                             "nothing to fold; compile it directly")
    if len(dataset) < MIN_CALIBRATION_WINDOWS:
        raise AsaDeployError(f"calibration set has {len(dataset)} windows; estimating the gain needs "
                             f"at least {MIN_CALIBRATION_WINDOWS} (use more recordings or --calib-windows)")
    sums: dict[str, dict[str, torch.Tensor]] = {}
    count = {"windows": 0}

    def hook(name):
        def record(module, inputs, output):
            gain, m1, maps = attention_gain(module, inputs[0])
            s = sums.setdefault(name, {})
            for key, value in (("g", gain.sum((0, 1))), ("g2", (gain * gain).sum((0, 1))),
                               ("m1", m1.sum((0, 1))), ("maps", maps.sum(0))):
                s[key] = s.get(key, 0) + value.double()
            s["steps"] = s.get("steps", 0) + gain.shape[0] * gain.shape[1]
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    model.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        with torch.no_grad():
            for frames, _, _ in progress_bar(loader, desc="calibrate", unit="batch",
                                             enabled=progress):
                model.reset_states()
                model(frames)
                count["windows"] += len(frames)
    finally:
        for handle in handles:
            handle.remove()
    out = {}
    for name, s in sums.items():
        mean = s["g"] / s["steps"]
        var = (s["g2"] / s["steps"] - mean * mean).clamp_min(0)
        out[name] = LayerCalibration(name, mean.float(), var.sqrt().float(),
                                     (s["m1"] / s["steps"]).float(),
                                     (s["maps"] / count["windows"]).float(), count["windows"])
    return out


def plot_calibration(calibration: dict[str, LayerCalibration], path) -> None:
    """One row per attention layer: the mean maps, the channel-mean gain and its spread."""
    rows = len(calibration)
    fig = Figure(figsize=(12, 2.8 * rows))
    axes = fig.subplots(rows, 4, squeeze=False)
    for row, (name, cal) in enumerate(calibration.items()):
        panels = [(cal.maps_mean[0], "map A1 (mean)")]
        panels.append((cal.maps_mean[1], "map A2 (mean)") if cal.maps_mean.shape[0] > 1
                      else (cal.maps_mean[0], "map (mean)"))
        panels += [(cal.gain_mean.mean(0), "gain G, channel mean"),
                   (cal.gain_std.mean(0), "gain spread (std)")]
        for ax, (image, title) in zip(axes[row], panels, strict=True):
            shown = ax.imshow(image.numpy(), cmap="viridis")
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.axis("off")
            fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
