"""The camera and deploy: a recording replayed as a virtual camera through the exact simulator, the
refusals (unknown format, events outside the sensor, a device without samna), and ``camera --device``
and ``deploy`` end to end against the samna conformance stand-in (tests/samna_conformance), which
implements only what public sources confirm about samna: no board is involved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import two_core_net
from samna_conformance import install

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.monitor import Monitor
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.cli import main
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.device.camera import DeviceCamera, ReplayCamera, summarize
from asa_deploy.device.samna_adapter import DeviceError
from asa_deploy.errors import BadRecordingError


def gesture_config():
    """A 128x128 DVS input pooled by 4 into a small two-core network that spikes readily."""
    net = two_core_net()
    config = compile_network(net, "speck2f", input_shape=(2, 32, 32),
                             sensor=SensorInput((2, 128, 128), 4), class_names=["a", "b", "c"]).config
    config.meta["frame_spec"] = {"T": 10, "dt_us": 10_000, "downsample": 4, "binarize": False}
    return config


def write_events(path, n=5000, width=128, seed=0, duration_us=250_000):
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=EVENT_DTYPE)
    events["x"], events["y"] = rng.integers(0, width, n), rng.integers(0, 128, n)
    events["t"] = np.sort(rng.integers(0, duration_us, n))
    events["p"] = rng.integers(0, 2, n)
    np.save(path, events)
    return path


def test_replay_decides_every_window_with_latency(tmp_path):
    camera = ReplayCamera(gesture_config(), write_events(tmp_path / "rec.npy"))
    decisions = list(camera)
    assert len(decisions) == 3  # 250 ms of events in 100 ms windows
    assert sum(d.input_events for d in decisions) == 5000
    spiking = [d for d in decisions if d.prediction >= 0]
    assert spiking and all(d.class_name in "abc" for d in spiking)
    # the latency is the time from the window's first event to the event that made the first output
    # spike, as the exact simulator counts it for that window alone
    events = np.load(camera.path)
    for d in spiking:
        alone = simulate(camera.config, [EventWindow(events, d.t_start_us, 10, 10_000)], "exact")
        k = int(alone.latency_events[0])
        inside = np.sort(events["t"][(events["t"] >= d.t_start_us) & (events["t"] < d.t_start_us + 100_000)])
        assert k > 0 and d.input_events == len(inside)
        assert d.first_spike_latency_ms == pytest.approx((inside[k - 1] - inside[0]) / 1e3)
    summary = summarize(decisions, 1.0, camera.duration_s)
    assert summary["windows"] == 3 and summary["real_time_factor"] == pytest.approx(camera.duration_s)
    decided = sum(d.decision_ms for d in decisions) / 1e3  # the host's compute alone
    assert summary["decision_seconds"] == pytest.approx(decided)
    assert summary["decision_speed"] == pytest.approx(camera.duration_s / decided)


def test_replay_of_a_real_dvs_gesture_clip(shared_data):
    camera = ReplayCamera(gesture_config(), shared_data / "dvsgesture-10" / "1.bs2")
    decisions = list(camera)
    assert len(decisions) == 15 and sum(d.input_events for d in decisions) == 63471


def test_replay_refuses_bad_recordings(tmp_path):
    config = gesture_config()
    with pytest.raises(BadRecordingError, match="unknown file type '.txt'"):
        ReplayCamera(config, tmp_path / "rec.txt")
    with pytest.raises(BadRecordingError, match="outside the 128x128 sensor"):
        ReplayCamera(config, write_events(tmp_path / "wide.npy", width=200))


def test_camera_cli_replay_and_device_without_samna(tmp_path, capsys):
    config = gesture_config()
    config.save(tmp_path / "chip_config.json")
    recording = write_events(tmp_path / "rec.npy")
    assert main(["camera", str(tmp_path), "--replay", str(recording)]) == 0
    out = capsys.readouterr().out
    assert "decided in" in out and "real-time factor" in out
    summary = json.loads((tmp_path / "camera.json").read_text())
    assert summary["windows"] == 3 and len(summary["decisions"]) == 3
    assert main(["camera", str(tmp_path), "--device", "speck2fdevkit:0"]) == 2
    assert "samna" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path), "--device", "speck2fdevkit:0"]) == 2
    assert "index-url" in capsys.readouterr().err


# ---- camera --device and deploy against the samna conformance stand-in ------------------------------

@pytest.fixture
def board(monkeypatch):
    """The samna conformance stand-in in place of samna, with one Speck2f dev kit connected."""
    world = install(monkeypatch)
    world.add_board("Speck2fDevKit")
    return world


def deploy_run_dir(tmp_path):
    """A run directory whose data is an events: folder of three recordings, one per class; the
    stand-in's output channel is the sensor column modulo 3, so recording k uses columns 3j + k."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"sensor_size": [128, 128, 2],
                                                   "class_names": ["a", "b", "c"]}))
    rows = ["file,label"]
    for k in range(3):
        ev = np.zeros(900, dtype=EVENT_DTYPE)
        ev["x"] = np.resize([3 * j + k for j in range(40)], 900)
        ev["y"] = np.resize(np.arange(128), 900)
        ev["t"] = 5_000_000 * k + np.sort(np.random.default_rng(k).integers(0, 300_000, 900))
        ev["p"] = np.resize([0, 1], 900)
        np.save(data / f"rec{k}.npy", ev)
        rows.append(f"rec{k}.npy,{'abc'[k]}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    config = gesture_config()
    config.meta["data_spec"] = f"events:{data}"
    config.save(run / "chip_config.json")
    return run, config


def test_deploy_on_the_stand_in_records_accuracy_power_and_runtime(board, tmp_path, capsys):
    board.see(x=1, y=3, rate_hz=5000)  # the chip's own camera sees "b" all along
    run, config = deploy_run_dir(tmp_path)
    assert main(["deploy", str(run), "--device", "speck2fdevkit:0", "--windows", "2",
                 "--apply-wait", "0.1", "--monitor", "all"]) == 0
    out = capsys.readouterr().out
    assert ("accuracy per window 1.0000, per recording 1.0000 over 6 windows (0 silent)" in out
            and "VDD_IO" in out)
    device = json.loads((run / "device.json").read_text())
    assert device["accuracy_window"] == device["accuracy_recording"] == 1.0
    assert device["n_windows"] == 6 and device["silent_windows"] == 0 and "accuracy" not in device
    assert device["power_mw"]["VDD_LOGIC"] == pytest.approx(0.367) and device["power_samples"] > 0
    assert "power_error" not in device
    runtime = device["runtime"]
    assert runtime["pass_sensor_events"] is False and runtime["apply_wait_s"] == 0.1
    assert runtime["slow_clk_hz"] is None and runtime["host_input"] == "DvsEvent events into the DVS layer"
    prov = device["provenance"]  # the same record deploy always wrote
    assert set(prov["made_from"]) == {"chip_config.json"}
    assert (prov["device"], prov["data"], prov["windows"], prov["max_recordings"]) == (
        "speck2fdevkit:0", config.meta["data_spec"], 2, None)
    assert board.problems == [] and max(board.lateness_us) == 0
    monitor = Monitor.load(run / "monitor.npz")
    assert monitor.engine == "device:speck2fdevkit:0" and sorted(monitor.counts) == config.core_ids()
    source = monitor.counts[config.readout.source_core]
    assert source.shape[:2] == (6, 10)
    # every written event gave one monitored spike of the source core (the stand-in's rule)
    assert int(source.sum()) == device["input_events_written"] > 0
    # --monitor all turned the first core's monitoring on: its spikes reach the host too
    assert int(monitor.counts[config.cores[0].core].sum()) == device["input_events_written"]


def test_deploy_keeps_the_accuracy_when_the_power_monitor_fails(board, tmp_path, capsys):
    board.power_fails = True
    run, _ = deploy_run_dir(tmp_path)
    assert main(["deploy", str(run), "--device", "speck2fdevkit:0", "--windows", "1",
                 "--apply-wait", "0"]) == 0
    device = json.loads((run / "device.json").read_text())
    assert device["accuracy_window"] == 1.0 and "power_mw" not in device
    assert device["power_error"] == ("the power monitor did not start: RuntimeError: power monitor "
                                     "did not answer (stand-in board fault)")
    assert "power not measured (the power monitor did not start" in capsys.readouterr().out
    from asa_deploy.report.build import _measured  # the report says why there are no rails

    assert _measured(device, 0.1, None)["error"].endswith(device["power_error"])


def test_deploy_refuses_an_absent_board_and_an_unused_monitor_core(board, tmp_path, capsys):
    run, config = deploy_run_dir(tmp_path)
    assert main(["deploy", str(run), "--device", "speck2fdevkit:1"]) == 2
    assert ("no connected device speck2fdevkit:1; devices found: speck2fdevkit:0 (Speck2fDevKit)"
            in capsys.readouterr().err)
    assert main(["deploy", str(run), "--device", "speck2fdevkit:0", "--monitor", "8"]) == 2
    err = capsys.readouterr().err
    assert "--monitor names core 8" in err and f"cores {config.cores[0].core} (" in err
    assert not (run / "device.json").exists()
    assert board.calls("apply") == []  # both refused before anything was applied


def test_camera_device_on_the_stand_in_passes_the_sensor_and_decides_per_window(board, tmp_path, capsys):
    board.see(x=2, y=5, rate_hz=2000)  # "c": column 2
    config = gesture_config()
    config.save(tmp_path / "chip_config.json")
    assert main(["camera", str(tmp_path), "--device", "speck2fdevkit:0", "--seconds", "0.3",
                 "--apply-wait", "0.1"]) == 0
    summary = json.loads((tmp_path / "camera.json").read_text())
    assert summary["windows"] == 3 and summary["predictions"] == {"c": 3}
    decisions = summary["decisions"]
    assert all(d["input_events"] == 200 for d in decisions)  # 2000 events/s over 100 ms windows
    assert all(d["output_spikes"] == 200 and d["first_spike_latency_ms"] == 0.0 for d in decisions)
    assert summary["runtime"]["pass_sensor_events"] is True
    assert board.problems == []
    assert "decided in" in capsys.readouterr().out


def test_camera_device_needs_a_dvs_input_layer(board):
    config = gesture_config()
    config.dvs = None
    config.input_core = config.cores[0].core
    with pytest.raises(DeviceError, match="config has none"):
        DeviceCamera(config, "speck2fdevkit:0")
