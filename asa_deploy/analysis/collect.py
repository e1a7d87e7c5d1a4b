"""Run a model over a data loader and record what its spiking layers do.

For each spiking layer (``model.spiking_layers()``, sinabs ``LIF`` or ``IAF``) ``collect`` rebuilds
the membrane potential before spike and reset, u_t = alpha * v_{t-1} + I_t (I scaled by 1 - alpha
when the layer normalises its input), from the input current (forward pre-hook), sinabs' recorded
post-reset ``v_mem`` and alpha, and the spikes (forward hook).

Whole test sets do not fit in memory as raw ``[S, T, neurons]`` arrays (DVS Gesture, arch A: about
17 GB of spikes alone), so everything the analysis needs is accumulated exactly while streaming,
using the additive metrics of ``metrics``: spike totals, per-neuron spiking counts (N-SFR), MPD
histograms on a fixed binning, MPD moments and QE sums. Raw spikes and u are kept besides only for
the first samples that fit in ``raw_bytes``, for inspection and tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from sinabs.layers import LIF, SqueezeMixin

from asa_deploy.analysis import metrics
from asa_deploy.data.framing import predict_classes
from asa_deploy.progress import progress as progress_bar

#: Bytes kept per raw neuron-step: one uint8 spike count and one float32 u.
_RAW_BYTES_PER_VALUE = 5


@dataclass
class LayerRecord:
    """What one spiking layer did over the analysed samples.

    ``shape`` is the per-step neuron shape (``C, H, W`` or ``N``). Accumulated over all
    ``n_samples``: ``spike_total``, ``spiking_count [T, *shape]`` (samples in which each neuron
    spiked at each step), ``mpd`` (histograms ``[T, C, bins]``), ``moments [3, T, C]`` (count, sum,
    sum of squares of u), ``qe_sum`` / ``qe_count``. ``mismatches`` counts neuron-steps where
    ``u >= threshold`` disagrees with a spike; it is 0 for single-spike layers when u is right.
    ``spikes`` (uint8) and ``u`` (float32), ``[S_raw, T, *shape]``, hold the first ``S_raw`` samples
    (None when none were kept).
    """

    name: str
    shape: tuple[int, ...]
    threshold: float
    alpha: float
    n_samples: int
    spike_total: float
    spiking_count: torch.Tensor
    mpd: metrics.MPDHistogram
    moments: torch.Tensor
    qe_sum: float
    qe_count: int
    mismatches: int
    spikes: torch.Tensor | None = None
    u: torch.Tensor | None = None

    @property
    def is_conv(self) -> bool:
        """Conv layers have ``C, H, W`` neurons and spike features."""
        return len(self.shape) == 3

    @property
    def neurons(self) -> int:
        """Neurons per time step (N_l in NASFR)."""
        return int(torch.Size(self.shape).numel())

    @property
    def time_steps(self) -> int:
        """T."""
        return self.spiking_count.shape[0]

    @property
    def sfr(self) -> float:
        """SFR_l = total spikes / (T x neurons x samples), as ``metrics.layer_sfr``."""
        return self.spike_total / (self.time_steps * self.neurons * self.n_samples)

    @property
    def nsfr(self) -> torch.Tensor:
        """N-SFR ``[T, *shape]`` over all analysed samples (spike features for conv layers)."""
        return self.spiking_count.double() / self.n_samples

    @property
    def qe(self) -> float:
        """QE over all analysed samples, as ``metrics.qe``."""
        return self.qe_sum / self.qe_count

    @property
    def ptd(self) -> torch.Tensor:
        """PTD per step and channel ``[T, C]``."""
        return metrics.ptd(self.mpd.counts, self.mpd.edges, self.threshold)

    @property
    def mpd_variance(self) -> torch.Tensor:
        """MPD variance per step and channel ``[T, C]``."""
        return metrics.variance_from_moments(self.moments)


@dataclass
class LayerRecords:
    """``collect``'s result: per spiking layer records, in network order, and the predictions
    (``predict_classes`` of the output: silent is -1, wrong), labels and recording ids of every sample."""

    layers: list[LayerRecord]
    predictions: torch.Tensor
    labels: torch.Tensor
    recordings: torch.Tensor
    time_steps: int

    def __getitem__(self, name: str) -> LayerRecord:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no spiking layer {name!r}; layers: {[r.name for r in self.layers]}")

    @property
    def n_samples(self) -> int:
        """Number of analysed samples (windows)."""
        return len(self.labels)


@dataclass
class _Recorder:
    """Hooks of one layer: rebuilds u per batch and folds it into the accumulators."""

    name: str
    layer: LIF
    raw_limit: int | None
    edges: torch.Tensor = field(init=False)
    current: torch.Tensor | None = None
    v0: torch.Tensor | None = None
    n_samples: int = 0
    spike_total: float = 0.0
    spiking_count: torch.Tensor | None = None
    mpd: metrics.MPDHistogram | None = None
    moments: torch.Tensor | None = None
    qe_sum: float = 0.0
    qe_count: int = 0
    mismatches: int = 0
    raw_spikes: list[torch.Tensor] = field(default_factory=list)
    raw_u: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.edges = metrics.mpd_edges(self.threshold)

    @property
    def threshold(self) -> float:
        return float(self.layer.spike_threshold)

    def pre_hook(self, module: LIF, args: tuple[torch.Tensor, ...]) -> None:
        if self.current is not None:
            raise RuntimeError(
                f"spiking layer {self.name} ran twice in one forward pass; analysis needs each "
                "layer in spiking_layers() to be called once per batch"
            )
        current = args[0]
        batch, _, *trailing = current.shape
        state_ok = module.is_state_initialised() and module.v_mem.shape == (batch, *trailing)
        self.v0 = module.v_mem.detach().clone() if state_ok else current.new_zeros(batch, *trailing)
        self.current = current.detach()

    def post_hook(self, module: LIF, args: tuple[torch.Tensor, ...], spikes: torch.Tensor) -> None:
        u = self._membrane(module)
        self.current = self.v0 = None
        s = spikes.detach()
        first = self.spiking_count is None
        count = (s > 0).sum(0, dtype=torch.int32).cpu()
        hist = metrics.mpd_histogram(u, self.edges)
        moments = metrics.mpd_moments(u).cpu()
        self.spiking_count = count if first else self.spiking_count + count
        self.mpd = hist if first else self.mpd + hist
        self.moments = moments if first else self.moments + moments
        self.n_samples += s.shape[0]
        self.spike_total += float(s.sum(dtype=torch.float64))
        self.qe_sum += metrics.qe(u, s) * u.numel()
        self.qe_count += u.numel()
        self.mismatches += int(((u >= module.spike_threshold) != (s > 0)).sum())
        kept = sum(len(x) for x in self.raw_spikes)
        room = s.shape[0] if self.raw_limit is None else max(self.raw_limit - kept, 0)
        if room:
            self.raw_spikes.append(s[:room].clamp(max=255).to(torch.uint8).cpu())
            self.raw_u.append(u[:room].float().cpu())

    def _membrane(self, module: LIF) -> torch.Tensor:
        """u_t = alpha * v_{t-1} + I_t, with the same float operations as sinabs' LIF step."""
        v = module.recordings["v_mem"]
        synaptic = module.recordings.get("i_syn", self.current)
        alpha = module.alpha_mem_calculated
        if module.norm_input:
            synaptic = (1 - alpha) * synaptic
        v_prev = torch.cat([self.v0.unsqueeze(1), v[:, :-1]], dim=1)
        return alpha * v_prev + synaptic

    def trim_raw(self, limit: int) -> None:
        """Drop raw samples beyond ``limit`` (known only after the first batch)."""
        self.raw_limit = limit
        if self.raw_spikes:
            self.raw_spikes = [torch.cat(self.raw_spikes)[:limit]]
            self.raw_u = [torch.cat(self.raw_u)[:limit]]

    def record(self) -> LayerRecord:
        keep = bool(self.raw_spikes) and len(self.raw_spikes[0]) > 0
        return LayerRecord(
            name=self.name,
            shape=tuple(self.spiking_count.shape[1:]),
            threshold=self.threshold,
            alpha=float(self.layer.alpha_mem_calculated.detach()),
            n_samples=self.n_samples,
            spike_total=self.spike_total,
            spiking_count=self.spiking_count,
            mpd=self.mpd,
            moments=self.moments,
            qe_sum=self.qe_sum,
            qe_count=self.qe_count,
            mismatches=self.mismatches,
            spikes=torch.cat(self.raw_spikes) if keep else None,
            u=torch.cat(self.raw_u) if keep else None,
        )


def _spiking_layers(model: torch.nn.Module) -> list[tuple[str, LIF]]:
    if not hasattr(model, "spiking_layers"):
        raise TypeError(
            f"{type(model).__name__} has no spiking_layers(); analysis needs the list of its "
            "sinabs LIF / IAF layers in network order"
        )
    layers = list(model.spiking_layers())
    for name, layer in layers:
        if not isinstance(layer, LIF) or isinstance(layer, SqueezeMixin):
            raise TypeError(
                f"spiking layer {name} is a {type(layer).__name__}; analysis supports sinabs LIF and "
                "IAF layers taking [B, T, ...] input (not the Squeeze variants)"
            )
    if not layers:
        raise ValueError(f"{type(model).__name__}.spiking_layers() is empty")
    return layers


def collect(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    max_samples: int | None = None,
    device: str | torch.device = "cpu",
    raw_bytes: int = 2 * 2**30,
    progress: bool = True,
) -> LayerRecords:
    """Run ``model`` (moved to ``device``, in eval mode) on ``loader`` batches
    ``(frames [B, T, P, H, W], label [B], recording [B])`` under ``torch.no_grad``.

    Stops after ``max_samples`` samples (all when None). Keeps raw spikes and u for as many leading
    samples as fit in ``raw_bytes`` (0: none); all statistics cover every sample. The model's
    training mode and each layer's ``record_states`` are restored afterwards.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1 (or None for all); got {max_samples}")
    layers = _spiking_layers(model)
    recorders = [_Recorder(name, layer, None if raw_bytes > 0 else 0) for name, layer in layers]
    saved = [(layer.record_states, getattr(layer, "recordings", {})) for _, layer in layers]
    was_training = model.training
    handles = []
    predictions, labels, recordings = [], [], []
    seen, time_steps = 0, 0
    model.to(device).eval()
    try:
        for rec, (_, layer) in zip(recorders, layers, strict=True):
            layer.record_states = True
            handles.append(layer.register_forward_pre_hook(rec.pre_hook))
            handles.append(layer.register_forward_hook(rec.post_hook))
        total = len(loader) if hasattr(loader, "__len__") else None
        with torch.no_grad():
            for frames, label, recording in progress_bar(
                loader, total=total, desc="analyze", unit="batch", enabled=progress
            ):
                take = len(frames) if max_samples is None else min(len(frames), max_samples - seen)
                model.reset_states()
                out = model(frames[:take].to(device).float())
                if out.ndim != 3 or out.shape[:2] != (take, frames.shape[1]):
                    raise ValueError(
                        f"model output has shape {tuple(out.shape)}; analysis needs [B, T, classes] "
                        f"for input {tuple(frames.shape)}"
                    )
                predictions.append(torch.from_numpy(predict_classes(out.sum(1))))
                labels.append(torch.as_tensor(label[:take]).cpu())
                recordings.append(torch.as_tensor(recording[:take]).cpu())
                if seen == 0 and raw_bytes > 0:
                    per_sample = sum(
                        r.spiking_count.numel() * _RAW_BYTES_PER_VALUE for r in recorders
                    )
                    for rec in recorders:
                        rec.trim_raw(raw_bytes // per_sample)
                seen += take
                time_steps = out.shape[1]
                if max_samples is not None and seen >= max_samples:
                    break
    finally:
        for handle in handles:
            handle.remove()
        for (_, layer), (record_states, recorded) in zip(layers, saved, strict=True):
            layer.record_states = record_states
            layer.recordings = recorded
        model.train(was_training)
    if seen == 0:
        raise ValueError("the data loader yielded no samples to analyse")
    return LayerRecords(
        layers=[rec.record() for rec in recorders],
        predictions=torch.cat(predictions),
        labels=torch.cat(labels),
        recordings=torch.cat(recordings),
        time_steps=time_steps,
    )
