"""``ChipConfig``: exactly what the chip's cores, its DVS input layer and its readout hold.

It is the single source of truth downstream of ``compile`` (docs/design.md section 3): the simulators and the
samna adapter read only this, never torch modules. Integers are stored as numpy arrays of the chip's
width (int8 weights, int16 biases / thresholds / states) and written to JSON as nested lists, so a
``from_json(to_json(c)) == c`` round trip is exact. ``validate`` refuses anything the chip could not
hold, naming the core and the field, so a hand-edited or corrupted file never reaches a simulator;
``from_dict`` checks the type of every JSON value (nothing is coerced: what loads is what was written)
and ``load`` also refuses a chip that has no hw_config.

Layouts follow torch, not samna: weights [out, in, ky, kx], states [c, y, x]; the samna adapter
transposes (samna wants [out][in][x][y]).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asa_deploy.chip.spec import hw_configs_dir, list_chips
from asa_deploy.errors import ChipConfigError
from asa_deploy.io import artifact_error, load_json, write_text
from asa_deploy.rundir import FOLD_JSON, FOLDED

SCHEMA_VERSION = 1
READOUT_CORE = 12  # destination id of the readout block on Speck (docs/speck-hardware.md section 5)
INT8 = (-128, 127)
INT16 = (-32768, 32767)


@dataclass
class Destination:
    """Where a core's output spikes go: another core (0..8) or the readout (12), summed over
    ``pooling`` x ``pooling`` on the way, with ``feature_shift`` added to the channel index."""

    core: int
    pooling: int = 1
    feature_shift: int = 0


@dataclass
class CoreConfig:
    core: int
    name: str                        # the source layer, for messages and reports
    input_shape: tuple[int, int, int]  # (C, H, W) the core receives
    weights: np.ndarray              # int8 [out, in, k, k]
    biases: np.ndarray               # int16 [out]
    stride: tuple[int, int]          # (y, x)
    padding: tuple[int, int]         # (y, x)
    threshold_high: int
    threshold_low: int
    return_to_zero: bool
    neurons_initial_value: np.ndarray  # int16 [out, H_out, W_out]
    destinations: list[Destination] = field(default_factory=list)
    leak_enable: bool = False
    neurons_kill: np.ndarray | None = None  # bool [out, H_out, W_out]; DYNAP-CNN only
    monitor_enable: bool = False
    output_decimator: int | None = None    # 0..7 -> pass 1 of 2,4,8,16,32,128,256,512 spikes
    scale: float = 1.0                     # integer units per float unit (informative)

    @property
    def kernel_size(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def neuron_shape(self) -> tuple[int, int, int]:
        """(C_out, H_out, W_out) of the convolution, before any destination pooling."""
        c, h, w = self.input_shape
        k = self.kernel_size
        return (int(self.weights.shape[0]),
                (h + 2 * self.padding[0] - k) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - k) // self.stride[1] + 1)

    def output_shape(self, destination: Destination) -> tuple[int, int, int]:
        c, h, w = self.neuron_shape
        return c, h // destination.pooling, w // destination.pooling


@dataclass
class DvsLayerConfig:
    """The chip's input (pre-processing) layer, in the datasheet's order: polarity selection or
    merge -> sum pooling -> region of interest (origin..cut inclusive, shifted to 0,0) -> mirror.
    Killed pixels are in sensor coordinates and are dropped before everything else."""

    sensor_shape: tuple[int, int, int]  # (P, H, W) events arrive in
    destinations: list[int]
    merge: bool = False
    on_channel: bool = True
    off_channel: bool = True
    pooling: tuple[int, int] = (1, 1)   # (y, x)
    origin: tuple[int, int] = (0, 0)    # (y, x), after pooling
    cut: tuple[int, int] | None = None  # (y, x) inclusive, after pooling; None: the whole map
    mirror: tuple[bool, bool] = (False, False)  # (y, x)
    killed_pixels: list[tuple[int, int]] = field(default_factory=list)  # (y, x) on the sensor

    def pooled_shape(self) -> tuple[int, int]:
        return self.sensor_shape[1] // self.pooling[0], self.sensor_shape[2] // self.pooling[1]

    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the destination cores receive."""
        h, w = self.pooled_shape()
        cut = self.cut if self.cut is not None else (h - 1, w - 1)
        channels = 1 if self.merge else int(self.on_channel) + int(self.off_channel)
        return channels, cut[0] - self.origin[0] + 1, cut[1] - self.origin[1] + 1


@dataclass
class ReadoutConfig:
    """Which core's spikes are the class outputs and how channels map to classes.

    ``channel_stride`` is 4 on speck2e/2f with the readout block (erratum: class k reads channel
    4(k-1); sinabs's ``extend_readout_layer``) and 1 when classes are read from monitored spikes."""

    source_core: int
    num_classes: int
    use_readout_block: bool = False
    channel_stride: int = 1
    threshold: int = 0
    class_names: list[str] = field(default_factory=list)

    def class_channels(self) -> list[int]:
        return [k * self.channel_stride for k in range(self.num_classes)]


@dataclass
class ChipConfig:
    chip: str
    cores: list[CoreConfig]
    readout: ReadoutConfig
    dvs: DvsLayerConfig | None = None
    input_core: int | None = None  # where host events enter when there is no DVS layer
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: run, frame spec, compile report
    schema_version: int = SCHEMA_VERSION

    def core(self, core_id: int) -> CoreConfig:
        for core in self.cores:
            if core.core == core_id:
                return core
        raise ChipConfigError(f"no core {core_id} in this config (cores: {self.core_ids()})")

    def core_ids(self) -> list[int]:
        return [c.core for c in self.cores]

    def entry_cores(self) -> list[int]:
        return list(self.dvs.destinations) if self.dvs is not None else [self.input_core]

    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the events a user feeds in: the sensor's, or the first core's."""
        if self.dvs is not None:
            return tuple(self.dvs.sensor_shape)
        return tuple(self.core(self.input_core).input_shape)

    def topological_order(self) -> list[int]:
        """Core ids such that every core comes after all cores feeding it."""
        feeds = {c.core: [d.core for d in c.destinations if d.core != READOUT_CORE] for c in self.cores}
        indegree = {c: 0 for c in feeds}
        for targets in feeds.values():
            for t in targets:
                indegree[t] = indegree.get(t, 0) + 1
        ready = sorted(c for c, n in indegree.items() if n == 0)
        order = []
        while ready:
            c = ready.pop(0)
            order.append(c)
            for t in feeds.get(c, []):
                indegree[t] -= 1
                if indegree[t] == 0:
                    ready.append(t)
                    ready.sort()
        if len(order) != len(feeds):
            raise ChipConfigError(f"the cores' destinations form a cycle: {feeds}")
        return order

    # ---- validation --------------------------------------------------------------------------------

    def validate(self, source: str = "ChipConfig") -> ChipConfig:
        """Refuse anything the chip could not hold; every message names the core and the field."""
        if self.schema_version != SCHEMA_VERSION:
            raise ChipConfigError(f"{source}: schema_version {self.schema_version}, this asa_deploy reads "
                                  f"{SCHEMA_VERSION}; recompile with `asa-deploy compile`")
        if not self.cores:
            raise ChipConfigError(f"{source}: no cores")
        ids = self.core_ids()
        if len(set(ids)) != len(ids) or not all(0 <= i <= 8 for i in ids):
            raise ChipConfigError(f"{source}: core ids must be distinct and in 0..8, got {ids}")
        for core in self.cores:
            _validate_core(core, f"{source}: core {core.core} ({core.name})")
        shapes = {c.core: c.input_shape for c in self.cores}
        for core in self.cores:
            for d in core.destinations:
                where = f"{source}: core {core.core} ({core.name}) destination {d.core}"
                if d.pooling not in (1, 2, 4):
                    raise ChipConfigError(f"{where}: pooling {d.pooling} not in (1, 2, 4)")
                if d.core == READOUT_CORE:
                    continue
                if d.core not in shapes:
                    raise ChipConfigError(f"{where}: no such core in this config")
                c, h, w = core.output_shape(d)
                tc, th, tw = shapes[d.core]
                if (h, w) != (th, tw) or d.feature_shift < 0 or d.feature_shift + c > tc:
                    raise ChipConfigError(
                        f"{where}: sends {c}x{h}x{w} (feature_shift {d.feature_shift}) into an input "
                        f"of {tc}x{th}x{tw}")
            if len(core.destinations) > 2:
                raise ChipConfigError(f"{source}: core {core.core} has {len(core.destinations)} "
                                      f"destinations; a core has 2")
        self.topological_order()
        if self.dvs is not None:
            _validate_dvs(self.dvs, shapes, f"{source}: dvs layer")
        elif self.input_core not in shapes:
            raise ChipConfigError(f"{source}: input_core {self.input_core} is not a core of this config")
        r = self.readout
        if r.source_core not in shapes:
            raise ChipConfigError(f"{source}: readout source_core {r.source_core} is not a core")
        if r.channel_stride < 1:
            raise ChipConfigError(f"{source}: readout channel_stride {r.channel_stride} must be >= 1")
        if r.class_names and len(r.class_names) != r.num_classes:
            raise ChipConfigError(f"{source}: readout has {len(r.class_names)} class_names for "
                                  f"{r.num_classes} classes")
        out_channels = self.core(r.source_core).neuron_shape[0]
        if r.num_classes < 1 or max(r.class_channels()) >= out_channels:
            raise ChipConfigError(f"{source}: readout needs channels {r.class_channels()} of core "
                                  f"{r.source_core}, which has {out_channels}")
        return self

    # ---- JSON --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "chip": self.chip,
            "input_core": self.input_core,
            "dvs": None if self.dvs is None else _dvs_to_dict(self.dvs),
            "cores": [_core_to_dict(c) for c in self.cores],
            "readout": dict(vars(self.readout)),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, raw: dict, source: str = "ChipConfig") -> ChipConfig:
        """Parse and validate; every field is type-checked, never coerced (a ``"2"`` or ``2.0``
        where an integer belongs, a ``true`` among the weights, an unknown key: refused), so what
        loads is exactly what was written."""
        return _config_from_dict(raw, source).validate(source)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "ChipConfig") -> ChipConfig:
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ChipConfigError(f"{source}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw, source)

    def save(self, path: str | Path) -> Path:
        return write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ChipConfig:
        """``chip_config.json``; an error naming the file when it is missing, truncated, corrupt,
        holds a value the chip could not hold, or names a chip without a hw_config."""
        path = Path(path)
        remedy = _recompile_remedy(path)
        raw = load_json(path, "chip config", remedy=remedy,
                        if_missing="run `asa-deploy compile` first (or `asa-deploy fold`, which "
                                   "compiles too)")
        try:
            config = cls.from_dict(raw, str(path))
        except ChipConfigError as exc:
            raise artifact_error(path, str(exc).removeprefix(f"{path}: "), remedy) from exc
        _check_chip_name(config, str(path))
        return config

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChipConfig) and self.to_dict() == other.to_dict()


def _int_array(value: Any, dtype, bounds: tuple[int, int], where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.size and not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ChipConfigError(f"{where}: holds non-integer values")
    if array.size and (array.min() < bounds[0] or array.max() > bounds[1]):
        raise ChipConfigError(f"{where}: values {int(array.min())}..{int(array.max())} outside "
                              f"{bounds[0]}..{bounds[1]}")
    return array.astype(dtype)


def _validate_core(core: CoreConfig, where: str) -> None:
    if core.weights.ndim != 4 or core.weights.shape[2] != core.weights.shape[3]:
        raise ChipConfigError(f"{where}: weights must be [out, in, k, k], got {core.weights.shape}")
    if core.weights.shape[-1] < 1:
        raise ChipConfigError(f"{where}: weights {core.weights.shape} have an empty kernel")
    core.weights = _int_array(core.weights, np.int8, INT8, f"{where}: weights")
    out, cin = core.weights.shape[:2]
    if len(core.input_shape) != 3 or min(core.input_shape) < 1:
        raise ChipConfigError(f"{where}: input_shape {core.input_shape} is not (C, H, W) >= 1")
    if core.input_shape[0] != cin:
        raise ChipConfigError(f"{where}: input_shape {core.input_shape} has {core.input_shape[0]} "
                              f"channels, the weights {core.weights.shape} take {cin}")
    core.biases = _int_array(core.biases, np.int16, INT16, f"{where}: biases")
    if core.biases.shape != (out,):
        states = np.shape(core.neurons_initial_value)
        if core.biases.ndim == 1 and len(states) == 3 and states[0] == core.biases.shape[0]:
            raise ChipConfigError(f"{where}: weights {core.weights.shape} have {out} output "
                                  f"channels, but biases and neurons_initial_value have "
                                  f"{states[0]}")
        raise ChipConfigError(f"{where}: biases shape {core.biases.shape}, expected ({out},) "
                              f"(the weights' output channels)")
    for name in ("threshold_high", "threshold_low"):
        value = getattr(core, name)
        if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                or not INT16[0] <= value <= INT16[1]):
            raise ChipConfigError(f"{where}: {name} {value!r} is not an int16")
    if core.threshold_low == 0:
        raise ChipConfigError(f"{where}: threshold_low 0 triggers a known chip bug; use -1 or lower")
    if not core.threshold_low < core.threshold_high:
        raise ChipConfigError(f"{where}: threshold_low {core.threshold_low} must be below "
                              f"threshold_high {core.threshold_high}")
    if min(core.stride) < 1 or min(core.padding) < 0:
        raise ChipConfigError(f"{where}: stride {core.stride} / padding {core.padding} invalid")
    shape = core.neuron_shape
    if min(shape[1:]) < 1:
        raise ChipConfigError(f"{where}: the convolution has no output ({shape})")
    core.neurons_initial_value = _int_array(core.neurons_initial_value, np.int16, INT16,
                                            f"{where}: neurons_initial_value")
    if core.neurons_initial_value.shape != shape:
        raise ChipConfigError(f"{where}: neurons_initial_value shape "
                              f"{core.neurons_initial_value.shape}, expected {shape}")
    if core.neurons_kill is not None:
        core.neurons_kill = np.asarray(core.neurons_kill, dtype=bool)
        if core.neurons_kill.shape != shape:
            raise ChipConfigError(f"{where}: neurons_kill shape {core.neurons_kill.shape}, "
                                  f"expected {shape}")
    if core.output_decimator is not None and not 0 <= core.output_decimator <= 7:
        raise ChipConfigError(f"{where}: output_decimator {core.output_decimator} not in 0..7")


def _validate_dvs(dvs: DvsLayerConfig, shapes: dict, where: str) -> None:
    if len(dvs.sensor_shape) != 3 or dvs.sensor_shape[0] not in (1, 2):
        raise ChipConfigError(f"{where}: sensor_shape {dvs.sensor_shape} must be (1 or 2, H, W)")
    if any(p not in (1, 2, 4) for p in dvs.pooling):
        raise ChipConfigError(f"{where}: pooling {dvs.pooling} not in (1, 2, 4)")
    h, w = dvs.pooled_shape()
    cut = dvs.cut if dvs.cut is not None else (h - 1, w - 1)
    if not (0 <= dvs.origin[0] <= cut[0] < h and 0 <= dvs.origin[1] <= cut[1] < w):
        raise ChipConfigError(f"{where}: ROI origin {dvs.origin} .. cut {cut} outside the pooled "
                              f"map {h}x{w}")
    if not (dvs.on_channel or dvs.off_channel):
        raise ChipConfigError(f"{where}: both polarities disabled; nothing would reach the cores")
    for y, x in dvs.killed_pixels:
        if not (0 <= y < dvs.sensor_shape[1] and 0 <= x < dvs.sensor_shape[2]):
            raise ChipConfigError(f"{where}: killed pixel (y={y}, x={x}) outside the sensor")
    if not 1 <= len(dvs.destinations) <= 2:
        raise ChipConfigError(f"{where}: needs 1 or 2 destinations, got {dvs.destinations}")
    out = dvs.output_shape()
    for d in dvs.destinations:
        if d not in shapes:
            raise ChipConfigError(f"{where}: destination {d} is not a core of this config")
        if tuple(shapes[d]) != out:
            raise ChipConfigError(f"{where}: sends {out} into core {d}, whose input is {shapes[d]}")


def _core_to_dict(core: CoreConfig) -> dict:
    return {
        "core": core.core, "name": core.name, "input_shape": list(core.input_shape),
        "weights": core.weights.tolist(), "biases": core.biases.tolist(),
        "stride": list(core.stride), "padding": list(core.padding),
        "threshold_high": int(core.threshold_high), "threshold_low": int(core.threshold_low),
        "return_to_zero": core.return_to_zero, "leak_enable": core.leak_enable,
        "neurons_initial_value": core.neurons_initial_value.tolist(),
        "neurons_kill": None if core.neurons_kill is None else core.neurons_kill.tolist(),
        "destinations": [vars(d) for d in core.destinations],
        "monitor_enable": core.monitor_enable, "output_decimator": core.output_decimator,
        "scale": core.scale,
    }


def _dvs_to_dict(dvs: DvsLayerConfig) -> dict:
    out = dict(vars(dvs))
    for key in ("sensor_shape", "pooling", "origin", "cut", "mirror"):
        out[key] = None if out[key] is None else list(out[key])
    out["killed_pixels"] = [list(p) for p in dvs.killed_pixels]
    out["destinations"] = list(dvs.destinations)
    return out


# ---- JSON parsing: types checked, nothing coerced ----------------------------------------------------

_REQUIRED = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields(raw: Any, where: str, required: tuple[str, ...], optional: dict[str, Any]) -> dict:
    """``raw`` as a dict holding every ``required`` key, no unknown key, defaults filled in."""
    if not isinstance(raw, dict):
        raise ChipConfigError(f"{where}: expected a JSON object, got {_short(raw)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ChipConfigError(f"{where}: malformed: missing field(s) {missing}")
    unknown = sorted(set(raw) - set(required) - set(optional))
    if unknown:
        raise ChipConfigError(f"{where}: unknown field(s) {unknown} (a typo, or written by another "
                              f"asa_deploy version)")
    return {**optional, **raw}


def _int(value: Any, where: str, *, none: bool = False) -> int | None:
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChipConfigError(f"{where}: expected an integer{' or null' if none else ''}, got "
                              f"{_short(value)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ChipConfigError(f"{where}: expected true or false, got {_short(value)}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ChipConfigError(f"{where}: expected a string, got {_short(value)}")
    return value


def _list(value: Any, where: str, length: int | None = None) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        size = f" of {length}" if length is not None else ""
        raise ChipConfigError(f"{where}: expected a list{size}, got {_short(value)}")
    return value


def _ints(value: Any, where: str, length: int) -> tuple[int, ...]:
    return tuple(_int(v, where) for v in _list(value, where, length))


def _array(value: Any, where: str, ndim: int, kind: type, bounds: tuple[int, int] | None = None,
           dtype=None) -> np.ndarray:
    """A regular ``ndim``-d nested list of exactly ``kind`` (int or bool) as a numpy array."""
    try:
        array = np.array(value, dtype=object)
    except ValueError:
        array = np.array(None, dtype=object)  # ragged below the first levels: reported below
    if array.ndim != ndim or not isinstance(value, list):
        raise ChipConfigError(f"{where}: expected a regular {ndim}-d nested list of "
                              f"{kind.__name__}s, got {_short(value)}")
    wrong = [v for v in array.flat if type(v) is not kind]
    if wrong:
        raise ChipConfigError(f"{where}: holds {_short(wrong[0])}; expected {kind.__name__}s only")
    if bounds is not None and array.size:
        low, high = min(array.flat), max(array.flat)
        if low < bounds[0] or high > bounds[1]:
            raise ChipConfigError(f"{where}: values {low}..{high} outside {bounds[0]}..{bounds[1]}")
    return array.astype(dtype or kind)


def _config_from_dict(raw: Any, source: str) -> ChipConfig:
    if not isinstance(raw, dict):
        raise ChipConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ChipConfigError(f"{source}: schema_version {version!r}, this asa_deploy reads "
                              f"{SCHEMA_VERSION}; recompile with `asa-deploy compile`")
    raw = _fields(raw, source, ("schema_version", "chip", "cores", "readout"),
                  {"dvs": None, "input_core": None, "meta": {}})
    if not isinstance(raw["meta"], dict):
        raise ChipConfigError(f"{source}: meta: expected a JSON object, got {_short(raw['meta'])}")
    return ChipConfig(
        chip=_str(raw["chip"], f"{source}: chip"),
        cores=[_core_from_dict(c, f"{source}: cores[{i}]")
               for i, c in enumerate(_list(raw["cores"], f"{source}: cores"))],
        readout=_readout_from_dict(raw["readout"], f"{source}: readout"),
        dvs=None if raw["dvs"] is None else _dvs_from_dict(raw["dvs"], f"{source}: dvs"),
        input_core=_int(raw["input_core"], f"{source}: input_core", none=True),
        meta=raw["meta"], schema_version=version)


_CORE_OPTIONAL = {"leak_enable": False, "neurons_kill": None, "monitor_enable": False,
                  "output_decimator": None, "scale": 1.0}


def _core_from_dict(raw: Any, where: str) -> CoreConfig:
    raw = _fields(raw, where, ("core", "name", "input_shape", "weights", "biases", "stride",
                               "padding", "threshold_high", "threshold_low", "return_to_zero",
                               "neurons_initial_value", "destinations"), _CORE_OPTIONAL)
    if type(raw["core"]) is int and isinstance(raw["name"], str):
        where = f"{where} (core {raw['core']}, {raw['name']})"
    scale = raw["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or (
            isinstance(scale, float) and not math.isfinite(scale)):
        raise ChipConfigError(f"{where}: scale: expected a finite number, got {_short(scale)}")
    try:
        exact = float(scale) == scale
    except OverflowError:  # an integer past 1e308
        exact = False
    if not exact:
        raise ChipConfigError(f"{where}: scale: {_short(scale)} has no exact float value")
    return CoreConfig(
        core=_int(raw["core"], f"{where}: core"), name=_str(raw["name"], f"{where}: name"),
        input_shape=_ints(raw["input_shape"], f"{where}: input_shape", 3),
        weights=_array(raw["weights"], f"{where}: weights", 4, int, INT8, np.int8),
        biases=_array(raw["biases"], f"{where}: biases", 1, int, INT16, np.int16),
        stride=_ints(raw["stride"], f"{where}: stride", 2),
        padding=_ints(raw["padding"], f"{where}: padding", 2),
        threshold_high=_int(raw["threshold_high"], f"{where}: threshold_high"),
        threshold_low=_int(raw["threshold_low"], f"{where}: threshold_low"),
        return_to_zero=_bool(raw["return_to_zero"], f"{where}: return_to_zero"),
        leak_enable=_bool(raw["leak_enable"], f"{where}: leak_enable"),
        neurons_initial_value=_array(raw["neurons_initial_value"],
                                     f"{where}: neurons_initial_value", 3, int, INT16, np.int16),
        neurons_kill=(None if raw["neurons_kill"] is None else
                      _array(raw["neurons_kill"], f"{where}: neurons_kill", 3, bool)),
        destinations=[_destination_from_dict(d, f"{where}: destinations[{i}]") for i, d in
                      enumerate(_list(raw["destinations"], f"{where}: destinations"))],
        monitor_enable=_bool(raw["monitor_enable"], f"{where}: monitor_enable"),
        output_decimator=_int(raw["output_decimator"], f"{where}: output_decimator", none=True),
        scale=float(scale),
    )


def _destination_from_dict(raw: Any, where: str) -> Destination:
    raw = _fields(raw, where, ("core",), {"pooling": 1, "feature_shift": 0})
    return Destination(**{k: _int(v, f"{where}: {k}") for k, v in raw.items()})


def _readout_from_dict(raw: Any, where: str) -> ReadoutConfig:
    raw = _fields(raw, where, ("source_core", "num_classes"),
                  {"use_readout_block": False, "channel_stride": 1, "threshold": 0,
                   "class_names": []})
    names = [_str(n, f"{where}: class_names") for n in _list(raw["class_names"],
                                                              f"{where}: class_names")]
    return ReadoutConfig(
        source_core=_int(raw["source_core"], f"{where}: source_core"),
        num_classes=_int(raw["num_classes"], f"{where}: num_classes"),
        use_readout_block=_bool(raw["use_readout_block"], f"{where}: use_readout_block"),
        channel_stride=_int(raw["channel_stride"], f"{where}: channel_stride"),
        threshold=_int(raw["threshold"], f"{where}: threshold"), class_names=names)


def _dvs_from_dict(raw: Any, where: str) -> DvsLayerConfig:
    raw = _fields(raw, where, ("sensor_shape", "destinations"),
                  {"merge": False, "on_channel": True, "off_channel": True, "pooling": [1, 1],
                   "origin": [0, 0], "cut": None, "mirror": [False, False], "killed_pixels": []})
    return DvsLayerConfig(
        sensor_shape=_ints(raw["sensor_shape"], f"{where}: sensor_shape", 3),
        destinations=[_int(d, f"{where}: destinations")
                      for d in _list(raw["destinations"], f"{where}: destinations")],
        merge=_bool(raw["merge"], f"{where}: merge"),
        on_channel=_bool(raw["on_channel"], f"{where}: on_channel"),
        off_channel=_bool(raw["off_channel"], f"{where}: off_channel"),
        pooling=_ints(raw["pooling"], f"{where}: pooling", 2),
        origin=_ints(raw["origin"], f"{where}: origin", 2),
        cut=None if raw["cut"] is None else _ints(raw["cut"], f"{where}: cut", 2),
        mirror=tuple(_bool(m, f"{where}: mirror") for m in _list(raw["mirror"], f"{where}: mirror", 2)),
        killed_pixels=[_ints(p, f"{where}: killed_pixels", 2)
                       for p in _list(raw["killed_pixels"], f"{where}: killed_pixels")])


def _check_chip_name(config: ChipConfig, source: str) -> None:
    """A config must name a chip with a hw_config (reports and the board need its spec)."""
    known = list_chips()
    if config.chip in known:
        return
    folder = hw_configs_dir()
    compiled_from = config.meta.get("hw_config")
    if isinstance(compiled_from, str) and Path(compiled_from).resolve().parent == folder.resolve():
        raise ChipConfigError(f"{source}: unknown chip {config.chip!r}, but it was compiled with the "
                              f"built-in {compiled_from} (chip {Path(compiled_from).stem}): its "
                              f"'chip' field was changed after compiling; recompile it "
                              f"(asa-deploy compile RUN --chip {Path(compiled_from).stem})")
    how = (f"it was compiled from {compiled_from}: copy that file to {folder / config.chip}.toml, "
           f"or set ASA_DEPLOY_HW_CONFIGS to a folder holding it as {config.chip}.toml"
           if isinstance(compiled_from, str) and compiled_from else
           f"if it was compiled with --chip PATH.toml, copy that file to {folder / config.chip}"
           f".toml or set ASA_DEPLOY_HW_CONFIGS to a folder holding it as {config.chip}.toml; "
           f"else recompile with a known --chip")
    raise ChipConfigError(f"{source}: unknown chip {config.chip!r}; known: {known} (in {folder}). "
                          f"{how[0].upper()}{how[1:]}")


def _recompile_remedy(path: Path) -> str:
    """Which stage rewrites ``path``: fold when the run was folded (it compiles too), else compile."""
    run = path.parent
    if (run / FOLDED).is_file() or (run / FOLD_JSON).is_file():
        return f"rerun `asa-deploy fold {run}`, which recompiles it"
    return f"rerun `asa-deploy compile {run}`"
