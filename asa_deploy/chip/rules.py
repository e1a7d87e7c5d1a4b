"""Design-rule checks: every operator limit of a ``ChipSpec`` as a named rule.

Each violation names the layer, the rule, the value, the limit and a fix, and all violations are
collected at once (a user fixing a network wants the whole list, not one error per compile).
Memory limits are checked by the mapper (they depend on which core a layer gets); a chain has one
destination per core, and a graph's fan-out, DVS destinations and core count are checked by
``chip.graph.graph_violations``.
"""

from __future__ import annotations

from dataclasses import dataclass

from asa_deploy.chip.lower import LoweredNetwork
from asa_deploy.chip.spec import ChipSpec


@dataclass
class Violation:
    layer: str
    rule: str
    value: object
    limit: object
    fix: str

    def __str__(self) -> str:
        return f"{self.layer}: rule {self.rule}: {self.value} (limit {self.limit}). Fix: {self.fix}"


def check_design_rules(net: LoweredNetwork, spec: ChipSpec, *, input_from_sensor: bool) -> list[Violation]:
    lim = spec.limits
    out: list[Violation] = []

    def rule(layer, name, ok, value, limit, fix):
        if not ok:
            out.append(Violation(layer, name, value, limit, fix))

    if net.input_pool > 1:
        rule("input", "input_pooling", net.input_pool in spec.dvs.poolings, net.input_pool,
             list(spec.dvs.poolings), "pool by 1, 2 or 4 before the first layer")
    if input_from_sensor:
        p, h, w = spec.dvs.sensor
        c, ih, iw = net.input_shape
        rule("input", "input_channels", c <= p, c, p, "use at most 2 polarity channels")
    for layer in net.layers:
        c_out, c_in, ky, kx = layer.weight.shape
        _, h_in, w_in = layer.input_shape
        _, h, w = layer.neuron_shape
        n = layer.name
        rule(n, "kernel_square", ky == kx, f"{ky}x{kx}", "square",
             "use a square kernel (a Linear layer needs a square input map)")
        rule(n, "kernel_size", max(ky, kx) <= lim.max_kernel, max(ky, kx), lim.max_kernel,
             "use a smaller kernel (or pool / stride before a Linear layer)")
        for axis, s in zip("yx", layer.stride, strict=True):
            rule(n, f"stride_{axis}", s in lim.strides, s, list(lim.strides),
                 "use a stride of 1, 2, 4 or 8")
        for axis, p in zip("yx", layer.padding, strict=True):
            rule(n, f"padding_{axis}", 0 <= p <= lim.max_padding, p, lim.max_padding,
                 "use less padding")
        rule(n, "pooling", layer.pool in lim.poolings, layer.pool, list(lim.poolings),
             "pool by 1, 2 or 4 (split a larger pooling across layers)")
        rule(n, "channels_out", c_out <= lim.max_channels, c_out, lim.max_channels,
             "use fewer output channels")
        rule(n, "channels_in", c_in <= lim.max_channels, c_in, lim.max_channels,
             "use fewer input channels")
        rule(n, "input_size", h_in <= lim.max_input[0] and w_in <= lim.max_input[1],
             f"{h_in}x{w_in}", "x".join(map(str, lim.max_input)),
             "downsample the input (DVS pooling 2 or 4)")
        rule(n, "conv_output_size", h <= lim.max_conv_output[0] and w <= lim.max_conv_output[1],
             f"{h}x{w}", "x".join(map(str, lim.max_conv_output)),
             "use stride 2 in this layer or pool before it")
    return out
