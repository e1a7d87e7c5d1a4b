"""Hot-pixel detection (asa_deploy.data.hot_pixels) and its kills in the compiled DVS layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import two_core_net

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.data.hot_pixels import detect_hot_pixels
from asa_deploy.errors import AsaDeployError, CompileError
from asa_deploy.fold.strategies import input_mask

SIZE = 32
DURATION_US = 1_000_000
# (y, x): two in the quiet background, one on the moving edge's path, two adjacent to each other
PLANTED = [(3, 28), (12, 16), (27, 4), (28, 4), (30, 30)]


def _events(y, x, t, rng) -> np.ndarray:
    out = np.zeros(len(t), EVENT_DTYPE)
    out["y"], out["x"], out["t"], out["p"] = y, x, t, rng.integers(0, 2, len(t))
    return out


def planted_recording(seed: int = 0) -> np.ndarray:
    """Background noise (~2 events per pixel), a vertical edge sweeping across rows 8..23 ten
    times (1 event per pixel per sweep), and the PLANTED pixels with 50x their neighbours' events."""
    rng = np.random.default_rng(seed)
    n_bg = 2 * SIZE * SIZE
    parts = [_events(rng.integers(0, SIZE, n_bg), rng.integers(0, SIZE, n_bg),
                     rng.integers(0, DURATION_US, n_bg), rng)]
    sweep_us = DURATION_US // 10
    ys, xs = np.meshgrid(np.arange(8, 24), np.arange(SIZE), indexing="ij")
    for k in range(10):
        t = k * sweep_us + xs.ravel() * (sweep_us // SIZE) + rng.integers(0, 100, xs.size)
        parts.append(_events(ys.ravel(), xs.ravel(), t, rng))
    for y, x in PLANTED:
        n = 50 * (12 if 8 <= y < 24 else 2)  # 50x the edge's or the background's events
        parts.append(_events(np.full(n, y), np.full(n, x), rng.integers(0, DURATION_US, n), rng))
    events = np.concatenate(parts)
    return events[np.argsort(events["t"], kind="stable")]


def test_finds_exactly_the_planted_pixels_not_the_edge():
    found = detect_hot_pixels([planted_recording(0), planted_recording(1)], (SIZE, SIZE, 2))
    assert found.pixels == sorted(PLANTED)
    assert found.recordings == 2 and found.seconds == pytest.approx(2.0, rel=1e-3)
    assert all(rate > 90 for rate in found.rates_hz)
    # the edge alone (no hot pixels) flags nothing, at 5x5 neither
    clean = planted_recording(0)
    clean = clean[~np.isin(clean["y"] * SIZE + clean["x"], [y * SIZE + x for y, x in PLANTED])]
    assert detect_hot_pixels([clean], (SIZE, SIZE, 2)).pixels == []
    assert detect_hot_pixels([clean], (SIZE, SIZE, 2), size=5).pixels == []


def test_a_lower_factor_or_margin_flags_the_edge_a_higher_misses_weak_hot_pixels():
    recording = [planted_recording(0)]
    assert len(detect_hot_pixels(recording, (SIZE, SIZE, 2), factor=0.5, margin_hz=0).pixels) > 50
    strict = detect_hot_pixels(recording, (SIZE, SIZE, 2), factor=10, margin_hz=200)
    assert strict.pixels == [(12, 16)]  # only the one at 50x the edge's rate


def test_compile_kills_hot_pixels_and_the_exact_simulator_drops_their_events():
    recording = planted_recording(0)
    hot = detect_hot_pixels([recording], (SIZE, SIZE, 2)).pixels
    sensor = SensorInput((2, SIZE, SIZE), 1)
    plain = compile_network(two_core_net(), "speck2f", input_shape=(2, SIZE, SIZE), sensor=sensor)
    killed = compile_network(two_core_net(), "speck2f", input_shape=(2, SIZE, SIZE), sensor=sensor,
                             hot_pixels=hot)
    assert killed.config.dvs.killed_pixels == sorted(PLANTED)
    assert plain.config.dvs.killed_pixels == []
    assert any(n.startswith("hot pixels: 5 sensor pixels killed") for n in killed.notes)
    window_us = 100_000
    events = recording[recording["t"] < window_us]
    window = [EventWindow(events, 0, 10, window_us // 10)]
    on_hot = int(np.isin(events["y"].astype(int) * SIZE + events["x"],
                         [y * SIZE + x for y, x in PLANTED]).sum())
    assert on_hot > 50
    before = simulate(plain.config, window, "exact")
    after = simulate(killed.config, window, "exact")
    assert int(after.dropped_events.sum()) - int(before.dropped_events.sum()) == on_hot


def test_refuses_a_chip_without_pixel_kill_and_no_dvs():
    with pytest.raises(CompileError, match="dynapcnn cannot kill input pixels"):
        compile_network(two_core_net(), "dynapcnn", input_shape=(2, SIZE, SIZE),
                        sensor=SensorInput((2, SIZE, SIZE), 1), hot_pixels=[(3, 28)])
    with pytest.raises(CompileError, match="drop --no-dvs"):
        compile_network(two_core_net(), "speck2f", input_shape=(2, SIZE, SIZE), hot_pixels=[(3, 28)])


def test_refuses_killing_every_input_pixel():
    every = [(y, x) for y in range(SIZE) for x in range(SIZE)]
    with pytest.raises(CompileError, match=r"cover all 1024 sensor pixels that reach the network"):
        compile_network(two_core_net(), "speck2f", input_shape=(2, SIZE, SIZE),
                        sensor=SensorInput((2, SIZE, SIZE), 1), hot_pixels=every)
    # all but one is allowed
    config = compile_network(two_core_net(), "speck2f", input_shape=(2, SIZE, SIZE),
                             sensor=SensorInput((2, SIZE, SIZE), 1), hot_pixels=every[1:]).config
    assert len(config.dvs.killed_pixels) == SIZE * SIZE - 1


def test_input_mask_that_keeps_nothing_is_refused():
    with pytest.raises(AsaDeployError, match="would kill every input pixel"):
        input_mask(torch.full((4, 8, 8), float("nan")), (2, 32, 32))
    with pytest.raises(AsaDeployError, match="would kill every input pixel"):
        input_mask(torch.full((4, 8, 8), float("inf")), (2, 32, 32))
    assert input_mask(torch.rand(4, 8, 8), (2, 32, 32), keep=1e-9).sum() >= 1  # at least one
