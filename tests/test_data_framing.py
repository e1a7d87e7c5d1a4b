"""Framing: counts, window placement, RCS determinism and the majority-vote test protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asa_deploy.data import (
    EVENT_DTYPE,
    EventDataset,
    FramedDataset,
    FrameSpec,
    frame_events,
    majority_vote,
    rcs_window_start,
    recording_accuracy,
    test_window_starts,
    whole_recording_spec,
)

SENSOR = (34, 34, 2)


def _events(n: int, t0: int, t1: int, *, seed: int = 0, width: int = 34) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, width, n)
    ev["t"] = np.sort(rng.integers(t0, t1 + 1, n))
    ev["t"][0], ev["t"][-1] = t0, t1
    ev["p"] = rng.integers(0, 2, n)
    return ev


def _dataset(durations: list[int]) -> EventDataset:
    recs = [_events(400, 1000, 1000 + d, seed=i) for i, d in enumerate(durations)]
    return EventDataset.from_arrays(
        "test:arrays",
        recs,
        [i % 3 for i in range(len(recs))],
        class_names=["a", "b", "c"],
        sensor_size=SENSOR,
        frame_spec=FrameSpec(T=5, dt_us=10_000),
    )


def test_frame_counts_match_events_in_window():
    ev = _events(5000, 0, 300_000)
    spec = FrameSpec(T=10, dt_us=20_000)
    frames = frame_events(ev, SENSOR, spec, t_start=50_000)
    assert frames.shape == (10, 2, 34, 34) and frames.dtype == np.float32
    inside = (ev["t"] >= 50_000) & (ev["t"] < 250_000)
    assert frames.sum() == inside.sum()
    # bin 3 holds [110 ms, 130 ms); polarity 1 at one pixel
    sel = (ev["t"] >= 110_000) & (ev["t"] < 130_000) & (ev["p"] == 1)
    x, y = ev["x"][sel][0], ev["y"][sel][0]
    expected = np.count_nonzero(sel & (ev["x"] == x) & (ev["y"] == y))
    assert frames[3, 1, y, x] == expected
    assert frames[:, 0].sum() == np.count_nonzero(inside & (ev["p"] == 0))


def test_frame_downsample_binarize_and_merged_polarity():
    ev = np.zeros(4, dtype=EVENT_DTYPE)
    ev["x"] = [0, 3, 3, 127]
    ev["y"] = [0, 2, 2, 127]
    ev["t"] = [0, 1, 2, 3]
    ev["p"] = [0, 1, 1, 0]
    spec = FrameSpec(T=1, dt_us=10, downsample=4)
    frames = frame_events(ev, (128, 128, 2), spec, 0)
    assert frames.shape == (1, 2, 32, 32)
    assert frames[0, 0, 0, 0] == 1 and frames[0, 1, 0, 0] == 2 and frames[0, 0, 31, 31] == 1
    binary = frame_events(
        ev, (128, 128, 2), FrameSpec(T=1, dt_us=10, downsample=4, binarize=True), 0
    )
    assert binary[0, 1, 0, 0] == 1
    merged = frame_events(ev, (128, 128, 1), spec, 0)
    assert merged.shape == (1, 1, 32, 32) and merged[0, 0, 0, 0] == 3


def test_rcs_windows_stay_inside_recording():
    ev = _events(1000, 5_000, 305_000)
    spec = FrameSpec(T=10, dt_us=25_000)
    rng = np.random.default_rng(0)
    starts = [rcs_window_start(ev, spec, rng) for _ in range(500)]
    assert min(starts) >= 5_000
    assert max(starts) + spec.window_us <= 305_001
    assert max(starts) - min(starts) > 40_000  # really random, spread over the 50 ms of slack
    short = _events(100, 7_000, 100_000)
    assert rcs_window_start(short, spec, rng) == 7_000


def test_test_windows_cover_the_recording():
    ev = _events(1000, 5_000, 305_000)
    spec = FrameSpec(T=10, dt_us=25_000)
    starts = test_window_starts(ev, spec, n_windows=10)
    assert len(starts) == 10 and starts == sorted(starts)
    assert starts[0] == 5_000 and starts[-1] + spec.window_us == 305_001
    assert all(5_000 <= s and s + spec.window_us <= 305_001 for s in starts)
    assert test_window_starts(_events(50, 7, 999), spec, n_windows=3) == [7, 7, 7]


def test_whole_recording_spec_covers_every_event():
    ev = _events(3000, 1_234, 1_451_234)
    spec = whole_recording_spec(ev, FrameSpec(T=16, dt_us=50_000, downsample=2))
    assert spec.T == 16 and spec.downsample == 2
    assert spec.dt_us == -(-1_450_001 // 16)
    assert frame_events(ev, SENSOR, spec, 1_234).sum() == len(ev)


def test_rcs_deterministic_per_seed_epoch_index():
    ds = _dataset([200_000] * 6)
    framed = FramedDataset(ds, [5, 0, 3], ds.frame_spec, mode="rcs", seed=7)
    first = [framed[i][0] for i in range(3)]
    backwards = [framed[i][0] for i in (2, 1, 0)][::-1]  # order of access does not matter
    again = FramedDataset(ds, [5, 0, 3], ds.frame_spec, mode="rcs", seed=7)
    for a, b, c in zip(first, backwards, (again[i][0] for i in range(3)), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    framed.set_epoch(1)
    assert not all(torch.equal(a, framed[i][0]) for i, a in enumerate(first))
    other_seed = FramedDataset(ds, [5, 0, 3], ds.frame_spec, mode="rcs", seed=8)
    assert not all(torch.equal(a, other_seed[i][0]) for i, a in enumerate(first))
    frames, label, recording = framed[1]
    assert frames.shape == (5, 2, 34, 34) and frames.dtype == torch.float32
    assert (label, recording) == (0, 1)


def test_test_mode_items_and_labels():
    ds = _dataset([100_000, 200_000, 300_000, 400_000])
    framed = FramedDataset(ds, np.array([3, 1]), ds.frame_spec, mode="test", n_windows=4)
    assert len(framed) == 8
    assert framed.labels.tolist() == [0] * 4 + [1] * 4
    assert framed.recordings.tolist() == [0] * 4 + [1] * 4
    items = [framed[i] for i in range(len(framed))]
    assert [it[2] for it in items] == framed.recordings.tolist()
    assert [it[1] for it in items] == framed.labels.tolist()
    events, _ = ds[3]
    starts = test_window_starts(events, ds.frame_spec, 4)
    expected = frame_events(events, SENSOR, ds.frame_spec, starts[2])
    assert np.array_equal(items[2][0].numpy(), expected)
    with pytest.raises(IndexError):
        framed[8]


def test_whole_mode_counts_all_events():
    ds = _dataset([123_456, 50_000])
    framed = FramedDataset(ds, [0, 1], ds.frame_spec, mode="whole")
    assert len(framed) == 2
    assert framed[0][0].sum().item() == len(ds[0][0]) == 400


def test_majority_vote_and_strict_recording_accuracy():
    recording = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    labels = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 2, 2, 0, 0, 0, 2, 1])
    assert majority_vote(pred, recording, n_classes=3).tolist() == [1, 0, 0]
    # rec 0: 3/4 correct; rec 1: 2/4 is not a strict majority; rec 2: 1/3
    assert recording_accuracy(pred, labels, recording) == pytest.approx(1 / 3)
    assert recording_accuracy(labels, labels, recording) == 1.0
