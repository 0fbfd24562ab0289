"""Export sweep records to TensorBoard or MLflow: one run per trial, read back from the records only.

    results, warnings = export(Path("runs"), "tensorboard", "tb")            # tb/<sweep>/<trial-id>/
    results, warnings = export(Path("runs/mnist"), "mlflow", "sqlite:///mlflow.db")

What each trial becomes (the same names in both):
- a series per metrics.csv column (train_loss, test_accuracy, lr, noise_b_simple, epoch, train_seconds...)
  against step, empty cells left out. Each point is stamped started_at + train_seconds, so the relative-time
  axis of TensorBoard and MLflow reads the training clock (evaluation excluded), not the wall clock.
- TensorBoard also gets the learning curves against examples seen (`by_examples/<column>`): it has no other
  x axis, and per example is how batch sizes compare fairly. MLflow can plot any metric against another.
- summary figures from summary.json as `summary/<name>`: final test accuracy and loss, steps, seconds,
  samples/s, and `summary/<seconds|steps|epochs|examples>_to_<target>` for every target reached.
  A missed target (or one not recorded) is left out, never NaN: an empty cell reads "not reached".
- TensorBoard: hparams (batch_size, lr, seed, the other axes, status, sweep) for the HParams tab.
  MLflow: params (the trial's config.json flattened) and tags (trial_id, sweep, status, device, torch...).
  A trial whose batch size followed a schedule: batch_size is its starting one, and both name the schedule.

Exporting again never duplicates: TensorBoard rewrites a trial's event files; MLflow keeps a run whose
record is unchanged (tag `batchlab.record`) and replaces (deletes, then logs anew) one whose record changed.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import yaml

from batchlab.disk import check_writable
from batchlab.errors import VALUE_CHARS, BatchlabError, short
from batchlab.config import flatten
from batchlab.records import Status, read_json
# The one place the records reader is imported.
from batchlab.reporting.load import TO_TARGET, SweepRecords, read_sweeps

DESTINATIONS = ("tensorboard", "mlflow")
# Summary figures per trial (trials columns of the reader, i.e. summary.json), besides time to each target.
FIGURES = ("final_test_accuracy", "final_test_loss", "final_train_loss", "steps", "train_seconds",
           "samples_per_second", "peak_memory_bytes", "noise_b_simple")
# Learning curves TensorBoard also gets against examples seen.
CURVES = ("train_loss", "test_loss", "test_accuracy", "train_eval_loss", "train_eval_accuracy")
# batchlab status -> MLflow run status (diverged is a result of the lr, not a crash; raced, of the race).
MLFLOW_STATUS = {Status.COMPLETED: "FINISHED", Status.DIVERGED: "FINISHED", Status.RACED: "FINISHED",
                 Status.FAILED: "FAILED", Status.INTERRUPTED: "KILLED", Status.INCOMPLETE: "KILLED"}
MLFLOW_TAGS = ("status", "schedule", "device", "device_name", "precision", "torch_version", "threads", "error")
REPORT_RUN = "report"  # the run holding a sweep's report/ directory as artifacts
CONNECT_SECONDS = 10.0  # to reach a tracking server: a slow link gets there well within it
DATABASES = ("mysql", "postgresql", "mssql", "sqlite")  # the SQLAlchemy stores: a missing module is their driver

Progress = Callable[[int, int], None]  # (trials done, trials in all)


@dataclass
class Exported:
    """What one sweep became."""

    sweep: str
    where: str  # TensorBoard: the sweep's log directory; MLflow: the experiment name
    written: int  # trials written
    unchanged: int = 0  # MLflow: runs already exported from the same record, left as they are
    report: bool = False  # MLflow: the report/ directory was logged as artifacts


def export(path: Path, to: str, dest: str, progress: Progress | None = None) -> tuple[list[Exported], list[str]]:
    """Export every sweep under `path` (a records root or one sweep directory) to `dest`.

    `to` is "tensorboard" (`dest`: a log directory) or "mlflow" (`dest`: a tracking URI or a directory).
    Returns what each sweep became and the warnings (damaged records, sweeps that could not be read).
    Raises BatchlabError when the package for `to` is missing or nothing could be read.
    """
    if to not in DESTINATIONS:
        raise BatchlabError(f"cannot export to {short(repr(to), VALUE_CHARS)}: choose from {', '.join(DESTINATIONS)}")
    sweeps, warnings = readable_sweeps(Path(path).resolve())
    total, done = sum(len(r.all_trials) for r in sweeps), 0

    def step():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    if to == "tensorboard":
        writer = tensorboard_writer()
        return [to_tensorboard(r, Path(dest), writer, step) for r in sweeps], warnings
    with mlflow_store(dest) as client:
        return [to_mlflow(r, client, dest, step) for r in sweeps], warnings


def readable_sweeps(path: Path) -> tuple[list[SweepRecords], list[str]]:
    """Every readable sweep under `path`, and warnings (a sweep that cannot be read under a root is one)."""
    sweeps, warnings = [], []
    for sweep_dir, records, why in read_sweeps(path):
        if records is None:
            warnings.append(f"{why}; sweep skipped")
            continue
        if records.running:
            warnings.append(f"{sweep_dir / '.lock'} exists: the sweep was still running; export again later")
        warnings += records.warnings
        sweeps.append(records)
    return sweeps, warnings


# --- what a trial is, in plain Python values ---

def plain(value):
    """A pandas/numpy cell as a Python value; NaN and None become None."""
    value = value.item() if hasattr(value, "item") else value
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def figures(records: SweepRecords, row: dict) -> dict[str, float]:
    """`summary/<name>` -> value for one trial; figures not measured and targets missed are left out."""
    out = {f"summary/{key}": plain(row[key]) for key in FIGURES}
    hits = records.hits[records.hits["trial_id"] == row["trial_id"]]
    for hit in hits.to_dict("records"):
        for what in TO_TARGET:
            out[f"summary/{what}_to_{hit['target']:g}"] = hit[what]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def figure_names(records: SweepRecords) -> list[str]:
    """Every figure a trial of this sweep may have: the same columns for all its trials."""
    return [f"summary/{key}" for key in FIGURES] + [
        f"summary/{what}_to_{target:g}" for target in records.targets for what in TO_TARGET]


def axes(records: SweepRecords, row: dict) -> dict:
    return {key: plain(row[key]) for key in ("batch_size", "lr", "seed", *records.extra_axes)}


def series(records: SweepRecords, trial_id: str):
    """(column, step, examples, train_seconds, value) for every non-empty metrics.csv cell of a trial."""
    frame = records.metrics.get(trial_id)
    if frame is None:  # not written yet, or damaged (the reader warned)
        return
    for column in frame.columns.drop("step"):
        rows = frame[["step", "examples", "train_seconds", column]].dropna(subset=[column])
        for step, examples, seconds, value in rows.itertuples(index=False):
            yield column, int(step), examples, (0.0 if math.isnan(seconds) else seconds), value


def timestamp(text) -> float | None:
    """An ISO time from summary.json as epoch seconds; None when absent or unreadable."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def clock(row: dict) -> tuple[float, float]:
    """(start, end of training) in epoch seconds: started_at (now without a summary) + train_seconds."""
    start = timestamp(row["started_at"]) or time.time()
    return start, start + (plain(row["train_seconds"]) or 0.0)


def record_key(records: SweepRecords, row: dict) -> str:
    """Changes whenever the trial's record does: re-run (start time), finished since, or more rows."""
    frame = records.metrics.get(row["trial_id"])
    rows = 0 if frame is None else len(frame)
    return f"{row['status']} {row['started_at']} {row['finished_at']} {rows} rows"


# --- TensorBoard ---

def tensorboard_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise BatchlabError("exporting to TensorBoard needs the tensorboard package: "
                            "pip install 'batchlab[tensorboard]'") from None
    return SummaryWriter


def to_tensorboard(records: SweepRecords, log_dir: Path, writer, step: Callable[[], None]) -> Exported:
    from torch.utils.tensorboard.summary import hparams

    sweep = records.sweep_dir.name
    names = figure_names(records)
    for row in records.all_trials.to_dict("records"):
        run_dir = log_dir / sweep / row["trial_id"]
        for old in run_dir.glob("events.out.tfevents.*"):
            old.unlink()  # the trial is written anew, not appended to
        start, end = clock(row)
        try:
            with writer(log_dir=str(run_dir)) as w:
                # The HParams tab's columns: the same metric list for every trial of the sweep.
                hp = {**axes(records, row), "status": row["status"], "sweep": sweep}
                if plain(row.get("schedule")) is not None:  # batch_size is where the schedule started
                    hp["schedule"] = row["schedule"]
                for summary in hparams(hp, dict.fromkeys(names, 0.0)):
                    w.file_writer.add_summary(summary)
                for column, at, examples, seconds, value in series(records, row["trial_id"]):
                    w.add_scalar(column, value, at, walltime=start + seconds)
                    if column in CURVES and not math.isnan(examples):
                        w.add_scalar(f"by_examples/{column}", value, int(examples), walltime=start + seconds)
                for name, value in figures(records, row).items():
                    w.add_scalar(name, value, 0, walltime=end)
        except OSError as exc:
            raise BatchlabError(f"cannot write to {run_dir}: {exc.strerror or exc}") from None
        step()
    return Exported(sweep, str(log_dir / sweep), len(records.all_trials))


# --- MLflow ---

@contextmanager
def mlflow_store(uri: str):
    """An MlflowClient on `uri`; a directory or file: URI is MLflow's file store, allowed here."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise BatchlabError("exporting to MLflow needs the mlflow-skinny package (or mlflow): "
                            "pip install 'batchlab[mlflow]'") from None
    if uri.startswith("sqlite:///"):
        open_sqlite(Path(uri[len("sqlite:///"):]))
    elif uri.startswith("file:") or "://" not in uri:  # MLflow's file store, which raises the OS's error
        check_writable(Path(urlparse(uri).path if uri.startswith("file:") else uri))
    elif urlparse(uri).scheme.lower() in ("http", "https"):
        reachable(uri)
    # MLflow 3 refuses its file store unless asked; a directory given here is that request.
    saved = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        yield MlflowClient(tracking_uri=uri)
    except MlflowException as exc:
        raise BatchlabError(f"MLflow at {uri}: {str(exc.message).strip().splitlines()[0]}") from None
    except ImportError as exc:  # a database store's driver (psycopg, MySQLdb, ...), boto3 for S3 artifacts...
        database = urlparse(uri).scheme.split("+")[0].lower() in DATABASES
        raise BatchlabError(f"MLflow at {uri}: needs the Python module {exc.name or exc}, not installed here"
                            + (": install the driver for that database" if database else "")) from None
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def reachable(uri: str, seconds: float = CONNECT_SECONDS) -> None:
    """Connect to a tracking server once, briefly: MLflow retries an unreachable one for minutes, silently. Not
    through a proxy: where one is set for the server, MLflow goes through it and this probe is left out."""
    url = urlparse(uri)
    if urllib.request.getproxies().get(url.scheme.lower()) and not urllib.request.proxy_bypass(url.hostname or ""):
        return
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname or "", port), timeout=seconds):
            pass
    except (OSError, ValueError) as exc:
        raise BatchlabError(f"MLflow at {uri}: cannot connect ({exc}); is the tracking server running "
                            "there?") from None


def open_sqlite(path: Path) -> None:
    """Create the database's folder and open it once: MLflow would retry a bad path for minutes."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as db:
            db.execute("SELECT name FROM sqlite_master").fetchall()
    except (OSError, sqlite3.Error) as exc:
        raise BatchlabError(f"cannot open the database {path}: {exc}") from None


def experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # A sqlite store keeps artifacts beside the database, not in the current directory.
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts" / name).as_uri()
        return client.create_experiment(name, artifact_location=location)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def drop_unreadable_runs(uri: str, experiment: str) -> None:
    """A file store's run folders (in `experiment`) whose meta.yaml is empty or not a run's: an export killed
    with SIGKILL just after MLflow created the file leaves one, and MLflow's own search then fails on it
    (AttributeError deep in its file store). Nothing was logged into such a run; the export writes the trial's
    run again. Other stores (sqlite, a server) write a run in one transaction: nothing to do."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return
    folder = Path(parsed.path if parsed.scheme else uri) / experiment
    for meta in folder.glob("*/meta.yaml"):
        try:
            info = yaml.safe_load(meta.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            info = None
        if not (isinstance(info, dict) and info.get("run_id")):
            shutil.rmtree(meta.parent, ignore_errors=True)


def active_runs(client, experiment: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def to_mlflow(records: SweepRecords, client, uri: str, step: Callable[[], None]) -> Exported:
    from mlflow.entities import Metric, Param

    sweep = records.sweep_dir.name
    experiment = experiment_id(client, sweep, uri)
    drop_unreadable_runs(uri, experiment)
    by_trial: dict[str, list] = {}
    ours = {*records.all_trials["trial_id"], REPORT_RUN}
    for run in active_runs(client, experiment):
        if "batchlab.record" in run.data.tags:  # runs exported by batchlab; any other run is left alone
            by_trial.setdefault(run.data.tags.get("trial_id", REPORT_RUN), []).append(run)
        elif run.info.status == "RUNNING" and run.info.run_name in ours:  # one cut short before its tags were
            # written (a file store writes them after the run): replaced like any RUNNING run
            by_trial.setdefault(run.info.run_name, []).append(run)
    written = unchanged = 0
    for row in records.all_trials.to_dict("records"):
        key = record_key(records, row)
        if replace(client, by_trial.get(row["trial_id"], []), key):
            start, end = clock(row)
            tags = {"trial_id": row["trial_id"], "sweep": sweep, "batchlab.record": key,
                    **{k: row.get(k) for k in MLFLOW_TAGS}}  # schedule: only where one ran
            run = client.create_run(experiment, start_time=int(start * 1000), run_name=row["trial_id"],
                                    tags={k: str(v) for k, v in tags.items() if plain(v) is not None})
            # The reader skipped trials whose config.json it could not parse: this one parses.
            config = read_json(records.sweep_dir / "trials" / row["trial_id"] / "config.json") or {}
            params = [Param(k, str(v)) for k, v in flatten(config).items()]
            metrics = [Metric(column, float(value), int((start + seconds) * 1000), at)
                       for column, at, _, seconds, value in series(records, row["trial_id"])]
            metrics += [Metric(name, value, int(end * 1000), 0) for name, value in figures(records, row).items()]
            client.log_batch(run.info.run_id, metrics=metrics, params=params)
            finished = timestamp(row["finished_at"]) or end
            client.set_terminated(run.info.run_id, MLFLOW_STATUS[row["status"]], end_time=int(finished * 1000))
            written += 1
        else:
            unchanged += 1
        step()
    report = log_report(client, experiment, records.sweep_dir / "report", by_trial.get(REPORT_RUN, []))
    return Exported(sweep, sweep, written, unchanged, report)


def replace(client, runs: list, key: str) -> bool:
    """Whether to log the trial anew: deletes its earlier runs unless one holds the same record. A run still
    RUNNING is an export cut short (set_terminated comes last): replaced, never kept."""
    keep = next((r for r in runs if r.data.tags.get("batchlab.record") == key and r.info.status != "RUNNING"), None)
    for run in runs:
        if run is not keep:
            client.delete_run(run.info.run_id)
    return keep is None


def log_report(client, experiment: str, report_dir: Path, runs: list) -> bool:
    """The sweep's report/ as the artifacts of a run named "report", when the report exists."""
    if not report_dir.is_dir():
        return False
    files = sorted(p for p in report_dir.rglob("*") if p.is_file())
    key = f"{len(files)} files, {sum(p.stat().st_size for p in files)} bytes, " \
          f"last written {max((p.stat().st_mtime_ns for p in files), default=0)}"
    if replace(client, runs, key):
        run = client.create_run(experiment, run_name=REPORT_RUN, tags={"batchlab.record": key})
        client.log_artifacts(run.info.run_id, str(report_dir), artifact_path="report")
        client.set_terminated(run.info.run_id)
    return True
