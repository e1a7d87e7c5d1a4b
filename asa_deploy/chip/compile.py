"""The compile stage: network -> lowered layers -> design rules -> quantization -> mapping -> ChipConfig.

``compile_network`` works on any sinabs-style ``nn.Sequential``, our ``SpikingNetwork`` or a
``SpikingGraph`` (branches and merges, ``chip.graph``), or on chip layers lowered already (a
``LoweredNetwork`` or ``LoweredGraph``, as the fold stage writes them to ``folded.pt``);
``asa_deploy.pipeline.compile_run`` applies it to a run directory and writes ``chip_config.json``
(what the chip holds) and ``mapping.json`` (core table, quantization statistics, every lowering note).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from asa_deploy.chip.config import (
    ChipConfig,
    CoreConfig,
    Destination,
    DvsLayerConfig,
    ReadoutConfig,
)
from asa_deploy.chip.graph import LoweredGraph, graph_violations, lower_graph
from asa_deploy.chip.lower import LoweredNetwork, lower
from asa_deploy.chip.mapping import Mapping, map_layers
from asa_deploy.chip.quantize import QuantizedLayer, quantize_layer
from asa_deploy.chip.rules import Violation, check_design_rules
from asa_deploy.chip.spec import ChipSpec, load_chip_spec
from asa_deploy.errors import CompileError
from asa_deploy.nn.graph import SpikingGraph


@dataclass
class SensorInput:
    """Events arrive through the chip's DVS input layer from a sensor of ``shape`` (P, H, W)."""

    shape: tuple[int, int, int]
    downsample: int = 1  # pooling the training framing applied before the network's input


@dataclass
class CompiledNetwork:
    config: ChipConfig
    mapping: Mapping
    lowered: LoweredNetwork
    quantized: list[QuantizedLayer]
    notes: list[str] = field(default_factory=list)
    first_core_cuts: list = field(default_factory=list)  # synops.FirstCoreCut (compile_run sets it)

    def report(self, spec: ChipSpec) -> dict:
        return {
            **self.mapping.to_dict(spec),
            "quantization": {q.name: q.stats for q in self.quantized},
            "notes": self.notes,
            **({"first_core_cuts": [c.to_dict() for c in self.first_core_cuts]}
               if self.first_core_cuts else {}),
            **({"graph": self.lowered.describe(self.mapping.assignment)}
               if isinstance(self.lowered, LoweredGraph) else {}),
        }


def check_network(model: nn.Module | LoweredNetwork, chip: str | ChipSpec, *,
                  input_shape: tuple[int, int, int], sensor: SensorInput | None = None,
                  bias_policy: str | None = None
                  ) -> tuple[LoweredNetwork, list[Violation], Mapping | None, str | None]:
    """Lower (unless given chip layers already, e.g. from the fold stage), check the design rules
    and try to map, without raising on a violation.

    Returns the lowered network, every violation, and the mapping or the mapper's reason.
    """
    spec = chip if isinstance(chip, ChipSpec) else load_chip_spec(chip)
    lowered = (model if isinstance(model, LoweredNetwork)
               else lower_graph(model, input_shape, bias_policy=bias_policy)
               if isinstance(model, SpikingGraph)
               else lower(model, input_shape, bias_policy=bias_policy))
    violations = check_design_rules(lowered, spec, input_from_sensor=sensor is not None)
    if isinstance(lowered, LoweredGraph):
        violations += graph_violations(lowered, spec, input_from_sensor=sensor is not None)
    if sensor is not None:
        violations += _sensor_violations(sensor, lowered, spec)
    try:
        return lowered, violations, map_layers(lowered.layers, spec), None
    except CompileError as exc:
        return lowered, violations, None, str(exc)


def compile_network(model: nn.Module | LoweredNetwork, chip: str | ChipSpec, *, input_shape: tuple[int, int, int],
                    sensor: SensorInput | None = None, bias_policy: str | None = None,
                    class_names: list[str] | None = None, meta: dict | None = None,
                    hot_pixels: list[tuple[int, int]] | None = None) -> CompiledNetwork:
    """Everything ``asa-deploy compile`` does, in memory. Raises ``CompileError`` listing every
    design-rule violation, or the mapper's shortfall. ``hot_pixels`` ((y, x) on the sensor, from
    ``asa_deploy.data.hot_pixels``) are killed in the DVS layer, with the input mask's pixels."""
    spec = chip if isinstance(chip, ChipSpec) else load_chip_spec(chip)
    lowered, violations, mapping, mapping_error = check_network(
        model, spec, input_shape=input_shape, sensor=sensor, bias_policy=bias_policy)
    if sensor is None and lowered.input_pool > 1:
        raise CompileError(f"the network pools its input by {lowered.input_pool} before the first "
                           f"layer; only the DVS input layer can do that: compile with the sensor "
                           f"input (drop --no-dvs) or remove the pooling")
    if violations:
        raise CompileError(f"{len(violations)} design-rule violation(s) on {spec.name}:\n  "
                           + "\n  ".join(map(str, violations)))
    if mapping is None:
        raise CompileError(mapping_error)
    quantized = [quantize_layer(layer, spec.numerics) for layer in lowered.layers]
    notes = list(lowered.notes)
    for q in quantized:
        notes += [f"{q.name}: {n}" for n in q.stats["notes"]]
    cores = []
    for i, (layer, q) in enumerate(zip(lowered.layers, quantized, strict=True)):
        if layer.kill is not None and not spec.has("per_neuron_kill"):
            raise CompileError(f"layer {layer.name}: has killed neurons; {spec.name} has no "
                               f"per-neuron kill bits (only dynapcnn does)")
        if layer.initial_state is not None and not spec.has("per_neuron_initial_value"):
            raise CompileError(f"layer {layer.name}: needs per-neuron initial values, which "
                               f"{spec.name} lacks")
        last = i == len(lowered.layers) - 1
        destinations = (lowered.destinations(i, mapping.assignment)
                        if isinstance(lowered, LoweredGraph) else
                        [] if last else [Destination(mapping.assignment[i + 1], layer.pool)])
        if last and layer.pool > 1:
            notes.append(f"{layer.name}: final pooling {layer.pool} dropped (classes are counted "
                         f"over all positions)")
        cores.append(CoreConfig(
            core=mapping.assignment[i], name=layer.name, input_shape=tuple(layer.input_shape),
            weights=q.weight.numpy(), biases=(q.bias if q.bias is not None else
                                              q.weight.new_zeros(q.weight.shape[0])).numpy(),
            stride=tuple(layer.stride), padding=tuple(layer.padding),
            threshold_high=q.threshold_high, threshold_low=q.threshold_low,
            return_to_zero=layer.return_to_zero, neurons_initial_value=q.initial_state.numpy(),
            destinations=destinations, leak_enable=q.bias is not None and bool((q.bias != 0).any()),
            neurons_kill=None if layer.kill is None else layer.kill.numpy(),
            monitor_enable=last, scale=q.scale))
    first_core = mapping.assignment[0]
    last_layer = lowered.layers[-1]
    num_classes = last_layer.neuron_shape[0]
    if class_names is not None and len(class_names) != num_classes:
        raise CompileError(f"{len(class_names)} class names for an output layer of {num_classes} "
                           f"channels ({last_layer.name})")
    readout = ReadoutConfig(source_core=mapping.assignment[len(lowered.layers) - 1],
                            num_classes=num_classes, class_names=list(class_names or []))
    dvs = None
    if sensor is not None:
        entries = lowered.entries() if isinstance(lowered, LoweredGraph) else [0]
        dvs = _dvs_layer(sensor, lowered, [mapping.assignment[i] for i in entries])
        if lowered.input_mask is not None:
            if spec.has("input_pixel_kill"):
                dvs.killed_pixels = _killed_pixels(lowered.input_mask, sensor, lowered.input_pool)
                notes.append(f"input mask: {len(dvs.killed_pixels)} sensor pixels killed")
            else:
                notes.append(f"input mask ignored: {spec.name} cannot kill input pixels")
    if hot_pixels:
        if dvs is None:
            raise CompileError("hot pixels are killed in the DVS input layer: compile with the "
                               "sensor input (drop --no-dvs) or drop --kill-hot-pixels")
        if not spec.has("input_pixel_kill"):
            raise CompileError(f"{spec.name} cannot kill input pixels (no input_pixel_kill in "
                               f"{spec.path}): drop --kill-hot-pixels or compile for a Speck chip")
        masked = len(dvs.killed_pixels)
        dvs.killed_pixels = sorted(set(dvs.killed_pixels) | {(int(y), int(x)) for y, x in hot_pixels})
        notes.append(f"hot pixels: {len(hot_pixels)} sensor pixels killed "
                     f"({len(dvs.killed_pixels) - masked} not already masked)")
    if dvs is not None and dvs.killed_pixels:
        _refuse_all_killed(dvs)
    config = ChipConfig(chip=spec.name, cores=cores, readout=readout, dvs=dvs,
                        input_core=None if dvs is not None else first_core,
                        meta={**(meta or {}), "bias_policy": bias_policy, "notes": notes,
                              "hw_config": str(Path(spec.path).resolve())})
    config.validate(f"compiled {spec.name} config")
    return CompiledNetwork(config, mapping, lowered, quantized, notes)


def _sensor_violations(sensor: SensorInput, lowered: LoweredNetwork, spec: ChipSpec) -> list[Violation]:
    out = []
    p, h, w = sensor.shape
    _, max_h, max_w = spec.dvs.sensor
    if h > max_h or w > max_w:
        out.append(Violation("input", "sensor_size", f"{h}x{w}", f"{max_h}x{max_w}",
                             "crop the recordings to the chip's sensor"))
    pool = sensor.downsample * lowered.input_pool
    if pool not in spec.dvs.poolings:
        out.append(Violation("input", "dvs_pooling", pool, list(spec.dvs.poolings),
                             "downsample the input by 1, 2 or 4 in total"))
    c, ih, iw = lowered.input_shape
    if h // pool < ih or w // pool < iw:
        out.append(Violation("input", "input_shape", f"{h // pool}x{w // pool} after pooling",
                             f"the network's {ih}x{iw}", "check the framing's downsample"))
    if c > p:
        out.append(Violation("input", "input_channels", c, p, "use at most the sensor's polarities"))
    return out


def _dvs_layer(sensor: SensorInput, lowered: LoweredNetwork, entry_cores: list[int]) -> DvsLayerConfig:
    pool = sensor.downsample * lowered.input_pool
    c, h, w = lowered.input_shape
    return DvsLayerConfig(sensor_shape=tuple(sensor.shape), destinations=entry_cores,
                          merge=c == 1 and sensor.shape[0] == 2, pooling=(pool, pool),
                          cut=(h - 1, w - 1))


def _refuse_all_killed(dvs: DvsLayerConfig) -> None:
    """A DVS layer whose killed pixels cover every sensor pixel that reaches the network would feed
    it nothing: refuse it."""
    (py, px), (oy, ox) = dvs.pooling, dvs.origin
    h, w = dvs.pooled_shape()
    cy, cx = dvs.cut if dvs.cut is not None else (h - 1, w - 1)
    feeding = {(y, x) for y in range(oy * py, (cy + 1) * py) for x in range(ox * px, (cx + 1) * px)}
    if feeding <= set(map(tuple, dvs.killed_pixels)):
        raise CompileError(f"the pixel kills (input mask and hot pixels) cover all {len(feeding)} "
                           f"sensor pixels that reach the network, which would see no input: "
                           f"raise --input-mask-keep, or raise --hot-pixel-factor")


def _killed_pixels(mask, sensor: SensorInput, input_pool: int) -> list[tuple[int, int]]:
    """Sensor pixels behind every masked-out network input pixel."""
    pool = sensor.downsample * input_pool
    out = []
    for y, x in (~mask).nonzero().tolist():
        out += [(y * pool + dy, x * pool + dx) for dy in range(pool) for dx in range(pool)]
    return out


def chip_inputs(spec_input: dict, data: dict) -> tuple[tuple[int, int, int], SensorInput]:
    """A trained run's network input shape and its sensor, from its model spec's ``input`` and its
    ``model.pt`` data record (sensor size and the framing's downsampling)."""
    input_shape = (int(spec_input["channels"]), int(spec_input["height"]), int(spec_input["width"]))
    width, height, polarities = data["sensor_size"]
    sensor = SensorInput((int(polarities), int(height), int(width)),
                         int(data["frame_spec"].get("downsample", 1)))
    return input_shape, sensor
