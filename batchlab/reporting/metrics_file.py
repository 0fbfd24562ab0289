"""Read one trial's metrics.csv for a report (load.py reads the rest), never trusting it: a damaged file is a
Damaged naming its path and why; one that cannot belong to its trial's summary is a Contradicts."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from batchlab.records import METRIC_COLUMNS

# The columns read: the trainer's, and the batch size of each row (trials with a batch-size schedule).
COLUMNS = [*METRIC_COLUMNS, *(["batch_size"] if "batch_size" not in METRIC_COLUMNS else [])]


class Damaged(Exception):
    """A record file that cannot be used; the message names the file and says why."""


class Contradicts(Damaged):
    """A metrics.csv that cannot belong to its trial's summary (no rows, steps going backwards): the trial is
    left out, not just its curves."""


def metrics_or_warning(path: Path, complete: bool, warnings: list[str]) -> pd.DataFrame | None:
    """metrics.csv as numbers; None, with a warning, when the file is damaged (the trial keeps its summary).
    Raises Contradicts when the file cannot belong to the trial's summary: the trial is skipped."""
    try:
        return read_metrics(path, complete)
    except Contradicts:
        raise
    except Damaged as exc:
        warnings.append(f"{exc}; its curves are left out")
        return None


def read_metrics(path: Path, complete: bool) -> pd.DataFrame | None:
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
    return frame.reindex(columns=COLUMNS)  # columns not written: all empty
