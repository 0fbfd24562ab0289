"""report.md and report.html from one list of blocks, so both always say the same thing.

The HTML is a single self-contained file: plain HTML and CSS, images embedded as base64 data
URIs, no scripts and nothing fetched from a network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import pandas as pd

from batchlab.report import display
from batchlab.report.load import FINISHED, SweepRecords
from batchlab.report.plots import Plot
from batchlab.report.tables import REACHED, Tables

HEADLINE_ID = "time-to-accuracy"


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "list" | "table" | "image" | "code" | "details"
    text: str = ""
    items: list | None = None
    table: pd.DataFrame | None = None
    plot: Plot | None = None
    id: str = ""


def blocks(rec: SweepRecords, tables: Tables, counts: dict[str, int], plots: list[Plot]) -> list[Block]:
    out = [Block("h1", f"batchlab report: {rec.name}")]
    out.append(Block("table", table=_header(rec, tables, counts), id="header"))
    if rec.warnings:
        out += [Block("h2", "Warnings"), Block("list", items=list(rec.warnings), id="warnings")]

    out.append(Block("h2", f"Time to accuracy: {display.target_text(rec, tables.target)}"))
    out.append(Block("table", table=display.headline(rec, tables), id=HEADLINE_ID))
    out += _headline_notes(rec, tables)

    others = [t for t in tables.time_to_accuracy["target"].unique() if t != tables.target]
    for target in others:
        rows = tables.time_to_accuracy[tables.time_to_accuracy["target"] == target]
        out.append(Block("h3", f"Other target: {display.target_text(rec, target)}"))
        out.append(Block("table", table=display.time_to_accuracy(rec, rows)))

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

    if plots:
        out.append(Block("h2", "Plots"))
        out += [Block("image", plot=plot) for plot in plots]

    out.append(Block("h2", "How to read this report"))
    out.append(Block("list", items=RULES))
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
    "Best lr of a batch size: the lr (with any other swept axis) with the least median over its seeds "
    "of training seconds to the target; ties go to fewer steps, then more seeds reaching it. A batch "
    "size reached the target when that median is finite, i.e. when more than half its seeds did.",
    "Figures to target are medians over the best lr's seeds, taken per column. Throughput and peak "
    "memory come from every completed trial of the batch size.",
    "On a \"not reached\" row the lr shown is the one that came closest (most seeds reaching, then "
    "lowest final training loss); its curves are the ones plotted.",
    "★ fastest: the batch size that reached the target in the least training time. ⚠ lr on edge: the "
    "best lr is the smallest or largest tried at that batch size, so a better one may lie outside "
    "the grid. Infeasible: diverged or failed trials at that batch size.",
    "Headline target (the lr grids and plots): the hardest target some batch size reached (the "
    "largest accuracy, or the smallest loss); if none was reached, the first target listed.",
    "Training seconds exclude evaluation.",
]


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
