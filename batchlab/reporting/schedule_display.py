"""Batch-size schedules in the documents and on the terminal: the schedules against the fastest constant batch
size, then seed by seed (schedules.py computes them; the CSVs keep the raw numbers)."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table
from rich.text import Text as RichText

from batchlab.reporting import display
from batchlab.reporting.answer_schedules import lr_text, statement
from batchlab.reporting.figures import Plot
from batchlab.reporting.render import Block
from batchlab.reporting.schedule_plots import FILENAME as PLOT
from batchlab.reporting.schedules import STEPS_SAVED, Schedules
from batchlab.reporting.tables import REACHED

SECTION_ID = "batch-size-schedules"
BAR = f"≥ {STEPS_SAVED:.0%} fewer steps, no more examples"
RULE = (
    "A batch-size schedule is its own setting, named by its label, its best lr chosen as a batch size's; its "
    "predicted time per seed is the sum over the batch sizes it trained at up to the target of the steps there "
    "x that batch size's seconds per step, the median over seeds decided with the batch sizes by the same rule "
    "(interval, ties, every seed reached). The frontier, B_crit, B_simple and the other-hardware limits use the "
    "constant batch sizes only. It is compared seed by seed with the fastest constant batch size's trial of the "
    "same seed."
)  # for "How to read this report"


def _percent(x) -> str:
    return display.DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


def _ratio(x) -> str:
    return display.DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}×"


def _base(schedules: Schedules) -> str:
    base = schedules.headline_rows["best_constant"].dropna()
    return f"bs {int(base.iloc[0])}" if len(base) else "the fastest constant"


def table(schedules: Schedules) -> pd.DataFrame:
    """One row per schedule, headline target: what decided, and the comparison with the fastest constant."""
    rows = schedules.headline_rows.reset_index(drop=True)
    base = _base(schedules)
    reached = rows["status"] == REACHED
    out = pd.DataFrame({
        "schedule": rows["schedule"],
        "lr": [lr_text(r.best_lr, int(r.start_batch_size), r.lr_scale) for r in rows.itertuples()],
        "predicted s": [display.seconds(p) if ok else display.DASH
                        for p, ok in zip(rows["predicted_seconds"], reached)],
        "steps": [display.count(s) if ok else display.DASH for s, ok in zip(rows["steps"], reached)],
        "examples": [display.count(e) if ok else display.DASH for e, ok in zip(rows["examples"], reached)],
        **({"tokens": [display.count(t) if ok else display.DASH for t, ok in zip(rows["tokens"], reached)]}
           if schedules.sequence else {}),
        "measured s": [display.seconds(s) if ok else status for s, ok, status in
                       zip(rows["seconds"], reached, rows["status"])],
        "reached": rows["seeds_reached"],
        f"steps saved vs {base}": rows["steps_saved"].map(_percent),
        f"examples vs {base}": rows["examples_ratio"].map(_ratio),
        BAR: [display.DASH if base_missing else f"{'every seed' if every else 'not every seed'} ({n}/{int(seeds)})"
              for every, n, seeds, base_missing in zip(rows["clears_bar_every_seed"], rows["seeds_clearing_bar"],
                                                       rows["seeds"], rows["best_constant"].isna())],
        "note": ["★ fastest" if fast else "≈ as fast within the noise" if tie else ""
                 for fast, tie in zip(rows["fastest"], rows["within_noise"])],
    })
    return out


def seeds_table(schedules: Schedules) -> pd.DataFrame:
    """Per schedule and seed, against the fastest constant batch size's trial of the same seed."""
    seeds = schedules.headline_seeds.reset_index(drop=True)
    base = _base(schedules)
    return pd.DataFrame({
        "schedule": seeds["schedule"],
        "seed": seeds["seed"].map(str),
        "steps at each batch size": seeds["steps_by_batch"].replace("", display.DASH),
        "steps": seeds["steps"].map(display.count),
        f"steps ({base})": seeds["constant_steps"].map(display.count),
        "steps saved": seeds["steps_saved"].map(_percent),
        "examples": seeds["examples"].map(display.count),
        f"examples ({base})": seeds["constant_examples"].map(display.count),
        **({"tokens": seeds["tokens"].map(display.count),
            f"tokens ({base})": seeds["constant_tokens"].map(display.count)} if schedules.sequence else {}),
        "examples ratio": seeds["examples_ratio"].map(_ratio),
        "predicted s": seeds["predicted_seconds"].map(display.seconds),
        "clears the bar": seeds["clears_bar"].map(lambda ok: "yes" if ok else "no"),
    })


def section(schedules: Schedules | None, target: str, plots: dict[str, Plot]) -> list[Block]:
    """The report's "Batch-size schedules" section (nothing when no schedule ran), with its figure if drawn."""
    if schedules is None:
        return []
    rows = schedules.headline_rows.set_index("schedule")
    figure = [Block("image", plot=plots[PLOT])] if PLOT in plots else []
    return [
        Block("h2", "Batch-size schedules"),
        Block("p", f"Each schedule's best lr (its lr at the starting batch size) to {target}, decided with the "
                   "constant batch sizes by the same rule: predicted seconds = per seed, the steps at each batch "
                   "size it used up to the target x that batch size's seconds per step, summed; the median over "
                   "seeds, with the same bootstrap interval and ties. Compared with the fastest constant batch size "
                   f"(by that rule), seed by seed: the bar is ≥ {STEPS_SAVED:.0%} fewer steps with no more "
                   "examples."),
        Block("table", table=table(schedules), id=SECTION_ID, literal_columns=("schedule",)),
        Block("table", table=seeds_table(schedules), id=f"{SECTION_ID}-seeds", literal_columns=("schedule",)),
        Block("list", items=[statement(rows.loc[s], schedules.headline_seeds, target) for s in rows.index],
              id=f"{SECTION_ID}-statements"),
        *figure,
    ]


def terminal_table(schedules: Schedules | None) -> Table | None:
    """The schedules beside the terminal's time-to-accuracy table (None when no schedule ran)."""
    if schedules is None:
        return None
    base = _base(schedules)
    text = table(schedules).drop(columns=["lr", "measured s", "tokens"], errors="ignore").rename(columns={  # fits 120
        f"steps saved vs {base}": "steps saved", f"examples vs {base}": "examples ×",
        BAR: "bar"})
    text["bar"] = text["bar"].str.replace("not every seed", "not all").str.replace("every seed", "all")
    title = (f"batch-size schedules against {base} (the fastest constant); bar: {BAR} on every seed"
             if schedules.headline_rows["best_constant"].notna().any() else
             "batch-size schedules (no constant batch size reached the target to compare them with)")
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in text.columns:
        out.add_column(column, justify="left" if column in ("schedule", "note") else "right")
    for row in text.itertuples(index=False):
        out.add_row(*(RichText(str(cell)) for cell in row))
    return out
