"""Redundancy analysis of spiking networks: firing rates (N/C/T-SFR, NASFR), spike and ghost
features, membrane potential distributions (MPD, PTD), quantization error, and figures."""

from asa_deploy.analysis.collect import LayerRecord, LayerRecords, collect
from asa_deploy.analysis.figures import plot_comparison
from asa_deploy.analysis.metrics import (
    GhostReport,
    MPDHistogram,
    c_sfr,
    ghost_features,
    layer_sfr,
    mpd_edges,
    mpd_histogram,
    mpd_moments,
    mpd_variance,
    n_sfr,
    network_t_sfr,
    ptd,
    qe,
    spike_features,
    t_sfr,
    variance_from_moments,
)
from asa_deploy.analysis.report import analyze, summarize, write_analysis
from asa_deploy.metrics import nasfr

__all__ = [
    "GhostReport",
    "LayerRecord",
    "LayerRecords",
    "MPDHistogram",
    "analyze",
    "c_sfr",
    "collect",
    "ghost_features",
    "layer_sfr",
    "mpd_edges",
    "mpd_histogram",
    "mpd_moments",
    "mpd_variance",
    "n_sfr",
    "nasfr",
    "network_t_sfr",
    "plot_comparison",
    "ptd",
    "qe",
    "spike_features",
    "summarize",
    "t_sfr",
    "variance_from_moments",
    "write_analysis",
]
