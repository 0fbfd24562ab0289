"""A batch size's settings, ranked: which is its best.

A "setting" is what we tune at one batch size: the lr plus any other swept axis. Rules (report.md states them
too, under "How to read this report"): within one batch size a step costs the same whatever the lr, so settings
are ranked by the work they needed, not by the clock (seconds would only add timer noise from a busy machine):
first the fewest seeds that missed the target, then the median over their seeds of steps to target, then median
examples, then median seconds, then the fewest steps of a single seed, then the best final test metric (the
closest to the target, for settings that all missed), then the lowest final train loss, then the smaller lr.
The first is the batch size's best setting. Batch-size schedules rank theirs by the same rules (schedules.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.reporting.load import FINISHED, INFEASIBLE, SweepRecords, same_target

QUARTILE_SEEDS = 5  # q1/q3 of seconds and steps to target only from this many seeds up
# Within a batch size: work first (a step costs the same whatever the lr), the clock last. The
# helper columns are added by ranked.
SETTING_ORDER = ["_missed", "steps", "examples", "seconds", "steps_min", "_final", "_train_loss", "lr"]


def settings_of(rec: SweepRecords, target: float, trials: pd.DataFrame | None = None,
              by: str = "batch_size") -> pd.DataFrame:
    """One row per (batch size, setting): its seeds' results for `target`, finished trials only. `trials`
    (default: rec.trials) grouped by `by` instead (batch-size schedules: by their label)."""
    hits = rec.hits[same_target(rec.hits["target"], target)].drop(columns="target")
    hits = hits.rename(columns={c: f"{c}_to" for c in ("seconds", "steps", "epochs", "examples", "tokens")})
    trials = rec.trials if trials is None else trials
    trials = trials[trials["status"].isin(FINISHED)].merge(hits, on="trial_id")
    trials["reached"] = np.isfinite(trials["seconds_to"])
    trials["infeasible"] = trials["status"].isin(INFEASIBLE)
    firsts = {axis: (axis, "first") for axis in ["lr", *rec.extra_axes]}
    grouped = trials.groupby([by, "setting"], sort=True, dropna=False)
    return grouped.agg(
        **firsts,
        seeds=("trial_id", "size"),
        reached=("reached", "sum"),
        infeasible=("infeasible", "sum"),
        seconds=("seconds_to", "median"),
        steps=("steps_to", "median"),
        epochs=("epochs_to", "median"),
        examples=("examples_to", "median"),
        tokens=("tokens_to", "median"),  # each trial's own (its context): a setting holds one context
        context=("context", "median"),
        cost_key=("cost_key", "first"),  # the axes that change a step's cost: part of the setting
        **{f"{what}_{stat}": (f"{what}_to", how) for what in ("seconds", "steps", "examples")
           for stat, how in (("min", "min"), ("max", "max"), ("q1", _q1), ("q3", _q3))},
        final_train_loss=("final_train_loss", "median"),
        final_test_accuracy=("final_test_accuracy", "median"),
        final_test_loss=("final_test_loss", "median"),
    ).reset_index()


def _quantile(values: pd.Series, q: float) -> float:
    """The q-quantile (linear interpolation) of a seed's figures, +inf (a miss) allowed: an
    interpolation touching inf is inf. NaN with fewer than QUARTILE_SEEDS values."""
    data = np.sort(values.to_numpy(dtype=float))
    data = data[~np.isnan(data)]
    if len(data) < QUARTILE_SEEDS:
        return math.nan
    position = q * (len(data) - 1)
    low, high = data[math.floor(position)], data[math.ceil(position)]
    if math.isinf(high):
        return math.inf
    return float(low + (high - low) * (position - math.floor(position)))


def _q1(values: pd.Series) -> float:
    return _quantile(values, 0.25)


def _q3(values: pd.Series) -> float:
    return _quantile(values, 0.75)


def ranked(settings: pd.DataFrame, regression: bool, by: str = "batch_size") -> pd.DataFrame:
    """Settings sorted best first within each batch size (each `by`), by SETTING_ORDER."""
    final = settings["final_test_loss"] if regression else -settings["final_test_accuracy"]
    ordered = settings.assign(
        _missed=settings["seeds"] - settings["reached"],
        _final=final.fillna(np.inf),
        _train_loss=settings["final_train_loss"].fillna(np.inf),
    ).sort_values([by, *SETTING_ORDER], na_position="last", kind="stable")
    return ordered.drop(columns=["_missed", "_final", "_train_loss"])


def best_of(settings: pd.DataFrame, regression: bool, by: str = "batch_size") -> pd.DataFrame:
    """The best setting of each batch size (each `by`), by the ranking in the module docstring."""
    return ranked(settings, regression, by).drop_duplicates(by)


def best_settings(rec: SweepRecords, target: float, trials: pd.DataFrame, by: str) -> pd.DataFrame:
    """The best setting of each `by` group of `trials` for `target`, ranked as a batch size's are."""
    return best_of(settings_of(rec, target, trials, by), rec.regression, by)
