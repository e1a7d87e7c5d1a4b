"""Training: determinism, resume after a crash (in process and kill -9), model selection, refusal of a
foreign checkpoint, 2-process gloo data parallelism, and the CLI around it."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLI_DVS_TINY as CLI_TINY
from helpers import SUBPROCESS_TIMEOUT_S, train_one_and_two_ranks

from asa_deploy.chip.config import ChipConfig
from asa_deploy.cli import main
from asa_deploy.errors import ModelSpecError
from asa_deploy.train import TrainConfig, load_run, train
from asa_deploy.train import loop as train_loop

TINY = dict(data="synthetic:gesture-tiny", model="dvs-small", T=5, epochs=3, batch_size=4,
            eval_windows=2, seed=3, params={"c1": 4, "c2": 8, "c3": 8, "fc": 16})


def final_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["weights"]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            assert torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0), k


def log_without_timing(run_dir: Path) -> list[dict]:
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "train_samples_per_s"} for x in lines]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    train(TrainConfig(**TINY, attention="asa1"), out, progress=False, verbose=False)
    return out


def test_run_directory_contents(reference_run):
    model, artifact = load_run(reference_run)
    lines = (reference_run / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    history = [json.loads(x) for x in lines]
    best = max(history, key=lambda r: r["val_accuracy"])
    # selection on validation: the first epoch reaching the best validation accuracy
    assert artifact["metrics"]["best_epoch"] == best["epoch"]
    assert artifact["metrics"]["val"]["accuracy"] == best["val_accuracy"]
    assert set(artifact["data"]["split"]["train"]).isdisjoint(artifact["data"]["split"]["val"])
    assert model.attention_kind == "asa1"


def test_same_seed_same_weights(reference_run, tmp_path):
    train(TrainConfig(**TINY, attention="asa1"), tmp_path, progress=False, verbose=False)
    assert_same_weights(final_weights(reference_run), final_weights(tmp_path))


def test_resume_after_crash_mid_epoch(reference_run, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_loop.per_sample_loss

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 batches per epoch: the second batch of epoch 2
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_loop, "per_sample_loss", crash_in_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(TrainConfig(**TINY, attention="asa1"), tmp_path, progress=False, verbose=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["state"]["epoch"] == 1
    monkeypatch.setattr(train_loop, "per_sample_loss", real)
    train(TrainConfig(**TINY, attention="asa1"), tmp_path, progress=False, verbose=False)
    assert_same_weights(final_weights(reference_run), final_weights(tmp_path))
    assert log_without_timing(tmp_path) == log_without_timing(reference_run)


def test_resume_after_kill_9(reference_run, tmp_path):
    command = [sys.executable, "-m", "asa_deploy.cli", "train", *CLI_TINY, "--epochs", "3",
               "--attention", "asa1", "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before epoch 1"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    epoch = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["state"]["epoch"]
    assert epoch < 3, "the kill came too late to interrupt the run"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=SUBPROCESS_TIMEOUT_S)
    assert_same_weights(final_weights(reference_run), final_weights(tmp_path))


def test_checkpoint_of_another_model_is_refused(reference_run, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes((reference_run / "checkpoint.pt").read_bytes())
    with pytest.raises(ModelSpecError, match=r"attention: 'asa1' \(checkpoint\) vs 'none'"):
        train(TrainConfig(**TINY, attention="none"), tmp_path, progress=False, verbose=False)
    other = {**TINY, "params": {**TINY["params"], "c1": 6}}
    with pytest.raises(ModelSpecError, match="c1"):
        train(TrainConfig(**other, attention="asa1"), tmp_path, progress=False, verbose=False)


def test_model_input_must_match_data(tmp_path):
    with pytest.raises(ModelSpecError, match="takes 2x34x34 input"):
        train(TrainConfig(**{**TINY, "model": "nmnist-net", "params": {}}), tmp_path,
              progress=False, verbose=False)


def test_two_process_gloo_matches_one_process(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    train_one_and_two_ranks(["train", *CLI_TINY, "--epochs", "2", "--attention", "asa2"], single,
                            double, 29517)
    assert_same_weights(final_weights(single), final_weights(double), atol=1e-5)
    a = [json.loads(x) for x in (single / "train_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (double / "train_log.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] for r in a] == [r["val_accuracy"] for r in b]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)


def test_evaluate_json_and_analyze_cli(reference_run, capsys):
    assert main(["evaluate", str(reference_run), "--json", "--eval-windows", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"accuracy", "nasfr", "sfr", "neurons"}
    assert result["sfr"].keys() == result["neurons"].keys()
    # recomputed: the run's validation windows through the network, silent = wrong, strict majority
    from asa_deploy.train.loop import eval_set

    model, artifact = load_run(reference_run)
    dataset, _ = eval_set(artifact, windows=2)
    frames = torch.stack([dataset[i][0] for i in range(len(dataset))])
    model.reset_states()
    with torch.no_grad():
        counts = model(frames).sum(1)
    predicted = torch.where(counts.sum(1) > 0, counts.argmax(1), -1).numpy()
    correct = predicted == np.asarray(dataset.labels)
    recordings = np.asarray(dataset.recordings)
    majority = [correct[recordings == r].mean() > 0.5 for r in np.unique(recordings)]
    assert result["windows"] == len(dataset) and result["recordings"] == len(majority)
    assert result["window_accuracy"] == pytest.approx(correct.mean())
    assert result["accuracy"] == pytest.approx(np.mean(majority))
    assert result["nasfr"] == pytest.approx(
        sum(result["sfr"][k] * result["neurons"][k] for k in result["sfr"])
        / sum(result["neurons"].values()))
    assert main(["analyze", str(reference_run)]) == 0
    analysis = json.loads((reference_run / "analysis.json").read_text())
    assert analysis["nasfr"] == pytest.approx(
        sum(v["sfr"] * v["neurons"] for v in analysis["layers"].values())
        / sum(v["neurons"] for v in analysis["layers"].values()))
    png = (reference_run / "figures" / "t_sfr.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_cli_reports_missing_data_folder(tmp_path, capsys):
    code = main(["train", "--data", f"nmnist:{tmp_path}/nope", "--out", str(tmp_path / "r"),
                 "--no-progress"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", *CLI_TINY, "--epochs", "1", "--attention", "asa2",
                 "--finetune-epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NASFR" in printed and "vanilla" in printed and "asa2" in printed
    assert "quantized, exact simulator" in printed
    record = json.loads((out / "quickstart.json").read_text())
    summary = record["summaries"]
    assert set(summary) == set(record["ladders"]) == {"vanilla", "asa2"}
    config = ChipConfig.load(out / "asa2" / "chip_config.json")
    assert config.chip == "speck2f" and config.meta["attention"] == "asa2"
    assert config.readout.num_classes == 6
    assert {p.name for p in (out / "figures").glob("*.png")} == {
        "spike_features.png", "t_sfr.png", "mpd.png", "layer_sfr.png"}


def test_bad_file_is_skipped_and_counted_in_the_run(tmp_path):
    import numpy as np
    from helpers import random_events

    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["file,label"]
    for i in range(12):
        np.save(folder / f"r{i}.npy", random_events(500, width=32, seed=i))
        rows.append(f"r{i}.npy,{i % 2}")
    (folder / "broken.npy").write_bytes(b"not a numpy file")
    rows.append("broken.npy,0")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (folder / "dataset.json").write_text(json.dumps({"sensor_size": [32, 32, 2]}))
    out = tmp_path / "run"
    train(TrainConfig(**{**TINY, "data": f"events:{folder}", "epochs": 1}), out, progress=False,
          verbose=False)
    _, artifact = load_run(out)
    assert [Path(s).name for s, _ in artifact["data"]["skipped"]] == ["broken.npy"]
    record = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert record["skipped_recordings"] == 1
