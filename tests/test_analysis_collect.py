"""collect / analyze / figures on a tiny stand-in network (conv -> LIF -> flatten -> linear -> LIF)."""

from __future__ import annotations

import json
import math

import pytest
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

from asa_deploy.analysis import (
    analyze,
    collect,
    layer_sfr,
    metrics,
    n_sfr,
    plot_comparison,
    qe,
    write_analysis,
)

T, THRESHOLD = 6, 0.3


def _neuron(kind: str) -> sl.LIF:
    if kind == "lif":  # the paper's neuron: alpha 0.3, hard reset to 0, no input scaling
        return sl.LIF(
            tau_mem=-1 / math.log(0.3),
            spike_threshold=THRESHOLD,
            spike_fn=sa.SingleSpike,
            reset_fn=sa.MembraneReset(),
            norm_input=False,
        )
    return sl.IAF(
        spike_threshold=THRESHOLD, spike_fn=sa.SingleSpike, reset_fn=sa.MembraneSubtract()
    )


class StandIn(nn.Module):
    """The analysed model interface: [B, T, C, H, W] -> [B, T, classes] plus spiking_layers()."""

    def __init__(self, kind: str = "lif", seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = _neuron(kind)
        self.fc = nn.Linear(4 * 8 * 8, 5)
        self.lif2 = _neuron(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        s1 = self.lif1(self.conv(x.flatten(0, 1)).unflatten(0, (b, t)))
        return self.lif2(self.fc(s1.flatten(2)))

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.lif1), ("fc_out", self.lif2)]

    def reset_states(self) -> None:
        for _, layer in self.spiking_layers():
            layer.reset_states()


def _loader(
    sizes=(3, 3, 2), seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    batches, start = [], 0
    for n in sizes:
        frames = torch.rand(n, T, 2, 8, 8, generator=gen) * 2
        label = torch.randint(0, 5, (n,), generator=gen)
        recording = torch.arange(start, start + n) // 2  # two windows per recording
        batches.append((frames, label, recording))
        start += n
    return batches


def _simulate(current: torch.Tensor, layer: sl.LIF, subtract: bool) -> tuple[torch.Tensor, ...]:
    """Reference neuron loop: u = alpha v + I, s = u >= Vth, reset to 0 or subtract Vth."""
    alpha = layer.alpha_mem_calculated
    v = torch.zeros_like(current[:, 0])
    us, ss = [], []
    for t in range(current.shape[1]):
        u = alpha * v + current[:, t]
        s = (u >= THRESHOLD).float()
        v = u - s * THRESHOLD if subtract else u * (1 - s)
        us.append(u)
        ss.append(s)
    return torch.stack(us, 1), torch.stack(ss, 1)


@pytest.mark.parametrize("kind", ["lif", "iaf"])
def test_u_matches_spikes_and_a_manual_simulation(kind):
    model = StandIn(kind)
    loader = _loader()
    records = collect(model, loader, progress=False)
    conv, out = records.layers
    assert conv.alpha == pytest.approx(0.3 if kind == "lif" else 1.0)
    assert 0.01 < conv.sfr < 0.99  # the example exercises both branches
    for layer in records.layers:
        assert torch.equal(layer.u >= layer.threshold, layer.spikes > 0)
        assert layer.mismatches == 0

    frames = torch.cat([f for f, _, _ in loader])
    with torch.no_grad():
        current1 = model.conv(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        u1, s1 = _simulate(current1, model.lif1, subtract=kind == "iaf")
        u2, s2 = _simulate(model.fc(s1.flatten(2)), model.lif2, subtract=kind == "iaf")
    torch.testing.assert_close(conv.u, u1)
    torch.testing.assert_close(out.u, u2)
    assert torch.equal(conv.spikes, s1.to(torch.uint8))
    assert torch.equal(out.spikes, s2.to(torch.uint8))
    with torch.no_grad():
        model.reset_states()
        expected = model(frames).mean(1).argmax(-1)
    assert torch.equal(records.predictions, expected)


def test_streamed_statistics_equal_raw_ones():
    records = collect(StandIn(), _loader(), max_samples=7, progress=False)
    assert records.n_samples == 7 and len(records.labels) == 7
    for layer in records.layers:
        assert layer.spikes.shape[0] == 7
        torch.testing.assert_close(layer.nsfr, n_sfr(layer.spikes))
        assert layer.sfr == pytest.approx(layer_sfr(layer.spikes))
        assert layer.qe == pytest.approx(qe(layer.u, layer.spikes))
        hist = metrics.mpd_histogram(layer.u, layer.mpd.edges)
        assert torch.equal(layer.mpd.counts, hist.counts)
        torch.testing.assert_close(layer.mpd_variance, metrics.mpd_variance(layer.u))
        # bins from the threshold up hold exactly the spiking neurons
        assert int(layer.mpd.counts[..., 80:].sum() + layer.mpd.overflow.sum()) == int(
            (layer.spikes > 0).sum()
        )


def test_raw_arrays_respect_the_memory_budget():
    model = StandIn()
    per_sample = T * (4 * 8 * 8 + 5) * 5  # uint8 spike + float32 u per neuron-step
    records = collect(model, _loader(), raw_bytes=4 * per_sample, progress=False)
    assert records.n_samples == 8
    assert all(layer.spikes.shape[0] == 4 and layer.u.shape[0] == 4 for layer in records.layers)
    assert records.layers[0].n_samples == 8
    none_kept = collect(model, _loader(), raw_bytes=0, progress=False)
    assert none_kept.layers[0].spikes is None and none_kept.layers[0].u is None


def test_collect_leaves_the_model_as_it_was():
    model = StandIn()
    model.train()
    collect(model, _loader(), progress=False)
    assert model.training
    for _, layer in model.spiking_layers():
        assert not layer.record_states
        assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_collect_rejects_models_without_spiking_layers():
    with pytest.raises(TypeError, match="spiking_layers"):
        collect(nn.Linear(2, 2), _loader(), progress=False)


def test_analyze_writes_consistent_json(tmp_path):
    result = analyze(StandIn(), _loader(), progress=False)
    path = write_analysis(result, tmp_path / "analysis.json")
    loaded = json.loads(path.read_text())
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert set(loaded) >= {"accuracy_window", "accuracy_recording", "nasfr", "t_sfr", "qe",
                           "layers", "n_samples"}
    assert loaded["n_samples"] == 8 and loaded["n_recordings"] == 4
    conv, out = loaded["layers"]["conv1"], loaded["layers"]["fc_out"]
    assert conv["neurons"] == 256 and out["neurons"] == 5
    assert len(loaded["t_sfr"]) == T and len(conv["c_sfr"]) == T and len(conv["c_sfr"][0]) == 4
    # single spikes: NASFR = mean network T-SFR = neuron-weighted mean of the layer SFRs
    assert loaded["nasfr"] == pytest.approx(sum(loaded["t_sfr"]) / T)
    assert loaded["nasfr"] == pytest.approx((conv["sfr"] * 256 + out["sfr"] * 5) / 261)
    # the same data and weights again: a noise channel's pooled MPD peaks at or above threshold
    record = collect(StandIn(), _loader(), raw_bytes=0, progress=False)["conv1"]
    pooled_ptd = metrics.ptd(record.mpd.counts.sum(0), record.mpd.edges, record.threshold)
    assert pooled_ptd.shape == (4,)
    noise_channels = int((pooled_ptd >= 0).sum())
    assert conv["noise_channel_fraction"] == pytest.approx(noise_channels / 4)
    assert len(conv["ghost"]["most_similar"]) == 4 and "ghost" not in out
    assert conv["u_spike_mismatches"] == 0


def test_nan_is_written_as_null(tmp_path):
    path = write_analysis({"ptd": float("nan"), "x": [1.0, float("inf")]}, tmp_path / "a.json")
    assert json.loads(path.read_text()) == {"ptd": None, "x": [1.0, None]}


def test_figures_are_written(tmp_path):
    results = {
        "vanilla": collect(StandIn(seed=0), _loader(), raw_bytes=0, progress=False),
        "asa2": collect(StandIn(seed=1), _loader(), raw_bytes=0, progress=False),
    }
    paths = plot_comparison(results, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["layer_sfr.png", "mpd.png", "spike_features.png", "t_sfr.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
