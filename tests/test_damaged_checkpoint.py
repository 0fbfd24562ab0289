"""Damaged resume state: a checkpoint is resumed from only when it and metrics.csv agree (rows, step); otherwise
the trial starts over from step 0 with one `warning:` line naming the file and the reason, and the checkpoint is
removed. A curve never loses rows silently."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import batchlab.train
from batchlab.checkpoint import Checkpoints
from batchlab.cli import app
from batchlab.errors import BatchlabWarning

ONE_TRIAL = {"budget": {"epochs": 2}, "eval": {"every": 0.25, "log_every": 0.05}, "batch_size": 64, "lr": 0.1,
             "checkpoint": {"every": 1e-6}, "sweep": {}}


def sweep(config, out):
    return CliRunner().invoke(app, ["sweep", str(config), "--out", str(out), "--quiet"])


@pytest.fixture
def interrupted(write_config, tmp_path, monkeypatch):
    """(config, out, trial dir, the uninterrupted run's metrics): a trial that ran to the end keeping its last
    checkpoint, then its summary removed, so that a rerun resumes it from that checkpoint."""
    config = write_config(ONE_TRIAL)
    out = tmp_path / "runs"
    with monkeypatch.context() as m:
        m.setattr(batchlab.train, "remove_checkpoint", lambda trial_dir: None)
        result = sweep(config, out)
    assert result.exit_code == 0, result.output
    [trial] = (out / "tiny" / "trials").iterdir()
    whole = pd.read_csv(trial / "metrics.csv")
    (trial / "summary.json").unlink()
    assert (trial / "checkpoint.pt").exists()
    return config, out, trial, whole


def rerun(config, out, trial, whole):
    """Rerun the sweep: (its warning lines, the trial's summary); its curve must be whole, as uninterrupted."""
    result = sweep(config, out)
    assert result.exit_code == 0, result.output
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "completed"
    got = pd.read_csv(trial / "metrics.csv")
    assert got["step"].tolist() == whole["step"].tolist()  # no row lost, none twice
    return [line for line in result.stderr.splitlines() if line], summary


def edit_checkpoint(trial, edit):
    state = torch.load(trial / "checkpoint.pt", weights_only=True)
    edit(state)
    torch.save(state, trial / "checkpoint.pt")
    return state


def test_an_intact_checkpoint_resumes_without_a_word(interrupted):
    config, out, trial, whole = interrupted
    step = torch.load(trial / "checkpoint.pt", weights_only=True)["summary"]["steps"]
    assert 0 < step < whole["step"].iloc[-1]
    lines, summary = rerun(*interrupted)
    assert lines == [] and summary["resumed_from"] == [step]


def assert_started_over(interrupted, reason: str):
    config, out, trial, whole = interrupted
    lines, summary = rerun(*interrupted)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"warning: {trial / 'checkpoint.pt'}: ") and reason in lines[0], lines[0]
    assert lines[0].endswith("the trial starts over from step 0")
    assert summary["resumed_from"] == []


def test_a_checkpoint_with_a_key_missing_starts_the_trial_over(interrupted):
    edit_checkpoint(interrupted[2], lambda state: state.pop("metrics_rows"))
    assert_started_over(interrupted, "keys missing or malformed: metrics_rows")


def test_a_checkpoint_with_tensors_of_another_shape_starts_the_trial_over(interrupted):
    def grow(state):
        name = next(k for k in state["model"] if k.endswith("weight"))
        state["model"][name] = torch.zeros(state["model"][name].shape[0] + 1, *state["model"][name].shape[1:])
    edit_checkpoint(interrupted[2], grow)
    assert_started_over(interrupted, "it does not fit this trial (RuntimeError: ")
    assert not (interrupted[2] / "error.txt").exists()


def test_metrics_deleted_under_an_intact_checkpoint_starts_the_trial_over(interrupted):
    (interrupted[2] / "metrics.csv").unlink()
    assert_started_over(interrupted, "metrics.csv cannot be read (No such file or directory)")


def test_metrics_cut_short_under_an_intact_checkpoint_starts_the_trial_over(interrupted):
    trial = interrupted[2]
    rows = torch.load(trial / "checkpoint.pt", weights_only=True)["metrics_rows"]
    assert rows > 4
    lines = (trial / "metrics.csv").read_text().splitlines(keepends=True)
    (trial / "metrics.csv").write_text("".join(lines[:5]))  # the header and 4 rows
    assert_started_over(interrupted, f"metrics.csv has 4 rows, the checkpoint was written after {rows}")


def test_metrics_of_other_steps_under_an_intact_checkpoint_starts_the_trial_over(interrupted):
    trial = interrupted[2]
    metrics = pd.read_csv(trial / "metrics.csv")
    metrics["step"] += 1
    metrics.to_csv(trial / "metrics.csv", index=False)
    assert_started_over(interrupted, "metrics.csv's row")


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "foreign", "no trial id", "trial id None",
                                    "not a mapping", "a directory"])
def test_an_unreadable_or_foreign_checkpoint_starts_the_trial_over_with_a_warning(interrupted, damage):
    """A directory in its place was removed with unlink: IsADirectoryError ended the sweep, the trial's summary
    gone. A checkpoint without its trial id was said to belong to "trial None"."""
    path = interrupted[2] / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "foreign":
        edit_checkpoint(interrupted[2], lambda state: state.update(trial_id="another"))
        reason = "it belongs to trial 'another'"
    elif damage in ("no trial id", "trial id None"):
        edit_checkpoint(interrupted[2], lambda state: state.pop("trial_id") if damage == "no trial id"
                        else state.update(trial_id=None))
        reason = "keys missing or malformed: trial_id"
    elif damage == "a directory":
        path.unlink()
        (path / "inside").mkdir(parents=True)
        reason = "unreadable (IsADirectoryError: "
    elif damage == "not a mapping":
        torch.save([1, 2], path)
        reason = "not a batchlab checkpoint (a list)"
    else:
        path.write_bytes({"truncated": data[:len(data) // 2], "empty": b"", "garbage": b"\x00garbage" * 99}[damage])
        reason = "unreadable ("
    assert_started_over(interrupted, reason)
    assert not path.exists()


def test_an_unusable_checkpoint_is_removed_as_soon_as_it_is_found(interrupted):
    trial = interrupted[2]
    (trial / "metrics.csv").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = Checkpoints(1.0, trial, trial.name)
    assert found.found is None and found.metrics_rows == 0
    assert not (trial / "checkpoint.pt").exists()
    assert [w.category for w in caught] == [BatchlabWarning]


def test_a_worker_process_says_it_started_a_trial_over_in_the_drivers_one_line(write_config, tmp_path, monkeypatch):
    """With --workers, the trial and its checkpoint are read in a worker process: its warning reaches the user
    as the same one line the in-process sweep prints, through the driver, and nothing else is written."""
    config, out = write_config({**ONE_TRIAL, "sweep": {"lr": [0.1, 0.2]}}), tmp_path / "runs"
    with monkeypatch.context() as m:
        m.setattr(batchlab.train, "remove_checkpoint", lambda trial_dir: None)
        result = sweep(config, out)
    assert result.exit_code == 0, result.output
    trials = sorted((out / "tiny" / "trials").iterdir())
    whole = {trial: pd.read_csv(trial / "metrics.csv")["step"].tolist() for trial in trials}
    for trial in trials:
        (trial / "summary.json").unlink()
    (trials[0] / "checkpoint.pt").write_bytes(b"not a checkpoint")
    edit_checkpoint(trials[1], lambda state: state.pop("metrics_rows"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "batchlab", "sweep", str(config), "--out", str(out), "--quiet",
                           "--workers", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stderr.splitlines())
    assert len(lines) == 2, done.stderr
    for line, trial, reason in zip(lines, trials, ["unreadable (", "keys missing or malformed: metrics_rows"]):
        assert line.startswith(f"warning: {trial / 'checkpoint.pt'}: {reason}"), line
        assert line.endswith("; the trial starts over from step 0"), line
    for trial in trials:
        assert json.loads((trial / "summary.json").read_text())["status"] == "completed"
        assert pd.read_csv(trial / "metrics.csv")["step"].tolist() == whole[trial]  # started over, whole
        assert not (trial / "checkpoint.pt").exists()
