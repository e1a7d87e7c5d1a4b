"""The samna adapter: translation into a recording stand-in (not a chip, not samna's classes),
detection of PyPI's samna stub, device-string parsing, and every runtime path (open, reset, windows,
time base, slow clock, readout, power, pixel kill, absent boards) against the samna conformance
stand-in (tests/samna_conformance), which implements only what public sources confirm: a misspelt or
unconfirmed samna call fails here. Nothing here is a board."""

from __future__ import annotations

import copy
import sys
import time
import types

import numpy as np
import pytest
import sinabs.layers as sl
import torch
import torch.nn as nn
from samna_conformance import install

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.config import Destination
from asa_deploy.chip.sim import EventWindow
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.device import samna_adapter
from asa_deploy.device.samna_adapter import (
    DEVICE_KINDS,
    DeviceError,
    DeviceSession,
    apply_chip_config,
    list_devices,
    parse_device,
    pixel_kill_events,
    power_by_rail,
    readout_class_channels,
    require_samna,
    samna_status,
    translate,
    verify_applied,
)
from asa_deploy.errors import AsaDeployError, ChipConfigError


class RecordingConfig:
    """Stand-in for samna's configuration object: attributes and ``[i]`` items spring into being
    on first access, and every assignment is recorded as ``path -> value``."""

    def __init__(self, path: str = "", log: dict | None = None):
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_log", {} if log is None else log)
        object.__setattr__(self, "_items", {})

    def _child(self, suffix: str) -> str:
        return f"{self._path}{suffix}" if suffix.startswith("[") or not self._path else \
            f"{self._path}.{suffix}"

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        child = RecordingConfig(self._child(name), self._log)
        object.__setattr__(self, name, child)
        return child

    def __setattr__(self, name: str, value) -> None:
        self._log[self._child(name)] = value
        object.__setattr__(self, name, value)

    def __getitem__(self, index: int):
        if index not in self._items:
            self._items[index] = RecordingConfig(self._child(f"[{index}]"), self._log)
        return self._items[index]

    @property
    def log(self) -> dict:
        return self._log


def _network(n_out: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
        sl.SumPool2d(2), nn.Flatten(), nn.Linear(4 * 16 * 16, n_out, bias=False),
        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))


def _compile(chip: str, n_out: int = 3):
    return compile_network(_network(n_out), chip, input_shape=(2, 32, 32),
                           sensor=SensorInput((2, 128, 128), 4)).config


@pytest.fixture(scope="module")
def speck2f_config():
    return _compile("speck2f")


@pytest.fixture(scope="module")
def dynapcnn_config():
    return _compile("dynapcnn")


def _recorded(config, chip, **kw) -> dict:
    target = RecordingConfig()
    apply_chip_config(config, target, chip=chip, **kw)
    return target.log


def test_translation_writes_fields_to_a_recording_stand_in_not_a_chip(speck2f_config):
    cfg = speck2f_config
    log = _recorded(cfg, "speck2f")
    first, last = cfg.cores
    a, b = f"cnn_layers[{first.core}]", f"cnn_layers[{last.core}]"
    # weights: ours [o, i, ky, kx] -> samna [o][i][x][y]
    w = np.asarray(log[f"{a}.weights"])
    assert w.shape == (4, 2, 3, 3)
    o, i, ky, kx = 3, 1, 0, 2
    assert w[o][i][kx][ky] == first.weights[o, i, ky, kx]
    assert not np.array_equal(w, first.weights)  # really transposed (this kernel is not symmetric)
    np.testing.assert_array_equal(w, first.weights.transpose(0, 1, 3, 2))
    # FC core: kernel 16x16 over the pooled 16x16 map, transposed as well
    np.testing.assert_array_equal(np.asarray(log[f"{b}.weights"]), last.weights.transpose(0, 1, 3, 2))
    assert log[f"{a}.biases"] == [0, 0, 0, 0]
    assert np.asarray(log[f"{a}.neurons_initial_value"]).shape == (4, 32, 32)  # [c][x][y]
    assert log[f"{a}.threshold_high"] == first.threshold_high
    assert log[f"{a}.threshold_low"] == first.threshold_low
    assert log[f"{b}.threshold_high"] == last.threshold_high
    assert log[f"{a}.return_to_zero"] is first.return_to_zero
    assert log[f"{a}.leak_enable"] is False and log[f"{a}.leak_internal_slow_clk_enable"] is False
    # dimensions: input (C, H, W), neuron shape before pooling, padding / stride / kernel
    assert (log[f"{a}.dimensions.input_shape.size.x"], log[f"{a}.dimensions.input_shape.size.y"],
            log[f"{a}.dimensions.input_shape.feature_count"]) == (32, 32, 2)
    assert (log[f"{a}.dimensions.output_shape.size.x"], log[f"{a}.dimensions.output_shape.size.y"],
            log[f"{a}.dimensions.output_shape.feature_count"]) == (32, 32, 4)
    assert (log[f"{a}.dimensions.padding.x"], log[f"{a}.dimensions.padding.y"]) == (1, 1)
    assert (log[f"{a}.dimensions.stride.x"], log[f"{a}.dimensions.stride.y"]) == (1, 1)
    assert log[f"{a}.dimensions.kernel_size"] == 3
    assert log[f"{b}.dimensions.kernel_size"] == 16
    assert (log[f"{b}.dimensions.output_shape.size.x"],
            log[f"{b}.dimensions.output_shape.feature_count"]) == (1, 3)
    # destinations: core 0 -> last core with 2x2 sum pooling, unused slots disabled
    assert log[f"{a}.destinations[0].layer"] == last.core
    assert log[f"{a}.destinations[0].enable"] is True
    assert log[f"{a}.destinations[0].pooling"] == 2
    assert log[f"{a}.destinations[0].feature_shift"] == 0
    assert log[f"{a}.destinations[1].enable"] is False
    assert log[f"{b}.destinations[0].enable"] is False and log[f"{b}.destinations[1].enable"] is False
    # monitoring: classes come from the last core's spikes; decimator off; no kill bits on speck2f
    assert log[f"{b}.monitor_enable"] is True and log[f"{a}.monitor_enable"] is False
    assert log[f"{a}.output_decimator_enable"] is False
    assert not any("kill_bit" in key for key in log)
    assert log["readout.enable"] is False


def test_translation_writes_the_dvs_layer_to_a_recording_stand_in(speck2f_config):
    log = _recorded(speck2f_config, "speck2f")
    d = "dvs_layer"
    assert (log[f"{d}.pooling.x"], log[f"{d}.pooling.y"]) == (4, 4)
    assert (log[f"{d}.origin.x"], log[f"{d}.origin.y"]) == (0, 0)
    assert (log[f"{d}.cut.x"], log[f"{d}.cut.y"]) == (31, 31)
    assert (log[f"{d}.mirror.x"], log[f"{d}.mirror.y"]) == (False, False)
    assert log[f"{d}.merge"] is False
    assert log[f"{d}.on_channel"] is True and log[f"{d}.off_channel"] is True
    assert log[f"{d}.destinations[0].layer"] == speck2f_config.dvs.destinations[0]
    assert log[f"{d}.destinations[0].enable"] is True
    assert log[f"{d}.destinations[1].enable"] is False
    assert log[f"{d}.pass_sensor_events"] is False  # the host feeds events unless told otherwise
    assert log[f"{d}.monitor_enable"] is False
    live = _recorded(speck2f_config, "speck2f", sensor_events=True, monitor_input=True)
    assert live[f"{d}.pass_sensor_events"] is True and live[f"{d}.monitor_enable"] is True
    # killed pixels are events, not configuration fields
    assert not any("kill" in key for key in log)


def test_translation_every_write_is_an_attribute_assignment_and_reads_back(speck2f_config):
    writes = translate(speck2f_config, chip="speck2f")
    target = RecordingConfig()
    apply_chip_config(speck2f_config, target, chip="speck2f")
    assert {w.name for w in writes} == set(target.log)
    assert verify_applied(target, writes) == []
    # a binding that lost a nested write is caught by the read-back
    target.cnn_layers[0].dimensions.stride.x = 2
    assert any("cnn_layers[0].dimensions.stride.x" in p for p in verify_applied(target, writes))


def test_killed_pixels_become_kill_sensor_pixel_events(speck2f_config):
    cfg = copy.deepcopy(speck2f_config)
    assert pixel_kill_events(cfg) == []
    cfg.dvs.killed_pixels = [(0, 5), (127, 3)]
    assert pixel_kill_events(cfg, chip="speck2f") == [(0, 5), (127, 3)]  # (y, x), sensor coordinates


def test_decimator_written_on_speck2f_refused_on_dynapcnn(speck2f_config, dynapcnn_config):
    cfg = copy.deepcopy(speck2f_config)
    cfg.cores[-1].output_decimator = 3
    log = _recorded(cfg, "speck2f")
    b = f"cnn_layers[{cfg.cores[-1].core}]"
    assert log[f"{b}.output_decimator_enable"] is True
    assert log[f"{b}.output_decimator_interval"] == 3
    assert not any("decimator" in k for k in _recorded(dynapcnn_config, "dynapcnn"))
    cfg = copy.deepcopy(dynapcnn_config)
    cfg.cores[-1].output_decimator = 3
    with pytest.raises(ChipConfigError, match="no output decimator"):
        apply_chip_config(cfg, RecordingConfig(), chip="dynapcnn")


def test_kill_bits_refused_on_speck2f_written_on_dynapcnn(speck2f_config, dynapcnn_config):
    cfg = copy.deepcopy(speck2f_config)
    cfg.cores[0].neurons_kill = np.zeros((4, 32, 32), dtype=bool)
    with pytest.raises(ChipConfigError, match="kill bits"):
        apply_chip_config(cfg, RecordingConfig(), chip="speck2f")
    cfg = copy.deepcopy(dynapcnn_config)
    kill = np.zeros((4, 32, 32), dtype=bool)
    kill[2, 5, 7] = True  # (c, y, x)
    cfg.cores[0].neurons_kill = kill
    log = _recorded(cfg, "dynapcnn")
    a = f"cnn_layers[{cfg.cores[0].core}]"
    bits = np.asarray(log[f"{a}.neurons_value_kill_bit"])  # [c][x][y]
    assert bits.shape == (4, 32, 32) and bits.sum() == 1 and bits[2][7][5]
    assert np.asarray(log[f"{a}.weights_kill_bit"]).shape == (4, 2, 3, 3)
    assert log[f"{a}.biases_kill_bit"] == [False] * 4
    assert "readout.enable" not in log and "dvs_layer.pass_sensor_events" not in log
    assert f"{a}.leak_internal_slow_clk_enable" not in log


def test_config_for_another_chip_is_refused(speck2f_config):
    with pytest.raises(ChipConfigError, match="compiled for 'speck2f'"):
        apply_chip_config(speck2f_config, RecordingConfig(), chip="dynapcnn")


def test_readout_erratum_class_k_reads_channel_4k_on_speck2f():
    cfg = _compile("speck2f", n_out=9)
    source = cfg.core(cfg.readout.source_core)
    assert readout_class_channels(cfg, chip="speck2f") == list(range(9))  # monitored spikes
    cfg.readout.num_classes, cfg.readout.use_readout_block, cfg.readout.threshold = 3, True, 7
    source.destinations = [Destination(12)]
    with pytest.raises(ChipConfigError, match="erratum"):  # channel_stride 1 with the block
        readout_class_channels(cfg, chip="speck2f")
    cfg.readout.channel_stride = 4
    assert readout_class_channels(cfg, chip="speck2f") == [0, 4, 8]
    log = _recorded(cfg, "speck2f")
    assert log["readout.enable"] is True and log["readout.threshold"] == 7
    # as SynSense's readout notebook: 1x1 output, one class per channel, pin events, no low-pass
    assert log["readout.readout_configuration_sel"] == 3 and log["readout.output_mode_sel"] == 1
    assert log["readout.low_pass_filter_disable"] is True
    assert "readout.low_pass_filter32_not16" not in log
    assert log["readout.readout_pin_monitor_enable"] is True
    assert log["readout.monitor_enable"] is False  # True would stop all Spike monitoring
    log32 = _recorded(cfg, "speck2f", readout_average=32)
    assert log32["readout.low_pass_filter_disable"] is False
    assert log32["readout.low_pass_filter32_not16"] is True
    with pytest.raises(ChipConfigError, match="1, 16, 32"):
        _recorded(cfg, "speck2f", readout_average=8)
    b = f"cnn_layers[{source.core}]"
    assert log[f"{b}.destinations[0].layer"] == 12 and log[f"{b}.destinations[0].enable"] is True
    assert log[f"{b}.monitor_enable"] is True  # compile monitors the output core anyway
    cfg.readout.num_classes = 4  # class 3 would read channel 12 of a 9-channel core
    with pytest.raises(ChipConfigError, match="12"):
        apply_chip_config(cfg, RecordingConfig(), chip="speck2f")


def test_readout_block_refused_on_a_chip_without_one(dynapcnn_config):
    cfg = copy.deepcopy(dynapcnn_config)
    cfg.readout.use_readout_block = True
    cfg.core(cfg.readout.source_core).destinations = [Destination(12)]
    with pytest.raises(ChipConfigError, match="has none"):
        apply_chip_config(cfg, RecordingConfig(), chip="dynapcnn")


def test_samna_status_reports_the_pypi_stub_without_importing_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "samna", raising=False)  # in case another test left a stand-in
    assert "samna" not in sys.modules
    status = samna_status()
    assert "samna" not in sys.modules
    if status.available:
        pytest.skip("a real samna is installed here")
    assert "stub" in status.reason or "not installed" in status.reason
    assert "pip install" in status.reason
    assert "https://gitlab.com/api/v4/projects/27423070/packages/pypi/simple" in status.reason


def test_require_samna_raises_device_error_quickly_without_network(monkeypatch):
    monkeypatch.delitem(sys.modules, "samna", raising=False)
    if samna_status().available:
        pytest.skip("a real samna is installed here")
    begin = time.perf_counter()
    with pytest.raises(DeviceError, match="pip install") as info:
        require_samna()
    assert time.perf_counter() - begin < 1.0
    assert isinstance(info.value, AsaDeployError)
    assert "samna" not in sys.modules


def test_device_session_refuses_before_touching_samna(speck2f_config, monkeypatch):
    monkeypatch.delitem(sys.modules, "samna", raising=False)
    with pytest.raises(DeviceError, match="dynapcnn"):
        DeviceSession("dynapcnndevkit:0", speck2f_config)
    if samna_status().available:
        return
    session = DeviceSession("speck2fdevkit:0", speck2f_config)  # builds and checks the writes
    assert session.writes
    with pytest.raises(DeviceError, match="not open"):
        session.read_spikes()
    with pytest.raises(DeviceError):
        session.__enter__()
    assert "samna" not in sys.modules


def test_parse_device_strings():
    assert parse_device("speck2fdevkit:0") == ("speck2fdevkit", 0)
    assert parse_device("speck2fmodule:2") == ("speck2fmodule", 2)
    assert parse_device("speck2edevkit") == ("speck2edevkit", 0)
    assert parse_device("Speck2fDevKit:1") == ("speck2fdevkit", 1)
    assert DEVICE_KINDS["speck2fdevkit"].device_type_name == "Speck2fDevKit"
    assert DEVICE_KINDS["speck2fmodule"].device_type_name == "Speck2fModuleDevKit"
    assert DEVICE_KINDS["speck2edevkit"].device_type_name == "Speck2eDevKit"
    assert DEVICE_KINDS["dynapcnndevkit"].chip == "dynapcnn"
    for kind in DEVICE_KINDS.values():
        load_chip_spec(kind.chip)  # every kind names a chip we have a spec for
    for bad in ("speck3:0", "speck2fdevkit:x", "speck2fdevkit:-1", "speck2fdevkit:0:1", ""):
        with pytest.raises(DeviceError, match="speck2fdevkit") as info:
            parse_device(bad)
        assert "dynapcnndevkit" in str(info.value)


def test_power_samples_become_milliwatts_per_rail():
    out = power_by_rail([(0, 61.7e-6), (2, 367e-6), (2, 369e-6), (4, 610.9e-6)])
    assert out["VDD_IO"] == pytest.approx(0.0617)
    assert out["VDD_LOGIC"] == pytest.approx(0.368)
    assert np.isnan(out["VDD_RAM"])
    assert out["total"] == pytest.approx(0.0617 + 0.368 + 0.6109)
    assert out["samples"] == 4


def test_samna_status_looks_past_a_stand_in_module_in_sys_modules(monkeypatch):
    real = samna_status()
    monkeypatch.setitem(sys.modules, "samna", types.ModuleType("samna"))  # no __spec__
    assert samna_status() == real  # still judged from the installed files


# ---- the runtime against the samna conformance stand-in ---------------------------------------------

FRAME = {"T": 10, "dt_us": 10_000, "downsample": 4, "binarize": False}


@pytest.fixture
def board(monkeypatch):
    """The samna conformance stand-in in place of samna; its World (boards, clock, records)."""
    return install(monkeypatch)


def _timed(config, **meta):
    cfg = copy.deepcopy(config)
    cfg.meta.update({"frame_spec": dict(FRAME), **meta})
    return cfg


def _segment(xs, t0: int, n: int = 300, y: int = 7, duration_us: int = 90_000, seed: int = 0):
    """n events from t0 over duration_us, cycling through the sensor columns xs."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"] = np.resize(np.asarray(xs), n)
    ev["y"] = y
    ev["t"] = t0 + np.sort(rng.integers(0, duration_us, n))
    ev["p"] = rng.integers(0, 2, n)
    return ev


def _recording(classes, *, spacing_us: int = 1_000_000, xs_of=lambda k: [3 * j + k for j in range(20)]):
    """One recording with a segment per class, far apart in time (raw timestamps up to seconds)."""
    events = np.concatenate([_segment(xs_of(k), i * spacing_us, seed=i) for i, k in enumerate(classes)])
    windows = [EventWindow(events, i * spacing_us, FRAME["T"], FRAME["dt_us"], k, "rec")
               for i, k in enumerate(classes)]
    return events, windows


def _between(log, first: str, then: str) -> list[float]:
    """For each `then` entry, the time since the latest `first` entry before it."""
    out, last = [], None
    for entry in log:
        if entry[1] == first:
            last = entry[0]
        elif entry[1] == then:
            out.append(entry[0] - last)
    return out


def test_each_window_runs_like_the_simulator_reset_wait_write_from_zero_read(board, speck2f_config):
    board.add_board("Speck2fDevKit")
    board.see(x=1, y=3, rate_hz=5000)  # the camera sees "class 1" the whole time
    cfg = _timed(speck2f_config)
    events, windows = _recording([0, 2, 1, 0])  # raw timestamps 0 s, 1 s, 2 s, 3 s
    with DeviceSession("speck2fdevkit:0", cfg, apply_wait_s=0.1) as session:
        outs = [session.run_window(w) for w in windows]
    # the host's events alone decide: pass_sensor_events False kept the camera out (fix 2)
    assert [o.prediction(cfg) for o in outs] == [0, 2, 1, 0]
    assert board.problems == []
    assert max(board.lateness_us) == 0  # every event released exactly at its own timestamp (fix 1)
    for out, w in zip(outs, windows, strict=True):
        inside = w.events["t"][(w.events["t"] >= w.t_start) & (w.events["t"] < w.t_end)]
        assert out.written == len(inside)
        # one monitored spike per input event, stamped with the event's time from the window start
        np.testing.assert_array_equal(np.sort(out.spikes["timestamp"]), np.sort(inside - w.t_start))
        assert set(out.spikes["layer"]) == {cfg.readout.source_core}
    log = board.log
    assert len(board.calls("apply")) == 1 + len(windows)  # open, then one state reset per window
    assert [e[2] for e in board.calls("write")] == [len(w.events[(w.events["t"] >= w.t_start) & (
        w.events["t"] < w.t_end)]) for w in windows]
    assert all(0 <= e[3] < FRAME["dt_us"] for e in board.calls("write"))  # from the window start
    assert all(gap >= 0.1 - 1e-9 for gap in _between(log, "apply", "write"))  # waited (fix 4)
    assert _between(log, "time_reset", "write") == [0.0] * len(windows)  # reset right before writing
    applied = session.samna_config
    assert applied.dvs_layer.pass_sensor_events is False and applied.dvs_layer.monitor_enable is False


def test_the_stand_in_catches_a_stop_watch_that_is_not_reset_per_window(board, speck2f_config,
                                                                         monkeypatch):
    """Negative control: the runtime as it was (stop-watch reset once) loses the later windows'
    timing, and the stand-in says so."""
    board.add_board("Speck2fDevKit")
    started = []

    def reset_once(self):
        if not started:
            watch = self.device.get_stop_watch()
            watch.set_enable_value(True)
            watch.reset()
            started.append(True)

    monkeypatch.setattr(DeviceSession, "_reset_time", reset_once)
    _, windows = _recording([0, 1])
    with DeviceSession("speck2fdevkit:0", _timed(speck2f_config), apply_wait_s=0.1) as session:
        for w in windows:
            session.run_window(w)
    assert any("its timing lost" in p for p in board.problems)


def test_the_stand_in_refuses_what_no_source_confirms(board):
    import samna

    board.add_board("DynapcnnDevKit")
    with pytest.raises(AttributeError, match="not confirmed"):
        samna.speck2f.event.Spike().polarity = 1
    with pytest.raises(AttributeError):
        samna.BasicSourceNode_speck2f_event_input  # noqa: B018 - a misspelt node name
    handle = samna.device.open_device(samna.device.get_all_devices()[0])
    with pytest.raises(AttributeError, match="get_stop_watch"):
        handle.get_stop_watch()  # DYNAP-CNN: sinabs 2.x writes a register instead
    with pytest.raises(AttributeError, match="get_power_monitor"):
        handle.get_power_monitor()
    with pytest.raises(TypeError, match="u32"):
        samna.dynapcnn.event.Spike().timestamp = 2**32  # uint32 microseconds
    config = samna.speck2f.configuration.SpeckConfiguration()
    config.cnn_layers[0].monitor_enable = True
    ok, message = samna.speck2f.validate_configuration(config)
    assert not ok and "threshold_low is 0" in message
    samna.device.close_device(handle)


def test_a_window_longer_than_uint32_microseconds_is_refused(board, speck2f_config):
    board.add_board("Speck2fDevKit")
    window = EventWindow(_segment([0], 0), 0, 2, 2**31, -1, "long.npy")
    with DeviceSession("speck2fdevkit:0", _timed(speck2f_config), apply_wait_s=0) as session:
        with pytest.raises(DeviceError, match=r"long.npy: a window of 4294967296 us .* uint32"):
            session.run_window(window)


def test_dynapcnn_time_base_is_the_io_register_and_power_is_not_read(board, dynapcnn_config):
    board.add_board("DynapcnnDevKit")
    # DYNAP-CNN: events enter the DVS layer's destination cores as Spikes after the host's DVS
    # layer (pooling 4), so the stand-in's class is (x // 4) % 3
    _, windows = _recording([1, 2], xs_of=lambda k: [4 * (3 * j + k) for j in range(10)])
    for timer, register in (("sinabs2", [1]), ("toggle", [0, 1])):
        board.log.clear()
        with DeviceSession("dynapcnndevkit:0", dynapcnn_config, apply_wait_s=0.1,
                           dynapcnn_timer=timer) as session:
            outs = [session.run_window(w) for w in windows]
            with pytest.raises(DeviceError, match="no public source shows a power monitor"):
                session.start_power()
        assert [o.prediction(dynapcnn_config) for o in outs] == [1, 2]
        writes = [(e[2], e[3]) for e in board.calls("write_config")]
        assert writes == [(0x0003, v) for v in register] * len(windows)
        assert "DVS layer applied on the host" in session.describe()["host_input"]
        assert timer in session.describe()["time_base"]
    assert board.problems == [] and max(board.lateness_us) == 0


def test_a_leaking_network_gets_a_slow_clock_of_one_tick_per_bin(board, speck2f_config, monkeypatch):
    board.add_board("Speck2fDevKit")
    cfg = _timed(speck2f_config)
    cfg.cores[0].leak_enable = True
    _, windows = _recording([2])
    with DeviceSession("speck2fdevkit:0", cfg, apply_wait_s=0.1) as session:
        session.run_window(windows[0])
    assert [e[2] for e in board.calls("set_slow_clk_rate")] == [100]  # 1e6 / dt_us (fix 5)
    assert [e[2] for e in board.calls("set_slow_clk")] == [True]
    assert board.problems == [] and session.describe()["slow_clk_hz"] == 100
    with DeviceSession("speck2fdevkit:0", cfg, apply_wait_s=0, slow_clk_hz=7) as session:
        pass
    assert board.calls("set_slow_clk_rate")[-1][2] == 7
    no_frames = copy.deepcopy(cfg)
    no_frames.meta.pop("frame_spec")
    with pytest.raises(DeviceError, match="slow-clk-hz"):
        DeviceSession("speck2fdevkit:0", no_frames)
    # negative control: without the slow clock the stand-in reports the leaking core
    monkeypatch.setattr(samna_adapter, "slow_clock_hz", lambda *a, **k: None)
    with DeviceSession("speck2fdevkit:0", cfg, apply_wait_s=0) as session:
        session.run_window(windows[0])
    assert any("leaks" in p for p in board.problems)


def _readout_config():
    cfg = _timed(_compile("speck2f", n_out=9))
    cfg.readout.num_classes, cfg.readout.use_readout_block = 3, True
    cfg.readout.channel_stride, cfg.readout.threshold = 4, 2
    cfg.core(cfg.readout.source_core).destinations = [Destination(12)]
    return cfg


def test_the_readout_block_is_configured_and_its_events_read(board):
    board.add_board("Speck2fDevKit")
    cfg = _readout_config()
    # class k sits on the source core's channel 4k (erratum); the stand-in's channel is x % 9
    _, windows = _recording([2, 0, 1], xs_of=lambda k: [4 * k + 9 * j for j in range(10)])
    with DeviceSession("speck2fdevkit:0", cfg, apply_wait_s=0.1) as session:
        outs = [session.run_window(w) for w in windows]
    assert [o.readout_prediction() for o in outs] == [2, 0, 1]
    assert [o.prediction(cfg) for o in outs] == [2, 0, 1]  # spikes still monitored alongside
    assert all(len(o.readout) >= 5 for o in outs)  # about one pin event per 10 ms tick
    readout = session.samna_config.readout
    assert (readout.enable, readout.readout_configuration_sel, readout.low_pass_filter_disable,
            readout.readout_pin_monitor_enable, readout.monitor_enable) == (True, 3, True, True, False)
    assert [e[2] for e in board.calls("set_slow_clk_rate")] == [100]  # the readout needs the clock
    assert session.describe()["readout_average"] == 1 and board.problems == []


def test_the_readout_block_needs_a_1x1_output():
    cfg = _readout_config()
    first = cfg.cores[0]
    first.destinations = [*first.destinations, Destination(12)]
    cfg.readout.source_core, cfg.readout.num_classes = first.core, 1
    with pytest.raises(ChipConfigError, match=r"outputs 4x32x32 .* 1x1 output"):
        translate(cfg, chip="speck2f")


def test_power_is_read_per_rail_while_the_windows_run(board, speck2f_config):
    board.add_board("Speck2fDevKit")
    _, windows = _recording([1])
    with DeviceSession("speck2fdevkit:0", _timed(speck2f_config), apply_wait_s=0.1) as session:
        session.start_power()
        session.run_window(windows[0])
        rails = session.stop_power()
    assert rails["VDD_IO"] == pytest.approx(0.0617) and rails["VDD_LOGIC"] == pytest.approx(0.367)
    assert rails["samples"] >= 5 * 100 * 0.2 and rails["samples"] % 5 == 0  # 100 Hz, 5 rails
    assert [e[2] for e in board.calls("start_power")] == [100.0]
    board.power_fails = True
    with DeviceSession("speck2fdevkit:0", _timed(speck2f_config), apply_wait_s=0) as session:
        with pytest.raises(RuntimeError, match="stand-in board fault"):
            session.start_power()
        session.run_window(windows[0])  # the board still runs after a failed power monitor


@pytest.mark.parametrize("masks", [True, False])
def test_killed_pixels_are_dropped_on_the_host_whatever_the_chip_does(board, speck2f_config, masks):
    """Whether KillSensorPixel masks host-written events is unknown (the stand-in can do either):
    the default (pixel_kill="host") gives the simulators' answer both ways; "chip" depends on it."""
    board.add_board("Speck2fDevKit")
    board.kill_masks_host_events = masks
    cfg = _timed(speck2f_config)
    cfg.dvs.killed_pixels = [(7, 2)]  # (y, x): a hot pixel of "class 2" (x % 3 == 2)
    events = np.concatenate([_segment([2], 0, n=400), _segment([0, 3], 0, n=100, y=9, seed=1)])
    events = events[np.argsort(events["t"], kind="stable")]
    window = EventWindow(events, 0, FRAME["T"], FRAME["dt_us"], 0, "hot")
    predictions = {}
    for mode in ("host", "chip"):
        with DeviceSession("speck2fdevkit:0", cfg, apply_wait_s=0, pixel_kill=mode) as session:
            out = session.run_window(window)
        predictions[mode] = out.prediction(cfg)
        assert out.written == {"host": 100, "chip": 500}[mode]  # host: the hot pixel's 400 dropped
    assert predictions["host"] == 0
    assert predictions["chip"] == (0 if masks else 2)
    assert board.problems == []


def test_an_absent_board_is_refused_listing_the_boards_found(board, speck2f_config):
    board.add_board("Speck2eDevKit")
    board.add_board("Speck2fDevKit", usb_device_address=9)
    board.add_board("Speck2fDevKit", usb_device_address=3)
    names = [(d.name, d.device_type_name, d.info.usb_device_address) for d in list_devices()]
    assert names == [("speck2edevkit:0", "Speck2eDevKit", 1), ("speck2fdevkit:0", "Speck2fDevKit", 3),
                     ("speck2fdevkit:1", "Speck2fDevKit", 9)]
    session = DeviceSession("speck2fdevkit:2", _timed(speck2f_config))
    with pytest.raises(DeviceError) as info:
        session.open()
    assert str(info.value).startswith(
        "no connected device speck2fdevkit:2; devices found: speck2edevkit:0 (Speck2eDevKit), "
        "speck2fdevkit:0 (Speck2fDevKit), speck2fdevkit:1 (Speck2fDevKit)")
    assert session.device is None
