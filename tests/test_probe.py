"""`batchlab noise`: the measured noise scale against the brute-force truth at the same parameters."""

import json

import pytest
import torch
from typer.testing import CliRunner

from batchlab import config
from batchlab.cli import app
from batchlab.data import load_dataset
from batchlab.models import build_model
from batchlab.noise import exact
from batchlab.losses import build_loss

runner = CliRunner()


def test_noise_command_matches_brute_force_at_init(write_config):
    path = write_config({"noise": {"batch_size": 512, "small_batch_size": 32}})
    result = runner.invoke(app, ["noise", str(path), "--measurements", "40", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    # the truth, independently: the same init (seed), every example's gradient
    exp = config.load(path)
    data = load_dataset(exp.dataset, exp.seed)
    torch.manual_seed(exp.seed)
    model = build_model(exp.model, data.input_shape, data.num_classes)
    g2, trace = exact(model, build_loss(exp.loss, data.task), data.train.x, data.train.y)
    # 5 standard errors of the 40-draw mean, as measured by the command itself
    assert got["g2"] == pytest.approx(g2, abs=5 * got["g2_stderr"])
    assert got["trace"] == pytest.approx(trace, abs=5 * got["trace_stderr"])
    assert got["b_simple"] == pytest.approx(trace / g2, rel=0.1)
    assert (got["b_small"], got["b_big"], got["train_size"]) == (32, 512, 1437)


def test_noise_command_table_and_steps(write_config):
    result = runner.invoke(app, ["noise", str(write_config()), "--steps", "20", "--measurements", "4"])
    assert result.exit_code == 0, result.output
    assert "after 20 steps" in result.output and "B_simple" in result.output


def test_noise_command_bad_config_is_exit_2(write_config):
    result = runner.invoke(app, ["noise", str(write_config(text="model: {name: vit}\n"))])
    assert result.exit_code == 2 and "model.name: 'vit' is not one of linear, logreg, mlp, lenet5" in result.output
