"""A batch size's settings, ranked: which is its best.

A "setting" is what we tune at one batch size: the lr plus any other swept axis. Rules (report.md states them
too, under "How to read this report"): within one batch size a step costs the same whatever the lr, so settings
are ranked by the work they needed, not by the clock (seconds would only add timer noise from a busy machine):
first the fewest seeds that missed the target, then the median over their seeds of steps to target, then median
examples, then median seconds, then the fewest steps of a single seed, then the best final test metric (the
closest to the target, for settings that all missed), then the lowest final train loss, then the smaller lr.
The first is the batch size's best setting.

Where another swept axis changes what a step costs (dataset.context, a model's size: steptime.cost_key, each
value timed apart in step_times.json), fewer steps can be the slower setting: 28 steps at context 256 took 3.6x
as long as 84 at context 8. So where a batch size's settings differ in step cost by more than the noise of
timing them (decision.TIE: a weight decay is timed apart too, within it), after the fewest seeds missed
come the least predicted seconds to the target, median steps x the setting's own seconds per step (as
decision.py times them: step_times.json's median over rounds, else its trials' own clocks), then the rest as
above; among settings that share one step cost, that is the order of their steps.

Batch-size schedules rank theirs by the rules without step costs (schedules.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.reporting import decision
from batchlab.reporting.load import FINISHED, INFEASIBLE, SweepRecords, same_target

QUARTILE_SEEDS = 5  # q1/q3 of seconds and steps to target only from this many seeds up
# Within a batch size: work first (a step costs the same whatever the lr; _predicted: steps x seconds per step
# where settings differ in step cost, else steps), the clock last. The helper columns are added by ranked.
SETTING_ORDER = ["_missed", "_predicted", "steps", "examples", "seconds", "steps_min", "_final", "_train_loss", "lr"]


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
    settings = grouped.agg(
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
    settings["seconds_per_step"] = _step_costs(rec, settings) if by == "batch_size" else math.nan
    return settings


def _step_costs(rec: SweepRecords, settings: pd.DataFrame) -> pd.Series:
    """Per setting, its seconds per step where its batch size's settings differ in step cost (cost_key), as the
    decision takes them (decision.step_cost), by more than the noise of timing them (decision.TIE: a context
    of 8 against 256 tokens, not a weight decay of 0 against 1e-4, which step_times.json also times apart); NaN
    where they share one, differ within the noise, or one of them has no figure (steps alone rank them)."""
    costs = pd.Series(math.nan, index=settings.index)
    for batch_size, group in settings.groupby("batch_size"):
        keys = group["cost_key"].unique()
        if len(keys) < 2:
            continue
        per_step = {key: decision.step_cost(rec, int(batch_size), key).value for key in keys}
        if (all(math.isfinite(v) and v > 0 for v in per_step.values())
                and max(per_step.values()) > decision.TIE * min(per_step.values())):
            costs[group.index] = group["cost_key"].map(per_step)
    return costs


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
        _predicted=settings["steps"] * settings["seconds_per_step"].fillna(1.0),  # NaN: one step cost
        _final=final.fillna(np.inf),
        _train_loss=settings["final_train_loss"].fillna(np.inf),
    ).sort_values([by, *SETTING_ORDER], na_position="last", kind="stable")
    return ordered.drop(columns=["_missed", "_predicted", "_final", "_train_loss"])


def best_of(settings: pd.DataFrame, regression: bool, by: str = "batch_size") -> pd.DataFrame:
    """The best setting of each batch size (each `by`), by the ranking in the module docstring."""
    return ranked(settings, regression, by).drop_duplicates(by)


def best_settings(rec: SweepRecords, target: float, trials: pd.DataFrame, by: str) -> pd.DataFrame:
    """The best setting of each `by` group of `trials` for `target`, ranked as a batch size's are."""
    return best_of(settings_of(rec, target, trials, by), rec.regression, by)
