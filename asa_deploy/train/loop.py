"""The training stage: Adam + cosine schedule, per-epoch checkpoints with exact resume, model
selection on the validation split, optional data parallelism (train/distributed.py).

Determinism: the shuffle of epoch e comes from (seed, e), each RCS window from (seed, e, index), and the
torch RNG state (dropout) is saved with every checkpoint, so a run killed mid-epoch and started again
with the same command ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from asa_deploy import io
from asa_deploy.data import FramedDataset, FrameSpec, open_dataset, stratified_split
from asa_deploy.errors import AsaDeployError, ModelSpecError
from asa_deploy.nn import SpikingNetwork, build_network, load_model_spec
from asa_deploy.train import distributed as D
from asa_deploy.train.config import TrainConfig
from asa_deploy.train.evaluation import collate, evaluate

log = logging.getLogger("asa_deploy.train")
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "train_log.jsonl"
FORMAT_VERSION = 1


@dataclass
class Prepared:
    """What a config turns into before training: network, framed splits and their provenance."""

    model: SpikingNetwork
    train_set: FramedDataset
    val_set: FramedDataset
    data_info: dict


def prepare(config: TrainConfig) -> Prepared:
    dataset = open_dataset(config.data, seed=config.seed)
    spec = load_model_spec(config.model)
    spec = spec.with_overrides(params=config.params, T=config.T)
    if config.asa_lambda is not None:
        spec.asa["lambda"] = config.asa_lambda
    if config.asa_r is not None:
        spec.asa["r"] = config.asa_r
    default = dataset.frame_spec
    frames = FrameSpec(T=spec.T, dt_us=config.dt_us or default.dt_us,
                       downsample=config.downsample or default.downsample,
                       binarize=config.binarize)
    width, height, polarities = dataset.sensor_size
    data_shape = (polarities, height // frames.downsample, width // frames.downsample)
    model_shape = (spec.input["channels"], spec.input["height"], spec.input["width"])
    if data_shape != model_shape:
        raise ModelSpecError(
            f"model {spec.name!r} takes {model_shape[0]}x{model_shape[1]}x{model_shape[2]} input "
            f"but {config.data} framed with downsample {frames.downsample} gives "
            f"{data_shape[0]}x{data_shape[1]}x{data_shape[2]}; pick a model for this sensor "
            f"(asa-deploy models) or set --downsample")
    train_idx, val_idx = stratified_split(dataset.labels, n_val=config.n_val,
                                          val_fraction=config.val_fraction, seed=config.seed)
    torch.manual_seed(config.seed)
    model = build_network(spec, dataset.num_classes, config.attention)
    data_info = {
        "spec": config.data, "sensor_size": list(dataset.sensor_size),
        "class_names": list(dataset.class_names), "frame_spec": frames.to_dict(),
        "split": {"seed": config.seed, "train": train_idx.tolist(), "val": val_idx.tolist()},
        "skipped": [list(s) for s in dataset.skipped],
    }
    return Prepared(
        model=model,
        train_set=FramedDataset(dataset, train_idx, frames, mode="rcs", seed=config.seed),
        val_set=FramedDataset(dataset, val_idx, frames, mode="test",
                              n_windows=config.eval_windows, seed=config.seed),
        data_info=data_info,
    )


def per_sample_loss(out: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """[B] losses from output spikes [B, T, K]."""
    if kind == "mse":
        target = F.one_hot(labels, out.shape[-1]).to(out.dtype)
        return ((out.mean(1) - target) ** 2).mean(1)
    if kind == "ce":
        return F.cross_entropy(out.sum(1), labels, reduction="none")
    raise AsaDeployError(f"loss {kind!r} unknown; use mse or ce")


def train(config: TrainConfig, out_dir: Path, *, progress: bool = True, verbose: bool = True,
          device: str | None = None) -> dict:
    """Train (or resume) into ``out_dir``; returns the final ``model.pt`` contents' metrics."""
    out_dir = Path(out_dir)
    group = D.init_from_env(device)
    try:
        return _train(config, out_dir, group, progress, verbose)
    finally:
        D.shutdown(group)


def _train(config: TrainConfig, out_dir: Path, group: D.ProcessGroup, progress: bool,
           verbose: bool) -> dict:
    prepared = prepare(config)
    model = prepared.model.to(group.device)
    if group.world_size > 1:
        D.use_global_batch_norm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs,
                                                          eta_min=config.lr_min)
    state = {"epoch": 0, "history": [], "best": None}
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = _resume(checkpoint_path, config, model, optimizer, schedule)
        if group.is_main:
            log.info("resuming %s after epoch %d", out_dir, state["epoch"])

    train_set, val_set = prepared.train_set, prepared.val_set
    skipped = prepared.data_info["skipped"]
    if verbose and group.is_main:
        print(f"data {config.data}: {len(train_set)} train / {len(val_set.indices)} validation "
              f"recordings, {len(skipped)} bad file(s) skipped"
              + "".join(f"\n  skipped {source}: {why}" for source, why in skipped), flush=True)
    n_train = len(train_set)
    batch = min(config.batch_size, n_train)
    for epoch in range(state["epoch"], config.epochs):
        model.train()
        train_set.set_epoch(epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(n_train)
        batches = [order[i:i + batch] for i in range(0, n_train - batch + 1, batch)]
        losses, t0 = [], time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=None if progress and group.is_main else True)  # None: no bars off a TTY
        for global_batch in bar:
            start, stop = group.shard(len(global_batch))
            frames, labels, _ = collate([train_set[int(i)] for i in global_batch[start:stop]])
            model.set_batch_shard(len(global_batch), start, stop)
            model.reset_states()
            out = model(frames.to(group.device))
            loss = per_sample_loss(out, labels.to(group.device), config.loss).sum() / len(global_batch)
            optimizer.zero_grad()
            loss.backward()
            D.sum_gradients(model, group)
            optimizer.step()
            losses.append(float(D.sum_tensor(loss.detach().cpu().double(), group)))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        schedule.step()
        train_seconds = time.perf_counter() - t0
        metrics = evaluate(model, val_set, group=group, progress=progress)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": schedule.get_last_lr()[0],
                  "val_accuracy": metrics["accuracy"], "val_window_accuracy": metrics["window_accuracy"],
                  "val_nasfr": metrics["nasfr"], "val_sfr": metrics["sfr"],
                  "train_samples_per_s": len(batches) * batch / train_seconds,
                  "skipped_recordings": len(skipped)}
        state["history"].append(record)
        if state["best"] is None or metrics["accuracy"] > state["best"]["metrics"]["accuracy"]:
            state["best"] = {"epoch": epoch + 1, "metrics": metrics, "weights": model.weights()}
        state["epoch"] = epoch + 1
        if group.is_main:
            _checkpoint(checkpoint_path, config, model, optimizer, schedule, state)
            io.write_text(out_dir / LOG, "".join(io.json_line(r) for r in state["history"]))
            if verbose:
                print(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  "
                      f"val acc {metrics['accuracy']:.3f}  NASFR {metrics['nasfr']:.4f}  "
                      f"({record['train_samples_per_s']:.0f} samples/s)", flush=True)
        D.barrier(group)

    best = state["best"]
    artifact = {
        "format_version": FORMAT_VERSION,
        "model_spec": model.spec.to_dict(),
        "attention": config.attention,
        "num_classes": model.num_classes,
        "data": prepared.data_info,
        "train_config": config.to_dict(),
        "weights": best["weights"],
        "metrics": {"best_epoch": best["epoch"], "val": best["metrics"],
                    "last": state["history"][-1]},
    }
    if group.is_main:
        io.save_torch(out_dir / MODEL, artifact)
    return artifact["metrics"]


def _checkpoint(path, config, model, optimizer, schedule, state) -> None:
    io.save_torch(path, {
        "format_version": FORMAT_VERSION,
        "train_config": config.to_dict(),
        "model_spec": model.spec.to_dict(),
        "weights": model.weights(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "state": state,
    })


def _resume(path: Path, config: TrainConfig, model, optimizer, schedule) -> dict:
    saved = torch.load(path, weights_only=False)
    before = TrainConfig.from_dict(saved["train_config"])
    differences = before.differences(config)
    if saved["model_spec"] != model.spec.to_dict():
        differences.append(f"model spec: {_spec_diff(saved['model_spec'], model.spec.to_dict())}")
    if differences:
        raise ModelSpecError(
            f"{path} belongs to a different run: " + "; ".join(differences) +
            ". Use another --out folder, or delete the checkpoint to start over.")
    model.load_weights(saved["weights"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["torch_rng"])
    return saved["state"]


def _spec_diff(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys)


def eval_set(artifact: dict, data: str | None = None, *, windows: int = 10,
             mode: str = "test") -> tuple[FramedDataset, str]:
    """The run's own validation split (``data`` None or the run's spec), or every recording of
    another data spec, framed as the run was trained; with a description for printing."""
    info = artifact["data"]
    spec = data or info["spec"]
    dataset = open_dataset(spec, seed=info["split"]["seed"])
    frames = FrameSpec(**info["frame_spec"])
    if spec == info["spec"]:
        indices, what = np.asarray(info["split"]["val"]), "validation split"
    else:
        indices, what = np.arange(len(dataset)), "all recordings"
    framed = FramedDataset(dataset, indices, frames, mode=mode, n_windows=windows)
    return framed, f"{spec} ({what})"


def load_run(run_dir: Path) -> tuple[SpikingNetwork, dict]:
    """The trained network of a run directory and its ``model.pt`` record."""
    from asa_deploy.nn import ModelSpec

    path = Path(run_dir) / MODEL
    if not path.is_file():
        raise AsaDeployError(f"{path} not found: train first (asa-deploy train --out {run_dir})")
    artifact = torch.load(path, weights_only=False)
    spec = ModelSpec.from_dict(artifact["model_spec"], str(path))
    model = build_network(spec, artifact["num_classes"], artifact["attention"])
    model.load_weights(artifact["weights"])
    model.eval()
    return model, artifact
