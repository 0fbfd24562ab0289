"""The on-disk contract that `batchlab report` reads, and the rules for resuming a sweep.

    <out>/<name>/
      sweep.yaml               the config as given, with the overrides
      .lock                    held while a sweep writes here
      trials/<trial-id>/
        config.json            the fully resolved trial config, with its axis values
        metrics.csv            a row per log point or evaluation, flushed as written
        summary.json           written last and atomically: status and figures
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import yaml

from batchlab.config import Experiment
from batchlab.errors import ConfigError, RecordsError

METRIC_COLUMNS = [
    "step", "epoch", "examples", "train_seconds", "lr",
    "train_loss", "test_loss", "test_accuracy",  # test_*: the evaluation split (test, or val with val_fraction)
    "train_eval_loss", "train_eval_accuracy",  # a fixed train subset evaluated like the test set
    "noise_g2", "noise_trace", "noise_b_simple",  # gradient noise scale (smoothed), when noise.every is set
]
DONE = ("completed", "diverged")  # a resumed sweep skips these and re-runs failed, interrupted, incomplete


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file + fsync + rename: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class MetricsWriter:
    """Appends rows to metrics.csv, flushing each, so an interrupted trial keeps what it had."""

    def __init__(self, path: Path):
        self.file = open(path, "w", newline="")
        self.writer = csv.DictWriter(self.file, METRIC_COLUMNS, restval="")
        self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: _cell(v) for k, v in row.items()})
        self.file.flush()

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

    def status(self, trial_id: str) -> str | None:
        """completed / diverged / failed / interrupted, 'incomplete' without a summary, None if never started."""
        d = self.trial_dir(trial_id)
        if not d.exists():
            return None
        summary = read_json(d / "summary.json")
        return summary.get("status", "incomplete") if summary else "incomplete"

    @contextmanager
    def lock(self):
        """Refuse a second writer instead of interleaving two sweeps (an OS lock: freed if we die)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RecordsError(f"{self.path} is in use by another sweep (lock {self.path / '.lock'}); "
                               "wait for it to finish or use another --out or name") from None
        try:
            yield self
        finally:
            lock.release()

    def is_running(self) -> bool:
        """Whether a sweep holds the lock now (the .lock file itself stays behind after a sweep)."""
        if not (self.path / ".lock").exists():
            return False
        lock = filelock.FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            return True
        lock.release()
        return False

    def prepare(self, experiment: Experiment, raw: dict, restart: bool) -> None:
        """Check that the records here can be extended by this experiment, then save its sweep.yaml."""
        old_file = self.path / "sweep.yaml"
        if restart and self.trials.exists():
            shutil.rmtree(self.trials)
        elif old_file.exists() and self.trials.exists():
            changed = changed_fields(old_file, experiment)
            if changed:
                raise RecordsError(
                    f"{self.path} holds trials of a different experiment: {', '.join(changed)} changed; "
                    "their trials could not be compared. Use --restart to start over, or give a new name")
        self.trials.mkdir(parents=True, exist_ok=True)
        old_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    def start_trial(self, trial_id: str, resolved: dict) -> Path:
        d = self.trial_dir(trial_id)
        if d.exists():
            shutil.rmtree(d)  # failed, interrupted or incomplete: run again from the start
        d.mkdir(parents=True)
        write_json_atomic(d / "config.json", resolved)
        return d


def changed_fields(old_file: Path, new: Experiment) -> list[str]:
    """Fixed (non-axis) fields whose value differs between the recorded experiment and this one."""
    from batchlab.config import validate

    try:
        old = validate(yaml.safe_load(old_file.read_text()) or {}, str(old_file))
    except (ConfigError, yaml.YAMLError) as e:
        raise RecordsError(f"{old_file} cannot be read ({e}); use --restart to start over") from None
    axes = set(old.sweep) | set(new.sweep)
    a, b = flatten(old.model_dump(mode="json", exclude={"sweep"})), flatten(new.model_dump(mode="json", exclude={"sweep"}))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not _under_axis(k, axes))


def _under_axis(key: str, axes: set[str]) -> bool:
    return any(key == axis or key.startswith(axis + ".") for axis in axes)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
