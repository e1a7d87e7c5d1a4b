"""The fold stage: calibrate -> fold -> lower for a chip -> fine-tune, measured at every step.

``fold`` turns a trained run (vanilla or with attention) into chip layers for one chip and writes
``folded.pt`` (the chip layers ``compile`` then uses) and ``fold_maps.png`` (calibrated maps);
``asa_deploy.pipeline.fold_run`` then compiles and simulates them and writes ``fold.json`` (the
fidelity ladder, every strategy tried, the calibration summary, the fine-tuning log). The ladder, on
the run's validation split:

dynamic float -> static (mean gain) -> folded (per-neuron thresholds, float) -> lowered (IAF, the
chosen strategy, thresholds balanced to the source rates, float) -> fine-tuned (quantization-aware,
cross-entropy on output counts: MSE on multi-spike counts diverged in measurement) -> quantized on
the ``fast`` simulator -> ``exact``.

The strategy is chosen per chip by measurement: every strategy the chip supports is lowered, balanced
and fine-tuned, and the most accurate after fine-tuning (then the sparsest) wins; a strategy that
lowers to the same cores as an earlier one (e.g. ``kill`` when no neuron is below the kill level) is
not trained twice.

A vanilla run has no folding steps; it goes through the same lowering, fine-tuning and simulators so
the comparison stays fair.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from asa_deploy import provenance
from asa_deploy.chip.compile import SensorInput, check_network, chip_inputs
from asa_deploy.chip.lower import LoweredNetwork, lower
from asa_deploy.chip.spec import ChipSpec, load_chip_spec
from asa_deploy.data import (
    CacheSetting,
    FramedDataset,
    FrameSpec,
    check_input_shape,
    open_dataset,
)
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.errors import AsaDeployError, CompileError
from asa_deploy.fold.balance import balance_thresholds
from asa_deploy.fold.calibrate import calibrate, plot_calibration
from asa_deploy.fold.finetune import GATE_SUFFIX, ChipAwareNetwork, finetune
from asa_deploy.fold.gate import (
    add_gates,
    check_gated,
    choose_gated,
    distill_pairs,
    feedback_weights,
)
from asa_deploy.fold.static import fold_static, lower_folded, static_network
from asa_deploy.fold.strategies import apply_strategy, input_mask, supported_strategies
from asa_deploy.io import artifact_error, load_torch, save_torch
from asa_deploy.rundir import FOLD_MAPS, FOLDED, MODEL
from asa_deploy.train import evaluate, load_run
from asa_deploy.train.evaluation import collate

FOLD_FORMAT = 1


def _float_row(step: str, result: dict) -> dict:
    spikes = sum(result["sfr"][name] * result["neurons"][name] for name in result["sfr"])
    return {"step": step, "accuracy_window": result["accuracy_window"],
            "accuracy_recording": result["accuracy_recording"],
            "nasfr": result["nasfr"], "spikes_per_window_per_step": spikes,
            "silent_windows": result["silent_windows"], "windows": result["windows"]}


@dataclass
class Folded:
    """The fold stage's result: chip layers (also in ``folded.pt``), what they need to compile,
    and the ladder's float rungs with the report so far (``pipeline.fold_run`` adds the rest)."""

    layers: LoweredNetwork
    spec: ChipSpec
    input_shape: tuple[int, int, int]
    sensor: SensorInput
    artifact: dict
    ladder: list[dict]
    report: dict


def fold(run_dir: str | Path, chip: str = "speck2f", *, calib: str | None = None,
         calib_recordings: int = 64, eval_windows: int = TEST_WINDOWS,
         strategy: str | None = None,
         bias_policy: str = "drop", use_input_mask: bool = False,
         input_mask_keep: float = 0.5, balance: bool = True,
         finetune_epochs: int = 3, finetune_lr: float = 1e-4, finetune_loss: str = "ce",
         finetune_substeps: int = 1,
         synops_weight: float = 0.0, synops_budget: float | None = None,
         gates: int = 0, gate_at: list[str] | None = None, gate_channels: int = 1,
         gate_kernel: int = 3, gate_fire_share: float = 0.3, gate_lr: float = 1e-3,
         distill_weight: float = 0.0,
         seed: int = 0, progress: bool = False, cache: CacheSetting = None) -> Folded:
    """Calibrate, fold, lower for ``chip``, fine-tune and write ``folded.pt``, measuring every
    float step on the run's validation split; ``cache``: where decoded recordings live
    (``open_dataset``). ``gates`` (placed by calibration) or ``gate_at`` (layer names): spiking
    gates added before fine-tuning (``fold.gate``), trained with it, distilled from the dynamic
    network with ``distill_weight``."""
    run_dir = Path(run_dir)
    if synops_budget is not None and not synops_weight:
        raise AsaDeployError(f"fold {run_dir}: --synops-budget {synops_budget:g} with synops weight "
                             f"0; a budget needs a weight: set --synops-weight, e.g. 1")
    spec = load_chip_spec(chip)
    model, artifact = load_run(run_dir)
    input_shape, sensor = chip_inputs(model.spec.input, artifact["data"])
    data = artifact["data"]
    if not data["split"]["val"]:
        raise AsaDeployError(f"{run_dir} was trained without a validation split (--n-val 0, or one "
                             f"recording per class); fold measures every step on it: retrain "
                             f"with a validation split")
    check_fits(model, spec, input_shape, sensor, bias_policy)
    gate_count = len(gate_at) if gate_at else gates
    if gate_count and finetune_epochs < 1:
        raise AsaDeployError(f"fold {run_dir}: a gate starts with zero weights into its layer and "
                             f"learns them in fine-tuning; use --finetune-epochs 1 or more")
    if distill_weight and not gate_count:
        raise AsaDeployError(f"fold {run_dir}: --distill-weight trains spiking gates towards the "
                             f"dynamic network; add --gate N")
    if distill_weight and not model.attention_layers():
        raise AsaDeployError(f"fold {run_dir}: --distill-weight needs a run with attention (the "
                             f"dynamic network is the teacher); this one is vanilla")
    if distill_weight and finetune_substeps != 1:
        raise AsaDeployError(f"fold {run_dir}: --distill-weight compares spike counts with the "
                             f"dynamic network at the run's bins; drop --finetune-substeps")
    frames = FrameSpec(**data["frame_spec"])
    dataset = open_dataset(data["spec"], seed=data["split"]["seed"], cache=cache)
    train_idx = np.asarray(data["split"]["train"])
    val_set = FramedDataset(dataset, np.asarray(data["split"]["val"]), frames, mode="test",
                            n_windows=eval_windows)
    ladder, report = [], {"run": str(run_dir), "chip": spec.name, "attention": artifact["attention"],
                          "bias_policy": bias_policy}
    ladder.append(_float_row("dynamic float", evaluate(model, val_set, progress=progress)))

    has_attention = bool(model.attention_layers())
    first_gain, reference = None, model
    calib_dataset = open_dataset(calib, seed=seed, cache=cache) if calib else dataset
    check_input_shape(calib_dataset.sensor_size, frames.downsample, input_shape,
                      target=f"model {artifact['model_spec']['name']!r}", data=calib or data["spec"],
                      fix=f"calibrate on data from the run's sensor ({data['spec']})")
    calib_idx = (np.arange(len(calib_dataset)) if calib else train_idx)[:calib_recordings]
    calib_set = FramedDataset(calib_dataset, calib_idx, frames, mode="test", n_windows=2)
    if has_attention:
        calibration = calibrate(model, calib_set, progress=progress)
        plot_calibration(calibration, run_dir / FOLD_MAPS)
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
        calibration, report["calibration"] = None, None
        per_neuron = lower(model, input_shape, bias_policy=bias_policy)

    candidates = ([strategy] if strategy else supported_strategies(spec)) if has_attention else [None]
    mask = (input_mask(first_gain, per_neuron.input_shape, keep=input_mask_keep)
            if use_input_mask and first_gain is not None else None)
    if mask is not None:
        report["input_mask_kept"] = float(mask.float().mean())
    fine = _substep_frames(frames, finetune_substeps, run_dir)
    train_set = FramedDataset(dataset, train_idx, fine, mode="rcs", seed=seed)
    fine_val_set = val_set if fine == frames else FramedDataset(
        dataset, np.asarray(data["split"]["val"]), fine, mode="test", n_windows=eval_windows)
    tried, networks, unbalanced = {}, {}, {}
    gated, gate_report = [], None
    if gate_count:
        if gate_at:
            gated, why = list(gate_at), {"placement": "given (--gate-at)"}
        else:
            gated, why = choose_gated(per_neuron, gates, calibration)
        gate_frames = collate([calib_set[i] for i in range(min(len(calib_set), 64))])[0]
        gate_report = {"layers": gated, **why, "channels": gate_channels, "kernel": gate_kernel,
                       "fire_share": gate_fire_share, "lr": gate_lr,
                       "distill_weight": distill_weight}
    for name in candidates:
        key = name or "none"
        lowered, layers = (apply_strategy(per_neuron, name, spec) if name
                           else (per_neuron, {}))
        twin = next((k for k, net in unbalanced.items() if _same_chip_layers(net, lowered)), None)
        if twin is not None:  # e.g. kill with nothing below the kill level: channel again
            tried[key] = {**tried[twin], "layers": layers, "same_as": twin}
            continue
        unbalanced[key] = lowered
        multipliers = None
        if balance:
            lowered, multipliers = balance_thresholds(lowered, reference, calib_set)
        lowered.input_mask = mask
        entry = {"layers": layers, "threshold_multipliers": multipliers,
                 "lowered_float": _float_row(f"lowered ({key})", evaluate(
                     ChipAwareNetwork(lowered, None), val_set, progress=progress))}
        distill = {}
        if gated:
            lowered = add_gates(lowered, gated, gate_frames, channels=gate_channels,
                                kernel=gate_kernel, fire_share=gate_fire_share)
            check_gated(lowered, spec, input_from_sensor=sensor is not None)
            entry["gate_thresholds"] = {layer.name: layer.threshold for layer in lowered.layers
                                        if layer.name.endswith(GATE_SUFFIX)}
            if distill_weight:
                distill = distill_pairs(lowered, gated, [n for n, _ in model.spiking_layers()])
        tuned, log = lowered, []
        if finetune_epochs > 0:
            tuned, log = finetune(lowered, train_set, fine_val_set, spec.numerics,
                                  epochs=finetune_epochs, lr=finetune_lr, loss=finetune_loss,
                                  seed=seed, progress=progress, synops_weight=synops_weight,
                                  synops_budget=synops_budget, teacher=model, distill=distill,
                                  distill_weight=distill_weight, gate_lr=gate_lr)
            entry["finetuned_float"] = _float_row(f"fine-tuned ({key})", evaluate(
                ChipAwareNetwork(tuned, None), fine_val_set, progress=progress))
        if gated:
            entry["gate_feedback_weights"] = feedback_weights(tuned)
        entry["finetune_log"] = log
        chosen_by = entry.get("finetuned_float", entry["lowered_float"])
        entry.update({k: chosen_by[k] for k in ("accuracy_window", "accuracy_recording", "nasfr")},
                     measured_after="fine-tuning" if log else "lowering")
        tried[key] = entry
        networks[key] = (lowered, tuned)

    def score(key):
        return tried[key]["accuracy_recording"], tried[key]["accuracy_window"], -tried[key]["nasfr"]

    best_name = max(networks, key=score)
    tuned = networks[best_name][1]
    report["strategies"] = tried
    report["strategy"] = best_name
    report["finetune_log"] = tried[best_name]["finetune_log"]
    balanced = ", thresholds balanced" if balance else ""
    ladder.append(tried[best_name]["lowered_float"]
                  | {"step": f"lowered to {spec.name} ({best_name}, IAF{balanced}, float)"})
    if "finetuned_float" in tried[best_name]:
        resolution = (f", {fine.T} bins of {fine.dt_us / 1000:g} ms" if fine != frames else "")
        with_gates = f", {len(gated)} spiking gate(s)" if gated else ""
        ladder.append(tried[best_name]["finetuned_float"]
                      | {"step": f"fine-tuned (IAF, quantization-aware, float{resolution}{with_gates})"})
    if gate_report is not None:
        report["gate"] = {**gate_report, "thresholds": tried[best_name]["gate_thresholds"],
                          "feedback_weights": tried[best_name]["gate_feedback_weights"]}

    save_torch(run_dir / FOLDED, {"format_version": FOLD_FORMAT, "chip": spec.name,
                                  "strategy": best_name, "lowered": tuned,
                                  "input_shape": input_shape, "data": data,
                                  "attention": artifact["attention"],
                                  provenance.KEY: provenance.record(
                                      run_dir, [MODEL], chip=spec.name,
                                      calibration=report.get("calibration_data"),
                                      synops_weight=synops_weight, synops_budget=synops_budget)})
    report["windows_per_recording"] = eval_windows
    report["finetune_cost"] = {"synops_weight": synops_weight, "synops_budget": synops_budget}
    report["finetune_frames"] = fine.to_dict()
    return Folded(tuned, spec, input_shape, sensor, artifact, ladder, report)


def _substep_frames(frames: FrameSpec, substeps: int, run_dir: Path) -> FrameSpec:
    """The run's windows cut into ``substeps`` times more, shorter bins. The chip integrates event
    by event; a time-stepped IAF sums a whole bin first, so it clamps at ``min_v_mem`` and fires
    once per bin where the chip does so per event. Finer bins bring fine-tuning closer to the chip
    (issue 11: the exact rung fell up to 12 points below the fine-tuned float one at the run's bins)."""
    if substeps == 1:
        return frames
    if frames.dt_us % substeps:
        raise AsaDeployError(f"fold {run_dir}: --finetune-substeps {substeps} does not divide the "
                             f"run's bin of {frames.dt_us} us; pick a divisor of {frames.dt_us}")
    return replace(frames, T=frames.T * substeps, dt_us=frames.dt_us // substeps)


def check_fits(model, spec, input_shape, sensor, bias_policy) -> None:
    """The design rules and the mapper on the network's shapes (attention left out: it changes no
    shape), so a model that fits no core fails in seconds instead of after calibration."""
    shapes_only = copy.deepcopy(model)
    for block in shapes_only.blocks:
        block.attention = None
    _, violations, mapping, why = check_network(shapes_only, spec, input_shape=input_shape,
                                                sensor=sensor, bias_policy=bias_policy)
    if violations:
        raise CompileError(f"{len(violations)} design-rule violation(s) on {spec.name}:\n  "
                           + "\n  ".join(map(str, violations)))
    if mapping is None:
        raise CompileError(why)


def load_folded(run_dir: str | Path) -> tuple[LoweredNetwork, dict]:
    path = Path(run_dir) / FOLDED
    remedy = (f"rerun `asa-deploy fold {run_dir}` (with the --chip it was folded for), or delete "
              f"it to use model.pt")
    record = load_torch(path, "folded network", remedy=remedy,
                        required_keys=("format_version", "chip", "strategy", "lowered",
                                       "input_shape"))
    if record["format_version"] != FOLD_FORMAT:
        raise artifact_error(path, f"format {record['format_version']!r}, this asa_deploy reads "
                                   f"{FOLD_FORMAT}", remedy)
    if not isinstance(record["lowered"], LoweredNetwork):
        raise artifact_error(path, f"its 'lowered' is a {type(record['lowered']).__name__}, not "
                                   f"chip layers", remedy)
    return record["lowered"], record



def _same_chip_layers(a: LoweredNetwork, b: LoweredNetwork) -> bool:
    """Whether two lowerings put the same thresholds, states and kill bits on every core."""
    def same(x, y):
        if x is None or y is None:
            return x is None and y is None
        return torch.equal(x, y)

    return all(p.threshold == q.threshold and p.min_v_mem == q.min_v_mem
               and same(p.initial_state, q.initial_state) and same(p.kill, q.kill)
               for p, q in zip(a.layers, b.layers, strict=True))
