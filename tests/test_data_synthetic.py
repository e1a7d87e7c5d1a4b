"""The embedded synthetic dataset: deterministic, well-formed, noisy in the ways the paper's noise
features need, and with classes that really differ."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from asa_deploy.data import synthetic
from asa_deploy.data.events import EVENT_DTYPE, check_events
from asa_deploy.data.framing import FrameSpec
from asa_deploy.data.synthetic import (
    PRESETS,
    SyntheticSet,
    hot_pixels,
    make_recording,
    make_recordings,
)
from asa_deploy.errors import DataSpecError

TINY = PRESETS["gesture-tiny"]
# Only the object: isolates the class signal from the noise sources.
OBJECT_ONLY = replace(
    TINY, background_rate_hz=(0.0, 0.0), n_hot_pixels=0, flicker_prob=0.0, distractor_prob=0.0
)


@pytest.fixture(scope="module")
def tiny() -> SyntheticSet:
    return make_recordings("gesture-tiny", seed=0)


def _counts(events: np.ndarray, sensor: tuple[int, int]) -> np.ndarray:
    """Events per pixel, as a [H, W] image."""
    img = np.zeros(sensor[::-1], dtype=np.int64)
    np.add.at(img, (events["y"], events["x"]), 1)
    return img


def _recordings(preset, label: int, n: int, seed: int = 7) -> list[np.ndarray]:
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
    return [make_recording(preset, label, rng) for rng in rngs]


def test_same_seed_gives_byte_identical_recordings(tiny: SyntheticSet) -> None:
    again = make_recordings("gesture-tiny", seed=0)
    assert len(again.recordings) == len(tiny.recordings)
    for a, b in zip(tiny.recordings, again.recordings, strict=True):
        assert a.tobytes() == b.tobytes()
    assert np.array_equal(again.labels, tiny.labels)


def test_different_seeds_differ(tiny: SyntheticSet) -> None:
    other = make_recordings("gesture-tiny", seed=1)
    differing = [
        a.tobytes() != b.tobytes() for a, b in zip(tiny.recordings, other.recordings, strict=True)
    ]
    assert all(differing)


def test_recording_i_does_not_depend_on_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Growing a preset appends recordings; it must not reshuffle the existing ones."""
    small = make_recordings("gesture-tiny", seed=3)
    monkeypatch.setitem(PRESETS, "gesture-tiny", replace(TINY, recordings_per_class=4))
    big = make_recordings("gesture-tiny", seed=3)
    assert len(big.recordings) == len(small.recordings) + TINY.n_classes
    for a, b in zip(small.recordings, big.recordings, strict=False):
        assert a.tobytes() == b.tobytes()
    assert np.array_equal(big.labels[: len(small.labels)], small.labels)


def test_recordings_are_well_formed(tiny: SyntheticSet) -> None:
    width, height, pols = tiny.sensor_size
    assert (width, height, pols) == (128, 128, 2)
    for i, events in enumerate(tiny.recordings):
        assert events.dtype == EVENT_DTYPE
        check_events(events, tiny.sensor_size, f"recording {i}")  # sorted t, inside the sensor
        assert events["t"][-1] < TINY.duration_us
        assert set(np.unique(events["p"]).tolist()) == {0, 1}
        assert 2_000 < len(events) < 40_000


def test_every_class_is_present_and_labelled(tiny: SyntheticSet) -> None:
    assert tiny.labels.dtype == np.int64
    assert len(tiny.labels) == len(tiny.recordings) == TINY.n_recordings
    assert len(tiny.class_names) == TINY.n_classes == 6
    counts = np.bincount(tiny.labels, minlength=len(tiny.class_names))
    assert counts.tolist() == [TINY.recordings_per_class] * TINY.n_classes


def test_default_frame_spec_fits_the_recording_with_room_for_rcs() -> None:
    gesture = PRESETS["gesture"]
    assert gesture.frame_spec == FrameSpec(T=10, dt_us=100_000, downsample=4)
    assert gesture.sensor_size == (128, 128, 2)
    for preset in PRESETS.values():
        assert preset.frame_spec.window_us < preset.duration_us


def test_hot_pixels_fire_far_more_than_the_median_pixel(tiny: SyntheticSet) -> None:
    locations = hot_pixels(TINY)
    assert locations.shape == (TINY.n_hot_pixels, 2)
    for events in tiny.recordings[:6]:
        img = _counts(events, TINY.sensor)
        hot = img[locations[:, 1], locations[:, 0]]
        typical = max(1.0, float(np.median(img[img > 0])))
        assert hot.min() > 10 * typical, (hot, typical)


def test_background_activity_reaches_every_part_of_the_sensor(tiny: SyntheticSet) -> None:
    """Each 32x32 tile holds events, which one moving object alone cannot do."""

    def tiles_with_events(events: np.ndarray) -> int:
        tiles = np.zeros((4, 4), dtype=bool)
        tiles[events["y"] // 32, events["x"] // 32] = True
        return int(tiles.sum())

    assert all(tiles_with_events(e) == 16 for e in tiny.recordings)
    assert max(tiles_with_events(e) for e in _recordings(OBJECT_ONLY, 0, 4)) < 16


def test_flicker_covers_a_large_area_at_high_rate() -> None:
    """The paper's noise features need large, high-rate background areas."""
    quiet = replace(OBJECT_ONLY, flicker_prob=0.0)
    flicker = replace(OBJECT_ONLY, flicker_prob=1.0)
    duration = TINY.duration_us * 1e-6
    for seed in range(3):
        without = make_recording(quiet, 0, np.random.default_rng(seed))
        with_ = make_recording(flicker, 0, np.random.default_rng(seed))
        busy = _counts(with_, TINY.sensor) - _counts(without, TINY.sensor)
        # 36x36 px at least, 30 % textured: hundreds of pixels at several events per second
        assert np.count_nonzero(busy >= 2) > 200
        assert busy.sum() / np.count_nonzero(busy) / duration > 2.0


def _x_velocity(events: np.ndarray, bins: int = 6) -> float:
    """Slope (px/s) of the event centroid's x over time."""
    edges = np.linspace(events["t"][0], events["t"][-1] + 1, bins + 1)
    idx = np.digitize(events["t"], edges) - 1
    cx = np.array([events["x"][idx == b].mean() for b in range(bins)])
    centres = (edges[:-1] + edges[1:]) / 2 * 1e-6
    return float(np.polyfit(centres, cx, 1)[0])


def test_left_and_right_classes_move_in_opposite_directions() -> None:
    right = [_x_velocity(e) for e in _recordings(OBJECT_ONLY, 0, 5)]
    left = [_x_velocity(e) for e in _recordings(OBJECT_ONLY, 1, 5)]
    assert min(right) > 20 and max(left) < -20, (right, left)


def test_direction_survives_the_noise() -> None:
    """With every noise source on, the average centroid motion still tells right from left."""
    right = np.mean([_x_velocity(e) for e in _recordings(TINY, 0, 6)])
    left = np.mean([_x_velocity(e) for e in _recordings(TINY, 1, 6)])
    assert right > 5 and left < -5, (right, left)


def test_on_events_lead_and_off_events_trail() -> None:
    """A bright object moving right: ON events (leading edge) lie right of OFF events."""
    for events in _recordings(OBJECT_ONLY, 0, 4):
        idx = events["t"] // 50_000
        gaps = [
            events["x"][(idx == b) & (events["p"] == 1)].mean()
            - events["x"][(idx == b) & (events["p"] == 0)].mean()
            for b in np.unique(idx)
        ]
        assert np.mean(gaps) > 1.0, gaps


def test_circling_classes_turn_opposite_ways() -> None:
    """Sign of the angular momentum of the centroid around its mean (y points down: cw > 0)."""

    def turning(events: np.ndarray, bins: int = 12) -> float:
        idx = np.minimum(events["t"] * bins // (events["t"][-1] + 1), bins - 1)
        c = np.array(
            [[events["x"][idx == b].mean(), events["y"][idx == b].mean()] for b in range(bins)]
        )
        r, v = c[:-1] - c.mean(axis=0), np.diff(c, axis=0)
        return float(np.sum(r[:, 0] * v[:, 1] - r[:, 1] * v[:, 0]))

    cw = [turning(e) for e in _recordings(OBJECT_ONLY, 4, 4)]
    ccw = [turning(e) for e in _recordings(OBJECT_ONLY, 5, 4)]
    assert min(cw) > 0 > max(ccw), (cw, ccw)


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(DataSpecError, match="gesture-tiny"):
        make_recordings("no-such-preset")


def test_bad_label_is_refused() -> None:
    with pytest.raises(ValueError, match="label"):
        make_recording(TINY, TINY.n_classes, np.random.default_rng(0))


def test_module_exports_presets() -> None:
    assert "gesture" in synthetic.PRESETS and "gesture-tiny" in synthetic.PRESETS
    assert PRESETS["gesture-tiny"].n_recordings < PRESETS["gesture"].n_recordings
