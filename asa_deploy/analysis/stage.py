"""The ``analyze`` stage over run directories: ``analysis.json`` per run and comparison figures."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from asa_deploy import provenance
from asa_deploy.analysis.collect import collect
from asa_deploy.analysis.figures import plot_comparison
from asa_deploy.analysis.report import summarize, write_analysis
from asa_deploy.data import CacheSetting
from asa_deploy.defaults import TEST_WINDOWS
from asa_deploy.io import results_kept
from asa_deploy.rundir import ANALYSIS_JSON, FIGURES, MODEL, data_artifact
from asa_deploy.train.loop import eval_set, load_run


def attention_label(kind: str) -> str:
    return "vanilla" if kind == "none" else kind


def analyze_runs(run_dirs: list[Path], *, data: str | None = None, windows: int = TEST_WINDOWS,
                 max_samples: int | None = None, figures_dir: Path | None = None,
                 progress: bool = True, cache: CacheSetting = None) -> dict[str, dict]:
    """Analyze each run on its validation split (or ``data``), write ``RUN/analysis.json`` (on other
    data ``analysis-<data>.json``, never over the run's own) and draw the runs side by side into
    ``figures_dir`` (default: the first run's ``figures/``, or ``figures-<data>/``).

    ``windows`` test windows per recording (1: one sample per recording, as N-SFR counts samples);
    ``cache``: where decoded recordings live (``open_dataset``).
    Returns {label: summary}, each with the ``file`` it was written to and the ``figures`` folder; labels are "vanilla" / the attention kind, suffixed when repeated.
    """
    summaries, records, paths = {}, {}, {}
    for run_dir in map(Path, run_dirs):
        model, artifact = load_run(run_dir)
        dataset, described = eval_set(artifact, data, windows=windows, cache=cache)
        loader = DataLoader(dataset, batch_size=32)
        result = collect(model, loader, max_samples=max_samples, raw_bytes=256 * 2**20,
                         progress=progress)
        own_data = artifact["data"]["spec"]
        summary = {"run": str(run_dir), "data": described, "attention": artifact["attention"],
                   "model": artifact["model_spec"]["name"], "windows_per_recording": windows,
                   **summarize(result),
                   provenance.KEY: provenance.record(
                       run_dir, [MODEL], data=data or own_data,
                       split="validation" if data in (None, own_data)
                       and artifact["data"]["split"]["val"] else "all recordings",
                       windows=windows, max_samples=max_samples)}
        if figures_dir is None:
            figures_dir = Path(run_dirs[0]) / data_artifact(FIGURES, data, own_data)
        label = attention_label(artifact["attention"])
        while label in summaries:
            label += "'"
        paths[label] = run_dir / data_artifact(ANALYSIS_JSON, data, own_data)
        summaries[label], records[label] = summary, result
    out = {label: {**s, "file": str(paths[label]), "figures": str(figures_dir)}
           for label, s in summaries.items()}
    with results_kept(out):  # written once every run is analyzed, so a failed write loses nothing
        for label, summary in summaries.items():
            write_analysis(summary, paths[label])
        plot_comparison(records, figures_dir)
    return out


def comparison_table(summaries: dict[str, dict]) -> str:
    """A plain-text side-by-side table of the headline redundancy figures."""
    labels = list(summaries)
    rows = [("accuracy per window", lambda s: f"{s['accuracy_window']:.3f}"),
            ("accuracy per recording", lambda s: f"{s['accuracy_recording']:.3f}"),
            ("NASFR", lambda s: f"{s['nasfr']:.4f}"),
            ("QE", lambda s: f"{s['qe']:.4f}")]
    layer_names = list(next(iter(summaries.values()))["layers"])
    for name in layer_names:
        rows.append((f"SFR {name}", lambda s, n=name: f"{s['layers'][n]['sfr']:.4f}"))
    for name in layer_names:
        if "ghost" in summaries[labels[0]]["layers"][name]:
            rows.append((f"noise channels {name}",
                         lambda s, n=name: f"{s['layers'][n]['noise_channel_fraction']:.2f}"))
            rows.append((f"near-duplicate ch. {name}",
                         lambda s, n=name: f"{s['layers'][n]['ghost']['near_duplicate_fraction']:.2f}"))
    width = max(len(r[0]) for r in rows) + 2
    lines = ["".ljust(width) + "".join(f"{label:>12s}" for label in labels)]
    for title, cell in rows:
        lines.append(title.ljust(width) + "".join(f"{_safe(cell, summaries[k]):>12s}" for k in labels))
    return "\n".join(lines)


def _safe(cell, summary) -> str:
    try:
        return cell(summary)
    except (TypeError, KeyError):  # null (undefined) figures
        return "-"
