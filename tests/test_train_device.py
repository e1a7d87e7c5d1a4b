"""Training off the main thread and on other devices: DataLoader workers give the same model as none,
validation frames cached once equal freshly framed ones, ``--device`` never falls back to the CPU
silently, ``--amp`` (bf16 within a stated tolerance of fp32, fp16 refused on the CPU), and
checkpoints written on a GPU load on a CPU-only machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.serialization
from helpers import SUBPROCESS_TIMEOUT_S, train_one_and_two_ranks

from asa_deploy import io
from asa_deploy.cli import main
from asa_deploy.data import FramedDataset, FrameSpec, open_dataset
from asa_deploy.data.framing import FrameCache
from asa_deploy.errors import ComputeDeviceError, ModelSpecError
from asa_deploy.train import TrainConfig, load_run, prepare, train
from asa_deploy.train import loop as train_loop
from asa_deploy.train.accelerator import Precision, resolve_device

TINY = dict(data="synthetic:gesture-tiny", model="speck-tiny", attention="asa2", T=5, epochs=2,
            batch_size=4, eval_windows=2, seed=3, params={"c": 4, "fc": 8})
CLI_TINY = ["--data", "synthetic:gesture-tiny", "--model", "speck-tiny", "--attention", "asa2",
            "--T", "5", "--param", "c=4", "--param", "fc=8", "--batch-size", "4",
            "--eval-windows", "2", "--seed", "3", "--epochs", "2", "--no-progress"]
# bf16 against fp32: per-epoch training loss within this relative tolerance (README "Training").
# Measured on such tiny runs: at most 2.8 % (spikes are thresholds, so rounding flips a few of them).
BF16_LOSS_RTOL = 0.05


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)


def log_without_timing(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "train_samples_per_s"}
            for line in (run / "train_log.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0), k


# ---- workers ----------------------------------------------------------------------------------

def test_two_workers_give_the_same_model_as_none(tmp_path):
    none, two = tmp_path / "w0", tmp_path / "w2"
    train(TrainConfig(**TINY, workers=0), none, progress=False, verbose=False)
    train(TrainConfig(**TINY, workers=2), two, progress=False, verbose=False)
    a, b = checkpoint(none), checkpoint(two)
    assert_same_weights(a["weights"], b["weights"])
    assert torch.equal(a["torch_rng"], b["torch_rng"])  # no worker drew from torch's global RNG
    assert log_without_timing(none) == log_without_timing(two)
    initial = prepare(TrainConfig(**TINY)).model.weights()
    assert any(not torch.equal(initial[k], a["weights"][k]) for k in initial), "nothing trained"


def test_cli_workers_and_device_cpu_reach_training(tmp_path, capsys):
    assert main(["train", *CLI_TINY, "--epochs", "1", "--workers", "2", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    saved = checkpoint(tmp_path)["train_config"]
    assert (saved["workers"], saved["device"], saved["amp"]) == (2, "cpu", "off")
    assert "best epoch 1" in capsys.readouterr().out


def test_two_ranks_with_workers_match_one_process(tmp_path):
    """torchrun (gloo) with 2 ranks and a worker each: the model of one process without workers,
    up to the float rounding of summing gradients across ranks."""
    single, double = tmp_path / "single", tmp_path / "double"
    train_one_and_two_ranks(["train", *CLI_TINY], single, double, 29531,
                            two_rank_args=("--workers", "1"))
    assert_same_weights(checkpoint(single)["weights"], checkpoint(double)["weights"], atol=1e-5)
    a, b = log_without_timing(single), log_without_timing(double)
    assert [r["val_accuracy"] for r in a] == [r["val_accuracy"] for r in b]


@pytest.mark.parametrize("attempt", [1, 2])
def test_two_ranks_with_two_workers_each_start_and_end(tmp_path, attempt):
    """Regression, repeated: a DataLoader worker forked from a rank running other threads hung for
    good at start-up (issue 19). Spawned workers start clean; each run must end, within the timeout
    (benchmarks/worker_starts.py repeats it 20 times)."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29540 + attempt), "-m", "asa_deploy.cli", "train", *CLI_TINY, "--epochs", "1",
         "--workers", "2", "--out", str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint(tmp_path)["train_config"]["workers"] == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_frame_cache_serves_the_frames_of_the_dataset(workers):
    dataset = open_dataset("synthetic:gesture-tiny", seed=0)
    framed = FramedDataset(dataset, np.arange(5), FrameSpec(T=4, dt_us=20_000, downsample=4),
                           mode="test", n_windows=3)
    cached = FrameCache(framed, items=range(0, len(framed), 2), workers=workers)
    assert len(cached) == len(framed) == 15
    assert np.array_equal(cached.labels, framed.labels)
    assert np.array_equal(cached.recordings, framed.recordings)
    for i in range(len(framed)):  # odd items were not cached: framed on request
        (x, label, recording), (y, label2, recording2) = cached[i], framed[i]
        assert torch.equal(x, y) and (label, recording) == (label2, recording2), i
    assert sum(bool(cached[i][0].any()) for i in range(len(cached))) > 0
    with pytest.raises(ValueError, match="RCS windows change every epoch"):
        FrameCache(FramedDataset(dataset, np.arange(2), framed.spec, mode="rcs"))


# ---- device -----------------------------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_device_cuda_without_a_gpu_exits_2_and_says_why(no_gpu, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asa-deploy train: error: --device cuda: torch.cuda.is_available() is "
                          "False (")
    assert "never falls back to the CPU silently; use --device cpu" in err
    assert not out.exists()  # refused before any data was read or file written


def test_evaluate_device_cuda_without_a_gpu_exits_2(no_gpu, tmp_path, capsys):
    assert main(["train", *CLI_TINY, "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert main(["evaluate", str(tmp_path), "--device", "cuda:0"]) == 2
    assert "asa-deploy evaluate: error: --device cuda:0: torch.cuda.is_available() is False" in (
        capsys.readouterr().err)
    assert main(["evaluate", str(tmp_path), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["windows"] > 0


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_gpu_choice_with_two_gpus(two_gpus):
    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ComputeDeviceError, match=r"--device cuda:2: torch sees 2 GPU\(s\), cuda:0 "
                                                 r"to cuda:1; pick one of those"):
        resolve_device("cuda:2")


def test_torchrun_ranks_take_the_gpu_of_their_local_rank(two_gpus):
    assert resolve_device("cuda", world_size=2, local_rank=1) == "cuda:1"
    assert resolve_device("auto", world_size=4, local_rank=0) == "cuda:0"
    with pytest.raises(ComputeDeviceError, match=r"each process uses the GPU of its local rank"):
        resolve_device("cuda:1", world_size=2, local_rank=0)
    with pytest.raises(ComputeDeviceError, match=r"local rank 2, but torch sees 2 GPU\(s\); start "
                                                 r"at most 2 processes per machine"):
        resolve_device("cuda", world_size=3, local_rank=2)


def test_bad_device_and_amp_in_the_python_api():
    with pytest.raises(ModelSpecError, match=r"device='gpu' \(must be auto, cpu, cuda or cuda:N\)"):
        TrainConfig(**TINY, device="gpu")
    with pytest.raises(ModelSpecError, match=r"workers=-1 \(must be a non-negative integer\)"):
        TrainConfig(**TINY, workers=-1)
    with pytest.raises(ModelSpecError, match=r"amp='fp32'"):
        TrainConfig(**TINY, amp="fp32")


# ---- mixed precision --------------------------------------------------------------------------

def test_fp16_on_the_cpu_is_refused(tmp_path, capsys):
    assert main(["train", *CLI_TINY, "--device", "cpu", "--amp", "fp16", "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asa-deploy train: error: --amp fp16 on cpu: float16 mixed precision "
                          "needs a GPU")
    assert "use --amp bf16 (bfloat16 autocast runs on the CPU) or --amp off" in err
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_lowers_the_synapses_only():
    """Convolutions run in bfloat16; the neurons' float32 states keep spikes in float32."""
    config = TrainConfig(**TINY)
    model = prepare(config).model
    dtypes = []
    model.blocks[0].synapse[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with Precision("cpu", "bf16").autocast():
        out = model(torch.rand(2, 5, 2, 32, 32).round())
    assert dtypes == [torch.bfloat16] and out.dtype == torch.float32


def test_two_ranks_train_under_bf16(tmp_path):
    """Regression: the cross-rank batch norm got bfloat16 activations under autocast and failed
    (``lerp_`` into its float32 running mean); it now computes its statistics in float32."""
    single, double = tmp_path / "single", tmp_path / "double"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", *CLI_TINY, "--epochs", "1", "--amp", "bf16"]
    subprocess.run([sys.executable, "-m", "asa_deploy.cli", *args, "--out", str(single)],
                   check=True, env=env, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         "29532", "-m", "asa_deploy.cli", *args, "--out", str(double)],
        env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = log_without_timing(single), log_without_timing(double)
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=BF16_LOSS_RTOL)


def test_parsed_values_reach_the_config():
    from asa_deploy.cli import _config, build_parser

    args = build_parser().parse_args(["train", "--device", " CUDA:1 ", "--workers", "3", "--amp",
                                      "bf16", "--out", "r"])
    config = _config(args)
    assert (config.device, config.workers, config.amp) == ("cuda:1", 3, "bf16")


def test_bf16_loss_within_tolerance_of_fp32(tmp_path):
    config = dict(TINY, attention="none", epochs=3, batch_size=2, params={"c": 8, "fc": 16},
                  loss="ce")  # this seed's network fires: bf16 and fp32 take different steps
    runs = {}
    for amp in ("off", "bf16"):
        train(TrainConfig(**config, amp=amp), tmp_path / amp, progress=False, verbose=False)
        runs[amp] = [r["loss"] for r in log_without_timing(tmp_path / amp)]
    assert len(runs["bf16"]) == 3
    assert runs["bf16"] == pytest.approx(runs["off"], rel=BF16_LOSS_RTOL)


# ---- checkpoints across devices and run identity -----------------------------------------------

def resave_as_if_on_cuda(path: Path, monkeypatch, **changes) -> None:
    """Rewrite a torch file so that every tensor says it was saved on cuda:0, as a GPU run's are."""
    obj = torch.load(path, weights_only=False)
    for key, value in changes.items():
        obj["train_config"][key] = value
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path)


def test_load_torch_maps_a_gpu_file_to_the_cpu(tmp_path, monkeypatch):
    path = tmp_path / "gpu.pt"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"weights": torch.arange(3.0)}, path)
    if not torch.cuda.is_available():  # the file really is a GPU file: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)
    loaded = io.load_torch(path, "test file", remedy="none")
    assert loaded["weights"].device.type == "cpu"
    assert torch.equal(loaded["weights"], torch.arange(3.0))


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path, monkeypatch):
    """checkpoint.pt and model.pt of a GPU run (device 'cuda', tensors tagged cuda:0) load on a CPU:
    device and workers are not part of the run's identity, so an interrupted run resumes there."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train(TrainConfig(**TINY), reference, progress=False, verbose=False)
    resave_as_if_on_cuda(reference / "model.pt", monkeypatch, device="cuda", workers=4)
    model, _ = load_run(reference)
    assert next(model.parameters()).device.type == "cpu"

    real, calls = train_loop.per_sample_loss, {"n": 0}

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # 3 batches per epoch: the first batch of epoch 2
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(train_loop, "per_sample_loss", crash_in_epoch_two)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(TrainConfig(**TINY), resumed, progress=False, verbose=False)
    resave_as_if_on_cuda(resumed / "checkpoint.pt", monkeypatch, device="cuda", workers=4)
    train(TrainConfig(**TINY, device="cpu"), resumed, progress=False, verbose=False)
    assert_same_weights(checkpoint(reference)["weights"], checkpoint(resumed)["weights"])


def test_another_amp_is_another_run(tmp_path):
    one_epoch = {**TINY, "epochs": 1}
    train(TrainConfig(**one_epoch, amp="bf16"), tmp_path, progress=False, verbose=False)
    with pytest.raises(ModelSpecError, match=r"belongs to a different run: amp: 'bf16' "
                                             r"\(checkpoint\) vs 'off' \(now\)\."):
        train(TrainConfig(**one_epoch), tmp_path, progress=False, verbose=False)
