"""ASA, SA and the network builder: shapes, mask rules, gradients, edge cases."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asa_deploy.nn import (
    AdvancedSpatialAttention,
    SpatialAttention,
    build_network,
    load_model_spec,
    make_neuron,
)
from asa_deploy.nn.attention import _first_max, soft_top_k_mask, top_k_mask


@pytest.mark.parametrize("variant", ["asa1", "asa2"])
@pytest.mark.parametrize("shape", [(3, 6, 8, 5, 7), (1, 6, 8, 5, 7), (2, 1, 4, 3, 3)])
def test_asa_shape_and_masks_partition(variant, shape):
    torch.manual_seed(0)
    n, t, c, h, w = shape
    asa = AdvancedSpatialAttention(T=t, variant=variant, lam=0.5, r=2)
    x = torch.randn(shape)
    y = asa(x)
    assert y.shape == x.shape
    m1, m2 = asa.masks(x)
    assert m1.shape == (n, t, c, 1, 1)
    assert torch.equal(m1 + m2, torch.ones_like(m1))
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    maps = asa.spatial_maps(x, m1)
    assert maps.shape == (n, 2, h, w)  # one map per sample and group, shared over T and C


def test_asa_xor_rule_on_hand_made_input():
    # T=2, C=4, lambda=0.5: top-2 channels per step, top-1 step per channel.
    scores = torch.tensor([[[4.0, 3.0, 2.0, 1.0],    # t=0: channels 0, 1 important
                            [1.0, 5.0, 6.0, 0.5]]])  # t=1: channels 1, 2 important
    x = scores[..., None, None].expand(1, 2, 4, 3, 3).clone()  # avg = max = score
    asa = AdvancedSpatialAttention(T=2, variant="asa2", lam=0.5)
    m1, _ = asa.masks(x)
    # over channels: t0 -> {0,1}, t1 -> {1,2}; over time (per channel): c0 -> t0, c1 -> t1,
    # c2 -> t1, c3 -> t0.
    over_channels = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.float)
    over_time = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float)
    expected = (over_channels != over_time).float()
    assert torch.equal(m1[0, :, :, 0, 0], expected)
    assert expected.tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]


def test_asa_output_is_maps_times_masked_input():
    torch.manual_seed(1)
    asa = AdvancedSpatialAttention(T=4, variant="asa2")
    x = torch.rand(2, 4, 6, 5, 5)
    m1, m2 = asa.masks(x)
    maps = asa.spatial_maps(x, m1)
    expected = maps[:, None, 0:1] * m1 * x + maps[:, None, 1:2] * m2 * x
    assert torch.allclose(asa(x), expected)


def test_top_k_mask_counts():
    scores = torch.randn(3, 5, 8)
    assert torch.all(top_k_mask(scores, 4, dim=2).sum(2) == 4)
    assert torch.all(top_k_mask(scores, 0, dim=2) == 0)


def test_asa1_importance_receives_gradient():
    torch.manual_seed(2)
    asa = AdvancedSpatialAttention(T=6, variant="asa1", r=2)
    x = torch.randn(2, 6, 8, 4, 4, requires_grad=True)
    (asa(x) * torch.randn(2, 6, 8, 4, 4)).sum().backward()
    for name, p in asa.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_asa2_learns_only_the_spatial_convolutions():
    asa = AdvancedSpatialAttention(T=6, variant="asa2")
    names = {n for n, _ in asa.named_parameters()}
    assert names == {"spatial.0.weight", "spatial.1.weight"}
    asa(torch.randn(2, 6, 8, 4, 4)).sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in asa.parameters())


def test_asa_parameter_cost_is_tiny():
    asa = AdvancedSpatialAttention(T=60, variant="asa1", r=4)
    # two 2->1 3x3 convs (36) + a, b (2) + MLP 60->15->60 (1800): docs/asa-method.md's ~1.8 K
    assert sum(p.numel() for p in asa.parameters()) == 36 + 2 + 2 * 60 * 15


def test_asa_refuses_wrong_T():
    asa = AdvancedSpatialAttention(T=4)
    with pytest.raises(ValueError, match="T=4"):
        asa(torch.randn(1, 5, 3, 2, 2))


def test_spatial_attention_shape_and_range():
    sa = SpatialAttention(3)
    x = torch.rand(2, 3, 4, 6, 6)
    y = sa(x)
    assert y.shape == x.shape
    assert torch.all(y <= x + 1e-7) and torch.all(y >= 0)


def test_lif_matches_paper_dynamics():
    lif = make_neuron("lif")
    current = torch.tensor([0.2, 0.2, 0.05, 0.4, 0.0]).view(1, 5, 1)
    spikes = lif(current).flatten().tolist()
    # u: 0.2 -> 0.06+0.2=0.26 -> 0.078+0.05=0.128 -> 0.0384+0.4=0.4384 (spike, reset) -> 0
    assert spikes == [0, 0, 0, 1, 0]
    assert math.isclose(lif.alpha_mem_calculated.item(), 0.3, rel_tol=1e-6)


def test_iaf_subtracts_and_clamps():
    iaf = make_neuron("iaf", threshold=1.0, min_v_mem=-1.0)
    current = torch.tensor([0.6, 0.6, -5.0, 1.5]).view(1, 4, 1)
    assert iaf(current).flatten().tolist() == [0, 1, 0, 0]
    assert math.isclose(iaf.v_mem.item(), 0.5, rel_tol=1e-6)  # -1 (clamped) + 1.5


@pytest.mark.parametrize("model", ["nmnist-net", "arch-a", "arch-d", "speck-tiny", "dvs-small"])
@pytest.mark.parametrize("attention", ["none", "sa", "asa1", "asa2"])
def test_networks_build_and_run_batch1_T1(model, attention):
    spec = load_model_spec(model).with_overrides(T=1)
    net = build_network(spec, 7, attention)
    x = torch.rand(1, 1, spec.input["channels"], spec.input["height"], spec.input["width"])
    net.reset_states()
    assert net(x).shape == (1, 1, 7)
    assert len(net.spiking_layers()) >= 3


def test_channel_widths_are_configurable():
    spec = load_model_spec("arch-a").with_overrides(params={"c1": 8, "c2": 8, "c3": 8, "fc": 16})
    net = build_network(spec, 11, "none")
    assert net.blocks[0].synapse[0].out_channels == 8
    assert net.blocks[4].synapse.out_features == 16


def test_asa_spatial_maps_pool_each_group_as_the_paper_says():
    torch.manual_seed(3)
    asa = AdvancedSpatialAttention(T=3, variant="asa2", lam=0.5)
    x = torch.randn(2, 3, 4, 5, 5)
    m1, m2 = asa.masks(x)
    expected = []
    for conv, group, share in ((asa.spatial[0], m1 * x, 0.5), (asa.spatial[1], m2 * x, 0.5)):
        flat = group.flatten(1, 2)
        pooled = torch.stack([flat.mean(1) / share, flat.amax(1)], dim=1)
        expected.append(torch.sigmoid(conv(pooled)))
    assert torch.allclose(asa.spatial_maps(x, m1), torch.cat(expected, 1), atol=1e-6)


def test_asa_gradients_match_the_plain_formula():
    torch.manual_seed(4)
    asa = AdvancedSpatialAttention(T=4, variant="asa1", r=2)
    x = torch.randn(2, 4, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    asa = asa.double()
    g = torch.randn_like(x)

    def plain(x):
        m1, m2 = asa.masks(x)
        maps = []
        for conv, group, share in ((asa.spatial[0], m1 * x, asa.lam),
                                   (asa.spatial[1], m2 * x, 1 - asa.lam)):
            flat = group.flatten(1, 2)
            maps.append(torch.sigmoid(conv(torch.stack([flat.mean(1) / share, flat.amax(1)], 1))))
        return maps[0][:, None] * m1 * x + maps[1][:, None] * m2 * x

    fast = torch.autograd.grad((asa(x) * g).sum(), [x, *asa.parameters()])
    reference = torch.autograd.grad((plain(x) * g).sum(), [x, *asa.parameters()])
    for a, b in zip(fast, reference, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


# ---- the hand-written forward and backward (_AsaGain, _PoolSpace) against autograd ----------------

def reference_asa(asa: AdvancedSpatialAttention, x: torch.Tensor) -> torch.Tensor:
    """ASA written plainly, every gradient by autograd. Each max sends its gradient to the first
    maximum (``torch.max``'s choice), as the implementation before the hand-written backward did."""
    n, t, c, h, w = x.shape
    avg, mx = x.mean(dim=(3, 4)), x.flatten(3).max(dim=3).values
    if asa.variant == "asa2" or asa.release_masks:
        scores = (avg + mx).detach() if asa.variant == "asa2" else None
    if asa.variant == "asa1":
        raw = (0.5 + asa.a) * avg + (0.5 + asa.b) * mx
        scores = asa.mlp(raw.transpose(1, 2)).transpose(1, 2)
        if asa.release_masks:
            scores = scores.detach()
    select = (soft_top_k_mask if asa.variant == "asa1" and not asa.release_masks else top_k_mask)
    over_channels = select(scores, math.floor(c * asa.lam), dim=2)
    over_time = select(scores, math.floor(t * asa.lam), dim=1)
    if asa.release_masks:
        over_channels = over_channels.amax(dim=0, keepdim=True).expand_as(over_channels)
        over_time = over_time.amax(dim=0, keepdim=True).expand_as(over_time)
    m1 = (over_channels + over_time - 2 * over_channels * over_time)[..., None, None]
    maps = []
    for conv, group, share in ((asa.spatial[0], m1 * x, asa.lam),
                               (asa.spatial[1], (1 - m1) * x, 1 - asa.lam)):
        flat = group.flatten(1, 2)
        pooled = torch.stack([flat.mean(1) / share, flat.max(1).values], 1)
        maps.append(torch.sigmoid(conv(pooled))[:, None])
    return maps[0] * m1 * x + maps[1] * (1 - m1) * x


def assert_matches_reference(asa, x, *, atol=1e-10):
    torch.manual_seed(11)
    g = torch.randn_like(x)
    wrt = ([x] if x.requires_grad else []) + list(asa.parameters())
    fast_out, slow_out = asa(x), reference_asa(asa, x)
    assert torch.allclose(fast_out, slow_out, atol=atol)
    fast = torch.autograd.grad((fast_out * g).sum(), wrt, allow_unused=True)
    slow = torch.autograd.grad((slow_out * g).sum(), wrt, allow_unused=True)
    for a, b in zip(fast, slow, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=atol), (a - b).abs().max()


@pytest.mark.parametrize("variant", ["asa1", "asa2"])
@pytest.mark.parametrize("release", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_asa_hand_written_backward_matches_autograd(variant, release, ties):
    # 9 x 9 pixels reach _first_max's two-stage search (HW >= 64), 5 x 5 its plain one
    for shape in [(3, 4, 6, 9, 9), (2, 5, 3, 5, 5), (1, 1, 4, 3, 3)]:
        torch.manual_seed(5)
        asa = AdvancedSpatialAttention(T=shape[1], variant=variant, r=2, release_masks=release)
        asa = asa.double()
        x = torch.randn(shape, dtype=torch.float64)
        if ties:  # integers: many equal maxima, where the first one must get the gradient
            x = (2 * x).round()
        assert_matches_reference(asa, x.requires_grad_(True))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 9),
       w=st.integers(1, 9), lam=st.sampled_from([0.25, 0.5, 0.75]),
       variant=st.sampled_from(["asa1", "asa2"]), ties=st.booleans(), x_grad=st.booleans(),
       seed=st.integers(0, 2**16))
def test_asa_matches_autograd_fuzz(n, t, c, h, w, lam, variant, ties, x_grad, seed):
    torch.manual_seed(seed)
    asa = AdvancedSpatialAttention(T=t, variant=variant, lam=lam, r=2).double()
    x = torch.randn(n, t, c, h, w, dtype=torch.float64)
    if ties:
        x = x.round()
    assert_matches_reference(asa, x.requires_grad_(x_grad))


@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 3, 7, 64), (4, 2, 3, 70)])  # L < 64, >= 64
def test_first_max_is_torch_max_with_its_first_index(shape):
    torch.manual_seed(6)
    x = torch.randint(-2, 3, shape).float()  # ties everywhere
    values, index = _first_max(x)
    expected = x.flatten(1, 2).max(dim=1)
    assert torch.equal(values, expected.values)
    assert torch.equal(index, expected.indices)


@pytest.mark.parametrize("variant", ["asa1", "asa2"])
def test_asa_without_gradient_gives_the_same_output(variant):
    torch.manual_seed(7)
    asa = AdvancedSpatialAttention(T=4, variant=variant, r=2)
    x = torch.randn(3, 4, 6, 9, 9)
    with torch.no_grad():
        quiet = asa(x)
    assert torch.equal(quiet, asa(x.requires_grad_(True)))


def test_asa_spatial_maps_stay_differentiable():
    torch.manual_seed(8)
    asa = AdvancedSpatialAttention(T=3, variant="asa2").double()
    x = torch.randn(2, 3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    m1, m2 = asa.masks(x)
    (fast,) = torch.autograd.grad(asa.spatial_maps(x, m1).sum(), [x])
    expected = 0
    for conv, group, share in ((asa.spatial[0], m1 * x, 0.5), (asa.spatial[1], m2 * x, 0.5)):
        flat = group.flatten(1, 2)
        expected = expected + torch.sigmoid(conv(torch.stack([flat.mean(1) / share,
                                                               flat.amax(1)], 1))).sum()
    (slow,) = torch.autograd.grad(expected, [x])
    assert torch.allclose(fast, slow, atol=1e-12)


@pytest.mark.parametrize("variant", ["asa1", "asa2"])
def test_asa_under_bf16_autocast_computes_in_the_input_dtype(variant):
    torch.manual_seed(9)
    asa = AdvancedSpatialAttention(T=4, variant=variant, r=2)
    x = torch.randn(2, 4, 6, 9, 9).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = asa(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    for name, p in asa.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
