"""Numbers turned into short text for people: the terminal table, report.md and report.html.

The CSV files keep the raw numbers; only what a person reads goes through here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text as RichText

from batchlab import schema
from batchlab.memory import mib
from batchlab.reporting.load import SweepRecords
from batchlab.reporting.tables import REACHED

DASH = "–"
# Markers of the three rankings of batch sizes (time_to_accuracy columns) and of an lr on the edge.
MARKS = {"fastest": "★ fastest", "fewest_steps": "fewest steps", "fewest_examples": "fewest examples"}
FLAGS = {"within_noise": "≈ as fast within the noise", "at_budget_end": "reached at the budget's last step",
         "cut_by_race": "cut by the race"}
EDGE = "⚠ lr on edge"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def seconds(x) -> str:
    if _missing(x):
        return DASH
    if math.isinf(x):
        return "not reached"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def count(x) -> str:
    """Steps, examples: whole numbers, except a median of two seeds may end in .5."""
    if _missing(x) or math.isinf(x):
        return DASH
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def epochs(x) -> str:
    return DASH if _missing(x) or math.isinf(x) else f"{x:.3g}"


def accuracy(x) -> str:
    return DASH if _missing(x) else f"{x:.4f}"


def loss(x) -> str:
    return DASH if _missing(x) or not np.isfinite(x) else f"{x:.4g}"


def lr(x) -> str:
    return DASH if _missing(x) else f"{x:g}"


def value(x) -> str:
    """An axis value as recorded: 0.9, 'adam', [256, 128]."""
    return DASH if _missing(x) else f"{x:g}" if isinstance(x, float) else str(x)


def memory(x) -> str:
    return DASH if _missing(x) else mib(x)


def share(x) -> str:
    return DASH if _missing(x) else f"{x:.0%}"


def speed(x) -> str:
    return DASH if _missing(x) else f"{x:,.0f}"


def number(x: float) -> str:
    """A figure for a sentence: 3 significant digits, thousands grouped; ∞ for a miss."""
    if _missing(x) or not math.isfinite(x):
        return "∞" if not _missing(x) and x == math.inf else DASH
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def tokens(batch: float | None, context: int | None) -> str:
    """'N tokens' for a batch size of a sequence task; "" for others."""
    if not context or _missing(batch) or not math.isfinite(batch):
        return ""
    return f"{number(batch * context)} tokens"


def in_tokens(batch: float | None, context: int | None) -> str:
    """' (N tokens)' after a batch size of a sequence task; nothing for others."""
    text = tokens(batch, context)
    return f" ({text})" if text else ""


def at_budget_end(who: str, seeds: int) -> str:
    """The answer's warning for a setting some of whose seeds met the target at the budget's last step."""
    return (f" {who}: {seeds} of its seeds met the target only at the budget's last step: a longer budget would "
            "show whether it holds." if seeds else "")


def tie_sentence(entries: list[dict], target: str) -> str:
    """The settings that cannot be told apart, fastest first, named together with what sets them apart. Each entry:
    name ("batch size 64", or a schedule's name), setting (its lr in words), predicted_seconds, steps, examples,
    at_budget_end (seeds that met the target only at the budget's last step) and, for a batch size, batch_size.
    Batch sizes alone are named once ("batch size 64, 128 or 32"), and equal steps or examples go to the smaller;
    with a schedule among them, to the one listed first (the faster)."""
    bare = all("batch_size" in e for e in entries)  # a schedule has none
    short = [str(e["batch_size"]) if bare else e["name"] for e in entries]
    listed = ("batch size " if bare else "") + ", ".join(short[:-1]) + " or " + short[-1]
    each = "; ".join(f"{s}: {e['setting']}, {seconds(e['predicted_seconds'])} s" for s, e in zip(short, entries))
    steps, examples = (min(range(len(entries)), key=lambda i: (entries[i][k], entries[i]["batch_size"] if bare else i))
                       for k in ("steps", "examples"))
    if steps == examples:
        apart = (f"{entries[steps]['name']} takes both the fewest steps ({count(entries[steps]['steps'])}) and the "
                 f"fewest examples ({count(entries[examples]['examples'])})")
    else:
        apart = (f"{entries[steps]['name']} takes the fewest steps ({count(entries[steps]['steps'])}), "
                 f"{short[examples]} the fewest examples ({count(entries[examples]['examples'])})")
    margin = "".join(at_budget_end(e["name"][0].upper() + e["name"][1:], e.get("at_budget_end", 0)) for e in entries)
    return (f"Use {listed}: they cannot be told apart on this machine, within the noise of its timing and of the "
            f"seeds ({each} predicted to {target}, steps x seconds per step); {apart}.{margin}")


def target_text(rec: SweepRecords, target: float) -> str:
    return f"{rec.target_metric} {'≤' if rec.regression else '≥'} {target:g}"


def _with_range(fmt, median, low, high) -> str:
    """'median (min–max)' over seeds; ∞ where a seed missed; just the median when they agree."""
    if _missing(low) or _missing(high) or (low == median == high):
        return fmt(median)
    edge = lambda x: "∞" if math.isinf(x) else fmt(x)  # noqa: E731
    return f"{fmt(median)} ({edge(low)}–{edge(high)})"


def time_to_accuracy(rec: SweepRecords, rows: pd.DataFrame, spread: bool = False,
                     compact: bool = False) -> pd.DataFrame:
    """The time-to-accuracy rows of one target, as text. With `spread`, seconds and steps read
    'median (min–max)' over the best lr's seeds. `compact` keeps the columns that decide (batch
    size, best lr, seconds / steps / examples to target, seeds reached, samples/s, peak memory,
    eval share, note); the rest stays in time_to_accuracy.csv and the full table."""
    out = pd.DataFrame(index=range(len(rows)))
    rows = rows.reset_index(drop=True)
    out["batch size"] = rows["batch_size"].map(str)
    out["best lr"] = rows["best_lr"].map(lambda x: f"{x:.3g}" if compact and not _missing(x) else lr(x))
    # (compact: 3 digits, 0.00707, where the terminal cut 0.00707107 to 0.0070…; the sentence gives it whole)
    for axis in rec.extra_axes:
        out[axis] = rows[axis].map(value)
    if spread and "seconds_min" in rows:
        out["seconds to target"] = [
            _with_range(seconds, s, lo, hi) if status == REACHED else status
            for s, lo, hi, status in zip(rows["seconds"], rows["seconds_min"], rows["seconds_max"], rows["status"])]
        out["steps"] = [_with_range(count, s, lo, hi) if status == REACHED else DASH
                        for s, lo, hi, status in zip(rows["steps"], rows["steps_min"], rows["steps_max"],
                                                     rows["status"])]
    else:
        out["seconds to target"] = [
            seconds(s) if status == REACHED else status for s, status in zip(rows["seconds"], rows["status"])]
        out["steps"] = rows["steps"].map(count)
    out["s/step"] = rows["seconds_per_step"].map(seconds)
    predicted = zip(rows["predicted_seconds"], rows["predicted_low"], rows["predicted_high"], rows["status"])
    if compact:  # the deciding figure; its interval is in the full table
        out["predicted s"] = [seconds(p) if status == REACHED else DASH for p, _, _, status in predicted]
    else:
        out["predicted s (95%)"] = [_with_range(seconds, p, lo, hi) if status == REACHED else DASH
                                    for p, lo, hi, status in predicted]
    if not compact:
        out["epochs"] = rows["epochs"].map(epochs)
    out["examples"] = rows["examples"].map(count)
    if rec.sequence:
        out["tokens"] = rows["tokens"].map(count)
    out["seeds reached"] = rows["seeds_reached"]
    if not compact:
        if not rec.regression:
            out["final test acc"] = rows["final_test_accuracy"].map(accuracy)
        out["final test loss"] = rows["final_test_loss"].map(loss)
        if rec.sequence:  # exp of the median loss is the median perplexity: exp is monotonic
            out["final test ppl"] = np.exp(rows["final_test_loss"].astype(float).clip(upper=700)).map(loss)
    out["samples/s"] = rows["samples_per_second"].map(speed)
    if rec.sequence:
        out["tokens/s"] = rows["tokens_per_second"].map(speed)
    if not compact:
        out["steps/epoch"] = rows["steps_per_epoch"].map(count)
    if rows["peak_memory_bytes"].notna().any():
        out["peak memory"] = rows["peak_memory_bytes"].map(memory)
    if "eval_share" in rows and rows["eval_share"].notna().any():
        out["eval share"] = rows["eval_share"].map(share)  # of the trials' time: what evaluating cost
    if not compact:
        out["infeasible"] = rows["infeasible"].map(str)
        if "regime" in rows and rows["regime"].notna().any():
            out["regime"] = rows["regime"].map(lambda r: DASH if _missing(r) else str(r))
    out["note"] = [notes(row) for row in rows.to_dict("records")]
    if compact:  # what decided first; samples/s is in s/step, and stays in the full table
        out = out.rename(columns={"seconds to target": "measured s", "seeds reached": "reached",
                                  "peak memory": "memory"}).drop(columns="samples/s")  # fits 120 columns
        axes = [a for a in rec.extra_axes if a != "lr_factor"]  # the best lr says it already
        first = ["batch size", "best lr", *axes, "predicted s", "steps", "s/step", "measured s"]
        out = out[first + [c for c in out.columns if c not in first and c != "lr_factor"]]
    return out


def terminal_table(rec: SweepRecords, rows: pd.DataFrame, title: str = "") -> Table:
    """The terminal's table (a rich Table; the command line prints it): the compact columns, with ★ on the
    fastest batch size and ⚠ on a best lr at the edge of the lrs tried instead of a note column."""
    text = time_to_accuracy(rec, rows, compact=True).drop(columns="note")
    rows = rows.reset_index(drop=True)
    text["batch size"] = [f"{bs} ★" if fast else f"{bs} ≈" if tie else bs
                          for bs, fast, tie in zip(text["batch size"], rows["fastest"], rows["within_noise"])]
    text["best lr"] = [f"{v} ⚠" if edge else v for v, edge in zip(text["best lr"], rows["best_lr_on_edge"])]
    caption = "★ fastest to the target here (predicted: steps x s/step)" + (
        " · ≈ as fast within the noise" if rows["within_noise"].any() else "") + (
        " · ⚠ best lr at the edge of the lrs tried" if rows["best_lr_on_edge"].any() else "")
    table = Table(title=title or None, caption=caption, title_justify="left", header_style="bold")
    for column in text.columns:
        table.add_column(column, justify="left" if column in ("batch size", *rec.extra_axes) else "right")
    for row in text.itertuples(index=False):
        # Text, not markup: a value with [brackets] must print as itself.
        table.add_row(*(RichText(str(cell)) for cell in row))
    return table


def notes(row: dict) -> str:
    """The markers of one time_to_accuracy row: '★ fastest, fewest examples, ⚠ lr on edge'."""
    marks = [mark for column, mark in MARKS.items() if row.get(column)]
    marks += [text for column, text in FLAGS.items() if row.get(column)]
    return ", ".join(marks + ([EDGE] if row.get("best_lr_on_edge") else []))


def grid(values: pd.DataFrame, notes: pd.DataFrame, fmt) -> pd.DataFrame:
    """An lr x batch size grid as text: a note ("diverged", "not reached") wins over the number,
    and a cell nobody ran shows a dash."""
    out = pd.DataFrame({"lr": [lr(v) for v in values.index]})
    for bs in values.columns:
        cells = []
        for lr_value in values.index:
            note = notes.loc[lr_value, bs] if bs in notes.columns and lr_value in notes.index else ""
            cells.append(note if note else fmt(values.loc[lr_value, bs]))
        out[f"bs {bs}"] = cells
    return out


def trials(rec: SweepRecords, table: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "trial": table["trial_id"],
        "status": table["status"],
        "batch size": [str(b) if not isinstance(named, str) else named for b, named in
                       zip(table["batch_size"], table.get("schedule", pd.Series(index=table.index, dtype=object)))],
        "lr": table["lr"].map(lr),
        "seed": table["seed"].map(str),
    })
    for axis in rec.extra_axes:
        out[axis] = table[axis].map(value)
    out["steps"] = table["steps"].map(count)
    out["epochs"] = table["epochs"].map(epochs)
    out["train s"] = table["train_seconds"].map(seconds)
    out["samples/s"] = table["samples_per_second"].map(speed)
    if rec.sequence:
        out["tokens/s"] = table["tokens_per_second"].map(speed)
    out["final train loss"] = table["final_train_loss"].map(loss)
    if not rec.regression:
        out["final test acc"] = table["final_test_accuracy"].map(accuracy)
    out["final test loss"] = table["final_test_loss"].map(loss)
    if rec.sequence:
        out["final test ppl"] = table["final_test_perplexity"].map(loss)
    for target in rec.targets:
        column = f"seconds_to_{target:g}"
        if column in table:
            out[f"s to {target:g}"] = table[column].map(seconds)
    # Why a trial did not complete: the error of a failed one, the reason a diverged one stopped.
    out["reason"] = table["error"].map(lambda e: "" if _missing(e) else str(e))
    return out


def describe(part: dict | None, section: str | None = None) -> str:
    """A config section by its name, with its arguments: user code named by import path reads as a
    call, 'my_project.nets:SmallCNN(width=32, dropout=0.1)'; other keys follow in brackets, as in
    'mlp (hidden=[256], activation=relu)'. Older records without `args` read the same way. With the `section`'s
    name (schema.USED_BY), a key this name does not use, or that any name may set, left at its default, is left
    out: 'adamw (betas=[0.9, 0.999], eps=1e-08)', not momentum=0.0 and nesterov=False besides."""
    if not isinstance(part, dict):
        return DASH
    name = str(part.get("name", DASH))
    args = part.get("args")
    if isinstance(args, dict) and args:
        name += "(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"
    rest = [f"{k}={v}" for k, v in part.items() if k not in ("name", "args") and v is not None
            and (section is None or _worth_saying(section, part.get("name"), k, v))]
    return f"{name} ({', '.join(rest)})" if rest else name


def _worth_saying(section: str, name: str | None, key: str, value) -> bool:
    """A key the named built-in uses, or one set away from its default."""
    if name in schema.USED_BY.get(section, {}).get(key, ()):
        return True
    field = schema.Experiment.model_fields[section].annotation.model_fields.get(key)
    default = field.default if field is not None else None
    return field is None or json.loads(json.dumps(value)) != json.loads(json.dumps(default))


def budget(part: dict | None) -> str:
    if not isinstance(part, dict):
        return DASH
    limits = [f"{part[k]:g} {k}" if isinstance(part.get(k), float) else f"{part[k]} {k}"
              for k in ("epochs", "steps", "examples", "tokens") if part.get(k) is not None]
    text = " or ".join(limits) or "no limit recorded"
    return text + ("; stops once every target is reached" if part.get("stop_at_target") else "")


def status_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "none"


def distinct(values: pd.Series) -> str:
    """The distinct values of a column, most common first (normally there is one)."""
    counted = values.dropna().map(str).value_counts()
    return "; ".join(counted.index) if len(counted) else DASH
