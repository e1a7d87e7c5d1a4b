"""Lowering a trained network to chip layers: one conv -> IAF -> sum-pool stage per core, in float.

We do this ourselves because sinabs's ``DynapcnnNetwork`` imports samna (not installable here) and
knows neither BatchNorm, LIF nor pooling before the neuron. Every rewrite is exact except the two the
chip forces, and those are reported, never silent:

- BatchNorm after a conv is folded into the conv's weights and bias (exact in eval mode).
- AvgPool of *currents* (conv -> pool -> neuron) becomes one conv with stride ``s*p`` and kernel
  ``k + (p-1)*s`` whose weights are the box-filtered kernel / p^2 (exact; floors agree).
- AvgPool / SumPool of *spikes* (after a neuron) is the core's destination sum pooling; an AvgPool
  multiplies the next layer's weights by 1/p^2 (exact on spike counts).
- Linear -> conv whose kernel covers the whole input map (exact; the map must be square).
- A pooling before the first layer is absorbed into the DVS input layer.
- LIF -> IAF: the chip has no per-step leak; the dropped decay is reported (approximate).
- Bias: the chip adds it once per slow-clock tick, not per time step, so the policy is explicit:
  ``drop`` (reported with its size against the threshold) or ``leak`` (kept, leak enabled).
- ``min_v_mem=None`` (sinabs's default) becomes ``-threshold``: with no floor, quantization picks a
  scale <= 1 and most weights round to zero (docs/speck-hardware.md section 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

from asa_deploy.errors import CompileError

BIAS_POLICIES = ("drop", "leak")


@dataclass
class ChipLayer:
    """One core's worth of network, in float: conv -> IAF -> sum pooling of the output spikes."""

    name: str
    input_shape: tuple[int, int, int]
    weight: torch.Tensor           # [out, in, k, k] (or k_y != k_x, refused by the design rules)
    bias: torch.Tensor | None      # [out]; None: no bias (none in the source, or dropped)
    stride: tuple[int, int]
    padding: tuple[int, int]
    threshold: float
    min_v_mem: float
    return_to_zero: bool
    pool: int = 1
    initial_state: torch.Tensor | None = None  # [out, H, W]; None: zeros
    kill: torch.Tensor | None = None           # bool [out, H, W]
    # Per-neuron thresholds [out, H, W] from folding attention (float only: a core has one threshold;
    # the fold stage's lowering strategies replace them by initial states / kill bits).
    per_neuron_threshold: torch.Tensor | None = None

    @property
    def neuron_shape(self) -> tuple[int, int, int]:
        c, h, w = self.input_shape
        ky, kx = self.weight.shape[-2:]
        return (int(self.weight.shape[0]), (h + 2 * self.padding[0] - ky) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - kx) // self.stride[1] + 1)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        c, h, w = self.neuron_shape
        return c, h // self.pool, w // self.pool


@dataclass
class LoweredNetwork:
    input_shape: tuple[int, int, int]  # what the first core receives
    input_pool: int                    # pooling absorbed into the DVS layer (1: none)
    layers: list[ChipLayer]
    notes: list[str] = field(default_factory=list)
    input_mask: torch.Tensor | None = None  # bool [H, W] at input_shape: pixels to keep (folding)

    def to_sequential(self, batch_size: int = 1) -> nn.Sequential:
        """The float sinabs network a chip running these layers computes (multi-spike IAF), as the
        reference for quantization tests. Initial states and kill bits are not represented (every
        IAF starts at 0); ``asa_deploy.fold.finetune.ChipAwareNetwork`` and the NIR importer
        honour them."""
        modules: list[nn.Module] = []
        if self.input_pool > 1:
            modules.append(sl.SumPool2d(self.input_pool))
        for layer in self.layers:
            conv = nn.Conv2d(layer.weight.shape[1], layer.weight.shape[0],
                             tuple(layer.weight.shape[-2:]), layer.stride, layer.padding,
                             bias=layer.bias is not None)
            conv.weight.data = layer.weight.clone()
            if layer.bias is not None:
                conv.bias.data = layer.bias.clone()
            threshold = (layer.per_neuron_threshold.clone() if layer.per_neuron_threshold is not None
                         else torch.tensor(layer.threshold))
            modules += [conv, sl.IAFSqueeze(
                batch_size=batch_size, spike_threshold=threshold,
                min_v_mem=torch.tensor(layer.min_v_mem), spike_fn=sa.MultiSpike,
                reset_fn=sa.MembraneReset() if layer.return_to_zero else sa.MembraneSubtract())]
            if layer.pool > 1:
                modules.append(sl.SumPool2d(layer.pool))
        return nn.Sequential(*modules)


def flatten_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network as a flat list of (name, module) in execution order.

    Our ``SpikingNetwork`` is walked block by block (refusing unfolded attention); any other module
    must be an ``nn.Sequential`` (nested ones are flattened) of torch / sinabs layers.
    """
    from asa_deploy.nn.network import Block, SpikingNetwork

    if isinstance(model, SpikingNetwork):
        out: list[tuple[str, nn.Module]] = []
        for i, block in enumerate(model.blocks):
            name = f"block{i}.{block.kind}"
            if block.attention is not None:
                raise CompileError(
                    f"{name}: has {type(block.attention).__name__}, an input-dependent attention a "
                    f"chip core cannot compute; fold it first (asa-deploy fold) or compile the "
                    f"vanilla run")
            for _, module in _walk(block.synapse, ""):
                role = {nn.BatchNorm2d: ".bn"}.get(type(module), ".pool" if isinstance(
                    module, (nn.AvgPool2d, nn.MaxPool2d)) else "")  # nn.network.AvgPool2d too
                out.append((name + ("" if block.kind == "pool" else role), module))
            if block.neuron is not None:
                out.append((f"{name}.neuron", block.neuron))
        return out
    if isinstance(model, Block):
        raise CompileError("pass the whole network, not one block")
    if not isinstance(model, nn.Sequential):
        raise CompileError(f"cannot read the layer order of a {type(model).__name__}; pass an "
                           f"nn.Sequential of torch / sinabs layers or an asa_deploy SpikingNetwork")
    return _walk(model, "")


def _walk(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += _walk(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix or type(module).__name__, module)]


_IGNORED = (nn.Dropout, nn.Dropout2d, nn.Identity)
_NEURONS = (sl.LIF,)  # IAF, IAFSqueeze and LIFSqueeze are subclasses


def lower(model: nn.Module, input_shape: tuple[int, int, int], *,
          bias_policy: str | None = None) -> LoweredNetwork:
    """Turn ``model`` (eval mode) into chip layers. ``input_shape`` is (C, H, W) of its input.

    ``bias_policy`` must be given (``drop`` or ``leak``) when any layer has a non-zero bias.
    """
    if bias_policy not in (None, *BIAS_POLICIES):
        raise CompileError(f"bias policy {bias_policy!r} unknown; use one of {BIAS_POLICIES}")
    modules = flatten_modules(model)
    builder = _Builder(tuple(int(s) for s in input_shape), bias_policy)
    for name, module in modules:
        builder.add(name, module)
    return builder.finish()


class _Builder:
    def __init__(self, input_shape: tuple[int, int, int], bias_policy: str | None):
        self.shape: tuple[int, ...] = input_shape  # shape flowing between modules
        self.bias_policy = bias_policy
        self.layers: list[ChipLayer] = []
        self.notes: list[str] = []
        self.input_pool = 1
        self.pending: dict | None = None  # a synapse waiting for its neuron
        self.next_weight_scale = 1.0      # from AvgPool of spikes, applied to the next synapse
        self.flattened_from: tuple[int, int, int] | None = None
        self.dropped_bias: list[str] = []

    # -- module dispatch ---------------------------------------------------------------------------

    def add(self, name: str, module: nn.Module) -> None:
        if isinstance(module, _IGNORED) or type(module).__name__ == "BatchDropout":
            return
        if isinstance(module, nn.Conv2d):
            self._conv(name, module)
        elif isinstance(module, nn.Linear):
            self._linear(name, module)
        elif isinstance(module, nn.BatchNorm2d):
            self._batch_norm(name, module)
        elif isinstance(module, (nn.AvgPool2d, sl.SumPool2d)):
            self._pool(name, module)
        elif isinstance(module, nn.Flatten):
            if len(self.shape) == 3:
                self.flattened_from = self.shape
                self.shape = (math.prod(self.shape),)
        elif isinstance(module, _NEURONS):
            self._neuron(name, module)
        else:
            raise CompileError(f"layer {name}: {type(module).__name__} has no chip equivalent; a "
                               f"core runs Conv2d / Linear / BatchNorm2d / AvgPool2d / SumPool2d / "
                               f"Flatten / IAF / LIF")

    def _need_no_pending(self, name: str, what: str) -> None:
        if self.pending is not None:
            raise CompileError(f"layer {name}: a {what} follows {self.pending['name']} before any "
                               f"neuron; a core holds one synapse then one neuron layer")

    def _conv(self, name: str, conv: nn.Conv2d) -> None:
        self._need_no_pending(name, "second synapse")
        if len(self.shape) != 3:
            raise CompileError(f"layer {name}: a Conv2d needs a [C, H, W] input, got {self.shape}")
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise CompileError(f"layer {name}: groups={conv.groups}, dilation={conv.dilation}; the "
                               f"chip runs dense, undilated convolutions")
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise CompileError(f"layer {name}: padding {conv.padding!r} ({conv.padding_mode}); use "
                               f"integer zero padding")
        self._start(name, conv.weight.detach().clone(),
                    None if conv.bias is None else conv.bias.detach().clone(),
                    tuple(conv.stride), tuple(conv.padding))

    def _linear(self, name: str, linear: nn.Linear) -> None:
        self._need_no_pending(name, "second synapse")
        if len(self.shape) == 3:
            raise CompileError(f"layer {name}: Linear on a [C, H, W] map; add a Flatten before it")
        c, h, w = self.flattened_from or (self.shape[0], 1, 1)
        if linear.in_features != c * h * w:
            raise CompileError(f"layer {name}: Linear expects {linear.in_features} inputs, gets "
                               f"{c * h * w} ({c}x{h}x{w})")
        weight = linear.weight.detach().clone().reshape(linear.out_features, c, h, w)
        self.shape = (c, h, w)
        self._start(name, weight, None if linear.bias is None else linear.bias.detach().clone(),
                    (1, 1), (0, 0))
        self.shape, self.flattened_from = (linear.out_features,), None

    def _start(self, name, weight, bias, stride, padding) -> None:
        if self.next_weight_scale != 1.0:
            weight = weight * self.next_weight_scale
            self.next_weight_scale = 1.0
        self.pending = {"name": name, "weight": weight, "bias": bias, "stride": stride,
                        "padding": padding, "input_shape": self.shape}
        self.shape = _conv_shape(self.shape, weight, stride, padding)

    def _batch_norm(self, name: str, bn: nn.BatchNorm2d) -> None:
        p = self.pending
        if p is None:
            raise CompileError(f"layer {name}: BatchNorm2d must follow a Conv2d to be folded into it")
        if bn.training:
            raise CompileError(f"layer {name}: BatchNorm2d in training mode; call model.eval()")
        gain = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        bias = p["bias"] if p["bias"] is not None else torch.zeros_like(gain)
        p["weight"] = p["weight"] * gain[:, None, None, None]
        p["bias"] = (bias - bn.running_mean) * gain + bn.bias.detach()
        self.notes.append(f"{name}: BatchNorm folded into {p['name']}")

    def _pool(self, name: str, pool: nn.Module) -> None:
        k, stride, padding = _pool_params(name, pool)
        if stride != k or padding != 0:
            raise CompileError(f"layer {name}: pooling kernel {k}, stride {stride}, padding "
                               f"{padding}; the chip pools with stride = kernel and no padding")
        average = isinstance(pool, nn.AvgPool2d)
        if self.pending is not None:  # pooling currents: fold into the conv
            self._fold_current_pool(name, k, average)
        elif not self.layers:  # before the first core: the DVS layer pools
            if len(self.shape) != 3:
                raise CompileError(f"layer {name}: pooling a flat input")
            self.input_pool *= k
            self.shape = (self.shape[0], self.shape[1] // k, self.shape[2] // k)
            self.notes.append(f"{name}: input pooling {k} moved into the DVS input layer"
                              + (" (sum pooling; next weights x 1/k^2)" if average else ""))
            if average:
                self.next_weight_scale *= 1.0 / (k * k)
        else:
            self.layers[-1].pool *= k
            self.shape = self.layers[-1].output_shape
            if average:
                self.next_weight_scale *= 1.0 / (k * k)
                self.notes.append(f"{name}: AvgPool{k} of spikes -> sum pooling, the next layer's "
                                  f"weights x {1 / (k * k):g}")

    def _fold_current_pool(self, name: str, k: int, average: bool) -> None:
        p = self.pending
        w = p["weight"]
        sy, sx = p["stride"]
        out, cin, ky, kx = w.shape
        folded = torch.zeros(out, cin, ky + (k - 1) * sy, kx + (k - 1) * sx, dtype=w.dtype)
        for a in range(k):
            for b in range(k):
                folded[:, :, a * sy:a * sy + ky, b * sx:b * sx + kx] += w
        scale = 1.0 / (k * k) if average else 1.0
        p["weight"] = folded * scale
        if p["bias"] is not None:
            p["bias"] = p["bias"] * (1.0 if average else k * k)
        p["stride"] = (sy * k, sx * k)
        self.shape = _conv_shape(p["input_shape"], p["weight"], p["stride"], p["padding"])
        self.notes.append(f"{name}: pooling {k} before the neuron folded into {p['name']} "
                          f"(kernel {tuple(p['weight'].shape[-2:])}, stride {p['stride']}; exact)")

    def _neuron(self, name: str, neuron: nn.Module) -> None:
        p = self.pending
        if p is None:
            raise CompileError(f"layer {name}: a neuron layer without a synapse before it; every "
                               f"core is synapse -> neuron")
        threshold = neuron.spike_threshold
        if torch.as_tensor(threshold).numel() != 1:
            raise CompileError(f"layer {name}: per-neuron thresholds; a core has one threshold")
        threshold = float(threshold)
        if not isinstance(neuron, sl.IAF):  # sinabs's IAF subclasses LIF
            alpha = float(torch.exp(-1.0 / neuron.tau_mem.detach()).mean())
            self.notes.append(f"{name}: LIF -> IAF; the chip has no per-step leak, the decay "
                              f"{alpha:.3g} per step is dropped (approximate: fine-tune as IAF)")
            if getattr(neuron, "norm_input", False):
                p["weight"] = p["weight"] * (1 - alpha)
                if p["bias"] is not None:
                    p["bias"] = p["bias"] * (1 - alpha)
        reset = neuron.reset_fn
        if isinstance(reset, sa.MembraneReset):
            if float(reset.reset_value) != 0.0:
                raise CompileError(f"layer {name}: reset to {reset.reset_value}; the chip resets to 0")
            return_to_zero = True
        elif isinstance(reset, sa.MembraneSubtract):
            if reset.subtract_value is not None:
                raise CompileError(f"layer {name}: subtracts {reset.subtract_value} on a spike; the "
                                   f"chip subtracts the threshold")
            return_to_zero = False
        else:
            raise CompileError(f"layer {name}: reset {type(reset).__name__} unknown to the chip")
        min_v_mem = getattr(neuron, "min_v_mem", None)
        if min_v_mem is None:
            min_v_mem = -threshold
            self.notes.append(f"{name}: min_v_mem None -> {-threshold:g} (-threshold); without a "
                              f"floor quantization rounds most weights to zero")
        bias = self._apply_bias_policy(p["name"], p["bias"], threshold)
        self.layers.append(ChipLayer(
            name=p["name"], input_shape=p["input_shape"], weight=p["weight"], bias=bias,
            stride=p["stride"], padding=p["padding"], threshold=threshold,
            min_v_mem=float(min_v_mem), return_to_zero=return_to_zero))
        self.pending = None

    def _apply_bias_policy(self, name: str, bias: torch.Tensor | None, threshold: float):
        if bias is None or not bool((bias != 0).any()):
            return bias
        size = float(bias.abs().max()) / threshold
        if self.bias_policy is None:
            raise CompileError(f"layer {name}: has biases (max |b| = {size:.0%} of the threshold); "
                               f"the chip adds a bias per slow-clock tick, not per time step. Choose "
                               f"--bias drop or --bias leak")
        if self.bias_policy == "drop":
            self.notes.append(f"{name}: bias dropped (max |b| = {size:.0%} of the threshold)")
            return None
        self.notes.append(f"{name}: bias kept as a slow-clock leak (exact only with one tick per "
                          f"time step)")
        return bias

    def finish(self) -> LoweredNetwork:
        if self.pending is not None:
            raise CompileError(f"layer {self.pending['name']}: the network ends without a neuron "
                               f"after it; the chip's outputs are spikes")
        if not self.layers:
            raise CompileError("the network has no synapse -> neuron layer to put on a core")
        if self.next_weight_scale != 1.0:
            self.notes.append("final AvgPool of spikes kept as sum pooling (class ranking unchanged)")
        first = self.layers[0].input_shape
        return LoweredNetwork(first, self.input_pool, self.layers, self.notes)


def _conv_shape(shape, weight, stride, padding) -> tuple[int, int, int]:
    c, h, w = shape
    ky, kx = weight.shape[-2:]
    return (int(weight.shape[0]), (h + 2 * padding[0] - ky) // stride[0] + 1,
            (w + 2 * padding[1] - kx) // stride[1] + 1)


def _pool_params(name: str, pool: nn.Module) -> tuple[int, int, int]:
    def scalar(value, what):
        if isinstance(value, (tuple, list)):
            if len(set(value)) != 1:
                raise CompileError(f"layer {name}: {what} {value}; the chip pools squares")
            value = value[0]
        return int(value)

    if isinstance(pool, sl.SumPool2d):
        k = scalar(pool.kernel_size, "kernel")
        stride = scalar(pool.stride if pool.stride is not None else k, "stride")
        return k, stride, 0
    if pool.ceil_mode:
        raise CompileError(f"layer {name}: ceil_mode pooling; the chip floors")
    k = scalar(pool.kernel_size, "kernel")
    return k, scalar(pool.stride if pool.stride is not None else k, "stride"), scalar(pool.padding, "padding")
