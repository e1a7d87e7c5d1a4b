"""Per-neuron monitoring: both engines' counts sum to their per-core spikes, a board's spike events
land in the same layout, the file round-trips, ``compare`` measures what it says, and the CLI
refuses cores the config does not use."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from asa_deploy.chip.config import READOUT_CORE, ChipConfig, CoreConfig, Destination, ReadoutConfig
from asa_deploy.chip.monitor import (
    Monitor,
    MonitorError,
    compare,
    compare_files,
    counts_from_spikes,
    format_comparison,
    select_cores,
)
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.cli import main
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.device.samna_adapter import SPIKE_DTYPE
from asa_deploy.errors import ArtifactError

# Each example simulates a few windows on both engines; `HYPOTHESIS_PROFILE=fuzz` runs thousands.
FUZZ = settings(max_examples=max(60, settings.default.max_examples), deadline=None)

# ---- small random configs ------------------------------------------------------------------------


def _core(core: int, input_shape, rng: np.random.Generator, *, k: int, stride: int, padding: int,
          c_out: int, w_max: int, destinations: list[Destination], kill: bool,
          decimator: int | None) -> CoreConfig:
    c, h, w = input_shape
    shape = (c_out, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)
    thr = int(rng.integers(1, 40))
    return CoreConfig(
        core=core, name=f"layer{core}", input_shape=tuple(input_shape),
        weights=rng.integers(-w_max // 2, w_max + 1, (c_out, c, k, k)).astype(np.int8),
        biases=np.zeros(c_out, np.int16), stride=(stride, stride), padding=(padding, padding),
        threshold_high=thr, threshold_low=int(rng.choice([-32768, -thr, -1])),
        return_to_zero=bool(rng.integers(0, 2)),
        neurons_initial_value=rng.integers(-thr, thr, shape).astype(np.int16),
        destinations=destinations,
        neurons_kill=(rng.random(shape) < 0.2) if kill else None, output_decimator=decimator)


@st.composite
def random_setups(draw, decimators: bool = False):
    """A 1-3 core chain with random geometry, weights, thresholds, resets, kills (and, for the
    exact engine, decimators), and random windows of events."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_cores = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(3, 8)), draw(st.integers(3, 8)))
    ids = draw(st.permutations(range(9)))[:n_cores]
    w_max = draw(st.sampled_from([5, 40, 127]))
    cores, current = [], shape
    for i, core_id in enumerate(ids):
        k = draw(st.integers(1, min(3, current[1], current[2])))
        stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, min(1, k - 1)))
        c_out = draw(st.integers(1, 4))
        out = (c_out, (current[1] + 2 * padding - k) // stride + 1,
               (current[2] + 2 * padding - k) // stride + 1)
        pool = 2 if i + 1 < n_cores and min(out[1:]) >= 2 and draw(st.booleans()) else 1
        last = i + 1 == n_cores
        dest = [Destination(READOUT_CORE)] if last else [Destination(ids[i + 1], pooling=pool)]
        decimator = draw(st.sampled_from([None, 0, 1])) if decimators else None
        cores.append(_core(core_id, current, rng, k=k, stride=stride, padding=padding, c_out=c_out,
                           w_max=w_max, destinations=dest, kill=draw(st.booleans()),
                           decimator=decimator))
        current = (c_out, out[1] // pool, out[2] // pool)
    config = ChipConfig(chip="speck2f", cores=cores, input_core=ids[0],
                        readout=ReadoutConfig(source_core=ids[-1],
                                              num_classes=draw(st.integers(1, cores[-1].weights.shape[0]))))
    config.validate()
    n_bins, dt = draw(st.integers(1, 6)), draw(st.integers(1, 50))
    windows = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(0, 150))
        ev = np.zeros(n, EVENT_DTYPE)
        ev["p"], ev["y"], ev["x"] = (rng.integers(0, s, n) for s in shape)
        ev["t"] = np.sort(rng.integers(0, n_bins * dt + dt, n))  # some past the window's end
        windows.append(EventWindow(ev, 0, n_bins, dt))
    monitored = sorted(draw(st.sets(st.sampled_from(ids), min_size=1)))
    return config, windows, monitored


def check_monitor(config: ChipConfig, windows: list[EventWindow], monitored: list[int],
                  engine: str) -> None:
    result = simulate(config, windows, engine, monitor=monitored)
    assert sorted(result.monitor) == monitored
    for core, counts in result.monitor.items():
        column = result.core_ids.index(core)
        assert counts.dtype.kind == "u"
        assert counts.shape == (len(windows), windows[0].n_bins, *config.core(core).neuron_shape)
        np.testing.assert_array_equal(counts.sum(axis=(1, 2, 3, 4), dtype=np.int64),
                                      result.spikes_per_core[:, column])
    source = config.readout.source_core
    if source in result.monitor:  # the readout counts are the monitored class channels
        channels = config.readout.class_channels()
        np.testing.assert_array_equal(
            result.monitor[source][:, :, channels].sum(axis=(3, 4), dtype=np.int64),
            result.output_spikes)


@FUZZ
@given(setup=random_setups())
def test_monitor_totals_equal_spikes_per_core_on_both_engines(setup):
    config, windows, monitored = setup
    for engine in ("fast", "exact"):
        check_monitor(config, windows, monitored, engine)


@FUZZ
@given(setup=random_setups(decimators=True))
def test_exact_monitor_counts_after_the_decimator(setup):
    check_monitor(*setup, "exact")


def test_counts_widen_past_255_per_bin():
    """One neuron, weight = threshold, 300 events in one bin: 300 spikes (uint8 would wrap)."""
    core = CoreConfig(core=0, name="n", input_shape=(1, 1, 1), weights=np.full((1, 1, 1, 1), 5, np.int8),
                      biases=np.zeros(1, np.int16), stride=(1, 1), padding=(0, 0), threshold_high=5,
                      threshold_low=-32768, return_to_zero=False,
                      neurons_initial_value=np.zeros((1, 1, 1), np.int16),
                      destinations=[Destination(READOUT_CORE)])
    config = ChipConfig(chip="speck2f", cores=[core], input_core=0,
                        readout=ReadoutConfig(source_core=0, num_classes=1)).validate()
    ev = np.zeros(300, EVENT_DTYPE)
    ev["t"] = np.arange(300)
    for engine in ("fast", "exact"):
        counts = simulate(config, [EventWindow(ev, 0, 2, 1000)], engine, monitor=[0]).monitor[0]
        assert counts.dtype == np.uint16 and counts[0, :, 0, 0, 0].tolist() == [300, 0]


# ---- a board's spike events ----------------------------------------------------------------------

def spikes(rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """Records (layer, feature, x, y, timestamp) as DeviceSession.read_spikes returns them."""
    return np.array(rows, dtype=SPIKE_DTYPE)


def test_counts_from_spikes_on_hand_made_events():
    shapes = {0: (2, 3, 4), 5: (1, 2, 2)}
    result = counts_from_spikes(spikes([
        (0, 1, 3, 2, 1000),   # core 0, channel 1, row 2, column 3, bin 0
        (0, 1, 3, 2, 1099),   # the same neuron and bin
        (0, 0, 0, 1, 1100),   # bin 1
        (5, 0, 1, 0, 1250),   # core 5, bin 2 (the last)
        (5, 0, 1, 0, 1400),   # after the window: counted in the last bin
        (0, 0, 0, 0, 999),    # before the window: dropped
        (13, 0, 0, 0, 1000),  # the DVS layer, not monitored
    ]), shapes, n_bins=3, dt_us=100, t_start=1000)
    assert (result.early, result.late, result.other_layers) == (1, 1, 1)
    assert set(result.counts) == {0, 5}
    c0, c5 = result.counts[0], result.counts[5]
    assert c0.shape == (3, 2, 3, 4) and c5.shape == (3, 1, 2, 2) and c0.dtype == np.uint8
    assert c0[0, 1, 2, 3] == 2 and c0[1, 0, 1, 0] == 1 and c0.sum() == 3
    assert c5[2, 0, 0, 1] == 2 and c5.sum() == 2


def test_counts_from_spikes_refuses_a_neuron_outside_the_core():
    with pytest.raises(MonitorError, match=r"core 0 at \(feature=0, y=3, x=0\) lies outside its "
                                           r"2x3x4 \(CxHxW\) neurons \(1 such spikes\)"):
        counts_from_spikes(spikes([(0, 0, 0, 3, 5)]), {0: (2, 3, 4)}, n_bins=1, dt_us=10)


def test_counts_from_spikes_match_the_simulator_layout():
    """Spikes written out of an exact simulation, one event per spike at its bin, come back as the
    simulator's counts: the same neuron order (channel, row, column) and bins."""
    rng = np.random.default_rng(0)
    config, windows, _ = _fixed_setup(rng)
    result = simulate(config, windows, "exact", monitor=config.core_ids())
    shapes = {c: config.core(c).neuron_shape for c in config.core_ids()}
    for i, window in enumerate(windows):
        dt, rows = window.dt_us, []
        for core, counts in result.monitor.items():
            for b, ch, y, x in zip(*np.nonzero(counts[i]), strict=True):
                rows += [(core, ch, x, y, b * dt + dt // 2)] * int(counts[i, b, ch, y, x])
        back = counts_from_spikes(spikes(rows), shapes, n_bins=window.n_bins, dt_us=dt)
        assert sum(int(c.sum()) for c in back.counts.values()) > 0
        for core in shapes:
            np.testing.assert_array_equal(back.counts[core], result.monitor[core][i])


def _fixed_setup(rng: np.random.Generator):
    def core(cid, shape, c_out, k, dest):
        return _core(cid, shape, rng, k=k, stride=1, padding=0, c_out=c_out, w_max=40,
                     destinations=dest, kill=False, decimator=None)

    cores = [core(2, (2, 6, 5), 3, 2, [Destination(4)]), core(4, (3, 5, 4), 2, 2, [Destination(READOUT_CORE)])]
    config = ChipConfig(chip="speck2f", cores=cores, input_core=2,
                        readout=ReadoutConfig(source_core=4, num_classes=2)).validate()
    ev = np.zeros(400, EVENT_DTYPE)
    ev["p"], ev["y"], ev["x"] = rng.integers(0, 2, 400), rng.integers(0, 6, 400), rng.integers(0, 5, 400)
    ev["t"] = np.sort(rng.integers(0, 400, 400))
    return config, [EventWindow(ev, 0, 4, 100), EventWindow(ev, 100, 4, 75)], None


# ---- the file and compare ------------------------------------------------------------------------

def _monitor(counts: dict[int, np.ndarray], *, config_hash: str = "c" * 64, labels=None,
             engine: str = "fast") -> Monitor:
    n = len(next(iter(counts.values())))
    return Monitor(counts=counts, core_names={c: f"layer{c}" for c in counts},
                   labels=np.arange(n) if labels is None else np.asarray(labels),
                   recordings=np.array([f"rec{i}.npy" for i in range(n)]), t_start=np.zeros(n, np.int64),
                   bin_us=np.full(n, 1000, np.int64), engine=engine, chip="speck2f",
                   data="synthetic:test", provenance={"made_from": {"chip_config.json": config_hash}})


def _random_counts(seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {0: rng.poisson(0.5, (4, 3, 2, 3, 3)).astype(np.uint8),
            3: rng.poisson(2.0, (4, 3, 5, 1, 1)).astype(np.uint8)}


def test_monitor_file_round_trips_and_widens_dtypes(tmp_path):
    counts = _random_counts()
    counts[3] = counts[3].astype(np.uint64)
    counts[3][0, 0, 0] = 40000  # saved as uint16, core 0 as uint8
    path = _monitor(counts).save(tmp_path / "m.npz")
    loaded = Monitor.load(path)
    assert loaded.counts[0].dtype == np.uint8 and loaded.counts[3].dtype == np.uint16
    for core in counts:
        np.testing.assert_array_equal(loaded.counts[core], counts[core])
    assert loaded.core_names == {0: "layer0", 3: "layer3"} and loaded.engine == "fast"
    assert loaded.recordings.tolist() == ["rec0.npy", "rec1.npy", "rec2.npy", "rec3.npy"]
    assert loaded.config_hash() == "c" * 64


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _rewrite(**changes):
    def corrupt(path: Path) -> None:
        with np.load(path) as found:
            arrays = {k: found[k] for k in found.files}
        arrays.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del arrays[key]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return corrupt


DAMAGES = {
    "empty": (lambda p: p.write_bytes(b""), "the monitor file is empty"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:300]), "cannot be read: truncated"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(500)), "not a zip archive"),
    "zip, then garbage": (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(300)), "cannot be read: truncated"),
    "one array": (lambda p: p.write_bytes(_npy_bytes(np.arange(3))), "not an .npz file: a single array (.npy)"),
    "JSON": (lambda p: p.write_text("{}"), "the monitor file is not an .npz file: not a zip archive"),
    "no format": (_rewrite(format=None), "not the monitor file: no format"),
    "another format": (_rewrite(format=np.array("x/2")), "format 'x/2', this asa_deploy reads"),
    "signed counts": (_rewrite(core0=np.zeros((4, 3, 2, 3, 3), np.int8)),
                      "'core0' must be unsigned counts [windows=4, bins, C, H, W]"),
    "a core missing": (_rewrite(core3=None), "lists core 3 but holds no 'core3'"),
    "an unlisted core": (_rewrite(core5=np.zeros((4, 3, 1, 1, 1), np.uint8)),
                         "arrays ['core5'] are not listed in 'cores'"),
    "labels short": (_rewrite(labels=np.zeros(2, np.int64)),
                     "field 'recordings' must hold one name per window (2), got shape (4,)"),
    "provenance not JSON": (_rewrite(provenance=np.array("{")), "its provenance is not valid JSON"),
    "engine a number": (_rewrite(engine=np.array(3)), "field 'engine' is not a string"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_monitor_file_names_itself_and_the_fix(tmp_path, damage):
    path = _monitor(_random_counts()).save(tmp_path / "m.npz")
    corrupt, problem = DAMAGES[damage]
    corrupt(path)
    with pytest.raises(ArtifactError) as info:
        Monitor.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message, message
    assert message.endswith("--monitor CORES`)") and "\n" not in message


def test_compare_identical_and_scaled(tmp_path):
    counts = _random_counts()
    same = compare(_monitor(counts), _monitor({c: a.copy() for c, a in counts.items()}))
    scaled = compare(_monitor(counts), _monitor({c: (3 * a).astype(np.uint8) for c, a in counts.items()}))
    for report, scale in ((same, 1.0), (scaled, 3.0)):
        for r in report["cores"].values():
            assert r["cosine"] == pytest.approx(1.0)
            assert r["count_ratio"] == pytest.approx(scale)
            neurons = np.array(r["per_neuron"]["cosine"], dtype=float)
            ratios = np.array(r["per_neuron"]["count_ratio"], dtype=float)
            active = np.array(r["per_neuron"]["spikes_a"]) > 0
            np.testing.assert_allclose(neurons[active], 1.0)
            np.testing.assert_allclose(ratios[active], scale)
            assert np.isnan(neurons[~active]).all()  # silent in both: null in the JSON
            np.testing.assert_allclose(np.array(r["per_channel"]["cosine"], dtype=float), 1.0)
            np.testing.assert_allclose(np.array(r["per_channel"]["count_ratio"], dtype=float), scale)
            assert r["neuron_cosine"]["min"] == pytest.approx(1.0)
            assert r["neuron_count_ratio"]["median"] == pytest.approx(scale)
            assert r["neurons_active"]["only_a"] == r["neurons_active"]["only_b"] == 0
    assert "ratio = B / A" in format_comparison(scaled)


def test_compare_counts_neurons_active_in_one_file_only():
    a = {0: np.zeros((2, 1, 1, 1, 2), np.uint8)}
    b = {0: np.zeros((2, 1, 1, 1, 2), np.uint8)}
    a[0][0, 0, 0, 0, 0] = 2      # neuron 0: only in A
    b[0][1, 0, 0, 0, 1] = 1      # neuron 1: only in B
    r = compare(_monitor(a), _monitor(b))["cores"]["0"]
    assert r["per_neuron"]["cosine"] == [[[0.0, 0.0]]]
    assert r["per_neuron"]["count_ratio"] == [[[0.0, None]]]  # 0/2, and 1/0 undefined
    assert r["neurons_active"] == {"a": 1, "b": 1, "both": 0, "only_a": 1, "only_b": 1, "neither": 0}
    assert r["cosine"] == 0.0 and r["count_ratio"] == 0.5


def test_compare_refuses_other_configs_windows_or_cores():
    counts = _random_counts()
    with pytest.raises(MonitorError, match=r"A and B cannot be compared: they were made from "
                                           r"different chip configs \(chip_config.json sha256 "
                                           r"cccccccccccc\.\.\. vs dddddddddddd\.\.\.\)"):
        compare(_monitor(counts), _monitor(counts, config_hash="d" * 64))
    with pytest.raises(MonitorError, match=r"their windows differ \(1 of 4 in labels\); first at "
                                           r"window 2: A rec2.npy from 0 us, bins of 1000 us, label 2; "
                                           r"B rec2.npy from 0 us, bins of 1000 us, label 7"):
        compare(_monitor(counts), _monitor(counts, labels=[0, 1, 7, 3]))
    with pytest.raises(MonitorError, match=r"A holds 4 windows of 3 bins .*, B 2 of 3"):
        compare(_monitor(counts), _monitor({c: a[:2] for c, a in counts.items()}))
    with pytest.raises(MonitorError, match=r"no core in common \(A: cores \[0\], B: \[3\]\)"):
        compare(_monitor({0: counts[0]}), _monitor({3: counts[3]}))
    bare = _monitor(counts)
    bare.provenance = {}
    with pytest.raises(MonitorError, match="B records no chip_config.json in its provenance"):
        compare(_monitor(counts), bare)


def test_compare_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    counts = _random_counts()
    a = _monitor(counts).save(tmp_path / "fast.npz")
    b = _monitor({c: (2 * x).astype(np.uint8) for c, x in counts.items()}, engine="exact").save(
        tmp_path / "exact.npz")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "(fast)" in out and "(exact)" in out and "2.000" in out
    report = json.loads((tmp_path / "compare-fast-vs-exact.json").read_text())
    assert report["cores"]["3"]["count_ratio"] == 2.0 and report["a"]["engine"] == "fast"
    assert main(["compare", str(a), str(b), "--json", "--out", str(tmp_path / "c.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "per_neuron" not in printed["cores"]["0"] and (tmp_path / "c.json").is_file()
    other = _monitor(counts, config_hash="d" * 64).save(tmp_path / "other.npz")
    assert main(["compare", str(a), str(other)]) == 2
    assert "different chip configs" in capsys.readouterr().err


def test_compare_files_default_name(tmp_path):
    a = _monitor(_random_counts()).save(tmp_path / "x.npz")
    assert compare_files(a, a)["file"] == str(tmp_path / "compare-x-vs-x.json")


# ---- the --monitor option ------------------------------------------------------------------------

@pytest.fixture
def bare_run(tmp_path) -> Path:
    """A run directory holding only a chip_config.json of two cores (no model, no windows)."""
    rng = np.random.default_rng(0)
    config, _, _ = _fixed_setup(rng)
    config.save(tmp_path / "chip_config.json")
    return tmp_path


def test_select_cores():
    config, _, _ = _fixed_setup(np.random.default_rng(0))
    assert select_cores(config, "all", "c.json") == [2, 4]
    assert select_cores(config, (4,), "c.json") == [4]
    with pytest.raises(MonitorError, match=r"--monitor names cores 0, 5, which c.json does not use; "
                                           r"it uses cores 2 \(layer2\), 4 \(layer4\): name some "
                                           r"of those, or --monitor all"):
        select_cores(config, (0, 2, 5), "c.json")


def test_simulate_refuses_a_core_the_config_does_not_use(bare_run, capsys):
    assert main(["simulate", str(bare_run), "--monitor", "2,3"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"asa-deploy simulate: error: --monitor names core 3, which "
                           f"{bare_run / 'chip_config.json'} does not use; it uses cores 2 "
                           f"(layer2), 4 (layer4): name some of those, or --monitor all")
    assert not list(bare_run.glob("*.npz")) and not (bare_run / "sim.json").exists()
    assert main(["simulate", str(bare_run), "--monitor-out", str(bare_run / "m.npz")]) == 2
    assert "--monitor-out needs --monitor CORES" in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [
    ("9", "'9' in '9' is not a core id; cores are numbered 0..8"),
    ("0,,1", "expected 'all' or core ids separated by commas, e.g. 0,3, got '0,,1'"),
    ("-1", "'-1' in '-1' is not a core id"),
    ("core0", "'core0' in 'core0' is not a core id"),
    ("", "expected 'all' or core ids separated by commas"),
])
def test_monitor_option_is_checked_while_parsing(bare_run, capsys, text, message):
    assert main(["simulate", str(bare_run), "--monitor", text]) == 2
    assert f"argument --monitor: {message}" in capsys.readouterr().err


@example(text="3,1,3")
@given(text=st.text(alphabet="0123456789, al", max_size=8))
def test_monitor_cores_parse_or_refuse(text):
    from argparse import ArgumentTypeError

    from asa_deploy.cli_args import monitor_cores

    try:
        value = monitor_cores(text)
    except ArgumentTypeError:
        return
    assert value == "all" or (value and list(value) == sorted(set(value))
                              and all(0 <= c <= 8 for c in value))


def test_simulate_monitor_on_a_trained_run_then_compare(tmp_path, capsys, caplog):
    """The whole path: train, compile, simulate --monitor on both engines, compare."""
    from asa_deploy.train import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                      eval_windows=2, seed=0, params={"c": 4, "fc": 8}), run, progress=False,
          verbose=False)
    assert main(["compile", str(run), "--chip", "speck2f", "--bias", "drop"]) == 0
    for engine in ("fast", "exact"):
        assert main(["simulate", str(run), "--engine", engine, "--windows", "2", "--monitor", "all",
                     "--monitor-out", str(run / f"monitor-{engine}.npz")]) == 0
        assert f"wrote {run / f'monitor-{engine}.npz'}" in capsys.readouterr().out
        sim = json.loads((run / "sim.json").read_text())[engine]
        monitor = Monitor.load(run / f"monitor-{engine}.npz")
        assert monitor.engine == engine and sorted(monitor.counts) == [0, 1, 2, 3, 4]
        assert {str(c): int(a.sum()) for c, a in monitor.counts.items()} == sim["spikes_per_core"]["total"]
        assert monitor.provenance["engine"] == engine and monitor.provenance["windows"] == 2
        assert monitor.provenance["made_from"]["chip_config.json"] == (
            sim["provenance"]["made_from"]["chip_config.json"])
        assert monitor.n_windows == sim["n_windows"]
    assert main(["compare", str(run / "monitor-fast.npz"), str(run / "monitor-exact.npz")]) == 0
    report = json.loads((run / "compare-monitor-fast-vs-monitor-exact.json").read_text())
    assert report["cores"]["0"]["spikes"]["a"] > 0 and 0 < report["cores"]["0"]["cosine"] <= 1
    # the default file; another engine replacing it is warned about
    assert main(["simulate", str(run), "--windows", "2", "--monitor", "0"]) == 0
    assert main(["simulate", str(run), "--engine", "exact", "--windows", "2", "--monitor", "0"]) == 0
    assert "replacing" in caplog.text and "pass --monitor-out FILE to keep both" in caplog.text
    assert sorted(Monitor.load(run / "monitor.npz").counts) == [0]
    # windows that differ are refused
    assert main(["simulate", str(run), "--windows", "1", "--monitor", "0"]) == 0
    assert main(["compare", str(run / "monitor.npz"), str(run / "monitor-fast.npz")]) == 2
    assert "windows of 5 bins" in capsys.readouterr().err
