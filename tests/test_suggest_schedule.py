"""`batchlab suggest --schedule`: a batch-size schedule around the answer (a quarter of it at the start, doubling
per 4x examples, twice it from a quarter of the answer's examples), raced against it on the answer's seeds and
decided by steps x seconds per step."""

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.suggestion.schedule import STEPS_SAVED, NoSchedule, Verdict, propose

runner = CliRunner()
DIGITS = {"name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
          "budget": {"epochs": 6}, "target": {"value": [0.9]}, "threads": 1, "batch_size": 64,
          "sweep": {"lr": [0.3, 1.0]}}
COSTS = ("train_seconds", "eval_seconds", "noise_seconds", "compile_seconds")


GROWING = [(0, 500.0), (1000, 10.0), (4000, 20.0), (16000, 40.0)]  # B_simple doubling per 4x examples


def test_the_proposal_spreads_the_answer_from_a_quarter_to_twice_it():
    # best 256 reached the target in 102,400 examples: 2 x 256 from a quarter of them, 256 from a sixteenth, 128
    # from a 64th, 64 from the start; 100 and 192 were timed but are no power of 2, 2048 is past twice the answer
    timed = [32, 64, 100, 128, 192, 256, 512, 1024, 2048]
    assert propose(GROWING, best=256, examples=102_400, timed=timed) == [[0, 64], [1600, 128], [6400, 256],
                                                                         [25600, 512]]
    # sizes the scan did not time are left out, each remaining one keeps its place
    assert propose(GROWING, 256, 102_400, [256, 512]) == [[0, 256], [25600, 512]]
    assert propose(GROWING, 256, 102_400, [128, 512]) == [[0, 128], [25600, 512]]


def test_changes_that_whole_examples_cannot_tell_apart_start_the_larger_batch_there():
    # 40 examples: 512 from 10, 256 from 2.5 -> 2, 128 from 0.625 -> 1, 64 from 0: each a distinct example count
    assert propose(GROWING, 256, 40, [64, 128, 256, 512]) == [[0, 64], [1, 128], [2, 256], [10, 512]]
    # 8 examples: 128 from 0.125 -> 0 (it starts, not 64), 256 from 0.5 -> 0 (so does it), 512 from 2
    assert propose(GROWING, 256, 8, [64, 128, 256, 512]) == [[0, 256], [2, 512]]


@pytest.mark.parametrize("points, timed, examples, why", [
    ([(e, 1000 / math.sqrt(e)) for e in (100, 400, 1600, 6400)], [64, 128, 256, 512], 1e5,
     "B_simple did not grow over the pilot's run"),
    ([(100, 10.0), (200, 20.0)], [64, 128, 256], 1e5, "2 of the pilot's B_simple measurements were finite"),
    ([(100, 10.0), (200, float("nan")), (300, 30.0), (400, -1.0)], [64, 256], 1e5, "2 of the pilot's B_simple"),
    (GROWING, [256, 2048], 1e5, "a schedule needs a power of 2 from 0.25x to 1x the answer's batch size 256 and "
                                "one above it up to 2x, and the scan timed 256, 2048"),
    (GROWING, [64, 128, 256], 1e5, "the scan timed 64, 128, 256"),  # nothing above the answer: no fewer steps
    (GROWING, [512], 1e5, "the scan timed 512"),
    (GROWING, [256, 512], 1, "reached the target in 1 examples: too few to change the batch size"),
])
def test_no_proposal_says_why(points, timed, examples, why):
    with pytest.raises(NoSchedule, match=re.escape(why)):
        propose(points, 256, examples, timed)


def summaries(folder: Path) -> list[dict]:
    return [json.loads((d / "summary.json").read_text()) for d in sorted((folder / "trials").iterdir())]


def test_suggest_schedule_races_a_schedule_around_the_answer_and_each_tie_on_the_answers_seeds(
        write_config, tmp_path, monkeypatch):
    import batchlab.suggestion.schedule as schedule_module

    shown = []

    def doubling(points, best, examples, timed):  # a fixed schedule, so the test knows what was raced
        shown.append({"points": points, "best": best, "examples": examples, "timed": timed})
        return [[0, best], [300, 2 * best]]
    monkeypatch.setattr(schedule_module, "propose", doubling)
    result = runner.invoke(app, ["suggest", str(write_config(DIGITS)), "--out", str(tmp_path), "--schedule", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    best, lr, seeds = answer["batch_size"], answer["lr"], answer["seeds"]
    ties = [o["batch_size"] for o in answer["within_noise"]]
    assert [c["best"] for c in shown] == [best, *ties]  # around the answer, then around each constant as fast
    assert all(2 * c["best"] in c["timed"] for c in shown)  # the schedules' sizes were timed interleaved
    # the proposal was given the noise run's measurements: (examples, B_simple) up to the pilot's steps
    examples = [e for e, _ in shown[0]["points"]]
    assert len(examples) == answer["measurements"] and examples[0] == 0 and examples == sorted(set(examples))
    records = tmp_path / "tiny-suggest"
    trials = {t["trial_id"]: t for t in summaries(records)}
    # each proposal's E*: the median of the examples its constant needed on the answer's seeds
    lrs = {best: lr, **{o["batch_size"]: o["lr"] for o in answer["within_noise"]}}
    for call in shown:
        needed = {t["seed"]: t["targets"]["0.9"]["examples"] for t in trials.values() if not t["batch_schedule"]
                  and t["batch_size"] == call["best"] and t["lr"] == lrs[call["best"]] and t["targets"]["0.9"]}
        assert call["examples"] == statistics.median(needed[seed] for seed in seeds)
    s = answer["schedule"]
    around = s["around"]
    assert s["schedule"] == [[0, around], [300, 2 * around]] and s["against"] == {"batch_size": best, "lr": lr}
    scheduled = [t for t in trials.values() if t["batch_schedule"]]
    assert sorted(t["seed"] for t in scheduled) == sorted(seeds * len(shown))  # every schedule on every seed
    assert len([n for n in answer["notes"] if n.startswith("also raced: Schedule ")]) == len(shown) - 1
    assert [r["seed"] for r in s["runs"]] == seeds
    for run in s["runs"]:
        summary = trials[run["trial_id"]]
        hit = summary["targets"]["0.9"]
        # its lr: its constant's, moved by the rule's scale to its first batch size (here the constant's own)
        assert summary["lr"] == pytest.approx(s["lr"]) == pytest.approx(lrs[around])
        assert summary["batch_schedule"]["schedule"] == s["schedule"]
        assert summary["batch_schedule"]["lr_scale"] == s["lr_scale"] == "linear"  # suggest's lr rule for SGD
        if hit is None:
            assert s["verdict"] == Verdict.MISSED
            continue
        assert (run["steps"], run["examples"]) == (hit["steps"], hit["examples"])
        before = min(hit["steps"], math.ceil(300 / around))  # steps at the first batch size: until 300 examples
        assert run["by_batch"] == {str(b): n for b, n in ((around, before), (2 * around, hit["steps"] - before))
                                   if n}
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
    spent = sum(t.get(k) or 0 for t in scheduled for k in COSTS)
    assert spent > 0 and cost["schedule"] == pytest.approx(spent)
    assert cost["total"] == pytest.approx(sum(cost[k] for k in ("scan", "pilot", "race", "confirmation", "schedule")))
    assert np.isfinite(cost["total"])


def test_no_schedule_is_raced_without_the_answers_examples_and_the_note_says_why(write_config, tmp_path,
                                                                               monkeypatch):
    from batchlab.suggestion.search import Search

    monkeypatch.setattr(Search, "examples", lambda self, b, lr, seed: None if seed == 1 else 1000)
    result = runner.invoke(app, ["suggest", str(write_config(DIGITS)), "--out", str(tmp_path), "--schedule", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["schedule"] is None and 1 in answer["seeds"]
    assert any(n.startswith("no schedule raced: ") and n.endswith("the examples to the target are not recorded on "
                                                                "seed 1") for n in answer["notes"]), answer["notes"]
    assert not any(t["batch_schedule"] for t in summaries(tmp_path / "tiny-suggest"))  # nothing trained for it
