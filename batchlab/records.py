"""The on-disk contract that `batchlab report` reads, and the rules for resuming a sweep.

    <out>/<name>/
      sweep.yaml               the config as given, with the overrides
      .lock                    held while a sweep writes here
      trials/<trial-id>/
        config.json            the fully resolved trial config, with its axis values
        metrics.csv            a row per log point or evaluation, flushed as written
        summary.json           written last and atomically: status and figures (batchlab.summary.Summary)
        error.txt              the traceback of a trial that failed
        run_token              written when the trial starts; summary.json carries the same token
        checkpoint.pt          a long trial's state mid-training (batchlab.checkpoint), to resume from
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import uuid
from contextlib import contextmanager, suppress
from enum import Enum
from pathlib import Path
from typing import Any

import filelock
import yaml

from batchlab.config import changed_fields, validate
from batchlab.disk import LineFile, write_atomic, write_json_atomic, write_text, writing
from batchlab.errors import ConfigError, RecordsError, short
from batchlab.schema import Experiment

class Status(str, Enum):
    """A trial's status in summary.json; INCOMPLETE is a trial directory without one (running, or killed)."""
    COMPLETED = "completed"
    DIVERGED = "diverged"  # the loss turned NaN/inf or exploded, or the trial did not learn (`error` says which)
    FAILED = "failed"  # an exception inside the trial (its message in `error`)
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    RACED = "raced"  # stopped once its training time (or steps, in suggest) passed the best to the target (racing)
    INCOMPLETE = "incomplete"

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # hashes as its value, so "completed" and Status.COMPLETED meet in sets and dicts


DONE = (Status.COMPLETED, Status.DIVERGED, Status.RACED)  # a resumed sweep skips these (RACED only when racing)
# ran to an end a target can be judged by; a raced trial provably reached it later than the best, if at all
FINISHED = (Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.RACED)
INFEASIBLE = (Status.DIVERGED, Status.FAILED)

METRIC_COLUMNS = [
    "step", "epoch", "examples", "tokens", "train_seconds", "lr",  # tokens: sequence tasks (examples x context)
    "batch_size",  # with lr: what the next step trains at (a batch-size schedule changes it)
    "train_loss", "test_loss", "test_accuracy",  # test_*: the evaluation split (test, or val with val_fraction)
    "train_eval_loss", "train_eval_accuracy",  # a fixed train subset evaluated like the test set
    "noise_g2", "noise_trace", "noise_b_simple",  # gradient noise scale (smoothed), when noise.every is set
]


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


RUN_TOKEN = "run_token"
CHECKPOINT = "checkpoint.pt"  # batchlab.checkpoint writes it
METRICS = "metrics.csv"
SUGGEST = "suggest.json"  # in a sweep directory `batchlab suggest` made: its answer (suggestion.answer)


def run_token(trial_dir: Path) -> str:
    """The token of the run that started in this trial directory ("" for records older than tokens)."""
    try:
        return (trial_dir / RUN_TOKEN).read_text().strip()
    except (OSError, UnicodeDecodeError):  # damaged: no summary matches it, so the trial counts as not run
        return ""


def read_summary(trial_dir: Path) -> dict | None:
    """summary.json, only if it belongs to the run that last started here: a worker that outlived its sweep
    must not pass its summary off as the rerun's. None: no summary, unreadable, or another run's."""
    summary = read_json(trial_dir / "summary.json")
    if summary is None or summary.get("run_token", "") != run_token(trial_dir):
        return None
    return summary


class MetricsWriter:
    """Appends rows to metrics.csv, each written whole and unbuffered (a row a full disk cuts short is taken
    back off: disk.LineFile), so an interrupted trial keeps what it had and never a partial row.

    keep_rows: resuming from a checkpoint, the rows it had written are kept and the later ones dropped.
    """

    def __init__(self, path: Path, keep_rows: int = 0):
        kept = []
        if keep_rows:
            with open(path, newline="") as f:
                kept = list(csv.DictReader(f))[:keep_rows]
        self.text = io.StringIO()
        self.writer = csv.DictWriter(self.text, METRIC_COLUMNS, restval="")
        self.writer.writeheader()
        self.writer.writerows(kept)
        start = self.take()
        write_atomic(path, lambda f: f.write(start))  # the kept rows stay whole if the rewrite fails
        self.file = LineFile(path)
        self.rows = len(kept)

    def take(self) -> str:
        text = self.text.getvalue()
        self.text.seek(0)
        self.text.truncate()
        return text

    def write(self, row: dict) -> None:
        self.writer.writerow({k: _cell(v) for k, v in row.items()})
        self.file.write(self.take())
        self.rows += 1

    def close(self) -> None:
        self.file.close()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # shortest round-trip repr: the CSV holds the exact float
    return "" if value is None else value


class SweepDir:
    def __init__(self, root: Path, name: str):
        self.path = Path(root) / name
        self.trials = self.path / "trials"

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials / trial_id

    def status(self, trial_id: str) -> Status | None:
        """The status a resumed sweep goes by; None if never started. See recorded."""
        return self.recorded(trial_id)[0]

    def recorded(self, trial_id: str) -> tuple[Status | None, str | None]:
        """(the recorded status, why the trial counts as INCOMPLETE despite a summary). The summary's status only
        when `batchlab report` reads the trial whole, summary and curves (readback.why_not_done, the report's own
        reading): else INCOMPLETE, and the trial is run again (restoring a seed's curve exactly). (None, None):
        never started; (INCOMPLETE, None): no summary, nothing damaged (running, or killed)."""
        from batchlab.readback import why_not_done  # (readback reads a Summary, whose module imports this one)

        d = self.trial_dir(trial_id)
        return why_not_done(d) if d.exists() else (None, None)

    @contextmanager
    def lock(self):
        """Refuse a second writer instead of interleaving two sweeps (an OS lock: freed if we die)."""
        lock = filelock.FileLock(self.path / ".lock", timeout=0)
        made = [p for p in (self.path, *self.path.parents) if not p.exists()]  # made here: gone again if refused
        with writing(self.path):  # a read-only, immutable or full disk: one line, not a traceback
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire()
            except filelock.Timeout:  # (an OSError too: told apart here)
                raise RecordsError(f"{self.path} is in use by another sweep (lock {self.path / '.lock'}); "
                                   "wait for it to finish or use another --out or name") from None
        try:
            yield self
        except BaseException:
            lock.release()
            with suppress(OSError):  # the refusal is what the user needs to read, not this
                for path in made:  # a config refused before anything was written leaves no folder behind
                    if path.is_dir() and {p.name for p in path.iterdir()} <= {".lock"}:
                        (path / ".lock").unlink(missing_ok=True)
                        path.rmdir()
            raise
        lock.release()

    def is_running(self) -> bool:
        """Whether a sweep holds the lock now (the .lock file itself stays behind after a sweep).

        Asked without writing anything, so a report reads records on a read-only disk: a shared flock on a
        read-only descriptor conflicts with the exclusive one a sweep holds (filelock's, on Unix)."""
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing drops a lock taken here
        return False

    def prepare(self, experiment: Experiment, restart: bool, code: dict[str, dict[str, str]]) -> None:
        """Check that the records here can be extended by this experiment and this code, then save sweep.yaml.

        `code` is {module: {file, sha256}} of the user modules the experiment imports (registry.source_hashes).
        """
        old_file = self.path / "sweep.yaml"
        if restart and self.trials.exists():
            with writing(self.trials):
                shutil.rmtree(self.trials)
        elif not restart:
            self.check(experiment, code)
        with writing(self.trials):
            self.trials.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(experiment.model_dump(mode="json", exclude_unset=True), sort_keys=False)
        write_atomic(old_file, lambda f: f.write(text))  # a full disk leaves the old sweep.yaml, never half of one

    def check(self, experiment: Experiment, code: dict[str, dict[str, str]]) -> None:
        """Raise RecordsError unless the trials here can be extended by this experiment and this code (`prepare`
        without --restart; writes nothing)."""
        old_file = self.path / "sweep.yaml"
        if not (old_file.exists() and self.trials.exists()):
            return
        try:
            old = validate(yaml.safe_load(old_file.read_text()) or {}, str(old_file))
        except (ConfigError, yaml.YAMLError, OSError, UnicodeDecodeError) as e:  # damaged, or not a file
            raise RecordsError(f"{old_file} cannot be read ({short(str(e))}); use --restart to start over") from None
        changed = changed_fields(old, experiment)
        if changed:
            raise RecordsError(
                f"{self.path} holds trials of a different experiment: {', '.join(changed)} changed; "
                "their trials could not be compared. Use --restart to start over, or give a new name")
        for module, recorded in self.recorded_code().items():
            now = code.get(module)
            if now is not None and now["sha256"] != recorded["sha256"]:
                raise RecordsError(
                    f"{now['file']} changed since {self.path}'s trials were recorded with it (module {module}); "
                    "their results could not be compared. Use --restart to start over, or give a new name")

    def summaries(self) -> list[dict]:
        """Every readable summary.json, in trial-id order (trials without one are running or were killed)."""
        found = [read_summary(d) for d in sorted(self.trials.iterdir())] if self.trials.is_dir() else []
        return [s for s in found if s]

    def best_time(self, target: str, seed: int) -> float | None:
        """Racing's deadline: the least training seconds to `target` ("0.97") among this sweep's trials of
        `seed` that reached it (None: none has yet)."""
        times = [s["targets"][target]["seconds"] for s in self.summaries()
                 if s.get("seed") == seed and isinstance(s.get("targets"), dict)
                 and isinstance(s["targets"].get(target), dict)]
        return min(times, default=None)

    def recorded_code(self) -> dict[str, dict[str, str]]:
        """The user modules the finished trials here ran with: {module: {file, sha256}} from their summaries."""
        found: dict[str, dict[str, str]] = {}
        for summary in self.summaries():
            if summary.get("status") in DONE and isinstance(summary.get("code"), dict):
                found.update({m: c for m, c in summary["code"].items() if isinstance(c, dict) and "sha256" in c})
        return found

    def start_trial(self, trial_id: str, resolved: dict, token: str | None = None) -> Path:
        """The trial's directory with config.json and a run token (`token`, or a new one): see start_trial_dir."""
        return start_trial_dir(self.trial_dir(trial_id), resolved, token)


def start_trial_dir(d: Path, resolved: dict, token: str | None = None) -> Path:
    """Make `d` the directory of the run that starts now: config.json and its run token, fresh, or, when it
    holds a checkpoint (checkpoint.FILE) of a run that did not end, kept with it and its metrics to resume."""
    with writing(d):
        if (d / CHECKPOINT).exists():
            for stale in ("summary.json", "error.txt", CHECKPOINT + ".tmp"):
                (d / stale).unlink(missing_ok=True)
        elif d.exists():
            shutil.rmtree(d)  # failed, interrupted or incomplete without a checkpoint: run again from the start
        d.mkdir(parents=True, exist_ok=True)
    write_json_atomic(d / "config.json", resolved)
    write_text(d / RUN_TOKEN, (token or uuid.uuid4().hex) + "\n")
    return d


def receive_trial(d: Path, files: dict[str, bytes]) -> None:
    """Write a trial's files that were recorded elsewhere (a worker's scratch directory) into its directory here:
    each atomically (disk.write_atomic), summary.json last, and only
    files of the run that started `d` (the same run token)."""
    theirs = files.get(RUN_TOKEN, b"").decode(errors="replace").strip()
    if not theirs or theirs != run_token(d):
        raise RecordsError(f"{d}: the files sent back belong to another run of the trial (run token {theirs!r})")
    for name in sorted(files, key=lambda n: n == "summary.json"):
        if Path(name).name != name or name.startswith("."):
            raise RecordsError(f"{d}: a file sent back is named {name!r}; trial files are plain names")
        write_atomic(d / name, lambda f, data=files[name]: f.write(data), binary=True)
