"""Batch-size schedules against the constant batch sizes, by the same decision rule (decision.py).

A schedule is its own setting, named by its label (batches.names: one name per schedule): its trials are grouped
by it as a constant batch size's are by the batch size, and its best setting (lr, other axes) is ranked by the
same rules (settings.py). It "reached" the target only when every seed of its best setting did. Its predicted seconds
to the target, per seed: the sum over the batch sizes it trained at up to its steps to the target
(batches.steps_by_batch on Summary.batch_changes) of the steps there x that batch size's seconds per step
(step_times.json, timed interleaved with the constant ones; without it, the trials' own clocks: the constant
trials' at that batch size, else the schedule trials' own rows at it in metrics.csv). The median over seeds, with
its bootstrap interval, is decided among the constant batch sizes' (decision.decide with Mixed settings).

Against the best constant batch size (the constant-only decision's fastest), per seed (its trial of the same
seed): the steps saved (1 - schedule steps / constant steps) and the examples ratio (schedule / constant). A
schedule clears the bar when, on every seed, it saved at least STEPS_SAVED of the steps with no more examples.
Each step count is read at an evaluation: `read_every` / `constant_read_every` say how many steps lay between
the evaluation that met the target and the one before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab import batches
from batchlab.reporting.decision import INTERLEAVED, TRIALS, Decision, Mixed, StepCost, decide, step_cost
from batchlab.reporting.load import FINISHED, SweepRecords, same_target
from batchlab.reporting.settings import best_settings

STEPS_SAVED = 0.25  # the bar stated for a schedule: a quarter of the best constant batch size's steps saved,
# with no more examples, on every seed (what a schedule must show to be worth its extra setting)
COARSE = 0.02  # steps to a target are read at evaluations: where the gaps before the two hits add up to over 2% of
# the steps, it is said beside the comparison (a constant evaluates every round(eval.every x steps per epoch)
# steps, a schedule every eval.every x examples per epoch: on a coarse grid two trials that trained alike
# differed by 38% in steps)


ROW_COLUMNS = ["target_metric", "target", "schedule", "status", "best_lr", "start_batch_size", "lr_scale",
               "seeds_reached", "reached", "seeds", "batch_sizes", "seconds", "steps", "examples", "tokens",
               "step_time_source"]
TOKENS = ("tokens", "constant_tokens")  # a sequence task's, each trial's own (examples x its context); else dropped


@dataclass
class Schedules:
    table: pd.DataFrame  # schedules.csv: a row per target and schedule
    seeds: pd.DataFrame  # schedule_seeds.csv: a row per target, schedule and seed, against the best constant
    decisions: dict[float, Decision]  # per target: constant batch sizes and reached schedules together
    target: float = math.nan  # the headline target (tables.build_tables picks it among the schedules' too)
    sequence: bool = False  # a sequence task: its tables give tokens beside examples

    @property
    def decision(self) -> Decision | None:
        """The headline target's."""
        return self.decisions.get(self.target)

    @property
    def headline_rows(self) -> pd.DataFrame:
        return self.table[same_target(self.table["target"], self.target)]

    @property
    def headline_seeds(self) -> pd.DataFrame:
        return self.seeds[same_target(self.seeds["target"], self.target)]


def build_schedules(rec: SweepRecords, made: dict[float, tuple[pd.DataFrame, Decision]]) -> Schedules | None:
    """`made`: per target, the constant batch sizes' time_to_accuracy rows (with `setting`) and their decision.
    None when no trial followed a schedule. Its headline target is left to the caller, which weighs the constant
    batch sizes' rows with these."""
    if rec.scheduled.empty:
        return None
    tables, seeds, decisions = [], [], {}
    for target, (constant_rows, constant) in made.items():
        table, per_seed, decisions[target] = _one_target(rec, target, constant_rows, constant)
        tables.append(table)
        seeds.append(per_seed)
    table, per_seed = pd.concat(tables, ignore_index=True), pd.concat(seeds, ignore_index=True)
    if not rec.sequence:
        table, per_seed = table.drop(columns=list(TOKENS)), per_seed.drop(columns=list(TOKENS))
    return Schedules(table, per_seed, decisions, sequence=rec.sequence)


def _one_target(rec: SweepRecords, target: float, constant_rows: pd.DataFrame,
                constant: Decision) -> tuple[pd.DataFrame, pd.DataFrame, Decision]:
    from batchlab.reporting.tables import NOT_REACHED, PARTLY, REACHED

    hits = rec.hits[same_target(rec.hits["target"], target)].set_index("trial_id")
    best = best_settings(rec, target, rec.scheduled, "schedule")
    finished = rec.scheduled[rec.scheduled["status"].isin(FINISHED)]
    rows, mixed, seed_steps, best_trials = [], {}, {}, {}
    for b in best.itertuples(index=False):
        trials = finished[(finished["schedule"] == b.schedule) & (finished["setting"] == b.setting)]
        best_trials[b.schedule] = trials
        status = REACHED if b.reached == b.seeds > 0 else PARTLY if b.reached else NOT_REACHED
        first = trials.iloc[0]
        row = {"target_metric": rec.target_metric, "target": target, "schedule": b.schedule, "status": status,
               "best_lr": b.lr, "start_batch_size": int(first["batch_size"]), "lr_scale": first["lr_scale"],
               **{axis: getattr(b, axis) for axis in rec.extra_axes},
               "seeds_reached": f"{int(b.reached)}/{int(b.seeds)}", "reached": int(b.reached),
               "seeds": int(b.seeds), "batch_sizes": _batch_sizes(rec, trials)}
        known = bool(np.isfinite(b.steps))
        row.update({what: getattr(b, what) if known else math.nan
                    for what in ("seconds", "steps", "examples", "tokens")})
        steps = {}
        for trial in trials.itertuples(index=False):
            to = float(hits["steps"].get(trial.trial_id, math.nan))
            if math.isfinite(to) and trial.trial_id in rec.batch_changes:
                steps[int(trial.seed)] = batches.steps_by_batch(rec.batch_changes[trial.trial_id], int(to))
        seed_steps[b.schedule] = steps
        if status == REACHED and len(steps) == len(trials):
            sizes = sorted({size for by_size in steps.values() for size in by_size})
            costs = [_cost(rec, trials, size) for size in sizes]
            mixed[b.schedule] = Mixed(np.array([[s.get(size, 0) for size in sizes] for s in steps.values()],
                                               dtype=float), costs)
            row["step_time_source"] = INTERLEAVED if all(c.source == INTERLEAVED for c in costs) else TRIALS
        rows.append(row)
    joint = decide(constant.steps, constant.costs, mixed)
    table = pd.DataFrame(rows, columns=[*ROW_COLUMNS[:6], *rec.extra_axes, *ROW_COLUMNS[6:]])  # none finished: empty
    for i, column in enumerate(("predicted_seconds", "predicted_low", "predicted_high")):
        table[column] = table["schedule"].map({k: p[i] for k, p in joint.predicted.items() if k in mixed})
    table["fastest"] = table["schedule"] == joint.fastest
    table["within_noise"] = table["schedule"].isin(joint.within_noise)
    per_seed = _against_constant(rec, target, best_trials, mixed, seed_steps, constant_rows, constant, hits)
    _summarise(table, per_seed, constant_rows, constant)
    return table, per_seed, joint


def _batch_sizes(rec: SweepRecords, trials: pd.DataFrame) -> str:
    """The batch sizes the trials trained at, in order: one list where every seed's is the same (a points
    schedule), else each seed's (follow: noise moves as each seed measures)."""
    used = {int(t.seed): " ".join(str(int(c["batch_size"])) for c in rec.batch_changes.get(t.trial_id, []))
            for t in trials.sort_values("seed").itertuples(index=False)}
    if len(set(used.values())) <= 1:
        return next(iter(used.values()), "")
    return "; ".join(f"seed {seed}: {sizes}" for seed, sizes in used.items())


def _cost(rec: SweepRecords, trials: pd.DataFrame, size: int) -> StepCost:
    """Seconds per step at `size` for these schedule trials: interleaved or the constant trials' clocks
    (decision.step_cost), else these trials' own rows at that batch size in metrics.csv."""
    cost = step_cost(rec, size, trials["cost_key"].iloc[0])
    if len(cost.values):
        return cost
    values = [_own_clock(rec.metrics.get(trial_id), size) for trial_id in trials["trial_id"]]
    values = np.array([v for v in values if math.isfinite(v)], dtype=float)
    return StepCost(TRIALS, values)


def _own_clock(frame: pd.DataFrame | None, size: int) -> float:
    """Seconds per step at `size` from a trial's metrics.csv: over consecutive rows both at that batch size."""
    if frame is None or frame["batch_size"].isna().all():
        return math.nan
    rows = frame.dropna(subset=["step", "train_seconds", "batch_size"])
    same = (rows["batch_size"].to_numpy() == size)
    both = same[1:] & same[:-1]
    steps = np.diff(rows["step"].to_numpy())[both].sum()
    seconds = np.diff(rows["train_seconds"].to_numpy())[both].sum()
    return float(seconds / steps) if steps > 0 else math.nan


def _against_constant(rec: SweepRecords, target: float, best_trials: dict[str, pd.DataFrame], mixed: dict[str, Mixed],
                      seed_steps: dict[str, dict[int, dict[int, int]]], constant_rows: pd.DataFrame,
                      constant: Decision, hits: pd.DataFrame) -> pd.DataFrame:
    """A row per schedule and seed of its best setting: its steps, examples and predicted seconds to the target
    beside the best constant batch size's trial of the same seed."""
    base = constant.fastest
    base_hits = {}
    if base is not None:
        setting = constant_rows.loc[constant_rows["batch_size"] == base, "setting"].iloc[0]
        trials = rec.trials[(rec.trials["batch_size"] == base) & (rec.trials["setting"] == setting)
                            & rec.trials["status"].isin(FINISHED)]
        base_hits = {int(t.seed): hits.loc[t.trial_id] for t in trials.itertuples() if t.trial_id in hits.index}
    rows = []
    for schedule, trials in best_trials.items():
        mix = mixed.get(schedule)
        seconds = dict(zip(seed_steps[schedule], mix.seconds())) if mix is not None else {}
        for trial in trials.sort_values("seed").itertuples(index=False):
            hit = hits.loc[trial.trial_id] if trial.trial_id in hits.index else None
            steps = float(hit["steps"]) if hit is not None else math.nan
            examples = float(hit["examples"]) if hit is not None else math.nan
            other = base_hits.get(int(trial.seed))
            base_steps = float(other["steps"]) if other is not None else math.nan
            base_examples = float(other["examples"]) if other is not None else math.nan
            rows.append({"target": target, "schedule": schedule, "seed": int(trial.seed),
                         "reached": bool(np.isfinite(steps)), "steps": steps, "examples": examples,
                         "tokens": float(hit["tokens"]) if hit is not None else math.nan,
                         "steps_by_batch": " ".join(f"{s}@{b}" for b, s in
                                                   seed_steps[schedule].get(int(trial.seed), {}).items()),
                         "predicted_seconds": seconds.get(int(trial.seed), math.nan),
                         "best_constant": base, "constant_steps": base_steps, "constant_examples": base_examples,
                         "constant_tokens": float(other["tokens"]) if other is not None else math.nan,
                         "read_every": _read_every(rec, trial.trial_id, steps),
                         "constant_read_every": _read_every(rec, other.name if other is not None else None,
                                                            base_steps)})
    per_seed = pd.DataFrame(rows, columns=["target", "schedule", "seed", "reached", "steps", "examples", "tokens",
                                           "steps_by_batch", "predicted_seconds", "best_constant",
                                           "constant_steps", "constant_examples", "constant_tokens", "read_every",
                                           "constant_read_every"])
    per_seed["steps_saved"] = _saved(per_seed["steps"], per_seed["constant_steps"])
    per_seed["examples_ratio"] = _ratio(per_seed["examples"], per_seed["constant_examples"])
    per_seed["clears_bar"] = (per_seed["steps_saved"] >= STEPS_SAVED) & (per_seed["examples_ratio"] <= 1)
    return per_seed


def _read_every(rec: SweepRecords, trial_id: str | None, steps: float) -> float:
    """How finely `steps` to the target was read: the steps between the evaluation that met it and the one
    before (NaN where it was missed or metrics.csv is not readable)."""
    frame = rec.metrics.get(trial_id) if trial_id is not None else None
    if frame is None or not math.isfinite(steps):
        return math.nan
    evaluated = frame.loc[frame[rec.target_metric].notna(), "step"]
    before = evaluated[evaluated < steps]
    return float(steps - before.max()) if len(before) else float(steps)


def coarse(seeds: pd.DataFrame) -> pd.DataFrame:
    """The rows of `seeds` (schedule_seeds.csv) with a steps saved whose two step counts were read coarsely: the
    gaps before the schedule's and the constant's hits, each a share of its steps, summed as `gap` (what the steps
    saved may be off by, to first order) over COARSE."""
    gap = seeds["read_every"] / seeds["steps"] + seeds["constant_read_every"] / seeds["constant_steps"]
    return seeds.assign(gap=gap)[seeds["steps_saved"].notna() & (gap > COARSE)]


def _saved(steps: pd.Series, base: pd.Series) -> pd.Series:
    """1 - steps / base steps: the share of the base's steps saved (NaN where either is unknown or a miss)."""
    steps, base = steps.astype(float), base.astype(float)
    ok = np.isfinite(steps) & np.isfinite(base) & (base > 0)
    return (1 - steps / base).where(ok)


def _ratio(examples: pd.Series, base: pd.Series) -> pd.Series:
    examples, base = examples.astype(float), base.astype(float)
    ok = np.isfinite(examples) & np.isfinite(base) & (base > 0)
    return (examples / base).where(ok)


def _summarise(table: pd.DataFrame, per_seed: pd.DataFrame, constant_rows: pd.DataFrame,
               constant: Decision) -> None:
    """The table's columns against the best constant batch size: its figures, the median steps saved and
    examples ratio, and whether the bar held on every seed (False where a seed is missing or missed)."""
    from batchlab.reporting.tables import REACHED  # (tables imports this module)
    base = constant.fastest
    by_bs = constant_rows.set_index("batch_size")
    table["best_constant"] = base
    for column in ("steps", "examples", "tokens", "predicted_seconds"):
        table[f"constant_{column}"] = float(by_bs.loc[base, column]) if base is not None else math.nan
    seeds = per_seed.groupby("schedule")  # each seed against the constant's trial of the same seed, then the median
    every = table["status"] == REACHED  # a seed that missed has no ratio: no median that leaves it out
    table["steps_saved"] = table["schedule"].map(seeds["steps_saved"].median()).astype(float).where(every)
    table["examples_ratio"] = table["schedule"].map(seeds["examples_ratio"].median()).astype(float).where(every)
    table["seeds_clearing_bar"] = table["schedule"].map(seeds["clears_bar"].sum()).fillna(0).astype(int)
    table["clears_bar_every_seed"] = [
        bool(n == row.seeds > 0 and row.status == REACHED)
        for n, row in zip(table["seeds_clearing_bar"], table.itertuples(index=False))]
