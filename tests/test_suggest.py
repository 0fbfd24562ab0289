"""`batchlab suggest` end to end on digits: the answer is the fastest measured trial, and what it cost adds up."""

import json

import pytest
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.suggestion.scan import PLATEAU_GAIN
from report_fixtures import check_png

runner = CliRunner()
DIGITS = {"name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
          "budget": {"epochs": 6}, "target": {"value": [0.9]}, "threads": 1,
          "sweep": {"lr": [0.3, 1.0]}}  # the pilot races these at the config's batch size


def test_suggest_answers_with_the_fastest_measured_trial(write_config, tmp_path):
    result = runner.invoke(app, ["suggest", str(write_config(DIGITS)), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    records = tmp_path / "tiny-suggest"
    summaries = [json.loads(d.joinpath("summary.json").read_text()) for d in (records / "trials").iterdir()]
    reached = [s for s in summaries if s["targets"]["0.9"]]
    fastest = min(reached, key=lambda s: s["targets"]["0.9"]["seconds"])  # recomputed from the records
    assert (answer["batch_size"], answer["lr"]) == (fastest["batch_size"], fastest["lr"])
    assert answer["seconds"] == fastest["targets"]["0.9"]["seconds"]
    scanned = [r["batch_size"] for r in answer["rates"]]
    assert scanned == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1437][:len(scanned)]
    speed = [r["samples_per_second"] for r in answer["rates"]]
    for i in range(2, len(speed) - 1):  # it doubles while two doublings gain 5%, ...
        assert speed[i] >= PLATEAU_GAIN * speed[i - 2], speed
    if scanned[-1] != 1437:  # ... and stops the first time they do not (else at the training set)
        assert speed[-1] < PLATEAU_GAIN * speed[-3], speed
    assert set(answer["candidates"]) <= set(scanned) and 1 <= len(answer["candidates"]) <= 4
    low, high = answer["band"]
    assert low == pytest.approx(answer["b_simple"]) and high == pytest.approx(8 * answer["b_simple"])
    cost = answer["cost"]
    assert cost["total"] == pytest.approx(cost["scan"] + cost["pilot"] + cost["race"])
    assert cost["scan"] == pytest.approx(sum(r["seconds"] + r["warmup_seconds"] for r in answer["rates"]))
    assert cost["pilot"] + cost["race"] == pytest.approx(sum(s["train_seconds"] for s in summaries))
    assert {s["status"] for s in summaries} <= {"completed", "raced", "diverged"}
    assert json.loads((records / "suggest.json").read_text())["batch_size"] == answer["batch_size"]
    check_png(records / "suggest.png")
    report = runner.invoke(app, ["report", str(records)])  # the records are a sweep's like any other
    assert report.exit_code == 0, report.output


def test_suggest_says_so_when_the_pilot_cannot_reach_the_target(write_config, tmp_path):
    result = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "budget": {"steps": 3}})), "--target", "0.99",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: the pilot (batch size 128, lr 0.3, 1) did not reach test_accuracy 0.99" in result.output
    assert "give a target it can reach (--target)" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, expected", [([], "suggest needs a target to time"),
                                            (["--budget", "soon"], "--budget 'soon': expected a duration")])
def test_suggest_bad_input_is_one_line(write_config, tmp_path, args, expected):
    cfg = write_config({**DIGITS, "target": {"value": []}}) if not args else write_config(DIGITS)
    result = runner.invoke(app, ["suggest", str(cfg), "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and expected in result.output
    assert result.output.count("\n") == 1
