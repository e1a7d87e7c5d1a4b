"""Redundancy metrics against small hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asa_deploy.analysis import metrics
from asa_deploy.metrics import nasfr


def test_layer_sfr_counts_every_spike():
    spikes = torch.zeros(2, 2, 2)  # S, T, N
    spikes[0, 0, 0] = 1
    spikes[1, 1, 1] = 2  # a double spike counts twice
    assert metrics.layer_sfr(spikes) == pytest.approx(3 / 8)


def test_nasfr_is_neuron_weighted():
    assert nasfr({"a": 0.5, "b": 0.1}, {"a": 10, "b": 30}) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same layers"):
        nasfr({"a": 0.5}, {"b": 10})


def test_n_sfr_counts_multi_spikes_once():
    spikes = torch.tensor(
        [
            [[1, 0, 2], [0, 0, 1]],  # sample 0: steps 0 and 1, three neurons
            [[1, 1, 0], [0, 0, 0]],
        ]
    )
    expected = torch.tensor([[1.0, 0.5, 0.5], [0.0, 0.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(metrics.n_sfr(spikes), expected)
    torch.testing.assert_close(metrics.n_sfr(spikes.numpy()), expected)


def test_c_sfr_and_t_sfr_average_n_sfr():
    nsfr = torch.tensor(  # T=2, C=2, H=1, W=2
        [
            [[[1.0, 0.0]], [[0.5, 0.5]]],
            [[[0.0, 0.0]], [[1.0, 0.0]]],
        ]
    )
    torch.testing.assert_close(
        metrics.c_sfr(nsfr), torch.tensor([[0.5, 0.5], [0.0, 0.5]], dtype=torch.float64)
    )
    torch.testing.assert_close(metrics.t_sfr(nsfr), torch.tensor([0.5, 0.25], dtype=torch.float64))


def test_network_t_sfr_weights_layers_by_neurons():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # 2 neurons: T-SFR [0.5, 0]
    b = torch.tensor([[0.0] * 4, [1.0] * 4])  # 4 neurons: T-SFR [0, 1]
    torch.testing.assert_close(
        metrics.network_t_sfr({"a": a, "b": b}),
        torch.tensor([1 / 6, 4 / 6], dtype=torch.float64),
    )


def test_nasfr_is_mean_t_sfr_for_single_spikes():
    gen = torch.Generator().manual_seed(0)
    layers = {
        "conv": (torch.rand(5, 4, 3, 2, 2, generator=gen) < 0.3).float(),
        "fc": (torch.rand(5, 4, 7, generator=gen) < 0.6).float(),
    }
    sfr = {k: metrics.layer_sfr(s) for k, s in layers.items()}
    neurons = {k: s[0, 0].numel() for k, s in layers.items()}
    t_curve = metrics.network_t_sfr({k: metrics.n_sfr(s) for k, s in layers.items()})
    assert nasfr(sfr, neurons) == pytest.approx(float(t_curve.mean()))


def test_spike_features_need_conv_spikes():
    assert metrics.spike_features(torch.ones(2, 3, 4, 5, 5)).shape == (3, 4, 5, 5)
    with pytest.raises(ValueError, match="conv spikes"):
        metrics.spike_features(torch.ones(2, 3, 4))


def _ghost_input() -> torch.Tensor:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # no pixel in common with a
    f = torch.zeros(2, 4, 2, 2)  # T, C, H, W
    f[:, 0] = a
    f[:, 1] = 0.5 * a  # same pattern, lower rate: a duplicate for cosine similarity
    f[:, 2] = b
    return f  # channel 3 never fires


def test_ghost_duplicate_orthogonal_and_dead_channels():
    g = metrics.ghost_features(_ghost_input())
    assert g.similarity[0, 1] == pytest.approx(1.0)
    assert g.similarity[0, 2] == pytest.approx(0.0)
    assert g.dead.tolist() == [False, False, False, True]
    assert g.near_duplicate.tolist() == [True, True, False, False]
    assert g.near_duplicate_fraction == pytest.approx(2 / 3)
    assert g.dead_fraction == pytest.approx(1 / 4)
    assert g.mean_similarity == pytest.approx(1 / 3)  # pairs (0,1), (0,2), (1,2)
    assert g.most_similar.tolist()[:2] == [1, 0]
    assert g.most_similar[3] == -1 and math.isnan(float(g.most_similar_value[3]))


def test_ghost_averages_over_steps_where_either_fires():
    f = torch.zeros(3, 2, 1, 2)
    f[0, 0] = f[0, 1] = torch.tensor([1.0, 1.0])  # equal at t=0
    f[1, 1] = torch.tensor([1.0, 0.0])  # only channel 1 fires at t=1: similarity 0
    # t=2: neither fires, skipped
    g = metrics.ghost_features(f, near=0.4)
    assert g.similarity[0, 1] == pytest.approx(0.5)
    assert g.near_duplicate.all()
    assert not metrics.ghost_features(f, near=0.6).near_duplicate.any()


def test_mpd_edges_put_threshold_on_an_edge():
    edges = metrics.mpd_edges(0.3)
    assert len(edges) == 121
    assert edges[80] == torch.tensor(0.3)
    assert float(edges[0]) == pytest.approx(-0.9) and float(edges[-1]) == pytest.approx(0.9)
    assert float(edges[1] - edges[0]) == pytest.approx(0.015)


def test_mpd_histogram_half_open_bins_and_out_of_range():
    edges = torch.tensor([0.0, 1.0, 2.0, 3.0])
    u = torch.tensor([[[[0.5, 1.0, 2.9], [-1.0, 3.0, 1.5]]]])  # S=1, T=1, C=2, 3 neurons
    h = metrics.mpd_histogram(u, edges)
    assert h.counts.tolist() == [[[1, 1, 1], [0, 1, 0]]]
    assert h.underflow.tolist() == [[0, 1]]
    assert h.overflow.tolist() == [[0, 1]]  # 3.0 is on the right edge: outside


def test_mpd_histogram_is_additive_over_batches():
    u = torch.randn(6, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    edges = metrics.mpd_edges(0.3)
    whole = metrics.mpd_histogram(u, edges)
    parts = metrics.mpd_histogram(u[:2], edges) + metrics.mpd_histogram(u[2:], edges)
    assert torch.equal(whole.counts, parts.counts)
    assert torch.equal(whole.overflow, parts.overflow)
    assert int(whole.counts.sum() + whole.underflow.sum() + whole.overflow.sum()) == u.numel()


def test_ptd_from_top_three_bins():
    edges = torch.arange(7.0)  # bins [0,1), [1,2), ..., [5,6)
    counts = torch.tensor(
        [
            [5, 9, 2, 7, 8, 1],  # top bins [1,2), [4,5), [3,4): interval [8/3, 11/3], centre 19/6
            [4, 4, 4, 4, 0, 0],  # ties go to the lowest bins: [0,3) -> centre 1.5
            [0, 0, 0, 0, 0, 0],  # empty
        ]
    )
    result = metrics.ptd(counts, edges, threshold=3.0)
    assert float(result[0]) == pytest.approx(19 / 6 - 3)
    assert float(result[1]) == pytest.approx(1.5 - 3)
    assert math.isnan(float(result[2]))


def test_mpd_variance_matches_numpy():
    u = torch.randn(4, 3, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    expected = u.permute(1, 2, 0, 3, 4).reshape(3, 2, -1).numpy().var(axis=-1)
    np.testing.assert_allclose(metrics.mpd_variance(u).numpy(), expected, rtol=1e-6)
    moments = metrics.mpd_moments(u[:1]) + metrics.mpd_moments(u[1:])
    np.testing.assert_allclose(metrics.variance_from_moments(moments).numpy(), expected, rtol=1e-6)


def test_qe_is_mean_squared_distance_to_spike():
    u = torch.tensor([[0.2, 0.5], [1.0, -0.1]])
    spikes = torch.tensor([[0, 1], [2, 0]])  # a double spike quantizes to 1
    assert metrics.qe(u, spikes) == pytest.approx((0.04 + 0.25 + 0.0 + 0.01) / 4)
