"""The answer a report opens with: which batch size (and lr) to use on this machine, and why.

One sentence a user can act on, then why (the regime the batch size sits in, B_crit beside
B_simple, and what would change on other hardware), then the detailed statements, each with the
numbers it rests on. Everything here reads the tables and the science; nothing is recomputed.

Rules (report.md lists them too):
- The batch size to use is the fastest to the headline target on this machine (least median
  training seconds; the time_to_accuracy column `fastest`), with its best lr. Its speed-up is
  measured against the smallest batch size that reached the target.
- The data-efficient batch size is the largest whose measured examples to the target stay within
  10% of perfect scaling from the smallest that reached it (with one batch size reaching, that
  one); the fewest-steps batch size is the time_to_accuracy column `fewest_steps`.
- Nothing reached: the closest batch size is the one with the most seeds reaching, then the best
  final test accuracy (lowest final test loss for regression).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from batchlab.frontier import EFFICIENCY, largest_efficient_batch
from batchlab.reporting import display
from batchlab.reporting.display import in_tokens, number
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.measured_noise import NoiseResult
from batchlab.reporting.science import FrontierResult, Science
from batchlab.reporting.tables import REACHED, Tables

WITHIN = f"within {round((1 - EFFICIENCY) * 100)}% of perfect scaling"
REGIME_MEANS = {
    "perfect scaling": "doubling the batch there still about halves the steps, so larger batches lost here "
                       "only because this machine processes them no faster per example",
    "diminishing returns": "doubling the batch there still cuts the steps, but by less than half, so each "
                           "larger batch needs more examples",
    "maximal data parallelism": "the steps are already within 10% of the fewest any batch size can take "
                                "(S_min), so a larger batch buys almost no steps and costs examples",
}


@dataclass
class Recommendation:
    """The answer as data. Batch-size fields are None when no batch size reached the target."""

    target: float
    target_metric: str
    reached: bool  # some batch size reached the target
    sentence: str  # the one sentence to act on
    why: list[str] = field(default_factory=list)  # regime; B_crit and B_simple; other hardware
    details: list[str] = field(default_factory=list)  # the detailed statements with their evidence
    batch_size: int | None = None  # fastest to the target on this machine
    lr: float | None = None  # its best lr
    axes: dict = field(default_factory=dict)  # its values of any other swept axis
    seconds: float | None = None  # median training seconds to the target over the best lr's seeds
    steps: float | None = None
    examples: float | None = None
    seeds_reached: str | None = None  # "k/n" of the best lr's finished seeds
    baseline_batch_size: int | None = None  # the smallest batch size that reached the target
    speedup: float | None = None  # its seconds over the chosen batch size's
    regime: str | None = None  # of the chosen batch size on the fitted frontier (None: no fit)
    b_crit: float | None = None  # fitted critical batch size
    b_simple: float | None = None  # measured noise scale, averaged over training up to the target
    b_simple_measurements: int = 0  # metrics.csv rows it rests on
    b_simple_trials: int = 0  # trials it rests on
    data_efficient_batch_size: int | None = None  # largest within 10% of perfect scaling
    fewest_steps_batch_size: int | None = None
    closest_batch_size: int | None = None  # nothing reached: the batch size that came closest
    device: str = ""
    context: int | None = None  # sequence tasks: tokens per example; batch sizes are stated in tokens too

    def to_dict(self) -> dict:
        """JSON-safe: NaN and infinity become None, numpy numbers plain ones."""
        return {key: _plain(value) for key, value in asdict(self).items()}


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def recommend(rec: SweepRecords, tables: Tables, science: Science) -> Recommendation:
    target = display.target_text(rec, tables.target)
    rows = tables.headline_rows
    reached = rows[rows["status"] == REACHED].sort_values(["seconds", "steps", "batch_size"], kind="stable")
    noise = science.noise
    frontier = science.frontier
    fit = frontier.fit
    answer = Recommendation(target=tables.target, target_metric=rec.target_metric, reached=not reached.empty,
                            sentence="", device=_device(rec),
                            b_crit=fit.b_crit if fit else None, context=rec.context)
    if noise is not None and noise.to_target_trials:
        answer.b_simple = noise.to_target
        answer.b_simple_measurements = noise.to_target_measurements
        answer.b_simple_trials = noise.to_target_trials
    if reached.empty:
        answer.sentence, answer.closest_batch_size = _nothing_reached(rec, rows, target)
        answer.details = [answer.sentence]
    else:
        chosen = rows[rows["fastest"]].iloc[0]
        smallest = reached.sort_values("batch_size").iloc[0]
        answer.batch_size, answer.lr = int(chosen["batch_size"]), float(chosen["best_lr"])
        answer.axes = {axis: chosen[axis] for axis in rec.extra_axes}
        answer.seconds, answer.steps, answer.examples = (float(chosen[c]) for c in ("seconds", "steps", "examples"))
        answer.seeds_reached = str(chosen["seeds_reached"])
        answer.baseline_batch_size = int(smallest["batch_size"])
        answer.speedup = float(smallest["seconds"]) / answer.seconds if answer.seconds > 0 else None
        answer.regime = frontier.regimes.get(answer.batch_size)
        answer.fewest_steps_batch_size = int(rows[rows["fewest_steps"]]["batch_size"].iloc[0])
        answer.data_efficient_batch_size = _data_efficient(frontier)
        answer.sentence = _sentence(answer, target, len(reached))
        answer.why = [_regime_text(answer, frontier), _scale_text(answer, noise),
                      _hardware_text(answer, rows, frontier)]
        answer.details = [_fastest_text(rec, target, reached), _efficient_text(frontier)]
    critical = _critical_text(frontier, noise, any_reached=not reached.empty, context=rec.context)
    if critical:
        answer.details.append(critical)
    if not answer.why and noise is not None and noise.advice():
        answer.why.append(noise.advice())
    return answer


# --- the sentence and why ------------------------------------------------------------------------

def _setting(answer: Recommendation) -> str:
    extra = ", ".join(f"{axis} {display.value(value)}" for axis, value in answer.axes.items())
    return f"lr {answer.lr:g}" + (f" ({extra})" if extra else "")


def _times(x: float) -> str:
    return f"{x:.1f}×" if x < 10 else f"{x:,.0f}×"


def _sentence(answer: Recommendation, target: str, reached: int) -> str:
    head = (f"Use batch size {answer.batch_size}{in_tokens(answer.batch_size, answer.context)} with "
            f"{_setting(answer)}: {display.seconds(answer.seconds)} s "
            f"to {target} on this machine")
    if reached == 1:
        return head + ", the only batch size that reached it."
    if answer.batch_size == answer.baseline_batch_size:
        return head + "; it is the smallest batch size that reached it, and no larger one was faster."
    if answer.speedup is None:  # the target held at step 0: no time to compare
        return head + "."
    return (head + f" ({_times(answer.speedup)} faster than batch size {answer.baseline_batch_size}, the smallest "
            "that reached it).")


def _regime_text(answer: Recommendation, frontier: FrontierResult) -> str:
    fit = frontier.fit
    if fit is None:
        return f"No regime can be named: the steps–examples frontier was not fitted ({frontier.reason})."
    if answer.regime is None:
        return "The chosen batch size has no place on the fitted frontier."
    return (f"Batch size {answer.batch_size} sits in the {answer.regime} regime of the steps–examples frontier "
            f"fitted to {len(fit.batch_sizes)} batch sizes (B_crit ≈ {number(fit.b_crit)}"
            f"{in_tokens(fit.b_crit, answer.context)}): "
            f"{REGIME_MEANS[answer.regime]}.")


def _scale_text(answer: Recommendation, noise: NoiseResult | None) -> str:
    crit = (f"Critical batch size B_crit ≈ {number(answer.b_crit)} "
            f"({', '.join(filter(None, [display.tokens(answer.b_crit, answer.context), 'frontier fit']))})") \
        if answer.b_crit else "No critical batch size (no frontier fit)"
    if noise is None:
        return crit + "; the gradient noise scale B_simple was not measured (set noise.every to measure it)."
    if not noise.to_target_trials:
        return crit + "; no B_simple was measured before the target was reached."
    text = (f"{crit}; gradient noise scale B_simple ≈ {number(noise.to_target)}"
            f"{in_tokens(noise.to_target, answer.context)}, averaged over training up to "
            f"the target (median over {noise.to_target_trials} trials, {noise.to_target_measurements} "
            "measurements).")
    return text + (" " + noise.advice() if noise.few else "")


def _hardware_text(answer: Recommendation, rows: pd.DataFrame, frontier: FrontierResult) -> str:
    efficient, fewest = answer.data_efficient_batch_size, answer.fewest_steps_batch_size
    by_bs = rows.set_index("batch_size")
    if efficient == fewest == answer.batch_size:
        return (f"Batch size {answer.batch_size} is also the most data-efficient choice ({WITHIN}) and needs the "
                "fewest steps, so other hardware should not change the answer.")
    parts = []
    if efficient is not None:  # examples B·S as the choice was made, on the frontier's points
        points = frontier.points.set_index("batch_size")
        examples = display.count(points.loc[efficient, "examples"])
        parts.append(f"where each example costs the same whatever the batch (throughput flat in the batch "
                     f"size), the data-efficient batch size {efficient} would win: the largest {WITHIN}, "
                     f"{examples} examples to the target")
    parts.append(f"where a step costs about the same at any batch size that fits (an accelerator with "
                 f"parallelism to spare), batch size {fewest} would win: the fewest steps, "
                 f"{display.count(by_bs.loc[fewest, 'steps'])}")
    return ("On other hardware the fastest batch size moves between two limits: " + "; ".join(parts) + ".")


def _data_efficient(frontier: FrontierResult) -> int | None:
    points = frontier.points
    if points.empty:
        return None
    used = largest_efficient_batch(points["batch_used"], points["steps"])
    return int(points.loc[points["batch_used"] == used, "batch_size"].iloc[0])


def _nothing_reached(rec: SweepRecords, rows: pd.DataFrame, target: str) -> tuple[str, int | None]:
    column = "final_test_loss" if rec.regression else "final_test_accuracy"
    tried = rows[rows["seeds"] > 0]
    if tried.empty:
        return f"No trial has finished yet, so no batch size can be recommended for {target}.", None
    ranked = tried.assign(_final=tried[column] if rec.regression else -tried[column]).sort_values(
        ["reached", "_final", "batch_size"], ascending=[False, True, True], na_position="last", kind="stable")
    best = ranked.iloc[0]
    name = "test loss" if rec.regression else "test accuracy"
    value = display.loss(best[column]) if rec.regression else display.accuracy(best[column])
    return (f"No batch size reached {target}, so none can be recommended yet; the closest was batch size "
            f"{int(best['batch_size'])} with lr {best['best_lr']:g} ({best['seeds_reached']} seeds reached it, "
            f"final {name} {value}). Train longer or set an easier target.", int(best["batch_size"]))


# --- the detailed statements ---------------------------------------------------------------------

def _seconds(x: float) -> str:
    return "∞" if x == math.inf else display.seconds(x)


def _range(row) -> str:
    """The seeds behind a reached row's seconds: '1 seed' or 'median of 3 seeds, range 4–6 s'."""
    seeds = int(row.seeds)
    if seeds <= 1:
        return "1 seed"
    return f"median of {seeds} seeds, range {_seconds(float(row.seconds_min))}–{_seconds(float(row.seconds_max))} s"


def _overlap(a, b) -> bool:
    return max(float(a.seconds_min), float(b.seconds_min)) <= min(float(a.seconds_max), float(b.seconds_max))


def _device(rec: SweepRecords) -> str:
    trials = rec.trials
    device = (trials["device"].fillna("?") + ", " + trials["device_name"].fillna("?")).where(trials["device"].notna())
    return display.distinct(device)


def _fastest_text(rec: SweepRecords, target: str, reached: pd.DataFrame) -> str:
    first = next(reached.itertuples())
    text = (f"Fastest to {target} on this hardware ({_device(rec)}): batch size {first.batch_size} "
            f"(lr {first.best_lr:g}), {_seconds(first.seconds)} s of training ({_range(first)})")
    if len(reached) == 1:
        return text + "; it is the only batch size that reached the target."
    second = list(reached.itertuples())[1]
    text += (f"; runner-up batch size {second.batch_size} (lr {second.best_lr:g}), {_seconds(second.seconds)} s "
             f"({_range(second)}).")
    if max(first.seeds, second.seeds) > 1:
        if _overlap(first, second):
            text += (" Their seed ranges overlap, so the two cannot be told apart: more seeds would be "
                     "needed to separate them.")
        else:
            text += " Their seed ranges do not overlap."
    else:
        text += " With one seed each there is no spread to judge the difference by."
    return text


def _efficient_text(frontier: FrontierResult) -> str:
    """largest_efficient_batch on the measured S(B), with the examples it rests on."""
    points = frontier.points.sort_values("batch_used")
    if points.empty:  # reached, but at step 0: the target held before any training
        return "The target was met before any training step, so how the steps scale cannot be measured."
    if len(points) < 2:
        only = int(points["batch_size"].iloc[0])
        return (f"Only batch size {only} reached the target, so how the steps scale with the batch size "
                "cannot be measured.")
    largest = largest_efficient_batch(points["batch_used"], points["steps"])
    base = points.iloc[0]
    chosen = points[points["batch_used"] == largest].iloc[0]
    smallest = f"batch size {int(base['batch_size'])}'s {number(base['examples'])}"
    if int(chosen["batch_used"]) == int(base["batch_used"]):
        nxt = points.iloc[1]
        return (f"No batch size above {int(base['batch_size'])} stayed {WITHIN}: batch size "
                f"{int(nxt['batch_size'])} needed {number(nxt['examples'])} examples to the target against "
                f"{smallest} ({_efficiency(nxt, base)}); perfect scaling keeps the examples B·S constant.")
    text = (f"Most data-efficient large batch: batch size {int(chosen['batch_size'])}, the largest still {WITHIN} — "
            f"it needed {number(chosen['examples'])} examples to the target ({number(chosen['steps'])} steps) "
            f"against {smallest} ({_efficiency(chosen, base)}); perfect scaling keeps the examples B·S constant.")
    larger = points[points["batch_used"] > chosen["batch_used"]]
    if len(larger):
        nxt = larger.iloc[0]
        text += (f" The next, batch size {int(nxt['batch_size'])}, needed {number(nxt['examples'])} "
                 f"({_efficiency(nxt, base)}).")
    return text


def _efficiency(point, base) -> str:
    """Scaling efficiency: the smallest batch size's examples over this one's (100%: perfect scaling)."""
    return f"scaling efficiency {base['examples'] / point['examples'] * 100:.0f}%"


def _critical_text(frontier: FrontierResult, noise: NoiseResult | None, any_reached: bool,
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
                f"{in_tokens(noise.to_target, context)}, averaged over training up to "
                f"the target (median over {noise.to_target_trials} trials of each trial's mean, "
                f"{noise.to_target_measurements} measurements in all")
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
                     f"(median over {noise.trials} completed trials; none was measured before the target).")
    elif noise is not None and math.isfinite(noise.end):
        parts.append(f"Measured gradient noise scale B_simple ≈ {number(noise.end)} at the end of training "
                     f"(median over {noise.curve_trials} trials' last measurement).")
    return " ".join(parts)
