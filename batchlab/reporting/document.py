"""What report.md and report.html say, in order, as blocks (render.py turns them into either).

The answer comes first (one sentence to act on, and why), then the headline figure, then the
evidence: the detailed statements, the setup, the time-to-accuracy tables, the science, the lr
grids, the plots, the rules used and every trial.
"""

from __future__ import annotations

import pandas as pd

from batchlab.reporting import display, schedule_display
from batchlab.reporting.answer import Recommendation
from batchlab.reporting.figures import Plot
from batchlab.reporting.load import FINISHED, INFEASIBLE, SweepRecords
from batchlab.reporting.plots import HEADLINE
from batchlab.reporting.render import Block
from batchlab.reporting.science import Science
from batchlab.reporting.science_sections import (SCIENCE_PLOTS, frontier_section, gap_section, lr_section,
                                                 noise_section)
from batchlab.reporting.tables import REACHED, Tables

HEADLINE_ID = "time-to-accuracy"


def blocks(rec: SweepRecords, tables: Tables, counts: dict[str, int], plots: list[Plot], science: Science,
           answer: Recommendation) -> list[Block]:
    by_name = {plot.filename: plot for plot in plots}
    out = [Block("h1", f"batchlab report: {rec.name}", literal=True),
           Block("answer", answer.sentence, items=list(answer.why), id="answer")]
    if HEADLINE in by_name:
        out.append(Block("image", plot=by_name[HEADLINE]))
    if rec.warnings:
        out += [Block("h2", "Warnings"), Block("list", items=list(rec.warnings), id="warnings", literal=True)]
    out += [Block("h2", "Recommendation in detail"), Block("list", items=list(answer.details), id="recommendation")]
    out += [Block("h2", "Setup"), Block("table", table=_header(rec, tables, counts), id="header",
                                        literal_columns=("value",), wrap_columns=("value",))]

    target = display.target_text(rec, tables.target)
    out.append(Block("h2", f"Time to accuracy: {target}"))
    out.append(Block("p", "Seconds and steps to target: median over the best lr's seeds (min–max; ∞: a seed "
                          "that did not reach it). Every column is in time_to_accuracy.csv and below."))
    rows = tables.headline_rows
    out.append(_tta_table(rec, rows, HEADLINE_ID, compact=True))
    out.append(_tta_details(rec, rows, "Every column", f"{HEADLINE_ID}-full"))
    out += _headline_notes(rec, tables)
    out += _not_completed(rec, tables)

    for other in [t for t in tables.time_to_accuracy["target"].unique() if t != tables.target]:
        rows = tables.time_to_accuracy[tables.time_to_accuracy["target"] == other]
        out.append(Block("h3", f"Other target: {display.target_text(rec, other)}"))
        out.append(_tta_table(rec, rows, "", compact=True))

    out += schedule_display.section(tables.schedules, target, by_name)
    out += frontier_section(rec, tables, science, by_name)
    out += noise_section(science, by_name)

    out.append(Block("h2", "Learning rate × batch size"))
    out.append(Block("p", f"Median steps to {target}: the best lr of a batch size is the one with the fewest "
                          "(a dash: not run or not finished)."))
    out.append(Block("table", table=display.grid(tables.steps_grid, tables.grid_notes, display.count),
                     id="lr-steps-grid"))
    out.append(Block("p", f"Median training seconds to {target}."))
    out.append(Block("table", table=display.grid(tables.lr_grid, tables.grid_notes, display.seconds),
                     id="lr-grid"))
    final_name = "test loss" if rec.regression else "test accuracy"
    out.append(Block("p", f"Median final {final_name}."))
    # Not reaching the target says nothing about the final figure: only infeasible cells are named.
    infeasible_notes = tables.grid_notes.replace("not reached", "")
    out.append(Block("table", table=display.grid(tables.final_grid, infeasible_notes,
                                                   display.loss if rec.regression else display.accuracy),
                     id="final-grid"))
    out += lr_section(science, by_name)
    out += gap_section(rec, science, by_name)

    rest = [plot for plot in plots if plot.filename not in (HEADLINE, *SCIENCE_PLOTS, schedule_display.PLOT)]
    if rest:
        out.append(Block("h2", "Plots"))
        out += [Block("image", plot=plot) for plot in rest]

    out.append(Block("h2", "How to read this report"))
    schedule_rules = [schedule_display.RULE] if tables.schedules is not None else []
    out.append(Block("list", items=RULES + schedule_rules + SCIENCE_RULES))
    out.append(Block("h2", "Trials"))
    trials = display.trials(rec, tables.trials)
    out.append(Block("details", text=f"All {len(tables.trials)} trials", table=trials, id="trials",
                     literal_columns=("trial", "reason", *rec.extra_axes), wrap_columns=("reason",),
                     nowrap_columns=("trial",)))
    if rec.sweep_yaml is not None:
        out.append(Block("h2", "sweep.yaml"))
        out.append(Block("code", rec.sweep_yaml))
    return out


def _tta_table(rec: SweepRecords, rows: pd.DataFrame, table_id: str, compact: bool) -> Block:
    return Block("table", table=display.time_to_accuracy(rec, rows, spread=True, compact=compact), id=table_id,
                 literal_columns=tuple(rec.extra_axes))


def _tta_details(rec: SweepRecords, rows: pd.DataFrame, summary: str, table_id: str) -> Block:
    return Block("details", text=summary, table=display.time_to_accuracy(rec, rows, spread=True), id=table_id,
                 literal_columns=tuple(rec.extra_axes))


RULES = [
    "The answer at the top: the batch size fastest to the headline target on this machine, with its best lr: "
    "the least predicted time, median steps to the target over its seeds x seconds per step, the steps from "
    "the trials and the seconds per step from step_times.json (every batch size timed side by side in one go, "
    "after the trials by `batchlab sweep`, in its scan by `batchlab suggest`: the median over its rounds, "
    "read on a thread's CPU clock or on a wall clock; without that file, "
    "each trial's own clock). Only batch sizes whose best lr reached the target on every seed take part. The "
    "95% interval is a bootstrap over the seeds and the timing rounds (rounds resampled together for every "
    "batch size). A batch size within 10% of the fastest's predicted time, or faster in at least 2.5% of the "
    "bootstrap draws, cannot be told apart from it and is named beside it. Its speed-up is against the "
    "smallest batch size that reached the target. Its regime comes from the frontier fit, B_simple is the average up to the target (below), and "
    "the other-hardware line names the data-efficient batch size (the largest within 10% of perfect "
    "scaling) and the one with the fewest steps.",
    "Only finished trials (completed, diverged, failed, raced) count: a target a finished trial never "
    "reached counts as +inf seconds. Incomplete and interrupted trials count as neither reached nor "
    "missed; their curves are still drawn.",
    "Best lr of a batch size: the lr (with any other swept axis) whose seeds missed the target least often, "
    "then with the fewest median steps to the target over its seeds (a seed that missed counts as infinite); "
    "ties go to fewer examples, then less training time. Within one batch size a step costs the same "
    "whatever the lr, so the clock would only add timer noise to the choice; where its settings differ in "
    "what a step costs by more than 10% (another swept dataset.context or model size, timed apart), the least "
    "predicted time "
    "(median steps x that setting's seconds per step) comes before the fewest steps. A batch size reached the "
    "target when every seed of its best lr did; partly reached when some did.",
    "Figures to target are medians over the best lr's seeds, taken per column. Throughput and peak "
    "memory come from every completed trial of the batch size that shares its best setting's step cost (any "
    "lr; another value of an axis that changes what a step costs, such as dataset.context, is apart).",
    "On a \"not reached\" row the lr shown is the one that came closest (most seeds reaching, then the "
    "fewest steps of a seed that reached, then the best final test metric, then the lowest final training "
    "loss); its curves are the ones plotted.",
    "Batch sizes are ranked three ways, each marked: ★ fastest (least predicted time to the target: "
    "what this machine favours; ≈ marks those within the noise of it), fewest steps (what a machine favours where a step takes about as long at "
    "any batch size that fits) and fewest examples (the most data-efficient, what a machine favours where "
    "every example costs the same). ⚠ lr on edge: the best lr is the smallest or largest tried at that "
    "batch size, so a better one may lie outside the grid. Infeasible: diverged or failed trials at that "
    "batch size.",
    "Headline target (the answer, the lr grids and plots): the hardest target some batch size or batch-size "
    "schedule reached (the largest accuracy, or the smallest loss); if none was reached, the first target listed.",
    "Training seconds exclude evaluation.",
]


SCIENCE_RULES = [
    "Steps-examples frontier (McCandlish et al. 2018): S(B) is the median steps to the headline target of "
    "batch size B's best lr, over the batch sizes that reached it; E(B) = B·S(B). S(B) = S_min (1 + B_crit/B) "
    "is fitted by least squares on log S, and only with 3 or more batch sizes: with fewer the report says so "
    "and draws no curve. A batch size above the training set counts as the training-set size (its steps are "
    "full-batch steps).",
    "Regimes (from the fit): perfect scaling while B ≤ B_crit/9 (examples at most E_min/0.9: a scaling "
    "efficiency E_min/E of 90% or more), maximal data parallelism once B ≥ 9·B_crit (steps at most S_min/0.9), "
    "diminishing returns between.",
    "Most data-efficient large batch: the largest batch size whose examples to the target (as recorded: each "
    "epoch's short last batch counted) are at most 1/0.9 of the smallest batch size's (a scaling efficiency of 90% "
    "or more; perfect scaling keeps them constant).",
    "Batch sizes the race cut (a raced lr stopped before the steps the best lr needed, or none reached) are "
    "left out of the fit, and no claim about other hardware is made: their steps are unknown.",
    "Measured B_simple = tr(Σ)/|G|², averaged to the target: for each trial of a reached batch size's best lr "
    "that itself reached the headline target, the mean of its finite, positive noise_b_simple values in "
    "metrics.csv at steps up to its steps to target; the median over those trials, with the measurements it "
    "rests on (fewer than 5 per trial: the report suggests a smaller noise.every). Also shown: summary.json's "
    "noise.b_simple (the smoothed value when training ended) and each trial's first and last measurement, "
    "medians over completed trials. The curves are the best lr's, median over seeds.",
    "Generalisation gap (Keskar et al. 2016): train-subset accuracy minus test accuracy (test loss minus "
    "train-subset loss for regression) at the same evaluation rows, for each batch size's best lr, median over "
    "seeds; 'at target' is the first evaluation row at or after the step the seed reached the headline target.",
]


def _header(rec: SweepRecords, tables: Tables, counts: dict[str, int]) -> pd.DataFrame:
    trials, config = rec.trials, rec.config
    targets = ", ".join(f"{t:g}" for t in rec.targets)
    device = (trials["device"].fillna("?") + " (" + trials["device_name"].fillna("?") + ")").where(
        trials["device"].notna())
    rows = [
        ("Data set", display.describe(config.get("dataset"), "dataset")),
        ("Model", display.describe(config.get("model"), "model")),
    ]
    if isinstance(config.get("loss"), dict):  # older records name no loss
        rows.append(("Loss", display.describe(config["loss"], "loss")))
    rows += [
        ("Optimizer", display.describe(config.get("optimizer"), "optimizer")),
        ("Schedule", display.describe(config.get("schedule"), "schedule")),
        ("Budget", display.budget(config.get("budget"))),
        ("Targets", f"{rec.target_metric} {'≤' if rec.regression else '≥'} {targets} "
                    f"(headline: {tables.target:g})"),
        ("Device", display.distinct(device)),
        ("Precision", display.distinct(trials["precision"])),
        ("Torch", display.distinct(trials["torch_version"])),
        ("Trials", display.status_line(counts)),
        ("Reproduce", display.distinct(trials["command"])),
        ("Records", str(rec.sweep_dir)),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


def _headline_notes(rec: SweepRecords, tables: Tables) -> list[Block]:
    rows = tables.headline_rows
    notes = []
    if not (rows["status"] == REACHED).any():
        notes.append("No batch size reached the target.")
    finished = rec.trials[rec.trials["status"].isin(FINISHED)]
    edges: dict[tuple, list[int]] = {}  # (side, lrs tried) -> batch sizes, so one line covers many
    for row in rows[rows["best_lr_on_edge"]].itertuples():
        tried = tuple(sorted(finished.loc[finished["batch_size"] == row.batch_size, "lr"].unique()))
        side = "largest" if row.best_lr >= max(tried) else "smallest"
        edges.setdefault((side, tried), []).append(int(row.batch_size))
    for (side, tried), sizes in edges.items():
        advice = "larger" if side == "largest" else "smaller"
        which = f"batch size {sizes[0]}" if len(sizes) == 1 else f"batch sizes {', '.join(map(str, sizes))}"
        notes.append(f"⚠ {which}: the best lr is the {side} lr tried ({', '.join(f'{v:g}' for v in tried)}); "
                     f"try {advice} lrs.")
    infeasible = rows[rows["infeasible"] > 0]
    if len(infeasible):
        notes.append("Infeasible (diverged or failed) trials: " + ", ".join(
            f"bs {r.batch_size}: {r.infeasible}" for r in infeasible.itertuples()) + ".")
    return [Block("p", note) for note in notes]


def _not_completed(rec: SweepRecords, tables: Tables) -> list[Block]:
    """Diverged and failed trials with the reason recorded, where a reader looks for them."""
    trials = tables.trials[tables.trials["status"].isin(INFEASIBLE)]
    if trials.empty:
        return []
    table = display.trials(rec, trials)[["trial", "status", "batch size", "lr", "seed", "reason"]]
    return [Block("p", f"Trials that diverged or failed ({len(table)}), with the reason recorded:"),
            Block("table", table=table, id="not-completed", literal_columns=("trial", "reason"),
                  wrap_columns=("reason",), nowrap_columns=("trial",))]
