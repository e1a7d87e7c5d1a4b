"""The training stage: Adam + cosine schedule, per-epoch checkpoints with exact resume, model
selection on the validation split, optional data parallelism (train/distributed.py).

Determinism: the shuffle of epoch e comes from (seed, e), each RCS window from (seed, e, index), and the
torch RNG state (dropout) is saved with every checkpoint, so a run killed mid-epoch and started again
with the same command ends with the same weights as an uninterrupted one. Framing runs in ``--workers``
DataLoader processes (spawned and kept for all epochs: ``asa_deploy.data.workers``), which use no
random numbers (the windows are seeded per item) and draw their loader seed from a private
generator, never torch's global one: the result is the same for any number of workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from asa_deploy import io, provenance
from asa_deploy.data import (
    CacheSetting,
    FramedDataset,
    FrameSpec,
    check_class_names,
    check_input_shape,
    open_dataset,
    stratified_split,
)
from asa_deploy.data.framing import SILENT_FLOAT_REMEDY, FrameCache, silent_output_warning
from asa_deploy.data.workers import batches_of, worker_options
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.errors import ArtifactError, AsaDeployError, DataSpecError, ModelSpecError
from asa_deploy.metrics import current_names
from asa_deploy.nn import SpikingNetwork, apply_recipe, build_network, load_model_spec
from asa_deploy.progress import progress as progress_bar
from asa_deploy.rundir import (
    CHECKPOINT,
    EVAL_JSON,
    MODEL,
    PREVIOUS_CHECKPOINT,
    TRAIN_LOG,
    data_artifact,
    supersede,
)
from asa_deploy.train import distributed as D
from asa_deploy.train.accelerator import Precision, resolve_device
from asa_deploy.train.config import TrainConfig
from asa_deploy.train.cost import CostMeter
from asa_deploy.train.evaluation import collate, evaluate, shard_items
from asa_deploy.train.memory import apply_memory_mode

log = logging.getLogger("asa_deploy.train")
FORMAT_VERSION = 1


@dataclass
class Prepared:
    """What a config turns into before training: network, framed splits and their provenance."""

    model: SpikingNetwork
    train_set: FramedDataset
    val_set: FramedDataset
    data_info: dict


def prepare(config: TrainConfig, *, cache: CacheSetting = None) -> Prepared:
    dataset = open_dataset(config.data, seed=config.seed, cache=cache)
    spec = load_model_spec(config.model)
    spec = apply_recipe(spec.with_overrides(params=config.params, T=config.T, neuron=config.neuron), config.recipe,
                        release_masks=config.release_masks)
    if config.asa_lambda is not None:
        spec.asa["lambda"] = config.asa_lambda
    if config.asa_r is not None:
        spec.asa["r"] = config.asa_r
    default = dataset.frame_spec
    frames = FrameSpec(T=spec.T, dt_us=config.dt_us or default.dt_us,
                       downsample=config.downsample or default.downsample,
                       binarize=config.binarize)
    check_input_shape(dataset.sensor_size, frames.downsample,
                      (spec.input["channels"], spec.input["height"], spec.input["width"]),
                      target=f"model {spec.name!r}", data=config.data,
                      fix="pick a model for this sensor (asa-deploy models) or set --downsample")
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
          device: str | None = None, cache: CacheSetting = None) -> dict:
    """Train (or resume) into ``out_dir``; returns the final ``model.pt`` contents' metrics.
    ``device`` (None: ``config.device``) and ``config.amp`` are checked before any data is read;
    ``cache``: where decoded recordings live (``open_dataset``), not part of the run."""
    out_dir = Path(out_dir)
    group = D.init_from_env(device or config.device)
    try:
        precision = Precision(group.device, config.amp)
        return _train(config, out_dir, group, precision, progress, verbose, cache)
    finally:
        D.shutdown(group)


def _train(config: TrainConfig, out_dir: Path, group: D.ProcessGroup, precision: Precision,
           progress: bool, verbose: bool, cache: CacheSetting) -> dict:
    prepared = prepare(config, cache=cache)
    model = prepared.model.to(group.device)
    if group.world_size > 1:
        D.use_global_batch_norm(model)
    if (not apply_memory_mode(model, config.memory) and config.memory == "lean" and verbose
            and group.is_main):
        print(f"--memory lean: model {model.spec.name!r} has no conv -> BN -> avg pool block, "
              f"so only the heap bound applies (max pool and BN-free blocks run torch's "
              f"layers)", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs,
                                                          eta_min=config.lr_min)
    state = {"epoch": 0, "history": [], "best": None}
    checkpoint_path = out_dir / CHECKPOINT
    replace_unreadable = False  # checkpoint.pt was unreadable: overwrite it, keep the good previous
    if checkpoint_path.exists() or (out_dir / PREVIOUS_CHECKPOINT).exists():
        state, replace_unreadable = _resume(out_dir, config, model, optimizer, schedule,
                                            warn=group.is_main)
        precision.load_state_dict(state.get("amp_scaler"))
        if group.is_main:
            log.info("resuming %s after epoch %d", out_dir, state["epoch"])
    elif group.is_main:
        moved_to, moved = supersede(out_dir)
        if moved:
            print(f"training a new model in {out_dir}: the previous model's artifacts "
                  f"({', '.join(moved)}) moved to {moved_to}", flush=True)
    D.barrier(group)
    # Rerunning a finished command keeps model.pt as it is, so its downstream artifacts stay current.
    finished_before = state["epoch"] >= config.epochs and (out_dir / MODEL).is_file()

    train_set, val_set = prepared.train_set, prepared.val_set
    skipped = prepared.data_info["skipped"]
    if verbose and group.is_main:
        print(f"data {config.data}: {len(train_set)} train / {len(val_set.indices)} validation "
              f"recordings, {len(skipped)} bad file(s) skipped"
              + "".join(f"\n  skipped {source}: {why}" for source, why in skipped), flush=True)
    validate = len(val_set.indices) > 0
    if not validate and verbose and group.is_main:
        print("no validation recordings (--n-val 0, or too few recordings per class to hold one "
              "out): no model selection, model.pt keeps the last epoch", flush=True)
    meter = CostMeter(model)
    pin = group.device.startswith("cuda")  # pinned host memory only pays off for copies to a GPU
    val_frames = None  # the validation windows never change: framed once, at the first validation
    epoch_batches, loader = train_loader(train_set, config, group, pin)
    batch = epoch_batches.batch
    for epoch in range(state["epoch"], config.epochs):
        model.train()
        epoch_batches.set_epoch(epoch)
        batches, shards = epoch_batches.batches, epoch_batches.shards
        losses, t0 = [], time.perf_counter()
        synops = torch.zeros(3, dtype=torch.float64)  # network-driven, input-driven, windows
        bar = progress_bar(zip(batches, shards, batches_of(loader), strict=True),
                           total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}",
                           unit="batch", leave=False, enabled=progress and group.is_main)
        for global_batch, (start, stop), (frames, labels, _) in bar:
            loss, network, inputs = train_step(model, meter, optimizer, precision, group, config,
                                               frames, labels, len(global_batch), start, stop, pin)
            synops += torch.stack([network.detach().sum().double().cpu(), inputs.sum().double().cpu(),
                                   torch.tensor(float(len(network)), dtype=torch.float64)])
            losses.append(float(D.sum_tensor(loss.detach().cpu().double(), group)))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        schedule.step()
        synops = D.sum_tensor(synops, group)
        network_synops, input_synops = float(synops[0] / synops[2]), float(synops[1] / synops[2])
        train_seconds = time.perf_counter() - t0
        if validate and val_frames is None:
            val_frames = FrameCache(val_set, shard_items(len(val_set), group),
                                    workers=config.workers)
        # in batches of this rank's training shard, so validation needs no more memory than a step
        # (evaluate's default of 64 windows takes 5 GB for arch-a at T = 60); in eval mode each
        # window's output is the same, bit for bit, whatever the batch it runs in
        metrics = evaluate(model, val_frames, batch_size=-(-batch // group.world_size), group=group,
                           progress=progress) if validate else None
        val = metrics or {}
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": schedule.get_last_lr()[0],
                  "val_accuracy_window": val.get("accuracy_window"),
                  "val_accuracy_recording": val.get("accuracy_recording"),
                  "val_nasfr": val.get("nasfr"), "val_sfr": val.get("sfr"),
                  "train_samples_per_s": len(batches) * batch / train_seconds,
                  "synops_per_window": network_synops + input_synops,
                  "network_synops_per_window": network_synops,
                  "input_synops_per_window": input_synops,
                  "skipped_recordings": len(skipped)}
        state["history"].append(record)
        if (metrics is None or state["best"] is None
                or metrics["accuracy_recording"] > state["best"]["metrics"]["accuracy_recording"]):
            state["best"] = {"epoch": epoch + 1, "metrics": metrics,
                             "weights": _on_cpu(model.weights())}
        state["epoch"] = epoch + 1
        if precision.scaler is not None:
            state["amp_scaler"] = precision.state_dict()
        if group.is_main:
            _checkpoint(checkpoint_path, config, model, optimizer, schedule, state,
                        keep_previous=not replace_unreadable)
            replace_unreadable = False
            io.write_text(out_dir / TRAIN_LOG, "".join(io.json_line(r) for r in state["history"]))
            if verbose:
                scores = (f"val accuracy per window {metrics['accuracy_window']:.3f}, per recording "
                          f"{metrics['accuracy_recording']:.3f} ({config.eval_windows} windows)  "
                          f"NASFR {metrics['nasfr']:.4f}  " if metrics else "no validation  ")
                print(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  {scores}"
                      f"synops/window {record['synops_per_window']:,.0f} (network "
                      f"{network_synops:,.0f})  ({record['train_samples_per_s']:.0f} samples/s)",
                      flush=True)
        D.barrier(group)

    meter.close()
    cost = synops_summary(config, state["history"])
    if verbose and group.is_main and cost is not None:
        print(cost["line"], flush=True)
    best = state["best"]
    val = best["metrics"] or {}  # older runs' metrics lack silent_windows
    silent = silent_output_warning(val.get("silent_windows"), val.get("windows"),
                                   SILENT_FLOAT_REMEDY, f"validation split, epoch {best['epoch']}")
    if silent and group.is_main:
        print(silent, flush=True)  # a warning: also without verbose
    artifact = {
        "format_version": FORMAT_VERSION,
        "model_spec": model.spec.to_dict(),
        "attention": config.attention,
        "recipe": config.recipe,
        "num_classes": model.num_classes,
        "data": prepared.data_info,
        "train_config": config.to_dict(),
        "weights": best["weights"],
        "metrics": {"best_epoch": best["epoch"], "val": best["metrics"],
                    "last": state["history"][-1], "synops_budget": cost},
        provenance.KEY: provenance.record(
            out_dir, data=config.data, split=f"stratified, seed {config.seed}",
            recipe=config.recipe, release_masks=config.release_masks,
            synops_weight=config.synops_weight, synops_budget=config.synops_budget,
            selection=(f"best of {config.epochs} epochs on the validation split "
                       f"({config.eval_windows} windows per recording)"
                       if best["metrics"] is not None else "last epoch (no validation split)")),
    }
    if group.is_main and not finished_before:
        io.save_torch(out_dir / MODEL, artifact)
    return artifact["metrics"]


class EpochBatches(Sampler):
    """An epoch's global batches (order seeded by seed and epoch, full batches only; the first
    ``limit``) and this rank's (start, stop) shard of each, after ``set_epoch``. It yields
    ``(epoch, index)`` items: the loader's workers live through all epochs with their own copy of
    the data set, so the epoch whose RCS windows they frame travels with each item."""

    def __init__(self, n_train: int, batch_size: int, seed: int, group, limit: int | None = None):
        self.n_train, self.batch, self.seed = n_train, min(batch_size, n_train), seed
        self.group, self.limit = group, limit
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_train)
        self.epoch = epoch
        self.batches = [order[i:i + self.batch]
                        for i in range(0, self.n_train - self.batch + 1, self.batch)][:self.limit]
        self.shards = [self.group.shard(len(b)) for b in self.batches]

    def __iter__(self):
        for b, (start, stop) in zip(self.batches, self.shards, strict=True):
            yield [(self.epoch, int(i)) for i in b[start:stop]]

    def __len__(self) -> int:
        return len(self.batches)


class _EpochItems(Dataset):
    """``dataset``'s item ``index`` in the RCS windows of ``epoch``, for an ``(epoch, index)``."""

    def __init__(self, dataset: FramedDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def train_loader(train_set: FramedDataset, config: TrainConfig, group, pin: bool,
                 limit: int | None = None) -> tuple[EpochBatches, DataLoader]:
    """The batches of every epoch (``set_epoch`` before iterating the loader) and the loader that
    frames this rank's shards, its ``config.workers`` spawned workers kept for all epochs."""
    batches = EpochBatches(len(train_set), config.batch_size, config.seed, group, limit)
    loader = DataLoader(_EpochItems(train_set), batch_sampler=batches, collate_fn=collate,
                        pin_memory=pin, generator=torch.Generator(),
                        **worker_options(config.workers, persistent=True))
    return batches, loader


def train_step(model, meter: CostMeter, optimizer, precision, group, config: TrainConfig,
               frames, labels, global_size: int, start: int, stop: int, pin: bool):
    """One optimizer step on this rank's rows [start, stop) of a global batch: the loss (summed
    over the shard / global size, cost term included) and the network- and input-driven synops."""
    frames = frames.to(group.device, non_blocking=pin)
    model.set_batch_shard(global_size, start, stop)
    model.reset_states()
    with precision.autocast():
        out = model(frames)
    loss = per_sample_loss(out.float(), labels.to(group.device, non_blocking=pin),
                           config.loss).sum() / global_size
    network, inputs = meter.synops(frames)
    if config.synops_weight:
        loss = loss + meter.penalty(network, inputs, config.synops_weight,
                                    config.synops_budget) / global_size
    optimizer.zero_grad()
    precision.backward(loss)
    D.sum_gradients(model, group)
    precision.step(optimizer)
    return loss, network, inputs


def synops_summary(config: TrainConfig, history: list[dict]) -> dict | None:
    """Against ``--synops-budget``: met or not, and the lowest synops per window any epoch reached
    (on training windows). A budget below the input-driven synops, which no weight changes, cannot
    be met: training still runs its epochs once and says so."""
    if config.synops_budget is None or not history:
        return None
    logged = [r for r in history if r.get("synops_per_window") is not None]
    if not logged:
        return None
    best = min(logged, key=lambda r: r["synops_per_window"])
    budget, reached = config.synops_budget, best["synops_per_window"]
    floor = min(r["input_synops_per_window"] for r in logged)
    met = reached <= budget
    line = (f"synops budget {budget:,.0f} per window: {'met' if met else 'NOT met'}; best reached "
            f"{reached:,.0f} (epoch {best['epoch']}, training windows)")
    if not met and floor > budget:
        line += (f"; the input-driven synops alone are {floor:,.0f} per window, which no network "
                 f"can cut: raise the budget, or cut the input (pooling, stride, fewer first-layer "
                 f"channels, pixel kill)")
    return {"budget": budget, "best_reached": reached, "best_epoch": best["epoch"], "met": met,
            "input_synops_per_window": floor, "line": line}


def _checkpoint(path, config, model, optimizer, schedule, state, *, keep_previous=True) -> None:
    """Write ``checkpoint.pt``; the one it replaces becomes ``checkpoint.prev.pt`` (atomic renames),
    so a checkpoint damaged later (disk full, a copy cut short) still leaves one to resume from."""
    io.save_torch(path, {
        "format_version": FORMAT_VERSION,
        "train_config": config.to_dict(),
        "model_spec": model.spec.to_dict(),
        "weights": _on_cpu(model.weights()),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "state": state,
    }, keep_previous=path.with_name(PREVIOUS_CHECKPOINT) if keep_previous else None)


def _on_cpu(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as saved: on the CPU, so that a plain ``torch.load`` works on any machine too."""
    return {k: v.cpu() for k, v in weights.items()}


CHECKPOINT_KEYS = ("train_config", "model_spec", "weights", "optimizer", "schedule", "torch_rng",
                   "state.epoch", "state.history", "state.best")


def _resume(out_dir: Path, config: TrainConfig, model, optimizer, schedule, *,
            warn: bool = True) -> tuple[dict, bool]:
    """Restore ``checkpoint.pt``, or ``checkpoint.prev.pt`` when it is missing or unreadable (a
    warning says so). Returns the training state and whether ``checkpoint.pt`` was unreadable."""
    current, previous = out_dir / CHECKPOINT, out_dir / PREVIOUS_CHECKPOINT
    start_over = "delete it to start training over, or train into another --out folder"
    if not previous.exists():
        return _restore(current, config, model, optimizer, schedule, start_over), False
    try:
        return _restore(current, config, model, optimizer, schedule, start_over), False
    except ArtifactError as first:
        try:
            state = _restore(previous, config, model, optimizer, schedule, start_over)
        except ArtifactError as second:
            raise ArtifactError(
                f"no readable checkpoint in {out_dir}: {current}: {first.problem}; {previous}: "
                f"{second.problem}. Delete both files to start training over, or train into "
                f"another --out folder") from second
        if warn:
            log.warning("%s %s; falling back to %s (epoch %d)", current,
                        "is missing" if not current.exists() else f"is unreadable ({first.problem})",
                        previous, state["epoch"])
        return state, True


def _restore(path: Path, config: TrainConfig, model, optimizer, schedule, remedy: str) -> dict:
    saved = io.load_torch(path, "training checkpoint", remedy=remedy, required_keys=CHECKPOINT_KEYS)
    try:
        before = TrainConfig.from_dict(saved["train_config"])
        if not isinstance(saved["model_spec"], dict):
            raise TypeError(f"model_spec is a {type(saved['model_spec']).__name__}")
    except (ModelSpecError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise io.artifact_error(path, f"not written by asa-deploy train ({io.brief(exc)})",
                                remedy) from exc
    differences = before.differences(config)
    if saved["model_spec"] != model.spec.to_dict():
        differences.append(f"model spec: {_spec_diff(saved['model_spec'], model.spec.to_dict())}")
    if differences:
        raise ModelSpecError(
            f"{path} belongs to a different run: " + "; ".join(differences) +
            ". Use another --out folder, or delete the checkpoint to start over.")
    try:
        model.load_weights(saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
    except (ModelSpecError, RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise io.artifact_error(path, f"its weights or optimizer state do not fit this run "
                                      f"({io.brief(exc)})", remedy) from exc
    state = saved["state"]  # an older version's accuracy keys under the current names
    state["history"] = [current_names(r, "recording", prefix="val_") for r in state["history"]]
    if state["best"] is not None and state["best"]["metrics"] is not None:
        state["best"]["metrics"] = current_names(state["best"]["metrics"], "recording")
    return state


def _spec_diff(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys)


def eval_set(artifact: dict, data: str | None = None, *, windows: int = TEST_WINDOWS,
             mode: str = "test", cache: CacheSetting = None) -> tuple[FramedDataset, str]:
    """The run's own validation split (``data`` None or the run's spec), or every recording of
    another data spec, framed as the run was trained; with a description for printing.
    ``cache``: where decoded recordings live (``open_dataset``)."""
    info = artifact["data"]
    spec = data or info["spec"]
    dataset = open_dataset(spec, seed=info["split"]["seed"], cache=cache)
    frames = FrameSpec(**info["frame_spec"])
    model_spec = artifact["model_spec"]
    sensor = "x".join(str(v) for v in info["sensor_size"])
    check_input_shape(dataset.sensor_size, frames.downsample,
                      [model_spec["input"][k] for k in ("channels", "height", "width")],
                      target=f"model {model_spec['name']!r}", data=spec,
                      fix=f"this run was trained on {info['spec']} (sensor {sensor}); test it on "
                          "data from that sensor, or train a model for this data")
    check_class_names(dataset.class_names, info["class_names"], data=spec,
                      target=f"model {model_spec['name']!r}")
    if spec == info["spec"] and info["split"]["val"]:
        indices, what = np.asarray(info["split"]["val"], dtype=np.int64), "validation split"
    elif spec == info["spec"] and data is None:
        raise DataSpecError(f"this run was trained without a validation split (--n-val 0, or "
                            f"one recording per class in {spec}); pass --data SPEC to test it "
                            f"on other recordings (its own spec tests the training recordings)")
    elif spec == info["spec"]:
        indices, what = np.arange(len(dataset)), "all recordings: the training set, no validation split"
    else:
        indices, what = np.arange(len(dataset)), "all recordings"
    framed = FramedDataset(dataset, indices, frames, mode=mode, n_windows=windows)
    return framed, f"{spec} ({what})"


def evaluate_run(run_dir: str | Path, data: str | None = None, *, windows: int = TEST_WINDOWS,
                 progress: bool = False, device: str = "auto",
                 cache: CacheSetting = None) -> tuple[dict, Path]:
    """The evaluate stage: accuracy and firing rates of ``RUN/model.pt`` on its validation split
    (written to ``eval.json``) or on ``data`` (written to ``eval-<data>.json``, never over the
    run's own figures), with the provenance of both. ``device``: a ``--device`` value; ``cache``:
    where decoded recordings live (``open_dataset``)."""
    run_dir = Path(run_dir)
    device = resolve_device(device)
    model, artifact = load_run(run_dir)
    dataset, described = eval_set(artifact, data, windows=windows, cache=cache)
    own = (data is None or data == artifact["data"]["spec"]) and bool(artifact["data"]["split"]["val"])
    path = run_dir / data_artifact(EVAL_JSON, data, artifact["data"]["spec"])
    result = {"run": str(run_dir), "data": described, "attention": artifact["attention"],
              "windows_per_recording": windows,
              **evaluate(model.to(device), dataset, group=D.ProcessGroup(device=device),
                         progress=progress),
              provenance.KEY: provenance.record(
                  run_dir, [MODEL], data=data or artifact["data"]["spec"],
                  split="validation" if own else "all recordings", windows=windows)}
    with io.results_kept((result, path)):
        io.write_json(path, result)
    return result, path


def load_run(run_dir: Path) -> tuple[SpikingNetwork, dict]:
    """The trained network of a run directory and its ``model.pt`` record."""
    from asa_deploy.nn import ModelSpec

    path = Path(run_dir) / MODEL
    artifact = load_model_record(run_dir)
    try:
        spec = ModelSpec.from_dict(artifact["model_spec"], str(path))
        model = build_network(spec, artifact["num_classes"], artifact["attention"])
        model.load_weights(artifact["weights"])
    except (AsaDeployError, RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise io.artifact_error(path, f"its record does not build the network it describes "
                                      f"({io.brief(exc)})", retrain_remedy(run_dir)) from exc
    model.eval()
    return model, artifact


MODEL_KEYS = ("model_spec", "attention", "num_classes", "weights", "data.spec", "data.sensor_size",
              "data.class_names", "data.frame_spec", "data.split.seed", "data.split.train",
              "data.split.val")


def retrain_remedy(run_dir: str | Path) -> str:
    return f"retrain with `asa-deploy train --out {run_dir} ...` (the same options)"


def load_model_record(run_dir: str | Path) -> dict:
    """``RUN/model.pt`` as saved (no network built); an ``ArtifactError`` naming it when it is
    missing, unreadable or not a trained model. An imported run is told where it can go: training
    into it would shelve the imported model."""
    if not (Path(run_dir) / MODEL).is_file():
        from asa_deploy.export.importer import IMPORTED, is_imported

        if is_imported(run_dir):
            raise ArtifactError(
                f"{run_dir} holds an imported model ({IMPORTED}), not a network trained by "
                f"asa-deploy train ({MODEL}): evaluate, analyze and fold need one trained here. "
                f"Take the imported model to the chip with `asa-deploy compile {run_dir} --chip "
                f"speck2f` (add --bias drop or --bias leak if its layers have biases), then "
                f"`asa-deploy simulate {run_dir}`", path=str(Path(run_dir) / MODEL))
    return io.load_torch(Path(run_dir) / MODEL, "trained model", required_keys=MODEL_KEYS,
                         remedy=retrain_remedy(run_dir),
                         if_missing=f"train first (asa-deploy train --out {run_dir})")
