"""What a trial's summary says about it: a trial that did not learn, and the memory its training needed."""

import json

import pytest
from typer.testing import CliRunner

from batchlab.cli import app

runner = CliRunner()


def run(config, out, *args):
    result = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return {(s["batch_size"], s["lr"]): s for s in
            (json.loads(d.joinpath("summary.json").read_text()) for d in (out / "tiny" / "trials").iterdir())}


def test_a_trial_that_did_not_learn_is_diverged_with_the_reason(write_config, tmp_path):
    cfg = write_config({"budget": {"epochs": 2}, "sweep": {"batch_size": [64], "lr": [0.3, 3.0, 1e6]}})
    by_lr = {lr: s for (_, lr), s in run(cfg, tmp_path).items()}
    assert by_lr[0.3]["status"] == "completed" and by_lr[0.3]["error"] is None
    stuck = by_lr[3.0]  # digits: accuracy stays at chance, the loss finite
    assert stuck["status"] == "diverged" and stuck["final"]["train_loss"] is not None
    first, last = stuck["initial"]["test_accuracy"], stuck["final"]["test_accuracy"]
    assert last <= max(first, 0.1)  # ten classes: chance is 0.1
    assert stuck["error"] == (f"it did not learn: final test accuracy {last:.4f} is no better than at the start "
                              f"({first:.4f}) or chance (0.1000)")
    exploded = by_lr[1e6]  # the loss grows by orders of magnitude without turning NaN
    assert exploded["status"] == "diverged" and exploded["steps"] < stuck["steps"]
    assert "exceeded 100x the initial loss" in exploded["error"]


def test_a_regression_whose_test_loss_did_not_fall_is_diverged(write_config, tmp_path):
    """y = 3x + 2, full-batch gradient descent: lr 2.5 is past 2 / (the largest curvature, about 1.1), so every
    step overshoots further, though not by 100x within two steps; lr 0.5 converges."""
    cfg = write_config({"dataset": {"name": "linear"}, "model": {"name": "linear"}, "budget": {"steps": 2},
                        "target": {"metric": "test_loss", "value": [0.5]},
                        "sweep": {"batch_size": [1000], "lr": [0.5, 2.5]}})
    by_lr = {lr: s for (_, lr), s in run(cfg, tmp_path).items()}
    assert by_lr[0.5]["status"] == "completed"
    overshoot = by_lr[2.5]
    first, last = overshoot["initial"]["test_loss"], overshoot["final"]["test_loss"]
    assert last > first and overshoot["status"] == "diverged"
    assert overshoot["error"] == f"it did not learn: final test loss {last:.4g} is no lower than at the start ({first:.4g})"


@pytest.mark.parametrize("order", [[1437, 16], [16, 1437]])
def test_peak_memory_on_cpu_compares_batch_sizes(write_config, tmp_path, order):
    """An MLP 64-4096-10: a step at batch B holds at least 2 activations of B x 4,096 floats (the hidden layer
    and its ReLU), 47 MiB at the full batch of 1,437 and 0.5 MiB at 16, whichever trial runs first."""
    cfg = write_config({"model": {"name": "mlp", "hidden": [4096]}, "budget": {"steps": 2},
                        "eval": {"batch_size": 16, "train_subset": 0}, "sweep": {"batch_size": order, "lr": [0.01]}})
    peaks = {b: s["peak_memory_bytes"] for (b, _), s in run(cfg, tmp_path).items()}
    assert peaks[1437] >= 2 * 1437 * 4096 * 4
    assert peaks[16] < peaks[1437] / 5


def test_version_and_an_unknown_device(write_config):
    import batchlab

    assert runner.invoke(app, ["--version"]).output == f"batchlab {batchlab.__version__}\n"
    result = runner.invoke(app, ["sweep", str(write_config({"device": "gpu"})), "--dry-run"])
    assert result.exit_code == 2
    assert "device: expected auto, cpu, cuda or cuda:N (e.g. cuda:1), got 'gpu'" in result.output


@pytest.mark.parametrize("command, defaults", [("sweep", 3), ("report", 2), ("suggest", 1), ("max-batch", 2)])
def test_help_shows_the_defaults_written_in_words(command, defaults):
    """A default the help states in words was once "[default: ...]", which the help's markup took for a tag
    and dropped."""
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert result.output.count("(default:") == defaults, result.output
