"""Render a ``build_report`` dict as Markdown and as one self-contained HTML page.

Both renderers walk the same list of blocks (``document``): headings, paragraphs, lists, tables and
images, so the two files always say the same thing. In the text, spans between backticks are code
(commands). HTML embeds every image as a base64 PNG and its CSS inline (no external URL); Markdown
links the PNG files (the analysis figures where they are, the report's own plots in
``report_figures/`` beside the report).

The report's plots (per-core SynOps, per-core spikes, power split) are drawn on bare
``matplotlib.figure.Figure`` objects, as ``asa_deploy.analysis.figures`` does, so no pyplot state
changes.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from asa_deploy.report.build import ANALYSIS_FIGURES

NA = "n/a"


# ---- blocks ------------------------------------------------------------------------------------------

@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    text: str
    kind: str = "p"  # p, note (a remark), quote (verbatim source text), warn


@dataclass
class Items:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns
    caption: str | None = None


@dataclass
class Image:
    caption: str
    path: str | None = None      # an existing PNG file
    png: bytes | None = None     # a PNG drawn for the report
    name: str | None = None      # file name (no suffix) the Markdown links for ``png``
    half: bool = False           # HTML: side by side with the next half-width image


Block = Heading | Para | Items | Table | Image


# ---- number formatting -------------------------------------------------------------------------------

def num(x, digits: int = 3) -> str:
    """Integers and large values with thousands separators, small ones to ``digits`` significant."""
    if x is None:
        return NA
    x = float(x)
    if not np.isfinite(x):
        return NA
    if x == 0:
        return "0"
    if abs(x) >= 1000 or (x == round(x) and abs(x) >= 1):
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def pct(x, digits: int = 2) -> str:
    return NA if x is None else f"{100 * float(x):.{digits}f}"


def ratio(x) -> str:
    return NA if x is None else f"x{float(x):.3g}"


def count(x) -> str:
    return NA if x is None else f"{int(round(float(x))):,}"


# ---- plots ---------------------------------------------------------------------------------------------

def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _core_axis(runs: dict) -> tuple[list[int], dict[int, str]]:
    cores: list[int] = []
    names: dict[int, str] = {}
    for run in runs.values():
        for row in (run.get("activity") or {}).get("cores", []):
            if row["core"] not in cores:
                cores.append(row["core"])
            if row.get("layer") and row["core"] not in names:
                names[row["core"]] = row["layer"]
    return cores, names


def plot_per_core(runs: dict, key: str, ylabel: str, title: str) -> Figure | None:
    """Grouped bars: one group per core, one colour per run; log scale when values span decades."""
    runs = {label: run for label, run in runs.items() if run.get("activity")}
    if not runs:
        return None
    cores, names = _core_axis(runs)
    x = np.arange(len(cores))
    width = 0.8 / len(runs)
    fig = Figure(figsize=(max(5.5, 0.9 * len(cores) + 2.0), 4), layout="constrained")
    ax = fig.subplots()
    positive = []
    for i, (label, run) in enumerate(runs.items()):
        by_core = {row["core"]: row[key] for row in run["activity"]["cores"]}
        values = np.array([by_core.get(c) if by_core.get(c) is not None else np.nan for c in cores],
                          dtype=float)
        positive += [v for v in values if np.isfinite(v) and v > 0]
        engine = (run.get("simulation") or {}).get("engine", "?")
        offset = x + (i - (len(runs) - 1) / 2) * width
        ax.bar(offset, np.nan_to_num(values), width, label=f"{label} ({engine})")
        for position, value in zip(offset, values, strict=True):
            if value == 0:  # invisible as a bar (and not drawable on a log axis)
                ax.annotate("0", (position, 0.01), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=7, color=f"C{i}")
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
        ax.set_ylabel(f"{ylabel} (log scale; 0 not drawn)")
    else:
        ax.set_ylabel(ylabel)
    ax.set_xticks(x, [f"core {c}\n{names.get(c, '')}" for c in cores], fontsize=8)
    ax.set_xlabel("chip core (layer)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return fig


def plot_power_split(runs: dict) -> Figure | None:
    """Left: stacked static (resting) + dynamic power per run, with measured power when present.
    Right: the dynamic terms alone (spikes, SynOps, input events), on their own scale."""
    runs = {label: run for label, run in runs.items() if run.get("power")}
    if not runs:
        return None
    labels = list(runs)
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(8.0, 2.0 * len(labels) + 4.5), 3.8), layout="constrained")
    total_ax, dynamic_ax = fig.subplots(1, 2, width_ratios=[1, 1])
    terms = [("spikes", "dynamic: spikes", "C0"), ("synops", "dynamic: SynOps", "C1"),
             ("input_events", "dynamic: input events", "C2")]
    power = [runs[label]["power"] for label in labels]
    static = np.array([p["static_mw"] for p in power], dtype=float)
    dynamic = np.array([p["dynamic_mw"] for p in power], dtype=float)
    total_ax.bar(x, static, 0.6, label="static (resting)", color="0.65")
    total_ax.bar(x, dynamic, 0.6, bottom=static, label="dynamic", color="C3")
    band = np.array([p["band_mw"] for p in power], dtype=float)
    total_ax.errorbar(x, static + dynamic, yerr=_spans(static + dynamic, band), fmt="none",
                      ecolor="black", capsize=6, label="band (e_spike low..high)")
    measured = [(i, value) for i, label in enumerate(labels)
                if (value := _measured_processor(runs[label])) is not None]
    for j, (i, value) in enumerate(measured):
        total_ax.plot([i - 0.35, i + 0.35], [value, value], color="black", linestyle="--",
                      label="measured processor rails (device.json)" if j == 0 else None)
    top = max(float(band.max()), max((v for _, v in measured), default=0.0))
    for i, value in enumerate(static + dynamic):
        total_ax.annotate(f"{value:.3g} mW", (i, band[i, 1]), ha="center", va="bottom", fontsize=9)
    total_ax.set_ylim(0, top * 1.4 or 1.0)
    total_ax.set_title("processor total = static + dynamic")
    total_ax.set_ylabel("estimated processor power (mW)")
    bottom = np.zeros(len(labels))
    for key, name, colour in terms:
        values = np.array([p["dynamic_terms_mw"][key] for p in power], dtype=float)
        if not values.any():
            continue
        dynamic_ax.bar(x, values, 0.6, bottom=bottom, label=name, color=colour)
        bottom += values
    dynamic_band = band - static[:, None]
    dynamic_ax.errorbar(x, dynamic, yerr=_spans(dynamic, dynamic_band), fmt="none", ecolor="black",
                        capsize=6, label="band")
    for i, value in enumerate(dynamic):
        dynamic_ax.annotate(f"{value:.3g} mW", (i, dynamic_band[i, 1]), ha="center", va="bottom",
                            fontsize=9)
    dynamic_ax.set_ylim(0, float(dynamic_band.max()) * 1.4 or 1.0)
    dynamic_ax.set_title("dynamic terms only")
    dynamic_ax.set_ylabel("estimated dynamic power (mW)")
    for ax in (total_ax, dynamic_ax):
        ax.set_xticks(x, labels)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("Estimated chip power (hw_config power model)")
    return fig


def _spans(value: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Error-bar lengths below and above ``value`` (clipped at 0: value and band differ by an ulp)."""
    return np.clip(np.stack([value - band[:, 0], band[:, 1] - value]), 0.0, None)


def _measured_processor(run: dict) -> float | None:
    """The measured power of the processor's rails (device.json), where all were measured."""
    rows = (run.get("measured") or {}).get("side_by_side") or []
    return next((r["measured_mw"] for r in rows if r["rail"].startswith("processor")), None)


def report_plots(report: dict) -> list[Image]:
    runs = report["runs"]
    plots = [
        ("per_core_synops", plot_per_core(runs, "synops_per_window", "SynOps / window",
                                          "Synaptic operations per core per window"),
         "SynOps (effective ACs, zero weights included) per core per window, chip simulator"),
        ("per_core_spikes", plot_per_core(runs, "spikes_per_window", "spikes / window",
                                          "Output spikes per core per window"),
         "Spikes per core per window, chip simulator"),
        ("power_split", plot_power_split(runs),
         "Estimated power split into static (resting) and dynamic terms"),
    ]
    return [Image(caption=caption, png=_png(fig), name=name, half=name != "power_split")
            for name, fig, caption in plots if fig is not None]


# ---- the document --------------------------------------------------------------------------------------

def _code(text: str) -> str:
    return f"`{text}`"


def _overview(report: dict) -> list[Block]:
    runs = report["runs"]
    rows = []
    for label, run in runs.items():
        data = run["data"]
        fs = data["frame_spec"]
        rows.append([label, _code(run["run_dir"]), run["attention"], run["model"] or NA,
                     data["spec"] or NA, run["chip"] or NA, str(data["time_steps"]),
                     num(fs["dt_us"] / 1000), num(data["window_s"] * 1000)])
    blocks: list[Block] = [
        Heading(1, "ASA deployment report"),
        Para(f"Generated {report['generated']}. Simulator engine: "
             f"{report['engine_requested'] or 'exact where sim.json has it, else fast'}."),
        Table(["run", "directory", "attention", "model", "data", "chip", "T (steps)",
               "step dt (ms)", "window (ms)"], rows,
              numeric=[False] * 6 + [True] * 3),
    ]
    comparison = report.get("comparison")
    if comparison:
        base = comparison["baseline"]
        others = [label for label in comparison["labels"] if label != base]
        headers = ["metric", *comparison["labels"], *[f"{o} / {base}" for o in others]]
        rows = []
        for row in comparison["rows"]:
            fmt = pct if "accuracy" in row["key"] or row["key"] == "activation_sparsity" else num
            title = row["title"] + (" (%)" if fmt is pct else "")
            rows.append([title, *[fmt(row["values"][label]) for label in comparison["labels"]],
                         *[ratio(row["ratios"][o]) for o in others]])
        blocks += [Heading(2, "Comparison", "comparison"),
                   Para(f"Each run side by side; ratios are relative to {base}. Chip figures are "
                        "per window (one window = one inference) on the chip simulator."),
                   Table(headers, rows, numeric=[False] + [True] * (len(headers) - 1))]
        blocks += [Para(f"Not like for like: {w}.", "warn") for w in comparison.get("warnings", [])]
    else:
        blocks.append(Heading(2, "Chip activity and power", "overview"))
    return blocks


def _missing(run: dict) -> list[Block]:
    blocks: list[Block] = []
    if run["missing"] or run["problems"]:
        items = []
        for m in run["missing"]:
            if not m["command"].startswith("asa-deploy"):
                items.append(f"{m['artifact']} missing: {m['command']} ({m['effect']})")
                continue
            alt = f" or {_code(m['alternative'])}" if m.get("alternative") else ""
            items.append(f"{m['artifact']} missing: run {_code(m['command'])}{alt} ({m['effect']})")
        items += [f"{p['artifact']} {p['problem']}: rerun {_code(p['command'])}"
                  for p in run["problems"]]
        blocks += [Heading(3, "Missing artifacts"), Items(items)]
    for warning in run.get("warnings", []):
        blocks.append(Para(warning, "warn"))
    for note in run["notes"]:
        blocks.append(Para(note, "warn"))
    return blocks


def _accuracy(run: dict) -> list[Block]:
    rows = []
    f = run["accuracy"]["float"]
    if f["source"]:
        rows.append(["float network (trained)", f["source"], f.get("data") or NA,
                     count(f["windows_per_recording"]) if f.get("windows_per_recording") else NA,
                     pct(f["accuracy_window"]), pct(f["accuracy_recording"]), NA])
    c = run["accuracy"]["chip"]
    if c:
        rows.append(["chip simulator (quantized)", c["source"], c.get("data") or NA,
                     count(c["windows_per_recording"]) if c.get("windows_per_recording") else NA,
                     pct(c["accuracy_window"]), pct(c["accuracy_recording"]),
                     count(c["n_windows"]) if c["n_windows"] else NA])
    blocks: list[Block] = [Heading(3, "Accuracy")]
    if rows:
        blocks.append(Table(["network", "source", "data", "windows per recording",
                             "accuracy per window (%)", "accuracy per recording (%)",
                             "windows"], rows,
                            numeric=[False, False, False, True, True, True, True]))
        blocks.append(Para("A window's class is the output channel with the most spikes; a silent "
                           "window is wrong. A recording is correct when more than half of its "
                           "windows are.", "note"))
    nasfr = run["nasfr"]
    if nasfr["value"] is not None:
        others = [f"{num(v, 4)} ({s})" for s, v in nasfr["by_source"].items() if s != nasfr["source"]]
        text = (f"NASFR (float network, spikes / neuron / step): {num(nasfr['value'], 4)} "
                f"(from {nasfr['source']})")
        if others:
            text += "; also " + "; ".join(others)
        blocks.append(Para(text + "."))
    return blocks


def _activity(run: dict) -> list[Block]:
    act, sim = run["activity"], run["simulation"]
    if not act:
        return []
    rows = []
    for c in act["cores"]:
        rows.append([str(c["core"]), c["layer"] or NA, count(c["neurons"]),
                     num(c["spikes_per_window"]), num(c["synops_per_window"]),
                     num(c.get("input_synops_per_window")), num(c.get("network_synops_per_window")),
                     num(c["spikes_per_s"]), num(c["synops_per_s"]),
                     pct(c["activation_sparsity"]), pct(c["connection_sparsity"]),
                     count(c["footprint_bytes"])])
    total_fp = ((run["neurobench"] or {}).get("footprint_bytes") or {}).get("total")
    rows.append(["all", "", count(act["neurons"]), num(act["spikes_per_window"]),
                 num(act["synops_per_window"]), num(act.get("input_synops_per_window")),
                 num(act.get("network_synops_per_window")), num(act["spikes_per_s"]),
                 num(act["synops_per_s"]),
                 pct(act["activation_sparsity"]), pct(run["neurobench"]["connection_sparsity"]
                                                      if run["neurobench"] else None),
                 count(total_fp)])
    windows = f", {count(sim['n_windows'])} windows" if sim.get("n_windows") else ""
    events = act["input_events_per_window"]
    extra = f" Input events per window: {num(events)}" if events is not None else ""
    if sim.get("dropped_events_per_window") is not None:
        extra += f" ({num(sim['dropped_events_per_window'])} dropped by the DVS layer)."
    elif extra:
        extra += "."
    return [
        Heading(3, "Chip activity per core"),
        Para(f"Source: {sim['source']}{windows}; data: {sim.get('data') or NA}. Mean per window "
             f"(window = {num(act['window_s'] * 1000)} ms on average); rates = per window / window "
             f"duration.{extra}"),
        Table(["core", "layer", "neurons", "spikes / window", "SynOps / window",
               "input-driven SynOps / window", "network-driven SynOps / window", "spikes / s",
               "SynOps / s", "activation sparsity (%)", "connection sparsity (%)",
               "footprint (bytes)"], rows, numeric=[False, False] + [True] * 10),
        Para("Input-driven SynOps are caused by events entering the chip (the DVS layer or the "
             "host); whatever the network learns, each costs the input core's channels x kernel "
             "offsets. Network-driven SynOps are caused by other cores' spikes.", "note"),
        Para(act["bandwidth_note"], "note"),
    ]


def _neurobench(run: dict) -> list[Block]:
    nb = run["neurobench"]
    if not nb:
        return []
    fp = nb["footprint_bytes"] or {}
    rows = [
        ["effective ACs (SynOps / inference)", num(nb["effective_acs_per_inference"]),
         "chip SynOps, zero weights included"],
        ["effective MACs / inference", num(nb["effective_macs_per_inference"]),
         "spiking cores only accumulate"],
        ["activation sparsity (%)", pct(nb["activation_sparsity"]),
         "1 - spikes / (neurons x time steps)"],
        ["connection sparsity (%)", pct(nb["connection_sparsity"]), "share of zero int8 weights"],
        ["footprint (bytes)", count(fp.get("total")),
         f"weights {count(fp.get('weights'))} + biases {count(fp.get('biases'))} + "
         f"states {count(fp.get('states'))}" if fp else NA],
        ["parameters (weights)", count(nb["parameters"]), "on the chip"],
    ]
    return [Heading(3, "NeuroBench metrics (per inference = one window)"),
            Table(["metric", "value", "how"], rows, numeric=[False, True, False]),
            Para(nb["notes"]["effective_acs"], "note")]


def _power(run: dict) -> list[Block]:
    p = run["power"]
    if not p:
        return []
    m, r, t, w = p["model"], p["rates"], p["dynamic_terms_mw"], p["window_s"] * 1e3
    rails = m["processor_rails"]
    processor = f"processor ({' + '.join(rails)})" if rails else "processor"
    rows = [
        [f"static: {processor} resting", num(p["static_mw"], 4), "", num(p["static_mw"] * w, 4),
         f"resting_mw = {m['resting_mw']}"],
        ["dynamic: spikes", num(t["spikes"], 4),
         _band([e * r["spikes_per_s"] * 1e-6 for e in (m["energy_per_spike_low_nj"],
                                                       m["energy_per_spike_high_nj"])]),
         num(t["spikes"] * w, 4),
         f"{m['energy_per_spike_nj']} nJ (band {m['energy_per_spike_low_nj']}.."
         f"{m['energy_per_spike_high_nj']}) x {num(r['spikes_per_s'])} spikes/s"],
        ["dynamic: SynOps", num(t["synops"], 4), "", num(t["synops"] * w, 4),
         f"{m['energy_per_synop_nj']} nJ x {num(r['synops_per_s'])} SynOps/s"],
        ["dynamic: input events", num(t["input_events"], 4), "", num(t["input_events"] * w, 4),
         f"{m['energy_per_input_event_nj']} nJ x {num(r['input_events_per_s'])} events/s"],
        ["dynamic (total)", num(p["dynamic_mw"], 4), _band(p["dynamic_band_mw"]),
         num(p["dynamic_energy_per_inference_uj"], 4), "P - resting"],
        [f"{processor} total", num(p["total_mw"], 4), _band(p["band_mw"]),
         num(p["energy_per_inference_uj"], 4),
         f"energy / inference = P x {num(w)} ms (band {_band(p['energy_band_uj'])} uJ)"],
    ]
    devkit = p.get("devkit")
    if devkit:
        rows += [
            [f"other rails at idle ({' + '.join(devkit['other_rails'])})",
             num(devkit["other_rails_idle_mw"], 4), "", num(devkit["other_rails_idle_mw"] * w, 4),
             "idle_rail_mw"],
            ["dev kit total (all rails)", num(devkit["total_mw"], 4), _band(devkit["band_mw"]),
             num(devkit["energy_per_inference_uj"], 4),
             f"processor + other rails (band {_band(devkit['energy_band_uj'])} uJ)"],
        ]
    blocks: list[Block] = [
        Heading(3, "Estimated power and energy"),
        Table(["term", "power (mW)", "band (mW)", "energy / inference (uJ)", "from"], rows,
              numeric=[False, True, True, True, False]),
        Para(f"Band: the power at the lowest and the highest energy per spike of the hw_config "
             f"({m['energy_per_spike_low_nj']}..{m['energy_per_spike_high_nj']} nJ, the spread of "
             f"the operating points it was fitted to); the central value uses "
             f"{m['energy_per_spike_nj']} nJ.", "note"),
    ]
    if m["idle_rail_mw"]:
        idle_rows = [[rail, num(mw, 4), "processor" if rail in rails else "dev kit"]
                     for rail, mw in m["idle_rail_mw"].items()]
        idle_rows.append(["all rails", num(sum(m["idle_rail_mw"].values()), 4), ""])
        blocks.append(Table(["rail", "idle power (mW)", "counted in"], idle_rows,
                            numeric=[False, True, False], caption="Measured idle power per rail"))
    else:
        blocks.append(Para("No per-rail idle power for this chip, so no dev-kit total: "
                           f"{p['sources']['idle_rails_source']}", "warn"))
    blocks.append(Para(f"Power model of {p['chip']} ({_code(p['hw_config'])}), sources quoted "
                       "verbatim:"))
    for key in ("resting_source", "idle_rails_source", "dynamic_source"):
        blocks.append(Para(f"{key}: \"{p['sources'][key]}\"", "quote"))
    for tag, text in p["sources"]["tags"].items():
        blocks.append(Para(f"{tag}: \"{text}\"", "quote"))
    for note in p["notes"]:
        blocks.append(Para(note, "warn"))
    return blocks


def _band(values: list | None, digits: int = 4) -> str:
    return "" if values is None else f"{num(values[0], digits)}..{num(values[1], digits)}"


def _measured(run: dict) -> list[Block]:
    m = run["measured"]
    if not m:
        return []
    if "error" in m:
        return [Heading(3, "Measured power (device.json)"), Para(m["error"], "warn")]
    text = (f"Energy per inference at the measured power (all rails of device.json, "
            f"{num(m['total_mw'], 4)} mW): {num(m['energy_per_inference_uj'], 4)} uJ.")
    if m["estimate_over_measured"] is not None:
        text += f" Dev-kit estimate / measured: {ratio(m['estimate_over_measured'])}."
    rows = [[row["rail"], num(row["model_mw"], 4), _band(row["band_mw"]),
             num(row["measured_mw"], 4), ratio(row["measured_over_model"]), row["model"]]
            for row in m["side_by_side"]]
    blocks: list[Block] = [Heading(3, "Measured power (device.json) beside the model")]
    if rows:
        blocks.append(Table(["rail", "model (mW)", "model band (mW)", "measured (mW)",
                             "measured / model", "model term"], rows,
                            numeric=[False, True, True, True, True, False]))
    else:
        blocks.append(Table(["rail", "measured (mW)"],
                            [[rail, num(mw, 4)] for rail, mw in m["rails_mw"].items()],
                            numeric=[False, True]))
    blocks += [Para(note, "note") for note in m["side_by_side_notes"]]
    blocks.append(Para(text))
    return blocks


def _ladder(run: dict) -> list[Block]:
    fold = run["fold"]
    if not fold:
        return []
    T = run["data"]["time_steps"]
    rows = []
    for row in fold["ladder"]:
        if "spikes_per_window" in row:
            spikes = num(row["spikes_per_window"])
        elif row.get("spikes_per_window_per_step") is not None:
            spikes = num(row["spikes_per_window_per_step"] * T) + " *"
        else:
            spikes = NA
        rows.append([row["step"], pct(row.get("accuracy_window")), pct(row.get("accuracy_recording")),
                     num(row.get("nasfr"), 4), spikes, num(row.get("synops_per_window")),
                     num(row.get("input_synops_per_window"))])
    blocks: list[Block] = [
        Heading(3, f"Fidelity ladder (fold.json, {fold['chip']})"),
        Table(["step", "accuracy per window (%)", "accuracy per recording (%)",
               "NASFR (spikes / neuron / step)", "spikes / window", "SynOps / window",
               "of which input-driven"], rows, numeric=[False] + [True] * 6),
        Para(f"* float rows: spikes per step x T ({T}); simulator rows count the chip cores' "
             "spikes. NASFR is defined for the float rows only.", "note"),
    ]
    if fold["strategies"]:
        srows = [[name + (" (chosen)" if name == fold["strategy"] else ""),
                  pct(s["accuracy_window"]), pct(s["accuracy_recording"]), num(s["nasfr"], 4)]
                 for name, s in fold["strategies"].items()]
        blocks += [Para(f"Lowering strategies tried on {fold['chip']}; the most accurate (then the "
                        "sparsest) is used:"),
                   Table(["strategy", "accuracy per window (%)", "accuracy per recording (%)",
                          "NASFR"], srows, numeric=[False, True, True, True])]
    return blocks


def _mapping(run: dict) -> list[Block]:
    mp = run["mapping"]
    if not mp:
        return []
    rows = [[str(c["core"]), c["layer"],
             f"{c['kernel_used']:,} / {c['kernel_available']:,}",
             f"{c['neuron_used']:,} / {c['neuron_available']:,}",
             f"{c['bias_used']:,} / {c['bias_available']:,}"] for c in mp["cores"]]
    blocks: list[Block] = [
        Heading(3, "Core mapping (mapping.json)"),
        Table(["core", "layer", "kernel memory used / available (8-bit words)",
               "neuron memory used / available (16-bit words)", "bias memory used / available"],
              rows, numeric=[False, False, True, True, True]),
    ]
    if mp["free_cores"]:
        blocks.append(Para(f"Free cores: {', '.join(map(str, mp['free_cores']))}."))
    if mp["graph"]:
        grows = [[edge["from"], NA if edge["from_core"] is None else str(edge["from_core"]),
                  edge["to"], str(edge["to_core"]), str(edge["pooling"]), str(edge["feature_shift"])]
                 for edge in mp["graph"]]
        blocks.append(Table(["from", "from core", "to", "to core", "sum pooling",
                             "feature shift (first input channel)"], grows,
                            numeric=[False, True, False, True, True, True],
                            caption="Connections (the network branches and merges)"))
    if mp["quantization"]:
        qrows = [[name, num(q["scale"]), q["limited_by"] or NA, pct(q["relative_weight_error"]),
                  f"{count(q['weights_zeroed'])} / {count(q['weights_total'])}",
                  count(q["weights_clipped"]),
                  f"{q['threshold_high']} / {q['threshold_low']}"]
                 for name, q in mp["quantization"].items()]
        blocks.append(Table(["layer", "scale (int units / float unit)", "scale limited by",
                             "relative weight error (%)", "weights rounded to 0 / total",
                             "weights clipped", "threshold high / low"], qrows,
                            numeric=[False, True, False, True, True, True, True],
                            caption="Quantization"))
    return blocks


def _layers(run: dict) -> list[Block]:
    layers = run["layers"]
    if not layers:
        return []
    rows = [[name, layer.get("kind") or NA, count(layer.get("neurons")), num(layer.get("sfr"), 4),
             num(layer.get("qe"), 4)] for name, layer in layers.items()]
    return [Heading(3, "Float network per layer (analysis.json)"),
            Table(["layer", "kind", "neurons", "SFR (spikes / neuron / step)", "QE"], rows,
                  numeric=[False, False, True, True, True])]


def _run_section(label: str, run: dict) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Run: {label}", f"run-{re.sub(r'[^a-zA-Z0-9]+', '-', label)}"),
                           Para(f"{_code(run['run_dir'])}: attention {run['attention']}, model "
                                f"{run['model']}, chip {run['chip'] or NA}.")]
    for part in (_missing, _accuracy, _activity, _neurobench, _power, _measured, _ladder, _mapping,
                 _layers):
        blocks += part(run)
    fold_maps = (run["fold"] or {}).get("fold_maps")
    if fold_maps:
        blocks += [Heading(3, "Calibrated attention maps (fold_maps.png)"),
                   Image(caption=f"{label}: calibrated attention maps folded into the chip",
                         path=fold_maps)]
    return blocks


def _analysis_figures(report: dict) -> list[Block]:
    shown: dict[str, list[str]] = {}
    for label, run in report["runs"].items():
        for path in run["figures"].values():
            shown.setdefault(path, []).append(label)
    if not shown:
        return []
    blocks: list[Block] = [Heading(2, "Analysis figures (the paper's)", "figures")]
    folders: dict[str, list[tuple[str, list[str]]]] = {}
    for path, labels in shown.items():
        folders.setdefault(str(Path(path).parent), []).append((path, labels))
    for folder, items in folders.items():
        labels = sorted({label for _, ls in items for label in ls})
        blocks.append(Para(f"From {_code(folder)} (drawn by `asa-deploy analyze`; found for "
                           f"{', '.join(labels)}; each figure draws the analyzed runs side by side)."))
        order = {name: i for i, name in enumerate(ANALYSIS_FIGURES)}
        for path, _ in sorted(items, key=lambda item: order.get(Path(item[0]).stem, 99)):
            stem = Path(path).stem
            blocks.append(Image(caption=ANALYSIS_FIGURES.get(stem, stem), path=path))
    return blocks


def _sources(report: dict) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Power model sources and definitions", "sources")]
    for chip, src in report["power_model_sources"].items():
        m = src["model"]
        rails = ", ".join(f"{rail} {num(mw, 4)} mW" for rail, mw in m["idle_rail_mw"].items())
        blocks += [Para(f"{chip} ({_code(src['hw_config'])}): processor resting {m['resting_mw']} mW "
                        f"({' + '.join(m['processor_rails']) or 'no measured rails'}), energy per "
                        f"spike {m['energy_per_spike_nj']} nJ (band {m['energy_per_spike_low_nj']}.."
                        f"{m['energy_per_spike_high_nj']} nJ); idle rails: {rails or 'none known'}. "
                        f"[power] section, verbatim:"),
                   Items([f"resting_source: \"{src['resting_source']}\"",
                          f"idle_rails_source: \"{src['idle_rails_source']}\"",
                          f"dynamic_source: \"{src['dynamic_source']}\"",
                          *[f"{tag}: \"{text}\"" for tag, text in src["tags"].items()]])]
    if not report["power_model_sources"]:
        blocks.append(Para("No power estimate in this report (no simulator results or no chip).",
                           "warn"))
    blocks.append(Items(list(report["definitions"].values())))
    return blocks


def document(report: dict) -> list[Block]:
    blocks = _overview(report)
    blocks += report_plots(report)
    for label, run in report["runs"].items():
        blocks += _run_section(label, run)
    blocks += _analysis_figures(report)
    blocks += _sources(report)
    return blocks


# ---- Markdown --------------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], *, out_dir: Path, image_links: dict[str, str]) -> str:
    """``image_links``: {name: path relative to ``out_dir``} of the PNGs written for ``Image.png``."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            prefix = {"quote": "> ", "note": "> Note: ", "warn": "> **Warning:** "}.get(block.kind, "")
            lines += [prefix + block.text, ""]
        elif isinstance(block, Items):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"**{block.caption}**", ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            aligns = [("---:" if (block.numeric[i] if i < len(block.numeric) else False) else "---")
                      for i in range(len(block.headers))]
            lines.append("| " + " | ".join(aligns) + " |")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            if block.path:
                link = Path(os.path.relpath(block.path, out_dir)).as_posix()
            else:
                link = image_links[block.name]
            lines += [f"![{block.caption}]({link})", "", f"*{block.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML ------------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       background: #ffffff; margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 28px; margin: 8px 0 4px; border-bottom: 3px solid #2f6fad; padding-bottom: 6px; }
h2 { font-size: 22px; margin: 36px 0 8px; padding: 6px 10px; background: #eef3f8;
     border-left: 5px solid #2f6fad; }
h3 { font-size: 17px; margin: 22px 0 6px; color: #2a4d6e; }
p { margin: 6px 0 10px; }
code { font-family: "SFMono-Regular", Consolas, "Liberation Mono", monospace; font-size: 13px;
       background: #f2f2f4; padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #c9ced6; padding: 4px 8px; vertical-align: top; }
th { background: #f4f6f9; text-align: left; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
.table-wrap { overflow-x: auto; }
blockquote { margin: 4px 0 8px; padding: 4px 12px; border-left: 4px solid #9aa5b1;
             background: #f7f7f9; font-style: italic; }
.note { color: #4a5560; font-size: 13.5px; }
.warn { background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
figure { margin: 12px 0 20px; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.gallery figure { flex: 1 1 440px; max-width: calc(50% - 8px); margin: 12px 0 8px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
figcaption { font-size: 13px; color: #4a5560; margin-top: 4px; }
nav { font-size: 14px; margin: 6px 0 12px; }
nav a { margin-right: 14px; color: #2f6fad; }
ul { margin: 4px 0 12px; padding-left: 22px; }
li { margin: 2px 0; }
"""


def _inline(text: str) -> str:
    """Escape, then turn `spans` into <code>."""
    parts = text.split("`")
    return "".join(html.escape(part) if i % 2 == 0 else f"<code>{html.escape(part)}</code>"
                   for i, part in enumerate(parts))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_block(block: Block, nav: str) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
        out = f"<h{block.level}{anchor}>{_inline(block.text)}</h{block.level}>"
        return out + nav if block.level == 1 else out
    if isinstance(block, Para):
        if block.kind == "quote":
            return f"<blockquote>{_inline(block.text)}</blockquote>"
        if block.kind in ("note", "warn"):
            return f'<p class="{block.kind}">{_inline(block.text)}</p>'
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Items):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        numeric = block.numeric + [False] * (len(block.headers) - len(block.numeric))
        head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
        rows = "".join(
            "<tr>" + "".join(f'<td{" class=n" if numeric[i] else ""}>{_inline(c)}</td>'
                             for i, c in enumerate(row)) + "</tr>"
            for row in block.rows)
        caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
        return (f'<div class="table-wrap"><table>{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{rows}</tbody></table></div>")
    png = block.png if block.png is not None else Path(block.path).read_bytes()
    return (f'<figure><img src="{_data_uri(png)}" alt="{html.escape(block.caption)}">'
            f"<figcaption>{_inline(block.caption)}</figcaption></figure>")


def render_html(blocks: list[Block], *, title: str = "ASA deployment report") -> str:
    """One self-contained page: inline CSS, images as data URIs, links only to its own anchors."""
    anchors = [(b.anchor, b.text) for b in blocks if isinstance(b, Heading) and b.anchor]
    nav = ("<nav>" + "".join(f'<a href="#{html.escape(a)}">{html.escape(t)}</a>' for a, t in anchors)
           + "</nav>") if anchors else ""
    body: list[str] = []
    gallery: list[str] = []
    for block in blocks:
        if isinstance(block, Image) and block.half:
            gallery.append(_html_block(block, nav))
            continue
        if gallery:
            body.append('<div class="gallery">' + "".join(gallery) + "</div>")
            gallery = []
        body.append(_html_block(block, nav))
    if gallery:
        body.append('<div class="gallery">' + "".join(gallery) + "</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")
