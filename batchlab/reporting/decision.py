"""Which batch size is fastest to the target on this machine, decided where each part is measured stably.

Time to a target = steps to it (the optimisation's: exact for a seed, varying over seeds) x seconds per step
(the hardware's: varying with the machine's load from minute to minute). So:

- steps: each batch size's best setting's steps to the target, per seed (every seed reached it: a batch size
  some seed of whose best setting missed takes no part in the decision);
- seconds per step: from the sweep's step_times.json, every batch size timed round-robin in one go after the
  trials (batchlab.steptime), so a slow minute slows them all alike: the median over the rounds, on either clock.
  Even this thread's CPU clock (one torch thread on a CPU) moves both ways from round to round (some rounds run in
  under 0.7x their batch size's median), and the least over the rounds, taken here before, moved more: the ratio
  between two batch sizes' costs moved 1.0-2.7x as much from one measurement to the next with the least of 10
  rounds as with their median, and 1.2-2.9x as much with the least of 5, on two configs at 0, 1, 3 and 7 busy
  processes beside (benchmarks/step_time_estimators.py; README, "Why the median of 10 rounds"). Without that file
  (a Dask sweep, records from before it, `--no-time-steps`), each trial's own clock (train_seconds / steps, the
  median over the trials), which the report says;
- predicted seconds = median steps over seeds x seconds per step, with a 95% interval from a bootstrap
  over both (seeds resampled per batch size; rounds of the interleaved timing resampled together for all batch
  sizes, as they were measured together, trials' timings independently);
- the fastest is the least predicted time; a batch size is within the noise of it when its predicted time is
  under TIE x the fastest's, or it came out faster in at least 2.5% of the bootstrap draws (the one-sided
  end of the 95% interval of the ratio of the two times). Both are named in the answer.

A batch-size schedule (schedules.py) is decided among the batch sizes as one more setting: each seed's predicted
seconds are the sum, over the batch sizes it trained at up to its steps to the target, of its steps there x that
batch size's seconds per step (timed interleaved like the others, the same rounds resampled together), and its
figure is the median over seeds (Mixed).

The measured wall-clock seconds to the target stay in the tables beside the prediction. Everything here is
deterministic for the same records (the bootstrap's generator has a fixed seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from batchlab.records import Status
from batchlab.reporting.load import FINISHED, same_target

DRAWS = 2000  # bootstrap draws: the 2.5% tails rest on 50 draws each
SEED = 0  # same records, same intervals, same answer
TIE = 1.10  # predicted times within 10% are one answer: re-timed 4 times beside a busy process, a batch size's
# predicted time relative to the fastest's moved by up to 4% here (benchmarks/answer_stability.py, README)
INTERLEAVED, TRIALS = "interleaved", "trials"  # where seconds per step came from


@dataclass
class StepCost:
    """Seconds per step at one batch size: one value per round (interleaved) or per trial (the trials' clocks),
    summarised by their median."""
    source: str
    values: np.ndarray

    @staticmethod
    def of(values: np.ndarray, axis=None):
        return np.median(values, axis=axis)

    @property
    def value(self) -> float:
        return float(self.of(self.values)) if len(self.values) else math.nan


@dataclass
class Mixed:
    """A setting that trained at several batch sizes (a batch-size schedule): per seed, its steps to the target at
    each batch size; its seconds to the target are the sum over them of steps x that batch size's seconds per
    step, so it compares with a constant batch size on the same footing."""
    steps: np.ndarray  # seeds x batch sizes
    costs: list[StepCost]  # seconds per step of each column's batch size

    def seconds(self) -> np.ndarray:
        """Each seed's predicted seconds to the target."""
        return self.steps @ np.array([cost.value for cost in self.costs])


@dataclass
class Decision:
    seconds_per_step: dict[int, float]
    source: dict[int, str]
    predicted: dict[int | str, tuple[float, float, float]]  # setting -> (median, low, high) seconds to the target
    fastest: int | str | None  # a batch size, or a schedule's label
    within_noise: list[int | str]  # other settings that cannot be told apart from the fastest, fastest first
    steps: dict[int, np.ndarray] = field(default_factory=dict)  # what decided (decide's arguments)
    costs: dict[int, StepCost] = field(default_factory=dict)


def step_costs(rec, rows: pd.DataFrame, best_trials: dict[int, pd.DataFrame]) -> dict[int, StepCost]:
    """Seconds per step for each row's batch size (and its best setting's other axes)."""
    costs = {}
    for row in rows.itertuples(index=False):
        trials = best_trials.get(int(row.batch_size))
        if trials is None or trials.empty:
            continue
        costs[int(row.batch_size)] = step_cost(rec, int(row.batch_size), trials["cost_key"].iloc[0])
    return costs


def step_cost(rec, batch_size: int, key: str) -> StepCost:
    """Seconds per step at `batch_size` with the other axes `key` (steptime.cost_key): step_times.json's rounds,
    else the completed constant trials' own clocks, without one the other finished trials' (no values: none
    has it)."""
    timings = rec.step_times
    if timings is not None:
        mine = timings[(timings["batch_size"] == batch_size) & (timings["cost_key"] == key)]
        if len(mine):
            return StepCost(INTERLEAVED, mine.sort_values("round")["seconds_per_step"].to_numpy(dtype=float))
    same = rec.trials[(rec.trials["batch_size"] == batch_size) & (rec.trials["cost_key"] == key)
                      & rec.trials["status"].isin(FINISHED) & (rec.trials["steps"] > 0)]
    completed = same[same["status"] == Status.COMPLETED.value]
    same = completed if len(completed) else same  # else a diverged or raced trial's clock: it did train those steps
    values = (same["train_seconds"] / same["steps"]).to_numpy(dtype=float)
    return StepCost(TRIALS, values[np.isfinite(values)])


def decide(steps: dict[int, np.ndarray], costs: dict[int, StepCost], mixed: dict[str, Mixed] | None = None) -> Decision:
    """`steps`: per batch size, the steps to the target of each seed (all finite); `costs`: its seconds per step,
    interleaved ones in round order (the same rounds for every batch size, so their draws stay paired). `mixed`:
    settings that trained at several batch sizes (batch-size schedules), by name, decided among the others: per
    seed, the sum of steps x seconds per step over the batch sizes, then the median over seeds."""
    mixed = mixed or {}
    rng = np.random.default_rng(SEED)
    sizes = [b for b in sorted(steps) if b in costs and len(costs[b].values) and len(steps[b])
             and np.isfinite(steps[b]).all()]
    names = [n for n in sorted(mixed) if len(mixed[n].steps) and all(len(c.values) for c in mixed[n].costs)]
    draws = {}
    interleaved = [costs[b] for b in sizes] + [c for n in names for c in mixed[n].costs]
    n_rounds = min((len(c.values) for c in interleaved if c.source == INTERLEAVED), default=0)
    shared = rng.integers(0, n_rounds, size=(DRAWS, n_rounds)) if n_rounds else None

    def per_step(cost: StepCost) -> np.ndarray:
        if cost.source == INTERLEAVED and shared is not None:
            return cost.of(cost.values[:n_rounds][shared], axis=1)
        return cost.of(cost.values[rng.integers(0, len(cost.values), size=(DRAWS, len(cost.values)))], axis=1)

    for b in sizes:
        s = np.asarray(steps[b], dtype=float)
        seed_medians = np.median(s[rng.integers(0, len(s), size=(DRAWS, len(s)))], axis=1)
        draws[b] = seed_medians * per_step(costs[b])
    predicted = {b: (float(np.median(steps[b]) * costs[b].value), *map(float, np.percentile(draws[b], [2.5, 97.5])))
                 for b in sizes}
    for name in names:  # after the batch sizes: their draws stay what they were without schedules
        mix = mixed[name]
        seeds = rng.integers(0, len(mix.steps), size=(DRAWS, len(mix.steps)))
        costs_drawn = (np.stack([per_step(cost) for cost in mix.costs], axis=1) if mix.costs  # DRAWS x batch sizes
                       else np.zeros((DRAWS, 0)))  # reached at step 0: no batch size trained, 0 s
        draws[name] = np.median(np.einsum("dsk,dk->ds", mix.steps[seeds], costs_drawn), axis=1)
        predicted[name] = (float(np.median(mix.seconds())), *map(float, np.percentile(draws[name], [2.5, 97.5])))
    everything = sizes + names
    median_steps = {**{b: float(np.median(steps[b])) for b in sizes},
                    **{n: float(np.median(mixed[n].steps.sum(axis=1))) for n in names}}
    order = {k: i for i, k in enumerate(everything)}  # ties: fewer steps (as tables.RANKINGS), then batch sizes
    # (smaller first), then schedules

    def rank(k):
        return predicted[k][0], median_steps[k], order[k]

    fastest = min(everything, key=rank) if everything else None
    within = []
    if fastest is not None:
        for b in sorted(everything, key=rank):
            if b == fastest:
                continue
            close = predicted[b][0] <= TIE * predicted[fastest][0]
            sometimes_faster = np.mean(draws[b] < draws[fastest]) >= 0.025
            if close or sometimes_faster:
                within.append(b)
    return Decision({b: costs[b].value for b in costs}, {b: costs[b].source for b in costs}, predicted, fastest,
                    within, dict(steps), dict(costs))


def annotate(rec, table: pd.DataFrame) -> Decision:
    """Add the decision's columns to one target's time_to_accuracy rows (their `setting` column still there):
    seconds_per_step, step_time_source, predicted_seconds / _low / _high, within_noise, at_budget_end and
    cut_by_race (see tables.py)."""
    from batchlab.reporting.tables import REACHED  # (tables imports this module)

    if table.empty:  # no constant batch size ran (only batch-size schedules): nothing to decide among them
        for column in ("seconds_per_step", "step_time_source", "predicted_seconds", "predicted_low",
                       "predicted_high", "within_noise", "at_budget_end", "cut_by_race"):
            table[column] = pd.Series(dtype=object if column == "step_time_source" else float)
        return decide({}, {})
    hits = rec.hits[same_target(rec.hits["target"], table["target"].iloc[0])].set_index("trial_id")["steps"]
    trials = rec.trials.assign(steps_to=rec.trials["trial_id"].map(hits))
    finished = trials[trials["status"].isin(FINISHED)]
    best = {int(r.batch_size): finished[(finished["batch_size"] == r.batch_size) & (finished["setting"] == r.setting)]
            for r in table.itertuples(index=False) if isinstance(r.setting, str)}
    reached = table.loc[table["status"] == REACHED, "batch_size"].astype(int)
    decision = decide({b: best[b]["steps_to"].to_numpy(dtype=float) for b in reached}, step_costs(rec, table, best))
    table["seconds_per_step"] = table["batch_size"].map(decision.seconds_per_step)
    table["step_time_source"] = table["batch_size"].map(decision.source)
    for i, column in enumerate(("predicted_seconds", "predicted_low", "predicted_high")):
        table[column] = table["batch_size"].map({b: p[i] for b, p in decision.predicted.items()})
    table["within_noise"] = table["batch_size"].isin(decision.within_noise)
    table["at_budget_end"] = table["batch_size"].map(
        {b: int((np.isfinite(t["steps_to"]) & (t["steps_to"] >= t["budget_steps"])).sum())  # a missed seed: inf
         for b, t in best.items()}).fillna(0).astype(int)
    raced = trials[trials["status"] == Status.RACED.value]
    table["cut_by_race"] = [bool(len(cut := raced[raced["batch_size"] == r.batch_size])) and
                            (r.status != REACHED or bool((cut["steps"] < r.steps).any()))
                            for r in table.itertuples(index=False)]
    return decision
