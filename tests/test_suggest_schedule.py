"""`batchlab suggest --schedule`: a batch-size schedule shaped by the pilot's B_simple(t), scaled to the answer,
raced against it on the answer's seeds and decided by steps x seconds per step."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import batchlab.suggestion.pipeline as pipeline
from batchlab.cli import app
from batchlab.suggestion.schedule import STEPS_SAVED, Verdict, lr_scale, propose

runner = CliRunner()
DIGITS = {"name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
          "budget": {"epochs": 6}, "target": {"value": [0.9]}, "threads": 1, "batch_size": 64,
          "sweep": {"lr": [0.3, 1.0]}}
COSTS = ("train_seconds", "eval_seconds", "noise_seconds", "compile_seconds")


def test_the_proposal_follows_b_simple_s_trend_scaled_to_the_answer():
    examples = [0, 1000, 2000, 4000, 8000, 16000]
    measured = [500.0] + [10 * math.sqrt(e) for e in examples[1:]]  # B_simple ~ sqrt(examples); the start's is off
    schedule = propose(list(zip(examples, measured)), best=256, timed=[16, 32, 64, 100, 128, 256, 512, 1024, 2048])
    # by hand: the trend through the points after the start is the power law itself; scaled so its median is 256
    trend = [10 * math.sqrt(e) for e in examples[1:]]
    scaled = [v * 256 / statistics.median(trend) for v in trend]
    expected, peak = [], 0.0
    for at, value in zip([0] + examples[2:], scaled):
        peak = max(peak, value)
        batch = min(max(2 ** math.floor(math.log2(peak) + 0.5), 16), 2048)  # the nearest power of 2 (ties up)
        if not expected or batch > expected[-1][1]:
            expected.append([at, batch])
    assert schedule == expected
    assert schedule[0][1] < 256 < schedule[-1][1]  # grows through the answer's 256
    assert all(b & (b - 1) == 0 for _, b in schedule)  # powers of 2 only (100 was timed, never proposed)


def test_no_proposal_when_b_simple_does_not_grow_or_too_few_measurements():
    falling = [(e, 1000 / math.sqrt(e)) for e in (100, 400, 1600, 6400)]
    assert propose(falling, 256, [64, 128, 256, 512]) is None
    assert propose([(100, 10.0), (200, 20.0)], 256, [64, 128, 256]) is None
    assert propose([(100, 10.0), (200, float("nan")), (300, 30.0), (400, -1.0)], 256, [64, 256]) is None


@pytest.mark.parametrize("lrs, default, expected", [
    ({64: 0.1, 256: 0.2, 1024: 0.4}, "linear", "sqrt"),
    ({64: 0.1, 256: 0.4, 1024: 1.6}, "none", "linear"),
    ({64: 1.0, 256: 1.0, 1024: 1.0}, "linear", "none"),
    ({256: 0.3}, "sqrt", "sqrt"),
])
def test_the_lr_moves_as_the_race_found_it_move(lrs, default, expected):
    assert lr_scale(lrs, default) == expected


def summaries(folder: Path) -> list[dict]:
    return [json.loads((d / "summary.json").read_text()) for d in sorted((folder / "trials").iterdir())]


def test_suggest_schedule_races_the_schedule_on_the_answers_seeds(write_config, tmp_path, monkeypatch):
    shown = {}

    def doubling(points, best, timed):  # a fixed schedule, so the test knows what was raced
        shown.update(points=points, best=best, timed=timed)
        return [[0, best], [300, 2 * best]]
    monkeypatch.setattr(pipeline, "propose", doubling)
    result = runner.invoke(app, ["suggest", str(write_config(DIGITS)), "--out", str(tmp_path), "--schedule", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    best, lr, seeds = answer["batch_size"], answer["lr"], answer["seeds"]
    assert shown["best"] == best and 2 * best in shown["timed"]  # the schedule's sizes were timed interleaved
    # the proposal was given the noise run's measurements: (examples, B_simple) up to the pilot's steps
    examples = [e for e, _ in shown["points"]]
    assert len(examples) == answer["measurements"] and examples[0] == 0 and examples == sorted(set(examples))
    s = answer["schedule"]
    assert s["schedule"] == [[0, best], [300, 2 * best]] and s["against"] == {"batch_size": best, "lr": lr}
    records = tmp_path / "tiny-suggest"
    trials = {t["trial_id"]: t for t in summaries(records)}
    scheduled = [t for t in trials.values() if t["batch_schedule"]]
    assert sorted(t["seed"] for t in scheduled) == seeds == [r["seed"] for r in s["runs"]]
    for run in s["runs"]:
        summary = trials[run["trial_id"]]
        hit = summary["targets"]["0.9"]
        assert summary["lr"] == pytest.approx(s["lr"]) and summary["batch_schedule"]["schedule"] == s["schedule"]
        if hit is None:
            assert s["verdict"] == Verdict.MISSED
            continue
        assert (run["steps"], run["examples"]) == (hit["steps"], hit["examples"])
        before = min(hit["steps"], math.ceil(300 / best))  # steps at the first batch size: until 300 examples
        assert run["by_batch"] == {str(b): n for b, n in ((best, before), (2 * best, hit["steps"] - before)) if n}
    if s["verdict"] != Verdict.MISSED:
        constant = {t["seed"]: t["targets"]["0.9"]["steps"] for t in trials.values()
                    if not t["batch_schedule"] and t["batch_size"] == best and t["lr"] == lr}
        saved = [1 - r["steps"] / constant[r["seed"]] for r in s["runs"]]
        assert s["steps_saved"] == pytest.approx(saved)
        assert s["bar"] == all(x >= STEPS_SAVED and r <= 1 for x, r in zip(saved, s["examples_ratio"]))
        per_step = {r["batch_size"]: r for r in answer["rates"]}
        assert all(b in per_step for r in s["runs"] for b in map(int, r["by_batch"]))
        assert s["verdict"] in (Verdict.FASTER, Verdict.TIE, Verdict.SLOWER) and s["label"] in answer["sentence"]
    cost = answer["cost"]
    spent = sum(trials[r["trial_id"]].get(k) or 0 for r in s["runs"] for k in COSTS)
    assert spent > 0 and cost["schedule"] == pytest.approx(spent)
    assert cost["total"] == pytest.approx(sum(cost[k] for k in ("scan", "pilot", "race", "confirmation", "schedule")))
    assert np.isfinite(cost["total"])
