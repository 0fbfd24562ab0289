"""Every shipped config is valid, and `--smoke` wires every trial end to end where its data is here."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchlab import config
from batchlab.cli import app
from batchlab.grid import expand

runner = CliRunner()
CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
NEEDS_DOWNLOAD = {"mnist"}  # MNIST cannot be fetched here; tests are offline


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "mnist", "fashion-mnist", "gd-modes"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    experiment = config.load(path)
    assert len(expand(experiment)) >= 2


@pytest.mark.parametrize("path", [p for p in CONFIGS if config.load(p).dataset.name not in NEEDS_DOWNLOAD],
                         ids=lambda p: p.stem)
def test_smoke_runs_every_trial(path, tmp_path):
    experiment = config.load(path)
    n = len(expand(experiment))
    result = runner.invoke(app, ["sweep", str(path), "--smoke", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    trials = list((tmp_path / f"{experiment.name}-smoke" / "trials").iterdir())
    assert len(trials) == n
    assert f"{n} completed" in result.output or "diverged" in result.output


def test_smoke_says_clearly_when_data_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_DATA", str(tmp_path / "empty"))
    result = runner.invoke(app, ["sweep", "configs/mnist.yaml", "--smoke", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    assert str(tmp_path / "empty" / "mnist") in result.output
