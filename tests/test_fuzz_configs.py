"""Property tests (Hypothesis) of the two hand-editable inputs of the chip stages.

``ChipConfig.load`` on mutated valid ``chip_config.json`` files (fields deleted, retyped, out-of-range
integers, wrong shapes, random JSON) and ``load_chip_spec`` on mutated valid hw_config TOML (numbers
replaced by negatives, zero, floats, strings; keys and sections deleted): every input either loads to
a valid object equal to what was written, or raises an AsaDeployError naming the file; never another
exception, never a silent coercion. Inputs that found bugs are kept below as plain regression tests.

Default example counts keep the suite fast; ``HYPOTHESIS_PROFILE=fuzz`` (tests/conftest.py) raises
them.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asa_deploy.chip.config import (
    READOUT_CORE,
    ChipConfig,
    CoreConfig,
    Destination,
    DvsLayerConfig,
    ReadoutConfig,
)
from asa_deploy.chip.spec import ChipSpec, load_chip_spec
from asa_deploy.cli import main
from asa_deploy.errors import AsaDeployError, ChipSpecError

FUZZ = settings(max_examples=max(300, settings.default.max_examples), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- comparing what loaded with what was written -------------------------------------------------

def difference(loaded, written, where: tuple = ()) -> str | None:
    """Where a value written differs from what loaded (None: nowhere): booleans are not numbers, 1
    and 1.0 are the same number, a tuple equals a list; keys absent from ``written`` (defaults)
    are not compared."""
    def differs() -> str:
        return f"at {list(where)}: loaded {loaded!r:.80}, written {written!r:.80}"

    if isinstance(written, bool) or isinstance(loaded, bool):
        return None if type(written) is type(loaded) and written == loaded else differs()
    if isinstance(written, (int, float)) and isinstance(loaded, (int, float)):
        both_nan = isinstance(written, float) and isinstance(loaded, float) \
            and math.isnan(written) and math.isnan(loaded)
        return None if both_nan or written == loaded else differs()
    if isinstance(written, dict):
        if not isinstance(loaded, dict) or not set(written) <= set(loaded):
            return differs()
        found = (difference(loaded[k], v, (*where, k)) for k, v in written.items())
        return next((f for f in found if f), None)
    if isinstance(written, list):
        if not isinstance(loaded, (list, tuple)) or len(loaded) != len(written):
            return differs()
        found = (difference(a, b, (*where, i)) for i, (a, b) in enumerate(zip(loaded, written, strict=True)))
        return next((f for f in found if f), None)
    return None if type(written) is type(loaded) and written == loaded else differs()


# ---- a small valid chip config that uses every field ---------------------------------------------

def valid_config() -> ChipConfig:
    rng = np.random.default_rng(0)
    first = CoreConfig(
        core=0, name="conv0", input_shape=(2, 8, 8),
        weights=rng.integers(-128, 128, (3, 2, 3, 3)).astype(np.int8),
        biases=np.array([0, -3, 7], np.int16), stride=(1, 1), padding=(1, 1),
        threshold_high=40, threshold_low=-40, return_to_zero=False,
        neurons_initial_value=rng.integers(-5, 5, (3, 8, 8)).astype(np.int16),
        destinations=[Destination(4, pooling=2)], leak_enable=True,
        neurons_kill=rng.random((3, 8, 8)) < 0.1, scale=12.5)
    second = CoreConfig(
        core=4, name="conv1", input_shape=(3, 4, 4),
        weights=rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8),
        biases=np.zeros(4, np.int16), stride=(1, 1), padding=(0, 0),
        threshold_high=30, threshold_low=-1, return_to_zero=True,
        neurons_initial_value=np.zeros((4, 2, 2), np.int16),
        destinations=[Destination(READOUT_CORE)], monitor_enable=True, output_decimator=3)
    dvs = DvsLayerConfig(sensor_shape=(2, 16, 16), destinations=[0], pooling=(2, 2),
                         killed_pixels=[(0, 1), (15, 15)], mirror=(False, True))
    readout = ReadoutConfig(source_core=4, num_classes=2, class_names=["left", "right"])
    return ChipConfig(chip="speck2f", cores=[first, second], readout=readout, dvs=dvs,
                      meta={"frame_spec": {"T": 5}, "notes": ["n"]}).validate()


VALID_RAW = json.loads(valid_config().to_json())

json_scalars = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats()
                | st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8)
edge_ints = st.sampled_from([-2**63, -32769, -32768, -129, -128, -2, -1, 0, 1, 2, 3, 7, 8, 9, 12,
                             127, 128, 255, 32767, 32768, 2**31, 2**63, 10**400, -(10**400)])


def _children(node):
    if isinstance(node, dict):
        return list(node)
    if isinstance(node, list):
        return list(range(len(node)))
    return []


def _as_float(node) -> float:
    try:
        return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else 1.5
    except OverflowError:
        return float("inf")


def _mutate_once(draw, raw):
    """Walk down from the root (stopping at each level with probability 1/4) and change that node."""
    parent, key, node = None, None, raw
    while _children(node) and (parent is None or draw(st.integers(0, 3)) > 0):
        parent, key = node, draw(st.sampled_from(_children(node)))
        node = parent[key]
    if parent is None:
        return draw(json_values)
    ops = ["delete", "replace", "retype", "edge int"]
    if isinstance(node, list):
        ops += ["grow", "shrink", "wrap", "unwrap"]
    op = draw(st.sampled_from(ops))
    if op == "delete":
        del parent[key]
        return raw
    if op == "replace":
        new = draw(json_values)
    elif op == "edge int":
        new = draw(edge_ints)
    elif op == "retype":
        new = draw(st.sampled_from([
            _as_float(node),
            str(node), bool(node) if not isinstance(node, (list, dict)) else True, None, [node],
            {"value": node}]))
    elif op == "grow":
        new = node + [copy.deepcopy(node[-1]) if node else 0]
    elif op == "shrink":
        new = node[:-1]
    elif op == "wrap":
        new = [node]
    else:
        new = node[0] if node else None
    parent[key] = new
    return raw


@st.composite
def mutated_configs(draw):
    raw = copy.deepcopy(VALID_RAW)
    for _ in range(draw(st.integers(1, 3))):
        raw = _mutate_once(draw, raw)
    return raw


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_chip_config(path: Path, raw) -> None:
    """The property: an error naming the file, or a config equal to ``raw`` that round-trips."""
    path.write_text(json.dumps(raw))
    try:
        config = ChipConfig.load(path)
    except AsaDeployError as exc:
        assert str(path) in str(exc), str(exc)
        return
    found = difference(config.to_dict(), raw)
    assert found is None, found
    assert ChipConfig.from_json(config.to_json()) == config


@FUZZ
@given(raw=mutated_configs())
def test_chip_config_load_on_mutated_configs(scratch, raw):
    check_chip_config(scratch / "chip_config.json", raw)


@FUZZ
@given(raw=json_values)
def test_chip_config_load_on_random_json(scratch, raw):
    check_chip_config(scratch / "chip_config.json", raw)


def test_the_valid_config_loads(scratch):
    check_chip_config(scratch / "chip_config.json", VALID_RAW)
    assert ChipConfig.load(scratch / "chip_config.json") == valid_config()


def _edit(raw, path, value):
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return raw


CHIP_CONFIG_REGRESSIONS = [  # (where, value, what the error says)
    (("cores", 0, "threshold_high"), True, "threshold_high: expected an integer, got True"),
    (("cores", 0, "threshold_low"), -1.0, "threshold_low: expected an integer, got -1.0"),
    (("cores", 0, "stride"), "11", "stride: expected a list of 2, got '11'"),
    (("cores", 0, "return_to_zero"), 1, "return_to_zero: expected true or false, got 1"),
    (("cores", 0, "weights", 0, 0, 0, 0), True, "weights: holds True; expected ints only"),
    (("cores", 0, "weights", 0, 0, 0, 0), 1.0, "weights: holds 1.0; expected ints only"),
    (("cores", 0, "weights", 0, 0, 0, 0), None, "weights: holds None; expected ints only"),
    (("cores", 0, "weights", 0, 0, 0), [1, 2], r"weights: expected a regular 4-d nested list"),
    (("cores", 0, "weights"), VALID_RAW["cores"][0]["weights"][:2],
     r"weights \(2, 2, 3, 3\) have 2 output channels, but biases and neurons_initial_value have 3"),
    (("cores", 0, "biases"), [0, 0], r"biases shape \(2,\), expected \(3,\)"),
    (("cores", 0, "neurons_kill", 0, 0, 0), 1, "neurons_kill: holds 1; expected bools only"),
    (("cores", 0, "destinations", 0, "pooling"), True, "pooling: expected an integer, got True"),
    (("cores", 0, "scale"), True, "scale: expected a finite number, got True"),
    (("cores", 0, "scale"), 2**53 + 1, "scale: 9007199254740993 has no exact float value"),
    (("cores", 0, "scale"), 2**1100, "scale: .* has no exact float value"),  # was a TypeError
    (("cores", 0, "weight"), [], r"unknown field\(s\) \['weight'\]"),
    (("readout", "num_classes"), "2", "num_classes: expected an integer, got '2'"),
    (("readout", "channel_stride"), 0, "channel_stride 0 must be >= 1"),
    (("readout", "class_names"), ["a"], "1 class_names for 2 classes"),
    (("dvs", "sensor_shape"), [2, "16", 16], "sensor_shape: expected an integer, got '16'"),
    (("dvs", "mirror"), [0, 1], "mirror: expected true or false, got 0"),
    (("schema_version",), True, "schema_version True"),
    (("meta",), [], "meta: expected a JSON object"),
    (("chip",), "speck9", r"unknown chip 'speck9'; known: \["),
]


@pytest.mark.parametrize("where,value,match", CHIP_CONFIG_REGRESSIONS,
                         ids=[".".join(map(str, w)) for w, _, _ in CHIP_CONFIG_REGRESSIONS])
def test_chip_config_regressions(scratch, where, value, match):
    """Values that loaded before (silently coerced, or blamed on another field) or crashed."""
    path = scratch / "chip_config.json"
    path.write_text(json.dumps(_edit(copy.deepcopy(VALID_RAW), where, value)))
    with pytest.raises(AsaDeployError, match=match) as info:
        ChipConfig.load(path)
    assert str(path) in str(info.value)


# ---- hw_config TOML ----------------------------------------------------------------------------------

SPECK2F = Path(load_chip_spec("speck2f").path)
VALID_TOML = tomllib.loads(SPECK2F.read_text())
SECTIONS = ("cores", "limits", "numerics", "capabilities", "dvs", "readout", "power")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(raw: dict) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for name, table in raw.items():
        if isinstance(table, dict):
            lines.append(f"\n[{json.dumps(name)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats()
                | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6))
toml_values = toml_scalars | st.lists(toml_scalars, max_size=4)
number_swaps = st.sampled_from([-1, 0, 1, -1.0, 0.0, 0.5, 2.5, -(2**63), 2**63 - 1, 10**400,
                                -(10**400), "8", True, float("nan"), float("inf"), float("-inf"),
                                [], [0], [-1, 1]]
                               ).map(copy.deepcopy)  # never the same list object twice


@st.composite
def mutated_tomls(draw):
    raw = copy.deepcopy(VALID_TOML)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([None, *SECTIONS, "sources"]))
        table = raw if section is None else raw.get(section)
        if not isinstance(table, dict) or not table:
            continue
        key = draw(st.sampled_from(sorted(table)))
        op = draw(st.sampled_from(["delete", "swap number", "replace", "entry", "add unknown"]))
        if op == "delete":
            del table[key]
        elif op == "swap number":
            table[key] = draw(number_swaps)
        elif op == "replace":
            table[key] = draw(toml_values)
        elif op == "entry" and isinstance(table[key], list) and table[key]:
            i = draw(st.integers(0, len(table[key]) - 1))
            table[key][i] = draw(number_swaps | toml_scalars)
        elif op == "entry" and isinstance(table[key], dict) and table[key]:  # [power] idle_rail_mw
            table[key][draw(st.sampled_from(sorted(table[key])))] = draw(number_swaps | toml_scalars)
        elif op == "add unknown":
            table[draw(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1,
                               max_size=5))] = draw(toml_scalars)
    return raw


def assert_sane(spec: ChipSpec) -> None:
    """What any chip must satisfy, written independently of the loader's range table."""
    c, lim, n, d, r, p = spec.cores, spec.limits, spec.numerics, spec.dvs, spec.readout, spec.power
    assert c.count >= 1
    for memory in (c.kernel_memory, c.neuron_memory, c.bias_memory):
        assert len(memory) == c.count and all(m > 0 for m in memory)
    assert lim.max_kernel >= 1 and lim.max_padding >= 0 and lim.max_channels >= 1
    assert lim.fan_out >= 1 and lim.strides and lim.poolings
    assert all(v >= 1 for v in (*lim.strides, *lim.poolings, *lim.max_input, *lim.max_conv_output))
    assert len(lim.max_input) == 2 and len(lim.max_conv_output) == 2
    assert all(2 <= b <= 32 for b in (n.weight_bits, n.state_bits, n.bias_bits,
                                      n.bias_quantization_bits))
    assert len(d.sensor) == 3 and all(v >= 1 for v in (*d.sensor, *d.poolings)) and d.poolings
    assert d.max_destinations >= 1 and r.classes >= 0 and r.destination >= 0
    assert r.channel_stride >= 1
    for value in (p.resting_mw, p.energy_per_spike_nj, p.energy_per_synop_nj,
                  p.energy_per_input_event_nj, p.energy_per_spike_low_nj, p.energy_per_spike_high_nj,
                  *p.idle_rail_mw.values()):
        assert math.isfinite(value) and value >= 0
    assert p.energy_per_spike_low_nj <= p.energy_per_spike_nj <= p.energy_per_spike_high_nj
    assert set(p.processor_rails) <= set(p.idle_rail_mw)
    assert bool(p.processor_rails) == bool(p.idle_rail_mw)


def check_hw_config(path: Path, raw: dict) -> None:
    path.write_text(to_toml(raw))
    try:
        spec = load_chip_spec(path)
    except AsaDeployError as exc:
        assert str(path) in str(exc), str(exc)
        return
    assert_sane(spec)
    assert (spec.name, spec.description, spec.sources) == (raw["name"], raw["description"],
                                                          raw.get("sources", {}))
    for section in SECTIONS:
        loaded = vars(getattr(spec, section))
        assert set(loaded) == set(raw[section]), section
        found = difference(loaded, raw[section], (section,))
        assert found is None, found


def test_the_toml_writer_round_trips(scratch):
    check_hw_config(scratch / "mychip.toml", VALID_TOML)
    assert tomllib.loads(to_toml(VALID_TOML)) == VALID_TOML


@FUZZ
@given(raw=mutated_tomls())
def test_hw_config_loader_on_mutated_tomls(scratch, raw):
    check_hw_config(scratch / "mychip.toml", raw)


def _toml_with(section: str, field: str, value) -> dict:
    raw = copy.deepcopy(VALID_TOML)
    raw[section][field] = value
    return raw


HW_REGRESSIONS = [  # (section, field, value, what the error says)
    ("cores", "kernel_memory", [-1, *[16384] * 8],
     r"\[cores\] kernel_memory has entry -1, outside the allowed range >= 1"),
    ("cores", "bias_memory", [0] * 9, r"\[cores\] bias_memory has entry 0, outside .* >= 1"),
    ("numerics", "weight_bits", 0, r"\[numerics\] weight_bits = 0, outside the allowed range 2..32"),
    ("numerics", "weight_bits", 1, r"weight_bits = 1, outside the allowed range 2..32 \(a signed"),
    ("numerics", "bias_quantization_bits", 20, "bias_quantization_bits 20 exceeds bias_bits 16"),
    ("limits", "strides", [], r"\[limits\] strides is empty"),
    ("limits", "max_padding", -1, r"max_padding = -1, outside the allowed range >= 0"),
    ("limits", "fan_out", 0, r"\[limits\] fan_out = 0, outside the allowed range >= 1"),
    ("dvs", "sensor", [2, 0, 128], r"\[dvs\] sensor has entry 0"),
    ("readout", "channel_stride", 0, r"\[readout\] channel_stride = 0"),
    ("power", "resting_mw", -0.5, r"\[power\] resting_mw = -0.5, outside the allowed range >= 0"),
    ("power", "energy_per_spike_nj", float("nan"), "energy_per_spike_nj = nan"),
    ("power", "energy_per_synop_nj", float("inf"), "energy_per_synop_nj = inf"),
    ("power", "energy_per_input_event_nj", 2**63 - 1,  # loaded as 9.223372036854776e18
     "energy_per_input_event_nj: 9223372036854775807 has no exact float value"),
    ("power", "resting_mw", 10**400, "resting_mw: 1000.* has no exact float value"),  # overflowed
    ("limits", "max_kernel", -(10**400), "max_kernel = -1000.*, outside the allowed range >= 1"),
    ("cores", "count", 9.0, r"\[cores\] count: expected int, got 9.0"),
    ("limits", "fan_out", True, "fan_out: expected int, got True"),
]


@pytest.mark.parametrize("section,field,value,match", HW_REGRESSIONS,
                         ids=[f"{s}.{f}={v!r}" for s, f, v, _ in HW_REGRESSIONS])
def test_hw_config_regressions(scratch, section, field, value, match):
    path = scratch / "mychip.toml"
    path.write_text(to_toml(_toml_with(section, field, value)))
    with pytest.raises(ChipSpecError, match=match) as info:
        load_chip_spec(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("edit,match", [
    (lambda r: r.update(schema_version=True), "schema_version True"),
    (lambda r: r.update(sources="S1"), r"\[sources\] must map tags to strings"),
    (lambda r: r.update(extra={"a": 1}), r"unknown top-level field\(s\) or section\(s\) \['extra'\]"),
])
def test_hw_config_top_level_regressions(scratch, edit, match):
    raw = copy.deepcopy(VALID_TOML)
    edit(raw)
    path = scratch / "mychip.toml"
    path.write_text(to_toml(raw))
    with pytest.raises(ChipSpecError, match=match):
        load_chip_spec(path)


@pytest.mark.parametrize("field,value", [("kernel_memory", "[-1, 16384, 16384, 16384, 32768, 32768, "
                                                           "65536, 65536, 16384, 16384]"),
                                          ("weight_bits", "0")])
def test_compile_check_refuses_an_out_of_range_hw_config(tmp_path, capsys, field, value):
    text = SPECK2F.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{field} ="))
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(line, f"{field} = {value}"))
    assert main(["compile", str(tmp_path), "--chip", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: [" in err and field in err and "outside the allowed range" in err
