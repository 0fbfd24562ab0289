"""The answer where batch-size schedules ran: a schedule is named when it is the fastest to the target on this
machine, or within the noise of the fastest, by the same rule as a batch size (decision.py; only schedules
whose best setting reached the target on every seed take part). The frontier, B_crit, B_simple and the
other-hardware limits stay the constant batch sizes' (a schedule has no single batch size).

Each schedule also gets a plain statement against the best constant batch size, seed by seed (schedules.py)."""

from __future__ import annotations

import math

import pandas as pd

from batchlab.reporting import display
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.schedules import STEPS_SAVED, Schedules, coarse
from batchlab.reporting.tables import REACHED, Tables


def lr_text(lr: float, start: int, lr_scale: str | None) -> str:
    """'lr 0.05 at 32, sqrt-scaled': the trial's lr is the lr at its starting batch size; without a scale (none,
    or null) the lr stays as the batch size changes."""
    if lr_scale in ("linear", "sqrt"):
        return f"lr {lr:g} at {start}, {lr_scale}-scaled"
    return f"lr {lr:g} at every batch size"


def name(schedule: str) -> str:
    return f"the batch-size schedule {schedule}"


def apply(answer, rec: SweepRecords, tables: Tables, target: str) -> None:
    """Name a schedule in `answer` (a Recommendation made from the constant batch sizes) where the decision
    among all of them puts one first or within the noise of the first; add each schedule's statement."""
    schedules: Schedules | None = tables.schedules
    if schedules is None:
        return
    rows = schedules.headline_rows.set_index("schedule")
    decision = schedules.decision
    if tables.headline_rows.empty:  # only schedules ran: what the constant batch sizes' answer said is not so
        answer.sentence = (f"No batch-size schedule reached {target} on every seed, so none can be recommended "
                           "yet (see the batch-size schedules); train longer or set an easier target.")
        answer.details = [answer.sentence]
    answer.details += [statement(rows.loc[s], schedules.headline_seeds, target) for s in rows.index]
    if decision is None or decision.fastest is None:
        return
    named = [decision.fastest, *decision.within_noise]
    if not any(isinstance(k, str) for k in named):
        return
    constants = tables.headline_rows.set_index("batch_size")
    entries = [_entry(k, rows, constants) for k in named]
    first = entries[0]
    if isinstance(decision.fastest, str):
        row = rows.loc[decision.fastest]
        answer.reached = True
        answer.schedule, answer.batch_size, answer.regime = decision.fastest, None, None
        answer.context = rec.context  # not the constant's own: the one every trial shares, else none
        answer.lr, answer.axes = float(row["best_lr"]), {axis: row[axis] for axis in rec.extra_axes}
        answer.seconds, answer.steps, answer.examples = (float(row[c]) for c in ("seconds", "steps", "examples"))
        answer.predicted_seconds, answer.seconds_per_step = first["predicted_seconds"], None
        answer.predicted_interval = (float(row["predicted_low"]), float(row["predicted_high"]))
        answer.step_time_source, answer.seeds_reached = str(row["step_time_source"]), str(row["seeds_reached"])
        answer.at_budget_end = 0
        base = row["best_constant"]
        answer.baseline_batch_size = None if _missing(base) else int(base)
        answer.speedup = (float(row["constant_predicted_seconds"]) / answer.predicted_seconds
                          if answer.baseline_batch_size is not None and answer.predicted_seconds > 0 else None)
        answer.why = ["A schedule has no single batch size, so it has no place on the steps–examples frontier: "
                      "the frontier, B_crit and the other-hardware limits are the constant batch sizes'."] + [
            line for line in answer.why[1:]]
    answer.within_noise = [{k: v for k, v in e.items() if k != "text"} for e in entries[1:]]
    tied = [{**e, "name": _called(e), "setting": e["text"]} for e in entries]
    answer.sentence = (display.tie_sentence(tied, target) if len(entries) > 1
                       else _sentence(answer, first, target, constants_ran=not constants.empty))


def _entry(key, rows: pd.DataFrame, constants: pd.DataFrame) -> dict:
    """A setting named in the answer: a schedule (by its label) or a batch size."""
    if isinstance(key, str):
        row = rows.loc[key]
        return {"schedule": key, "lr": float(row["best_lr"]), "predicted_seconds": float(row["predicted_seconds"]),
                "steps": float(row["steps"]), "examples": float(row["examples"]),
                "text": lr_text(row["best_lr"], int(row["start_batch_size"]), row["lr_scale"])}
    row = constants.loc[key]
    return {"batch_size": int(key), "lr": float(row["best_lr"]), "predicted_seconds": float(row["predicted_seconds"]),
            "steps": float(row["steps"]), "examples": float(row["examples"]), "text": f"lr {row['best_lr']:g}",
            "at_budget_end": int(row["at_budget_end"])}


def _called(entry: dict) -> str:
    return name(entry["schedule"]) if "schedule" in entry else f"batch size {entry['batch_size']}"


def _sentence(answer, entry: dict, target: str, constants_ran: bool) -> str:
    low, high = answer.predicted_interval
    head = (f"Use {name(answer.schedule)} ({entry['text']}): {display.seconds(answer.predicted_seconds)} s to "
            f"{target} on this machine (median {display.count(answer.steps)} steps over its seeds, each at its "
            f"batch size's seconds per step; 95% interval {display.seconds(low)}–{display.seconds(high)} s)")
    if answer.baseline_batch_size is None:
        return head + ("; no constant batch size reached it on every seed." if constants_ran
                       else "; no constant batch size ran.")
    if answer.speedup is None:  # 0 s: the first evaluation met the target
        return head + "; it met the target before its first step."
    return (head + f", {answer.speedup:.2g}× as fast as batch size {answer.baseline_batch_size}, the fastest "
            "constant batch size.")


def statement(row: pd.Series, seeds: pd.DataFrame, target: str) -> str:
    """A schedule against the best constant batch size, seed by seed, in words."""
    schedule = row.name
    head = f"Batch-size schedule {schedule} ({lr_text(row['best_lr'], int(row['start_batch_size']), row['lr_scale'])})"
    if row["status"] != REACHED:
        return (f"{head} {row['status']} {target} ({row['seeds_reached']} seeds), so it takes no part in the "
                "answer.")
    if _missing(row["best_constant"]):
        return f"{head} reached {target} on every seed; no constant batch size did, so there is nothing to compare."
    base = int(row["best_constant"])
    mine = seeds[seeds["schedule"] == schedule]
    per_seed = "; ".join(
        f"seed {s.seed}: {display.count(s.steps)} steps against {display.count(s.constant_steps)} "
        f"({_percent(s.steps_saved)} fewer), {_ratio(s.examples_ratio)} its examples" for s in mine.itertuples())
    bar = f"≥ {STEPS_SAVED:.0%} fewer steps with no more examples"
    verdict = (f"{bar} on every seed ({int(row['seeds_clearing_bar'])} of {int(row['seeds'])}): yes"
               if row["clears_bar_every_seed"] else
               f"{bar} on {int(row['seeds_clearing_bar'])} of {int(row['seeds'])} seeds: not on every seed")
    return (f"{head} against batch size {base}, the fastest constant one: median {display.count(row['steps'])} "
            f"steps to {target} against {display.count(row['constant_steps'])}; seed by seed, a median "
            f"{_percent(row['steps_saved'])} fewer steps with {_ratio(row['examples_ratio'])} its examples; predicted "
            f"{display.seconds(row['predicted_seconds'])} s against "
            f"{display.seconds(row['constant_predicted_seconds'])} s. Per seed: {per_seed}. {verdict}.")


def coarse_line(seeds: pd.DataFrame) -> str | None:
    """A warning where some seed's steps saved rests on step counts read at evaluations far apart: the gaps before
    the schedule's and the constant's hits together over schedules.COARSE of their steps (the worst seed named);
    None where none does."""
    rows = coarse(seeds)
    if rows.empty:
        return None
    worst = rows.loc[rows["gap"].idxmax()]
    return (f"Steps to the target are read at evaluations, here coarsely: on seed {worst['seed']} the batch-size "
            f"schedule {worst['schedule']} was last evaluated {_steps(worst['read_every'])} before its "
            f"{display.count(worst['steps'])}, batch size {int(worst['best_constant'])} "
            f"{_steps(worst['constant_read_every'])} before its {display.count(worst['constant_steps'])} (together "
            f"{worst['gap']:.0%} of their steps), so its steps saved may be off by as much; {len(rows)} of "
            f"{int(seeds['steps_saved'].notna().sum())} comparisons seed by seed are read this coarsely. Set "
            "eval.every lower to read them finer.")


def _steps(n: float) -> str:
    return f"{display.count(n)} step{'' if n == 1 else 's'}"


def _percent(x) -> str:
    return display.DASH if _missing(x) else f"{x:.0%}" if x >= 0 else f"{-x:.0%} more, not"


def _ratio(x) -> str:
    return display.DASH if _missing(x) else f"{x:.2f}×"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
