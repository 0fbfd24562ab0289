"""The report's sections on the batch-size science (science.py): the frontier fit, the noise
scale, the lr against the rule and the generalisation gap, as blocks for render.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.reporting import display
from batchlab.reporting.display import number
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.render import Block
from batchlab.reporting.science import Science, measured
from batchlab.reporting.tables import REACHED, Tables

SCIENCE_PLOTS = ("frontier.png", "noise_scale.png", "lr_vs_batch_size.png", "generalisation_gap.png")


def frontier_section(rec: SweepRecords, tables: Tables, science: Science, by_name: dict) -> list[Block]:
    frontier = science.frontier
    f = frontier.fit
    out = [Block("h2", "Steps–examples frontier")]
    out.append(Block("p", f"S(B): median steps to {display.target_text(rec, tables.target)} with each batch "
                          "size's best lr; E(B) = B·S(B) examples in the fit (the table's examples are as recorded, "
                          "each epoch's short last batch counted). Fitted S(B) = S_min (1 + B_crit / B), "
                          "i.e. (S/S_min − 1)(E/E_min − 1) = 1."))
    if f is None:
        out.append(Block("p", f"No frontier fit: {frontier.reason}. No fitted curve is drawn."))
    else:
        fitted = pd.DataFrame([{
            "S_min (steps)": number(f.s_min), "E_min (examples)": number(f.e_min), "B_crit": number(f.b_crit),
            "R² (log S)": f"{f.r2:.3f}" if math.isfinite(f.r2) else "n/a (all steps equal)",
            "rms log error": f"{f.rms_log_error:.3g}", "points": str(len(f.batch_sizes)),
            "batch sizes": ", ".join(map(str, f.batch_sizes))}])
        out.append(Block("table", table=fitted, id="frontier"))
    out += [Block("p", f"Note: {note}.") for note in frontier.notes]
    rows = tables.headline_rows.sort_values("batch_size")
    if (rows["status"] == REACHED).any():
        out.append(Block("table", table=_frontier_points(rows, frontier), id="frontier-points"))
    if "frontier.png" in by_name:
        out.append(Block("image", plot=by_name["frontier.png"]))
    by_target = examples_by_target(rec, tables)
    if by_target is not None:
        out.append(Block("p", "Examples to each target relative to the fewest any batch size needed for it (each "
                              "target's examples column above, best lr per batch size, median over seeds). Down a "
                              "column: from which batch size on a larger batch costs examples. Across: whether "
                              "that batch size grows as training goes, as a batch-size schedule needs it to: start "
                              "where large batches cost examples, grow where they stop costing."))
        out.append(Block("table", table=by_target, id="examples-by-target"))
    return out


def examples_by_target(rec: SweepRecords, tables: Tables) -> pd.DataFrame | None:
    """Batch size x target (in the order training meets them): median examples to the target over the fewest
    at that target, '–' where not every seed reached it or the race cut it (its examples are unknown). None with
    fewer than two targets some batch size reached after training began."""
    tta = tables.time_to_accuracy
    reached = measured(tta)
    targets = sorted(reached["target"].unique(), reverse=rec.regression)
    if len(targets) < 2:
        return None
    table = pd.DataFrame({"batch size": [str(b) for b in sorted(tta["batch_size"].unique())]})
    for target in targets:
        examples = reached[reached["target"] == target].set_index("batch_size")["examples"]
        table[display.target_text(rec, target)] = [
            f"{examples[int(b)] / examples.min():.2f}×" if int(b) in examples.index else display.DASH
            for b in table["batch size"]]
    return table


def _frontier_points(rows: pd.DataFrame, frontier) -> pd.DataFrame:
    """The fitted points: steps S, and the examples as recorded (each epoch's short last batch counted, as the
    answer and every other table count them; the fit itself reads S alone)."""
    points = frontier.points.set_index("batch_size")
    smallest = points["recorded_examples"].iloc[0] if len(points) else math.nan
    table = []
    for row in rows.itertuples(index=False):
        bs = int(row.batch_size)
        item = {"batch size": str(bs)}
        if bs in points.index:
            p = points.loc[bs]
            item.update({"B used": str(int(p["batch_used"])), "steps S": display.count(p["steps"]),
                         "examples": display.count(p["recorded_examples"]),
                         "vs smallest": f"{p['recorded_examples'] / smallest:.2f}×",
                         "seconds": display.seconds(p["seconds"])})
        else:
            item.update({"B used": display.DASH, "steps S": row.status, "examples": display.DASH,
                         "vs smallest": display.DASH, "seconds": display.DASH})
        fitted = frontier.fitted_steps.get(bs)
        item["fitted S"] = display.count(round(fitted, 1)) if fitted is not None else display.DASH
        item["regime"] = frontier.regimes.get(bs, display.DASH)
        table.append(item)
    out = pd.DataFrame(table)
    if ((out["B used"] == out["batch size"]) | (out["B used"] == display.DASH)).all():
        out = out.drop(columns="B used")
    return out


def noise_section(science: Science, by_name: dict) -> list[Block]:
    out = [Block("h2", "Gradient noise scale")]
    if science.noise is None:
        return out + [Block("p", science.noise_note)]
    noise = science.noise
    out.append(Block("p", "B_simple = tr(Σ)/|G|² (McCandlish et al. 2018). The figure set beside B_crit is "
                          "averaged over the part of training the frontier describes: each trial's measurements "
                          "up to its steps to the target."))
    table = noise.table(science.frontier)
    shown = pd.DataFrame({
        "": table["quantity"],
        "value": [number(v) if np.isfinite(v) else display.DASH for v in table["value"]],
        "n": table["count"].map(str),
        "trials": table["trials"].map(lambda t: display.DASH if pd.isna(t) else str(t)),
        "from": table["source"],
    })
    out.append(Block("table", table=shown, id="noise-scale", wrap_columns=("", "from")))
    if noise.few:
        out.append(Block("p", "⚠ " + noise.advice()))
    if "noise_scale.png" in by_name:
        out.append(Block("image", plot=by_name["noise_scale.png"]))
    else:
        out.append(Block("p", "No best-lr trial recorded a finite B_simple over training: no curve to draw."))
    return out


def lr_section(science: Science, by_name: dict) -> list[Block]:
    out = []
    rule = science.lr.rule
    if rule is not None:
        out.append(Block("p", f"lr rule of the config: {rule['base']:g} at batch size {rule['base_batch_size']}, "
                              f"scaled {rule['scale']}. Best lr against the rule's lr:"))
        table = science.lr.table
        out.append(Block("table", id="lr-rule", table=pd.DataFrame({
            "batch size": table["batch_size"].map(str),
            "best lr": table["best_lr"].map(display.lr),
            "rule lr": table["rule_lr"].map(display.lr),
            "best / rule": table["best_over_rule"].map(lambda v: f"{v:.3g}"),
            "target": ["reached" if r else "not reached" for r in table["reached"]],
        })))
    if "lr_vs_batch_size.png" in by_name:
        out.append(Block("image", plot=by_name["lr_vs_batch_size.png"]))
    return out


def gap_section(rec: SweepRecords, science: Science, by_name: dict) -> list[Block]:
    out = [Block("h2", "Generalisation gap")]
    gap = science.gap
    if gap is None:
        return out + [Block("p", science.gap_note)]
    fmt = display.accuracy if gap.kind == "accuracy" else display.loss
    sign = (lambda v: display.DASH if not np.isfinite(v) else f"{v:+.4f}") if gap.kind == "accuracy" else \
        (lambda v: display.DASH if not np.isfinite(v) else f"{v:+.4g}")
    name = "acc" if gap.kind == "accuracy" else "loss"
    label = "train − test" if gap.kind == "accuracy" else "test − train"
    t = gap.table
    out.append(Block("p", f"Gap = {label} {'accuracy' if gap.kind == 'accuracy' else 'loss'} on a fixed train "
                          "subset evaluated like the test set, best lr per batch size, median over seeds."))
    out.append(Block("table", id="generalisation-gap", table=pd.DataFrame({
        "batch size": t["batch_size"].map(str),
        "lr": t["lr"].map(display.lr),
        "seeds": t["seeds"].map(str),
        f"train {name} (end)": t["train_end"].map(fmt),
        f"test {name} (end)": t["test_end"].map(fmt),
        "gap (end)": t["gap_end"].map(sign),
        "gap at target": t["gap_at_target"].map(sign),
    })))
    if "generalisation_gap.png" in by_name:
        out.append(Block("image", plot=by_name["generalisation_gap.png"]))
    return out


