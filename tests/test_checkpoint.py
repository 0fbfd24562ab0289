"""Mid-trial checkpoints: a trial killed mid-epoch resumes where it stopped, with identical metrics."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

EXAMPLE = Path(__file__).parent.parent / "examples" / "custom"
STEPS_PER_EPOCH = 23  # digits: 1,437 training examples at batch 64
CHECKPOINT_AT, KILL_AT = 30, 35  # mid-epoch 2; the rows after the checkpoint must be dropped on resume

# Runs the CLI in a child process that writes one checkpoint, at step CHECKPOINT_AT, and then kills itself
# with SIGKILL right after writing the metrics row of step KILL_AT: a hard kill, at a known place.
KILLED_RUN = f"""
import os, signal, sys
import batchlab.checkpoint, batchlab.records
from batchlab.cli import main
save = batchlab.checkpoint.Checkpoints.save
def save_once(self, model, step, noise, summary, *args):
    if summary.steps == {CHECKPOINT_AT}:
        save(self, model, step, noise, summary, *args)
batchlab.checkpoint.Checkpoints.due = lambda self, seconds: True
batchlab.checkpoint.Checkpoints.save = save_once
write = batchlab.records.MetricsWriter.write
def write_then_die(self, row):
    write(self, row)
    if row["step"] == {KILL_AT}:
        os.kill(os.getpid(), signal.SIGKILL)
batchlab.records.MetricsWriter.write = write_then_die
sys.argv = ["batchlab"] + sys.argv[1:]
main()
"""

TENSORS = {"name": "ck", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
           "optimizer": {"name": "sgd", "momentum": 0.9}, "schedule": {"name": "cosine", "warmup_epochs": 0.5},
           "noise": {"every": 0.5, "batch_size": 256, "small_batch_size": 32}}
DATASET = {**yaml.safe_load((EXAMPLE / "custom.yaml").read_text()), "name": "ck",
           "dataset": {"name": "data:augmented", "args": {"source": "digits"}, "num_workers": 2},
           "model": {"name": "nets:SmallCNN", "args": {"width": 4, "dropout": 0.3}}}  # dropout, batch norm, crops
COMMON = {"budget": {"epochs": 2}, "eval": {"every": 0.25, "log_every": 0.05}, "target": {"value": [0.5, 0.99]},
          "batch_size": 64, "lr": 0.05, "threads": 1, "checkpoint": {"every": 1e-6}, "sweep": {}}


def run(config: Path, out: Path, killed: bool = False) -> subprocess.CompletedProcess:
    code = ["-c", KILLED_RUN] if killed else ["-m", "batchlab"]
    return subprocess.run([sys.executable, *code, "sweep", str(config), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=config.parent)


# every step evaluated on 100 of digits' 360 test images; 0.5 is reached at step 17, where the subset's difference
# from the whole split is measured; after the checkpoint the subset reads 0.66-0.77, where 3 standard errors of 0.8
# (0.12) and the corrected subset's 2 (0.068) disagree about reading the whole split
SUBSET = {"eval": {"every": 0.05, "log_every": 0.05, "subset": 100}, "target": {"value": [0.5, 0.8]}}


@pytest.mark.parametrize("setup, evaluation", [(TENSORS, {}), (DATASET, {}), (TENSORS, SUBSET)],
                         ids=["tensors", "dataset-with-workers", "tensors-eval-subset"])
def test_a_trial_killed_mid_epoch_resumes_from_its_checkpoint_with_identical_metrics(tmp_path, setup, evaluation):
    """With eval.subset, which evaluations read the whole split depends on the subset's difference from it
    measured before the checkpoint (evaluation.near): the checkpoint carries it."""
    for module in ("nets.py", "data.py"):
        (tmp_path / module).write_text((EXAMPLE / module).read_text())
    config = tmp_path / "ck.yaml"
    config.write_text(yaml.safe_dump({**setup, **COMMON, **evaluation}))

    whole = run(config, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = run(config, tmp_path / "resumed", killed=True)
    assert killed.returncode == -9, killed.stderr
    [trial] = (tmp_path / "resumed" / "ck" / "trials").iterdir()
    assert (trial / "checkpoint.pt").exists() and not (trial / "summary.json").exists()
    assert pd.read_csv(trial / "metrics.csv")["step"].iloc[-1] == KILL_AT

    resumed = run(config, tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == [CHECKPOINT_AT]
    assert CHECKPOINT_AT % STEPS_PER_EPOCH  # mid-epoch
    assert not (trial / "checkpoint.pt").exists()  # removed once the trial ended (checkpoint.keep: false)

    # the training clock goes on from the checkpoint's seconds: never backwards, and the report reads the trial
    seconds = pd.read_csv(trial / "metrics.csv")["train_seconds"]
    at_checkpoint = seconds[pd.read_csv(trial / "metrics.csv")["step"] == CHECKPOINT_AT].iloc[0]
    assert seconds.is_monotonic_increasing and summary["train_seconds"] > at_checkpoint > 0
    from typer.testing import CliRunner

    from batchlab.cli import app
    report = CliRunner().invoke(app, ["report", str(tmp_path / "resumed" / "ck")])
    assert report.exit_code == 0 and "1 completed" in report.output, report.output

    [reference] = (tmp_path / "whole" / "ck" / "trials").iterdir()
    expected = pd.read_csv(reference / "metrics.csv").drop(columns="train_seconds")
    got = pd.read_csv(trial / "metrics.csv").drop(columns="train_seconds")
    assert got["step"].is_unique and len(got) == len(expected)  # rows after the checkpoint were dropped
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    reference_summary = json.loads((reference / "summary.json").read_text())
    for key in ("steps", "examples", "final", "noise"):
        assert summary[key] == reference_summary[key]
    assert {t: v and v["steps"] for t, v in summary["targets"].items()} == \
        {t: v and v["steps"] for t, v in reference_summary["targets"].items()}
