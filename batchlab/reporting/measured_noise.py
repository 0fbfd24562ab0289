"""The gradient noise scale B_simple measured during training, as the report states it.

The frontier describes training up to the target, and trials stop there (or soon after), while
a config measures B_simple every noise.every epochs. B_simple grows as training goes on, so the
figure set beside B_crit is averaged over that same stretch: for each trial of a batch size's
best setting that reached the headline target, the mean of its finite noise_b_simple rows at a
step at or before its steps to the target (metrics.csv); the report gives the median over those
trials, and how many measurements (rows, and trials) it rests on.

Also kept, for comparison: summary.json's noise.b_simple (the smoothed value when training
ended, median over completed trials) and the first and last finite value of each completed
trial's curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batchlab.records import Status
from batchlab.reporting.load import FINISHED, SweepRecords, same_target
from batchlab.reporting.tables import REACHED, Tables

if TYPE_CHECKING:
    from batchlab.reporting.science import FrontierResult

# Below this many measurements per trial (median), the average over training is a handful of
# noisy points: the report says so and suggests a smaller noise.every.
FEW_MEASUREMENTS = 5


@dataclass
class NoiseResult:
    """Every figure is NaN (and its count 0) where nothing finite was recorded."""

    to_target: float  # median over trials of each trial's mean B_simple up to its steps to target
    to_target_trials: int  # trials with at least one such measurement
    to_target_measurements: int  # those measurements in all (metrics.csv rows)
    per_trial: float  # median measurements per trial among them
    b_simple: float  # median over completed trials of summary.noise.b_simple
    trials: int  # completed trials with a finite summary value
    start: float  # median over completed trials of the first finite noise_b_simple in metrics.csv
    end: float  # ... and of the last
    curve_trials: int  # completed trials with a finite noise_b_simple in metrics.csv
    every: float | None  # noise.every of the config (epochs between measurements)

    @property
    def few(self) -> bool:
        """The average to the target rests on fewer than FEW_MEASUREMENTS per trial."""
        return self.to_target_trials > 0 and self.per_trial < FEW_MEASUREMENTS

    def advice(self) -> str:
        """What to do when the average rests on few measurements (empty otherwise)."""
        if not self.few:
            return ""
        now = f" (now {self.every:g} epoch{'' if self.every == 1 else 's'})" if self.every else ""
        measurements = f"{self.per_trial:g} measurement{'' if self.per_trial == 1 else 's'}"
        return (f"B_simple up to the target rests on only {measurements} per trial (median): "
                f"set a smaller noise.every{now} for a steadier figure.")

    def table(self, frontier: FrontierResult) -> pd.DataFrame:
        """noise_scale.csv: measured B_simple next to the fitted B_crit. count: the values each figure
        rests on (measurements, trials or batch sizes, as its source says)."""
        f = frontier.fit
        rows = [
            ("measured B_simple, averaged to the target", self.to_target, self.to_target_measurements,
             self.to_target_trials,
             "median over the best settings' trials that reached the headline target of each trial's mean of "
             "finite noise_b_simple in metrics.csv at steps ≤ its steps to target; count = measurements"),
            ("measured B_simple, summary.json", self.b_simple, self.trials, self.trials,
             "median over completed trials of summary.noise.b_simple (smoothed, end of training); count = trials"),
            ("measured B_simple, start of training", self.start, self.curve_trials, self.curve_trials,
             "median over completed trials of the first finite noise_b_simple in metrics.csv; count = trials"),
            ("measured B_simple, end of training", self.end, self.curve_trials, self.curve_trials,
             "median over completed trials of the last finite noise_b_simple in metrics.csv; count = trials"),
            ("fitted B_crit", f.b_crit if f else math.nan, len(f.batch_sizes) if f else len(frontier.points),
             math.nan, "steps-examples frontier fit; count = batch sizes fitted" if f else
             f"no fit: {frontier.reason}"),
        ]
        table = pd.DataFrame(rows, columns=["quantity", "value", "count", "trials", "source"])
        table["trials"] = table["trials"].astype("Int64")
        return table


def measured_noise(rec: SweepRecords, tables: Tables) -> tuple[NoiseResult | None, str]:
    """The noise scale, or None with the reason there is none."""
    noise_config = rec.config.get("noise") if isinstance(rec.config.get("noise"), dict) else {}
    every = noise_config.get("every")
    every = float(every) if isinstance(every, (int, float)) and not isinstance(every, bool) else None
    completed = rec.trials[rec.trials["status"] == Status.COMPLETED.value]
    summary = completed["noise_b_simple"].astype(float)
    summary = summary[np.isfinite(summary) & (summary > 0)]
    starts, ends = [], []
    for trial_id in completed["trial_id"]:
        values = _values(rec, trial_id)
        if len(values):
            starts.append(values[0])
            ends.append(values[-1])
    any_curve = bool(starts) or any(np.isfinite(frame["noise_b_simple"].to_numpy(dtype=float)).any()
                                    for frame in rec.metrics.values())
    if not len(summary) and not any_curve:
        if every:
            return None, (f"No finite gradient noise scale is recorded yet (noise.every = {every:g} epochs): "
                          "no B_simple to report.")
        return None, "No gradient noise scale was recorded (noise.every is not set): no B_simple to report."
    means, counts = _to_target(rec, tables)
    return NoiseResult(
        to_target=float(np.median(means)) if means else math.nan,
        to_target_trials=len(means),
        to_target_measurements=int(sum(counts)),
        per_trial=float(np.median(counts)) if counts else math.nan,
        b_simple=float(np.median(summary)) if len(summary) else math.nan,
        trials=int(len(summary)),
        start=float(np.median(starts)) if starts else math.nan,
        end=float(np.median(ends)) if ends else math.nan,
        curve_trials=len(starts),
        every=every,
    ), ""


def _values(rec: SweepRecords, trial_id: str, last_step: float = math.inf) -> np.ndarray:
    return b_simple_values(rec.metrics.get(trial_id), last_step)


def b_simple_values(frame: pd.DataFrame | None, last_step: float = math.inf) -> np.ndarray:
    """A trial's finite, positive B_simple measurements (its metrics.csv rows) at steps <= last_step, in step
    order. (A value <= 0 can come out of the unbiased estimator when |G|² is tiny; it is no batch size.)"""
    if frame is None:
        return np.array([])
    data = frame[["step", "noise_b_simple"]].to_numpy(dtype=float)
    keep = np.isfinite(data[:, 1]) & (data[:, 1] > 0) & (data[:, 0] <= last_step)
    return data[keep, 1]


def _to_target(rec: SweepRecords, tables: Tables) -> tuple[list[float], list[int]]:
    """Per trial of a reached batch size's best setting that itself reached the headline target:
    the mean of its measurements up to its steps to target, and how many there were."""
    steps_to = rec.hits[same_target(rec.hits["target"], tables.target)].set_index("trial_id")["steps"]
    status = rec.trials.set_index("trial_id")["status"]
    rows = tables.headline_rows
    means, counts = [], []
    for bs in rows.loc[rows["status"] == REACHED, "batch_size"]:
        choice = tables.plotted.get(int(bs))
        for trial_id in choice.trial_ids if choice else []:
            steps = steps_to.get(trial_id, math.nan)
            if status.get(trial_id) not in FINISHED or not math.isfinite(steps):
                continue
            values = _values(rec, trial_id, steps)
            if len(values):
                means.append(float(values.mean()))
                counts.append(len(values))
    return means, counts
