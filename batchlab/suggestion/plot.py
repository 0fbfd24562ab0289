"""suggest.png: the predicted time to target against batch size (a band over B_crit) and what was measured."""

from __future__ import annotations

import numpy as np

from batchlab.records import Status
from batchlab.reporting.figures import FIT_COLOR, SINGLE, batch_axis, figure, log_y, png
from batchlab.suggestion.answer import Suggestion


def suggest_png(s: Suggestion, pilot_batch: int, pilot_steps: float) -> bytes:
    """Predicted seconds to target at every scanned batch size for B_crit across the band, S_min taken from
    the pilot (its steps to target = S_min (1 + B_crit / its batch)), a step costing what the scan's first pass
    measured; measured: each trial's steps to the target x its batch size's interleaved seconds per step (raced
    trials: their steps when stopped, a lower bound)."""
    sizes = np.array(sorted(s.throughput), dtype=float)
    per_step = sizes / np.array([s.throughput[int(b)] for b in sizes])  # the first pass's curve
    spb = {r.batch_size: r.seconds_per_step for r in s.rates if r.seconds_per_step}  # interleaved
    fig, [ax] = figure(SINGLE, 1, f"suggest: time to {s.metric} {s.target:g} against batch size", None)
    if s.band is not None:
        curves = [pilot_steps * (1 + b / sizes) / (1 + b / pilot_batch) * per_step for b in np.geomspace(*s.band, 9)]
        ax.fill_between(sizes, np.min(curves, axis=0), np.max(curves, axis=0), color=FIT_COLOR, alpha=0.15,
                        label=f"predicted, B_crit {s.band[0]:,.0f}-{s.band[1]:,.0f}")
        for edge, style in zip((curves[0], curves[-1]), ("--", ":")):
            ax.plot(sizes, edge, style, color=FIT_COLOR, lw=1)
    reached = [t for t in s.trials if t["predicted_seconds"] is not None and t["phase"] != "confirmation"]
    ax.scatter([t["batch_size"] for t in reached], [t["predicted_seconds"] for t in reached], color="black",
               zorder=3, label="measured steps x s/step (each lr)")
    raced = [t for t in s.trials if t["status"] == Status.RACED and t["batch_size"] in spb]
    if raced:  # stopped once past the best: their time to target is above the point
        ax.scatter([t["batch_size"] for t in raced], [t["steps_run"] * spb[t["batch_size"]] for t in raced],
                   marker="^", facecolors="none", edgecolors="0.4", zorder=3, label="raced out (slower than the best)")
    if s.batch_size is not None and s.predicted_seconds is not None:
        ax.scatter([s.batch_size], [s.predicted_seconds], s=180, facecolors="none", edgecolors="tab:green", lw=2,
                   zorder=4, label=f"chosen: {s.batch_size}, lr {s.lr:g}")
    batch_axis(ax, [int(b) for b in sizes])
    log_y(ax)
    ax.set_ylabel("seconds to target (steps x s/step)")
    ax.legend(loc="upper center", fontsize=9)
    return png(fig, s.sentence)
