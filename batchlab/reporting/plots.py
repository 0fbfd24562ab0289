"""The report's figures about the records themselves, as PNG bytes (drawn with figures.py).

Only the plotted setting of each batch size (its best lr) is drawn, so the cost does not grow
with the number of trials.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from batchlab.frontier import EFFICIENCY
from batchlab.reporting.display import target_text
from batchlab.reporting.figures import (FIT_COLOR, NOTHING_REACHED, PAIR, WIDE, Plot, Style, batch_axis,
                                        batch_style, curve, figure, log_y, png, say, short)
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.tables import REACHED, Tables

if TYPE_CHECKING:
    from batchlab.reporting.answer import Recommendation
    from batchlab.reporting.science import Science

HEADLINE = "headline.png"


def make_plots(rec: SweepRecords, tables: Tables, science: Science | None = None,
               answer: Recommendation | None = None) -> list[Plot]:
    """The figures about the records themselves, the headline figure first; with `science`, the
    steps plot also shows the frontier fit (science_plots draws the rest of the batch-size science)."""
    style = batch_style(rec, tables)
    metric = rec.target_metric
    steps_png, steps_note = _steps_to_target(rec, tables, style, science)
    headline_png, headline_note = _headline(rec, tables, style, answer)
    plots = [
        Plot(HEADLINE, "Time, steps and examples to the target vs batch size", headline_png, headline_note),
        Plot("train_loss.png", "Training loss of the best lr per batch size", _train_loss(rec, tables, style)),
        Plot(f"{metric}.png", f"{_metric_name(metric).capitalize()} of the best lr per batch size",
             _test_metric(rec, tables, style)),
        Plot("steps_to_target.png", "Steps and epochs to the target vs batch size", steps_png, steps_note),
        Plot("seconds_to_target.png", "Training seconds to the target and throughput vs batch size",
             _seconds_and_throughput(rec, tables, style)),
    ]
    if rec.config.get("dataset", {}).get("name") == "linear":
        plots.append(Plot("gd_modes.png", "Batch, stochastic and mini-batch gradient descent",
                          _gd_modes(rec, tables, style)))
    return plots


# --- shared pieces ---------------------------------------------------------------------------

def _metric_name(metric: str) -> str:
    return "test accuracy" if metric == "test_accuracy" else "test loss"


def _draw_curves(ax, rec: SweepRecords, tables: Tables, style: Style, x: str, y: str,
                 logy: bool, logx: bool = False) -> list[tuple]:
    drawn = []
    for bs, choice in sorted(tables.plotted.items()):
        frames = [rec.metrics[t] for t in choice.trial_ids]
        merged = curve(frames, x, y, positive=logy)
        if merged is None:
            continue
        grid, median, low, high, seeds = merged
        if logx:
            keep = grid > 0
            grid, median, low, high = grid[keep], median[keep], low[keep], high[keep]
        color = style.colors[bs]
        ax.plot(grid, median, color=color, lw=1.8)
        if seeds > 1:
            ax.fill_between(grid, low, high, color=color, alpha=0.18, lw=0)
        drawn.append((median, low, high))
    if logx:
        ax.set_xscale("log")
    if logy:
        log_y(ax)
    if drawn and y != "test_accuracy":  # accuracy is bounded: no divergence to hide
        _limit_y(ax, drawn, logy)
    return drawn


def _limit_y(ax, drawn: list[tuple], logy: bool) -> None:
    """Keep a diverging seed from flattening every other curve: the top is at most ten times
    the largest starting value."""
    highs = np.concatenate([h[np.isfinite(h)] for _, _, h in drawn])
    lows = np.concatenate([lo[np.isfinite(lo)] for _, lo, _ in drawn])
    starts = [m[np.isfinite(m)][0] for m, _, _ in drawn if np.isfinite(m).any()]
    if not len(highs) or not starts:
        return
    top = min(highs.max(), 10 * max(starts) if max(starts) > 0 else highs.max())
    bottom = lows.min()
    if logy:
        if bottom > 0 and top > bottom:
            ax.set_ylim(bottom / 1.3, top * 1.3)
    elif top > bottom:
        pad = 0.05 * (top - bottom)
        ax.set_ylim(bottom - pad, top + pad)


def _target_line(ax, rec: SweepRecords, target: float) -> None:
    low, high = ax.get_ylim()
    ax.axhline(target, color="black", ls="--", lw=1.2)
    if not low < target < high:  # the line must be seen even when no curve comes near it
        if rec.regression:
            ax.set_ylim(min(low, target / 1.5), max(high, target * 1.5))
        else:
            pad = 0.05 * (max(high, target) - min(low, target))
            ax.set_ylim(min(low, target - pad), max(high, target + pad))
    ax.annotate(f"target {target:g}", xy=(1, target), xycoords=("axes fraction", "data"),
                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom", fontsize=9)


def _no_curves(ax) -> None:
    say(ax, "no training curves recorded yet")


# --- figures ---------------------------------------------------------------------------------

def _train_loss(rec: SweepRecords, tables: Tables, style: Style) -> bytes:
    fig, axes = figure(WIDE, 3, "Training loss (best lr per batch size; line = median over seeds, "
                                 "band = min–max)", style)
    for ax, (x, label, logx) in zip(axes, [("epoch", "epoch", False), ("step", "step", True),
                                           ("train_seconds", "training seconds", False)]):
        drawn = _draw_curves(ax, rec, tables, style, x, "train_loss", logy=True, logx=logx)
        if not drawn:
            _no_curves(ax)
        ax.set_xlabel(label)
        ax.set_ylabel("training loss")
    return png(fig)


def _test_metric(rec: SweepRecords, tables: Tables, style: Style) -> bytes:
    metric = rec.target_metric
    name = _metric_name(metric)
    fig, axes = figure(PAIR, 2, f"{name.capitalize()} (best lr per batch size; dashed = target)", style)
    for ax, (x, label) in zip(axes, [("train_seconds", "training seconds"), ("epoch", "epoch")]):
        drawn = _draw_curves(ax, rec, tables, style, x, metric, logy=rec.regression)
        if not drawn:
            _no_curves(ax)
        _target_line(ax, rec, tables.target)
        ax.set_xlabel(label)
        ax.set_ylabel(name)
    return png(fig)


def _reached_points(tables: Tables) -> tuple[pd.DataFrame, list[int]]:
    rows = tables.headline_rows
    reached = rows[rows["status"] == REACHED].sort_values("batch_size")
    missed = [int(b) for b in rows.loc[rows["status"] != REACHED, "batch_size"]]
    return reached, missed


def _points(ax, style: Style, sizes, values) -> None:
    ax.plot(sizes, values, color="0.6", lw=1, zorder=1)
    ax.scatter(sizes, values, c=[style.colors[int(b)] for b in sizes], s=55, zorder=2,
               edgecolors="black", linewidths=0.5)


def _note_missed(ax, missed: list[int], reached_any: bool) -> None:
    if not reached_any:
        say(ax, NOTHING_REACHED)
    elif missed:
        # In the panel title, where it cannot hide a point.
        ax.set_title("not reached: bs " + ", ".join(map(str, missed)), fontsize=9, color="firebrick",
                     loc="left")


def _steps_to_target(rec: SweepRecords, tables: Tables, style: Style,
                     science: Science | None = None) -> tuple[bytes, str]:
    sizes = sorted(style.colors)
    fig, (steps_ax, epochs_ax) = figure(PAIR, 2, f"To {target_text(rec, tables.target)} (median over seeds "
                                                  "of the best lr)", style)
    reached, missed = _reached_points(tables)
    bs = reached["batch_size"].to_numpy(dtype=float)
    frontier = science.frontier if science is not None else None
    note = "frontier fit: not computed"
    if len(reached):
        _points(steps_ax, style, bs, reached["steps"])
        anchor_bs, anchor_steps = bs[0], float(reached["steps"].iloc[0])
        ref = np.array([s for s in sizes if s >= anchor_bs], dtype=float)
        steps_ax.plot(ref, anchor_steps * anchor_bs / ref, ls="--", color="black", lw=1,
                      label="perfect scaling (steps halve when the batch doubles)")
        if frontier is not None and frontier.fit is not None:
            f = frontier.fit
            train_size = float(rec.trials["train_size"].max())
            top = max(sizes) * 1.4 if not math.isfinite(train_size) else min(max(sizes) * 1.4, train_size)
            grid = np.geomspace(min(sizes) / 1.4, max(top, max(f.batch_sizes)), 200)  # a batch > data: full batch
            steps_ax.plot(grid, f.steps_at(grid), color=FIT_COLOR, lw=1.6,
                          label=f"fit S_min(1 + B_crit/B): S_min {short(f.s_min)}, B_crit {short(f.b_crit)}")
            if min(sizes) / 1.4 <= f.b_crit <= max(sizes) * 1.4:
                steps_ax.axvline(f.b_crit, color=FIT_COLOR, ls=":", lw=1, label="B_crit")
            note = f"frontier fit: drawn (B_crit {f.b_crit:.6g})"
        elif frontier is not None:
            steps_ax.text(0.02, 0.03, f"no frontier fit: {frontier.reason}", transform=steps_ax.transAxes,
                          fontsize=8.5, color="0.3", va="bottom")
            note = f"frontier fit: not drawn ({frontier.reason})"
        steps_ax.legend(loc="upper right", fontsize=8.5)
        log_y(steps_ax)
        _points(epochs_ax, style, bs, reached["epochs"])
    elif frontier is not None:
        note = f"frontier fit: not drawn ({frontier.reason})"
    for ax in (steps_ax, epochs_ax):
        batch_axis(ax, sizes)
        _note_missed(ax, missed, len(reached) > 0)
    steps_ax.set_ylabel("steps to target")
    epochs_ax.set_ylabel("epochs to target")
    return png(fig, note), note


def _headline(rec: SweepRecords, tables: Tables, style: Style,
              answer: Recommendation | None) -> tuple[bytes, str]:
    """Predicted seconds (what the answer decides by: steps x seconds per step, bars its 95% interval), steps
    and examples to the target against batch size, side by side: median over the best lr's seeds, bars from
    the fastest to the slowest seed, the chosen batch size marked, and a chosen schedule as a level line."""
    sizes = style.sizes
    fig, axes = figure(WIDE, 3, f"To {target_text(rec, tables.target)}, by batch size (best lr; median over "
                                "seeds, bars = min–max; seconds: 95% interval)", None)
    reached, missed = _reached_points(tables)
    chosen = answer.batch_size if answer is not None else None
    schedule = answer.schedule if answer is not None else None
    panels = [("predicted_seconds", "predicted seconds to target (steps × s/step)"), ("steps", "steps to target"),
              ("examples", "examples to target")]
    bounds = {"predicted_seconds": ("predicted_low", "predicted_high")}
    open_range = False
    for ax, (what, label) in zip(axes, panels):
        batch_axis(ax, sizes)
        ax.set_ylabel(label)
        _note_missed(ax, missed, len(reached) > 0)
        if reached.empty:
            continue
        bs = reached["batch_size"].to_numpy(dtype=float)
        median = reached[what].to_numpy(dtype=float)
        low, high = (reached[c].to_numpy(dtype=float) for c in bounds.get(what, (f"{what}_min", f"{what}_max")))
        if what in bounds:  # an interval unknown (no step cost) is no bar; only a seed's miss (inf) opens one
            low, high = np.where(np.isnan(low), median, low), np.where(np.isnan(high), median, high)
        ax.plot(bs, median, color="0.6", lw=1, zorder=1)
        finite = np.isfinite(high)
        # A seed that missed leaves the range open above: the bar stops at the median, a caret says so.
        ax.errorbar(bs, median, yerr=[median - low, np.where(finite, high, median) - median], fmt="none",
                    ecolor="0.35", elinewidth=1.2, capsize=3, zorder=2)
        ax.scatter(bs, median, c=[style.colors[int(b)] for b in bs], s=60, zorder=3, edgecolors="black",
                   linewidths=0.5)
        if not finite.all():
            open_range = True
            ax.scatter(bs[~finite], median[~finite] * 1.35, marker="^", s=40, color="0.35", zorder=3)
        if what == "steps":
            ax.plot(bs, median[0] * bs[0] / bs, ls="--", color="black", lw=1,
                    label="perfect scaling from the smallest")
        if what == "examples":
            ax.axhline(median[0] / EFFICIENCY, ls=":", color="black", lw=1,
                       label=f"{round((1 - EFFICIENCY) * 100)}% above the smallest's examples")
        if chosen in set(reached["batch_size"].astype(int)):
            value = float(reached.loc[reached["batch_size"] == chosen, what].iloc[0])
            ax.axvline(chosen, color="0.2", ls="-", lw=6, alpha=0.12, zorder=0)
            ax.scatter([chosen], [value], s=260, facecolors="none", edgecolors="black", linewidths=1.8, zorder=4,
                       label=f"chosen: batch size {chosen}")
            ax.annotate(f"bs {chosen}", (chosen, value), xytext=(8, -14), textcoords="offset points", fontsize=9)
        level = {"predicted_seconds": answer.predicted_seconds, "steps": answer.steps,
                 "examples": answer.examples}.get(what) if schedule else None
        if level is not None and math.isfinite(level):  # a schedule has no batch size to stand at: a level
            ax.axhline(level, color="firebrick", ls="--", lw=1.5, label=f"chosen: schedule {schedule}")
        log_y(ax)
        if ax.get_legend_handles_labels()[0]:  # none on the seconds panel when a schedule is chosen
            ax.legend(loc="best", fontsize=8)
    if open_range:
        axes[0].text(0.02, 0.03, "▲ a seed missed the target: range open above", transform=axes[0].transAxes,
                     fontsize=8.5, color="0.3", va="bottom")
    note = (f"chosen batch size: {chosen}" if chosen is not None else f"chosen schedule: {schedule}" if schedule
            else "chosen batch size: none (nothing reached)")
    return png(fig, note), note


def _seconds_and_throughput(rec: SweepRecords, tables: Tables, style: Style) -> bytes:
    sizes = sorted(style.colors)
    fig, (seconds_ax, speed_ax) = figure(PAIR, 2, f"Training seconds to {target_text(rec, tables.target)}; "
                                                   "throughput", style)
    reached, missed = _reached_points(tables)
    if len(reached):
        _points(seconds_ax, style, reached["batch_size"].to_numpy(dtype=float), reached["seconds"])
        log_y(seconds_ax)
    batch_axis(seconds_ax, sizes)
    _note_missed(seconds_ax, missed, len(reached) > 0)
    seconds_ax.set_ylabel("measured training seconds to target")

    rows = tables.headline_rows
    speed = rows[np.isfinite(rows["samples_per_second"]) & (rows["samples_per_second"] > 0)]
    if len(speed):
        _points(speed_ax, style, speed["batch_size"].to_numpy(dtype=float), speed["samples_per_second"])
        log_y(speed_ax)
    else:
        say(speed_ax, "no completed trial recorded its throughput")
    batch_axis(speed_ax, sizes)
    speed_ax.set_ylabel("samples per second (median of completed trials)")
    return png(fig)


def _gd_mode(bs: int, train_size: float) -> str:
    if bs == 1:
        return "stochastic GD (bs 1)"
    if math.isfinite(train_size) and bs >= train_size:
        return f"batch GD (bs {bs} = all {int(train_size)} examples)"
    return f"mini-batch GD (bs {bs})"


def _gd_modes(rec: SweepRecords, tables: Tables, style: Style) -> bytes:
    """Batch, stochastic and mini-batch GD on one plot (the linear regression data set)."""
    train_size = float(rec.trials["train_size"].median())
    fig, axes = figure(PAIR, 2, "Gradient descent modes on the linear data set (best lr each)", None)
    handles = []
    for bs, choice in sorted(tables.plotted.items()):
        handles.append(Line2D([], [], color=style.colors[bs], lw=2.5,
                              label=f"{_gd_mode(bs, train_size)}, lr {choice.lr:g}"))
    for ax, (x, label, logx) in zip(axes, [("epoch", "epoch", False), ("examples", "examples seen", True)]):
        if not _draw_curves(ax, rec, tables, style, x, "train_loss", logy=True, logx=logx):
            _no_curves(ax)
        ax.set_xlabel(label)
        ax.set_ylabel("training loss (MSE)")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=9)
    return png(fig)
