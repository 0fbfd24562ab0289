"""report.md and report.html from one list of blocks, so both always say the same thing.

The HTML is a single self-contained file: plain HTML and CSS, images embedded as base64 data
URIs, no scripts and nothing fetched from a network.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab.reporting import display
from batchlab.reporting.load import FINISHED, SweepRecords
from batchlab.reporting.plots import Plot
from batchlab.reporting.science import Science, number
from batchlab.reporting.tables import REACHED, Tables

HEADLINE_ID = "time-to-accuracy"


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "list" | "table" | "image" | "code" | "details"
    text: str = ""
    items: list | None = None
    table: pd.DataFrame | None = None
    plot: Plot | None = None
    id: str = ""


SCIENCE_PLOTS = ("frontier.png", "noise_scale.png", "lr_vs_batch_size.png", "generalisation_gap.png")


def blocks(rec: SweepRecords, tables: Tables, counts: dict[str, int], plots: list[Plot],
           science: Science | None = None) -> list[Block]:
    by_name = {plot.filename: plot for plot in plots}
    out = [Block("h1", f"batchlab report: {rec.name}")]
    if science is not None:
        out += [Block("h2", "Recommendation"), Block("list", items=list(science.recommendation), id="recommendation")]
    out.append(Block("table", table=_header(rec, tables, counts), id="header"))
    if rec.warnings:
        out += [Block("h2", "Warnings"), Block("list", items=list(rec.warnings), id="warnings")]

    out.append(Block("h2", f"Time to accuracy: {display.target_text(rec, tables.target)}"))
    out.append(Block("p", "Seconds and steps to target: median over the best lr's seeds (min–max; ∞: a seed "
                          "that did not reach it)."))
    out.append(Block("table", table=display.time_to_accuracy(rec, tables.headline_rows, spread=True),
                     id=HEADLINE_ID))
    out += _headline_notes(rec, tables)

    others = [t for t in tables.time_to_accuracy["target"].unique() if t != tables.target]
    for target in others:
        rows = tables.time_to_accuracy[tables.time_to_accuracy["target"] == target]
        out.append(Block("h3", f"Other target: {display.target_text(rec, target)}"))
        out.append(Block("table", table=display.time_to_accuracy(rec, rows, spread=True)))

    if science is not None:
        out += _frontier_blocks(rec, tables, science, by_name)
        out += _noise_blocks(science, by_name)

    out.append(Block("h2", "Learning rate × batch size"))
    out.append(Block("p", f"Median training seconds to {display.target_text(rec, tables.target)} "
                          "(a dash: not run or not finished)."))
    out.append(Block("table", table=display.grid(tables.lr_grid, tables.grid_notes, display.seconds),
                     id="lr-grid"))
    final_name = "test loss" if rec.regression else "test accuracy"
    out.append(Block("p", f"Median final {final_name}."))
    # Not reaching the target says nothing about the final figure: only infeasible cells are named.
    infeasible_notes = tables.grid_notes.replace("not reached", "")
    out.append(Block("table", table=display.grid(tables.final_grid, infeasible_notes,
                                                   display.loss if rec.regression else display.accuracy),
                     id="final-grid"))
    if science is not None:
        out += _lr_blocks(science, by_name)
        out += _gap_blocks(rec, science, by_name)

    rest = [plot for plot in plots if science is None or plot.filename not in SCIENCE_PLOTS]
    if rest:
        out.append(Block("h2", "Plots"))
        out += [Block("image", plot=plot) for plot in rest]

    out.append(Block("h2", "How to read this report"))
    out.append(Block("list", items=RULES + (SCIENCE_RULES if science is not None else [])))
    out.append(Block("h2", "Trials"))
    out.append(Block("details", text=f"All {len(tables.trials)} trials",
                     table=display.trials(rec, tables.trials), id="trials"))
    if rec.sweep_yaml is not None:
        out.append(Block("h2", "sweep.yaml"))
        out.append(Block("code", rec.sweep_yaml))
    return out


RULES = [
    "Only finished trials (completed, diverged, failed) count: a target a finished trial never "
    "reached counts as +inf seconds. Incomplete and interrupted trials count as neither reached nor "
    "missed; their curves are still drawn.",
    "Best lr of a batch size: the lr (with any other swept axis) with the fewest median steps to the target "
    "over its seeds (a seed that missed counts as infinite); ties go to fewer examples, then less training "
    "time, then more seeds reaching it. Within one batch size a step costs the same whatever the lr, so "
    "the clock would only add timer noise to the choice. A batch size reached the target when that median "
    "is finite, i.e. when more than half its seeds did.",
    "Figures to target are medians over the best lr's seeds, taken per column. Throughput and peak "
    "memory come from every completed trial of the batch size.",
    "On a \"not reached\" row the lr shown is the one that came closest (most seeds reaching, then the "
    "fewest steps of a seed that reached, then lowest final training loss); its curves are the ones plotted.",
    "Batch sizes are ranked three ways, each marked: ★ fastest (least median training time to the target: "
    "what this machine favours), fewest steps (what a machine favours where a step takes about as long at "
    "any batch size that fits) and fewest examples (the most data-efficient, what a machine favours where "
    "every example costs the same). ⚠ lr on edge: the "
    "best lr is the smallest or largest tried at that batch size, so a better one may lie outside "
    "the grid. Infeasible: diverged or failed trials at that batch size.",
    "Headline target (the lr grids and plots): the hardest target some batch size reached (the "
    "largest accuracy, or the smallest loss); if none was reached, the first target listed.",
    "Training seconds exclude evaluation.",
]


SCIENCE_RULES = [
    "Steps-examples frontier (McCandlish et al. 2018): S(B) is the median steps to the headline target of "
    "batch size B's best lr, over the batch sizes that reached it; E(B) = B·S(B). S(B) = S_min (1 + B_crit/B) "
    "is fitted by least squares on log S, and only with 3 or more batch sizes: with fewer the report says so "
    "and draws no curve. A batch size above the training set counts as the training-set size (its steps are "
    "full-batch steps).",
    "Regimes (from the fit): perfect scaling while B ≤ B_crit/9 (examples within 10% of E_min), maximal data "
    "parallelism once B ≥ 9·B_crit (steps within 10% of S_min), diminishing returns between.",
    "Most data-efficient large batch: the largest batch size whose measured examples to the target B·S stay "
    "within 10% of the smallest batch size's (perfect scaling keeps B·S constant).",
    "Fastest vs runner-up: two batch sizes cannot be told apart when the ranges (min–max over the best lr's "
    "seeds) of their training seconds to the target overlap.",
    "Measured B_simple = tr(Σ)/|G|²: the median over completed trials of summary.json's noise.b_simple (the "
    "smoothed value at the end of training); start and end: medians of each trial's first and last finite "
    "noise_b_simple in metrics.csv. The curves are the best lr's, median over seeds.",
    "Generalisation gap (Keskar et al. 2016): train-subset accuracy minus test accuracy (test loss minus "
    "train-subset loss for regression) at the same evaluation rows, for each batch size's best lr, median over "
    "seeds; 'at target' is the first evaluation row at or after the step the seed reached the headline target.",
]


def _frontier_blocks(rec: SweepRecords, tables: Tables, science: Science, by_name: dict) -> list[Block]:
    frontier = science.frontier
    f = frontier.fit
    out = [Block("h2", "Steps–examples frontier")]
    out.append(Block("p", f"S(B): median steps to {display.target_text(rec, tables.target)} with each batch "
                          "size's best lr; E(B) = B·S(B) examples. Fitted S(B) = S_min (1 + B_crit / B), "
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
    return out


def _frontier_points(rows: pd.DataFrame, frontier) -> pd.DataFrame:
    points = frontier.points.set_index("batch_size")
    smallest = points["examples"].iloc[0] if len(points) else math.nan
    table = []
    for row in rows.itertuples(index=False):
        bs = int(row.batch_size)
        item = {"batch size": str(bs)}
        if bs in points.index:
            p = points.loc[bs]
            item.update({"B used": str(int(p["batch_used"])), "steps S": display.count(p["steps"]),
                         "examples E = B·S": display.count(p["examples"]),
                         "E vs smallest": f"{p['examples'] / smallest:.2f}×",
                         "seconds": display.seconds(p["seconds"])})
        else:
            item.update({"B used": display.DASH, "steps S": row.status, "examples E = B·S": display.DASH,
                         "E vs smallest": display.DASH, "seconds": display.DASH})
        fitted = frontier.fitted_steps.get(bs)
        item["fitted S"] = display.count(round(fitted, 1)) if fitted is not None else display.DASH
        item["regime"] = frontier.regimes.get(bs, display.DASH)
        table.append(item)
    out = pd.DataFrame(table)
    if ((out["B used"] == out["batch size"]) | (out["B used"] == display.DASH)).all():
        out = out.drop(columns="B used")
    return out


def _noise_blocks(science: Science, by_name: dict) -> list[Block]:
    out = [Block("h2", "Gradient noise scale")]
    if science.noise is None:
        return out + [Block("p", science.noise_note)]
    table = science.noise.table(science.frontier)
    shown = pd.DataFrame({
        "": table["quantity"],
        "value": [number(v) if np.isfinite(v) else display.DASH for v in table["value"]],
        "n": table["count"].map(str),
        "from": table["source"],
    })
    out.append(Block("table", table=shown, id="noise-scale"))
    if "noise_scale.png" in by_name:
        out.append(Block("image", plot=by_name["noise_scale.png"]))
    else:
        out.append(Block("p", "No best-lr trial recorded a finite B_simple over training: no curve to draw."))
    return out


def _lr_blocks(science: Science, by_name: dict) -> list[Block]:
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


def _gap_blocks(rec: SweepRecords, science: Science, by_name: dict) -> list[Block]:
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


def _header(rec: SweepRecords, tables: Tables, counts: dict[str, int]) -> pd.DataFrame:
    trials, config = rec.trials, rec.config
    targets = ", ".join(f"{t:g}" for t in rec.targets)
    device = (trials["device"].fillna("?") + " (" + trials["device_name"].fillna("?") + ")").where(
        trials["device"].notna())
    rows = [
        ("Data set", display.describe(config.get("dataset"))),
        ("Model", display.describe(config.get("model"))),
        ("Optimizer", display.describe(config.get("optimizer"))),
        ("Schedule", display.describe(config.get("schedule"))),
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
    for row in rows[rows["best_lr_on_edge"]].itertuples():
        finished = rec.trials[rec.trials["status"].isin(FINISHED)]
        tried = finished[finished["batch_size"] == row.batch_size]["lr"]
        side, advice = ("largest", "larger") if row.best_lr >= tried.max() else ("smallest", "smaller")
        notes.append(f"⚠ batch size {row.batch_size}: the best lr {row.best_lr:g} is the {side} lr tried "
                     f"({', '.join(f'{v:g}' for v in sorted(tried.unique()))}); try {advice} lrs.")
    infeasible = rows[rows["infeasible"] > 0]
    if len(infeasible):
        notes.append("Infeasible (diverged or failed) trials: " + ", ".join(
            f"bs {r.batch_size}: {r.infeasible}" for r in infeasible.itertuples()) + ".")
    return [Block("p", note) for note in notes]


# --- Markdown --------------------------------------------------------------------------------

def markdown(parts: list[Block], with_images: bool) -> str:
    lines: list[str] = []
    for block in parts:
        if block.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(block.kind[1]) + " " + block.text, ""]
        elif block.kind == "p":
            lines += [block.text, ""]
        elif block.kind == "list":
            lines += [f"- {item}" for item in block.items] + [""]
        elif block.kind in ("table", "details"):
            lines += [_md_table(block.table), ""]
        elif block.kind == "image":
            if with_images:
                lines += [f"![{block.plot.title}]({block.plot.filename})", ""]
        elif block.kind == "code":
            lines += ["```yaml", block.text.rstrip("\n"), "```", ""]
    if not with_images:
        lines += ["(Plots were not written as PNG files; see report.html.)", ""]
    return "\n".join(lines)


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: pd.DataFrame) -> str:
    header = [_md_cell(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
td:first-child, th:first-child { text-align: left; }
#header td { text-align: left; white-space: normal; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.scroll { overflow-x: auto; }
#warnings li { color: #8a4b00; }
"""


def html_document(parts: list[Block], title: str) -> str:
    body = [_html_block(block) for block in parts]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _html_block(block: Block) -> str:
    esc = html.escape
    if block.kind in ("h1", "h2", "h3"):
        return f"<{block.kind}>{esc(block.text)}</{block.kind}>"
    if block.kind == "p":
        return f"<p>{esc(block.text)}</p>"
    if block.kind == "list":
        ident = f" id=\"{esc(block.id)}\"" if block.id else ""
        return f"<ul{ident}>" + "".join(f"<li>{esc(str(item))}</li>" for item in block.items) + "</ul>"
    if block.kind == "table":
        return _html_table(block.table, block.id)
    if block.kind == "details":
        return f"<details><summary>{esc(block.text)}</summary>{_html_table(block.table, block.id)}</details>"
    if block.kind == "image":
        data = base64.b64encode(block.plot.png).decode("ascii")
        return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{esc(block.plot.title)}\" "
                f"data-file=\"{esc(block.plot.filename)}\">"
                f"<figcaption>{esc(block.plot.title)}</figcaption></figure>")
    if block.kind == "code":
        return f"<pre><code>{esc(block.text)}</code></pre>"
    raise ValueError(f"unknown block kind {block.kind}")


def _html_table(table: pd.DataFrame, table_id: str) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    ident = f" id=\"{esc(table_id)}\"" if table_id else ""
    # Wide tables scroll inside their own box instead of widening the page.
    return f"<div class=\"scroll\"><table{ident}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
