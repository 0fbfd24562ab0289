"""The answer's detailed statements, each with the numbers it rests on (answer.py puts them together)."""

from __future__ import annotations

import math

import pandas as pd

from batchlab.errors import counted
from batchlab.frontier import EFFICIENCY, largest_efficient_batch
from batchlab.reporting import display
from batchlab.reporting.display import in_tokens, number
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.decision import INTERLEAVED
from batchlab.reporting.measured_noise import NoiseResult
from batchlab.reporting.science import FrontierResult
from batchlab.steptime import CPU_CLOCK

WITHIN = f"within {round((1 - EFFICIENCY) * 100)}% of perfect scaling"


def _seconds(x: float) -> str:
    return "∞" if x == math.inf else display.seconds(x)


def _spread(row) -> str:
    """The seeds behind a row's steps: '1 seed' or 'median of 3 seeds, 120–160'."""
    seeds = int(row.seeds)
    if seeds <= 1:
        return "1 seed"
    return f"median of {seeds} seeds, {display.count(row.steps_min)}–{display.count(row.steps_max)}"


def device_of(rec: SweepRecords) -> str:
    trials = rec.trials
    device = (trials["device"].fillna("?") + ", " + trials["device_name"].fillna("?")).where(trials["device"].notna())
    return display.distinct(device)


def step_source(rec: SweepRecords, rows: pd.DataFrame) -> str:
    """Where the seconds per step came from, in words."""
    if (rows["step_time_source"] == INTERLEAVED).all():
        facts = rec.step_facts
        clock = "this thread's CPU clock" if facts.get("clock") == CPU_CLOCK else "the wall clock"
        threads = facts.get("threads", "?")
        threads = f"{threads} thread{'' if threads == 1 else 's'}"
        return (f"Seconds per step timed interleaved ({facts.get('rounds', '?')} rounds over every batch size, median, "
                f"read on {clock}; {threads}, {facts.get('measured_at', '?')}).")
    return ("Seconds per step from each trial's own clock (train_seconds / steps), measured at different moments, "
            "so the machine's load at each moment is in the comparison: these records have no interleaved timing "
            "(step_times.json: a Dask sweep, --no-time-steps, or older records); run `batchlab sweep` on the same "
            "config again to time the steps (no trial is trained again).")


def fastest_text(rec: SweepRecords, target: str, reached: pd.DataFrame) -> str:
    """`reached`: the rows that reached the target, fastest (least predicted seconds) first."""
    rows = list(reached.itertuples())
    first = rows[0]
    text = (f"Fastest to {target} on this hardware ({device_of(rec)}): batch size {first.batch_size} "
            f"(lr {first.best_lr:g}), predicted {_seconds(first.predicted_seconds)} s = "
            f"{display.count(first.steps)} steps ({_spread(first)}) x {display.seconds(first.seconds_per_step)} s "
            f"a step, 95% interval {_seconds(first.predicted_low)}–{_seconds(first.predicted_high)} s; "
            f"{_seconds(first.seconds)} s as its trials' clocks measured it")
    if len(rows) == 1:
        return text + ". It is the only batch size that reached the target on every seed."
    second = rows[1]
    text += (f". Runner-up: batch size {second.batch_size} (lr {second.best_lr:g}), predicted "
             f"{_seconds(second.predicted_seconds)} s ({_seconds(second.predicted_low)}–"
             f"{_seconds(second.predicted_high)} s).")
    if second.within_noise:
        return text + " The two cannot be told apart on this machine (see the answer)."
    return text + " The difference is larger than this machine's timing noise and the spread over seeds."


def efficient_text(frontier: FrontierResult) -> str:
    """largest_efficient_batch on the examples to the target as recorded, with the examples it rests on."""
    points = frontier.points.sort_values("batch_used")
    if points.empty:  # reached, but at step 0: the target held before any training
        return "The target was met before any training step, so how the steps scale cannot be measured."
    if len(points) < 2:
        only = int(points["batch_size"].iloc[0])
        return (f"Only batch size {only} reached the target, so how the steps scale with the batch size "
                "cannot be measured.")
    largest = largest_efficient_batch(points["batch_used"], points["recorded_examples"])
    base = points.iloc[0]
    chosen = points[points["batch_used"] == largest].iloc[0]
    smallest = f"batch size {int(base['batch_size'])}'s {number(base['recorded_examples'])}"
    if int(chosen["batch_used"]) == int(base["batch_used"]):
        nxt = points.iloc[1]
        return (f"No batch size above {int(base['batch_size'])} stayed {WITHIN}: batch size "
                f"{int(nxt['batch_size'])} needed {number(nxt['recorded_examples'])} examples to the target against "
                f"{smallest} ({_efficiency(nxt, base)}); perfect scaling keeps the examples constant.")
    text = (f"Most data-efficient large batch: batch size {int(chosen['batch_size'])}, the largest still {WITHIN} — "
            f"it needed {number(chosen['recorded_examples'])} examples to the target ({number(chosen['steps'])} steps) "
            f"against {smallest} ({_efficiency(chosen, base)}); perfect scaling keeps the examples constant.")
    larger = points[points["batch_used"] > chosen["batch_used"]]
    if len(larger):
        nxt = larger.iloc[0]
        text += (f" The next, batch size {int(nxt['batch_size'])}, needed {number(nxt['recorded_examples'])} "
                 f"({_efficiency(nxt, base)}).")
    return text


def _efficiency(point, base) -> str:
    """Scaling efficiency: the smallest batch size's examples over this one's (100%: perfect scaling)."""
    return f"scaling efficiency {base['recorded_examples'] / point['recorded_examples'] * 100:.0f}%"


def critical_text(frontier: FrontierResult, noise: NoiseResult | None, any_reached: bool,
                  context: int | None = None) -> str:
    parts = []
    f = frontier.fit
    if f is not None:
        r2 = f"{f.r2:.2f}" if math.isfinite(f.r2) else "n/a (all steps equal)"
        e_min = f"{number(f.e_min)} examples{in_tokens(f.e_min, context)}"
        parts.append(f"Critical batch size from the steps-examples frontier: B_crit ≈ {number(f.b_crit)}"
                     f"{in_tokens(f.b_crit, context)} (S_min = {number(f.s_min)} steps, E_min = {e_min}, R² = {r2}, "
                     f"fitted on {len(f.batch_sizes)} batch sizes).")
        low, high = min(f.batch_sizes), max(f.batch_sizes)
        if f.b_crit > high:
            parts.append(f"That is above the largest batch size fitted ({high}), an extrapolation: the data "
                         f"place B_crit somewhere beyond {high}.")
        elif f.b_crit < low:
            parts.append(f"That is below the smallest batch size fitted ({low}), an extrapolation: the data "
                         f"place B_crit somewhere below {low}.")
        if math.isfinite(f.r2) and f.r2 < 0.9:
            parts.append(f"The fit is loose (R² = {f.r2:.2f}): treat B_crit as rough.")
    elif any_reached:
        parts.append(f"No critical batch size: the frontier cannot be fitted ({frontier.reason}).")
    if noise is not None and noise.to_target_trials:
        text = (f"Measured gradient noise scale B_simple ≈ {number(noise.to_target)}"
                f"{in_tokens(noise.to_target, context)}, averaged over training up to the target (median over "
                f"{counted(noise.to_target_trials, 'trial')} of each trial's mean, "
                f"{counted(noise.to_target_measurements, 'measurement')} in all")
        if math.isfinite(noise.b_simple):
            text += f"; {number(noise.b_simple)} when training ended"
        if math.isfinite(noise.start):
            text += f", {number(noise.start)} at the first measurement"
        parts.append(text + ").")
        if noise.few:
            parts.append(noise.advice())
        if f is not None:
            parts.append(f"The fitted B_crit is {f.b_crit / noise.to_target:.2g}× this B_simple.")
    elif noise is not None and math.isfinite(noise.b_simple):
        parts.append(f"Measured gradient noise scale B_simple ≈ {number(noise.b_simple)} when training ended "
                     f"(median over {counted(noise.trials, 'completed trial')}; none was measured before the target).")
    elif noise is not None and math.isfinite(noise.end):
        parts.append(f"Measured gradient noise scale B_simple ≈ {number(noise.end)} at the end of training "
                     f"(median over the last measurement of {counted(noise.curve_trials, 'trial')}).")
    return " ".join(parts)
