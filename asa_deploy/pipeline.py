"""The one place that chains stages (docs/design.md section 2): compile a run directory (folded chip
layers when the fold stage wrote them, else the trained model), fold a run and measure its chip
rungs (compile, then both simulators), and the quickstart (train, analyze, fold, simulate, report).

The stages themselves depend downward only (chip below fold); chaining them here keeps it so.
"""

from __future__ import annotations

from pathlib import Path

from asa_deploy import io, provenance
from asa_deploy.chip.compile import (
    CompiledNetwork,
    chip_inputs,
    compile_network,
)
from asa_deploy.chip.sim import simulate
from asa_deploy.chip.simulate import event_windows, recording_accuracy, simulate_run
from asa_deploy.chip.spec import ChipSpec, load_chip_spec
from asa_deploy.chip.synops import first_core_cuts
from asa_deploy.data import CacheSetting
from asa_deploy.data.hot_pixels import FACTOR, detect_in_split
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.errors import CompileError
from asa_deploy.export.importer import is_imported, load_imported
from asa_deploy.fold.stage import check_fits, fold, load_folded
from asa_deploy.rundir import CHIP_CONFIG, FOLD_JSON, FOLDED, IMPORTED, MAPPING, MODEL
from asa_deploy.train import TrainConfig, load_run, prepare, train


def load_network_for_compile(run_dir: str | Path):
    """The run's trained network and its ``model.pt`` record (an imported run's network and its
    ``imported.pt`` record), input shape and sensor."""
    if is_imported(run_dir):
        return load_imported(run_dir)
    model, artifact = load_run(Path(run_dir))
    input_shape, sensor = chip_inputs(model.spec.input, artifact["data"])
    return model, artifact, input_shape, sensor


def compile_run(run_dir: str | Path, chip: str, *, bias_policy: str | None = None,
                use_sensor: bool = True, use_folded: bool = True, kill_hot_pixels: bool = False,
                hot_pixel_factor: float = FACTOR, cache: CacheSetting = None) -> CompiledNetwork:
    """Compile ``RUN_DIR/folded.pt`` (the fold stage's chip layers) when present and
    ``use_folded``, else the trained ``model.pt``; writes ``chip_config.json`` and ``mapping.json``.
    ``kill_hot_pixels``: find hot pixels in the run's training split and kill them on the chip;
    ``cache``: where its decoded recordings live (``open_dataset``)."""
    run_dir = Path(run_dir)
    spec = load_chip_spec(chip)
    model, artifact, input_shape, sensor = load_network_for_compile(run_dir)
    trained = model
    source = run_dir / (IMPORTED if is_imported(run_dir) else MODEL)
    if use_folded and (run_dir / FOLDED).is_file():
        provenance.require_current(run_dir, FOLDED)
        model, record = load_folded(run_dir)
        source = run_dir / FOLDED
        if record["chip"] != spec.name:
            raise CompileError(f"{source} was lowered for {record['chip']}, not {chip}; rerun "
                               f"asa-deploy fold --chip {chip}, or compile with --unfolded")
    compiled = _compile(run_dir, model, spec, source=source.name, artifact=artifact,
                        input_shape=input_shape, sensor=sensor if use_sensor else None,
                        bias_policy=bias_policy, kill_hot_pixels=kill_hot_pixels,
                        hot_pixel_factor=hot_pixel_factor, cache=cache)
    if not is_imported(run_dir):  # an imported network has no spec params to cut
        compiled.first_core_cuts = first_core_cuts(
            trained.spec, trained.num_classes, input_shape, sensor if use_sensor else None, spec)
    with io.results_kept(compiled):
        _write_compiled(run_dir, compiled, spec)
    return compiled


def _compile(run_dir: Path, network, spec: ChipSpec, *, source: str, artifact: dict,
             input_shape, sensor, bias_policy: str | None, kill_hot_pixels: bool,
             hot_pixel_factor: float, extra_meta: dict | None = None,
             cache: CacheSetting) -> CompiledNetwork:
    """Compile ``network`` (made from ``run_dir/source``), its meta recording that file."""
    data = artifact["data"]
    meta = {"source": str(run_dir / source), "model": artifact["model_spec"]["name"],
            "attention": artifact["attention"], **(extra_meta or {}),
            "frame_spec": data["frame_spec"], "data_spec": data["spec"], "split": data["split"],
            provenance.KEY: provenance.record(run_dir, [source])}
    if "import" in artifact:
        meta["import"] = artifact["import"]
    if data["frame_spec"].get("binarize"):
        meta["warning"] = ("trained on binarized frames; the chip sums every event, so expect a "
                           "gap until fine-tuned without binarize")
    hot = _hot_pixels(data, kill_hot_pixels, hot_pixel_factor, meta, spec, cache)
    return compile_network(network, spec, input_shape=input_shape, sensor=sensor,
                           bias_policy=bias_policy, class_names=list(data["class_names"]),
                           meta=meta, hot_pixels=hot)


def _write_compiled(run_dir: Path, compiled: CompiledNetwork, spec: ChipSpec) -> None:
    """``chip_config.json`` and ``mapping.json``, both recording the file they were made from."""
    compiled.config.save(run_dir / CHIP_CONFIG)
    io.write_json(run_dir / MAPPING, {**compiled.report(spec),
                                      provenance.KEY: compiled.config.meta[provenance.KEY]})


def _require_pixel_kill(spec: ChipSpec) -> None:
    if not spec.has("input_pixel_kill"):
        raise CompileError(f"--kill-hot-pixels: {spec.name} cannot kill input pixels (no "
                           f"input_pixel_kill in {spec.path}); drop the option or use a Speck chip")


def _hot_pixels(data: dict, kill: bool, factor: float, meta: dict, spec: ChipSpec,
                cache: CacheSetting) -> list[tuple[int, int]] | None:
    """The run's hot pixels (training split) when asked for, recorded in ``meta``."""
    if not kill:
        return None
    _require_pixel_kill(spec)
    found = detect_in_split(data, factor=factor, cache=cache)
    meta["hot_pixels"] = found.to_dict()
    return found.pixels


def _sim_row(step: str, result) -> dict:
    summary = result.to_dict()
    n = max(summary["n_windows"], 1)
    return {"step": step, "accuracy_window": summary["accuracy_window"],
            "accuracy_recording": recording_accuracy(result),
            "silent_windows": summary["silent_windows"], "windows": summary["n_windows"],
            "spikes_per_window": float(result.spikes_per_core.sum() / n),
            "synops_per_window": float(result.synops_per_core.sum() / n),
            "input_synops_per_window": float(result.input_synops_per_core.sum() / n),
            "network_synops_per_window": float(result.network_synops_per_core.sum() / n),
            "spikes_per_core": summary["spikes_per_core"]["mean"],
            "synops_per_core": summary["synops_per_core"]["mean"],
            "input_synops_per_core": summary["input_synops_per_core"]["mean"],
            "network_synops_per_core": summary["network_synops_per_core"]["mean"]}


def fold_run(run_dir: str | Path, chip: str = "speck2f", *, eval_windows: int = TEST_WINDOWS,
             bias_policy: str = "drop", progress: bool = False, kill_hot_pixels: bool = False,
             hot_pixel_factor: float = FACTOR, cache: CacheSetting = None, **fold_options) -> dict:
    """The ``fold`` command: the fold stage (``asa_deploy.fold.stage.fold``: calibrate, fold,
    lower, fine-tune -> ``folded.pt``), then compile (``chip_config.json``, ``mapping.json``) and
    both simulators on the validation split; the whole ladder goes to ``fold.json``. ``cache``:
    where decoded recordings live (``open_dataset``)."""
    run_dir = Path(run_dir)
    if kill_hot_pixels:
        _require_pixel_kill(load_chip_spec(chip))  # before minutes of calibration
    folded = fold(run_dir, chip, eval_windows=eval_windows, bias_policy=bias_policy,
                  progress=progress, cache=cache, **fold_options)
    data, report, ladder = folded.artifact["data"], folded.report, folded.ladder
    compiled = _compile(
        run_dir, folded.layers, folded.spec, source=FOLDED, artifact=folded.artifact,
        input_shape=folded.input_shape, sensor=folded.sensor, bias_policy=bias_policy,
        kill_hot_pixels=kill_hot_pixels, hot_pixel_factor=hot_pixel_factor,
        extra_meta={"fold_strategy": report["strategy"]}, cache=cache)
    _write_compiled(run_dir, compiled, folded.spec)
    report["hot_pixels"] = compiled.config.meta.get("hot_pixels")  # killed in the quantized rungs
    windows, _ = event_windows(compiled.config, None, windows=eval_windows, cache=cache)
    for engine in ("fast", "exact"):
        result = simulate(compiled.config, windows, engine, progress=progress)
        ladder.append(_sim_row(f"quantized, {engine} simulator", result))
    report["ladder"] = ladder
    report["compile_notes"] = compiled.notes
    report[provenance.KEY] = provenance.record(
        run_dir, [MODEL, FOLDED, CHIP_CONFIG], data=data["spec"], split="validation",
        windows=eval_windows)
    with io.results_kept(report):
        io.write_json(run_dir / FOLD_JSON, report)
    return report


def chip_comparison(ladders: dict[str, list[dict]], chip: str, windows: int) -> str:
    """The runs side by side on the ``exact`` rung: accuracy, spikes and synops per window split
    by cause, each as a ratio to the first run (vanilla). Input-driven synops are set by the
    events entering the chip, so the split shows what attention inside the network can reach."""
    exact = {label: next(r for r in ladder if r["step"] == "quantized, exact simulator")
             for label, ladder in ladders.items()}
    base = next(iter(exact.values()))
    rows = [("accuracy per window", "accuracy_window", "{:.3f}", False),
            ("accuracy per recording", "accuracy_recording", "{:.3f}", False),
            ("spikes / window", "spikes_per_window", "{:,.0f}", True),
            ("synops / window", "synops_per_window", "{:,.0f}", True),
            ("  input-driven", "input_synops_per_window", "{:,.0f}", True),
            ("  network-driven", "network_synops_per_window", "{:,.0f}", True)]
    labels = list(exact)
    lines = [f"\non {chip}, exact simulator (validation split, {windows} windows per recording; "
             f"ratio to {labels[0]}):",
             " " * 22 + "".join(f"{label:>20s}" for label in labels)]
    for title, key, fmt, ratio in rows:
        cells = []
        for label in labels:
            value = exact[label][key]
            cell = fmt.format(value)
            if ratio and label != labels[0] and base[key]:
                cell += f" x{value / base[key]:.2f}"
            cells.append(f"{cell:>20s}")
        lines.append(f"{title:22s}" + "".join(cells))
    share = base["input_synops_per_window"] / base["synops_per_window"] if base[
        "synops_per_window"] else 0.0
    lines.append(f"{share:.0%} of {labels[0]}'s synops are input-driven: attention after the "
                 f"first layer cannot cut them;\npixel kills (fold --input-mask, "
                 f"--kill-hot-pixels) and a smaller first layer can (`asa-deploy compile RUN` "
                 f"lists the cuts)")
    return "\n".join(lines)


def check_chip_fit(config: TrainConfig, chip: str, *, cache: CacheSetting = None) -> None:
    """The chip's design rules and mapper on the untrained network, with fold's bias policy
    (drop), so that a model that fits no core fails in seconds, not after two trainings."""
    prepared = prepare(config, cache=cache)
    prepared.model.eval()  # as a trained network is lowered: BatchNorm folds its statistics
    input_shape, sensor = chip_inputs(prepared.model.spec.input, prepared.data_info)
    spec = load_chip_spec(chip)
    try:
        check_fits(prepared.model, spec, input_shape, sensor, "drop")
    except CompileError as exc:
        raise CompileError(f"--model {config.model} does not fit {spec.name} (checked before "
                           f"training): {exc}; pick a model sized for its cores (asa-deploy "
                           f"models), narrower --param widths or a first core its cores map "
                           f"(--param k1=, s1=)") from exc


def quickstart(out: str | Path, config: TrainConfig, attention: str, *, chip: str = "speck2f",
               finetune_epochs: int = 3, progress: bool = True, cache: CacheSetting = None) -> dict:
    """Train vanilla and ``attention`` runs under ``out``, analyze both side by side, fold,
    compile and simulate both on ``chip`` (exact engine), and write the report; prints as it goes.
    Returns the run directories, the analysis summaries, the ladders and the report's paths.
    ``cache``: where decoded recordings live (``open_dataset``)."""
    from dataclasses import replace

    from asa_deploy.analysis.stage import analyze_runs, attention_label, comparison_table
    from asa_deploy.report import write_report

    out = Path(out)
    check_chip_fit(config, chip, cache=cache)
    windows = config.eval_windows
    runs = {}
    for kind in ("none", attention):
        label = attention_label(kind)
        print(f"== training {label} ({config.model} on {config.data}, {config.epochs} epochs)",
              flush=True)
        runs[label] = out / label
        train(replace(config, attention=kind), runs[label], progress=progress, cache=cache)
    print("== analyzing", flush=True)
    summaries = analyze_runs(list(runs.values()), windows=windows, figures_dir=out / "figures",
                             progress=progress, cache=cache)
    ladders = {}
    for label, run in runs.items():
        print(f"== folding {label} onto {chip} (calibrate, fold, lower, fine-tune, compile, "
              f"simulate)", flush=True)
        ladders[label] = fold_run(run, chip, finetune_epochs=finetune_epochs,
                                  eval_windows=windows, progress=progress, cache=cache)["ladder"]
    io.write_json(out / "quickstart.json", {"runs": {k: str(v) for k, v in runs.items()},
                                            "summaries": summaries, "ladders": ladders})
    print(comparison_table(summaries))
    print(f"\nchip ladder on {chip} (accuracy per window / per recording, {windows} windows per "
          f"recording; synops per window on the simulators):")
    for label, ladder in ladders.items():
        for row in ladder:
            synops = (f"  synops/window {row['synops_per_window']:,.0f}"
                      if "synops_per_window" in row else "")
            print(f"  {label:8s} {row['step']:60s} {row['accuracy_window']:.3f} / "
                  f"{row['accuracy_recording']:.3f}{synops}")
    print(chip_comparison(ladders, chip, windows))
    for run in runs.values():
        simulate_run(run, engine="exact", windows=windows, cache=cache)
    paths = write_report(list(runs.values()), out)
    print(f"\nrun directories: {', '.join(map(str, runs.values()))}; figures: {out / 'figures'}")
    print(f"report: {paths['html']}")
    return {"runs": runs, "summaries": summaries, "ladders": ladders, "report": paths}
