"""Spiking networks built from a YAML spec (``models/*.yaml``) out of torch and sinabs layers.

A spec is a list of blocks. A ``conv`` block is conv -> BN -> pool -> attention -> neuron (attention
sits where the paper puts it: on the neuron's input current); an ``fc`` block is linear -> neuron;
``pool`` (pooling of spikes, as a chip core pools its output) and ``flatten`` have no neuron.
Tensors are [B, T, ...] between blocks; the synaptic layers see [B*T, ...].

Spec keys::

    name, description
    input: {channels, height, width}
    T: 10                        # time steps the spec was designed for (ASA needs it)
    neuron: lif | iaf            # default neuron, options under neuron_options
    params: {k1: 3, s1: 1, c1: 16, ...}  # named numbers for out, kernel, stride, padding, pool;
                                 # overridable (--param c1=32); a param may name another (c1: c)
    asa: {lambda: 0.5, r: 4}      # release_masks: true -> the authors' batch-union masks
    bn_init: threshold           # BN weight starts at the threshold; "one": PyTorch's 1 (the paper)
    blocks:
      - {type: conv, out: c1, kernel: 3, stride: 1, padding: 1, pool: 2, bn: true, dropout: 0.0}
      - {type: pool, kernel: 4}
      - {type: flatten}
      - {type: fc, out: 128}
      - {type: fc, out: classes} # "classes" = the dataset's number of classes
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import yaml
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from asa_deploy.errors import ModelSpecError
from asa_deploy.nn.attention import make_attention
from asa_deploy.nn.neurons import NEURON_DEFAULTS, make_neuron
from asa_deploy.shipped import list_models, models_dir

ATTENTION_KINDS = ("none", "sa", "asa1", "asa2")
BN_INITS = ("threshold", "one")
RECIPES = ("default", "paper")
# The paper's recipe at the network level (docs/asa-method.md section 5): rectangular surrogate 0.5 wide
# (height 2), reset gradient through the spike, BN weight 1, dropout 0.1 as in arch A.
_PAPER_NEURON = {"lif": {"surrogate_width": 0.5, "reset_grad": True}, "iaf": {"surrogate_width": 0.5}}
_PAPER_DROPOUT = 0.1
_BLOCK_KEYS = {
    "conv": {"type", "out", "kernel", "stride", "padding", "pool", "pool_type", "bn", "bias",
             "dropout", "attention"},
    "fc": {"type", "out", "bias", "dropout"},
    "pool": {"type", "kernel", "pool_type"},
    "flatten": {"type"},
}


@dataclass
class ModelSpec:
    """A parsed network spec; ``to_dict`` is stored in checkpoints so a run rebuilds its network."""

    name: str
    input: dict
    T: int
    neuron: str
    blocks: list[dict]
    params: dict = field(default_factory=dict)
    neuron_options: dict = field(default_factory=dict)
    asa: dict = field(default_factory=lambda: {"lambda": 0.5, "r": 4})
    description: str = ""
    bn_init: str = "threshold"

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> ModelSpec:
        missing = [k for k in ("name", "input", "T", "blocks") if k not in raw]
        if missing:
            raise ModelSpecError(f"{source}: model spec misses key(s) {missing}")
        spec = cls(name=raw["name"], input=dict(raw["input"]), T=int(raw["T"]),
                   neuron=raw.get("neuron", "lif"), blocks=[dict(b) for b in raw["blocks"]],
                   params=dict(raw.get("params", {})),
                   neuron_options=dict(raw.get("neuron_options", {})),
                   asa={"lambda": 0.5, "r": 4, **raw.get("asa", {})},
                   description=str(raw.get("description", "")),
                   bn_init=str(raw.get("bn_init", "threshold")))
        spec.validate(source)
        return spec

    def to_dict(self) -> dict:
        """Keys at their defaults that older specs lacked are left out, so older checkpoints
        still compare equal on resume."""
        out = copy.deepcopy(self.__dict__)
        if out["bn_init"] == "threshold":
            del out["bn_init"]
        return out

    def validate(self, source: str) -> None:
        if self.neuron not in NEURON_DEFAULTS:
            raise ModelSpecError(f"{source}: neuron {self.neuron!r} unknown; use one of "
                                 f"{sorted(NEURON_DEFAULTS)}")
        if self.bn_init not in BN_INITS:
            raise ModelSpecError(f"{source}: bn_init {self.bn_init!r} unknown; use one of "
                                 f"{list(BN_INITS)}")
        for i, block in enumerate(self.blocks):
            kind = block.get("type")
            if kind not in _BLOCK_KEYS:
                raise ModelSpecError(f"{source}: block {i} has type {kind!r}; use one of "
                                     f"{sorted(_BLOCK_KEYS)}")
            extra = set(block) - _BLOCK_KEYS[kind]
            if extra:
                raise ModelSpecError(f"{source}: block {i} ({kind}) has unknown key(s) "
                                     f"{sorted(extra)}; allowed: {sorted(_BLOCK_KEYS[kind])}")

    def with_overrides(self, *, params: dict | None = None, T: int | None = None,
                       neuron: str | None = None) -> ModelSpec:
        spec = ModelSpec.from_dict(self.to_dict(), self.name)
        unknown = set(params or {}) - set(spec.params)
        if unknown:
            raise ModelSpecError(f"model {self.name!r} has no parameter(s) {sorted(unknown)}; "
                                 f"its parameters are {spec.params}")
        spec.params.update(params or {})
        spec.T = T or spec.T
        if neuron and neuron != spec.neuron:  # the spec's options belong to its own neuron kind
            spec.neuron, spec.neuron_options = neuron, {}
        spec.validate(self.name)
        return spec


def apply_recipe(spec: ModelSpec, recipe: str, *, release_masks: bool = False) -> ModelSpec:
    """A copy of ``spec`` set up for a training recipe: ``default`` leaves it as it is, ``paper``
    sets the paper's BN start, surrogate, reset gradient and arch-A dropout (0.1 on the last conv
    block and every fc block whose spec sets none). ``release_masks`` turns on the authors'
    batch-union ASA masks."""
    if recipe not in RECIPES:
        raise ModelSpecError(f"recipe {recipe!r} unknown; use one of {list(RECIPES)}")
    spec = ModelSpec.from_dict(spec.to_dict(), spec.name)
    if release_masks:
        spec.asa["release_masks"] = True
    if recipe == "paper":
        spec.bn_init = "one"
        spec.neuron_options.update(_PAPER_NEURON[spec.neuron])
        convs = [b for b in spec.blocks if b["type"] == "conv"]
        for block in spec.blocks:
            if (block["type"] == "fc" or (convs and block is convs[-1])) and not block.get("dropout"):
                block["dropout"] = _PAPER_DROPOUT
    spec.validate(spec.name)
    return spec


def load_model_spec(name_or_path: str) -> ModelSpec:
    """A spec by file path, or by name from ``models_dir()``."""
    path = Path(name_or_path)
    if not path.is_file():
        path = models_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(n for n, _ in list_models()) or "(none found)"
        raise ModelSpecError(f"no model spec {name_or_path!r}: not a file, and not one of the "
                             f"named models in {models_dir()}: {known}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ModelSpecError(f"{path}: not valid YAML: {err}") from err
    return ModelSpec.from_dict(raw, str(path))


class BatchDropout(nn.Module):
    """Dropout whose mask is drawn for the whole global batch, then cut to this process's shard.

    With the same torch seed, one process and N data-parallel processes draw identical masks, so
    distributed training gives the same model as single-process training (train/distributed.py).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.shard: tuple[int, int, int] | None = None  # (global batch, start, stop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.shard is None:
            noise = torch.rand(x.shape)
        else:
            global_size, start, stop = self.shard
            noise = torch.rand((global_size, *x.shape[1:]))[start:stop]
        return x * (noise.to(x.device) >= self.p) / (1 - self.p)


class Block(nn.Module):
    """One stage of the network: synapse (on [B*T, ...]) -> attention -> neuron (on [B, T, ...])."""

    def __init__(self, kind: str, synapse: nn.Module, attention: nn.Module | None = None,
                 neuron: nn.Module | None = None, dropout: float = 0.0):
        super().__init__()
        self.kind = kind
        self.dropout = BatchDropout(dropout) if dropout > 0 else None
        self.synapse = synapse
        self.attention = attention
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        b, t = x.shape[:2]
        y = self.synapse(x.flatten(0, 1)).unflatten(0, (b, t))
        if self.attention is not None:
            y = self.attention(y)
        return self.neuron(y) if self.neuron is not None else y


class SpikingNetwork(nn.Module):
    """[B, T, C, H, W] events in, [B, T, classes] output spikes out."""

    def __init__(self, spec: ModelSpec, num_classes: int, attention: str = "none"):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ModelSpecError(f"attention {attention!r} unknown; use one of {ATTENTION_KINDS}")
        self.spec, self.num_classes, self.attention_kind = spec, num_classes, attention
        self.blocks = nn.ModuleList()
        shape = (int(spec.input["channels"]), int(spec.input["height"]), int(spec.input["width"]))
        for i, block in enumerate(spec.blocks):
            module, shape = self._build_block(i, block, shape)
            self.blocks.append(module)
        self.output_shape = shape

    def _number(self, value, where: str) -> int:
        """A number, a spec param's name (e.g. ``kernel: k1``), or "classes"; a param may name
        another param (``c1: c``: the first core follows ``c`` unless ``c1`` is set)."""
        seen = []
        while isinstance(value, str):
            if value == "classes":
                return self.num_classes
            if value not in self.spec.params or value in seen:
                raise ModelSpecError(f"{self.spec.name}: {where} names {value!r}, which is not "
                                     f"in params {self.spec.params}"
                                     + (f" (circular: {' -> '.join(seen)})" if seen else ""))
            seen.append(value)
            value = self.spec.params[value]
        return int(value)

    def _batch_norm(self, channels: int) -> nn.BatchNorm2d:
        """BN whose scale starts at the neuron threshold (threshold-dependent BN, Zheng et al.
        2021, with alpha = 1): inputs start at the scale of the surrogate gradient's window.

        Measured on N-MNIST (nmnist-net, vanilla LIF, 300 steps): train accuracy 0.45 with the
        usual scale 1, 0.95 with scale = threshold 0.3. ASA's sigmoid maps (about 0.5 at start)
        rescale their input by themselves, so without this the comparison favours ASA unfairly.
        """
        bn = nn.BatchNorm2d(channels)
        if self.spec.bn_init == "one":  # the paper's (PyTorch's default)
            return bn
        threshold = {**NEURON_DEFAULTS[self.spec.neuron], **self.spec.neuron_options}["threshold"]
        nn.init.constant_(bn.weight, float(threshold))
        return bn

    def _neuron(self) -> nn.Module:
        return make_neuron(self.spec.neuron, **self.spec.neuron_options)

    def _build_block(self, i: int, block: dict, shape: tuple) -> tuple[Block, tuple]:
        kind, where = block["type"], f"block {i} ({block['type']})"
        if kind == "flatten":
            return Block(kind, nn.Flatten()), (int(torch.tensor(shape).prod()),)
        if len(shape) != 3 and kind in ("conv", "pool"):
            raise ModelSpecError(f"{self.spec.name}: {where} needs a [C, H, W] input, got {shape}")
        if kind == "pool":
            k = self._number(block["kernel"], where)
            return Block(kind, _pool(block.get("pool_type", "avg"), k)), (
                shape[0], shape[1] // k, shape[2] // k)
        if kind == "fc":
            if len(shape) != 1:
                raise ModelSpecError(f"{self.spec.name}: {where} needs a flat input; add a "
                                     f"flatten block before it (input is {shape})")
            out = self._number(block["out"], where)
            return Block(kind, nn.Linear(shape[0], out, bias=block.get("bias", True)),
                         neuron=self._neuron(), dropout=block.get("dropout", 0.0)), (out,)
        out = self._number(block["out"], where)
        k = self._number(block.get("kernel", 3), where)
        stride = self._number(block.get("stride", 1), where)
        padding = self._number(block.get("padding", k // 2), where)
        bn = block.get("bn", True)
        # A bias before BN is cancelled by BN's mean; it would only collect Adam-amplified noise.
        layers: list[nn.Module] = [nn.Conv2d(shape[0], out, k, stride, padding,
                                             bias=block.get("bias", not bn))]
        if bn:
            layers.append(self._batch_norm(out))
        h = (shape[1] + 2 * padding - k) // stride + 1
        w = (shape[2] + 2 * padding - k) // stride + 1
        pool = self._number(block.get("pool", 1), where)
        if pool > 1:
            layers.append(_pool(block.get("pool_type", "avg"), pool))
            h, w = h // pool, w // pool
        attention = None
        if block.get("attention", True):
            attention = make_attention(self.attention_kind, T=self.spec.T,
                                       lam=self.spec.asa["lambda"], r=self.spec.asa["r"],
                                       release_masks=bool(self.spec.asa.get("release_masks", False)))
        return Block(kind, nn.Sequential(*layers), attention, self._neuron(),
                     block.get("dropout", 0.0)), (out, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected input [B, T, C, H, W], got shape {tuple(x.shape)}")
        for block in self.blocks:
            x = block(x)
        return x

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """Every neuron layer in order, named ``block<i>.<conv|fc>``."""
        return [(f"block{i}.{b.kind}", b.neuron) for i, b in enumerate(self.blocks)
                if b.neuron is not None]

    def attention_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"block{i}.{b.kind}", b.attention) for i, b in enumerate(self.blocks)
                if b.attention is not None]

    def reset_states(self) -> None:
        """Forget all neuron states; the next forward starts from zeros at its own batch size.

        sinabs's own ``reset_states`` keeps the old batch size, and a later batch of another size
        then resamples states with ``torch.randint``, which draws from the global RNG and breaks
        reproducibility (resume, data parallelism). Emptying the buffers avoids that path.
        """
        for _, neuron in self.spiking_layers():
            for name, buffer in list(neuron.named_buffers()):
                neuron.register_buffer(name, torch.zeros(0, device=buffer.device))

    def set_batch_shard(self, global_size: int, start: int, stop: int) -> None:
        """Tell dropout which rows of the global batch this process holds (data parallelism)."""
        for module in self.modules():
            if isinstance(module, BatchDropout):
                module.shard = (global_size, start, stop)

    def _neuron_state_keys(self) -> set[str]:
        return {f"blocks.{i}.neuron.{name}" for i, b in enumerate(self.blocks)
                if b.neuron is not None for name, _ in b.neuron.named_buffers()}

    def weights(self) -> dict[str, torch.Tensor]:
        """The state dict without neuron states (their shape depends on the last batch)."""
        states = self._neuron_state_keys()
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k not in states}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load ``weights()`` output; any other missing or extra key is an error."""
        self.reset_states()
        states = self._neuron_state_keys()
        result = self.load_state_dict(weights, strict=False)
        missing = [k for k in result.missing_keys if k not in states]
        if missing or result.unexpected_keys:
            raise ModelSpecError(f"weights do not fit network {self.spec.name!r} "
                                 f"(attention {self.attention_kind}): missing {missing[:5]}, "
                                 f"unexpected {result.unexpected_keys[:5]}")


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` whose autograd keeps no copy of its input. torch's formula keeps the input
    only to hand it to ``avg_pool2d_backward``, which reads its shape and strides, not its values;
    in a conv block that input is the BN output, the largest tensor a training step keeps
    (arch-a at T = 60: 37 of 175 MiB per sample). The same backward kernel runs on an unwritten
    stand-in of that layout, so the gradients are torch's bit for bit
    (tests/test_training_memory.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return _AvgPoolKeepingShape.apply(x, avg_pool_args(self))


def avg_pool_args(pool: nn.AvgPool2d) -> tuple:
    """``pool``'s settings as ``avg_pool2d`` and its backward kernel take them, after the input."""
    return (_pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding),
            pool.ceil_mode, pool.count_include_pad, pool.divisor_override)


def avg_pool_input_grad(grad: torch.Tensor, like: torch.Tensor | tuple, args: tuple) -> torch.Tensor:
    """The gradient ``avg_pool2d(x, *args)`` sends to x, from its output's ``grad``: torch's own
    backward kernel, given an unwritten stand-in for x (``like``: a tensor of x's layout, or
    (shape, strides, dtype, device)), since it reads x's layout, not its values."""
    shape, strides, dtype, device = ((like.shape, like.stride(), like.dtype, like.device)
                                     if isinstance(like, torch.Tensor) else like)
    stand_in = torch.empty_strided(shape, strides, dtype=dtype, device=device)
    return torch.ops.aten.avg_pool2d_backward(grad, stand_in, *args)


class _AvgPoolKeepingShape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, args):
        ctx.layout, ctx.args = (x.shape, x.stride(), x.dtype, x.device), args
        return nn.functional.avg_pool2d(x, *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return avg_pool_input_grad(grad, ctx.layout, ctx.args), None


def _pool(kind: str, k: int) -> nn.Module:
    if kind == "avg":
        return AvgPool2d(k)
    if kind == "max":
        return nn.MaxPool2d(k)
    raise ModelSpecError(f"pool_type {kind!r} unknown; use avg or max")


def build_network(spec: ModelSpec, num_classes: int, attention: str = "none") -> SpikingNetwork:
    return SpikingNetwork(spec, num_classes, attention)
