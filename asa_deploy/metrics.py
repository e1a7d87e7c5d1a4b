"""Figures more than one stage reports, defined once at the bottom of the package, so that no
stage imports another for them (docs/design.md section 5): the two accuracies' names (below), and
NASFR, which training's validation (``train.evaluation``) and the redundancy analysis
(``analysis``) both report.

The two accuracy figures and their one pair of names, in every artifact and printout:

* ``accuracy_window``: the share of windows whose class (``predict_classes``; silent is wrong) is
  the label;
* ``accuracy_recording``: the share of recordings of which strictly more than half of the windows
  are right (the paper's majority vote).

A figure an artifact cannot have is None, never the other figure (``simulate --whole-recordings``
has one window per recording: only ``accuracy_recording``).

Artifacts written before these names (``accuracy`` meant per recording in eval.json, fold.json and
model.pt, per window in sim.json and device.json; ``window_accuracy``, ``recording_accuracy``;
analysis.json's ``accuracy`` {``window``, ``recording``}) are still read: every reader passes what
it loads through ``current_names`` instead of asking for a rerun.
"""

from __future__ import annotations

from collections.abc import Mapping

WINDOW, RECORDING = "accuracy_window", "accuracy_recording"


def current_names(entry: dict, bare: str, prefix: str = "") -> dict:
    """``entry`` (a copy) with an older version's accuracy keys under the current names.

    ``bare`` (``"window"`` / ``"recording"``): what a plain ``accuracy`` meant in the artifact it
    came from; ``prefix``: the keys' common prefix (``"val_"`` in train_log.jsonl). A current key
    already present is kept."""
    if bare not in ("window", "recording"):
        raise ValueError(f"bare must be 'window' or 'recording', not {bare!r}")
    out = dict(entry)
    old = {f"{prefix}window_accuracy": prefix + WINDOW,
           f"{prefix}recording_accuracy": prefix + RECORDING}
    plain = out.pop(prefix + "accuracy", None)
    if isinstance(plain, dict):  # analysis.json: {"window", "recording", "n_recordings"}
        out.setdefault(prefix + WINDOW, plain.get("window"))
        out.setdefault(prefix + RECORDING, plain.get("recording"))
        if "n_recordings" in plain:
            out.setdefault("n_recordings", plain["n_recordings"])
    elif prefix + "accuracy" in entry:
        out.setdefault(f"{prefix}accuracy_{bare}", plain)
    for before, now in old.items():
        if before in out:
            out.setdefault(now, out.pop(before))
    return out



def nasfr(sfr_per_layer: Mapping[str, float], neurons_per_layer: Mapping[str, int]) -> float:
    """NASFR = sum_l SFR_l N_l / sum_l N_l: the network average spike firing rate.

    Weighted by neuron count so that it equals total spikes / (T x all neurons x samples).
    """
    if set(sfr_per_layer) != set(neurons_per_layer):
        raise ValueError(
            f"nasfr needs the same layers in both dicts; got {sorted(sfr_per_layer)} and "
            f"{sorted(neurons_per_layer)}"
        )
    total = sum(neurons_per_layer.values())
    return sum(sfr_per_layer[k] * neurons_per_layer[k] for k in sfr_per_layer) / total
