"""The fold stage: calibrate -> fold -> lower for a chip -> fine-tune -> compile, measured at every step.

``fold_run`` turns a trained run (vanilla or with attention) into chip layers for one chip and writes
``folded.pt`` (the chip layers ``compile`` then uses), ``fold.json`` (the fidelity ladder, every
strategy tried, the calibration summary, the fine-tuning log), ``fold_maps.png`` (calibrated maps),
and the compiled ``chip_config.json`` / ``mapping.json``. The ladder, on the run's validation split:

dynamic float -> static (mean gain) -> folded (per-neuron thresholds, float) -> lowered (IAF, the
chosen strategy, thresholds balanced to the source rates, float) -> fine-tuned (quantization-aware,
cross-entropy on output counts: MSE on multi-spike counts diverged in measurement) -> quantized on
the ``fast`` simulator -> ``exact``.

A vanilla run has no folding steps; it goes through the same lowering, fine-tuning and simulators so
the comparison stays fair. The strategy is chosen per chip by measurement: every strategy the chip
supports is evaluated after lowering, and the most accurate (then the sparsest) wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asa_deploy.chip.compile import (
    CHIP_CONFIG,
    MAPPING,
    compile_network,
    load_network_for_compile,
)
from asa_deploy.chip.lower import LoweredNetwork, lower
from asa_deploy.chip.sim import simulate
from asa_deploy.chip.simulate import event_windows, recording_accuracy
from asa_deploy.chip.spec import load_chip_spec
from asa_deploy.data import FramedDataset, FrameSpec, open_dataset
from asa_deploy.errors import AsaDeployError
from asa_deploy.fold.balance import balance_thresholds
from asa_deploy.fold.calibrate import calibrate, plot_calibration
from asa_deploy.fold.finetune import ChipAwareNetwork, finetune
from asa_deploy.fold.static import fold_static, lower_folded, static_network
from asa_deploy.fold.strategies import apply_strategy, input_mask, supported_strategies
from asa_deploy.io import save_torch, write_json
from asa_deploy.train import evaluate

FOLDED = "folded.pt"
FOLD_JSON = "fold.json"
FOLD_FORMAT = 1


def _float_row(step: str, result: dict) -> dict:
    spikes = sum(result["sfr"][name] * result["neurons"][name] for name in result["sfr"])
    return {"step": step, "accuracy": result["accuracy"], "window_accuracy": result["window_accuracy"],
            "nasfr": result["nasfr"], "spikes_per_window_per_step": spikes}


def _sim_row(step: str, result) -> dict:
    summary = result.to_dict()
    n = max(summary["n_windows"], 1)
    return {"step": step, "accuracy": recording_accuracy(result),
            "window_accuracy": summary["accuracy"],
            "spikes_per_window": float(result.spikes_per_core.sum() / n),
            "synops_per_window": float(result.synops_per_core.sum() / n),
            "spikes_per_core": summary["spikes_per_core"]["mean"],
            "synops_per_core": summary["synops_per_core"]["mean"]}


def fold_run(run_dir: str | Path, chip: str = "speck2f", *, calib: str | None = None,
             calib_recordings: int = 64, eval_windows: int = 2, strategy: str | None = None,
             bias_policy: str = "drop", use_input_mask: bool = False, balance: bool = True,
             finetune_epochs: int = 3, finetune_lr: float = 1e-4, finetune_loss: str = "ce",
             seed: int = 0, progress: bool = False) -> dict:
    run_dir = Path(run_dir)
    spec = load_chip_spec(chip)
    model, artifact, input_shape, sensor = load_network_for_compile(run_dir)
    data = artifact["data"]
    frames = FrameSpec(**data["frame_spec"])
    dataset = open_dataset(data["spec"], seed=data["split"]["seed"])
    train_idx = np.asarray(data["split"]["train"])
    val_set = FramedDataset(dataset, np.asarray(data["split"]["val"]), frames, mode="test",
                            n_windows=eval_windows)
    ladder, report = [], {"run": str(run_dir), "chip": spec.name, "attention": artifact["attention"],
                          "bias_policy": bias_policy}
    ladder.append(_float_row("dynamic float", evaluate(model, val_set, progress=progress)))

    has_attention = bool(model.attention_layers())
    first_gain, reference = None, model
    calib_dataset = open_dataset(calib, seed=seed) if calib else dataset
    calib_idx = (np.arange(len(calib_dataset)) if calib else train_idx)[:calib_recordings]
    calib_set = FramedDataset(calib_dataset, calib_idx, frames, mode="test", n_windows=2)
    if has_attention:
        calibration = calibrate(model, calib_set, progress=progress)
        plot_calibration(calibration, run_dir / "fold_maps.png")
        report["calibration"] = {name: c.to_dict() for name, c in calibration.items()}
        report["calibration_data"] = f"{calib or data['spec']} ({len(calib_set)} windows)"
        ladder.append(_float_row("static (mean gain)", evaluate(
            static_network(model, calibration), val_set, progress=progress)))
        folded = fold_static(model, calibration)
        ladder.append(_float_row("folded (per-neuron thresholds)",
                                 evaluate(folded.folded, val_set, progress=progress)))
        per_neuron = lower_folded(folded, input_shape, bias_policy=bias_policy)
        reference = folded.folded
        first_gain = calibration[next(iter(calibration))].gain_mean
    else:
        report["calibration"] = None
        per_neuron = lower(model, input_shape, bias_policy=bias_policy)

    candidates = ([strategy] if strategy else supported_strategies(spec)) if has_attention else [None]
    tried = {}
    for name in candidates:
        lowered, layers = (apply_strategy(per_neuron, name, spec) if name
                           else (per_neuron, {}))
        multipliers = None
        if balance:
            lowered, multipliers = balance_thresholds(lowered, reference, calib_set)
        result = evaluate(ChipAwareNetwork(lowered, None), val_set, progress=progress)
        tried[name or "none"] = {"layers": layers, "threshold_multipliers": multipliers,
                                 **_float_row(f"lowered ({name})", result), "lowered": lowered}
    best_name = max(tried, key=lambda k: (tried[k]["accuracy"], tried[k]["window_accuracy"],
                                          -tried[k]["nasfr"]))
    best = tried[best_name].pop("lowered")
    for entry in tried.values():
        entry.pop("lowered", None)
    report["strategies"] = tried
    report["strategy"] = best_name
    balanced = ", thresholds balanced" if balance else ""
    ladder.append({k: v for k, v in tried[best_name].items()
                   if k not in ("layers", "threshold_multipliers")}
                  | {"step": f"lowered to {spec.name} ({best_name}, IAF{balanced}, float)"})
    if use_input_mask and first_gain is not None:
        best.input_mask = input_mask(first_gain, best.input_shape)
        report["input_mask_kept"] = float(best.input_mask.float().mean())

    tuned, log = best, []
    if finetune_epochs > 0:
        train_set = FramedDataset(dataset, train_idx, frames, mode="rcs", seed=seed)
        tuned, log = finetune(best, train_set, val_set, spec.numerics, epochs=finetune_epochs,
                              lr=finetune_lr, loss=finetune_loss, seed=seed, progress=progress)
        ladder.append(_float_row("fine-tuned (IAF, quantization-aware, float)",
                                 evaluate(ChipAwareNetwork(tuned, None), val_set, progress=progress)))
    report["finetune_log"] = log

    compiled = compile_network(tuned, spec, input_shape=input_shape, sensor=sensor,
                               bias_policy=bias_policy, class_names=list(data["class_names"]),
                               meta={"source": str(run_dir / FOLDED), "model": model.spec.name,
                                     "attention": artifact["attention"], "fold_strategy": best_name,
                                     "frame_spec": data["frame_spec"], "data_spec": data["spec"],
                                     "split": data["split"]})
    compiled.config.save(run_dir / CHIP_CONFIG)
    write_json(run_dir / MAPPING, compiled.report(spec))
    windows, _ = event_windows(compiled.config, None, windows=eval_windows)
    for engine in ("fast", "exact"):
        result = simulate(compiled.config, windows, engine, progress=progress)
        ladder.append(_sim_row(f"quantized, {engine} simulator", result))
    report["ladder"] = ladder
    report["compile_notes"] = compiled.notes
    save_torch(run_dir / FOLDED, {"format_version": FOLD_FORMAT, "chip": spec.name,
                                  "strategy": best_name, "lowered": tuned,
                                  "input_shape": input_shape, "data": data,
                                  "attention": artifact["attention"]})
    write_json(run_dir / FOLD_JSON, report)
    return report


def load_folded(run_dir: str | Path) -> tuple[LoweredNetwork, dict]:
    path = Path(run_dir) / FOLDED
    record = torch.load(path, weights_only=False)
    if record.get("format_version") != FOLD_FORMAT:
        raise AsaDeployError(f"{path}: format {record.get('format_version')!r}, this asa_deploy "
                             f"reads {FOLD_FORMAT}; rerun asa-deploy fold")
    return record["lowered"], record

