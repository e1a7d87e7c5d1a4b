"""Hardware-aware fine-tuning of a lowered network (DESIGN.md section 4, step 4: recover).

Lowering gives up accuracy twice: folded attention loses its per-neuron thresholds (replaced by
initial states and kill bits, step 3) and the chip's per-core quantization rounds every weight to
int8. A few epochs of training *through* both recover part of it; the same function serves the
vanilla and the ASA runs, so their fidelity ladders stay comparable.

``ChipAwareNetwork`` is the trainable twin of a ``LoweredNetwork``: conv -> IAF -> sum pooling per
core, on [B, T, C, H, W]. Modelling choices:

- Neurons: sinabs ``IAF`` with ``MultiSpike`` (what the fast simulator and sinabs's own chip model
  compute per time bin), the core's reset (zero or subtract) and ``min_v_mem`` floor, and our
  ``Rectangular`` surrogate. Thresholds, ``min_v_mem``, initial states and kill bits are buffers:
  only weights and non-zero biases train (an all-zero bias, e.g. from folding an untrained
  BatchNorm, stays zero: a chip bias is a slow-clock leak, which only ``--bias leak`` asks for).
- Every ``forward`` call is a complete set of windows: each sample's membranes start at the layer's
  ``initial_state`` (zeros when None), as the chip's state is reset per window. ``reset_states`` is
  therefore a no-op, kept so ``train.evaluation.evaluate`` and the training loop's calling
  convention work unchanged.
- Killed neurons get no input (their state stays put) and their spikes are zeroed, as in
  ``chip.sim.fast``.
- Quantization (``numerics`` given): per forward the layer's scale is recomputed exactly as
  ``chip.quantize.quantize_layer`` does from the *current* weights, bias, thresholds and initial
  states (detached), and the layer runs in the chip's integer units: weights ``round(w*s)`` and
  bias ``round(b*s)`` with a straight-through estimator, thresholds ``round(theta*s)`` and
  ``round(min_v_mem*s)`` (with the chip's ``threshold_low 0 -> -1`` fix), states ``round(v0*s)``.
  This is the float fake-quantized network ``w_q = round(w*s)/s`` with everything multiplied by
  ``s`` (spike counts are unitless, so the outputs are the same), except that thresholds are
  rounded as the chip rounds them and no float rounding enters: the forward equals the compiled
  chip config run by ``chip.sim.fast.run_frames`` bit for bit. The surrogate's width is scaled by
  ``s`` too, so gradients with respect to the float weights equal those of the float-unit model.
- Without ``numerics`` the network is float and equals ``LoweredNetwork.to_sequential``.
- Output: the last layer's spikes summed over its positions, [B, T, classes]; a final pooling is
  ignored, as ``compile`` drops it.

``finetune`` trains with Adam, the training loop's batching (a seeded permutation per epoch, RCS
windows per epoch) and loss, evaluates before training (epoch 0) and after every epoch, and returns
the network of the best epoch by validation accuracy (ties: window accuracy, then the earliest),
so fine-tuning never returns a network worse on validation than the one it was given.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import sinabs.activation as sa
import sinabs.layers as sl
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asa_deploy.chip.lower import ChipLayer, LoweredNetwork
from asa_deploy.chip.quantize import discretization_scale
from asa_deploy.chip.spec import Numerics
from asa_deploy.errors import CompileError
from asa_deploy.nn.neurons import Rectangular
from asa_deploy.train.cost import CostMeter, core_fanouts
from asa_deploy.train.evaluation import collate, evaluate
from asa_deploy.train.loop import per_sample_loss


class ChipAwareLayer(nn.Module):
    """One core: conv (stride, padding) -> IAF, returning spikes [B, T, C, H, W] before pooling."""

    def __init__(self, layer: ChipLayer, numerics: Numerics | None, surrogate_width: float):
        super().__init__()
        if layer.per_neuron_threshold is not None:
            raise CompileError(f"layer {layer.name}: has per-neuron thresholds (folded attention); "
                               f"a core has one threshold. Lower them first (initial states / kill)")
        if layer.threshold <= 0 or layer.min_v_mem >= layer.threshold:
            raise CompileError(f"layer {layer.name}: threshold {layer.threshold:g} with min_v_mem "
                               f"{layer.min_v_mem:g}; need 0 < threshold and min_v_mem < threshold")
        self.source = layer
        self.name = layer.name
        self.numerics = numerics
        self.surrogate_width = float(surrogate_width)
        self.weight = nn.Parameter(layer.weight.detach().clone().float())
        # an all-zero bias (e.g. from folding an untrained BatchNorm) stays zero: on chip a bias is
        # a slow-clock leak, which only the ``leak`` bias policy (non-zero biases) asked for
        in_use = layer.bias is not None and bool((layer.bias != 0).any())
        self.bias = nn.Parameter(layer.bias.detach().clone().float()) if in_use else None
        shape = layer.neuron_shape
        state = layer.initial_state
        self.register_buffer("initial_state", torch.zeros(shape) if state is None
                             else state.detach().clone().float().reshape(shape))
        kill = layer.kill
        self.register_buffer("kill", None if kill is None
                             else kill.detach().clone().bool().reshape(shape))
        # (min_v_mem, threshold) as quantize_layer sees them: float32
        self.register_buffer("thresholds", torch.tensor((layer.min_v_mem, layer.threshold),
                                                        dtype=torch.float32))
        self.has_state = state is not None and bool((state != 0).any())

    def scale(self) -> torch.Tensor:
        """The core's current quantization scale (0-d float32, detached), as ``quantize_layer``."""
        n = self.numerics
        weight = self.weight.detach()
        bias = self.bias.detach() if self.bias is not None else weight.new_zeros(weight.shape[0])
        scales = [discretization_scale(weight, n.weight_bits),
                  discretization_scale(bias, n.bias_quantization_bits),
                  discretization_scale(self.thresholds, n.state_bits)]
        if self.has_state:
            scales.append(discretization_scale(self.initial_state, n.state_bits))
        return min(scales)

    def quantized_parameters(self) -> dict:
        """What the neuron runs with, in its own units: float (no numerics) or chip integers."""
        low, high = self.thresholds
        if self.numerics is None:
            return {"weight": self.weight, "bias": self.bias, "threshold": high, "min_v_mem": low,
                    "state": self.initial_state, "width": self.surrogate_width, "scale": 1.0}
        s = self.scale()
        weight = _round_ste(self.weight * s)
        bias = None if self.bias is None else _round_ste(self.bias * s)
        low_q, high_q = torch.round(self.thresholds * s)
        if low_q == 0:
            low_q = low_q.new_tensor(-1.0)  # the chip misbehaves with threshold_low 0 (quantize.py)
        return {"weight": weight, "bias": bias, "threshold": high_q, "min_v_mem": low_q,
                "state": torch.round(self.initial_state * s), "width": self.surrogate_width * float(s),
                "scale": float(s)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        q = self.quantized_parameters()
        current = F.conv2d(x.flatten(0, 1), q["weight"], q["bias"], self.source.stride,
                           self.source.padding).unflatten(0, (b, t))
        if self.kill is not None:
            current = current.masked_fill(self.kill, 0.0)
        iaf = sl.IAF(spike_threshold=q["threshold"].detach().clone(),
                     min_v_mem=q["min_v_mem"].detach().clone(), spike_fn=sa.MultiSpike,
                     reset_fn=sa.MembraneReset() if self.source.return_to_zero
                     else sa.MembraneSubtract(),
                     surrogate_grad_fn=Rectangular(width=q["width"])).to(x.device)
        shape = tuple(current.shape[2:])
        iaf.init_state_with_shape((b, *shape))
        iaf.v_mem = q["state"].expand(b, *shape).clone()
        spikes = iaf(current)
        if self.kill is not None:
            spikes = spikes.masked_fill(self.kill, 0.0)
        return spikes

    def to_chip_layer(self) -> ChipLayer:
        bias = self.source.bias if self.bias is None else self.bias.detach().clone()
        return replace(self.source, weight=self.weight.detach().clone(), bias=bias)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward (exactly: ``q + (x - x) == q``), identity gradient."""
    return torch.round(x).detach() + (x - x.detach())


class ChipAwareNetwork(nn.Module):
    """Trainable twin of a LoweredNetwork: [B, T, C, H, W] frames (at the LoweredNetwork's input,
    before input_pool) -> [B, T, classes] output spikes."""

    def __init__(self, lowered: LoweredNetwork, numerics: Numerics | None, *,
                 surrogate_width: float = 1.0):
        super().__init__()
        self.lowered = lowered
        self.numerics = numerics
        self.input_pool = int(lowered.input_pool)
        self.layers = nn.ModuleList(ChipAwareLayer(layer, numerics, surrogate_width)
                                    for layer in lowered.layers)
        self.pools = [int(layer.pool) for layer in lowered.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected input [B, T, C, H, W], got shape {tuple(x.shape)}")
        if self.input_pool > 1:
            x = _sum_pool(x, self.input_pool)
        if self.lowered.input_mask is not None:  # DVS pixels killed on the chip
            x = x * self.lowered.input_mask.to(x.dtype)
        last = len(self.layers) - 1
        for i, (layer, pool) in enumerate(zip(self.layers, self.pools, strict=True)):
            x = layer(x)
            if pool > 1 and i < last:
                x = _sum_pool(x, pool)
        return x.sum(dim=(3, 4))

    def reset_states(self) -> None:
        """No-op: every forward starts each sample from the layers' initial states."""

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """Each core's neurons: modules whose output is its spikes [B, T, C, H, W] (for evaluate)."""
        return [(layer.name, layer) for layer in self.layers]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in (layer.weight, layer.bias) if p is not None]

    def scales(self) -> list[float]:
        """Each core's current quantization scale (1.0 everywhere without numerics)."""
        return [1.0 if self.numerics is None else float(layer.scale()) for layer in self.layers]

    def to_lowered(self) -> LoweredNetwork:
        """The current float weights and biases back in a LoweredNetwork (everything else as given)."""
        return LoweredNetwork(tuple(self.lowered.input_shape), self.lowered.input_pool,
                              [layer.to_chip_layer() for layer in self.layers],
                              list(self.lowered.notes), self.lowered.input_mask)


def _sum_pool(x: torch.Tensor, pool: int) -> torch.Tensor:
    return sl.SumPool2d(pool)(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def finetune(lowered: LoweredNetwork, train_set, val_set, numerics: Numerics | None, *,
             epochs: int = 3, lr: float = 1e-4, batch_size: int = 16, seed: int = 0,
             loss: str = "mse", progress: bool = False, synops_weight: float = 0.0,
             synops_budget: float | None = None) -> tuple[LoweredNetwork, list[dict]]:
    """Fine-tune ``lowered`` with the chip's quantization in the loop (``numerics``: the chip's
    ``ChipSpec.numerics``; None trains in float). Returns the best epoch's network (epoch 0: the
    one given) and the log, one ``{epoch, loss, val_accuracy, val_window_accuracy, val_nasfr,
    scales, synops_per_window, network_synops_per_window}`` per epoch, epoch 0 being the evaluation
    before training (loss and synops None; synops: mean over the epoch's training windows).
    ``synops_weight`` / ``synops_budget``: the cost term of ``asa-deploy train`` (train/cost.py)."""
    model = ChipAwareNetwork(lowered, numerics)
    meter = CostMeter(model, lowered_fanouts(lowered))
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=lr)
    n_train = len(train_set)
    if n_train == 0:
        raise ValueError("finetune needs at least one training sample")
    batch = min(batch_size, n_train)

    def record(epoch: int, losses: list[float] | None) -> dict:
        metrics = evaluate(model, val_set, progress=progress)
        return {"epoch": epoch, "loss": None if losses is None else float(np.mean(losses)),
                "val_accuracy": metrics["accuracy"],
                "val_window_accuracy": metrics["window_accuracy"],
                "val_nasfr": metrics["nasfr"], "scales": model.scales(),
                "synops_per_window": None if synops is None else float(synops[:2].sum() / synops[2]),
                "network_synops_per_window": None if synops is None else float(synops[0] / synops[2])}

    synops = None

    history = [record(0, None)]
    best = (history[0], copy.deepcopy(model.state_dict()))
    for epoch in range(epochs):
        model.train()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n_train)
        batches = [order[i:i + batch] for i in range(0, n_train - batch + 1, batch)]
        losses, synops = [], torch.zeros(3, dtype=torch.float64)
        for idx in tqdm(batches, desc=f"fine-tune {epoch + 1}/{epochs}", leave=False,
                        disable=None if progress else True):
            frames, labels, _ = collate([train_set[int(i)] for i in idx])
            model.reset_states()
            out = model(frames)
            value = per_sample_loss(out, labels, loss).mean()
            network, inputs = meter.synops(frames)
            if synops_weight:
                value = value + meter.penalty(network, inputs, synops_weight,
                                              synops_budget) / len(idx)
            synops += torch.tensor([float(network.detach().sum()), float(inputs.sum()), len(idx)],
                                   dtype=torch.float64)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))
        history.append(record(epoch + 1, losses))
        if _key(history[-1]) > _key(best[0]):
            best = (history[-1], copy.deepcopy(model.state_dict()))
    meter.close()
    model.load_state_dict(best[1])
    tuned = model.to_lowered()
    first, chosen = history[0], best[0]
    tuned.notes.append(
        f"hardware-aware fine-tuning ({'quantized' if numerics is not None else 'float'}, "
        f"{epochs} epoch(s), lr {lr:g}): best epoch {chosen['epoch']}, validation accuracy "
        f"{first['val_accuracy']:.3f} -> {chosen['val_accuracy']:.3f}")
    return tuned, history


def lowered_fanouts(lowered: LoweredNetwork):
    """The cost term's fan-out maps of a lowered network's cores (train/cost.py)."""
    cores = [{"input": tuple(layer.input_shape), "c_out": int(layer.weight.shape[0]),
              "kernel": tuple(int(k) for k in layer.weight.shape[-2:]), "stride": tuple(layer.stride),
              "padding": tuple(layer.padding), "pool": int(layer.pool)} for layer in lowered.layers]
    return core_fanouts(cores, int(lowered.input_pool), lowered.input_mask)


def _key(entry: dict) -> tuple[float, float]:
    return (entry["val_accuracy"], entry["val_window_accuracy"])
