"""The spiking gate (issue 12): input-dependent attention built from cores instead of multipliers.

ASA multiplies a layer's input currents by a per-sample spatial map. A core cannot multiply, so the
static fold keeps only the map's calibration mean and loses its input dependence. A core can route,
though: the core feeding layer L sends its spikes to two destinations (fan-out 2), and a
destination's feature shift lets a second source arrive as extra input channels of L's core
(``chip.graph``). The gate uses both:

- a side core G reads the same spikes as L and computes a saliency map: a k x k conv (stride 1,
  "same" padding) -> IAF, ``channels`` maps at L's input resolution;
- G's spikes enter L's core as extra input channels. L's weights on them start at zero (the gated
  network starts equal to the static fold) and are learned, so the map suppresses L's neurons
  (negative weights) or lets them through (positive) where it fires.

G trains end to end in the fold stage's quantization-aware fine-tuning (IAF, its own per-core
quantization), with the cost term counting G's own synops (input spikes into G, G's spikes into L),
and optionally distilled from the dynamic ASA network's spike counts at L (``finetune.Distiller``).

Placement: at the attention layers whose calibrated gain varies most across samples (relative
spread, ``fold.calibrate``), where the static fold lost most input dependence; without attention
(vanilla), at the first gateable layers. The first core cannot be gated: its input would merge DVS
events with a core's spikes, and events from the DVS layer carry no feature shift (``chip.graph``,
rule input_merge).

Initialisation: G's weights are a positive box filter over all its input channels (the local
activity of L's input), and its threshold is set on calibration frames so that a share
``fire_share`` of (window, position) pairs reach it over a window. The map starts informative and
spiking, so L's feedback weights get a gradient from the first step.

No library builds this: sinabs's ``DynapcnnNetwork`` has no concatenating merge and never sets a
feature shift, and the gate is specific to this chip model.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from asa_deploy.chip.graph import LoweredGraph, graph_violations
from asa_deploy.chip.lower import ChipLayer, LoweredNetwork
from asa_deploy.chip.spec import ChipSpec
from asa_deploy.errors import AsaDeployError, CompileError
from asa_deploy.fold.finetune import GATE_SUFFIX, ChipAwareNetwork


def gateable(lowered: LoweredNetwork) -> list[str]:
    """Layers a gate can serve: every core but the first, fed by a map wider than one position."""
    return [layer.name for i, layer in enumerate(lowered.layers)
            if i > 0 and layer.input_shape[1] * layer.input_shape[2] > 1]


def choose_gated(lowered: LoweredNetwork, count: int, calibration: dict | None) -> tuple[list[str], dict]:
    """The ``count`` layers to gate and why: the gateable attention layers by decreasing relative
    spread of their calibrated gain (with attention), else the first gateable layers."""
    candidates = gateable(lowered)
    if calibration:
        spread = {name: float((c.gain_std / c.gain_mean.clamp_min(1e-6)).mean())
                  for name, c in calibration.items() if name in candidates}
        ranked = sorted(spread, key=lambda name: -spread[name])
        why = {"placement": "largest relative spread of the calibrated gain", "spread": spread}
    else:
        ranked, why = candidates, {"placement": "first gateable layers (no attention to calibrate)"}
    if count > len(ranked):
        raise AsaDeployError(f"--gate {count}: only {len(ranked)} layer(s) can be gated "
                             f"({ranked}; the first core cannot: rule input_merge)")
    return ranked[:count], why


def add_gates(lowered: LoweredNetwork, gated: list[str], calib_frames: torch.Tensor, *,
              channels: int = 1, kernel: int = 3, fire_share: float = 0.3) -> LoweredGraph:
    """``lowered`` (a chain) with one gate core before each layer named in ``gated``; gate
    thresholds set on ``calib_frames`` [B, T, C, H, W] (see the module docstring)."""
    if isinstance(lowered, LoweredGraph):
        raise CompileError("gates are added to a chain of cores; this network already branches")
    unknown = [g for g in gated if g not in gateable(lowered)]
    if unknown:
        raise AsaDeployError(f"cannot gate {unknown}: gateable layers are {gateable(lowered)} (the "
                             f"first core cannot be gated: rule input_merge)")
    if kernel < 1 or kernel % 2 == 0:
        raise AsaDeployError(f"gate kernel {kernel}: use an odd size (same-size saliency map)")
    layers: list[ChipLayer] = []
    sources: list[list[int]] = []
    index: dict[int, int] = {}  # chain position -> position in the graph
    gates: list[int] = []
    for i, layer in enumerate(lowered.layers):
        source = [] if i == 0 else [index[i - 1]]
        if layer.name in gated:
            c_in, h, w = layer.input_shape
            gate = ChipLayer(
                name=layer.name + GATE_SUFFIX, input_shape=(c_in, h, w),
                weight=torch.full((channels, c_in, kernel, kernel), 1.0 / (c_in * kernel * kernel)),
                bias=None, stride=(1, 1), padding=(kernel // 2, kernel // 2), threshold=1.0,
                min_v_mem=-1.0, return_to_zero=layer.return_to_zero)
            gates.append(len(layers))
            layers.append(gate)
            sources.append(list(source))
            extra = layer.weight.new_zeros(layer.weight.shape[0], channels, *layer.weight.shape[2:])
            layer = replace(layer, input_shape=(c_in + channels, h, w),
                            weight=torch.cat([layer.weight, extra], dim=1))
            source = [*source, len(layers) - 1]
        index[i] = len(layers)
        layers.append(layer)
        sources.append(source)
    notes = [*lowered.notes, f"spiking gates ({channels} map(s), {kernel}x{kernel}) before "
                             f"{list(gated)}"]
    graph = LoweredGraph(tuple(lowered.input_shape), lowered.input_pool, layers, notes,
                         lowered.input_mask, sources=sources, merges=["cat"] * len(layers))
    _set_gate_thresholds(graph, gates, calib_frames, fire_share)
    return graph


def _set_gate_thresholds(graph: LoweredGraph, gates: list[int], frames: torch.Tensor,
                         fire_share: float) -> None:
    """Each gate's threshold: the (1 - fire_share) quantile of its input current summed over a
    window, over every (window, position) of ``frames``; min_v_mem = -threshold."""
    if not 0 < fire_share < 1:
        raise AsaDeployError(f"gate fire share {fire_share:g}: use a share in (0, 1)")
    twin = ChipAwareNetwork(graph, None)
    seen: dict[int, torch.Tensor] = {}
    handles = [twin.layers[g].register_forward_hook(
        lambda _m, inputs, _o, g=g: seen.__setitem__(g, inputs[0])) for g in gates]
    try:
        with torch.no_grad():
            twin(frames)
    finally:
        for handle in handles:
            handle.remove()
    for g in gates:
        layer = graph.layers[g]
        x = seen[g]
        current = F.conv2d(x.flatten(0, 1), layer.weight, None, layer.stride, layer.padding)
        total = current.unflatten(0, x.shape[:2]).sum(dim=1).flatten()
        positive = total[total > 0]
        if positive.numel() == 0:
            raise AsaDeployError(f"gate {layer.name}: its input never spiked on the calibration "
                                 f"frames, so no threshold can be set; calibrate on more data")
        threshold = float(torch.quantile(total.double(), 1 - fire_share))
        threshold = max(threshold, float(positive.min()))
        graph.layers[g] = replace(layer, threshold=threshold, min_v_mem=-threshold)


def check_gated(graph: LoweredGraph, spec: ChipSpec, input_from_sensor: bool) -> None:
    """The chip's routing limits on the gated graph before any training (fan-out, cores)."""
    violations = graph_violations(graph, spec, input_from_sensor=input_from_sensor)
    if violations:
        raise CompileError(f"the gated network breaks {len(violations)} routing rule(s) of "
                           f"{spec.name}:\n  " + "\n  ".join(map(str, violations)))


def distill_pairs(graph: LoweredGraph, gated: list[str], teacher_layers: list[str]) -> dict[int, int]:
    """Each gated layer's position in ``graph`` -> the teacher's spiking layer of the same name."""
    names = [layer.name for layer in graph.layers]
    missing = [g for g in gated if g not in teacher_layers]
    if missing:
        raise AsaDeployError(f"distillation: the trained network has no spiking layer {missing} "
                             f"(it has {teacher_layers})")
    return {names.index(g): teacher_layers.index(g) for g in gated}


def feedback_weights(graph: LoweredGraph) -> dict[str, dict]:
    """What each gated layer learned on its gate's channels: share negative, mean, mean |w|
    relative to its other weights."""
    out = {}
    for i, srcs in enumerate(graph.sources):
        gate = next((j for j in srcs if graph.layers[j].name.endswith(GATE_SUFFIX)), None)
        if gate is None:
            continue
        layer, c = graph.layers[i], graph.layers[gate].output_shape[0]
        fb, rest = layer.weight[:, -c:], layer.weight[:, :-c]
        out[layer.name] = {"negative_share": float((fb < 0).float().mean()),
                           "mean": float(fb.mean()),
                           "mean_abs_over_other_weights": float(fb.abs().mean()
                                                                / rest.abs().mean().clamp_min(1e-12))}
    return out
