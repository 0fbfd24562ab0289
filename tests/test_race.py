"""Racing: a trial stops exactly when its clock passes the best time to the target, and the winner never changes.

Training time is made deterministic here: the trainer's clock reads a fake time that only a training step
advances, by COST(batch size) seconds, so raced and unraced runs time every trial alike.
"""

import json

import pytest
from typer.testing import CliRunner

import batchlab.machine
import batchlab.step
import batchlab.train
from batchlab.cli import app

runner = CliRunner()


def cost(batch_size: int) -> float:
    return 0.01 + 0.0001 * batch_size  # seconds a step: an overhead and a cost per example


@pytest.fixture
def fake_time(monkeypatch):
    now = [0.0]
    step = batchlab.step.Step.__call__

    def timed_step(self, x, y):
        now[0] += cost(len(x))
        return step(self, x, y)

    monkeypatch.setattr(batchlab.step.Step, "__call__", timed_step)
    monkeypatch.setattr(batchlab.train.time, "perf_counter", lambda: now[0])
    return now


def summaries(out, name="tiny"):
    return [json.loads(d.joinpath("summary.json").read_text()) for d in sorted((out / name / "trials").iterdir())]


def test_a_trial_stops_exactly_when_its_clock_passes_the_deadline(write_config, tmp_path, fake_time):
    from batchlab.data import load_dataset
    from batchlab.records import MetricsWriter
    from batchlab.schema import Experiment
    from batchlab.summary import Summary

    cfg = Experiment.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
                                     "batch_size": 64, "lr": 0.01, "target": {"value": [0.999]},
                                     "budget": {"epochs": 3}, "threads": 1})
    data = load_dataset(cfg.dataset, 0)
    summary, metrics = Summary(), MetricsWriter(tmp_path / "metrics.csv")
    deadline = 6.5 * cost(64)  # passed during the seventh step
    batchlab.train.train(cfg, data, batchlab.machine.resolve_device("cpu"), summary, metrics, deadline=deadline)
    assert summary.status == "raced" and summary.steps == 7
    assert summary.train_seconds == pytest.approx(7 * cost(64))
    assert summary.deadline == deadline


def test_racing_finds_the_same_fastest_setting_per_seed_at_a_fraction_of_the_cost(write_config, tmp_path, fake_time):
    grid = {"budget": {"epochs": 3, "stop_at_target": True}, "target": {"value": [0.5, 0.85]},
            "eval": {"every": 0.1}, "sweep": {"batch_size": [16, 64, 256], "lr": [0.1, 0.5], "seed": [0, 1]}}
    cfg = write_config(grid)
    for name, args in (("full", []), ("raced", ["--race"])):
        result = runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / name), "--quiet", *args])
        assert result.exit_code == 0, result.output
    full, raced = summaries(tmp_path / "full"), summaries(tmp_path / "raced")

    def fastest(trials, seed):
        reached = [s for s in trials if s["seed"] == seed and s["targets"]["0.85"]]
        return min(reached, key=lambda s: s["targets"]["0.85"]["seconds"])

    stopped = [s for s in raced if s["status"] == "raced"]
    assert stopped  # racing stopped some trials ...
    for seed in (0, 1):  # ... and the fastest of each seed is unchanged, to the second
        a, b = fastest(full, seed), fastest(raced, seed)
        assert (a["batch_size"], a["lr"]) == (b["batch_size"], b["lr"])
        assert a["targets"]["0.85"] == pytest.approx(b["targets"]["0.85"])  # (the fake time's rounding aside)
    by_setting = {(s["batch_size"], s["lr"], s["seed"]): s for s in full}
    for s in stopped:  # each stopped trial was, unraced, slower than the best of its seed (or never reached it)
        unraced = by_setting[(s["batch_size"], s["lr"], s["seed"])]["targets"]["0.85"]
        assert s["train_seconds"] > s["deadline"]
        assert unraced is None or unraced["seconds"] > s["deadline"]
    assert sum(s["train_seconds"] for s in raced) < sum(s["train_seconds"] for s in full)

    rerun = runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / "raced"), "--quiet"])  # no --race:
    assert f"{len(stopped)} completed" in rerun.output or "diverged" in rerun.output  # the raced ones run in full
    assert all(s["status"] != "raced" for s in summaries(tmp_path / "raced"))


def test_a_trial_raced_by_steps_stops_once_past_its_steps(tmp_path, fake_time):
    """Suggest's race: a steps deadline (best predicted seconds over this batch size's seconds per step)."""
    from batchlab.data import load_dataset
    from batchlab.records import MetricsWriter
    from batchlab.schema import Experiment
    from batchlab.summary import Summary

    cfg = Experiment.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
                                     "batch_size": 64, "lr": 0.01, "target": {"value": [0.999]},
                                     "budget": {"epochs": 3}, "threads": 1})
    summary, metrics = Summary(), MetricsWriter(tmp_path / "metrics.csv")
    batchlab.train.train(cfg, load_dataset(cfg.dataset, 0), batchlab.machine.resolve_device("cpu"), summary, metrics,
                         deadline_steps=6)
    assert summary.status == "raced" and summary.steps == 7  # the first step past 6
    assert summary.deadline_steps == 6 and summary.deadline is None
