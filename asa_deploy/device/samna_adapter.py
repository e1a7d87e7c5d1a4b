"""The samna adapter: the only module of asa_deploy that may import samna.

Why it exists. ``ChipConfig`` (``asa_deploy/chip/config.py``) is the single source of truth for
what the cores, the DVS input layer and the readout hold; compile, the simulators and the reports
read only that. This module turns a ``ChipConfig`` into samna's configuration object and talks to a
board. Nothing else in the package touches samna, so everything else imports and runs on machines
without SynSense's software.

samna detection (``samna_status``, ``require_samna``). ``pip install sinabs`` pulls PyPI's
``samna``, which is a stub: its ``__init__.py`` sets ``PYPI_SAMNA = True`` and, when imported,
runs ``pip install --force-reinstall samna==<version> --index-url <SynSense's GitLab index>`` in a
subprocess; without network access ``import samna`` fails with ``CalledProcessError`` (not
``ImportError``) after a network attempt (speck-hardware.md section 0a). We therefore never import
samna to find out whether it is real: ``importlib.util.find_spec`` locates the package without
executing it, and its ``__init__.py`` text is searched for the stub's ``PYPI_SAMNA`` mark. Only after
``require_samna()`` has passed does a function import samna, lazily, inside itself.

Tested here (tests/test_samna_adapter.py, without samna and without a board):
  * the translation ``translate`` / ``apply_chip_config`` / ``verify_applied`` /
    ``pixel_kill_events`` / ``readout_class_channels``, against a recording stand-in for samna's
    configuration object, not against a chip and not against samna's real classes;
  * the stub detection and ``require_samna``;
  * device-string parsing (``parse_device``) and the power-rail arithmetic (``power_by_rail``).

NOT tested, never run against samna or a board here: ``list_devices``, ``open_device`` and
``DeviceSession`` (graphs, events, stop-watch, power monitor). They follow speck-hardware.md
sections 5, 7 and 8 and sinabs 3.1.3's ``io.py`` / ``dynapcnn_network.py`` step by step.

UNVERIFIED (not confirmed against samna's real bindings or a board):
  * that nested attribute writes such as ``cnn_layers[0].dimensions.input_shape.size.x = 32``
    reach samna's object (sinabs assigns whole dicts instead); ``DeviceSession`` therefore reads every
    written field back with ``verify_applied`` and refuses a configuration that did not take;
  * the dynapcnn-specific names (``samna.dynapcnn.configuration.DynapcnnConfiguration``, the
    ``DynapcnnDevKit`` device type, ``BasicSourceNode_dynapcnn_event_input_event``) come from sinabs
    2.x sources, since sinabs 3.x dropped DYNAP-CNN; the dynapcnn layout of
    ``neurons_value_kill_bit`` is written as [c][x][y] like ``neurons_initial_value`` (samna's
    dynapcnn page says "[feature][channel][x][y]");
  * ``dvs_layer.on_channel`` / ``off_channel`` / ``pass_sensor_events`` on DYNAP-CNN (we write
    ``pass_sensor_events`` only on chips with an integrated sensor);
  * the readout's other fields (``readout_configuration_sel``, ``output_mode_sel``, low-pass
    filter) are left at samna's defaults; only ``enable`` and ``threshold`` are written;
  * ``KillSensorPixel`` on speck2e/2f (third-party use only; the official page was not retrieved),
    host ``DvsEvent`` injection into the DVS layer, that re-applying the configuration resets the
    neuron states to ``neurons_initial_value``, and the power monitor on DYNAP-CNN.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from asa_deploy.chip.config import READOUT_CORE, ChipConfig, CoreConfig, DvsLayerConfig
from asa_deploy.chip.spec import ChipSpec, load_chip_spec
from asa_deploy.errors import AsaDeployError, ChipConfigError


class DeviceError(AsaDeployError):
    """samna is missing (or is PyPI's stub), a board is absent, or a board refused a configuration."""


# ---- samna detection ------------------------------------------------------------------------------

# What the PyPI stub (samna 0.48.6, site-packages/samna/__init__.py) uses as
# ``__gitlab_packages_index_url__``; read from the stub itself when it is installed.
SAMNA_INDEX_URL = "https://gitlab.com/api/v4/projects/27423070/packages/pypi/simple"
STUB_MARK = "PYPI_SAMNA"


@dataclass(frozen=True)
class SamnaStatus:
    available: bool
    version: str | None
    reason: str


def _samna_version() -> str | None:
    try:
        return importlib.metadata.version("samna")
    except importlib.metadata.PackageNotFoundError:
        return None


def _install_command(version: str | None, index_url: str = SAMNA_INDEX_URL) -> str:
    pin = f"samna=={version}" if version else "samna"
    return f"pip install --force-reinstall {pin} --index-url {index_url}"


def samna_status() -> SamnaStatus:
    """Whether the real samna is installed, found without importing it."""
    version = _samna_version()
    try:
        spec = importlib.util.find_spec("samna")
    except ValueError:  # a module object without __spec__ sits in sys.modules: search the path
        spec = importlib.machinery.PathFinder.find_spec("samna")
    if spec is None:
        return SamnaStatus(False, version, "samna is not installed; install SynSense's package: "
                                           + _install_command(None))
    origin = spec.origin
    if origin is None or origin == "namespace":
        return SamnaStatus(False, version, f"samna at {list(spec.submodule_search_locations or [])} "
                                           f"is an empty namespace package (a broken install); "
                                           f"reinstall it: {_install_command(version)}")
    if not origin.endswith("__init__.py"):  # an extension module: not the pure-Python stub
        return SamnaStatus(True, version, f"samna {version} at {origin}")
    try:
        text = Path(origin).read_text(errors="replace")
    except OSError as exc:
        return SamnaStatus(False, version, f"samna found at {origin} but unreadable ({exc})")
    if STUB_MARK in text:
        match = re.search(r"__gitlab_packages_index_url__\s*=\s*\(?\s*[\"']([^\"']+)[\"']", text)
        url = match.group(1) if match else SAMNA_INDEX_URL
        return SamnaStatus(
            False, version,
            f"the installed samna ({origin}, version {version}) is PyPI's stub (it sets "
            f"{STUB_MARK}); importing it would run pip against SynSense's index. Install the real "
            f"samna from SynSense's package index: {_install_command(version, url)}")
    return SamnaStatus(True, version, f"samna {version} at {origin}")


def require_samna():
    """The real samna module, or ``DeviceError`` saying why not (no import is attempted then)."""
    status = samna_status()
    if not status.available:
        raise DeviceError(status.reason)
    import samna  # the only import of samna in asa_deploy

    return samna


# ---- device strings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceKind:
    kind: str               # our device string prefix, as sinabs spells it
    device_type_name: str   # samna's DeviceInfo.device_type_name
    chip: str               # hw_configs/<chip>.toml


# sinabs 3.1.3 backend/dynapcnn/io.py device_types and chip_factory.py (speck2e/2f);
# dynapcnndevkit from sinabs 2.x io.py; sinabs 3.0 dropped DYNAP-CNN after samna 0.46.0, so whether a
# current samna still reports "DynapcnnDevKit" is UNVERIFIED.
DEVICE_KINDS: dict[str, DeviceKind] = {k.kind: k for k in (
    DeviceKind("speck2fdevkit", "Speck2fDevKit", "speck2f"),
    DeviceKind("speck2fmodule", "Speck2fModuleDevKit", "speck2f"),
    DeviceKind("speck2edevkit", "Speck2eDevKit", "speck2e"),
    DeviceKind("speck2e", "Speck2eTestBoard", "speck2e"),
    DeviceKind("dynapcnndevkit", "DynapcnnDevKit", "dynapcnn"),
)}


def _known_kinds() -> str:
    return ", ".join(f"{k.kind} ({k.device_type_name}, {k.chip})" for k in DEVICE_KINDS.values())


def parse_device(name: str) -> tuple[str, int]:
    """``"speck2fdevkit:0"`` -> ``("speck2fdevkit", 0)``; a bare kind means index 0."""
    parts = str(name).strip().lower().split(":")
    if len(parts) > 2 or parts[0] not in DEVICE_KINDS:
        raise DeviceError(f"device {name!r} not understood; expected KIND[:INDEX] with KIND one of: "
                          f"{_known_kinds()}")
    index = parts[1] if len(parts) == 2 else "0"
    if not (index.isascii() and index.isdigit()):
        raise DeviceError(f"device {name!r}: index {index!r} is not a non-negative integer; "
                          f"expected KIND[:INDEX] with KIND one of: {_known_kinds()}")
    return parts[0], int(index)


def device_kind(name: str) -> DeviceKind:
    return DEVICE_KINDS[parse_device(name)[0]]


@dataclass
class FoundDevice:
    name: str | None         # our device string (kind:index), None for boards we do not know
    device_type_name: str
    info: Any                # samna.device.DeviceInfo


def list_devices() -> list[FoundDevice]:
    """What ``samna.device.get_all_devices()`` reports, named like sinabs does (kind:index, the
    index counting boards of one type in USB-address order). Requires samna."""
    samna = require_samna()
    by_type = {k.device_type_name: k.kind for k in DEVICE_KINDS.values()}
    infos = sorted(samna.device.get_all_devices(),
                   key=lambda i: (i.device_type_name, getattr(i, "usb_device_address", 0)))
    counts: dict[str, int] = {}
    out = []
    for info in infos:
        kind = by_type.get(info.device_type_name)
        name = None
        if kind is not None:
            name = f"{kind}:{counts.get(kind, 0)}"
            counts[kind] = counts.get(kind, 0) + 1
        out.append(FoundDevice(name, info.device_type_name, info))
    return out


def open_device(name: str):
    """Open the board ``name`` (``speck2fdevkit:0``); ``DeviceError`` listing what is connected
    when it is absent. Requires samna."""
    kind, index = parse_device(name)
    samna = require_samna()
    found = list_devices()
    wanted = f"{kind}:{index}"
    for dev in found:
        if dev.name == wanted:
            handle = samna.device.open_device(dev.info)
            if handle is None:
                raise DeviceError(f"{wanted}: samna could not open the board")
            return handle
    listing = ", ".join(f"{d.name or '?'} ({d.device_type_name})" for d in found) or "none"
    raise DeviceError(f"no connected device {wanted}; devices found: {listing}; known kinds: "
                      f"{_known_kinds()}")


# ---- translation: ChipConfig -> samna configuration fields ------------------------------------------

FieldPath = tuple  # steps: str for an attribute, int for an index


class Write(NamedTuple):
    path: FieldPath
    value: Any

    @property
    def name(self) -> str:
        return format_path(self.path)


def format_path(path: FieldPath) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _spec(chip: ChipSpec | str) -> ChipSpec:
    return chip if isinstance(chip, ChipSpec) else load_chip_spec(chip)


def _is_speck(chip: ChipSpec) -> bool:
    """Speck family (integrated sensor): has ``leak_internal_slow_clk_enable`` and
    ``dvs_layer.pass_sensor_events`` [S4a speck2f CnnLayerConfig; S1 config_builder]."""
    return chip.dvs.has_sensor


def translate(config: ChipConfig, *, chip: ChipSpec | str,
              sensor_events: bool = True) -> list[Write]:
    """Every field ``apply_chip_config`` writes, in order, as (path, value) with plain Python
    values (nested lists, ints, bools). Refuses (``ChipConfigError``) a config that uses a
    capability ``chip`` lacks. ``sensor_events``: let the chip's own sensor feed the DVS layer
    (live camera); False when events come from the host."""
    spec = _spec(chip)
    if config.chip != spec.name:
        raise ChipConfigError(f"this config was compiled for {config.chip!r}, not {spec.name!r}; "
                              f"recompile it for {spec.name}")
    config.validate(f"{config.chip} config")
    writes: list[Write] = []
    readout = config.readout
    for core in config.cores:
        writes += _core_writes(core, config, spec)
    writes += _dvs_writes(config.dvs, spec, sensor_events)
    if readout.use_readout_block:
        readout_class_channels(config, chip=spec)  # refuses a chip without one, and the erratum
    if spec.has("readout"):
        writes.append(Write(("readout", "enable"), bool(readout.use_readout_block)))
        if readout.use_readout_block:
            writes.append(Write(("readout", "threshold"), int(readout.threshold)))
    return writes


def _core_writes(core: CoreConfig, config: ChipConfig, spec: ChipSpec) -> list[Write]:
    where = f"core {core.core} ({core.name})"
    if not 0 <= core.core < spec.cores.count:
        raise ChipConfigError(f"{where}: {spec.name} has cores 0..{spec.cores.count - 1}")
    weights = np.asarray(core.weights)
    if weights.shape[-1] != weights.shape[-2]:
        raise ChipConfigError(f"{where}: kernel {weights.shape[-2:]} is not square; samna has one "
                              f"kernel_size")
    if len(core.destinations) > spec.limits.fan_out:
        raise ChipConfigError(f"{where}: {len(core.destinations)} destinations, {spec.name} has "
                              f"{spec.limits.fan_out}")
    readout = config.readout
    to_readout = any(d.core == READOUT_CORE for d in core.destinations)
    if to_readout and not readout.use_readout_block:
        raise ChipConfigError(f"{where}: sends to the readout ({READOUT_CORE}) but "
                              f"readout.use_readout_block is False")
    base: FieldPath = ("cnn_layers", core.core)
    w: list[Write] = []

    def put(*path_and_value):
        *path, value = path_and_value
        w.append(Write(base + tuple(path), value))

    c, h, wd = core.input_shape
    oc, oh, ow = core.neuron_shape
    put("dimensions", "input_shape", "size", "x", int(wd))
    put("dimensions", "input_shape", "size", "y", int(h))
    put("dimensions", "input_shape", "feature_count", int(c))
    put("dimensions", "output_shape", "size", "x", int(ow))
    put("dimensions", "output_shape", "size", "y", int(oh))
    put("dimensions", "output_shape", "feature_count", int(oc))
    put("dimensions", "padding", "x", int(core.padding[1]))
    put("dimensions", "padding", "y", int(core.padding[0]))
    put("dimensions", "stride", "x", int(core.stride[1]))
    put("dimensions", "stride", "y", int(core.stride[0]))
    put("dimensions", "kernel_size", int(core.kernel_size))
    # samna: weights [out][in][x][y], states [c][x][y] (sinabs: weights.transpose(2, 3))
    put("weights", weights.astype(np.int64).transpose(0, 1, 3, 2).tolist())
    put("biases", np.asarray(core.biases).astype(np.int64).tolist())
    put("neurons_initial_value",
        np.asarray(core.neurons_initial_value).astype(np.int64).transpose(0, 2, 1).tolist())
    put("threshold_high", int(core.threshold_high))
    put("threshold_low", int(core.threshold_low))
    put("return_to_zero", bool(core.return_to_zero))
    put("leak_enable", bool(core.leak_enable))
    if _is_speck(spec):
        put("leak_internal_slow_clk_enable", False)
    # without the readout block the classes are the source core's monitored spikes
    monitor = bool(core.monitor_enable) or (core.core == readout.source_core
                                            and not readout.use_readout_block)
    put("monitor_enable", monitor)
    if core.output_decimator is not None and not spec.has("output_decimator"):
        raise ChipConfigError(f"{where}: uses output_decimator {core.output_decimator}; "
                              f"{spec.name} has no output decimator")
    if spec.has("output_decimator"):
        put("output_decimator_enable", core.output_decimator is not None)
        if core.output_decimator is not None:
            put("output_decimator_interval", int(core.output_decimator))
    for i in range(spec.limits.fan_out):
        if i < len(core.destinations):
            d = core.destinations[i]
            put("destinations", i, "layer", int(d.core))
            put("destinations", i, "enable", True)
            put("destinations", i, "pooling", int(d.pooling))
            put("destinations", i, "feature_shift", int(d.feature_shift))
        else:
            put("destinations", i, "enable", False)
    if core.neurons_kill is not None and not spec.has("per_neuron_kill"):
        raise ChipConfigError(f"{where}: has killed neurons (neurons_kill); {spec.name} has no "
                              f"kill bits")
    if spec.has("per_neuron_kill"):
        kill = (np.zeros(core.neuron_shape, dtype=bool) if core.neurons_kill is None
                else np.asarray(core.neurons_kill, dtype=bool))
        # nothing but neurons is ever killed: a zero weight or bias needs no kill bit
        put("weights_kill_bit", np.zeros(weights.shape, bool).transpose(0, 1, 3, 2).tolist())
        put("biases_kill_bit", [False] * int(oc))
        put("neurons_value_kill_bit", kill.transpose(0, 2, 1).tolist())
    return w


def _dvs_writes(dvs: DvsLayerConfig | None, spec: ChipSpec, sensor_events: bool) -> list[Write]:
    base: FieldPath = ("dvs_layer",)
    fan = spec.dvs.max_destinations
    if dvs is None:
        w = [Write(base + ("destinations", i, "enable"), False) for i in range(fan)]
        if _is_speck(spec):  # host events go straight into a core; silence the camera
            w.insert(0, Write(base + ("pass_sensor_events",), False))
        return w
    if len(dvs.destinations) > fan:
        raise ChipConfigError(f"DVS layer: {len(dvs.destinations)} destinations, {spec.name} has "
                              f"{fan}")
    if any(p not in spec.dvs.poolings for p in dvs.pooling):
        raise ChipConfigError(f"DVS layer: pooling {dvs.pooling} not in {spec.dvs.poolings}")
    h, wd = dvs.pooled_shape()
    cut = dvs.cut if dvs.cut is not None else (h - 1, wd - 1)
    if not spec.has("input_roi") and (tuple(dvs.origin) != (0, 0) or tuple(cut) != (h - 1, wd - 1)):
        raise ChipConfigError(f"DVS layer: region of interest {dvs.origin}..{cut}; {spec.name} "
                              f"has no input ROI")
    if dvs.killed_pixels and not spec.has("input_pixel_kill"):
        raise ChipConfigError(f"DVS layer: {len(dvs.killed_pixels)} killed pixels; {spec.name} "
                              f"cannot kill input pixels")
    values = [
        (("merge",), bool(dvs.merge)),
        (("on_channel",), bool(dvs.on_channel)),
        (("off_channel",), bool(dvs.off_channel)),
        (("pooling", "x"), int(dvs.pooling[1])), (("pooling", "y"), int(dvs.pooling[0])),
        (("origin", "x"), int(dvs.origin[1])), (("origin", "y"), int(dvs.origin[0])),
        (("cut", "x"), int(cut[1])), (("cut", "y"), int(cut[0])),
        (("mirror", "x"), bool(dvs.mirror[1])), (("mirror", "y"), bool(dvs.mirror[0])),
    ]
    for i in range(fan):
        if i < len(dvs.destinations):
            values += [(("destinations", i, "layer"), int(dvs.destinations[i])),
                       (("destinations", i, "enable"), True)]
        else:
            values.append((("destinations", i, "enable"), False))
    if _is_speck(spec):
        values.append((("pass_sensor_events",), bool(sensor_events)))
    return [Write(base + path, value) for path, value in values]


def _walk(target: Any, path: FieldPath) -> Any:
    for step in path:
        target = target[step] if isinstance(step, int) else getattr(target, step)
    return target


def apply_chip_config(config: ChipConfig, target: Any, *, chip: ChipSpec | str,
                      sensor_events: bool = True) -> None:
    """Write ``config`` into ``target`` (a samna ``SpeckConfiguration`` / ``DynapcnnConfiguration``,
    or a stand-in), every field by attribute assignment on the object reached by attribute and
    index look-ups (``target.cnn_layers[0].dimensions.stride.x = 1``). Killed pixels are not part of
    it: samna sets those through events (``pixel_kill_events``)."""
    for write in translate(config, chip=chip, sensor_events=sensor_events):
        setattr(_walk(target, write.path[:-1]), write.path[-1], write.value)


def verify_applied(target: Any, writes: Iterable[Write]) -> list[str]:
    """Read every written field back; one message per field that does not hold what was written
    (e.g. a binding that hands out copies of nested structs)."""
    problems = []
    for write in writes:
        try:
            got = _walk(target, write.path)
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            problems.append(f"{write.name}: cannot read back ({exc})")
            continue
        if isinstance(write.value, list):
            same = np.array_equal(np.asarray(got), np.asarray(write.value))
        else:
            same = got == write.value
        if not same:
            problems.append(f"{write.name}: wrote {_short(write.value)}, reads {_short(got)}")
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pixel_kill_events(config: ChipConfig, *, chip: ChipSpec | str | None = None
                      ) -> list[tuple[int, int]]:
    """The (y, x) sensor pixels to kill with ``KillSensorPixel`` events (samna sets them through
    events, not the configuration)."""
    if config.dvs is None:
        return []
    pixels = [(int(y), int(x)) for y, x in config.dvs.killed_pixels]
    if pixels and chip is not None and not _spec(chip).has("input_pixel_kill"):
        raise ChipConfigError(f"{len(pixels)} killed pixels; {_spec(chip).name} cannot kill input "
                              f"pixels")
    return pixels


def readout_class_channels(config: ChipConfig, *, chip: ChipSpec | str) -> list[int]:
    """The source core's channel that each class is read from. With the readout block on speck2e/2f
    the erratum applies: class k is read from channel ``chip.readout.channel_stride * k`` (4k), so the
    compiled output layer must hold the classes at those channels (sinabs
    ``extend_readout_layer``); without it the classes are the monitored channels ``stride * k``."""
    spec = _spec(chip)
    readout = config.readout
    if not readout.use_readout_block:
        return readout.class_channels()
    if not spec.has("readout"):
        raise ChipConfigError(f"the config uses the readout block; {spec.name} has none: read the "
                              f"classes from monitored spikes (use_readout_block=False)")
    if readout.num_classes > spec.readout.classes:
        raise ChipConfigError(f"{readout.num_classes} classes; the {spec.name} readout has "
                              f"{spec.readout.classes}")
    if readout.channel_stride != spec.readout.channel_stride:
        raise ChipConfigError(f"readout.channel_stride {readout.channel_stride}; the {spec.name} "
                              f"readout reads class k from channel {spec.readout.channel_stride}*k "
                              f"(erratum): spread the output layer's channels first")
    source = config.core(readout.source_core)
    channels = readout.class_channels()
    if channels and channels[-1] >= source.neuron_shape[0]:
        raise ChipConfigError(f"readout: class {readout.num_classes - 1} is read from channel "
                              f"{channels[-1]}, core {source.core} has {source.neuron_shape[0]}")
    if not any(d.core == READOUT_CORE for d in source.destinations):
        raise ChipConfigError(f"readout: core {source.core} has no destination {READOUT_CORE}")
    return channels


# ---- runtime (requires samna; NEVER RUN against samna or a board here) -----------------------------

@dataclass(frozen=True)
class _ChipBindings:
    module: str          # samna.<module>
    configuration: str   # class under samna.<module>.configuration
    input_node: str      # samna.<name>(): host events -> model sink
    output_node: str     # samna.<name>(): model source -> host


# sinabs 3.1.3 chips/speck2e.py, speck2f.py; sinabs 2.x chips/dynapcnn.py
_BINDINGS = {
    "speck2f": _ChipBindings("speck2f", "SpeckConfiguration",
                             "BasicSourceNode_speck2f_event_input_event",
                             "BasicSinkNode_speck2f_event_output_event"),
    "speck2e": _ChipBindings("speck2e", "SpeckConfiguration",
                             "BasicSourceNode_speck2e_event_speck2e_input_event",
                             "BasicSinkNode_speck2e_event_output_event"),
    "dynapcnn": _ChipBindings("dynapcnn", "DynapcnnConfiguration",
                              "BasicSourceNode_dynapcnn_event_input_event",
                              "BasicSinkNode_dynapcnn_event_output_event"),
}

POWER_RAILS = ("VDD_IO", "VDD_RAM", "VDD_LOGIC", "VDD_PIXEL_DIGITAL", "VDD_PIXEL_ANALOG")
SPIKE_DTYPE = np.dtype([("layer", np.uint8), ("feature", np.uint16), ("x", np.uint16),
                        ("y", np.uint16), ("timestamp", np.uint64)])


class DeviceSession:
    """One board running one ``ChipConfig``; a context manager.

    NEVER RUN here (no samna, no board): written from speck-hardware.md section 8 and sinabs 3.1.3
    ``DynapcnnNetwork.to`` / ``io.py``. On entering it: opens the device, builds samna's
    configuration object for the chip, ``apply_chip_config`` + read-back check + samna's
    ``validate_configuration``, ``apply_configuration``, builds the graph (host source -> model
    sink, model source -> host sink), enables and resets the stop-watch before any event is written,
    sets the slow clock when a core leaks, and writes the ``KillSensorPixel`` events.
    """

    def __init__(self, device: str, config: ChipConfig, *, chip: ChipSpec | str | None = None,
                 sensor_events: bool = True, slow_clk_hz: int | None = None):
        kind = device_kind(device)
        self.spec = _spec(chip if chip is not None else config.chip)
        if kind.chip != self.spec.name or config.chip != self.spec.name:
            raise DeviceError(f"device {device} carries a {kind.chip}; the config is for "
                              f"{config.chip} (chip spec {self.spec.name})")
        self.device_name, self.config = device, config
        self.sensor_events, self.slow_clk_hz = sensor_events, slow_clk_hz
        self.writes = translate(config, chip=self.spec, sensor_events=sensor_events)
        self.samna = self.device = self.samna_config = self.graph = None
        self._source = self._sink = None

    def __enter__(self) -> DeviceSession:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _live(self):
        if self.device is None:
            raise DeviceError(f"the session on {self.device_name} is not open (use it as a context "
                              f"manager)")
        return getattr(self.samna, _BINDINGS[self.spec.name].module)

    def _open(self) -> None:
        samna = self.samna = require_samna()
        bind = _BINDINGS[self.spec.name]
        mod = getattr(samna, bind.module)
        self.device = open_device(self.device_name)
        self.samna_config = getattr(mod.configuration, bind.configuration)()
        apply_chip_config(self.config, self.samna_config, chip=self.spec,
                          sensor_events=self.sensor_events)
        problems = verify_applied(self.samna_config, self.writes)
        if problems:
            raise DeviceError("samna's configuration object did not take these fields: "
                              + "; ".join(problems[:10]))
        ok, message = mod.validate_configuration(self.samna_config)
        if not ok:
            raise DeviceError(f"samna refused the configuration: {message}")
        self.device.get_model().apply_configuration(self.samna_config)
        self._source = getattr(samna, bind.input_node)()
        self._sink = getattr(samna, bind.output_node)()
        self.graph = samna.graph.EventFilterGraph()
        self.graph.sequential([self._source, self.device.get_model_sink_node()])
        self.graph.sequential([self.device.get_model_source_node(), self._sink])
        self.graph.start()
        watch = self.device.get_stop_watch()
        watch.set_enable_value(True)
        watch.reset()
        if self.slow_clk_hz is not None or any(c.leak_enable for c in self.config.cores):
            if self.slow_clk_hz is None:
                raise DeviceError("a core leaks (leak_enable) and needs the slow clock: pass "
                                  "slow_clk_hz")
            io = self.device.get_io_module()
            io.set_slow_clk(True)
            io.set_slow_clk_rate(int(self.slow_clk_hz))
        pixels = pixel_kill_events(self.config, chip=self.spec)
        if pixels:
            kills = []
            for y, x in pixels:
                ev = mod.event.KillSensorPixel()
                ev.y, ev.x = y, x
                kills.append(ev)
            self._source.write(kills)
        self._sink.get_events()  # drop whatever arrived while configuring

    def reset_states(self) -> None:
        """Neuron states back to the ChipConfig's ``neurons_initial_value`` (never random), by
        re-applying the configuration (sinabs does the same with zeros)."""
        self._live()
        for core in self.config.cores:
            self.samna_config.cnn_layers[core.core].neurons_initial_value = (
                np.asarray(core.neurons_initial_value).astype(np.int64).transpose(0, 2, 1).tolist())
        self.device.get_model().apply_configuration(self.samna_config)

    def write_events(self, events: np.ndarray, core: int | None = None) -> None:
        """Host events (structured x, y, t [us], p) into ``core`` as ``Spike(layer=core,
        feature=p)``, or, when ``core`` is None and the config has a DVS layer, as ``DvsEvent`` into
        the DVS layer (sensor coordinates); without a DVS layer they go to ``config.input_core``."""
        mod = self._live()
        if core is None and self.config.dvs is None:
            core = self.config.input_core
        out = []
        for row in np.asarray(events):
            if core is None:
                ev = mod.event.DvsEvent()
                ev.p = bool(row["p"])
            else:
                ev = mod.event.Spike()
                ev.layer, ev.feature = int(core), int(row["p"])
            ev.x, ev.y, ev.timestamp = int(row["x"]), int(row["y"]), int(row["t"])
            out.append(ev)
        self._source.write(out)

    def read_spikes(self) -> np.ndarray:
        """Output ``Spike`` events since the last call: records (layer, feature, x, y, timestamp)."""
        spike_type = self._live().event.Spike
        spikes = [e for e in self._sink.get_events() if isinstance(e, spike_type)]
        out = np.zeros(len(spikes), dtype=SPIKE_DTYPE)
        for i, e in enumerate(spikes):
            out[i] = (e.layer, e.feature, e.x, e.y, e.timestamp)
        return out

    def read_power(self, seconds: float, rate_hz: float = 100.0) -> dict[str, float]:
        """Mean power per rail in mW over ``seconds`` (samna reports W; max 100 Hz; each trace has
        about +-50 uW offset), plus ``total`` and ``samples``."""
        self._live()
        samna = self.samna
        monitor = self.device.get_power_monitor()
        sink = samna.BasicSinkNode_unifirm_modules_events_measurement()
        graph = samna.graph.EventFilterGraph()
        graph.sequential([monitor.get_source_node(), sink])
        graph.start()
        try:
            monitor.start_auto_power_measurement(rate_hz)
            time.sleep(seconds)
            monitor.stop_auto_power_measurement()
            events = sink.get_events()
        finally:
            graph.stop()
        return power_by_rail([(e.channel, e.value) for e in events])

    def close(self) -> None:
        if self.graph is not None:
            self.graph.stop()
            self.graph = None
        if self.device is not None:
            device, self.device = self.device, None
            self.samna.device.close_device(device)


def power_by_rail(samples: Sequence[tuple[int, float]]) -> dict[str, float]:
    """(channel, watts) power-monitor samples -> mean mW per rail name, ``total`` and ``samples``."""
    out: dict[str, float] = {}
    for channel, name in enumerate(POWER_RAILS):
        values = [v for c, v in samples if c == channel]
        out[name] = float(np.mean(values)) * 1e3 if values else float("nan")
    out["total"] = float(sum(v for k, v in out.items() if not np.isnan(v)))
    out["samples"] = float(len(samples))
    return out
