"""``simulate --jobs`` and ``camera --replay A B --jobs``: the simulators in worker processes give
exactly what one process gives (every count in ``sim.json``, the monitor file, each file's camera
decisions), only the timing differs; ``--jobs`` is refused while parsing unless it is a positive
integer, and with ``--realtime`` or ``--device``."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from asa_deploy.chip.config import ChipConfig
from asa_deploy.chip.sim.parallel import MappedEvents, by_reference, chunks, process_pool
from asa_deploy.cli import main
from asa_deploy.data import open_dataset
from asa_deploy.errors import BadRecordingError, DataSpecError
from asa_deploy.train import TrainConfig, train

TIMING = {"wall_seconds", "events_per_second", "synops_per_second", "jobs", "mean_decision_ms",
          "real_time_factor", "decision_ms", "written_utc"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 1-epoch speck-tiny run, compiled; the thresholds of its later cores divided by 10, as such a
    run is silent at its output, and windows should differ in class and latency here."""
    out = tmp_path_factory.mktemp("jobs")
    train(TrainConfig(data="synthetic:gesture-tiny", model="speck-tiny", T=5, epochs=1, batch_size=4,
                      eval_windows=2, seed=0, params={"c": 4, "fc": 8}), out, progress=False,
          verbose=False)
    assert main(["compile", str(out), "--chip", "speck2f", "--bias", "drop"]) == 0
    config = ChipConfig.load(out / "chip_config.json")
    for core in config.cores[2:]:
        core.threshold_high = max(1, core.threshold_high // 10)
    config.save(out / "chip_config.json")
    return out


def untimed(value):
    """``value`` without its timing and write-time fields, at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def simulate(run: Path, jobs: int, monitor: Path, extra: list[str], capsys) -> dict:
    assert main(["simulate", str(run), *extra, "--monitor", "all", "--monitor-out", str(monitor),
                 "--jobs", str(jobs), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["jobs"] == jobs
    engine = extra[extra.index("--engine") + 1]
    return json.loads((run / "sim.json").read_text())[engine]


@pytest.mark.parametrize("extra", [["--engine", "fast", "--windows", "2"],
                                   ["--engine", "exact", "--windows", "2"],
                                   ["--engine", "exact", "--whole-recordings"]],
                         ids=["fast", "exact", "exact-whole"])
def test_simulate_with_two_jobs_equals_one(run, tmp_path, extra, capsys):
    one = simulate(run, 1, tmp_path / "one.npz", extra, capsys)
    two = simulate(run, 2, tmp_path / "two.npz", extra, capsys)
    assert untimed(two) == untimed(one)
    assert sum(one["spikes_per_core"]["total"].values()) > 0 and one["silent_windows"] < one["n_windows"]
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert sorted(a) == sorted(b) and "core4" in a
        for key in a:
            if key == "provenance":  # the same but for the time it was written
                assert untimed(json.loads(str(a[key]))) == untimed(json.loads(str(b[key])))
            else:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        assert int(b["core0"].sum()) == one["spikes_per_core"]["total"]["0"]


def test_chunks_are_contiguous_and_cover_every_window():
    assert chunks(10, 4) == [range(0, 2), range(2, 5), range(5, 7), range(7, 10)]
    assert chunks(3, 8) == [range(0, 1), range(1, 2), range(2, 3)]
    assert chunks(0, 4) == []


def test_more_jobs_than_cores_is_allowed_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr("asa_deploy.chip.sim.parallel.os.cpu_count", lambda: 1)
    with caplog.at_level(logging.WARNING, logger="asa_deploy.simulate"):
        process_pool(3).shutdown()  # workers start only when work is submitted
    assert "3 jobs on 1 CPU cores: jobs share cores, which costs time; use --jobs 1 or fewer" in caplog.text


def recordings(folder: Path, count: int) -> list[Path]:
    """The first ``count`` recordings of gesture-tiny as .npy files (128x128, as the run's input)."""
    dataset = open_dataset("synthetic:gesture-tiny")
    paths = []
    for i in range(count):
        np.save(folder / f"rec{i}.npy", dataset[i][0])
        paths.append(folder / f"rec{i}.npy")
    return paths


def camera(run: Path, files: list[Path], jobs: int) -> dict:
    assert main(["camera", str(run), "--replay", *map(str, files), "--jobs", str(jobs), "--json"]) == 0
    return json.loads((run / "camera.json").read_text())


def test_camera_replays_several_files_in_parallel_as_one_by_one(run, tmp_path, capsys):
    files = recordings(tmp_path, 2)
    parallel, sequential = camera(run, files, 2), camera(run, files, 1)
    assert parallel["source"] == "replay of 2 recordings (exact simulator)"
    assert untimed(parallel) == untimed(sequential)
    assert [r["file"] for r in parallel["recordings"]] == list(map(str, files))
    assert parallel["windows"] == sum(r["windows"] for r in parallel["recordings"]) > 2
    for path, entry in zip(files, parallel["recordings"], strict=True):
        alone = camera(run, [path], 1)  # the one-file layout: decisions at the top level
        assert alone["source"] == f"replay of {path} (exact simulator)"
        assert untimed(alone["decisions"]) == untimed(entry["decisions"])
        assert {k: alone[k] for k in ("windows", "predictions", "silent_windows")} == \
               {k: entry[k] for k in ("windows", "predictions", "silent_windows")}
    assert any(d["prediction"] >= 0 for r in parallel["recordings"] for d in r["decisions"])
    capsys.readouterr()


def test_a_bad_recording_error_survives_the_way_back_from_a_worker():
    """A worker's exception is pickled to the parent: the file and the problem must come back."""
    err = pickle.loads(pickle.dumps(BadRecordingError("rec1.npy", "not a numpy file")))
    assert isinstance(err, BadRecordingError) and (err.source, err.problem) == ("rec1.npy", "not a numpy file")
    assert str(err) == "rec1.npy: not a numpy file"


@pytest.mark.parametrize("argv", [["simulate", "{run}", "--jobs", "0"],
                                  ["camera", "{run}", "--replay", "{file}", "--jobs", "0"],
                                  ["simulate", "{run}", "--jobs", "two"]])
def test_jobs_must_be_a_positive_integer(argv, tmp_path, capsys):
    (tmp_path / "rec.npy").write_bytes(b"")
    argv = [a.format(run=tmp_path, file=tmp_path / "rec.npy") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"asa-deploy {argv[0]}: error: argument --jobs: must be a positive integer, got " in err
    assert "Traceback" not in err


def test_camera_refuses_jobs_with_realtime_or_a_device(tmp_path, capsys):
    (tmp_path / "rec.npy").write_bytes(b"")
    assert main(["camera", str(tmp_path), "--replay", str(tmp_path / "rec.npy"), "--realtime",
                 "--jobs", "2"]) == 2
    assert ("asa-deploy camera: error: --realtime paces each replay to the wall clock, one file after "
            "another; --jobs would play them at once: drop --jobs or --realtime") in capsys.readouterr().err
    assert main(["camera", str(tmp_path), "--device", "speck2fdevkit:0", "--jobs", "2"]) == 2
    assert "a device is one camera: drop --jobs" in capsys.readouterr().err


def events_folder(folder: Path, count: int) -> str:
    """An ``events:`` folder of the first ``count`` gesture-tiny recordings, with its classes."""
    tiny = open_dataset("synthetic:gesture-tiny")
    files = recordings(folder, count)
    (folder / "labels.csv").write_text("file,label\n" + "".join(
        f"{path.name},{tiny.labels[i]}\n" for i, path in enumerate(files)))
    (folder / "dataset.json").write_text(json.dumps({"sensor_size": list(tiny.sensor_size),
                                                     "class_names": tiny.class_names}))
    return f"events:{folder}"


def test_cached_recordings_go_to_workers_as_file_references(tmp_path):
    """Pickled, a cached recording would carry every event to a worker (1.1 GB per chunk at DVS
    Gesture's size with 2 jobs, benchmarks/scale.py); its reference is its file, offset and length."""
    spec = events_folder(tmp_path, 3)
    events, _ = open_dataset(spec, cache=tmp_path / "cache")[0]
    sent = by_reference(events)
    assert isinstance(sent, MappedEvents) and sent.count == len(events) > 1000
    assert len(pickle.dumps(sent)) < 600 < events.nbytes
    assert np.array_equal(sent.load(), events)
    part = events[5:17]
    assert by_reference(part).offset == sent.offset + 5 * events.itemsize
    assert np.array_equal(by_reference(part).load(), part)
    in_memory, _ = open_dataset(spec)[0]  # no cache: the events travel themselves
    assert by_reference(in_memory) is in_memory
    os.utime(sent.path, ns=(sent.mtime_ns + 10**9, sent.mtime_ns + 10**9))  # rewritten meanwhile
    with pytest.raises(DataSpecError, match=r"the cached events changed or vanished while simulating "
                                            r"\(it was rewritten\); rerun the command"):
        sent.load()


def test_two_jobs_on_cached_recordings_equal_one(run, tmp_path, capsys):
    spec, cache = events_folder(tmp_path, 6), str(tmp_path / "cache")
    results = []
    for jobs in (1, 2):
        assert main(["simulate", str(run), "--data", spec, "--cache-dir", cache, "--engine", "exact",
                     "--windows", "2", "--jobs", str(jobs), "--json"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        results.append(json.loads(Path(printed["file"]).read_text())["exact"])
    assert untimed(results[1]) == untimed(results[0])
    assert results[0]["n_windows"] == 12 and results[0]["input_events"] > 0
