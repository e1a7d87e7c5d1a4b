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

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.config import Destination
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.device.samna_adapter import (
    DEVICE_KINDS,
    DeviceError,
    DeviceSession,
    apply_chip_config,
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
