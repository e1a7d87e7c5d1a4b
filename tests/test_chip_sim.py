"""The two chip simulators: hand-computed cases, the DVS layer, and where theory says they agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asa_deploy.chip.config import (
    READOUT_CORE,
    ChipConfig,
    CoreConfig,
    Destination,
    DvsLayerConfig,
    ReadoutConfig,
)
from asa_deploy.chip.sim import ENGINES, EventWindow, SimResult, simulate
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.errors import BadRecordingError, ChipConfigError

NO_CLAMP = -32768


def make_core(core: int, input_shape: tuple[int, int, int], weights: np.ndarray, *, stride: int = 1,
              padding: int = 0, thr: int = 5, thr_low: int = NO_CLAMP, rtz: bool = False,
              init: np.ndarray | None = None, destinations: list[Destination] | None = None,
              **extra) -> CoreConfig:
    """A core whose neuron shape follows from its input, kernel, stride and padding."""
    c, h, w = input_shape
    k = weights.shape[-1]
    shape = (weights.shape[0], (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)
    return CoreConfig(
        core=core, name=f"core{core}", input_shape=input_shape, weights=np.asarray(weights, np.int8),
        biases=np.zeros(weights.shape[0], np.int16), stride=(stride, stride), padding=(padding, padding),
        threshold_high=thr, threshold_low=thr_low, return_to_zero=rtz,
        neurons_initial_value=np.zeros(shape, np.int16) if init is None else init,
        destinations=destinations if destinations is not None else [Destination(READOUT_CORE)], **extra)


def make_config(cores: list[CoreConfig], readout_core: int, num_classes: int, *,
                dvs: DvsLayerConfig | None = None) -> ChipConfig:
    return ChipConfig(chip="speck2f", cores=cores, dvs=dvs,
                      input_core=None if dvs is not None else cores[0].core,
                      readout=ReadoutConfig(source_core=readout_core, num_classes=num_classes)).validate()


def make_events(x, y, p, t) -> np.ndarray:
    ev = np.zeros(len(t), EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"], ev["t"] = x, y, p, t
    return ev


def one_per_bin(rng: np.random.Generator, shape: tuple[int, int, int], n_bins: int, dt: int) -> np.ndarray:
    """One random event in each bin: the regime where exact and fast can be compared by theory."""
    p, h, w = shape
    return make_events(rng.integers(0, w, n_bins), rng.integers(0, h, n_bins), rng.integers(0, p, n_bins),
                       np.arange(n_bins) * dt + rng.integers(0, dt, n_bins))


def single_neuron(weight: int, *, thr: int = 5, thr_low: int = NO_CLAMP, rtz: bool = False,
                  **extra) -> ChipConfig:
    """One input pixel, one neuron, 1x1 kernel: the hand-computable case."""
    return make_config([make_core(0, (1, 1, 1), np.full((1, 1, 1, 1), weight), thr=thr, thr_low=thr_low,
                                  rtz=rtz, **extra)], 0, 1)


def neuron_events(n: int, dt: int = 10) -> EventWindow:
    """n events on the single pixel, one per bin."""
    return EventWindow(make_events(np.zeros(n), np.zeros(n), np.zeros(n), np.arange(n) * dt), 0, n, dt)


def per_bin(config: ChipConfig, window: EventWindow, engine: str = "exact") -> list[int]:
    return simulate(config, [window], engine).output_spikes[0, :, 0].tolist()


# ---- hand-computed cases (exact) -------------------------------------------------------------------

def test_exact_integrates_and_subtracts():
    # v: 3, 6 -> spike -> 1, 4, 7 -> spike -> 2
    result = simulate(single_neuron(3), [neuron_events(4)], "exact")
    assert result.output_spikes[0, :, 0].tolist() == [0, 1, 0, 1]
    assert result.latency_events.tolist() == [2]
    assert result.synops_per_core.tolist() == [[4]]


def test_exact_clamps_at_threshold_low():
    # channel 0 weighs -4, channel 1 weighs +3; threshold_low -5
    config = make_config([make_core(0, (2, 1, 1), np.array([[[[-4]], [[3]]]]), thr=5, thr_low=-5)], 0, 1)
    p = [0, 0, 1, 1, 1, 1]
    window = EventWindow(make_events(np.zeros(6), np.zeros(6), p, np.arange(6) * 10), 0, 6, 10)
    # v: -4, -8 -> -5 (clamped), -2, 1, 4, 7 -> spike; without the clamp v would end at 4, silent
    assert per_bin(config, window) == [0, 0, 0, 0, 0, 1]


def test_exact_return_to_zero_versus_subtract():
    window = neuron_events(5)
    assert per_bin(single_neuron(3, rtz=False), window) == [0, 1, 0, 1, 1]  # 3 6* 4 7* 5*
    assert per_bin(single_neuron(3, rtz=True), window) == [0, 1, 0, 1, 0]   # 3 6* 3 6* 3


def test_exact_fires_at_most_once_per_update():
    window = neuron_events(2)
    # 12 -> one spike, residual 7 -> 19 -> one spike, residual 14
    assert per_bin(single_neuron(12), window, "exact") == [1, 1]
    # the time-stepped model emits floor(v / thr) at once: 12 // 5, then (2 + 12) // 5
    assert per_bin(single_neuron(12), window, "fast") == [2, 2]


def test_exact_decimator_passes_every_second_spike():
    config = single_neuron(5, output_decimator=0)  # N = 2
    result = simulate(config, [neuron_events(6)], "exact")
    assert result.output_spikes[0, :, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert result.spikes_per_core.tolist() == [[3]]
    assert result.latency_events.tolist() == [2]


def test_exact_decimator_follows_channel_visit_order():
    # both channels fire on every event, channel 0 first: every second spike is channel 1's
    core = make_core(0, (1, 1, 1), np.full((2, 1, 1, 1), 5), output_decimator=0)
    result = simulate(make_config([core], 0, 2), [neuron_events(3)], "exact")
    assert result.output_spikes[0].tolist() == [[0, 1], [0, 1], [0, 1]]


def test_exact_is_depth_first():
    """Core 0 fires channels 0 and 1 on each event and sends them to cores 1 and 2; core 1 relays
    channel 0 into channel 2 of core 2. Depth-first, core 2 sees channel 2 (via core 1), 0, then 1:
    4, 8 -> spike (3), -7 -> -5. Breadth-first it would see 0, 1, 2: 4, -6 -> -5, -1, silent."""
    config = make_config([
        make_core(0, (1, 1, 1), np.full((2, 1, 1, 1), 5), destinations=[Destination(1), Destination(2)]),
        make_core(1, (2, 1, 1), np.array([[[[5]], [[0]]]]), destinations=[Destination(2, feature_shift=2)]),
        make_core(2, (3, 1, 1), np.array([[[[4]], [[-10]], [[4]]]]), thr_low=-5),
    ], 2, 1)
    assert per_bin(config, neuron_events(1)) == [1]


def test_killed_neuron_never_spikes_but_costs_synops():
    config = single_neuron(5, neurons_kill=np.ones((1, 1, 1), bool))
    for engine in ENGINES:
        result = simulate(config, [neuron_events(3)], engine)
        assert result.spikes_per_core.tolist() == [[0]]
        assert result.synops_per_core.tolist() == [[3]]
        assert result.predictions.tolist() == [-1]
        assert result.latency_events.tolist() == [-1]


def test_fast_leak_adds_bias_once_per_bin():
    config = single_neuron(0, leak_enable=True)
    config.cores[0].biases = np.array([2], np.int16)
    empty = EventWindow(np.zeros(0, EVENT_DTYPE), 0, 5, 10)
    assert per_bin(config, empty, "fast") == [0, 0, 1, 0, 1]  # 2 4 6* 3 5*


# ---- exact versus fast where theory fixes the relation ---------------------------------------------

def test_single_core_engines_agree_with_one_event_per_bin():
    """Weights in [0, thr], initial states in [0, thr), subtract reset: v never leaves [0, 2 thr), so
    each update fires at most once in both models and no clamp is reached."""
    rng = np.random.default_rng(1)
    thr = 20
    weights = rng.integers(0, thr + 1, (4, 2, 3, 3))
    init = rng.integers(0, thr, (4, 8, 8)).astype(np.int16)
    config = make_config([make_core(0, (2, 8, 8), weights, padding=1, thr=thr, init=init)], 0, 4)
    windows = [EventWindow(one_per_bin(rng, (2, 8, 8), 40, 100), 0, 40, 100) for _ in range(3)]
    exact, fast = simulate(config, windows, "exact"), simulate(config, windows, "fast")
    assert exact.spikes_per_core.sum() > 20
    np.testing.assert_array_equal(exact.output_spikes, fast.output_spikes)
    np.testing.assert_array_equal(exact.spikes_per_core, fast.spikes_per_core)
    np.testing.assert_array_equal(exact.synops_per_core, fast.synops_per_core)


def _chain(rng: np.random.Generator, thr: int, w_max: int) -> ChipConfig:
    """(2,8,8) -3x3 p1-> 4x8x8 -3x3 s2 p1-> 4x4x4 -pool 2-> 2x2 conv -> 3 classes."""
    return make_config([
        make_core(0, (2, 8, 8), rng.integers(0, w_max + 1, (4, 2, 3, 3)), padding=1, thr=thr,
                  destinations=[Destination(1)]),
        make_core(1, (4, 8, 8), rng.integers(0, w_max + 1, (4, 4, 3, 3)), stride=2, padding=1, thr=thr,
                  destinations=[Destination(2, pooling=2)]),
        make_core(2, (4, 2, 2), rng.integers(0, w_max + 1, (3, 4, 2, 2)), thr=thr),
    ], 2, 3)


def _branch_merge(rng: np.random.Generator, thr: int, w_max: int) -> ChipConfig:
    """The DVS layer feeds cores 0 and 1, whose outputs meet in core 2 (feature_shift 3)."""
    dvs = DvsLayerConfig(sensor_shape=(2, 8, 8), destinations=[0, 1])
    return make_config([
        make_core(0, (2, 8, 8), rng.integers(0, w_max + 1, (3, 2, 3, 3)), padding=1, thr=thr,
                  destinations=[Destination(2, pooling=2)]),
        make_core(1, (2, 8, 8), rng.integers(0, w_max + 1, (2, 2, 2, 2)), stride=2, thr=thr,
                  destinations=[Destination(2, feature_shift=3)]),
        make_core(2, (5, 4, 4), rng.integers(0, w_max + 1, (3, 5, 4, 4)), thr=thr),
    ], 2, 3, dvs=dvs)


@pytest.mark.parametrize("build", [_chain, _branch_merge])
def test_multi_core_engines_agree_without_bursts(build):
    """Weights in [0, thr], zero initial states, subtract reset: after every exact update v < thr,
    so a neuron's spikes up to any event are floor(total input / thr), which is also what fast
    has emitted at the end of each bin. Equal inputs per bin give equal spikes per bin, core by
    core, however many events share a bin."""
    rng = np.random.default_rng(2)
    config = build(rng, thr=40, w_max=40)
    p, h, w = config.input_shape()
    windows = [EventWindow(make_events(rng.integers(0, w, 300), rng.integers(0, h, 300),
                                       rng.integers(0, p, 300), np.sort(rng.integers(0, 3000, 300))),
                           0, 30, 100) for _ in range(3)]
    exact, fast = simulate(config, windows, "exact"), simulate(config, windows, "fast")
    assert exact.output_spikes.sum() > 100
    np.testing.assert_array_equal(exact.output_spikes, fast.output_spikes)
    np.testing.assert_array_equal(exact.spikes_per_core, fast.spikes_per_core)
    np.testing.assert_array_equal(exact.synops_per_core, fast.synops_per_core)


@pytest.mark.parametrize("build", [_chain, _branch_merge])
def test_multi_core_exact_lags_fast_with_bursts(build):
    """Weights up to 3 thr: fast emits floor(v / thr) spikes at once where exact emits one and keeps
    the residual. With positive weights exact's cumulative spikes can only lag (v >= 0 bounds them
    by floor(input / thr), fast's count, and less input downstream gives fewer spikes), so
    exact <= fast per bin cumulatively, per core and in synops."""
    rng = np.random.default_rng(2)
    config = build(rng, thr=40, w_max=120)
    windows = [EventWindow(one_per_bin(rng, config.input_shape(), 60, 100), 0, 60, 100) for _ in range(3)]
    exact, fast = simulate(config, windows, "exact"), simulate(config, windows, "fast")
    assert exact.spikes_per_core.sum() < fast.spikes_per_core.sum()
    assert np.all(exact.spikes_per_core <= fast.spikes_per_core)
    assert np.all(exact.synops_per_core <= fast.synops_per_core)
    assert np.all(np.cumsum(exact.output_spikes, axis=1) <= np.cumsum(fast.output_spikes, axis=1))


def test_synops_match_between_engines_and_brute_force():
    rng = np.random.default_rng(3)
    core = make_core(0, (2, 9, 9), rng.integers(-128, 128, (3, 2, 3, 3)), stride=2, padding=1, thr=30000)
    config = make_config([core], 0, 3)
    n = 300
    events = make_events(rng.integers(0, 9, n), rng.integers(0, 9, n), rng.integers(0, 2, n),
                         np.sort(rng.integers(0, 1000, n)))
    windows = [EventWindow(events, 0, 10, 100)]
    exact, fast = simulate(config, windows, "exact"), simulate(config, windows, "fast")

    def updates(y: int, x: int) -> int:
        return 3 * sum(1 for ky in range(3) for kx in range(3)
                       if (y + 1 - ky) % 2 == 0 and 0 <= (y + 1 - ky) // 2 < 5
                       and (x + 1 - kx) % 2 == 0 and 0 <= (x + 1 - kx) // 2 < 5)

    expected = sum(updates(int(e["y"]), int(e["x"])) for e in events)
    assert exact.synops_per_core.tolist() == fast.synops_per_core.tolist() == [[expected]]


# ---- the DVS layer -------------------------------------------------------------------------------------

def landed(dvs: DvsLayerConfig, events: np.ndarray, engine: str = "exact") -> tuple[list, int]:
    """Where each surviving event lands, as sorted (c, y, x), and how many were dropped.

    The probe is one fully connected core with a one-hot weight per input position, so output
    channel c*H*W + y*W + x spikes once for each event arriving at (c, y, x)."""
    c, h, w = dvs.output_shape()
    assert h == w, "the probe needs a square input"
    weights = np.eye(c * h * w, dtype=np.int8).reshape(c * h * w, c, h, w)
    config = make_config([make_core(0, (c, h, w), weights, thr=1, thr_low=-1)], 0, c * h * w, dvs=dvs)
    result = simulate(config, [EventWindow(events, 0, 1, 1000)], engine)
    counts = result.output_spikes[0].sum(axis=0)
    where = [tuple(int(v) for v in np.unravel_index(j, (c, h, w)))
             for j in np.flatnonzero(counts) for _ in range(counts[j])]
    return sorted(where), int(result.dropped_events[0])


def sensor_events(points: list[tuple[int, int, int]]) -> np.ndarray:
    """Events at (p, y, x), all in the first bin."""
    p, y, x = (np.array(v) for v in zip(*points, strict=True))
    return make_events(x, y, p, np.arange(len(points)))


@pytest.mark.parametrize("engine", ENGINES)
def test_dvs_killed_pixel(engine):
    dvs = DvsLayerConfig(sensor_shape=(2, 4, 4), destinations=[0], killed_pixels=[(1, 2)])
    events = sensor_events([(0, 1, 2), (1, 1, 2), (1, 2, 1), (0, 3, 3)])
    assert landed(dvs, events, engine) == ([(0, 3, 3), (1, 2, 1)], 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_dvs_polarity_selection_and_merge(engine):
    events = sensor_events([(0, 0, 0), (1, 1, 1), (1, 2, 2)])
    on_only = DvsLayerConfig(sensor_shape=(2, 4, 4), destinations=[0], off_channel=False)
    assert landed(on_only, events, engine) == ([(0, 1, 1), (0, 2, 2)], 1)
    off_only = DvsLayerConfig(sensor_shape=(2, 4, 4), destinations=[0], on_channel=False)
    assert landed(off_only, events, engine) == ([(0, 0, 0)], 2)
    merged = DvsLayerConfig(sensor_shape=(2, 4, 4), destinations=[0], merge=True)
    assert landed(merged, events, engine) == ([(0, 0, 0), (0, 1, 1), (0, 2, 2)], 0)
    merged_on = DvsLayerConfig(sensor_shape=(2, 4, 4), destinations=[0], merge=True, off_channel=False)
    assert landed(merged_on, events, engine) == ([(0, 1, 1), (0, 2, 2)], 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_dvs_pooling_drops_partial_pixels(engine):
    dvs = DvsLayerConfig(sensor_shape=(2, 9, 9), destinations=[0], pooling=(2, 2))
    events = sensor_events([(1, 5, 3), (1, 4, 2), (0, 0, 7), (0, 8, 0), (0, 2, 8)])
    # 9 // 2 = 4 pooled pixels: rows / columns 8 have no whole pooled pixel
    assert landed(dvs, events, engine) == ([(0, 0, 3), (1, 2, 1), (1, 2, 1)], 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_dvs_roi_shift_and_mirror(engine):
    roi = dict(sensor_shape=(2, 8, 8), destinations=[0], origin=(2, 3), cut=(5, 6))
    events = sensor_events([(0, 2, 3), (1, 5, 6), (0, 3, 4), (0, 1, 3), (1, 6, 4), (0, 4, 7)])
    inside = [(0, 0, 0), (0, 1, 1), (1, 3, 3)]
    assert landed(DvsLayerConfig(**roi), events, engine) == (inside, 3)
    mirror_y = DvsLayerConfig(**roi, mirror=(True, False))
    assert landed(mirror_y, events, engine) == (sorted((c, 3 - y, x) for c, y, x in inside), 3)
    mirror_x = DvsLayerConfig(**roi, mirror=(False, True))
    assert landed(mirror_x, events, engine) == (sorted((c, y, 3 - x) for c, y, x in inside), 3)


# ---- inputs the engines refuse ---------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_event_outside_the_chip_input_names_the_recording(engine):
    config = make_config([make_core(0, (2, 4, 4), np.ones((1, 2, 1, 1)))], 0, 1)
    window = EventWindow(make_events([1, 4], [0, 0], [0, 1], [0, 1]), 0, 1, 10, recording="rec7")
    with pytest.raises(BadRecordingError, match=r"rec7: event \(x=4, y=0, p=1\) outside the chip input 2x4x4"):
        simulate(config, [window], engine)


def test_engines_refuse_what_they_cannot_model():
    with pytest.raises(ChipConfigError, match="engine exact"):
        simulate(single_neuron(5, output_decimator=1), [neuron_events(1)], "fast")
    with pytest.raises(ChipConfigError, match="slow clock"):
        simulate(single_neuron(5, leak_enable=True), [neuron_events(1)], "exact")
    with pytest.raises(ValueError, match="fast"):
        simulate(single_neuron(5), [neuron_events(1)], "specksim")


# ---- SimResult -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_result_summary_concatenate_and_silence(engine):
    config = single_neuron(3)
    loud = neuron_events(4)
    loud.label, loud.recording = 0, "loud"
    late = make_events([0, 0, 0], [0, 0, 0], [0, 0, 0], [5, 45, 100])  # two lie past the window
    silent = EventWindow(late, 0, 4, 10, label=0, recording="silent")
    first, second = simulate(config, [loud], engine), simulate(config, [silent], engine)
    assert second.predictions.tolist() == [-1] and second.latency_events.tolist() == [-1]
    assert second.input_events.tolist() == [1]
    both = SimResult.concatenate([first, second])
    assert both.recordings == ["loud", "silent"]
    assert both.predictions.tolist() == [0, -1]
    assert both.accuracy_window() == 0.5
    np.testing.assert_array_equal(both.output_spikes, np.concatenate([first.output_spikes,
                                                                      second.output_spikes]))
    summary = json.loads(json.dumps(both.to_dict(), allow_nan=False))
    assert summary["engine"] == engine and summary["n_windows"] == 2
    assert summary["spikes_per_core"]["total"] == {"0": 2}
    assert summary["synops_per_core"]["total"] == {"0": 5}
    assert summary["input_events"] == 5 and summary["dropped_events"] == 0
    assert summary["mean_latency_events"] == 2.0


# ---- input-driven vs network-driven synops ------------------------------------------------------------

def _random_window(rng: np.random.Generator, config: ChipConfig, n: int) -> EventWindow:
    p, h, w = config.input_shape()
    return EventWindow(make_events(rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, p, n),
                                   np.sort(rng.integers(0, 3000, n))), 0, 30, 100)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), branch=st.booleans(), w_low=st.sampled_from([-40, 0]),
       n=st.integers(0, 200))
def test_synops_split_sums_to_synops_on_random_configs(seed, branch, w_low, n):
    """Input-driven + network-driven = all synops per window and core, in both engines; cores fed
    only by the input (or only by cores) have no synops of the other kind."""
    rng = np.random.default_rng(seed)
    config = (_branch_merge if branch else _chain)(rng, thr=40, w_max=60)
    for core in config.cores:  # some negative weights too
        core.weights = np.asarray(rng.integers(w_low, 61, core.weights.shape), np.int8)
    windows = [_random_window(rng, config, n) for _ in range(2)]
    entry = [config.core_ids().index(c) for c in config.entry_cores()]
    inner = [i for i in range(len(config.cores)) if i not in entry]
    for engine in ENGINES:
        result = simulate(config, windows, engine)
        np.testing.assert_array_equal(result.input_synops_per_core + result.network_synops_per_core,
                                      result.synops_per_core)
        assert np.all(result.network_synops_per_core[:, entry] == 0)
        assert np.all(result.input_synops_per_core[:, inner] == 0)
        assert np.all(result.network_synops_per_core >= 0)
        summary = result.to_dict()
        for key in ("input_synops_per_core", "network_synops_per_core"):
            column = getattr(result, key)
            assert summary[key]["total"] == {str(c): int(column[:, i].sum())
                                             for i, c in enumerate(result.core_ids)}


@pytest.mark.parametrize("engine", ENGINES)
def test_input_only_network_has_no_network_driven_synops(engine):
    rng = np.random.default_rng(5)
    config = make_config([make_core(0, (2, 8, 8), rng.integers(0, 30, (4, 2, 3, 3)), padding=1, thr=20)], 0, 4)
    result = simulate(config, [_random_window(rng, config, 100)], engine)
    assert result.synops_per_core.sum() > 0
    np.testing.assert_array_equal(result.input_synops_per_core, result.synops_per_core)
    assert result.network_synops_per_core.tolist() == [[0]]


def _hand_config() -> ChipConfig:
    """Core 0: (1,5,5) -3x3 p1-> 4x5x5, only channel 0's kernel centre is non-zero (= threshold),
    so an input event at (y, x) fires exactly neuron (0, y, x). Core 1 takes it pooled by 2 on a
    (4,2,2) input, 3x3 p1 -> 2x2x2, silent (threshold out of reach)."""
    w0 = np.zeros((4, 1, 3, 3), np.int64)
    w0[0, 0, 1, 1] = 5
    return make_config([
        make_core(0, (1, 5, 5), w0, padding=1, thr=5, destinations=[Destination(1, pooling=2)]),
        make_core(1, (4, 2, 2), np.ones((2, 4, 3, 3), np.int64), padding=1, thr=100),
    ], 1, 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_synops_split_hand_computed(engine):
    """Event at (2, 2): 4 channels x 3x3 offsets = 36 input-driven synops; its spike lands on core 1
    at (1, 1): offsets ky, kx in {1, 2} stay inside the 2x2 map, 2 channels x 2x2 = 8. Event at the
    corner (0, 0): 4 x 2x2 = 16 (padding), its spike at (0, 0) of core 1: 2 x 2x2 = 8 again. A
    corner event (4, 4): 16 more, but its spike pools to (2, 2), beyond core 1's input: dropped."""
    config = _hand_config()
    window = EventWindow(make_events([2, 0, 4], [2, 0, 4], [0, 0, 0], [0, 10, 20]), 0, 3, 10)
    result = simulate(config, [window], engine)
    assert result.spikes_per_core.tolist() == [[3, 0]]
    assert result.input_synops_per_core.tolist() == [[36 + 16 + 16, 0]]
    assert result.network_synops_per_core.tolist() == [[0, 8 + 8]]
    assert result.synops_per_core.tolist() == [[68, 16]]


def test_event_costs_from_the_config_alone():
    """What compile prints: per input event into core 0, 4 x (2+3+3+3+2)^2 / 25 on average and 36 at
    most; per spike of core 0 into core 1, 8 for the 4x4 source positions that land (pooling 2 on a
    5x5 map drops the last row and column), so 16 x 8 / 25 on average."""
    from asa_deploy.chip.spec import load_chip_spec
    from asa_deploy.chip.synops import event_costs, input_cuts

    costs = event_costs(_hand_config())
    assert [(c.source, c.target, c.max) for c in costs] == [(None, 0, 36), (0, 1, 8)]
    assert costs[0].mean == pytest.approx(4 * 13 * 13 / 25)
    assert costs[1].mean == pytest.approx(16 * 8 / 25)
    lines = input_cuts(_hand_config(), load_chip_spec("speck2f"))
    assert lines[0] == ("core 0 (core0) takes the input events: 4 channels x 3x3 kernel offsets = 36 "
                        "synops per event (kernel 3, stride 1x1)")
    assert "stride 2 in core0: 16 per event (x0.44)" in lines[1]
    assert "2 channels -> 18 per event" in lines[2]
    assert "no DVS layer" in lines[3]
