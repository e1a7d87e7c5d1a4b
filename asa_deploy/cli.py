"""The ``asa-deploy`` command: one subcommand per pipeline stage (docs/design.md section 1)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from asa_deploy import __version__, cli_args, rundir
from asa_deploy.defaults import AMP_MODES, HOT_PIXEL_FACTOR, MEMORY_MODES, TEST_WINDOWS
from asa_deploy.errors import AsaDeployError, WriteFailedError
from asa_deploy.rundir import (
    CAMERA_JSON,
    CHIP_CONFIG,
    FOLD_JSON,
    FOLDED,
    IMPORTED,
    MAPPING,
    MODEL,
    MODEL_NIR,
    QUANTIZED_NIR,
)

DATA_HELP = ("data spec: nmnist:PATH, dvsgesture:PATH, events:PATH (folder with labels.csv) or "
             "synthetic:NAME (built in, the default)")
WINDOWS_HELP = "test windows per recording, majority vote (the paper: 10; see asa_deploy.defaults)"
DEVICE_HELP = ("where torch computes: auto (a GPU when torch sees one, else the CPU), cpu, cuda or "
               "cuda:N; a GPU torch cannot see is an error, never a silent CPU run")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the example epilog's line breaks."""


def _add_cache_args(p: argparse.ArgumentParser) -> None:
    """Where the command's decoded recordings live (asa_deploy.data.cache); read by ``_cache``."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", type=cli_args.out_dir, default=None, metavar="DIR",
                       help="folder of the decoded-event cache: each recording decoded once into "
                            "a memory-mapped file, shared by later runs and torchrun ranks, so RAM "
                            "stays bounded; None: $XDG_CACHE_HOME/asa_deploy "
                            "(~/.cache/asa_deploy), never the data folder; memory with a warning "
                            "when that cannot be written")
    where.add_argument("--no-cache", action="store_true",
                       help="keep decoded recordings in memory, decoded again by every run "
                            "(nothing written)")


def _warn(line: str | None) -> None:
    """A loud line on stderr (stdout may be JSON), when there is one."""
    if line:
        print(line, file=sys.stderr, flush=True)


def _silent_rows(ladder: list[dict]) -> str | None:
    """The warning for the first fold-ladder step whose output stays silent: a float one is a
    training problem, a quantized one the chip's."""
    from asa_deploy.data.framing import (
        SILENT_CHIP_REMEDY,
        SILENT_FLOAT_REMEDY,
        silent_output_warning,
    )

    for row in ladder:
        remedy = SILENT_CHIP_REMEDY if row["step"].startswith("quantized") else SILENT_FLOAT_REMEDY
        line = silent_output_warning(row.get("silent_windows"), row.get("windows"), remedy,
                                     f"fold step '{row['step']}'")
        if line:
            return line
    return None


def _cache(args):
    """``open_dataset``'s ``cache`` from ``_add_cache_args``' options."""
    return False if args.no_cache else args.cache_dir or True


def _add_train_args(p: argparse.ArgumentParser, *, with_model_defaults: bool = True) -> None:
    p.add_argument("--data", type=cli_args.data_spec, default="synthetic:gesture",
                   help=DATA_HELP)
    _add_cache_args(p)
    if with_model_defaults:
        p.add_argument("--model", type=cli_args.model_spec, default="dvs-small",
                       help="model spec name (see `asa-deploy models`) or YAML path")
        p.add_argument("--attention", default="none", choices=["none", "sa", "asa1", "asa2"],
                       help="none (vanilla), sa (CBAM spatial), asa1 or asa2")
    p.add_argument("--epochs", type=cli_args.positive_int, default=10, help="training epochs")
    p.add_argument("--batch-size", type=cli_args.positive_int, default=32,
                   help="global batch (all processes)")
    p.add_argument("--recipe", default="default", choices=["default", "paper"],
                   help="default: BN weight starts at the threshold, surrogate 1.0 wide, lr 1e-3; "
                        "paper: as Yao et al. 2023 (BN weight 1, rectangular surrogate 0.5 wide "
                        "and 2 high, reset gradient kept, arch-A dropout, lr 1e-4); explicit "
                        "--lr / --loss win")
    p.add_argument("--release-masks", action="store_true",
                   help="ASA: the authors' release masks (every sample gets the batch's union of "
                        "top-k marks; the importance MLP gets no gradient), to measure their effect")
    p.add_argument("--lr", type=cli_args.positive_float, default=None,
                   help="Adam learning rate (cosine decay); None: the recipe's")
    p.add_argument("--weight-decay", type=cli_args.non_negative_float, default=1e-4,
                   help="Adam weight decay")
    p.add_argument("--loss", default=None, choices=["mse", "ce"],
                   help="mse on output rates (the paper's) or cross-entropy on spike counts; "
                        "None: the recipe's (mse)")
    p.add_argument("--seed", type=cli_args.seed, default=0,
                   help="seeds weights, split, windows, dropout")
    p.add_argument("--n-val", type=cli_args.non_negative_int, default=None,
                   help="validation recordings (stratified; 0: none, the last epoch is kept); "
                        "None: use --val-fraction")
    p.add_argument("--val-fraction", type=cli_args.val_share, default=0.2,
                   help="share held out for validation, in [0, 1) (0: none)")
    p.add_argument("--T", type=cli_args.positive_int, default=None,
                   help="time steps; None: the model spec's")
    p.add_argument("--dt-ms", type=cli_args.bin_ms, default=None,
                   help="bin width; None: the dataset's")
    p.add_argument("--downsample", type=cli_args.positive_int, default=None,
                   help="divide sensor coordinates; None: the dataset's")
    p.add_argument("--binarize", action="store_true", help="clip per-bin event counts to 1")
    p.add_argument("--eval-windows", "--windows", type=cli_args.positive_int,
                   default=TEST_WINDOWS, help=WINDOWS_HELP)
    p.add_argument("--param", type=cli_args.model_param, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a model spec parameter (a positive integer), e.g. --param c1=32 "
                        "(repeatable)")
    p.add_argument("--neuron", choices=["lif", "iaf"], default=None,
                   help="override the model spec's neuron; iaf: chip-native training (the chip's "
                        "neuron from the start, no LIF -> IAF conversion at fold)")
    p.add_argument("--asa-lambda", type=cli_args.open_share, default=None,
                   help="ASA's share of important channels / steps, in (0, 1); None: the spec's")
    p.add_argument("--asa-r", type=cli_args.positive_int, default=None,
                   help="ASA-1 temporal MLP reduction; None: the spec's")
    p.add_argument("--synops-weight", type=cli_args.non_negative_float, default=0.0,
                   help="cost-aware training: loss += W x network-driven synops per window / the "
                        "synops with every neuron firing once per step (each spike weighted by "
                        "its fan-out on the chip); 0: none (the cost is still logged)")
    p.add_argument("--synops-budget", type=cli_args.positive_float, default=None,
                   help="with --synops-weight: penalise only the synops per window (input- plus "
                        "network-driven) above this budget; the log says whether it was met and "
                        "the best reached")
    p.add_argument("--device", type=cli_args.torch_device, default="auto",
                   help=DEVICE_HELP + "; under torchrun cuda means each process's "
                                      "cuda:LOCAL_RANK (NCCL), the CPU uses gloo")
    p.add_argument("--workers", type=cli_args.non_negative_int, default=0,
                   help="DataLoader processes that frame the data (training and validation "
                        "windows) off the training thread; the result is the same for any number")
    p.add_argument("--amp", choices=AMP_MODES, default="off",
                   help="mixed precision of the forward pass: bf16 (CPU or GPU) or fp16 (GPU only, "
                        "with loss scaling); off: float32")
    p.add_argument("--memory", choices=MEMORY_MODES, default="standard",
                   help="lean: conv blocks keep their spike inputs as one byte, recompute the "
                        "first layer's conv output and run BN in chunks (arch-a, T 60, batch 16: "
                        "peak RSS 1.7 instead of 2.7 GB, and faster; small networks at T 10 run "
                        "15-25 %% slower; see the README); equal to standard up to float "
                        "rounding, not bit for bit; float32 only (not with --amp)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _kept(call, *args, **kwargs):
    """``call``'s result and None; or, when its final write failed, the result it had computed
    (``io.results_kept``) and that ``WriteFailedError``, so that the command prints it anyway."""
    try:
        return call(*args, **kwargs), None
    except WriteFailedError as err:
        if err.result is None:  # failed before the results were complete: nothing to print
            raise
        return err.result, err


def _saved(unsaved: WriteFailedError | None, *written) -> int:
    """After the results are printed: say what was written, or raise the write's failure."""
    if unsaved is not None:
        raise unsaved
    if written:
        print("wrote " + ", ".join(map(str, written)))
    return 0


# What each command writes into: (run directories, locked while it runs; other folders), all
# checked for write access before the work starts. Commands not named here write nothing.
WRITES = {
    "train": lambda a: ([a.out], []),
    "quickstart": lambda a: ([Path(a.out) / "vanilla", Path(a.out) / a.attention], [a.out]),
    "evaluate": lambda a: ([a.run_dir], []),
    "analyze": lambda a: ([a.run_dir, *a.compare], [a.figures] if a.figures else []),
    "fold": lambda a: ([a.run_dir], []),
    "compile": lambda a: ([] if a.check else [a.run_dir], []),
    "export": lambda a: ([a.run_dir], []),
    "camera": lambda a: ([a.run_dir], []),
    "simulate": lambda a: ([a.run_dir], [Path(a.monitor_out).parent] if a.monitor_out else []),
    "deploy": lambda a: ([a.run_dir], [Path(a.monitor_out).parent] if a.monitor_out else []),
    "report": lambda a: ([a.out or a.run_dir], []),
    "import": lambda a: ([a.out], []),
    "compare": lambda a: ([], [Path(a.json_out or a.a).parent]),
}


def _elsewhere(args) -> str:
    """How a command writes somewhere else, when it cannot write where it would."""
    if args.command in ("train", "quickstart", "report", "import"):
        return "pass --out with another folder"
    if args.command == "compare":
        return "pass --out FILE in another folder"
    if not hasattr(args, "run_dir"):  # models: writes nothing
        return ""
    return (f"copy the run somewhere writable (cp -r {args.run_dir} COPY) and run "
            f"`asa-deploy {args.command} COPY ...`")


def _claim(args, argv: list[str]):
    """``rundir.claim`` of what the command writes; under torchrun only rank 0 claims (every
    rank runs this command; rank 0 writes)."""
    run_dirs, others = WRITES.get(args.command, lambda a: ([], []))(args)
    if int(os.environ.get("RANK", "0")) != 0:
        run_dirs, others = [], []
    return rundir.claim(run_dirs, "asa-deploy " + shlex.join(argv), elsewhere=_elsewhere(args),
                        also_writes=others)


def _config(args, **overrides):
    from asa_deploy.train import TrainConfig

    values = dict(
        data=args.data, model=args.model, attention=args.attention, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, loss=args.loss,
        seed=args.seed, n_val=args.n_val, val_fraction=args.val_fraction, T=args.T,
        dt_us=round(args.dt_ms * 1000) if args.dt_ms is not None else None,
        downsample=args.downsample,
        binarize=args.binarize, eval_windows=args.eval_windows, params=dict(args.param),
        neuron=args.neuron,
        asa_lambda=args.asa_lambda, asa_r=args.asa_r, recipe=args.recipe,
        release_masks=args.release_masks, synops_weight=args.synops_weight,
        synops_budget=args.synops_budget, device=args.device, workers=args.workers, amp=args.amp,
        memory=args.memory)
    values.update(overrides)
    return TrainConfig(**values)


def cmd_train(args) -> int:
    from asa_deploy.train import train

    metrics = train(_config(args), Path(args.out), progress=not args.no_progress,
                    cache=_cache(args))
    val = metrics["val"]
    if val is None:
        print(f"last epoch {metrics['best_epoch']} kept (no validation split) -> "
              f"{Path(args.out) / MODEL}")
    else:
        print(f"best epoch {metrics['best_epoch']}: val accuracy per window "
              f"{val['accuracy_window']:.3f}, per recording {val['accuracy_recording']:.3f} "
              f"({args.eval_windows} windows per recording), NASFR {val['nasfr']:.4f} -> "
              f"{Path(args.out) / MODEL}")
    return 0


def cmd_evaluate(args) -> int:
    from asa_deploy.data.framing import SILENT_FLOAT_REMEDY, silent_output_warning
    from asa_deploy.train import evaluate_run

    (result, path), unsaved = _kept(evaluate_run, args.run_dir, args.data,
                                    windows=args.eval_windows, progress=not args.json,
                                    device=args.device, cache=_cache(args))
    _warn(silent_output_warning(result["silent_windows"], result["windows"], SILENT_FLOAT_REMEDY))
    if args.json:
        print(json.dumps(result))
        return _saved(unsaved)
    print(f"{result['data']}: {result['recordings']} recordings, {result['windows']} windows")
    print(f"accuracy per window {result['accuracy_window']:.4f}, per recording "
          f"{result['accuracy_recording']:.4f} ({args.eval_windows} windows per recording, "
          f"majority; a silent window is wrong)")
    print(f"NASFR    {result['nasfr']:.4f}")
    for name, sfr in result["sfr"].items():
        print(f"  {name:14s} SFR {sfr:.4f}  ({result['neurons'][name]} neurons)")
    return _saved(unsaved, path)


def cmd_analyze(args) -> int:
    from asa_deploy.analysis.stage import analyze_runs, comparison_table

    runs = [Path(args.run_dir), *map(Path, args.compare)]
    summaries, unsaved = _kept(analyze_runs, runs, data=args.data, windows=args.windows,
                               max_samples=args.max_samples, figures_dir=args.figures,
                               cache=_cache(args))
    print(comparison_table(summaries))
    if unsaved is not None:
        return _saved(unsaved)
    for summary in summaries.values():
        print(f"{summary['data']}, {args.windows} windows per recording -> {summary['file']}")
    print(f"figures in {next(iter(summaries.values()))['figures']}")
    return 0


def cmd_quickstart(args) -> int:
    from asa_deploy.pipeline import quickstart

    quickstart(args.out, _config(args), args.attention, chip=args.chip,
               finetune_epochs=args.finetune_epochs, progress=not args.no_progress,
               cache=_cache(args))
    return 0


def cmd_compile(args) -> int:
    from asa_deploy.chip.compile import check_network
    from asa_deploy.chip.mapping import format_table
    from asa_deploy.chip.spec import load_chip_spec
    from asa_deploy.pipeline import compile_run, load_network_for_compile

    spec = load_chip_spec(args.chip)
    run_dir = Path(args.run_dir)
    if args.check:
        model, _, input_shape, sensor = load_network_for_compile(run_dir)
        if not args.unfolded and (run_dir / FOLDED).is_file():
            from asa_deploy.fold.stage import load_folded

            model, _ = load_folded(run_dir)
        _, violations, mapping, mapping_error = check_network(
            model, spec, input_shape=input_shape, sensor=None if args.no_dvs else sensor,
            bias_policy=args.bias)
        for violation in violations:
            print(f"violation: {violation}")
        if mapping is not None:
            print(format_table(mapping.table(spec)))
        else:
            print(f"mapping: {mapping_error}")
        ok = not violations and mapping is not None
        print(f"{run_dir}: {'fits' if ok else 'does not fit'} {spec.name}")
        return 0 if ok else 1
    compiled, unsaved = _kept(compile_run, run_dir, args.chip, bias_policy=args.bias,
                              use_sensor=not args.no_dvs, use_folded=not args.unfolded,
                              kill_hot_pixels=args.kill_hot_pixels,
                              hot_pixel_factor=args.hot_pixel_factor, cache=_cache(args))
    print(format_table(compiled.mapping.table(spec)))
    for q in compiled.quantized:
        st = q.stats
        print(f"  {q.name:14s} scale {st['scale']:9.2f} ({st['limited_by']}), threshold "
              f"{st['threshold_high']}/{st['threshold_low']}, weight error "
              f"{st['relative_weight_error']:.2%}, {st['weights_zeroed']} weights rounded to 0")
    for note in compiled.notes:
        print(f"  note: {note}")
    from asa_deploy.chip.synops import event_costs, input_cuts

    print("synops per event (from the mapping alone; how many events come is known only after "
          "simulate):")
    for cost in event_costs(compiled.config):
        source = "one input event" if cost.source is None else f"one spike of core {cost.source}"
        print(f"  core {cost.target}: {source} -> {cost.mean:,.1f} synops on average over "
              f"positions, {cost.max:,} at most")
    for line in input_cuts(compiled.config, spec):
        print(f"  {line}")
    cuts = [cut for cut in compiled.first_core_cuts  # all of them, with why, in mapping.json
            if cut.maps and cut.synops_after < cut.synops_before]
    if cuts:
        print(f"cheaper first core (cuts that still map onto {spec.name}; each changes the "
              f"network: retrain with the --param and re-measure accuracy):")
        for cut in cuts:
            print(f"  {cut.line()}")
    return _saved(unsaved, run_dir / CHIP_CONFIG, run_dir / MAPPING)


def cmd_fold(args) -> int:
    from asa_deploy.pipeline import fold_run

    report, unsaved = _kept(fold_run, args.run_dir, args.chip, calib=args.calib,
                      calib_recordings=args.calib_recordings, eval_windows=args.eval_windows,
                      strategy=args.strategy, bias_policy=args.bias,
                      use_input_mask=args.input_mask, input_mask_keep=args.input_mask_keep,
                      balance=not args.no_balance,
                      kill_hot_pixels=args.kill_hot_pixels, hot_pixel_factor=args.hot_pixel_factor,
                      finetune_epochs=args.finetune_epochs,
                      finetune_lr=args.finetune_lr, finetune_loss=args.finetune_loss,
                      finetune_substeps=args.finetune_substeps,
                      synops_weight=args.synops_weight, synops_budget=args.synops_budget,
                      gates=args.gate, gate_at=args.gate_at, gate_channels=args.gate_channels,
                      gate_kernel=args.gate_kernel, gate_fire_share=args.gate_fire_share,
                      gate_lr=args.gate_lr,
                      distill_weight=args.distill_weight,
                      seed=args.seed, progress=not args.no_progress, cache=_cache(args))
    print(f"{args.run_dir} ({report['attention']}) on {report['chip']}: strategy "
          f"{report['strategy']}; accuracy per window and per recording on the validation "
          f"split, {args.eval_windows} windows per recording")
    print(f"{'step':52s} {'window':>6s} {'record':>6s} {'NASFR':>7s} {'synops/window':>14s} "
          f"{'input-driven':>13s}")
    for row in report["ladder"]:
        nasfr = f"{row['nasfr']:.4f}" if "nasfr" in row else "-"
        synops = f"{row['synops_per_window']:,.0f}" if "synops_per_window" in row else "-"
        fed = f"{row['input_synops_per_window']:,.0f}" if "input_synops_per_window" in row else "-"
        print(f"{row['step']:52s} {row['accuracy_window']:6.3f} {row['accuracy_recording']:6.3f} "
              f"{nasfr:>7s} {synops:>14s} {fed:>13s}")
    if report.get("gate"):
        gate = report["gate"]
        learned = ", ".join(f"{name}: {w['negative_share']:.0%} negative"
                            for name, w in gate["feedback_weights"].items())
        print(f"spiking gates before {gate['layers']} ({gate['placement']}); weights from the "
              f"gates: {learned}")
    run = Path(args.run_dir)
    if unsaved is not None:
        print(f"wrote {run / FOLDED}, {run / CHIP_CONFIG}, {run / MAPPING}")
    _warn(_silent_rows(report["ladder"]))
    return _saved(unsaved, run / FOLDED, run / FOLD_JSON, run / CHIP_CONFIG, run / MAPPING)


def cmd_export(args) -> int:
    from asa_deploy import provenance
    from asa_deploy.chip.config import ChipConfig
    from asa_deploy.chip.lower import lower
    from asa_deploy.export import chip_config_to_nir, lowered_to_nir, write_nir
    from asa_deploy.fold.stage import load_folded
    from asa_deploy.pipeline import load_network_for_compile

    run = Path(args.run_dir)
    if (run / FOLDED).is_file():
        provenance.require_current(run, FOLDED)
        lowered, _ = load_folded(run)
        source = run / FOLDED
    else:
        from asa_deploy.export.importer import is_imported

        model, _, input_shape, _ = load_network_for_compile(run)
        lowered = lower(model, input_shape, bias_policy=args.bias)
        source = run / (IMPORTED if is_imported(run) else MODEL)
    graph = lowered_to_nir(lowered, dt=args.dt)
    graph.metadata[provenance.KEY] = provenance.record(run, [source.name])
    written = [write_nir(graph, run / MODEL_NIR)]
    print(f"{source} -> {written[0]} (float chip layers)")
    if (run / CHIP_CONFIG).is_file():
        provenance.require_current(run, CHIP_CONFIG)
        config = ChipConfig.load(run / CHIP_CONFIG)
        graph = chip_config_to_nir(config, dt=args.dt)
        graph.metadata[provenance.KEY] = provenance.record(run, [CHIP_CONFIG])
        written.append(write_nir(graph, run / QUANTIZED_NIR))
        print(f"{run / CHIP_CONFIG} -> {written[1]} (integer weights and thresholds)")
    return 0


def cmd_camera(args) -> int:
    import time

    if args.jobs > 1 and args.device:
        raise AsaDeployError("--jobs replays several recordings at once (--replay FILE [FILE ...]); "
                             "a device is one camera: drop --jobs")
    if args.jobs > 1 and args.realtime:
        raise AsaDeployError("--realtime paces each replay to the wall clock, one file after "
                             "another; --jobs would play them at once: drop --jobs or --realtime")
    if args.device:
        from asa_deploy.device.samna_adapter import require_samna

        require_samna()  # before the heavy imports: without samna this fails at once
    from asa_deploy import io, provenance
    from asa_deploy.chip.config import ChipConfig
    from asa_deploy.device.camera import DeviceCamera, replay_files, summarize, window_spec

    run = Path(args.run_dir)
    provenance.require_current(run, CHIP_CONFIG)
    config = ChipConfig.load(run / CHIP_CONFIG)
    frames = window_spec(config)
    several = bool(args.replay) and len(args.replay) > 1

    def show(path, d) -> None:
        if args.json:
            return
        latency = (f"{d.first_spike_latency_ms:6.1f} ms" if d.first_spike_latency_ms is not None
                   else "     -   ")
        where = f"{path.name} " if several else ""
        print(f"[{where}{d.index * frames.T * frames.dt_us / 1e6:7.2f} s] {d.class_name:>16s}  "
              f"out {d.output_spikes:5d}  spikes {d.spikes:8,d}  events {d.input_events:7,d}  "
              f"first spike {latency}  decided in {d.decision_ms:5.1f} ms", flush=True)

    def header(source: str) -> None:
        print(f"{source} on {config.chip}: one decision per {frames.T} x {frames.dt_us / 1000:g} ms "
              f"window", flush=True)

    if args.replay:
        source = (f"replay of {len(args.replay)} recordings" if several
                  else f"replay of {args.replay[0]}") + " (exact simulator)"
        header(source + (f", {min(args.jobs, len(args.replay))} jobs" if several else ""))
        start = time.perf_counter()
        replays = list(replay_files(config, args.replay, jobs=args.jobs, realtime=args.realtime,
                                    on_decision=show))
        decisions = [d for r in replays for d in r.decisions]
        duration = sum(r.duration_s for r in replays)
        wall = time.perf_counter() - start
        extra = {"recordings": [r.summary() for r in replays]} if several else {}
    else:
        camera = DeviceCamera(config, args.device, duration_s=args.seconds, **_board_options(args))
        source, duration = f"device {args.device}", camera.n_windows * camera.window_us / 1e6
        header(source)
        decisions, start = [], time.perf_counter()
        for d in camera:
            decisions.append(d)
            show(None, d)
        wall, extra = time.perf_counter() - start, {"runtime": camera.session.describe()}
    totals = summarize(decisions, wall, duration)
    if several:
        del totals["decisions"]  # each recording's are in its entry of "recordings"
    summary = {"source": source, "chip": config.chip, **totals, **extra,
               provenance.KEY: provenance.record(run, [CHIP_CONFIG], source=source)}
    try:
        io.write_json(run / CAMERA_JSON, summary)
        unsaved = None
    except WriteFailedError as err:
        err.result, unsaved = summary, err  # printed below, then raised
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k not in ("decisions", "recordings")}))
        return _saved(unsaved)
    for entry in extra.get("recordings", []):
        print(f"{entry['file']}: {entry['windows']} windows ({entry['silent_windows']} silent): "
              f"{entry['predictions']}")
    print(f"{summary['windows']} windows ({summary['silent_windows']} silent): {summary['predictions']}")
    print(f"first-spike latency {summary['mean_first_spike_latency_ms'] or float('nan'):.1f} ms, "
          f"decision {summary['mean_decision_ms']:.1f} ms on the host; "
          f"{summary['input_events_per_s']:,.0f} events/s, {summary['spikes_per_s']:,.0f} spikes/s; "
          f"real-time factor {summary['real_time_factor']:.1f} ({summary['recording_seconds']:.1f} s "
          f"recorded / {summary['wall_seconds']:.1f} s wall clock, start-up included; decisions "
          f"alone {summary['decision_speed'] or float('nan'):.1f}x real time)")
    return _saved(unsaved, run / CAMERA_JSON)


def _board_options(args) -> dict:
    options = {"slow_clk_hz": args.slow_clk_hz, "readout_average": int(args.readout_average),
               "dynapcnn_timer": args.dynapcnn_timer}
    if args.apply_wait is not None:
        options["apply_wait_s"] = args.apply_wait
    return options


def cmd_deploy(args) -> int:
    from asa_deploy.device.samna_adapter import require_samna

    require_samna()  # before the heavy imports: without samna this fails in a fraction of a second
    if args.monitor_out is not None and args.monitor is None:
        raise AsaDeployError("--monitor-out needs --monitor CORES (which cores to record)")
    from asa_deploy.device.deploy import deploy_run

    summary, unsaved = _kept(deploy_run, args.run_dir, args.device, data=args.data,
                             windows=args.windows, max_recordings=args.max_recordings,
                             pixel_kill=args.pixel_kill, power=not args.no_power,
                             monitor=args.monitor, monitor_out=args.monitor_out,
                             cache=_cache(args), **_board_options(args))
    power = (f"power {summary['power_mw']} mW" if "power_mw" in summary
             else f"power not measured ({summary.get('power_error')})")
    accuracy = ("-" if summary["accuracy_window"] is None else
                f"per window {summary['accuracy_window']:.4f}, per recording "
                f"{summary['accuracy_recording']:.4f}")
    print(f"{summary['data']} on {args.device}: accuracy {accuracy} over "
          f"{summary['n_windows']} windows ({summary['silent_windows']} silent); {power}")
    if unsaved is None and "monitor_file" in summary:
        print(f"wrote {summary['monitor_file']} (per-neuron spikes of the monitored cores)")
    return _saved(unsaved, summary["file"])


def cmd_report(args) -> int:
    from asa_deploy.report import write_report

    runs = [Path(args.run_dir), *map(Path, args.compare)]
    try:
        paths = write_report(runs, args.out)
    except WriteFailedError as err:
        if err.result is not None:
            print(err.result)  # the report as Markdown, so that it is not lost
        raise
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    for run in json.loads(paths["json"].read_text())["runs"].values():
        for line in run["warnings"]:
            _warn(f"{line} [{run['run_dir']}]")
    return 0


def cmd_simulate(args) -> int:
    from asa_deploy.chip.simulate import simulate_run
    from asa_deploy.data.framing import SILENT_CHIP_REMEDY, silent_output_warning

    if args.monitor_out is not None and args.monitor is None:
        raise AsaDeployError("--monitor-out needs --monitor CORES (which cores to record)")
    summary, unsaved = _kept(simulate_run, args.run_dir, args.data, engine=args.engine,
                             windows=args.windows, max_recordings=args.max_recordings,
                             progress=not args.json, monitor=args.monitor,
                             monitor_out=args.monitor_out,
                             whole_recordings=args.whole_recordings, jobs=args.jobs,
                             cache=_cache(args))
    _warn(silent_output_warning(summary["silent_windows"], summary["n_windows"], SILENT_CHIP_REMEDY))
    if args.json:
        print(json.dumps(summary))
        return _saved(unsaved)
    print(f"{summary['data']} on {summary['chip']}, engine {args.engine}")
    if args.whole_recordings:
        print(f"accuracy per recording {summary['accuracy_recording']:.4f} on whole recordings "
              f"(one window per recording, states reset per recording, class = most output "
              f"spikes; silent is wrong); per window: none")
    else:
        print(f"accuracy per window {summary['accuracy_window']:.4f}, per recording "
              f"{summary['accuracy_recording']:.4f} ({args.windows} windows per recording; a "
              f"recording is correct when more than half of its windows are, a silent window is "
              f"wrong)")
    print(f"input events {summary['input_events']:,} ({summary['dropped_events']:,} dropped by the "
          f"DVS layer); {summary['events_per_second']:,.0f} events/s simulated")
    synops = summary["synops_per_core"]["total"]
    fed, network = summary["input_synops_per_core"]["total"], summary["network_synops_per_core"]["total"]
    for core, spikes in summary["spikes_per_core"]["total"].items():
        print(f"  core {core}: {spikes:,} spikes, {synops[core]:,} synops ({fed[core]:,} "
              f"input-driven, {network[core]:,} network-driven)")
    total = sum(synops.values())
    if total:
        top = max(synops, key=synops.get)
        print(f"synops: {sum(fed.values()) / total:.1%} input-driven (events entering the chip), "
              f"{sum(network.values()) / total:.1%} network-driven; core {top} dominates with "
              f"{synops[top] / total:.1%} of all synops, {fed[top] / max(synops[top], 1):.1%} of "
              f"them input-driven")
    if unsaved is None and "monitor_file" in summary:
        print(f"wrote {summary['monitor_file']} (per-neuron spikes of the monitored cores; "
              f"compare two such files with `asa-deploy compare A.npz B.npz`)")
    return _saved(unsaved, summary["file"])


def cmd_compare(args) -> int:
    from asa_deploy.chip.monitor import compare_files, format_comparison

    report = compare_files(args.a, args.b, args.json_out)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "cores"}
                         | {"cores": {c: {k: v for k, v in r.items() if not k.startswith("per_")}
                                      for c, r in report["cores"].items()}}))
        return 0
    print(format_comparison(report))
    print(f"wrote {report['file']} (per-neuron and per-channel values)")
    return 0


def cmd_import(args) -> int:
    from asa_deploy.export.importer import import_model

    record = import_model(args.model, args.out, data=args.data, input_shape=args.input_shape,
                          dt=args.dt, reset=args.reset, floor=args.floor, T=args.T,
                          dt_us=round(args.dt_ms * 1000) if args.dt_ms is not None else None,
                          downsample=args.downsample, cache=_cache(args))
    info, data = record["import"], record["data"]
    shape = "x".join(str(record["model_spec"]["input"][k]) for k in ("channels", "height", "width"))
    print(f"{args.model} ({info['format']}): input {shape}, {record['num_classes']} classes "
          f"({', '.join(data['class_names'][:10])}{', ...' if record['num_classes'] > 10 else ''})")
    for node in info["nodes"]:
        arrow = (f" {node['input']} -> {node['output']}" if "input" in node else "")
        print(f"  {node['node']:>16s}  {node['type']}{arrow}")
    for note in info["notes"]:
        print(f"  note: {note}")
    for warning in info["warnings"]:
        print(f"  warning: {warning}")
    frames = data["frame_spec"]
    print(f"data {data['spec'] or '(none given: pass --data SPEC to simulate)'}: sensor "
          f"{'x'.join(map(str, data['sensor_size']))}, downsample {frames['downsample']}, "
          f"{frames['T']} bins of {frames['dt_us'] / 1000:g} ms")
    bias = ""
    if info["biases"]:
        print("  note: its layers have biases, which the chip adds per slow-clock tick: compile "
              "with --bias drop (drop them) or --bias leak (keep them as a leak)")
        bias = " --bias drop"
    print(f"wrote {Path(args.out) / IMPORTED}; next: asa-deploy compile {args.out} --chip "
          f"speck2f{bias}")
    return 0


def cmd_models(args) -> int:
    from asa_deploy.shipped import list_models, models_dir

    print(f"model specs in {models_dir()}:")
    for name, description in list_models():
        print(f"  {name:16s} {description}")
    return 0


# One chain on one run directory, as a newcomer follows them: train -> evaluate -> analyze -> fold
# (or compile) -> simulate -> export -> camera -> report, and import of the exported graph;
# tests/test_documented_path.py runs it on tiny data.
EXAMPLES = {
    "train": "asa-deploy train --data nmnist:../shared/data/nmnist-small --model nmnist-speck-lif "
             "--attention asa2 --epochs 10 --seed 0 --n-val 200 --out runs/nmnist-asa2",
    "evaluate": "asa-deploy evaluate runs/nmnist-asa2 --json",
    "analyze": "asa-deploy analyze runs/nmnist-asa2",
    "models": "asa-deploy models",
    "camera": "asa-deploy camera runs/nmnist-asa2 --replay "
              "../shared/data/nmnist-small/Train/0/00002.bin",
    "deploy": "asa-deploy deploy runs/nmnist-asa2 --device speck2fdevkit:0 --windows 3",
    "report": "asa-deploy report runs/nmnist-asa2",
    "simulate": "asa-deploy simulate runs/nmnist-asa2 --engine exact --windows 3 --monitor 0,1",
    "compare": "asa-deploy compare runs/speck/monitor-fast.npz runs/speck/monitor-exact.npz",
    "fold": "asa-deploy fold runs/nmnist-asa2 --chip speck2f --finetune-epochs 3",
    "export": "asa-deploy export runs/nmnist-asa2 --format nir",
    "compile": "asa-deploy compile runs/nmnist-asa2 --chip speck2f --bias drop",
    "quickstart": "asa-deploy quickstart --out runs/quickstart",
    "import": "asa-deploy import runs/nmnist-asa2/model.nir --out runs/imported --data "
              "nmnist:../shared/data/nmnist-small",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser; every value is checked by its ``cli_args`` type while parsing (exit 2 if bad)."""
    parser = argparse.ArgumentParser(
        prog="asa-deploy",
        description="Train ASA spiking networks on event-camera data, measure their redundancy, "
                    "and take them to SynSense chips.",
        epilog="Run `asa-deploy COMMAND --help` for a command's options and an example.")
    parser.add_argument("--version", action="version", version=f"asa-deploy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=f"example:\n  {EXAMPLES[name]}",
                              formatter_class=_HelpFormatter)

    def run_dir(p, *, compare_help=None):
        p.add_argument("run_dir", type=cli_args.run_dir, metavar="RUN_DIR",
                       help="an existing run directory")
        if compare_help is not None:
            p.add_argument("--compare", nargs="*", type=cli_args.run_dir, default=[],
                           metavar="RUN_DIR", help=compare_help)

    def windows(p, *names):
        """Both spellings everywhere; ``names[0]`` decides the attribute the command reads."""
        p.add_argument(*names, type=cli_args.positive_int, default=TEST_WINDOWS, help=WINDOWS_HELP)

    def data(p, default_help):
        p.add_argument("--data", type=cli_args.data_spec, default=None,
                       help=f"{DATA_HELP}; None: {default_help}")
        _add_cache_args(p)

    def chip(p, help_text="hw_config name (speck2f, speck2e, dynapcnn) or path of a .toml file"):
        p.add_argument("--chip", type=cli_args.chip, default="speck2f", help=help_text)

    def hot_pixel_args(p):
        p.add_argument("--kill-hot-pixels", action="store_true",
                       help="find hot pixels (firing far above their neighbours) in the run's "
                            "training split and kill them in the DVS layer (Speck chips)")
        p.add_argument("--hot-pixel-factor", type=cli_args.hot_pixel_factor,
                       default=HOT_PIXEL_FACTOR,
                       help="hot: rate above this many times the neighbours' median + 10 Hz")

    def max_recordings(p):
        p.add_argument("--max-recordings", type=cli_args.positive_int, default=None,
                       help="None: all")

    def board(p):
        """How a board is driven (asa_deploy.device.samna_adapter.DeviceSession)."""
        p.add_argument("--apply-wait", type=cli_args.non_negative_float, default=None,
                       metavar="SECONDS", help="wait after each apply_configuration (default 1 s as "
                                               "sinabs; SynSense's notebooks wait 0.1 s)")
        p.add_argument("--slow-clk-hz", type=cli_args.positive_int, default=None, metavar="HZ",
                       help="slow clock for leaking cores and the readout block (default: one tick "
                            "per time bin, as the fast simulator)")
        p.add_argument("--readout-average", choices=["1", "16", "32"], default="1",
                       help="readout block: low-pass filter over this many slow-clock "
                                       "ticks (1: off, as SynSense's readout notebook)")
        p.add_argument("--dynapcnn-timer", choices=["sinabs2", "toggle"], default="sinabs2",
                       help="DYNAP-CNN time-stamp reset before each window: write 1 to register "
                            "0x0003 (sinabs 2.x) or write 0 then 1")

    p = command("train", "train a network (resumes from RUN_DIR/checkpoint.pt if present)")
    _add_train_args(p)
    p.add_argument("--out", type=cli_args.out_dir, required=True, help="run directory")
    p.set_defaults(func=cmd_train)

    p = command("evaluate", "accuracy, NASFR and per-layer firing rates of a trained run")
    run_dir(p)
    data(p, "the run's validation split")
    windows(p, "--eval-windows", "--windows")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--device", type=cli_args.torch_device, default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = command("analyze", "redundancy analysis (NASFR, T/C-SFR, spike and ghost features, MPD, "
                           "PTD, QE) with figures; --compare draws runs side by side")
    run_dir(p, compare_help="more runs to analyze and draw beside the first")
    data(p, "each run's validation split")
    windows(p, "--windows", "--eval-windows")
    p.add_argument("--max-samples", type=cli_args.positive_int, default=None, help="None: all")
    p.add_argument("--figures", type=cli_args.out_dir, default=None, help="None: RUN_DIR/figures")
    p.set_defaults(func=cmd_analyze)

    p = command("quickstart", "train vanilla and ASA on the built-in synthetic DVS task, analyze "
                              "both, fold, compile and simulate both on a chip, and print them side "
                              "by side (a few minutes on 2 CPU cores)")
    _add_train_args(p, with_model_defaults=False)
    p.add_argument("--model", type=cli_args.model_spec, default="dvs-small",
                   help="model spec name or YAML path")
    p.add_argument("--attention", default="asa2", choices=["sa", "asa1", "asa2"],
                   help="the attention to compare with vanilla")
    p.add_argument("--out", type=cli_args.out_dir, default="runs/quickstart",
                   help="folder for both runs and figures")
    chip(p, "chip to fold, compile and simulate for")
    p.add_argument("--finetune-epochs", type=cli_args.non_negative_int, default=3,
                   help="fold stage fine-tuning")
    # 240 training recordings: small batches give enough optimizer steps in a few minutes.
    p.set_defaults(func=cmd_quickstart, epochs=15, batch_size=8)

    p = command("fold", "fold attention into chip layers: calibrate, fold, lower for a chip, "
                        "fine-tune, compile and measure every step (RUN_DIR/fold.json, folded.pt)")
    run_dir(p)
    chip(p)
    p.add_argument("--calib", type=cli_args.data_spec, default=None,
                   help=DATA_HELP + "; None: the run's own training split")
    _add_cache_args(p)
    p.add_argument("--calib-recordings", type=cli_args.positive_int, default=64,
                   help="recordings to calibrate on")
    windows(p, "--eval-windows", "--windows")
    p.add_argument("--strategy", default=None, choices=["channel", "offset", "kill", "offset+kill"],
                   help="how per-neuron gains reach the chip; None: measure every one the chip "
                        "supports and keep the most accurate")
    p.add_argument("--bias", choices=["drop", "leak"], default="drop",
                   help="bias policy (leak cannot run on the exact simulator)")
    p.add_argument("--input-mask", action="store_true",
                   help="also kill DVS pixels the first attention layer ignores (Speck)")
    p.add_argument("--input-mask-keep", type=cli_args.share, default=0.5,
                   help="with --input-mask: the share of input pixels to keep, those where the "
                        "first attention layer's calibrated gain is highest, in (0, 1]")
    hot_pixel_args(p)
    p.add_argument("--finetune-epochs", type=cli_args.non_negative_int, default=3,
                   help="0: no fine-tuning")
    p.add_argument("--finetune-substeps", type=cli_args.positive_int, default=1,
                   help="fine-tune at bins this many times finer than the run's (same windows): "
                        "closer to the chip, which integrates event by event; must divide the "
                        "run's bin width")
    p.add_argument("--finetune-lr", type=cli_args.positive_float, default=1e-4,
                   help="Adam learning rate (1e-3 diverged on synthetic:gesture)")
    p.add_argument("--finetune-loss", choices=["ce", "mse"], default="ce",
                   help="ce on output spike counts (mse on multi-spike counts diverged at 1e-3)")
    p.add_argument("--synops-weight", type=cli_args.non_negative_float, default=0.0,
                   help="fine-tuning's synops cost, as in `asa-deploy train --synops-weight`")
    p.add_argument("--synops-budget", type=cli_args.positive_float, default=None,
                   help="with --synops-weight: penalise only synops per window above this budget")
    p.add_argument("--no-balance", action="store_true",
                   help="keep the source thresholds for IAF (no per-layer rate balancing)")
    gate = p.add_argument_group(
        "spiking gates", "input-dependent attention on the chip itself: a side core reads a "
        "layer's input spikes and sends a saliency map into that layer's core as extra input "
        "channels (fan-out 2, feature shift), trained in fine-tuning. Example: asa-deploy fold "
        "runs/nmnist-asa2 --gate 1 --distill-weight 1")
    where = gate.add_mutually_exclusive_group()
    where.add_argument("--gate", type=cli_args.non_negative_int, default=0,
                       help="gate this many layers, where the calibrated attention gain varies "
                            "most across samples (vanilla: the first gateable layers); 0: none")
    where.add_argument("--gate-at", type=cli_args.layer_name, nargs="+", default=None,
                       metavar="LAYER", help="gate these layers instead, e.g. block1.conv")
    gate.add_argument("--gate-channels", type=cli_args.positive_int, default=1,
                      help="saliency maps per gate")
    gate.add_argument("--gate-kernel", type=cli_args.odd_int, default=3,
                      help="the gate's kernel size (odd: the map keeps its layer's input size)")
    gate.add_argument("--gate-fire-share", type=cli_args.open_share, default=0.3,
                      help="initial threshold: this share of positions reach it over a window "
                           "of calibration data")
    gate.add_argument("--gate-lr", type=cli_args.positive_float, default=1e-3,
                      help="learning rate of the gates and of the weights from them (they start "
                           "from scratch; the rest fine-tunes at --finetune-lr)")
    gate.add_argument("--distill-weight", type=cli_args.non_negative_float, default=0.0,
                      help="also train the gated layers' spike counts towards the dynamic "
                           "attention network's (runs with attention)")
    p.add_argument("--seed", type=cli_args.seed, default=0,
                   help="seeds fine-tuning's windows and order")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fold)

    p = command("compile", "lower, check, quantize and map a trained run onto a chip's cores; "
                           "writes RUN_DIR/chip_config.json and RUN_DIR/mapping.json")
    run_dir(p)
    chip(p)
    p.add_argument("--bias", choices=["drop", "leak"], default=None,
                   help="what to do with biases (the chip adds them per slow-clock tick); "
                        "required when the network has any")
    p.add_argument("--no-dvs", action="store_true",
                   help="feed events straight into the first core instead of the DVS input layer")
    p.add_argument("--check", action="store_true",
                   help="only validate: print every design-rule violation and the core table")
    p.add_argument("--unfolded", action="store_true",
                   help="compile model.pt even when the fold stage wrote folded.pt")
    hot_pixel_args(p)
    _add_cache_args(p)  # --kill-hot-pixels reads the run's training split
    p.set_defaults(func=cmd_compile)

    p = command("export", "write the run's chip layers (folded.pt, else model.pt) as RUN_DIR/model.nir "
                          "and its chip_config.json, if any, as RUN_DIR/model_quantized.nir")
    run_dir(p)
    p.add_argument("--format", choices=["nir"], default="nir")
    p.add_argument("--bias", choices=["drop", "leak"], default=None,
                   help="bias policy when lowering model.pt (as in compile)")
    p.add_argument("--dt", type=cli_args.positive_float, default=1.0,
                   help="time step written into the graph")
    p.set_defaults(func=cmd_export)

    p = command("camera", "live decisions window by window: from a board's own DVS (--device) or "
                          "from a recording replayed as a virtual camera through the exact "
                          "simulator (--replay); writes RUN_DIR/camera.json")
    run_dir(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay", type=cli_args.existing_file, nargs="+", metavar="FILE",
                        help="recording(s) (.bin, .npy/.npz, .aedat4); several are replayed one "
                             "after another, or --jobs N at a time")
    source.add_argument("--device", type=cli_args.device,
                        help="board KIND[:INDEX], e.g. speck2fdevkit:0 (needs the real samna)")
    p.add_argument("--realtime", action="store_true", help="pace the replay to the wall clock")
    p.add_argument("--jobs", type=cli_args.positive_int, default=1, metavar="N",
                   help="replay N recordings at once in worker processes (each file's decisions "
                        "as when it is replayed alone; not with --realtime). For any N the "
                        "real-time factor is recorded seconds / wall-clock seconds to process "
                        "them, reading the files and starting workers included; 'decisions "
                        "alone' is the simulator's compute only")
    p.add_argument("--seconds", type=cli_args.positive_float, default=10.0,
                   help="how long to listen to a device")
    p.add_argument("--json", action="store_true", help="print only the summary as JSON")
    board(p)
    p.set_defaults(func=cmd_camera)

    p = command("simulate", "run RUN_DIR/chip_config.json on a chip simulator (fast: time-stepped, "
                            "batched; exact: event by event, as the chip) and write RUN_DIR/sim.json")
    run_dir(p)
    data(p, "the run's validation split")
    p.add_argument("--engine", choices=["fast", "exact"], default="fast")
    windows(p, "--windows", "--eval-windows")
    max_recordings(p)
    p.add_argument("--whole-recordings", action="store_true",
                   help="one window per recording spanning all of it (states reset per "
                        "recording, class = most output spikes: how published chip accuracies "
                        "are measured) instead of --windows test windows")
    p.add_argument("--monitor", type=cli_args.monitor_cores, default=None, metavar="CORES",
                   help="also write per-neuron output spike counts (per window and bin) of these "
                        "cores, e.g. 0,3 or all, to RUN_DIR/monitor.npz (see --monitor-out)")
    p.add_argument("--monitor-out", type=cli_args.out_file, default=None, metavar="FILE",
                   help="where --monitor writes (e.g. one file per engine, to compare them); "
                        "None: RUN_DIR/monitor.npz")
    p.add_argument("--jobs", type=cli_args.positive_int, default=1, metavar="N",
                   help="simulate in N worker processes, over contiguous chunks of the windows; "
                        "sim.json and the monitor file are identical for any N, only the timing "
                        "differs (more than the CPU cores is allowed, with a warning)")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=cmd_simulate)

    p = command("compare", "per-neuron and per-channel cosine similarity and count ratio between "
                           "two monitor files (simulate --monitor, deploy --monitor) of the same "
                           "chip config and windows: a table, and every value as JSON")
    p.add_argument("a", type=cli_args.monitor_file, metavar="A.npz", help="a monitor file")
    p.add_argument("b", type=cli_args.monitor_file, metavar="B.npz",
                   help="another; ratios are B / A")
    p.add_argument("--out", type=cli_args.out_file, default=None, metavar="FILE", dest="json_out",
                   help="the JSON; None: compare-A-vs-B.json beside A")
    p.add_argument("--json", action="store_true",
                   help="print the summary (without per-neuron values) as one JSON object")
    p.set_defaults(func=cmd_compare)

    p = command("deploy", "apply RUN_DIR/chip_config.json to a board and evaluate a dataset on it "
                          "(needs the real samna and a board); writes RUN_DIR/device.json")
    run_dir(p)
    p.add_argument("--device", type=cli_args.device, required=True,
                   help="board KIND[:INDEX], e.g. speck2fdevkit:0")
    data(p, "the run's validation split")
    windows(p, "--windows", "--eval-windows")
    max_recordings(p)
    board(p)
    p.add_argument("--pixel-kill", choices=["host", "chip"], default="host",
                   help="killed pixels: drop their events on the host (default; as the simulators) "
                        "or write KillSensorPixel and trust it to mask written events (unconfirmed)")
    p.add_argument("--no-power", action="store_true", help="do not read the power monitor")
    p.add_argument("--monitor", type=cli_args.monitor_cores, default=None, metavar="CORES",
                   help="also write the per-neuron spikes of these cores, e.g. 0,3 or all, to "
                        "RUN_DIR/monitor.npz (the layout simulate --monitor writes)")
    p.add_argument("--monitor-out", type=cli_args.out_file, default=None, metavar="FILE",
                   help="where --monitor writes; None: RUN_DIR/monitor.npz")
    p.set_defaults(func=cmd_deploy)

    p = command("report", "spikes, synaptic operations and estimated power per core, the fidelity "
                          "ladder and the paper's figures: report.json, report.md and a "
                          "self-contained report.html; --compare puts runs side by side")
    run_dir(p, compare_help="more runs to put beside the first")
    p.add_argument("--out", type=cli_args.out_dir, default=None, help="None: RUN_DIR")
    p.set_defaults(func=cmd_report)

    p = command("import", "bring your own model: a NIR graph (.nir, from sinabs, snnTorch, Norse "
                          "or Rockpool) or a torch.save'd nn.Sequential of torch / sinabs layers "
                          "becomes a run directory (RUN_DIR/imported.pt) that compile, simulate, "
                          "export, report, camera and deploy accept")
    p.add_argument("model", type=cli_args.model_file, metavar="MODEL",
                   help="a .nir graph or a torch.save file of an nn.Sequential")
    p.add_argument("--out", type=cli_args.out_dir, required=True, help="run directory")
    p.add_argument("--data", type=cli_args.data_spec, default=None,
                   help=f"the data the model expects ({DATA_HELP}): its sensor, class names and "
                        f"framing go into the run; None: a sensor of the input's size, classes "
                        f"0..K-1, and simulate needs --data")
    _add_cache_args(p)
    p.add_argument("--input-shape", type=cli_args.input_shape, default=None, metavar="C,H,W",
                   help="the network's input, for a torch model or a NIR graph with a flat input; "
                        "None: the graph's Input node (a torch model with --data: the sensor)")
    p.add_argument("--dt", type=cli_args.positive_float, default=None,
                   help="the Euler step of the NIR equations (IF gain r*dt, LIF r*dt/tau); None: "
                        "1 for IF and, per leaky layer, the step with r*dt/tau = 1 (each "
                        "framework's v += W s)")
    p.add_argument("--reset", choices=["auto", "subtract", "zero"], default="auto",
                   help="the neurons' reset; auto: v_reset = 0 in the graph means zero, else "
                        "NIR 1.0.4's subtraction (Norse's IAF resets to zero: pass zero)")
    p.add_argument("--floor", choices=["none", "threshold"], default="none",
                   help="membrane floor; none: as in NIR, snnTorch, Norse, Rockpool (the chip "
                        "state's limit); threshold: -threshold, for a sinabs network trained "
                        "with min_v_mem = -spike_threshold (as sinabs.from_nir sets it)")
    p.add_argument("--T", type=cli_args.positive_int, default=None,
                   help="time bins per window; None: the data's default (10 without --data)")
    p.add_argument("--dt-ms", type=cli_args.bin_ms, default=None,
                   help="bin width; None: the data's default (10 ms without --data)")
    p.add_argument("--downsample", type=cli_args.positive_int, default=None,
                   help="sensor pixels per input pixel; None: the one that maps the data's sensor "
                        "onto the input (1, 2, 4 or 8)")
    p.set_defaults(func=cmd_import)

    p = command("models", "list the model specs")
    p.set_defaults(func=cmd_models)
    return parser


INSTANT_COMMANDS = ("models",)  # they answer before a person could wonder whether they started


def _say_started(args) -> None:
    """The command's first line on a terminal, on stderr (``--json`` keeps stdout clean), before
    the stage's libraries load: importing torch alone takes a second or two. Off a terminal (a log
    file, CI) the output stays as it was; long work logs progress lines there (asa_deploy.progress)."""
    target = getattr(args, "run_dir", None) or getattr(args, "out", None)
    print(f"asa-deploy {args.command}" + (f" {target}" if target else "") + ": starting",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a bad argument, as argparse exits)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # argparse's error (2), --help or --version (0): callers get a code
        return done.code if isinstance(done.code, int) else 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command not in INSTANT_COMMANDS and sys.stderr.isatty():
        _say_started(args)
    try:
        with _claim(args, argv):
            return args.func(args)
    except WriteFailedError as err:
        done = ("the results above are not saved" if err.result is not None
                else "the command stopped there")
        print(f"asa-deploy {args.command}: error: {err} ({done}). {rundir.WRITABLE_FIX}"
              f"{_elsewhere(args)}", file=sys.stderr)
        return 2
    except AsaDeployError as err:
        print(f"asa-deploy {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {_after_interrupt(args.command)}", file=sys.stderr)
        return 130


def _after_interrupt(command: str) -> str:
    """What rerunning an interrupted command does: only train keeps a checkpoint to resume from."""
    if command == "train":
        return "rerun the same command to resume from the last finished epoch (checkpoint.pt)"
    if command == "quickstart":
        return ("rerun the same command: its trainings resume from their last finished epoch, "
                "every later stage starts again")
    return f"rerun to start again ({command} starts from scratch; only train resumes)"


if __name__ == "__main__":
    sys.exit(main())
