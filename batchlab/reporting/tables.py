"""The report's tables, computed with pandas from the loaded records.

Rules (report.md states them too, under "How to read this report"):
- Only finished trials (completed, diverged, failed, raced) count for or against a target. A target a
  finished trial never reached counts as +inf seconds. Incomplete and interrupted trials are
  neither reached nor missed.
- A "setting" is what we tune at one batch size: the lr plus any other swept axis; the first by the
  ranking in settings.py is the batch size's best setting.
- A batch size "reached" the target only when every seed of its best setting did; one whose best
  setting reached it on some seeds only is "partly reached" (k/n in seeds_reached) and takes no
  part in choosing the fastest batch size.
- Batch sizes are ranked against each other three ways, each its own column: fastest (least
  predicted seconds to target, steps x seconds per step: see decision.py; ties: fewer steps, then
  the smaller batch), fewest_steps (ties: fewer examples) and fewest_examples (ties: fewer steps).
- Medians over seeds are taken per column, so seconds and steps may come from different seeds; a
  partly reached row keeps them where the median is finite (a miss counting as +inf).
- A "not reached" row still names the setting that came closest by the ranking above; those are
  the curves plotted for it.
- Spread over seeds (seconds, steps and examples: min/max; q1/q3 with 5 or more seeds) is over the best
  setting's finished seeds.
- at_budget_end counts the best setting's seeds that first met the target at the last step their
  budget allowed: reached, but without margin.
- cut_by_race: a raced trial at that batch size stopped before the steps its best setting needed (or
  none reached): a setting the race cut might have needed fewer steps, so the row's steps are not
  known to be its best, and the frontier leaves it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from batchlab.records import Status
from batchlab.reporting import decision
from batchlab.reporting.load import FINISHED, INCOMPLETE, INFEASIBLE, SweepRecords, same_target
from batchlab.reporting.schedules import Schedules, build_schedules
from batchlab.reporting.settings import best_of, ranked, settings_of
from batchlab.schema import unreachable

REACHED = "reached"
PARTLY = "partly reached"  # some seeds of the best setting reached the target, not all
NOT_REACHED = "not reached"
NO_RESULT = "no finished trials"
WHOLE_NUMBERS = ("steps", "examples", "steps_per_epoch", "train_size", "peak_memory_bytes", "noise_measurements")
SPREAD = tuple(f"{what}_{stat}" for what in ("seconds", "steps", "examples") for stat in ("min", "max", "q1", "q3"))
# Between batch sizes: (column, tie-breaks) for each ranking, flagged by a column of that name.
RANKINGS = {
    "fastest": ["predicted_seconds", "steps", "batch_size"],
    "fewest_steps": ["steps", "examples", "seconds", "batch_size"],
    "fewest_examples": ["examples", "steps", "seconds", "batch_size"],
}


@dataclass
class PlotChoice:
    """The trials drawn as one batch size's curves."""

    lr: float
    trial_ids: list[str]


@dataclass
class Tables:
    trials: pd.DataFrame  # trials.csv
    time_to_accuracy: pd.DataFrame  # time_to_accuracy.csv: a row per target and batch size
    target: float  # the headline target: the one the lr grids and plots are about
    lr_grid: pd.DataFrame  # lr x batch size: median seconds to the headline target (inf = not reached)
    steps_grid: pd.DataFrame  # lr x batch size: median steps to the headline target (inf = not reached)
    final_grid: pd.DataFrame  # lr x batch size: median final test accuracy (test loss for regression)
    grid_notes: pd.DataFrame  # lr x batch size: "diverged", "not reached", ... for the documents
    plotted: dict[int, PlotChoice]
    schedules: Schedules | None = None  # batch-size schedules against the constant batch sizes (None: none ran)

    @property
    def headline_rows(self) -> pd.DataFrame:
        return self.time_to_accuracy[same_target(self.time_to_accuracy["target"], self.target)]


def build_tables(rec: SweepRecords, target: float | None) -> Tables:
    """All tables of one sweep. `target` limits the time-to-accuracy table to that target."""
    targets = rec.targets
    if target is not None and (why := unreachable(rec.target_metric, [target])):
        # a target for another sweep of the same records root (analyse refuses one that no sweep's metric can meet)
        rec.warnings.append(f"target {target:g}: {why}; showing every recorded target")
        target = None
    if target is not None:
        matches = [t for t in rec.targets if same_target(t, target)]
        if matches:
            targets = matches[:1]
        else:
            rec.warnings.append(
                f"target {target:g} is not among the recorded targets "
                f"({', '.join(f'{t:g}' for t in rec.targets)}); showing all of them")
    settings = {t: settings_of(rec, t) for t in targets}
    facts = _batch_facts(rec.trials), _batch_facts(rec.trials, ["batch_size", "cost_key"])
    made = {t: _time_to_accuracy(rec, t, settings[t], facts) for t in targets}
    tta = pd.concat([table for table, _ in made.values()], ignore_index=True)
    schedules = build_schedules(rec, made)
    headline = _headline_target([tta, *([schedules.table] if schedules else [])], targets, rec.regression)
    lr_grid, steps_grid, final_grid, notes = _grids(rec, settings[headline])
    best = tta[same_target(tta["target"], headline)]
    return Tables(
        trials=_trials_table(rec),
        time_to_accuracy=tta.drop(columns="setting"),
        target=headline,
        lr_grid=lr_grid,
        steps_grid=steps_grid,
        final_grid=final_grid,
        grid_notes=notes,
        plotted=_plot_choices(rec, best),
        schedules=replace(schedules, target=headline) if schedules else None,
    )


def _batch_facts(trials: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Target-independent figures per batch size, or per `by` (["batch_size", "cost_key"]: per batch size and the
    other axes that change what a step costs, as a setting's are). Throughput, steps per epoch, memory and the
    eval share belong to the batch size and those axes, not the lr: every completed trial (every trial for steps
    per epoch) of them. Infeasible trials and the lrs tried: the batch size's."""
    by = by or ["batch_size"]
    completed = trials[trials["status"] == Status.COMPLETED.value].groupby(by)
    finished = trials[trials["status"].isin(FINISHED)].groupby(by)
    facts = pd.DataFrame({
        "samples_per_second": completed["samples_per_second"].median(),
        "tokens_per_second": completed["tokens_per_second"].median(),
        "steps_per_epoch": trials.groupby(by)["steps_per_epoch"].median(),
        "peak_memory_bytes": completed["peak_memory_bytes"].max(),
        "infeasible": finished["status"].apply(lambda s: s.isin(INFEASIBLE).sum()),
        "lr_min": finished["lr"].min(),
        "lr_max": finished["lr"].max(),
    }, index=trials.groupby(by).size().index)
    facts["infeasible"] = facts["infeasible"].fillna(0).astype(int)
    facts["eval_share"] = _eval_share(trials, by)
    return facts


def _eval_share(trials: pd.DataFrame, by: list[str]) -> pd.Series:
    """Per `by` group, the share of its trials' time spent evaluating: eval / (train + eval + noise) seconds,
    summed over every trial with a summary (NaN where none recorded them)."""
    spent = trials[[*by, "train_seconds", "eval_seconds", "noise_seconds"]].fillna({"noise_seconds": 0.0})
    sums = spent.groupby(by).sum(min_count=1)
    total = sums[["train_seconds", "eval_seconds", "noise_seconds"]].sum(axis=1, min_count=3)
    return sums["eval_seconds"] / total.where(total > 0)


def _time_to_accuracy(rec: SweepRecords, target: float, settings: pd.DataFrame,
                      facts: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, decision.Decision]:
    """The target's rows (with the best setting's `setting` key) and the decision among them. `facts`: per batch
    size, and per batch size and step cost (a row's throughput, memory... are its best setting's step cost's)."""
    best = best_of(settings, rec.regression).set_index("batch_size")
    by_bs, by_cost = facts
    rows = []
    for bs in by_bs.index:
        measured = by_bs.loc[bs]  # its best setting's step cost's, where it has one
        row = {"target_metric": rec.target_metric, "target": target, "batch_size": int(bs)}
        if bs in best.index:
            b = best.loc[bs]
            reached = b["reached"] == b["seeds"] > 0
            status = REACHED if reached else PARTLY if b["reached"] else NOT_REACHED
            row.update(status=status, best_lr=b["lr"], setting=b["setting"])
            row.update({axis: b[axis] for axis in rec.extra_axes})
            row.update(seeds_reached=f"{int(b['reached'])}/{int(b['seeds'])}",
                       reached=int(b["reached"]), seeds=int(b["seeds"]))
            known = bool(np.isfinite(b["steps"]))  # a median over seeds, a miss counting as +inf
            for what in ("seconds", "steps", "epochs", "examples", "tokens"):
                row[what] = b[what] if known else math.nan
            for column in SPREAD:
                row[column] = b[column] if known else math.nan
            row.update(final_test_accuracy=b["final_test_accuracy"], final_test_loss=b["final_test_loss"],
                       context=b["context"])
            measured = by_cost.loc[(bs, b["cost_key"])]
            lr_min, lr_max = by_bs.loc[bs, "lr_min"], by_bs.loc[bs, "lr_max"]
            searched = not np.isclose(lr_min, lr_max)  # one lr tried: no search, so no edge of one to flag
            row["best_lr_on_edge"] = reached and searched and bool(np.isclose(b["lr"], lr_min)
                                                                    or np.isclose(b["lr"], lr_max))
        else:
            row.update(status=NO_RESULT, best_lr=math.nan, setting=None, seeds_reached="0/0",
                       reached=0, seeds=0, best_lr_on_edge=False)
        row.update(samples_per_second=measured["samples_per_second"], tokens_per_second=measured["tokens_per_second"],
                   steps_per_epoch=measured["steps_per_epoch"], peak_memory_bytes=measured["peak_memory_bytes"],
                   eval_share=measured["eval_share"], infeasible=int(by_bs.loc[bs, "infeasible"]))
        rows.append(row)
    table = pd.DataFrame(rows)
    columns = ["target_metric", "target", "batch_size", "status", "best_lr", *rec.extra_axes,
               "seeds_reached", "reached", "seeds", "seconds", "steps", "epochs", "examples", "tokens",
               *(["context"] if rec.sequence else []), *SPREAD,
               "final_test_accuracy", "final_test_loss", "samples_per_second", "tokens_per_second",
               "steps_per_epoch", "peak_memory_bytes", "eval_share", "infeasible", "best_lr_on_edge", "setting"]
    table = _whole_numbers(table.reindex(columns=columns),
                           ("steps_per_epoch", "peak_memory_bytes", *(["context"] if rec.sequence else [])))
    decided = decision.annotate(rec, table)
    for name, order in RANKINGS.items():
        table[name] = _first(table, order)
    return table, decided


def _whole_numbers(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Counts written as 160 rather than 160.0 in the CSVs, where every value is whole."""
    for column in columns:
        values = frame[column].astype(float)
        finite = values[values.notna()]
        if np.isfinite(finite).all() and (finite == finite.round()).all():
            frame[column] = values.astype("Int64")
    return frame


def _first(table: pd.DataFrame, order: list[str]) -> pd.Series:
    """True on the batch size first by `order` among those that reached the target."""
    flag = pd.Series(False, index=table.index)
    reached = table[table["status"] == REACHED]
    if len(reached):
        flag[reached.sort_values(order, kind="stable").index[0]] = True
    return flag


def _headline_target(rows: list[pd.DataFrame], targets: list[float], regression: bool) -> float:
    """The hardest target some batch size or batch-size schedule reached (`rows`: the constant batch sizes'
    time_to_accuracy rows, and the schedules'); if none did, the first target listed."""
    reached = pd.concat([r.loc[r["status"] == REACHED, "target"] for r in rows]).unique()
    if len(reached) == 0:
        return targets[0]
    return float(min(reached) if regression else max(reached))


def _grids(rec: SweepRecords, settings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                 pd.DataFrame]:
    """lr x batch size grids for one target. With other swept axes, a cell shows the setting at
    that lr ranked first (as the best lr of a batch size is chosen)."""
    finished = rec.trials[rec.trials["status"].isin(FINISHED)]
    lrs = sorted(finished["lr"].unique())
    sizes = sorted(rec.trials["batch_size"].unique())

    def grid(series: pd.Series) -> pd.DataFrame:
        table = series.unstack("batch_size").reindex(index=lrs, columns=sizes)
        table.index.name, table.columns.name = "lr", None
        return table

    cells = ranked(settings, rec.regression).drop_duplicates(["batch_size", "lr"]).set_index(["lr", "batch_size"])
    seconds, steps = grid(cells["seconds"]), grid(cells["steps"])
    final_column = "final_test_loss" if rec.regression else "final_test_accuracy"
    finals = finished.groupby(["lr", "batch_size", "setting"])[final_column].median()
    finals = finals.groupby(["lr", "batch_size"]).min() if rec.regression else \
        finals.groupby(["lr", "batch_size"]).max()
    final = grid(finals)

    statuses = finished.groupby(["lr", "batch_size"])["status"].agg(
        lambda s: "/".join(sorted(set(s))) if s.isin(INFEASIBLE).all() else "")
    notes = grid(statuses).astype(object)
    notes = notes.where(notes.notna(), "")
    notes = notes.mask((notes == "") & np.isinf(seconds), "not reached")
    return seconds, steps, final, notes


def _trials_table(rec: SweepRecords) -> pd.DataFrame:
    """trials.csv: every trial, batch-size schedules' too (their column schedule names it)."""
    trials = rec.all_trials.copy()
    for target in rec.targets:
        hits = rec.hits[same_target(rec.hits["target"], target)].set_index("trial_id")["seconds"]
        trials[f"seconds_to_{target:g}"] = trials["trial_id"].map(hits)
    first = ["trial_id", "status", "batch_size", *(["schedule"] if "schedule" in trials else []), "lr", "seed",
             *rec.extra_axes]
    last = ["device", "device_name", "precision", "torch_version", "error", "started_at", "finished_at"]
    middle = [c for c in trials.columns if c not in first + last + ["setting", "command", "threads"]]
    trials = _whole_numbers(trials, WHOLE_NUMBERS)
    return trials[first + middle + last].sort_values(["batch_size", "lr", "seed", "trial_id"],
                                                     ignore_index=True)


def _plot_choices(rec: SweepRecords, best: pd.DataFrame) -> dict[int, PlotChoice]:
    """Per batch size, the trials whose curves are drawn: the best setting's seeds (any status,
    partial ones too). A batch size without finished trials shows its running setting with the
    lowest last train loss."""
    trials = rec.trials[rec.trials["trial_id"].isin(rec.metrics.keys())]
    choices = {}
    for row in best.itertuples(index=False):
        setting = row.setting if isinstance(row.setting, str) else _lowest_running_loss(rec, trials, row.batch_size)
        if setting is None:
            continue
        chosen = trials[(trials["batch_size"] == row.batch_size) & (trials["setting"] == setting)]
        if len(chosen):
            choices[int(row.batch_size)] = PlotChoice(float(chosen["lr"].iloc[0]), list(chosen["trial_id"]))
    return choices


def _lowest_running_loss(rec: SweepRecords, trials: pd.DataFrame, batch_size: int) -> str | None:
    running = trials[(trials["batch_size"] == batch_size) & ~trials["status"].isin(FINISHED)]
    if running.empty:
        return None
    last_loss = {tid: _last(rec.metrics[tid]["train_loss"]) for tid in running["trial_id"]}
    losses = running.assign(last=running["trial_id"].map(last_loss)).groupby("setting")["last"].median()
    return losses.fillna(np.inf).idxmin()


def _last(values: pd.Series) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.iloc[-1]) if len(finite) else math.nan


def status_counts(rec: SweepRecords) -> dict[str, int]:
    """Trials per status, in a fixed order; 'damaged' counts trials left out."""
    counts = rec.all_trials["status"].value_counts()
    ordered = {s: int(counts.get(s, 0)) for s in (*FINISHED, Status.INTERRUPTED.value, INCOMPLETE) if counts.get(s, 0)}
    if rec.damaged:
        ordered["damaged"] = rec.damaged
    return ordered
