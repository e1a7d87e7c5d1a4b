"""The samna adapter: the only module of asa_deploy that may import samna.

Why it exists. ``ChipConfig`` (``asa_deploy/chip/config.py``) is the single source of truth for
what the cores, the DVS input layer and the readout hold; compile, the simulators and the reports
read only that. This module turns a ``ChipConfig`` into samna's configuration object and drives a
board the way SynSense's own code does. Nothing else in the package touches samna, so everything
else imports and runs on machines without SynSense's software.

samna detection (``samna_status``, ``require_samna``). ``pip install sinabs`` pulls PyPI's
``samna``, which is a stub: its ``__init__.py`` sets ``PYPI_SAMNA = True`` and, when imported,
runs ``pip install --force-reinstall samna==<version> --index-url <SynSense's GitLab index>`` in a
subprocess; without network access ``import samna`` fails with ``CalledProcessError`` (not
``ImportError``) after a network attempt (docs/speck-hardware.md section 0a). We therefore never import
samna to find out whether it is real: ``importlib.util.find_spec`` locates the package without
executing it, and its ``__init__.py`` text is searched for the stub's ``PYPI_SAMNA`` mark. Only after
``require_samna()`` has passed does a function import samna, lazily, inside itself.

The runtime (``DeviceSession``) runs one window the way the simulators do: reset the neuron states
(re-apply the configuration, then wait), reset the board's time base, write the window's events with
timestamps from 0 (the window's start), wait the window's duration, read until quiet, and hand back
what came out. Every samna call carries the public source that shows it (sources as in
docs/speck-hardware.md, Sources: S = sinabs 3.1.3 ``backend/dynapcnn``, S2 = sinabs 2.x, NB = sinabs
``docs/speck/notebooks``, DS = the Speck dev kit datasheet, SD = samna's API reference pages,
3P = third-party code only). Where no source settles a behaviour the session has an explicit option
with a documented default instead of a guess:

  * ``apply_wait_s`` (default 1 s, sinabs's ``to``/``reset_states``; the notebooks wait 0.1 s);
  * ``pixel_kill``: whether ``KillSensorPixel`` masks host-written ``DvsEvent``s is unknown, so by
    default (``"host"``) killed pixels' events are dropped on the host before writing, which gives
    the simulator's result either way; ``"chip"`` writes ``KillSensorPixel`` (3P) and trusts it;
  * ``dynapcnn_timer``: DYNAP-CNN has no stop-watch object; sinabs 2.x enables and "resets" its
    time stamps with ``io.write_config(0x0003, 1)`` (``"sinabs2"``, default); ``"toggle"`` writes 0
    then 1 (sinabs 2.x's disable then enable) for a board on which writing 1 alone does not reset;
  * ``slow_clk_hz``: a leaking core or the readout block needs the slow clock; by default one tick
    per time bin (``1e6 / dt_us``), what the ``fast`` simulator assumes;
  * ``readout_average``: the readout's low-pass filter over 1 (default, as SynSense's readout
    notebook: ``low_pass_filter_disable``), 16 or 32 slow-clock ticks.

Tested here without a board (tests/test_samna_adapter.py, tests/test_chip_camera.py): the translation
against a recording stand-in, and every runtime path (open, reset, windows, camera, power, readout,
DYNAP-CNN time base) against ``tests/samna_conformance``, a fake ``samna`` that implements only the
names and behaviours a public source confirms and raises ``AttributeError`` for anything else.

UNCONFIRMED (no public source; the option or check that guards each):
  * nested attribute writes such as ``cnn_layers[0].dimensions.input_shape.size.x = 32`` (3P; sinabs
    assigns whole dicts): every written field is read back (``verify_applied``) before applying;
  * ``destinations[i].feature_shift`` (3P), ``KillSensorPixel`` (3P) and whether it masks host
    events (``pixel_kill``), ``readout.low_pass_filter32_not16`` (SD only);
  * the DYNAP-CNN names come from sinabs 2.x (sinabs 3.x dropped DYNAP-CNN), and whether
    ``write_config(0x0003, 1)`` zeroes the time stamps (``dynapcnn_timer``); no public source
    writes ``DvsEvent`` into a DYNAP-CNN, so host events there enter the DVS layer's destination
    cores as ``Spike`` events after the simulator's own DVS-layer mapping on the host; no source
    shows a DYNAP-CNN power monitor, so power is not read there;
  * that re-applying the configuration resets the neuron states to ``neurons_initial_value`` and
    keeps killed sensor pixels (``KillSensorPixel`` events are re-sent after every apply);
  * the readout's ``ReadoutPinValue.index`` counts channels from 1 (NB: "index of each channel is
    starting from 1 to 15"), read as class ``index - 1``;
  * the dynapcnn layout of ``neurons_value_kill_bit`` is written as [c][x][y] like
    ``neurons_initial_value`` (samna's dynapcnn page says "[feature][channel][x][y]").
"""

from __future__ import annotations

import contextlib
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


def translate(config: ChipConfig, *, chip: ChipSpec | str, sensor_events: bool = False,
              monitor_input: bool = False, readout_average: int = 1,
              monitor_cores: Iterable[int] = ()) -> list[Write]:
    """Every field ``apply_chip_config`` writes, in order, as (path, value) with plain Python
    values (nested lists, ints, bools). Refuses (``ChipConfigError``) a config that uses a
    capability ``chip`` lacks. ``sensor_events``: let the chip's own sensor feed the DVS layer
    (``camera --device`` only); False whenever the host writes the events (DS 3.2.3.8; NB
    nmnist_quick_start). ``monitor_input``: also send the DVS layer's output back to the host (as
    layer-13 ``Spike``s), to count input events. ``readout_average``: the readout block's low-pass
    filter over 1, 16 or 32 slow-clock ticks. ``monitor_cores``: cores whose spikes are sent to
    the host besides the ChipConfig's own ``monitor_enable`` ones (``deploy --monitor``)."""
    spec = _spec(chip)
    if config.chip != spec.name:
        raise ChipConfigError(f"this config was compiled for {config.chip!r}, not {spec.name!r}; "
                              f"recompile it for {spec.name}")
    config.validate(f"{config.chip} config")
    if readout_average not in READOUT_AVERAGES:
        raise ChipConfigError(f"readout average {readout_average!r}: the readout's low-pass filter "
                              f"averages over {', '.join(map(str, READOUT_AVERAGES))} slow-clock ticks")
    writes: list[Write] = []
    readout = config.readout
    monitored = {int(c) for c in monitor_cores}
    unused = sorted(monitored - set(config.core_ids()))
    if unused:
        raise ChipConfigError(f"monitor cores {unused}: the config uses cores {config.core_ids()}")
    for core in config.cores:
        writes += _core_writes(core, config, spec, core.core in monitored)
    writes += _dvs_writes(config.dvs, spec, sensor_events, monitor_input)
    if readout.use_readout_block:
        readout_class_channels(config, chip=spec)  # refuses a chip without one, and the erratum
    if spec.has("readout"):
        writes.append(Write(("readout", "enable"), bool(readout.use_readout_block)))
        if readout.use_readout_block:
            writes += _readout_writes(config, readout_average)
    return writes


def _readout_writes(config: ChipConfig, average: int) -> list[Write]:
    """The readout block as SynSense's readout notebook sets it (NB using_readout_layer cells 9,
    18): one class per channel of a 1x1 output (``readout_configuration_sel`` 3 = 1x*1y*16f,
    docs/speck-hardware.md section 5), the class read as ``ReadoutPinValue`` events
    (``readout_pin_monitor_enable``), and ``readout.monitor_enable`` off, since it would stop every
    ``Spike`` from being monitored (NB cell 22)."""
    readout = config.readout
    source = config.core(readout.source_core)
    if tuple(source.neuron_shape[1:]) != (1, 1):
        c, h, w = source.neuron_shape
        raise ChipConfigError(f"readout block: core {source.core} ({source.name}) outputs {c}x{h}x{w} "
                              f"(CxHxW); the readout is set up for a 1x1 output (one class per "
                              f"channel, readout_configuration_sel 3): end the network with a "
                              f"1x1 layer, or read the classes from monitored spikes "
                              f"(use_readout_block=False)")
    base = ("readout",)
    w = [Write(base + ("threshold",), int(readout.threshold)),
         Write(base + ("readout_configuration_sel",), 3),
         Write(base + ("output_mode_sel",), 1),  # NB cell 9 (0b01); shapes ReadoutValue only
         Write(base + ("low_pass_filter_disable",), average == 1)]
    if average != 1:  # SD (docs/speck-hardware.md section 5): the moving average over 32, else 16 ticks
        w.append(Write(base + ("low_pass_filter32_not16",), average == 32))
    w += [Write(base + ("readout_pin_monitor_enable",), True),
          Write(base + ("monitor_enable",), False)]
    return w


def _core_writes(core: CoreConfig, config: ChipConfig, spec: ChipSpec,
                 monitored: bool = False) -> list[Write]:
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
    monitor = bool(core.monitor_enable) or monitored or (core.core == readout.source_core
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


def _dvs_writes(dvs: DvsLayerConfig | None, spec: ChipSpec, sensor_events: bool,
                monitor_input: bool) -> list[Write]:
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
    # S chips/dynapcnn.py monitor_layers(["dvs"]) -> dvs_layer.monitor_enable (every chip sinabs maps)
    values.append((("monitor_enable",), bool(monitor_input)))
    if _is_speck(spec):
        values.append((("pass_sensor_events",), bool(sensor_events)))
    return [Write(base + path, value) for path, value in values]


def _walk(target: Any, path: FieldPath) -> Any:
    for step in path:
        target = target[step] if isinstance(step, int) else getattr(target, step)
    return target


def apply_chip_config(config: ChipConfig, target: Any, *, chip: ChipSpec | str,
                      sensor_events: bool = False, **options) -> None:
    """Write ``config`` into ``target`` (a samna ``SpeckConfiguration`` / ``DynapcnnConfiguration``,
    or a stand-in), every field by attribute assignment on the object reached by attribute and
    index look-ups (``target.cnn_layers[0].dimensions.stride.x = 1``). Killed pixels are not part of
    it: samna sets those through events (``pixel_kill_events``)."""
    write_fields(target, translate(config, chip=chip, sensor_events=sensor_events, **options))


def write_fields(target: Any, writes: Iterable[Write]) -> None:
    for write in writes:
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


# ---- runtime: one board, window by window (checked against tests/samna_conformance) ---------------

# How long a board gets after apply_configuration before events are written: sinabs 3.1.3 sleeps
# 1 s in DynapcnnNetwork.to and reset_states (dynapcnn_network.py:358-359, 576-578); SynSense's
# notebooks sleep 0.1 s (using_readout_layer cells 18, 22). Default: sinabs's.
APPLY_WAIT_S = 1.0
# sinabs hw_forward (dynapcnn_network.py:161-190): sleep the input's duration, then poll every
# 0.1 s until a poll brings nothing new.
QUIET_S = 0.1
MAX_DRAIN_S = 10.0       # stop reading a board that never goes quiet
UINT32_MAX = 2**32 - 1   # samna event timestamps are uint32 microseconds: they wrap after 71.6 min
DVS_MONITOR_LAYER = 13   # NB using_readout_layer cell 24: the DVS layer's output is "layer 13"
DYNAPCNN_TIME_REGISTER = 0x0003  # S2 io.py enable_/reset_/disable_timestamps on dynapcnndevkit
POWER_RATE_HZ = 100.0    # NB power_monitoring cell 7 (samples per second per rail)
PIXEL_KILL_MODES = ("host", "chip")
DYNAPCNN_TIMERS = ("sinabs2", "toggle")
READOUT_AVERAGES = (1, 16, 32)


def _wait(seconds: float) -> None:
    """Every wait on a board goes through here (the conformance tests put a virtual clock here)."""
    time.sleep(seconds)


@dataclass(frozen=True)
class _ChipBindings:
    module: str          # samna.<module>
    configuration: str   # class under samna.<module>.configuration
    input_node: str      # samna.<name>(): host events -> model sink
    output_node: str     # samna.<name>(): model source -> host


# S chips/speck2e.py, chips/speck2f.py (get_default_config, get_input_buffer, get_output_buffer);
# S2 chips/dynapcnn.py:313-317
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
READOUT_DTYPE = np.dtype([("index", np.int32), ("timestamp", np.uint64)])


@dataclass
class WindowOutput:
    """What a board sent back for one window; timestamps in us from the window's start."""

    spikes: np.ndarray    # SPIKE_DTYPE: the monitored cores' Spike events
    inputs: np.ndarray    # SPIKE_DTYPE: the DVS layer's output (layer 13; with monitor_input)
    readout: np.ndarray   # READOUT_DTYPE: ReadoutPinValue events (readout block only)
    written: int          # host events written

    def class_counts(self, config: ChipConfig) -> np.ndarray:
        """Spikes per class: the readout source core's spikes on each class channel."""
        mine = self.spikes[self.spikes["layer"] == config.readout.source_core]
        return np.array([(mine["feature"] == c).sum() for c in config.readout.class_channels()],
                        dtype=np.int64)

    def prediction(self, config: ChipConfig) -> int:
        """The class with the most spikes (ties: the lowest), -1 when silent, as the simulators."""
        counts = self.class_counts(config)
        return int(counts.argmax()) if counts.sum() else -1

    def readout_prediction(self) -> int:
        """The readout block's class: the most frequent ``ReadoutPinValue.index`` (ties: the
        lowest) minus 1, since the readout numbers its channels from 1 (NB using_readout_layer
        cell 2); -1 when it reported nothing."""
        if not len(self.readout):
            return -1
        index, counts = np.unique(self.readout["index"], return_counts=True)
        return int(index[counts.argmax()]) - 1


def slow_clock_hz(config: ChipConfig, slow_clk_hz: int | None = None) -> int | None:
    """The slow-clock rate a board needs for ``config``: ``slow_clk_hz`` when given; else one tick
    per time bin when a core leaks or the readout block is used (the leak and the readout run per
    slow-clock tick, docs/speck-hardware.md sections 3 and 5; the ``fast`` simulator assumes one tick per
    bin); None when nothing needs it."""
    if slow_clk_hz is not None:
        if int(slow_clk_hz) < 1:
            raise DeviceError(f"slow clock {slow_clk_hz} Hz: give a rate of at least 1 Hz")
        return int(slow_clk_hz)
    needs = [what for what, used in (
        ("a leaking core (leak_enable: the network has biases)", any(c.leak_enable for c in config.cores)),
        ("the readout block", config.readout.use_readout_block)) if used]
    if not needs:
        return None
    frame = config.meta.get("frame_spec") or {}
    if not frame.get("dt_us"):
        raise DeviceError(f"{' and '.join(needs)} need{'s' if len(needs) == 1 else ''} the slow "
                          f"clock, and this chip_config.json has "
                          f"no frame_spec to take one tick per bin from: pass slow_clk_hz "
                          f"(--slow-clk-hz HZ)")
    return max(1, round(1e6 / int(frame["dt_us"])))


class DeviceSession:
    """One board running one ``ChipConfig``, window by window; a context manager.

    ``run_window`` does what the simulators do with a window, as sinabs's ``hw_forward`` and
    SynSense's notebooks drive a board: reset the neuron states, reset the time base, write the
    window's events with timestamps from 0, wait the window, read until quiet. ``listen_window`` is
    the same for the chip's own sensor (``camera --device``). Options: see the module docstring.
    """

    def __init__(self, device: str, config: ChipConfig, *, chip: ChipSpec | str | None = None,
                 sensor_events: bool = False, monitor_input: bool = False,
                 apply_wait_s: float = APPLY_WAIT_S, slow_clk_hz: int | None = None,
                 pixel_kill: str = "host", dynapcnn_timer: str = "sinabs2",
                 readout_average: int = 1, monitor_cores: Iterable[int] = (),
                 quiet_s: float = QUIET_S):
        kind = device_kind(device)
        self.spec = _spec(chip if chip is not None else config.chip)
        if kind.chip != self.spec.name or config.chip != self.spec.name:
            raise DeviceError(f"device {device} carries a {kind.chip}; the config is for "
                              f"{config.chip} (chip spec {self.spec.name})")
        for name, value, allowed in (("pixel_kill", pixel_kill, PIXEL_KILL_MODES),
                                     ("dynapcnn_timer", dynapcnn_timer, DYNAPCNN_TIMERS)):
            if value not in allowed:
                raise DeviceError(f"{name} {value!r}: choose one of {', '.join(allowed)}")
        if not (apply_wait_s >= 0 and quiet_s > 0):
            raise DeviceError(f"apply_wait_s {apply_wait_s} and quiet_s {quiet_s}: give a wait >= 0 "
                              f"and a polling interval > 0 seconds")
        self.is_speck = _is_speck(self.spec)
        if sensor_events and (not self.is_speck or config.dvs is None):
            raise DeviceError(f"{device}: the chip's own sensor can feed the network only on a chip "
                              f"with a sensor (speck2e/2f) and a config with a DVS input layer; "
                              f"{config.chip} {'has no sensor' if not self.is_speck else 'config has none'}")
        self.device_name, self.config = device, config
        self.sensor_events = sensor_events
        self.monitor_input = monitor_input and config.dvs is not None
        self.apply_wait_s, self.quiet_s = float(apply_wait_s), float(quiet_s)
        self.pixel_kill, self.dynapcnn_timer = pixel_kill, dynapcnn_timer
        self.readout_average = readout_average
        self.writes = translate(config, chip=self.spec, sensor_events=sensor_events,
                                monitor_input=self.monitor_input, readout_average=readout_average,
                                monitor_cores=monitor_cores)
        self.slow_clk_hz = slow_clock_hz(config, slow_clk_hz)
        self.killed = pixel_kill_events(config, chip=self.spec)
        # where host events go: DvsEvents into the DVS layer (Speck: NB using_readout_layer cells
        # 15-19), Spikes into a core (S chip_factory.py xytp_to_events), or, on a DYNAP-CNN with a
        # DVS layer (no public source writes its DvsEvent), Spikes into the DVS layer's destination
        # cores after the simulators' own DVS-layer mapping on the host
        self.route = "core" if config.dvs is None else ("dvs" if self.is_speck else "dvs-host")
        self._kills_on_chip = bool(self.killed) and self.route == "dvs" and (
            pixel_kill == "chip" or sensor_events)
        self.samna = self.device = self.samna_config = self.graph = None
        self._mod = self._model = self._source = self._sink = self._power = None

    def describe(self) -> dict:
        """The runtime settings, for device.json / camera.json."""
        out = {"apply_wait_s": self.apply_wait_s, "read_until_quiet_s": self.quiet_s,
               "slow_clk_hz": self.slow_clk_hz,
               "time_base": ("stop-watch set_enable_value(True) + reset() before each window"
                             if self.is_speck else
                             f"io write_config(0x0003, {'0 then 1' if self.dynapcnn_timer == 'toggle' else '1'}) "
                             f"before each window ({self.dynapcnn_timer})"),
               "host_input": {"core": f"Spike events into core {self.config.input_core}",
                              "dvs": "DvsEvent events into the DVS layer",
                              "dvs-host": "Spike events into the DVS layer's destination cores, "
                                          "DVS layer applied on the host"}[self.route]}
        if self.is_speck:
            out["pass_sensor_events"] = self.sensor_events
        if self.killed:
            out["pixel_kill"] = ("KillSensorPixel events" if self._kills_on_chip
                                 else "killed pixels' events dropped on the host")
        if self.config.readout.use_readout_block:
            out["readout_average"] = self.readout_average
        return out

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

    def _live(self) -> None:
        if self.device is None:
            raise DeviceError(f"the session on {self.device_name} is not open (use it as a context "
                              f"manager)")

    def _open(self) -> None:
        samna = self.samna = require_samna()
        bind = _BINDINGS[self.spec.name]
        self._mod = getattr(samna, bind.module)
        self.device = open_device(self.device_name)
        # S chips/speck2f.py get_default_config; S2 chips/dynapcnn.py
        self.samna_config = getattr(self._mod.configuration, bind.configuration)()
        write_fields(self.samna_config, self.writes)
        problems = verify_applied(self.samna_config, self.writes)
        if problems:
            raise DeviceError("samna's configuration object did not take these fields: "
                              + "; ".join(problems[:10]))
        ok, message = self._mod.validate_configuration(self.samna_config)  # S config_builder.py:85
        if not ok:
            raise DeviceError(f"samna refused the configuration: {message}")
        self._model = self.device.get_model()  # samna "Device Models"; S dynapcnn_network.py:358
        self._apply(kill=False)
        if self.slow_clk_hz is not None:  # S dynapcnn_network.py:362-365; NB using_readout_layer 14
            io = self.device.get_io_module()
            io.set_slow_clk_rate(self.slow_clk_hz)
            io.set_slow_clk(True)
        self._source = getattr(samna, bind.input_node)()
        self._sink = getattr(samna, bind.output_node)()
        # S dynapcnn_network.py:376-392: host source -> model sink, model source -> host sink
        self.graph = samna.graph.EventFilterGraph()
        self.graph.sequential([self._source, self._model.get_sink_node()])
        self.graph.sequential([self._model.get_source_node(), self._sink])
        self.graph.start()
        if self._kills_on_chip:
            self._kill_pixels()
        self._sink.get_events()  # drop whatever arrived while configuring

    def _apply(self, *, kill: bool = True) -> None:
        self._model.apply_configuration(self.samna_config)
        _wait(self.apply_wait_s)
        if kill and self._kills_on_chip:
            self._kill_pixels()

    def _kill_pixels(self) -> None:
        """``KillSensorPixel`` (x, y) events (3P), re-sent after every apply: whether applying a
        configuration keeps killed pixels is unconfirmed."""
        kills = []
        for y, x in self.killed:
            event = self._mod.event.KillSensorPixel()
            event.x, event.y = int(x), int(y)
            kills.append(event)
        self._source.write(kills)

    def reset_states(self) -> None:
        """Neuron states back to the ChipConfig's ``neurons_initial_value`` by re-applying the
        configuration and waiting, as sinabs's ``reset_states`` does (dynapcnn_network.py:576-578)."""
        self._live()
        self._apply()

    def _reset_time(self) -> None:
        """The board's time base to 0, right before a window's events are written (sinabs
        hw_forward resets and enables it, then writes; NB using_readout_layer cell 19)."""
        if self.is_speck:
            watch = self.device.get_stop_watch()  # NB using_readout_layer cell 19; S io.py
            watch.set_enable_value(True)
            watch.reset()
        else:  # DYNAP-CNN: no stop-watch object; S2 io.py writes register 0x0003
            io = self.device.get_io_module()
            if self.dynapcnn_timer == "toggle":
                io.write_config(DYNAPCNN_TIME_REGISTER, 0)  # S2 disable_timestamps
            io.write_config(DYNAPCNN_TIME_REGISTER, 1)      # S2 reset_timestamps, enable_timestamps

    def run_window(self, window) -> WindowOutput:
        """One ``EventWindow`` on the board: reset, write its events from time 0, read until quiet."""
        from asa_deploy.chip.sim.dvs import check_windows  # the simulators' input checks

        self._live()
        duration = int(window.n_bins) * int(window.dt_us)
        _check_window(duration, window.recording)
        check_windows(self.config, [window])
        self.reset_states()
        self._sink.get_events()
        self._reset_time()
        written = self._write(window)
        _wait(duration / 1e6)
        return self._collect(self._drain(), written)

    def listen_window(self, duration_us: int) -> WindowOutput:
        """One window of the chip's own sensor: reset, listen ``duration_us``, read."""
        self._live()
        _check_window(int(duration_us), "the camera window")
        self.reset_states()
        self._sink.get_events()
        self._reset_time()
        _wait(duration_us / 1e6)
        return self._collect(list(self._sink.get_events()), 0)

    def _write(self, window) -> int:
        """The window's events as samna events, timestamps from the window's start (as sinabs's
        ``xytp_to_events(..., reset_timestamps=True)`` shifts them to start at 0)."""
        ev = window.events
        t = ev["t"]
        ev = ev[(t >= window.t_start) & (t < window.t_start + window.n_bins * window.dt_us)]
        ev = ev[np.argsort(ev["t"], kind="stable")]
        stamps = ev["t"].astype(np.int64) - int(window.t_start)
        event = self._mod.event
        out = []
        if self.route == "dvs-host":
            from asa_deploy.chip.sim.dvs import prepare_window  # the simulators' DVS layer

            chip_input = prepare_window(self.config, window)
            times = stamps[chip_input.ordinal - 1]
            for c, y, x, stamp in zip(chip_input.c, chip_input.y, chip_input.x, times, strict=True):
                for core in self.config.dvs.destinations:
                    out.append(_spike(event.Spike(), core, c, x, y, stamp))
        elif self.route == "core":
            for row, stamp in zip(ev, stamps, strict=True):
                out.append(_spike(event.Spike(), self.config.input_core, row["p"], row["x"],
                                  row["y"], stamp))
        else:
            if self.killed and not self._kills_on_chip:  # pixel_kill "host": drop them here
                dead = {(int(y), int(x)) for y, x in self.killed}
                keep = np.array([(int(y), int(x)) not in dead for y, x in zip(ev["y"], ev["x"],
                                                                              strict=True)], bool)
                ev, stamps = ev[keep], stamps[keep]
            for row, stamp in zip(ev, stamps, strict=True):
                dvs = event.DvsEvent()  # NB using_readout_layer cell 15: x, y, p, timestamp
                dvs.x, dvs.y, dvs.p, dvs.timestamp = int(row["x"]), int(row["y"]), bool(row["p"]), int(stamp)
                out.append(dvs)
        if out:
            self._source.write(out)
        return len(out)

    def _drain(self) -> list:
        """Read until a poll ``quiet_s`` later brings nothing new (sinabs hw_forward)."""
        events, waited = list(self._sink.get_events()), 0.0
        while waited < MAX_DRAIN_S:
            _wait(self.quiet_s)
            waited += self.quiet_s
            new = list(self._sink.get_events())
            if not new:
                break
            events += new
        return events

    def _collect(self, events: list, written: int) -> WindowOutput:
        spike_type = self._mod.event.Spike  # S io.py events_to_xytp: isinstance(..., Spike)
        pin_type = (self._mod.event.ReadoutPinValue  # NB using_readout_layer cell 20
                    if self.config.readout.use_readout_block else None)
        spikes, inputs, pins = [], [], []
        for e in events:
            if isinstance(e, spike_type):
                row = (e.layer, e.feature, e.x, e.y, e.timestamp)
                (inputs if e.layer == DVS_MONITOR_LAYER else spikes).append(row)
            elif pin_type is not None and isinstance(e, pin_type):
                pins.append((e.index, e.timestamp))
        return WindowOutput(np.array(spikes, dtype=SPIKE_DTYPE), np.array(inputs, dtype=SPIKE_DTYPE),
                            np.array(pins, dtype=READOUT_DTYPE), written)

    def read_spikes(self) -> np.ndarray:
        """Monitored ``Spike`` events that arrived since the last read: records (layer, feature, x,
        y, timestamp)."""
        self._live()
        return self._collect(list(self._sink.get_events()), 0).spikes

    def start_power(self, rate_hz: float = POWER_RATE_HZ) -> None:
        """Start sampling every rail (NB power_monitoring cells 5-7); Speck dev kits only."""
        self._live()
        if not self.is_speck:
            raise DeviceError(f"{self.spec.name}: no public source shows a power monitor on this "
                              f"board (SynSense's power notebook and samna's PowerMonitor are for "
                              f"Speck dev kits); power is not measured")
        monitor = self.device.get_power_monitor()
        sink = self.samna.BasicSinkNode_unifirm_modules_events_measurement()
        graph = self.samna.graph.EventFilterGraph()
        graph.sequential([monitor.get_source_node(), sink])
        graph.start()
        self._power = (monitor, sink, graph)
        sink.get_events()
        monitor.start_auto_power_measurement(rate_hz)

    def stop_power(self) -> dict[str, float]:
        """Mean power per rail in mW since ``start_power`` (samna reports W), plus ``total`` and
        ``samples``."""
        if self._power is None:
            raise DeviceError("stop_power without start_power")
        monitor, sink, graph = self._power
        self._power = None
        try:
            monitor.stop_auto_power_measurement()
            events = sink.get_events()
        finally:
            graph.stop()
        return power_by_rail([(e.channel, e.value) for e in events])  # NB power_monitoring cell 9

    def close(self) -> None:
        if self._power is not None:
            monitor, _, graph = self._power
            self._power = None
            with contextlib.suppress(Exception):  # closing must not hide the error that got us here
                monitor.stop_auto_power_measurement()
            graph.stop()
        if self.graph is not None:
            self.graph.stop()
            self.graph = None
        if self.device is not None:
            device, self.device = self.device, None
            self.samna.device.close_device(device)  # S io.py close_device


def _spike(spike, layer, feature, x, y, stamp):
    """Fill a samna ``Spike`` (S chip_factory.py:81-89: layer, x, y, feature, timestamp)."""
    spike.layer, spike.feature = int(layer), int(feature)
    spike.x, spike.y, spike.timestamp = int(x), int(y), int(stamp)
    return spike


def _check_window(duration_us: int, where: str) -> None:
    if duration_us > UINT32_MAX:
        raise DeviceError(f"{where}: a window of {duration_us} us does not fit samna's uint32 "
                          f"microsecond timestamps (at most {UINT32_MAX} us, 71.6 min); use "
                          f"shorter windows")


def power_by_rail(samples: Sequence[tuple[int, float]]) -> dict[str, float]:
    """(channel, watts) power-monitor samples -> mean mW per rail name, ``total`` and ``samples``."""
    out: dict[str, float] = {}
    for channel, name in enumerate(POWER_RAILS):
        values = [v for c, v in samples if c == channel]
        out[name] = float(np.mean(values)) * 1e3 if values else float("nan")
    out["total"] = float(sum(v for k, v in out.items() if not np.isnan(v)))
    out["samples"] = float(len(samples))
    return out
