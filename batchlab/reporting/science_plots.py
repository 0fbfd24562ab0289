"""The batch-size science figures (see science.py), drawn with figures.py like every report figure.

- frontier.png: examples vs steps to the target, with the fitted hyperbola and its asymptotes.
- noise_scale.png: B_simple over training against the batch sizes tried (only when measured).
- lr_vs_batch_size.png: the best lr per batch size, the lrs tried, and the lr rule's line.
- generalisation_gap.png: train-test gap over training and per batch size (only when recorded).

Each Plot's description (also in the PNG's Description chunk) says what was drawn, e.g.
"frontier fit: not drawn (2 batch sizes reached the target; a fit needs 3)".
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from batchlab.records import Status
from batchlab.reporting.display import target_text
from batchlab.reporting.figures import (FIT_COLOR, NOTHING_REACHED, PAIR, SINGLE, Plot, batch_axis, batch_style,
                                        curve, figure, log_x, log_y, png, say, short)
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.science import Science, rule_lr
from batchlab.reporting.tables import Tables


def make_science_plots(rec: SweepRecords, tables: Tables, science: Science) -> list[Plot]:
    style = batch_style(rec, tables)
    plots = []
    png, note = _frontier(rec, tables, science, style)
    plots.append(Plot("frontier.png", "Steps–examples frontier (McCandlish et al. 2018): examples vs steps to the "
                                     "target", png, note))
    if science.noise is not None:
        drawn = _noise(rec, tables, science, style)
        if drawn is not None:
            plots.append(Plot("noise_scale.png", "Gradient noise scale B_simple during training vs the batch "
                                                 "sizes tried", *drawn))
    png, note = _lr(rec, tables, science, style)
    plots.append(Plot("lr_vs_batch_size.png", "Best learning rate per batch size", png, note))
    if science.gap is not None:
        png, note = _gap(rec, tables, science, style)
        plots.append(Plot("generalisation_gap.png", "Generalisation gap (train subset vs test) per batch size",
                          png, note))
    return plots


def _frontier(rec: SweepRecords, tables: Tables, science: Science, style) -> tuple[bytes, str]:
    frontier = science.frontier
    fig, (ax,) = figure(SINGLE, 1, f"Examples vs steps to {target_text(rec, tables.target)} (best lr per batch size)",
                         style)
    points = frontier.points
    f = frontier.fit
    if points.empty:
        say(ax, NOTHING_REACHED)
        note = f"frontier fit: not drawn ({frontier.reason})"
        ax.set_xlabel("steps to target S")
        ax.set_ylabel("examples to target E = B·S")
        return png(fig, note), note
    steps, examples = points["steps"].to_numpy(float), points["examples"].to_numpy(float)
    low_s, high_s = steps.min(), steps.max()
    low_e, high_e = examples.min(), examples.max()
    if f is not None:
        used = np.asarray(f.batch_sizes, dtype=float)
        b = np.geomspace(used.min() / 200, used.max() * 200, 600)
        s = f.steps_at(b)
        ax.plot(s, b * s, color=FIT_COLOR, lw=1.8, zorder=2,
                label=f"fit: (S/S_min − 1)(E/E_min − 1) = 1,  R² {f.r2:.2f}")
        ax.axvline(f.s_min, color="0.35", ls="--", lw=1, label=f"S_min = {short(f.s_min)} steps (infinite batch)")
        ax.axhline(f.e_min, color="0.35", ls=":", lw=1.2, label=f"E_min = {short(f.e_min)} examples (batch of 1)")
        ax.scatter([2 * f.s_min], [2 * f.e_min], marker="D", s=140, facecolors="none", edgecolors=FIT_COLOR,
                   linewidths=1.6, zorder=4, label=f"B = B_crit ≈ {short(f.b_crit)}: 2 S_min, 2 E_min")
        # Asymptotes and the B_crit point widen the view only when they lie near the data (an
        # extrapolated fit would otherwise squash every measured point into a corner).
        if f.s_min >= low_s / 10 and 2 * f.s_min <= high_s * 10:
            low_s, high_s = min(low_s, f.s_min), max(high_s, 2 * f.s_min)
        if f.e_min >= low_e / 10 and 2 * f.e_min <= high_e * 10:
            low_e, high_e = min(low_e, f.e_min), max(high_e, 2 * f.e_min)
        note = f"frontier fit: drawn (S_min {f.s_min:.6g}, E_min {f.e_min:.6g}, B_crit {f.b_crit:.6g})"
    else:
        ax.text(0.02, 0.03, f"no frontier fit: {frontier.reason}", transform=ax.transAxes, fontsize=9,
                color="0.3", va="bottom")
        note = f"frontier fit: not drawn ({frontier.reason})"
    ax.plot(steps, examples, color="0.6", lw=1, zorder=1)
    ax.scatter(steps, examples, c=[style.colors[int(bs)] for bs in points["batch_size"]], s=60, zorder=3,
               edgecolors="black", linewidths=0.5)
    for bs, x, y in zip(points["batch_size"], steps, examples):
        ax.annotate(f"{int(bs)}", (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8, color="0.25")
    ax.set_xlim(low_s / 1.6, high_s * 1.6)
    ax.set_ylim(low_e / 1.6, high_e * 1.6)
    log_x(ax)
    log_y(ax)
    if f is not None:
        ax.legend(loc="upper right", fontsize=8.5)
    ax.set_xlabel("steps to target S (median over seeds)")
    ax.set_ylabel("examples to target E = B·S")
    return png(fig, note), note


def _noise(rec: SweepRecords, tables: Tables, science: Science, style) -> tuple[bytes, str] | None:
    """None when no best-lr trial has a finite B_simple: no empty plot."""
    curves = []
    for bs, choice in sorted(tables.plotted.items()):
        merged = curve([rec.metrics[t] for t in choice.trial_ids], "epoch", "noise_b_simple", positive=True)
        if merged is not None:
            curves.append((bs, merged))
    if not curves:
        return None
    fig, (ax,) = figure(SINGLE, 1, "Gradient noise scale B_simple (best lr; median over seeds, band = min–max)",
                         style)
    values = []
    for bs, (grid, median, low, high, seeds) in curves:
        ax.plot(grid, median, color=style.colors[bs], lw=1.8, marker="o" if len(grid) < 12 else None, ms=3)
        if seeds > 1:
            ax.fill_between(grid, low, high, color=style.colors[bs], alpha=0.18, lw=0)
        values.append(np.concatenate([low, high])[np.isfinite(np.concatenate([low, high]))])
    sizes = sorted(style.colors)
    for bs in sizes:
        ax.axhline(bs, color=style.colors[bs], ls=":", lw=1.1)
    described = f"B_simple curves: {len(curves)} batch sizes; batch sizes marked: {', '.join(map(str, sizes))}"
    marks = list(sizes)
    f = science.frontier.fit
    if f is not None:
        ax.axhline(f.b_crit, color=FIT_COLOR, ls="--", lw=1.2)
        ax.annotate(f"fitted B_crit ≈ {short(f.b_crit)}", xy=(1, f.b_crit), xycoords=("axes fraction", "data"),
                    xytext=(-4, 3), textcoords="offset points", fontsize=8.5, color=FIT_COLOR, ha="right",
                    va="bottom", bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none",
                                       "alpha": 0.85})
        marks.append(f.b_crit)
        described += f"; fitted B_crit {f.b_crit:.6g}"
    data = np.concatenate([*values, np.asarray(marks, dtype=float)])
    data = data[np.isfinite(data) & (data > 0)]
    ax.set_ylim(data.min() / 1.5, data.max() * 1.5)
    log_y(ax)
    right = ax.secondary_yaxis("right")
    right.set_yscale("log")
    right.set_yticks(sizes, labels=[f"bs {bs}" for bs in sizes], fontsize=8)
    right.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("epoch")
    ax.set_ylabel("B_simple = tr(Σ) / |G|²")
    return png(fig, described), described


def _lr(rec: SweepRecords, tables: Tables, science: Science, style) -> tuple[bytes, str]:
    sizes = sorted(style.colors)
    lr = science.lr
    fig, (ax,) = figure(SINGLE, 1, f"Best lr per batch size (to {target_text(rec, tables.target)}); faint: lrs tried",
                         style)
    handles = []
    ok = lr.tried[lr.tried["status"] == Status.COMPLETED.value]
    bad = lr.tried[lr.tried["status"] != Status.COMPLETED.value]
    if len(ok):
        ax.scatter(ok["batch_size"], ok["lr"], s=22, color="0.55", alpha=0.35, zorder=1, lw=0)
        handles.append(Line2D([], [], ls="", marker="o", color="0.55", alpha=0.5, label="lr tried"))
    if len(bad):
        ax.scatter(bad["batch_size"], bad["lr"], s=26, color="0.45", alpha=0.45, marker="x", zorder=1)
        handles.append(Line2D([], [], ls="", marker="x", color="0.45", label="diverged or failed"))
    table = lr.table
    if len(table):
        ax.plot(table["batch_size"], table["best_lr"], color="0.6", lw=1, zorder=2)
        reached = table[table["reached"]]
        missed = table[~table["reached"]]
        if len(reached):
            ax.scatter(reached["batch_size"], reached["best_lr"], s=60, zorder=3, edgecolors="black",
                       linewidths=0.5, c=[style.colors[int(b)] for b in reached["batch_size"]])
            handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="0.5", mec="black",
                                  label="best lr (reached the target)"))
        if len(missed):
            ax.scatter(missed["batch_size"], missed["best_lr"], s=60, zorder=3, facecolors="white",
                       edgecolors=[style.colors[int(b)] for b in missed["batch_size"]], linewidths=1.6)
            handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="white", mec="0.3",
                                  label="closest lr (target not reached)"))
    else:
        say(ax, "no finished trials")
    rule = lr.rule
    if rule is not None:
        grid = np.geomspace(min(sizes) / 1.4, max(sizes) * 1.4, 100)
        scale = {"linear": f"{rule['base']:g} × B/{rule['base_batch_size']}",
                 "sqrt": f"{rule['base']:g} × √(B/{rule['base_batch_size']})",
                 "none": f"{rule['base']:g} at every batch size"}[rule["scale"]]
        ax.plot(grid, rule_lr(rule, grid), color="black", ls="--", lw=1.2, zorder=2)
        handles.append(Line2D([], [], color="black", ls="--", label=f"lr rule ({rule['scale']}): {scale}"))
        note = f"lr rule line: drawn ({rule['scale']}, base {rule['base']:g} at batch {rule['base_batch_size']})"
    else:
        note = "lr rule line: none (the config has no lr_rule)"
    batch_axis(ax, sizes)
    log_y(ax)
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8.5)
    ax.set_ylabel("learning rate")
    return png(fig, note), note


def _gap(rec: SweepRecords, tables: Tables, science: Science, style) -> tuple[bytes, str]:
    gap = science.gap
    kind = gap.kind
    label = "train − test accuracy" if kind == "accuracy" else "test − train loss"
    fig, (curve_ax, bs_ax) = figure(PAIR, 2, f"Generalisation gap: {label} (train subset)", style)
    for bs, frames in sorted(gap.curves.items()):
        merged = curve(frames, "epoch", "gap", positive=False)
        if merged is None:
            continue
        grid, median, low, high, seeds = merged
        curve_ax.plot(grid, median, color=style.colors[bs], lw=1.8)
        if seeds > 1:
            curve_ax.fill_between(grid, low, high, color=style.colors[bs], alpha=0.18, lw=0)
    curve_ax.axhline(0, color="black", lw=0.8)
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel(f"{label} (median over seeds)")

    table = gap.table
    sizes = sorted(style.colors)
    colors = [style.colors[int(b)] for b in table["batch_size"]]
    bs_ax.plot(table["batch_size"], table["gap_end"], color="0.6", lw=1, zorder=1)
    bs_ax.scatter(table["batch_size"], table["gap_end"], c=colors, s=60, edgecolors="black", linewidths=0.5,
                  zorder=3)
    handles = [Line2D([], [], ls="", marker="o", ms=8, mfc="0.5", mec="black", label="end of training")]
    at = table[np.isfinite(table["gap_at_target"].astype(float))]
    if len(at):
        bs_ax.scatter(at["batch_size"], at["gap_at_target"], s=60, marker="s", facecolors="white",
                      edgecolors=[style.colors[int(b)] for b in at["batch_size"]], linewidths=1.6, zorder=3)
        handles.append(Line2D([], [], ls="", marker="s", ms=8, mfc="white", mec="0.3",
                              label=f"when {target_text(rec, tables.target)} was first reached"))
    bs_ax.axhline(0, color="black", lw=0.8)
    bs_ax.legend(handles=handles, loc="best", fontsize=8.5)
    batch_axis(bs_ax, sizes)
    bs_ax.set_ylabel(label)
    note = f"generalisation gap ({kind}): {len(gap.curves)} batch sizes"
    return png(fig, note), note
