"""The ``asa-deploy`` parser checks every value while parsing: a bad one is argparse's exit 2 naming the
option, before any heavy library is imported; a good one arrives with the right type."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SUBPROCESS_TIMEOUT_S
from hypothesis import event, given, settings
from hypothesis import strategies as st

from asa_deploy import __version__, cli_args
from asa_deploy.chip.spec import hw_configs_dir, list_chips
from asa_deploy.cli import build_parser, main
from asa_deploy.defaults import TEST_WINDOWS

PARSER = build_parser()
SUBPARSERS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


def parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def run(tmp_path) -> str:
    (tmp_path / "run").mkdir()
    return str(tmp_path / "run")


BAD = [  # (argv after the command's RUN_DIR, if any; the option named; a fragment of the message)
    (["train", "--epochs", "0"], "--epochs", "must be a positive integer, got 0"),
    (["train", "--epochs", "-1"], "--epochs", "must be a positive integer, got -1"),
    (["train", "--epochs", "ten"], "--epochs", "must be a positive integer, got 'ten'"),
    (["train", "--batch-size", "0"], "--batch-size", "positive integer, got 0"),
    (["train", "--batch-size", "-4"], "--batch-size", "positive integer, got -4"),
    (["train", "--lr", "-1"], "--lr", "must be a finite number > 0, got -1"),
    (["train", "--lr", "0"], "--lr", "> 0, got 0"),
    (["train", "--lr", "nan"], "--lr", "got nan"),
    (["train", "--lr", "inf"], "--lr", "got inf"),
    (["train", "--lr", "1e999"], "--lr", "got 1e999"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay", "finite number >= 0"),
    (["train", "--eval-windows", "0"], "--eval-windows/--windows", "positive integer, got 0"),
    (["train", "--windows", "0"], "--eval-windows/--windows", "positive integer, got 0"),
    (["train", "--asa-lambda", "2"], "--asa-lambda", "in (0, 1), both ends excluded, got 2"),
    (["train", "--asa-lambda", "0"], "--asa-lambda", "got 0"),
    (["train", "--asa-lambda", "1"], "--asa-lambda", "got 1"),  # ASA refuses 1: see nn/attention.py
    (["train", "--asa-r", "0"], "--asa-r", "positive integer"),
    (["train", "--param", "c1=-5"], "--param", "'c1=-5': the value must be a positive integer"),
    (["train", "--param", "c1=0"], "--param", "positive integer"),
    (["train", "--param", "c1"], "--param", "expected KEY=VALUE"),
    (["train", "--param", "=4"], "--param", "KEY must be a parameter name"),
    (["train", "--T", "0"], "--T", "positive integer, got 0"),
    (["train", "--dt-ms", "0"], "--dt-ms", "at least 0.001 ms"),
    (["train", "--dt-ms", "0.0001"], "--dt-ms", "at least 0.001 ms"),
    (["train", "--downsample", "0"], "--downsample", "positive integer, got 0"),
    (["train", "--n-val", "-1"], "--n-val", "non-negative integer, got -1"),
    (["train", "--val-fraction", "1"], "--val-fraction", "in [0, 1)"),
    (["train", "--val-fraction", "-0.2"], "--val-fraction", "in [0, 1)"),
    (["train", "--seed", "-1"], "--seed", "an integer from 0 to 4294967295, got -1"),
    (["train", "--seed", str(2**32)], "--seed", "from 0 to 4294967295"),
    (["train", "--data", "nmnist:/no/such/folder"], "--data", "folder /no/such/folder does not exist"),
    (["train", "--data", "mnist:x"], "--data", "unknown scheme 'mnist'"),
    (["train", "--data", "somewhere"], "--data", "has no scheme"),
    (["train", "--data", "events:"], "--data", "names no folder"),
    (["train", "--model", "no-such-model"], "--model", "no model spec 'no-such-model'"),
    (["quickstart", "--finetune-epochs", "-1"], "--finetune-epochs", "non-negative integer, got -1"),
    (["quickstart", "--chip", "speck9"], "--chip", "unknown chip 'speck9'; known: "),
    (["quickstart", "--eval-windows", "0"], "--eval-windows/--windows", "positive integer"),
    (["evaluate", "RUN", "--eval-windows", "0"], "--eval-windows/--windows", "positive integer"),
    (["evaluate", "RUN", "--windows", "-2"], "--eval-windows/--windows", "positive integer"),
    (["evaluate", "RUN", "--data", "dvsgesture:/no/such"], "--data", "does not exist"),
    (["analyze", "RUN", "--windows", "0"], "--windows/--eval-windows", "positive integer"),
    (["analyze", "RUN", "--max-samples", "0"], "--max-samples", "positive integer"),
    (["analyze", "RUN", "--compare", "/no/such/run"], "--compare", "run directory /no/such/run"),
    (["simulate", "RUN", "--windows", "0"], "--windows/--eval-windows", "positive integer, got 0"),
    (["simulate", "RUN", "--max-recordings", "0"], "--max-recordings", "positive integer, got 0"),
    (["simulate", "RUN", "--max-recordings", "-1"], "--max-recordings", "positive integer, got -1"),
    (["deploy", "RUN", "--device", "speck2fdevkit:0", "--windows", "0"], "--windows/--eval-windows",
     "positive integer"),
    (["deploy", "RUN", "--device", "speck2fdevkit:first"], "--device", "must be KIND[:INDEX]"),
    (["fold", "RUN", "--calib-recordings", "0"], "--calib-recordings", "positive integer, got 0"),
    (["fold", "RUN", "--eval-windows", "0"], "--eval-windows/--windows", "positive integer"),
    (["fold", "RUN", "--input-mask-keep", "0"], "--input-mask-keep", "in (0, 1], got 0"),
    (["fold", "RUN", "--input-mask-keep", "1.5"], "--input-mask-keep", "in (0, 1]"),
    (["fold", "RUN", "--finetune-epochs", "-1"], "--finetune-epochs", "non-negative integer"),
    (["fold", "RUN", "--finetune-lr", "0"], "--finetune-lr", "> 0"),
    (["fold", "RUN", "--seed", "-3"], "--seed", "from 0 to"),
    (["fold", "RUN", "--chip", "missing.toml"], "--chip", "no such hw_config file"),
    (["fold", "RUN", "--calib", "events:/no/such"], "--calib", "does not exist"),
    (["compile", "RUN", "--chip", "nochip"], "--chip", "unknown chip 'nochip'"),
    (["export", "RUN", "--dt", "0"], "--dt", "> 0, got 0"),
    (["export", "RUN", "--dt", "nan"], "--dt", "> 0, got nan"),
    (["camera", "RUN", "--replay", "/no/such.npy"], "--replay", "no such file"),
    (["camera", "RUN", "--device", "speck2fdevkit:0", "--seconds", "0"], "--seconds", "> 0"),
    (["camera", "RUN", "--device", "speck 2f"], "--device", "must be KIND[:INDEX]"),
    (["train", "--device", "gpu"], "--device", "must be auto, cpu, cuda or cuda:N"),
    (["train", "--device", "cuda:"], "--device", "(N a GPU index, e.g. cuda:0), got 'cuda:'"),
    (["train", "--device", "cuda:-1"], "--device", "got 'cuda:-1'"),
    (["evaluate", "RUN", "--device", "tpu"], "--device", "must be auto, cpu, cuda or cuda:N"),
    (["train", "--workers", "-1"], "--workers", "must be a non-negative integer, got -1"),
    (["train", "--amp", "fp32"], "--amp", "invalid choice: 'fp32'"),
]


@pytest.mark.parametrize(("argv", "option", "fragment"), BAD, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_a_bad_value_is_exit_2_naming_the_option(argv, option, fragment, run, capsys):
    argv = [run if a == "RUN" else a for a in argv]
    if argv[0] in ("train", "quickstart"):
        argv += ["--out", str(Path(run) / "out")]
    err = parse_error(argv, capsys)
    assert f"asa-deploy {argv[0]}: error: argument {option}: " in err
    assert fragment in err


def test_run_dir_must_be_an_existing_folder(tmp_path, capsys):
    for command in ("evaluate", "analyze", "fold", "compile", "export", "simulate", "report"):
        err = parse_error([command, str(tmp_path / "absent")], capsys)
        assert f"argument RUN_DIR: run directory {tmp_path / 'absent'} does not exist" in err
    (tmp_path / "file").write_text("x")
    assert "is a file, not a run directory" in parse_error(["compile", str(tmp_path / "file")],
                                                           capsys)


def test_outputs_must_not_be_files(tmp_path, capsys):
    file = tmp_path / "file.txt"
    file.write_text("x")
    err = parse_error(["train", "--out", str(file)], capsys)
    assert f"argument --out: {file} is an existing file, not a folder" in err
    err = parse_error(["analyze", str(tmp_path), "--figures", str(file / "figs")], capsys)
    assert f"argument --figures: {file / 'figs'} is inside {file}, which is an existing file" in err
    assert "argument --out" in parse_error(["report", str(tmp_path), "--out", str(file)], capsys)
    assert "argument --out" in parse_error(["quickstart", "--out", str(file)], capsys)


def test_replay_must_be_a_file(tmp_path, capsys):
    err = parse_error(["camera", str(tmp_path), "--replay", str(tmp_path)], capsys)
    assert "argument --replay: " in err and "is a folder; give a recording file" in err


def test_data_spec_naming_a_file_or_a_bare_folder(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("file,label\n")
    err = parse_error(["train", "--data", f"events:{tmp_path / 'labels.csv'}"], capsys)
    assert "labels.csv is a file; give the folder that holds it" in err
    err = parse_error(["train", "--data", str(tmp_path)], capsys)
    assert f"has no scheme (to read the folder {tmp_path}, write 'events:{tmp_path}')" in err


def test_main_returns_2_and_prints_the_argparse_error(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "asa-deploy train: error: argument --epochs: must be a positive integer, got 0" in (
        capsys.readouterr().err)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"asa-deploy {__version__}"


def test_good_values_parse_to_the_right_types(tmp_path):
    data = tmp_path / "nmnist"
    data.mkdir()
    args = PARSER.parse_args([
        "train", "--data", f"NMNIST:{data}", "--model", "dvs-small", "--epochs", "3",
        "--batch-size", "8", "--lr", "1e-3", "--weight-decay", "0", "--seed", "4294967295",
        "--n-val", "20", "--val-fraction", "0.5", "--T", "7", "--dt-ms", "2.5", "--downsample", "4",
        "--windows", "3", "--param", "c1=32", "--param", "fc=64", "--asa-lambda", "0.25",
        "--asa-r", "2", "--out", str(tmp_path / "new" / "run")])
    assert (args.epochs, args.batch_size, args.seed, args.n_val, args.T, args.downsample,
            args.eval_windows, args.asa_r) == (3, 8, 2**32 - 1, 20, 7, 4, 3, 2)
    assert all(type(v) is int for v in (args.epochs, args.batch_size, args.T, args.eval_windows))
    assert (args.lr, args.weight_decay, args.val_fraction, args.dt_ms, args.asa_lambda) == (
        1e-3, 0.0, 0.5, 2.5, 0.25)
    assert args.param == [("c1", 32), ("fc", 64)]
    assert args.data == f"NMNIST:{data}" and args.out == tmp_path / "new" / "run"
    toml = Path(hw_configs_dir()) / "speck2f.toml"
    args = PARSER.parse_args(["fold", str(tmp_path), "--chip", str(toml), "--calib", "synthetic",
                              "--input-mask-keep", "1", "--finetune-epochs", "0"])
    assert (args.run_dir, args.chip, args.calib) == (str(tmp_path), str(toml), "synthetic")
    assert (args.input_mask_keep, args.finetune_epochs) == (1.0, 0)
    recording = tmp_path / "rec.npy"
    recording.write_bytes(b"")
    args = PARSER.parse_args(["camera", str(tmp_path), "--replay", str(recording)])
    assert args.replay == [recording] and args.device is None and args.jobs == 1
    for device in ("speck2fdevkit:0", "speck2fdevkit", "dynapcnndevkit:12"):
        assert PARSER.parse_args(["deploy", str(tmp_path), "--device", device]).device == device


def test_one_default_number_of_test_windows_and_both_spellings(tmp_path):
    for argv, dest in ((["train", "--out", "r"], "eval_windows"), (["quickstart"], "eval_windows"),
                       (["evaluate", str(tmp_path)], "eval_windows"),
                       (["analyze", str(tmp_path)], "windows"), (["fold", str(tmp_path)], "eval_windows"),
                       (["simulate", str(tmp_path)], "windows"),
                       (["deploy", str(tmp_path), "--device", "speck2fdevkit:0"], "windows")):
        assert getattr(PARSER.parse_args(argv), dest) == TEST_WINDOWS, argv
        for spelling in ("--windows", "--eval-windows"):
            assert getattr(PARSER.parse_args([*argv, spelling, "7"]), dest) == 7, (argv, spelling)


def test_python_api_defaults_use_the_same_test_windows():
    import inspect

    from asa_deploy.analysis.stage import analyze_runs
    from asa_deploy.chip.simulate import simulate_run
    from asa_deploy.device.deploy import deploy_run
    from asa_deploy.pipeline import fold_run
    from asa_deploy.train import TrainConfig
    from asa_deploy.train.loop import eval_set

    for function, name in ((analyze_runs, "windows"), (deploy_run, "windows"),
                           (simulate_run, "windows"), (fold_run, "eval_windows"),
                           (eval_set, "windows")):
        assert inspect.signature(function).parameters[name].default == TEST_WINDOWS, function
    assert TrainConfig().eval_windows == TEST_WINDOWS


def test_dt_ms_becomes_whole_microseconds():
    from asa_deploy.cli import _config

    args = PARSER.parse_args(["train", "--dt-ms", "2.3", "--out", "r"])
    assert _config(args).dt_us == 2300  # int(2.3 * 1000) would give 2299
    assert _config(PARSER.parse_args(["train", "--out", "r"])).dt_us is None


def test_every_value_taking_option_has_a_checking_type():
    """A new option without a cli_args type (or choices) would let unchecked values through."""
    for command, parser in SUBPARSERS.items():
        for action in parser._actions:
            if action.nargs == 0 or action.choices is not None:
                continue
            assert getattr(action.type, "__module__", None) == "asa_deploy.cli_args", (
                f"{command} {action.option_strings or action.dest}")


HEAVY = ("torch", "sinabs", "numpy", "numba", "matplotlib", "tonic", "yaml", "samna",
         "asa_deploy.chip", "asa_deploy.data", "asa_deploy.nn")


def test_parsing_imports_no_heavy_library(tmp_path):
    script = f"""
import sys
from asa_deploy.cli import build_parser, main
parser = build_parser()
parser.parse_args(["train", "--data", "synthetic:gesture-tiny", "--out", {str(tmp_path)!r}])
parser.parse_args(["fold", {str(tmp_path)!r}, "--chip", "speck2f", "--calib", "synthetic"])
parser.parse_args(["deploy", {str(tmp_path)!r}, "--device", "speck2fdevkit:0"])
assert main(["train", "--epochs", "0"]) == 2
print(" ".join(m for m in {HEAVY!r} if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert "argument --epochs: must be a positive integer, got 0" in result.stderr


# ---- fuzzing: argv built from the real option names, random values ----------------------------

def _is_int(v, low, high=None) -> bool:
    return type(v) is int and v >= low and (high is None or v <= high)


def _is_float(v, ok) -> bool:
    return type(v) is float and math.isfinite(v) and ok(v)


def _no_file_on_the_way(path) -> bool:
    return all(not os.path.exists(p) or os.path.isdir(p) for p in (path, *Path(path).parents))


def _writable_file(path) -> bool:
    """A file path to write: not a folder, and no file among its parents."""
    return (isinstance(path, Path) and bool(str(path)) and not os.path.isdir(path)
            and _no_file_on_the_way(path.parent))


def _good_data(spec) -> bool:
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.strip().lower()
    if scheme == "synthetic":
        return True
    return bool(sep) and scheme in ("nmnist", "dvsgesture", "events") and bool(rest.strip()) and (
        os.path.isdir(os.path.expanduser(rest.strip())))


CONSTRAINTS = {
    "command": lambda v: v in SUBPARSERS,
    "func": callable,
    "epochs": lambda v: _is_int(v, 1), "batch_size": lambda v: _is_int(v, 1),
    "eval_windows": lambda v: _is_int(v, 1), "windows": lambda v: _is_int(v, 1),
    "calib_recordings": lambda v: _is_int(v, 1), "finetune_epochs": lambda v: _is_int(v, 0),
    "finetune_substeps": lambda v: _is_int(v, 1),
    "gate": lambda v: _is_int(v, 0), "gate_channels": lambda v: _is_int(v, 1),
    "gate_kernel": lambda v: _is_int(v, 1) and v % 2 == 1,
    "gate_at": lambda v: v is None or (v and all(isinstance(n, str) and n and "," not in n
                                                 and not any(c.isspace() for c in n) for n in v)),
    "gate_fire_share": lambda v: _is_float(v, lambda x: 0 < x < 1),
    "gate_lr": lambda v: _is_float(v, lambda x: x > 0),
    "distill_weight": lambda v: _is_float(v, lambda x: x >= 0),
    "seed": lambda v: _is_int(v, 0, 2**32 - 1),
    "n_val": lambda v: v is None or _is_int(v, 0), "T": lambda v: v is None or _is_int(v, 1),
    "downsample": lambda v: v is None or _is_int(v, 1), "asa_r": lambda v: v is None or _is_int(v, 1),
    "max_samples": lambda v: v is None or _is_int(v, 1),
    "max_recordings": lambda v: v is None or _is_int(v, 1),
    "lr": lambda v: v is None or _is_float(v, lambda x: x > 0), "finetune_lr": lambda v: _is_float(v, lambda x: x > 0),
    "dt": lambda v: _is_float(v, lambda x: x > 0), "seconds": lambda v: _is_float(v, lambda x: x > 0),
    "apply_wait": lambda v: v is None or _is_float(v, lambda x: x >= 0),
    "slow_clk_hz": lambda v: v is None or _is_int(v, 1),
    "workers": lambda v: _is_int(v, 0),
    "weight_decay": lambda v: _is_float(v, lambda x: x >= 0),
    "synops_weight": lambda v: _is_float(v, lambda x: x >= 0),
    "synops_budget": lambda v: v is None or _is_float(v, lambda x: x > 0),
    "val_fraction": lambda v: _is_float(v, lambda x: 0 <= x < 1),
    "asa_lambda": lambda v: v is None or _is_float(v, lambda x: 0 < x < 1),
    "input_mask_keep": lambda v: _is_float(v, lambda x: 0 < x <= 1),
    "hot_pixel_factor": lambda v: _is_float(v, lambda x: x >= 1),
    "dt_ms": lambda v: v is None or _is_float(v, lambda x: x >= 0.001),
    "param": lambda v: all(k.isidentifier() and _is_int(n, 1) for k, n in v),
    "run_dir": lambda v: isinstance(v, str) and os.path.isdir(v),
    "compare": lambda v: all(isinstance(r, str) and os.path.isdir(r) for r in v),
    "out": lambda v: v is None or (isinstance(v, Path) and str(v) and _no_file_on_the_way(v)),
    "figures": lambda v: v is None or (isinstance(v, Path) and _no_file_on_the_way(v)),
    "cache_dir": lambda v: v is None or (isinstance(v, Path) and _no_file_on_the_way(v)),
    "replay": lambda v: v is None or (v and all(isinstance(p, Path) and p.is_file() for p in v)),
    "jobs": lambda v: _is_int(v, 1),
    "data": lambda v: v is None or _good_data(v), "calib": lambda v: v is None or _good_data(v),
    "model": lambda v: os.path.isfile(v) or os.path.isfile(cli_args.models_dir() / f"{v}.yaml"),
    "chip": lambda v: v in list_chips() or (v.endswith(".toml") and os.path.isfile(v)),
    "device": lambda v: v is None or re.fullmatch(r"[A-Za-z]\w*(:[0-9]+)?", v.strip()) is not None,
    "monitor": lambda v: v is None or v == "all" or (
        isinstance(v, tuple) and v and list(v) == sorted(set(v)) and all(_is_int(c, 0, 8) for c in v)),
    "monitor_out": lambda v: v is None or _writable_file(v),
    "json_out": lambda v: v is None or _writable_file(v),
    "a": lambda v: isinstance(v, Path) and v.is_file(),
    "b": lambda v: isinstance(v, Path) and v.is_file(),
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "run").mkdir()
    (root / "file.npy").write_bytes(b"")
    (root / "chip.toml").write_text("")
    (root / "model.yaml").write_text("")
    paths = [str(root / "run"), str(root / "file.npy"), str(root / "missing"),
             str(root / "file.npy" / "child"), str(root / "chip.toml"), str(root / "model.yaml"),
             "", ".", "x" * 300, "a\x00b"]
    specs = [f"{scheme}:{path}" for scheme in ("nmnist", "events", "synthetic", "NMNIST ", "foo")
             for path in paths[:4]] + ["synthetic", "synthetic:gesture-tiny", "events:", "nmnist"]
    return {"paths": paths, "specs": specs}


def _any_values(sandbox):
    """Anything: numbers of every kind (0, negatives, nan, inf), text, paths, specs, names."""
    numbers = st.one_of(
        st.integers(-3, 3), st.integers(), st.integers(2**32 - 2, 2**32 + 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["nan", "-nan", "inf", "-inf", "1e999", "1e-400", "0.0005", "0.001", "-0",
                         "1_0", " 3 ", "0x10", ""]))
    keys = st.sampled_from(["c1", "fc", "", "1c", "c 1", "c1=2"])
    return st.one_of(
        numbers.map(str), st.text(max_size=12),
        st.sampled_from(sandbox["paths"] + sandbox["specs"]),
        st.sampled_from(["speck2f", "dynapcnn", "nochip", "speck2fdevkit:0", "speck2fdevkit",
                         ":0", "dev:-1", "dvs-small", "arch-a", "none", "asa2", "fast", "drop"]),
        st.builds(lambda k, n: f"{k}={n}", keys, numbers.map(str)))


def _plausible_values(sandbox) -> dict[str, st.SearchStrategy[str]]:
    """Per cli_args type, values that are mostly valid, so the fuzzer also reaches parses that
    succeed (and their constraints get checked), not only the first refusal."""
    def real(**bounds):
        return st.floats(allow_nan=False, allow_infinity=False, **bounds).map(repr)

    paths = st.sampled_from(sandbox["paths"])
    return {
        "positive_int": st.integers(1, 100).map(str),
        "non_negative_int": st.integers(0, 100).map(str),
        "seed": st.integers(0, 2**32 - 1).map(str),
        "positive_float": real(min_value=0, exclude_min=True),
        "non_negative_float": real(min_value=0),
        "open_share": real(min_value=0, max_value=1, exclude_min=True, exclude_max=True),
        "share": real(min_value=0, max_value=1, exclude_min=True),
        "bin_ms": real(min_value=0.001, max_value=1e6),
        "hot_pixel_factor": real(min_value=1, max_value=1e6),
        "model_param": st.builds(lambda k, n: f"{k}={n}", st.sampled_from(["c1", "fc", "c2"]),
                                 st.integers(1, 512)),
        "run_dir": st.just(sandbox["paths"][0]),
        "out_dir": paths,
        "existing_file": paths,
        "monitor_file": paths,
        "data_spec": st.sampled_from(sandbox["specs"]),
        "model_spec": st.sampled_from(["dvs-small", "arch-a", "nope", *sandbox["paths"]]),
        "chip": st.sampled_from([*list_chips(), "nochip", *sandbox["paths"]]),
        "device": st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}(:[0-9]{1,3})?", fullmatch=True),
        "monitor_cores": st.one_of(st.just("all"), st.lists(st.integers(0, 9), min_size=1, max_size=4)
                                   .map(lambda cores: ",".join(map(str, cores)))),
        "out_file": paths,
        "torch_device": st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "CUDA:1", " cpu ", "gpu",
                                         "cuda:", "cuda:x", "mps"]),
    }


@st.composite
def argvs(draw, sandbox):
    command = draw(st.sampled_from(sorted(SUBPARSERS)))
    parser = SUBPARSERS[command]
    anything, plausible = _any_values(sandbox), _plausible_values(sandbox)

    def value(action):
        if action.choices is not None and draw(st.booleans()):
            return draw(st.sampled_from(action.choices))
        name = getattr(action.type, "__name__", "")
        if name in plausible and draw(st.integers(0, 3)):  # mostly plausible, sometimes anything
            return draw(plausible[name])
        return draw(anything)

    argv = [command]
    for action in parser._actions:
        if not action.option_strings and action.dest != "help":  # RUN_DIR
            argv.append(value(action))
    options = [a for a in parser._actions if a.option_strings and not isinstance(
        a, argparse._HelpAction)]
    needed = [a for a in options if a.required] + [
        draw(st.sampled_from(g._group_actions)) for g in parser._mutually_exclusive_groups
        if g.required]
    chosen = draw(st.lists(st.sampled_from(options), max_size=6)) if options else []
    for action in needed + chosen:
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs == "*":
            argv += [value(action) for _ in range(draw(st.integers(0, 2)))]
        elif action.nargs != 0:
            argv.append(value(action))
    return argv


@settings(max_examples=max(300, settings.default.max_examples), deadline=None)
@given(data=st.data())
def test_parsing_random_argv_checks_values_or_exits_2(sandbox, data):
    argv = data.draw(argvs(sandbox), label="argv")
    event(f"{argv[0]}: {'parsed' if check_parse(argv) else 'refused'}")


@pytest.mark.parametrize("argv", [  # inputs that once slipped through or crashed
    ["train", "--dt-ms", "0.0005", "--out", "r"],  # would round to a 0 us bin
    ["analyze", "{run}", "--figures", "x" * 300],  # a name too long for the OS: no OSError
    ["deploy", "{run}", "--device", "a\x00b"],
    ["train", "--data", "events:a\x00b", "--out", "r"],  # NUL byte: no ValueError from os.stat
    ["train", "--data", "events:~nobody-here/x", "--out", "r"],
])
def test_parsing_regressions(argv, sandbox):
    check_parse([a.format(run=sandbox["paths"][0]) for a in argv])


def check_parse(argv: list[str]) -> bool:
    """Parsing either refuses argv with argparse's exit 2, or every value meets its constraint."""
    stream = io.StringIO()
    try:
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
            args = PARSER.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2, (argv, stream.getvalue())
        assert ": error: " in stream.getvalue()
        return False
    actions = [*PARSER._actions, *SUBPARSERS[args.command]._actions]
    choices = {a.dest: a for a in actions if a.choices is not None and a.dest != "command"}
    flags = {a.dest for a in actions if a.nargs == 0}
    for dest, value in vars(args).items():
        if dest in choices:
            assert value in choices[dest].choices or value == choices[dest].default, (argv, dest)
        elif dest in flags:
            assert isinstance(value, bool), (argv, dest)
        else:
            assert dest in CONSTRAINTS, f"no constraint for {dest}: add one"
            assert CONSTRAINTS[dest](value), (argv, dest, value)
    return True
