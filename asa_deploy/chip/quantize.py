"""Per-core integer quantization: one scale for weights, bias, thresholds and states, as a core needs.

A core has one threshold pair and int8 weights, so everything that meets in its neurons shares one
scale: the largest that keeps weights (and bias) in ``bias_quantization_bits`` / 8 bits and the
threshold pair (threshold, min_v_mem) and initial states in 16 bits, rounded half to even. This is
sinabs's ``discretize_conv_spike_`` rule, computed the same way in float32, so our integers equal
``DynapcnnNetwork``'s (tested against it); we own the code because sinabs's backend imports samna.
A layer without a membrane floor (``min_v_mem`` -inf: NIR graphs from frameworks that have none)
takes the scale from the rest and ``threshold_low`` at the state's most negative value, where the
chip's state saturates anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asa_deploy.chip.lower import ChipLayer
from asa_deploy.chip.spec import Numerics
from asa_deploy.errors import CompileError


@dataclass
class QuantizedLayer:
    name: str
    scale: float
    weight: torch.Tensor        # int64 values
    bias: torch.Tensor | None
    threshold_high: int
    threshold_low: int
    initial_state: torch.Tensor  # [out, H, W] int64
    stats: dict


def discretization_scale(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Largest factor that maps ``values`` into a signed ``bits`` range (sinabs's rule: the
    negative side may use its one extra level). A float32 0-d tensor; inf for all-zero input."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    vmin, vmax = torch.min(values), torch.max(values)
    if abs(vmin) <= abs(vmax) * abs(low / high):
        return abs(high / vmax)
    return abs(low / vmin)


def quantize_layer(layer: ChipLayer, numerics: Numerics) -> QuantizedLayer:
    if layer.per_neuron_threshold is not None:
        raise CompileError(f"layer {layer.name}: has per-neuron thresholds (folded attention); a core "
                           f"has one threshold. Lower them first (asa-deploy fold --strategy ...)")
    weight = layer.weight.float()
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(weight.shape[0])
    no_floor = layer.min_v_mem == -math.inf
    thresholds = torch.tensor((-layer.threshold if no_floor else layer.min_v_mem, layer.threshold),
                              dtype=torch.float32)
    if layer.threshold <= 0 or layer.min_v_mem >= layer.threshold:
        raise CompileError(f"layer {layer.name}: threshold {layer.threshold:g} with min_v_mem "
                           f"{layer.min_v_mem:g}; need 0 < threshold and min_v_mem < threshold")
    scales = [discretization_scale(weight, numerics.weight_bits),
              discretization_scale(bias, numerics.bias_quantization_bits),
              discretization_scale(thresholds, numerics.state_bits)]
    state = layer.initial_state
    if state is not None and bool((state != 0).any()):
        scales.append(discretization_scale(state.float(), numerics.state_bits))
    scale = min(scales)
    if not bool((weight != 0).any()):
        raise CompileError(f"layer {layer.name}: all weights are zero; nothing to put on a core")
    w_q = torch.round(weight * scale)
    b_q = torch.round(bias * scale)
    low_q, high_q = (int(v) for v in torch.round(thresholds * scale))
    shape = layer.neuron_shape
    s_q = torch.round(state.float() * scale) if state is not None else torch.zeros(shape)
    notes = []
    if no_floor:
        low_q = numerics.int_range(numerics.state_bits)[0]
        notes.append(f"no membrane floor: threshold_low {low_q}, the state's limit")
    if low_q == 0:
        low_q = -1
        notes.append("threshold_low rounded to 0, set to -1 (chip bug with 0)")
    if low_q >= high_q or high_q < 1:
        raise CompileError(f"layer {layer.name}: thresholds quantize to low {low_q}, high {high_q}; "
                           f"raise the threshold relative to the weights")
    nonzero = weight != 0
    if not bool((w_q != 0).any()):
        raise CompileError(
            f"layer {layer.name}: every weight quantizes to 0 (scale {float(scale):.3g}); its "
            f"threshold {layer.threshold:g} is large against its weights (max |w| "
            f"{float(weight.abs().max()):.3g}) or min_v_mem {layer.min_v_mem:g} too deep: set "
            f"min_v_mem near -threshold or retrain with larger weights")
    w_range = numerics.int_range(numerics.weight_bits)
    error = torch.linalg.vector_norm(w_q / scale - weight) / torch.linalg.vector_norm(weight)
    stats = {
        "scale": float(scale),
        "limited_by": ["weights", "bias", "thresholds", "initial state"][
            min(range(len(scales)), key=lambda i: float(scales[i]))],
        "relative_weight_error": float(error),
        "weights_zeroed": int((nonzero & (w_q == 0)).sum()),
        "weights_nonzero": int((w_q != 0).sum()),
        "weights_total": int(w_q.numel()),
        "weights_clipped": int(((w_q < w_range[0]) | (w_q > w_range[1])).sum()),
        "threshold_high": high_q, "threshold_low": low_q, "notes": notes,
    }
    return QuantizedLayer(layer.name, float(scale), w_q.long(), None if layer.bias is None else b_q.long(),
                          high_q, low_q, s_q.long(), stats)
