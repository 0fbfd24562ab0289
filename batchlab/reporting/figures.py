"""The plotting toolkit every report figure is drawn with: one style, one way to make a PNG.

Figures are built with matplotlib's object API (Figure, drawn by Agg when saved as PNG), never
pyplot: no backend is chosen, nothing global is touched, and a figure is freed once drawn.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, NullLocator

from batchlab.reporting.load import SweepRecords
from batchlab.reporting.tables import Tables

NOTHING_REACHED = "no batch size reached the target"
MAX_POINTS = 400  # points per curve after merging seeds: enough for the eye, bounded cost
DPI = 110
WIDE = (15.0, 4.6)  # inches: three panels
PAIR = (12.0, 4.6)  # two panels
SINGLE = (11.0, 5.2)  # one panel with a legend beside it
FIT_COLOR = "firebrick"  # anything fitted (the frontier, B_crit), never a batch size's colour


@dataclass
class Plot:
    filename: str
    title: str
    png: bytes
    # What the figure shows beyond its data, e.g. "frontier fit: drawn"; also in the PNG's
    # Description text chunk, so a reader (or a test) can tell without looking.
    description: str = ""


@dataclass
class Style:
    """One colour and one legend label per batch size, shared by every figure."""

    colors: dict[int, tuple]
    labels: dict[int, str]

    @property
    def sizes(self) -> list[int]:
        return sorted(self.colors)

    def handles(self) -> list[Line2D]:
        return [Line2D([], [], color=self.colors[bs], lw=2.5, marker="o", ms=5, label=self.labels[bs])
                for bs in self.colors]


def batch_style(rec: SweepRecords, tables: Tables) -> Style:
    """Colours on a log2 scale of the batch sizes tried; labels name the plotted lr."""
    sizes = sorted(int(b) for b in rec.trials["batch_size"].unique())
    logs = np.log2(sizes)
    norm = Normalize(vmin=logs.min(), vmax=logs.max() if logs.max() > logs.min() else logs.min() + 1)
    cmap = colormaps["viridis"]
    # 0.88: viridis minus its pale yellow end, which is hard to see on white.
    colors = {bs: cmap(0.88 * norm(lg)) for bs, lg in zip(sizes, logs)}
    labels = {}
    for bs in sizes:
        choice = tables.plotted.get(bs)
        labels[bs] = f"bs {bs}" + (f"  (lr {choice.lr:g})" if choice else "")
    return Style(colors, labels)


def figure(size: tuple[float, float], panels: int, title: str, style: Style | None):
    """A figure of `panels` axes side by side, with the batch-size legend on the right."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    fig.suptitle(title, fontsize=13)
    if style is not None:
        fig.legend(handles=style.handles(), loc="outside right upper", title="batch size", fontsize=9)
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def png(fig: Figure, description: str = "") -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Description": description} if description else None)
    return buffer.getvalue()


def say(ax, text: str) -> None:
    """A message on the axes where data is missing, so an empty panel is never mistaken for zero."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12,
            color="0.3", bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"})


def short(x: float) -> str:
    """A number for a legend: 1,234 or 0.123."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def curve(frames: list[pd.DataFrame], x: str, y: str, positive: bool):
    """Median and min/max over seeds of y(x). Seeds are interpolated onto the union of their x
    values (capped at MAX_POINTS); outside a seed's own range it does not count.
    Returns (grid, median, low, high, seeds), or None when no seed has a finite point."""
    pairs = []
    for frame in frames:
        data = frame[[x, y]].to_numpy(dtype=float)
        keep = np.isfinite(data).all(axis=1) & ((data[:, 1] > 0) if positive else True)
        data = data[keep]
        if len(data):
            xs, first = np.unique(data[:, 0], return_index=True)  # sorted, duplicates dropped
            pairs.append((xs, data[first, 1]))
    if not pairs:
        return None
    grid = np.unique(np.concatenate([xs for xs, _ in pairs]))
    if len(grid) > MAX_POINTS:
        grid = grid[np.linspace(0, len(grid) - 1, MAX_POINTS).round().astype(int)]
    values = np.full((len(pairs), len(grid)), np.nan)
    for i, (xs, ys) in enumerate(pairs):
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        values[i, inside] = np.interp(grid[inside], xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are expected at the ends
        return grid, np.nanmedian(values, 0), np.nanmin(values, 0), np.nanmax(values, 0), len(pairs)


class PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, written as 0.3 rather than 3e-01."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:,.0f}" if abs(x) >= 1000 and float(x).is_integer() else f"{x:g}"


def log_y(ax) -> None:
    """Log y axis labelled 0.3, 1, 2 rather than 3×10⁻¹."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no positive values": a target met at step 0
        ax.set_yscale("log")
    # LogFormatter labels minor ticks only when few decades are shown, so labels never crowd.
    ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def log_x(ax) -> None:
    """Log x axis, labelled like log_y."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def batch_axis(ax, sizes: list[int]) -> None:
    """log2 x axis with a tick at every batch size tried."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes], rotation=45 if len(sizes) > 8 else 0)
    ax.xaxis.set_minor_locator(NullLocator())
    # Fixed limits: every batch size tried has its place even when no point is drawn there.
    ax.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)
    ax.set_xlabel("batch size")
