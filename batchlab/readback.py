"""One trial's records read back, never trusted: what `batchlab report` reads of a trial, and the one test of
whether a resumed sweep counts it as done (records.SweepDir.status). A damaged file is a Damaged naming its path
and why; a metrics.csv that cannot belong to its trial's summary is a Contradicts.

The sweep and the report asked two questions before (the sweep: is there a summary, a config.json and a row?):
a summary the report skipped ('steps' is 'abc'), or a curve it left out (cut mid-line, or rows cut off), counted
as done for the sweep, so the trial was never trained again and the report skipped it for ever.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchlab import batches
from batchlab.records import DONE, METRIC_COLUMNS, Status, read_summary, run_token
from batchlab.summary import Summary

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = METRIC_COLUMNS  # the columns read: the trainer's (the batch size of each row among them)


class Damaged(Exception):
    """A record file that cannot be used; the message names the file and says why."""


class Contradicts(Damaged):
    """A metrics.csv that cannot belong to its trial's summary (no rows, steps going backwards): the trial is
    left out, not just its curves."""


def read_metrics(path: Path, complete: bool, steps: int | None = None) -> pd.DataFrame | None:
    """metrics.csv as numbers (None: a trial that has logged nothing yet). `complete`: the trial has a summary;
    `steps`: the steps it ended at, where its last row must be (a trial that ran to an end logs a row there)."""
    import pandas as pd  # here, not above: a sweep imports this module, and a new one reads no curve

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if complete:
            raise Damaged(f"{path}: missing") from None
        return None  # a trial that has just started has logged nothing yet
    except OSError as exc:
        raise Damaged(f"{path}: cannot be read ({exc})") from None
    if not data.endswith(b"\n") and data:
        if complete:
            raise Damaged(f"{path}: truncated (the last line is incomplete)")
        # A running trial may be mid-way through writing a line: drop that line only.
        data = data[: data.rfind(b"\n") + 1]
    if not data.strip():
        if complete:
            raise Damaged(f"{path}: empty")
        return None
    # The header is one plain line (names without quotes or commas), cheaper to split by hand
    # than to ask pandas twice.
    header = data[: data.find(b"\n")].decode("utf-8", errors="replace").strip().split(",")
    if "step" not in header:
        raise Damaged(f"{path}: no 'step' column in the header")
    known = [c for c in COLUMNS if c in header]  # unknown columns are tolerated, and skipped
    try:
        frame = pd.read_csv(io.BytesIO(data), usecols=known, dtype=dict.fromkeys(known, float))
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise Damaged(f"{path}: not a valid metrics CSV ({str(exc).strip()})") from None
    # pandas fills a short row with empty cells; a row without a step is a damaged row.
    if frame["step"].isna().any():
        raise Damaged(f"{path}: a row has no step (short or damaged row)")
    if complete and frame.empty:
        raise Contradicts(f"{path}: holds only its header, though the trial ended")
    for column in ("step", "examples", "train_seconds"):
        if column not in frame:
            continue
        values = frame[column].to_numpy()
        if (values < 0).any():
            raise Contradicts(f"{path}: a negative {column} ({values[values < 0][0]:g})")
        if (values[1:] < values[:-1]).any():
            row = int((values[1:] < values[:-1]).argmax()) + 2
            raise Contradicts(f"{path}: {column} goes backwards at row {row}")
    last = frame["step"].iloc[-1] if len(frame) else None
    if steps is not None and last is not None and last != steps:  # cut at a line's end: a curve short, silently
        raise Damaged(f"{path}: its last row is step {last:g}, but summary.json says the trial ended at step {steps} "
                      f"({'rows cut off' if last < steps else 'rows past its end'})")
    return frame.reindex(columns=COLUMNS)  # columns not written: all empty


@dataclass
class TrialRecord:
    """What the report reads of one trial. `summary` None: still running, killed hard, or another run's."""
    config: dict
    summary: Summary | None
    metrics: pd.DataFrame | None  # metrics.csv as a DataFrame; None: nothing logged yet, or damaged (`curves_lost`)
    schedule: dict  # the trials columns schedule and lr_scale (schedule_columns)
    curves_lost: str | None = None  # why metrics.csv cannot be drawn (the summary's figures still count)
    notes: list[str] = field(default_factory=list)  # what else the report warns about (another run's summary)


def read_trial(trial_dir: Path, report: bool = True) -> TrialRecord:
    """Read and check one trial's config.json, summary.json and metrics.csv. Raises Damaged when the trial
    must be left out; with `report`, also when the report cannot use it though its files are whole (no target:
    training it again would write the same files, so a resumed sweep does not ask that)."""
    config = read_object(trial_dir / "config.json")
    check_config(config, trial_dir / "config.json", report)
    notes: list[str] = []
    summary = read_checked_summary(trial_dir, notes)
    steps = summary.steps if summary is not None and summary.status in DONE else None  # failed: stopped anywhere
    frame, lost = None, None
    try:
        frame = read_metrics(trial_dir / "metrics.csv", summary is not None, steps)
    except Contradicts:
        raise
    except Damaged as exc:
        lost = str(exc)
    return TrialRecord(config, summary, frame, schedule_columns(trial_dir, config, summary), lost, notes)


def why_not_done(trial_dir: Path) -> tuple[Status, str | None]:
    """The status a resumed sweep goes by, and why a trial with a summary is INCOMPLETE: a completed, diverged or
    raced one counts as such only when the report reads it whole (its summary and its curves); else it is
    INCOMPLETE, with the report's reason, and is trained again. A failed or interrupted one runs again whatever
    its files hold (no reason given). (INCOMPLETE, None): no summary and nothing damaged (running, or killed)."""
    try:
        record = read_trial(trial_dir, report=False)
    except Damaged as exc:
        said = (read_summary(trial_dir) or {}).get("status")  # the file as written, of the run that started here
        if said in (Status.FAILED, Status.INTERRUPTED):
            return Status(said), None
        return Status.INCOMPLETE, str(exc)
    if record.summary is None:
        return Status.INCOMPLETE, next(iter(record.notes), None)
    if record.summary.status in DONE and record.curves_lost:  # retrained, its curve comes back exactly for a seed
        return Status.INCOMPLETE, record.curves_lost
    return record.summary.status, None


def read_object(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Damaged(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Damaged(f"{path}: cannot be read ({exc})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Damaged(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise Damaged(f"{path}: expected a JSON object")
    return value


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def schedule_columns(trial_dir: Path, config: dict, summary: Summary | None) -> dict:
    """The trials columns schedule (the key of the trial's batch-size schedule, batches.key; None: a constant
    batch size) and lr_scale, from the summary (else, for a trial still running, its config). Raises Damaged
    when the schedule or the batch sizes it used are not what a trial writes."""
    path = trial_dir / ("summary.json" if summary is not None else "config.json")
    schedule = summary.batch_schedule if summary is not None else config.get("batch_schedule")
    if schedule is None:
        return {"schedule": None, "lr_scale": None}
    try:
        identity = batches.key(schedule)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise Damaged(f"{path}: 'batch_schedule' is not a batch-size schedule") from None
    changes = summary.batch_changes if summary is not None else None
    if changes is not None:
        ok = all(isinstance(c, dict) and is_number(c.get("step")) and is_number(c.get("batch_size"))
                 and c["batch_size"] >= 1 for c in changes)
        if not ok or not changes or changes[0]["step"] != 0 or any(
                b["step"] < a["step"] for a, b in zip(changes, changes[1:])):
            raise Damaged(f"{path}: 'batch_changes' must list {{step, batch_size}} from step 0, in step order")
    scale = schedule.get("lr_scale")
    return {"schedule": identity, "lr_scale": scale if isinstance(scale, str) else None}


def check_config(config: dict, path: Path, report: bool = True) -> None:
    for key in ("batch_size", "lr", "seed"):
        if not is_number(config.get(key)):
            raise Damaged(f"{path}: '{key}' is missing or not a number")
    target = config.get("target")
    if not isinstance(target, dict) or target.get("metric") not in ("test_accuracy", "test_loss"):
        raise Damaged(f"{path}: 'target' must name test_accuracy or test_loss")
    values = target.get("value")
    values = values if isinstance(values, list) else [values]
    if not values and report:  # (sweep warns before it trains, and trains to the budget)
        raise Damaged(f"{path}: no target.value; the report is built on the times to a target: sweep again with one "
                      "(and --restart)")
    if not all(is_number(v) for v in values):
        raise Damaged(f"{path}: 'target.value' must be a list of numbers")
    if not isinstance(config.get("axes", {}), dict):
        raise Damaged(f"{path}: 'axes' must be a mapping")


def read_checked_summary(trial_dir: Path, notes: list[str]) -> Summary | None:
    """The summary, or None for a trial still running, killed hard, or whose summary is another run's (a note)."""
    path = trial_dir / "summary.json"
    if not path.exists():
        return None
    data = read_object(path)
    if data.get("run_token", "") != run_token(trial_dir):
        notes.append(f"{path} was written by an earlier run of the trial than the one that last started "
                     "there (its run token differs): counted as incomplete")
        return None
    try:
        return Summary.from_json(data)
    except ValueError as exc:
        raise Damaged(f"{path}: {exc}") from None
