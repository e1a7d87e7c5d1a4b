"""The camera: a recording replayed as a virtual camera through the exact simulator, and the refusals
(unknown format, events outside the sensor, a device without samna)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sinabs.layers as sl
import torch
from torch import nn

from asa_deploy.chip.compile import SensorInput, compile_network
from asa_deploy.chip.sim import EventWindow, simulate
from asa_deploy.cli import main
from asa_deploy.data.events import EVENT_DTYPE
from asa_deploy.device.camera import ReplayCamera, summarize
from asa_deploy.errors import BadRecordingError


def gesture_config():
    """A 128x128 DVS input pooled by 4 into a small two-core network that spikes readily."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
                        sl.SumPool2d(4), nn.Flatten(), nn.Linear(4 * 8 * 8, 3, bias=False),
                        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.abs()
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
