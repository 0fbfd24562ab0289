"""The batch-size schedules' figure: batch size over examples for each schedule trial (metrics.csv's batch_size
column) beside the constant batch sizes, and the target metric over examples, each schedule's best setting
against each constant batch size's best lr (median over seeds). A sequence task's are over tokens, the unit its
budget and schedules are counted in."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import EngFormatter, NullLocator

from batchlab.reporting.figures import PAIR, Plot, batch_style, curve, figure, png
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.tables import Tables

FILENAME = "batch_size_schedules.png"
SCHEDULE_COLORS = ("firebrick", "darkorange", "mediumvioletred", "saddlebrown", "crimson")


def schedule_plots(rec: SweepRecords, tables: Tables) -> list[Plot]:
    schedules = tables.schedules
    if schedules is None:
        return []
    style = batch_style(rec, tables) if len(rec.trials) else None  # None: no constant batch size ran
    metric = rec.target_metric
    unit = "tokens" if rec.sequence else "examples"
    per_example = (rec.all_trials.set_index("trial_id")["context"].fillna(  # a trial with no summary yet: the config's
        (rec.config.get("dataset") or {}).get("context")) if rec.sequence else None)

    def progress(trial_id: str):  # tokens: examples x the trial's own context
        frame = rec.metrics[trial_id]
        return frame.assign(progress=frame["examples"] * (per_example[trial_id] if per_example is not None else 1))

    fig, (sizes_ax, metric_ax) = figure(PAIR, 2, "Batch-size schedules against the constant batch sizes", style)
    best = schedules.headline_rows
    drawn, ticks = 0, set(style.sizes if style else [])
    for color, row in zip(SCHEDULE_COLORS * 10, best.itertuples(index=False)):
        trials = rec.scheduled[(rec.scheduled["schedule"] == row.schedule)
                               & np.isclose(rec.scheduled["lr"], row.best_lr)]
        frames = [progress(t) for t in trials["trial_id"] if t in rec.metrics]
        frames = [f for f in frames if f["batch_size"].notna().any()]
        for i, frame in enumerate(frames):
            data = frame[["progress", "batch_size"]].dropna().to_numpy(dtype=float)
            sizes_ax.step(data[:, 0], data[:, 1], where="post", color=color, lw=2, alpha=0.8,
                          label=row.schedule if i == 0 else None)
            drawn += 1
            ticks.update(int(b) for b in data[:, 1])
        line = curve(frames, "progress", metric, positive=False) if frames else None
        if line is not None:
            metric_ax.plot(line[0], line[1], color=color, lw=2.5, label=row.schedule)
    for bs, choice in sorted(tables.plotted.items()) if style else []:
        frames = [progress(t) for t in choice.trial_ids if t in rec.metrics]
        line = curve(frames, "progress", metric, positive=False) if frames else None
        if line is None:
            continue
        sizes_ax.plot([line[0][0], line[0][-1]], [bs, bs], color=style.colors[bs], lw=1.5, ls="--")
        metric_ax.plot(line[0], line[1], color=style.colors[bs], lw=1.5, ls="--")
    sizes_ax.set_yscale("log", base=2)
    sizes_ax.set_yticks(sorted(ticks), [str(b) for b in sorted(ticks)])
    sizes_ax.yaxis.set_minor_locator(NullLocator())
    for ax in (sizes_ax, metric_ax):  # 120k, 1.2M: a token count's ticks in full ran into each other
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    sizes_ax.set_xlabel(unit)
    sizes_ax.set_ylabel("batch size")
    sizes_ax.set_title("batch size over training (dashed: constant)")
    metric_ax.axhline(tables.target, color="0.4", lw=1, ls=":")
    metric_ax.set_xlabel(unit)
    metric_ax.set_ylabel(metric)
    metric_ax.set_title(f"{metric} (median over seeds; dotted: the target)")
    for ax in (sizes_ax, metric_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9, title="schedule")
    note = f"schedule trials drawn: {drawn}"
    return [Plot(FILENAME, "Batch-size schedules", png(fig, note), note)]
