"""The answer a report opens with: which batch size (and lr) to use on this machine, and why.

One sentence a user can act on, then why (the regime the batch size sits in, B_crit beside
B_simple, and what would change on other hardware), then the detailed statements, each with the
numbers it rests on. Everything here reads the tables and the science; nothing is recomputed.

Rules (report.md lists them too):
- The batch size to use is the fastest to the headline target on this machine: the least predicted
  seconds, median steps to the target over seeds x median seconds per step timed interleaved
  (decision.py; the time_to_accuracy column `fastest`), with its best lr, among the batch sizes whose
  best setting reached the target on every seed. Batch sizes within the noise of it are named beside
  it, with what sets them apart (fewer steps, fewer examples). Its speed-up is predicted against the
  smallest batch size that reached the target.
- Partly reached (some seeds missed) is never recommended as if it had reached: with no batch size
  reaching on every seed, the answer says so and names the closest, with k of n seeds.
- The data-efficient batch size is the largest whose measured examples to the target stay within
  10% of perfect scaling from the smallest that reached it (with one batch size reaching, that
  one); the fewest-steps batch size is the time_to_accuracy column `fewest_steps`.
- Nothing reached: the closest batch size is the one with the most seeds reaching, then the best
  final test accuracy (lowest final test loss for regression).
- With trials cut by a race (`--race`), no claim is made about which batch size needs the fewest steps
  or examples: the cut ones' steps are unknown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from batchlab.errors import counted
from batchlab.frontier import largest_efficient_batch
from batchlab.reporting import answer_schedules as schedules
from batchlab.reporting import display
from batchlab.reporting.answer_details import (WITHIN, critical_text, device_of, efficient_text, fastest_text,
                                               step_source)
from batchlab.reporting.display import in_tokens, number
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.measured_noise import NoiseResult
from batchlab.reporting.science import FrontierResult, Science
from batchlab.reporting.tables import REACHED, Tables
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
    batch_size: int | None = None  # fastest to the target on this machine (None too when a schedule is)
    schedule: str | None = None  # the batch-size schedule fastest to the target, by its label (batches.label)
    lr: float | None = None  # its best lr
    axes: dict = field(default_factory=dict)  # its values of any other swept axis
    seconds: float | None = None  # median training seconds to the target over the best lr's seeds, as measured
    predicted_seconds: float | None = None  # median steps x median seconds per step: what decided
    predicted_interval: tuple[float, float] | None = None  # its 95% bootstrap interval
    seconds_per_step: float | None = None
    step_time_source: str | None = None  # "interleaved" (step_times.json) or "trials" (their own clocks)
    steps: float | None = None
    examples: float | None = None
    seeds_reached: str | None = None  # "k/n" of the best lr's finished seeds
    at_budget_end: int = 0  # of those, seeds that first met the target at the budget's last step
    within_noise: list[dict] = field(default_factory=list)  # other batch sizes as fast within the noise:
    # {batch_size, lr, predicted_seconds, steps, examples}
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
    context: int | None = None  # sequence tasks: tokens per example (the chosen setting's, else the one all share);
    # batch sizes are stated in tokens too

    def in_short(self) -> str | None:
        """'use batch size 256 with lr 0.1', or with batch sizes within the noise 'use batch size 256 (lr 0.1) or
        64 (lr 0.05)'; None when nothing reached the target."""
        if self.batch_size is None and self.schedule is None:
            return None
        if any("schedule" in o for o in self.within_noise) or self.schedule is not None:
            names = [_short(self.schedule, self.batch_size, self.lr)] + [
                _short(o.get("schedule"), o.get("batch_size"), o["lr"]) for o in self.within_noise]
            return "use " + (f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0])
        if not self.within_noise:
            return f"use batch size {self.batch_size} with lr {self.lr:g}"
        names = [f"{self.batch_size} (lr {self.lr:g})"] + [f"{o['batch_size']} (lr {o['lr']:g})"
                                                           for o in self.within_noise]
        return f"use batch size {', '.join(names[:-1])} or {names[-1]}"

    def to_dict(self) -> dict:
        """JSON-safe: NaN and infinity become None, numpy numbers plain ones."""
        return {key: plain(value) for key, value in asdict(self).items()}


def _short(schedule: str | None, batch_size: int | None, lr: float) -> str:
    return f"the batch-size schedule {schedule} (lr {lr:g} at its start)" if schedule else \
        f"batch size {batch_size} (lr {lr:g})"


def plain(value):
    """A value made strict JSON: NaN and infinity None (a missing figure), numpy numbers plain ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
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
    reached = rows[rows["status"] == REACHED].sort_values(["predicted_seconds", "steps", "batch_size"],
                                                          kind="stable")
    noise = science.noise
    frontier = science.frontier
    fit = frontier.fit
    answer = Recommendation(target=tables.target, target_metric=rec.target_metric, reached=not reached.empty,
                            sentence="", device=device_of(rec),
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
        if rec.sequence:  # its own: a swept dataset.context gives each setting another
            answer.context = int(chosen["context"])
        answer.seconds, answer.steps, answer.examples, answer.predicted_seconds, answer.seconds_per_step = (
            float(chosen[c]) for c in ("seconds", "steps", "examples", "predicted_seconds", "seconds_per_step"))
        answer.predicted_interval = (float(chosen["predicted_low"]), float(chosen["predicted_high"]))
        answer.step_time_source = str(chosen["step_time_source"])
        answer.seeds_reached, answer.at_budget_end = str(chosen["seeds_reached"]), int(chosen["at_budget_end"])
        answer.within_noise = [{"batch_size": int(r.batch_size), "lr": float(r.best_lr),
                                "predicted_seconds": float(r.predicted_seconds), "steps": float(r.steps),
                                "examples": float(r.examples), "at_budget_end": int(r.at_budget_end)}
                               for r in reached[reached["within_noise"]].itertuples()]
        answer.baseline_batch_size = int(smallest["batch_size"])
        answer.speedup = (float(smallest["predicted_seconds"]) / answer.predicted_seconds
                          if answer.predicted_seconds > 0 else None)
        answer.regime = frontier.regimes.get(answer.batch_size)
        cut = rows[rows["cut_by_race"]]
        if cut.empty:
            answer.fewest_steps_batch_size = int(rows[rows["fewest_steps"]]["batch_size"].iloc[0])
            answer.data_efficient_batch_size = _data_efficient(frontier)
        answer.sentence = _sentence(answer, target, len(reached))
        suggested = rec.suggested
        answer.why = [_regime_text(answer, frontier, rec.context),
                      _scale_text(answer, noise, rec.context, suggested),
                      _hardware_text(answer, rows, frontier) if cut.empty else _cut_text(cut, suggested is not None)]
        answer.details = [fastest_text(rec, target, reached), step_source(rec, reached), efficient_text(frontier)]
    schedules.apply(answer, rec, tables, target)
    critical = critical_text(frontier, noise, any_reached=not reached.empty, context=rec.context)
    if critical:
        answer.details.append(critical)
    if not answer.why and noise is not None and noise.advice():
        answer.why.append(noise.advice())
    if tables.schedules is not None and (line := schedules.coarse_line(tables.schedules.headline_seeds)):
        answer.why.append(line)
    return answer


# --- the sentence and why ------------------------------------------------------------------------

def _setting(answer: Recommendation) -> str:
    extra = ", ".join(f"{axis} {display.value(value)}" for axis, value in answer.axes.items())
    return f"lr {answer.lr:g}" + (f" ({extra})" if extra else "")


def _times(x: float) -> str:
    return f"{x:.1f}×" if x < 10 else f"{x:,.0f}×"


def _sentence(answer: Recommendation, target: str, reached: int) -> str:
    if answer.within_noise:
        return _tie_sentence(answer, target)
    low, high = answer.predicted_interval
    head = (f"Use batch size {answer.batch_size}{in_tokens(answer.batch_size, answer.context)} with "
            f"{_setting(answer)}: {display.seconds(answer.predicted_seconds)} s "
            f"to {target} on this machine ({display.count(answer.steps)} steps x "
            f"{display.seconds(answer.seconds_per_step)} s a step; 95% interval {display.seconds(low)}–"
            f"{display.seconds(high)} s)")
    margin = display.at_budget_end("Batch size " + str(answer.batch_size), answer.at_budget_end)
    if reached == 1:
        return head + ", the only batch size that reached it on every seed." + margin
    if answer.batch_size == answer.baseline_batch_size:
        return head + "; it is the smallest batch size that reached it, and no larger one was faster." + margin
    if answer.speedup is None:  # the target held at step 0: no time to compare
        return head + "." + margin
    return (head + f", {_times(answer.speedup)} faster than batch size {answer.baseline_batch_size}, the smallest "
            "that reached it." + margin)


def _tie_sentence(answer: Recommendation, target: str) -> str:
    """The fastest and those within the noise of it, named together, with what sets them apart."""
    fastest = {"batch_size": answer.batch_size, "setting": _setting(answer), "steps": answer.steps,
               "predicted_seconds": answer.predicted_seconds, "examples": answer.examples,
               "at_budget_end": answer.at_budget_end}
    others = [{**o, "setting": f"lr {o['lr']:g}"} for o in answer.within_noise]
    return display.tie_sentence([{**e, "name": f"batch size {e['batch_size']}"} for e in [fastest, *others]], target)


def _regime_text(answer: Recommendation, frontier: FrontierResult, context: int | None) -> str:
    """`context`: the tokens per example every trial shares (None: B_crit, fitted over settings whose contexts
    differ, has no one figure in tokens)."""
    fit = frontier.fit
    if fit is None:
        return f"No regime can be named: the steps–examples frontier was not fitted ({frontier.reason})."
    if answer.regime is None:
        return "The chosen batch size has no place on the fitted frontier."
    return (f"Batch size {answer.batch_size} sits in the {answer.regime} regime of the steps–examples frontier "
            f"fitted to {len(fit.batch_sizes)} batch sizes (B_crit ≈ {number(fit.b_crit)}"
            f"{in_tokens(fit.b_crit, context)}): "
            f"{REGIME_MEANS[answer.regime]}.")


def _scale_text(answer: Recommendation, noise: NoiseResult | None, context: int | None,
                suggested: dict | None = None) -> str:
    """`context`: as _regime_text's. `suggested`: suggest.json, where suggest made the records (its trials measure
    no noise: its own noise run did, recorded apart)."""
    crit = (f"Critical batch size B_crit ≈ {number(answer.b_crit)} "
            f"({', '.join(filter(None, [display.tokens(answer.b_crit, context), 'frontier fit']))})") \
        if answer.b_crit else "No critical batch size (no frontier fit)"
    measured = (suggested or {}).get("b_simple")
    if noise is None and isinstance(measured, (int, float)) and math.isfinite(measured):
        return (crit + f"; suggest's noise run measured B_simple ≈ {number(measured)}{in_tokens(measured, context)} "
                f"up to the pilot's steps to the target (suggest.json: the mean of "
                f"{counted(int(suggested.get('measurements') or 0), 'measurement')}; the run is in noise-scale/).")
    if noise is None:
        return crit + ("; suggest's noise run measured no B_simple (suggest.json's notes say why)." if suggested
                       else "; the gradient noise scale B_simple was not measured (set noise.every to measure it).")
    if not noise.to_target_trials:
        return crit + "; no B_simple was measured before the target was reached."
    text = (f"{crit}; gradient noise scale B_simple ≈ {number(noise.to_target)}"
            f"{in_tokens(noise.to_target, context)}, averaged over training up to "
            f"the target (median over {counted(noise.to_target_trials, 'trial')}, "
            f"{counted(noise.to_target_measurements, 'measurement')}).")
    return text + (" " + noise.advice() if noise.few else "")


def _hardware_text(answer: Recommendation, rows: pd.DataFrame, frontier: FrontierResult) -> str:
    efficient, fewest = answer.data_efficient_batch_size, answer.fewest_steps_batch_size
    by_bs = rows.set_index("batch_size")
    if efficient == fewest == answer.batch_size:
        return (f"Batch size {answer.batch_size} is also the most data-efficient choice ({WITHIN}) and needs the "
                "fewest steps, so other hardware should not change the answer.")
    parts = []
    if efficient is not None:  # the examples recorded, as the choice was made, on the frontier's points
        points = frontier.points.set_index("batch_size")
        examples = display.count(points.loc[efficient, "recorded_examples"])
        parts.append(f"where each example costs the same whatever the batch (throughput flat in the batch "
                     f"size), the data-efficient batch size {efficient} would win: the largest {WITHIN}, "
                     f"{examples} examples to the target")
    parts.append(f"where a step costs about the same at any batch size that fits (an accelerator with "
                 f"parallelism to spare), batch size {fewest} would win: the fewest steps, "
                 f"{display.count(by_bs.loc[fewest, 'steps'])}")
    return ("On other hardware the fastest batch size moves between two limits: " + "; ".join(parts) + ".")


def _cut_text(cut: pd.DataFrame, by_suggest: bool = False) -> str:
    sizes = ", ".join(str(int(b)) for b in cut["batch_size"])
    noun = "batch size" if len(cut) == 1 else "batch sizes"
    return (f"The race stopped trials at {noun} {sizes} before their best lr was known, so how many steps or "
            "examples they need is unknown: which batch size would win on other hardware cannot be said from "
            "these records (" + ("suggest races by design: `batchlab sweep` of the grid finds out)." if by_suggest
                                 else "run the grid without --race to find out)."))


def _data_efficient(frontier: FrontierResult) -> int | None:
    points = frontier.points
    if points.empty:
        return None
    used = largest_efficient_batch(points["batch_used"], points["recorded_examples"])
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
    if best["reached"]:  # some seeds reached it, not all: never an answer without saying so
        return (f"No batch size reached {target} on every seed, so none can be recommended without a caveat; the "
                f"closest was batch size {int(best['batch_size'])} with lr {best['best_lr']:g}, which reached it on "
                f"{int(best['reached'])} of {int(best['seeds'])} seeds (final {name} {value}, median). Train longer "
                "or set an easier target.", int(best["batch_size"]))
    return (f"No batch size reached {target}, so none can be recommended yet; the closest was batch size "
            f"{int(best['batch_size'])} with lr {best['best_lr']:g} ({best['seeds_reached']} seeds reached it, "
            f"final {name} {value}). Train longer or set an easier target.", int(best["batch_size"]))


