"""Figures: one module per stage, plus export (HTML always, PNG through a kept browser)."""

from __future__ import annotations

from probes.viz.export import browser_for_png, png_bytes, save_figure
from probes.viz.mediation import (
    plot_mediation,
)
from probes.viz.probing import (
    plot_layerwise,
    plot_overview,
    plot_reader_curves,
    plot_reading_vs_control,
    plot_transfer,
    plot_transfer_bars,
)
from probes.viz.steering import (
    plot_dose_response,
    plot_pareto,
    plot_patching,
)
from probes.viz.theme import FONT, PALETTE

__all__ = [
    "FONT",
    "PALETTE",
    "browser_for_png",
    "plot_dose_response",
    "plot_layerwise",
    "plot_mediation",
    "plot_overview",
    "plot_pareto",
    "plot_patching",
    "plot_reader_curves",
    "plot_reading_vs_control",
    "plot_transfer",
    "plot_transfer_bars",
    "png_bytes",
    "save_figure",
]
