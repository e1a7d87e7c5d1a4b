"""Hardware-aware fine-tuning of a lowered network (docs/design.md section 4, step 4: recover).

Lowering gives up accuracy twice: folded attention loses its per-neuron thresholds (replaced by
initial states and kill bits, step 3) and the chip's per-core quantization rounds every weight to
int8. A few epochs of training *through* both recover part of it; the same function serves the
vanilla and the ASA runs, so their fidelity ladders stay comparable.

``ChipAwareNetwork`` is the trainable twin of a ``LoweredNetwork``: conv -> IAF -> sum pooling per
core, on [B, T, C, H, W]; of a ``LoweredGraph`` too (a spiking gate, ``fold.gate``): cores in
topological order, each reading its sources' pooled spikes concatenated along channels (or summed),
as the destinations' feature shifts deliver them. Modelling choices:

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

from asa_deploy.chip.graph import LoweredGraph
from asa_deploy.chip.lower import ChipLayer, LoweredNetwork
from asa_deploy.chip.quantize import discretization_scale
from asa_deploy.chip.spec import Numerics
from asa_deploy.errors import CompileError
from asa_deploy.nn.neurons import Rectangular
from asa_deploy.progress import progress as progress_bar
from asa_deploy.train.cost import CostMeter, core_fanouts
from asa_deploy.train.evaluation import collate, evaluate
from asa_deploy.train.loop import per_sample_loss


class ChipAwareLayer(nn.Module):
    """One core: conv (stride, padding) -> IAF, returning spikes [B, T, C, H, W] before pooling."""

    def __init__(self, layer: ChipLayer, numerics: Numerics | None, surrogate_width: float,
                 feedback_channels: int = 0):
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
        # a gated layer's last input channels come from its gate: their weights are a separate
        # parameter so they can learn at the gate's rate (``gate_lr``)
        weight = layer.weight.detach().clone().float()
        split = weight.shape[1] - int(feedback_channels)
        self.weight = nn.Parameter(weight[:, :split].clone())
        self.feedback = nn.Parameter(weight[:, split:].clone()) if feedback_channels else None
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
        weight = self.full_weight().detach()
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
            return {"weight": self.full_weight(), "bias": self.bias, "threshold": high,
                    "min_v_mem": low,
                    "state": self.initial_state, "width": self.surrogate_width, "scale": 1.0}
        s = self.scale()
        weight = _round_ste(self.full_weight() * s)
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
        return replace(self.source, weight=self.full_weight().detach().clone(), bias=bias)

    def full_weight(self) -> torch.Tensor:
        """[out, in, k, k]: the layer's own input channels, then its gate's."""
        return self.weight if self.feedback is None else torch.cat([self.weight, self.feedback], 1)


GATE_SUFFIX = ".gate"  # a spiking gate's core (fold.gate) is named after the layer it gates


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
        self.sources, self.merges = layer_sources(lowered)
        self.gates = [i for i, layer in enumerate(lowered.layers) if layer.name.endswith(GATE_SUFFIX)]
        feedback = [sum(lowered.layers[j].output_shape[0] for j in srcs if j in self.gates)
                    for srcs in self.sources]
        self.layers = nn.ModuleList(ChipAwareLayer(layer, numerics, surrogate_width, fed)
                                    for layer, fed in zip(lowered.layers, feedback, strict=True))
        self.pools = [int(layer.pool) for layer in lowered.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected input [B, T, C, H, W], got shape {tuple(x.shape)}")
        if self.input_pool > 1:
            x = _sum_pool(x, self.input_pool)
        if self.lowered.input_mask is not None:  # DVS pixels killed on the chip
            x = x * self.lowered.input_mask.to(x.dtype)
        last = len(self.layers) - 1
        sent: list[torch.Tensor] = []  # each core's spikes as its destinations receive them
        for i, (layer, pool) in enumerate(zip(self.layers, self.pools, strict=True)):
            parts = [sent[j] for j in self.sources[i]] or [x]
            merged = parts[0] if len(parts) == 1 else (
                torch.cat(parts, dim=2) if self.merges[i] == "cat" else torch.stack(parts).sum(0))
            spikes = layer(merged)
            sent.append(_sum_pool(spikes, pool) if pool > 1 and i < last else spikes)
        return sent[-1].sum(dim=(3, 4))

    def reset_states(self) -> None:
        """No-op: every forward starts each sample from the layers' initial states."""

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        """Each core's neurons: modules whose output is its spikes [B, T, C, H, W] (for evaluate)."""
        return [(layer.name, layer) for layer in self.layers]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in (layer.weight, layer.feedback, layer.bias)
                if p is not None]

    def parameter_groups(self, lr: float, gate_lr: float) -> list[dict]:
        """Adam groups: the spiking gates' weights and the weights from them at ``gate_lr`` (they
        start from scratch), everything else at ``lr``."""
        gate = [p for i, layer in enumerate(self.layers) for p in (layer.weight, layer.bias)
                if i in self.gates and p is not None]
        gate += [layer.feedback for layer in self.layers if layer.feedback is not None]
        rest = [p for p in self.trainable_parameters() if all(p is not q for q in gate)]
        return [{"params": rest, "lr": lr}] + ([{"params": gate, "lr": gate_lr}] if gate else [])

    def scales(self) -> list[float]:
        """Each core's current quantization scale (1.0 everywhere without numerics)."""
        return [1.0 if self.numerics is None else float(layer.scale()) for layer in self.layers]

    def to_lowered(self) -> LoweredNetwork:
        """The current float weights and biases back in a LoweredNetwork (a LoweredGraph when
        given one; everything else as given)."""
        fields = (tuple(self.lowered.input_shape), self.lowered.input_pool,
                  [layer.to_chip_layer() for layer in self.layers], list(self.lowered.notes),
                  self.lowered.input_mask)
        if isinstance(self.lowered, LoweredGraph):
            return LoweredGraph(*fields, sources=[list(s) for s in self.lowered.sources],
                                merges=list(self.lowered.merges))
        return LoweredNetwork(*fields)


def layer_sources(lowered: LoweredNetwork) -> tuple[list[list[int]], list[str]]:
    """Who feeds each layer (``[]``: the input) and how it merges them; a chain's layer i - 1
    feeds layer i."""
    if isinstance(lowered, LoweredGraph):
        return [list(s) for s in lowered.sources], list(lowered.merges)
    n = len(lowered.layers)
    return [[]] + [[i] for i in range(n - 1)], ["cat"] * n


def _sum_pool(x: torch.Tensor, pool: int) -> torch.Tensor:
    return sl.SumPool2d(pool)(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class Distiller:
    """Distillation from a teacher network (the dynamic ASA network, issue 12): forward hooks keep
    the teacher's and the student's spikes at matched layers, and ``loss`` is the mean over those
    layers and samples of ``1 - cos(s, t)``, s and t a sample's spike counts per neuron over the
    window. Only the pattern counts, not the scale: where the dynamic network fires for this input
    is what a static fold loses and a gate can restore, while the overall rate differs between
    the teacher's LIF and the chip's IAF whatever the gate does (a scale-sensitive error stayed
    at 0.5 of the target's norm in measurement)."""

    def __init__(self, teacher: nn.Module, student: ChipAwareNetwork, pairs: dict[int, int]):
        self.teacher, self.pairs = teacher, dict(pairs)
        self._kept: dict[tuple[str, int], torch.Tensor] = {}
        teacher_layers = [module for _, module in teacher.spiking_layers()]
        self._handles = [teacher_layers[t].register_forward_hook(self._keeper(("teacher", t)))
                         for t in self.pairs.values()]
        self._handles += [student.layers[s].register_forward_hook(self._keeper(("student", s)))
                          for s in self.pairs]

    def _keeper(self, key: tuple[str, int]):
        def hook(_module, _inputs, output):
            self._kept[key] = output
        return hook

    def loss(self, frames: torch.Tensor) -> torch.Tensor:
        """After the student's forward on ``frames``: runs the teacher on them, returns the loss."""
        self.teacher.eval()
        with torch.no_grad():
            self.teacher.reset_states()
            self.teacher(frames)
        terms = []
        for s, t in self.pairs.items():
            student = self._kept.pop(("student", s)).sum(dim=1)
            target = self._kept.pop(("teacher", t)).sum(dim=1).to(student.dtype)
            if student.shape != target.shape:
                raise CompileError(f"distillation: student layer {s} gives {tuple(student.shape)} "
                                   f"spike counts, teacher layer {t} {tuple(target.shape)}")
            terms.append(1 - F.cosine_similarity(student.flatten(1), target.flatten(1),
                                                 dim=1, eps=1e-6).mean())
        return torch.stack(terms).mean()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def finetune(lowered: LoweredNetwork, train_set, val_set, numerics: Numerics | None, *,
             epochs: int = 3, lr: float = 1e-4, batch_size: int = 16, seed: int = 0,
             loss: str = "mse", progress: bool = False, synops_weight: float = 0.0,
             synops_budget: float | None = None, teacher: nn.Module | None = None,
             distill: dict[int, int] | None = None,
             distill_weight: float = 0.0,
             gate_lr: float | None = None) -> tuple[LoweredNetwork, list[dict]]:
    """Fine-tune ``lowered`` with the chip's quantization in the loop (``numerics``: the chip's
    ``ChipSpec.numerics``; None trains in float). Returns the best epoch's network (epoch 0: the
    one given) and the log, one ``{epoch, loss, val_accuracy_window, val_accuracy_recording, val_nasfr,
    scales, synops_per_window, network_synops_per_window, distill_loss}`` per epoch, epoch 0 being
    the evaluation before training (loss and synops None; synops: mean over the epoch's training
    windows). ``synops_weight`` / ``synops_budget``: the cost term of ``asa-deploy train``
    (train/cost.py). ``distill_weight`` > 0 adds ``Distiller``'s loss towards ``teacher`` (fed the
    same frames), ``distill`` mapping a layer of ``lowered`` to the teacher's spiking layer;
    ``gate_lr``: the spiking gates' learning rate (None: ``lr``)."""
    model = ChipAwareNetwork(lowered, numerics)
    meter = CostMeter(model, lowered_fanouts(lowered))
    distiller = Distiller(teacher, model, distill) if distill_weight else None
    optimizer = torch.optim.Adam(model.parameter_groups(lr, gate_lr or lr))
    n_train = len(train_set)
    if n_train == 0:
        raise ValueError("finetune needs at least one training sample")
    batch = min(batch_size, n_train)

    def record(epoch: int, losses: list[float] | None) -> dict:
        metrics = evaluate(model, val_set, progress=progress)
        return {"epoch": epoch, "loss": None if losses is None else float(np.mean(losses)),
                "val_accuracy_window": metrics["accuracy_window"],
                "val_accuracy_recording": metrics["accuracy_recording"],
                "val_nasfr": metrics["nasfr"], "scales": model.scales(),
                "synops_per_window": None if synops is None else float(synops[:2].sum() / synops[2]),
                "network_synops_per_window": None if synops is None else float(synops[0] / synops[2]),
                "distill_loss": float(np.mean(distilled)) if distilled else None}

    synops, distilled = None, []

    history = [record(0, None)]
    best = (history[0], copy.deepcopy(model.state_dict()))
    for epoch in range(epochs):
        model.train()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n_train)
        batches = [order[i:i + batch] for i in range(0, n_train - batch + 1, batch)]
        losses, distilled, synops = [], [], torch.zeros(3, dtype=torch.float64)
        for idx in progress_bar(batches, desc=f"fine-tune {epoch + 1}/{epochs}", unit="batch",
                                leave=False, enabled=progress):
            frames, labels, _ = collate([train_set[int(i)] for i in idx])
            model.reset_states()
            out = model(frames)
            value = per_sample_loss(out, labels, loss).mean()
            network, inputs = meter.synops(frames)
            if synops_weight:
                value = value + meter.penalty(network, inputs, synops_weight,
                                              synops_budget) / len(idx)
            if distiller is not None:
                term = distiller.loss(frames)
                distilled.append(float(term.detach()))
                value = value + distill_weight * term
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
    if distiller is not None:
        distiller.close()
    model.load_state_dict(best[1])
    tuned = model.to_lowered()
    first, chosen = history[0], best[0]
    tuned.notes.append(
        f"hardware-aware fine-tuning ({'quantized' if numerics is not None else 'float'}, "
        f"{epochs} epoch(s), lr {lr:g}): best epoch {chosen['epoch']}, validation accuracy per "
        f"recording {first['val_accuracy_recording']:.3f} -> {chosen['val_accuracy_recording']:.3f}")
    return tuned, history


def lowered_fanouts(lowered: LoweredNetwork):
    """The cost term's fan-out maps of a lowered network's cores (train/cost.py)."""
    cores = [{"input": tuple(layer.input_shape), "c_out": int(layer.weight.shape[0]),
              "kernel": tuple(int(k) for k in layer.weight.shape[-2:]), "stride": tuple(layer.stride),
              "padding": tuple(layer.padding), "pool": int(layer.pool)} for layer in lowered.layers]
    return core_fanouts(cores, int(lowered.input_pool), lowered.input_mask,
                        layer_sources(lowered)[0])


def _key(entry: dict) -> tuple[float, float]:
    return (entry["val_accuracy_recording"], entry["val_accuracy_window"])
