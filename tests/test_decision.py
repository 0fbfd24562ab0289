"""The decision rule: steps to the target x seconds per step timed interleaved, with its interval, ties, seeds
that missed, race-cut batch sizes, and the step-time phase of a real sweep. Records are written by hand
(tests/report_fixtures.py) except in the sweep tests; expected numbers are worked out here."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.reporting import analyse
from batchlab.reporting.decision import Mixed, StepCost, decide
from batchlab.steptime import CPU_CLOCK, ROUNDS
from report_fixtures import hit, make_schedule_trial, make_step_times, make_sweep, make_trial

runner = CliRunner()
ROUND = (1.0, 1.04, 0.97, 1.02, 0.99)


def test_steps_times_step_time_decides_where_the_clock_disagrees(tmp_path):
    """bs 64's trials ran in a slow minute (their clocks: 9 s against bs 256's 3 s), but timed side by side a
    step at 64 costs a third of one at 256: 100 x 0.01 s = 1 s against 40 x 0.05 s = 2 s."""
    sweep = make_sweep(tmp_path, "clock")
    for seed in (0, 1):
        make_trial(sweep, 64, 0.1, seed, hits={0.9: hit(9.0, 100, 64, 16)})
        make_trial(sweep, 256, 0.2, seed, hits={0.9: hit(3.0, 40, 256, 4)})
    make_step_times(sweep, {64: [0.01 * r for r in ROUND], 256: [0.05 * r for r in ROUND]})
    [report] = analyse(sweep)
    rows = report.time_to_accuracy.set_index("batch_size")
    assert rows.loc[64, "seconds"] == 9.0 and rows.loc[256, "seconds"] == 3.0  # the clocks stay in the table
    assert rows.loc[64, "predicted_seconds"] == pytest.approx(100 * 0.01)
    assert rows.loc[256, "predicted_seconds"] == pytest.approx(40 * 0.05)
    answer = report.recommendation
    assert (answer.batch_size, answer.lr, answer.within_noise) == (64, 0.1, [])
    assert answer.sentence.startswith("Use batch size 64 with lr 0.1: 1 s to test_accuracy ≥ 0.9 on this machine "
                                      "(100 steps x 0.01 s a step; 95% interval")
    assert "timed interleaved (5 rounds over every batch size, median, read on the wall clock;" in answer.details[1]


def test_rounds_read_on_the_cpu_clock_cost_their_median_and_the_details_say_so(tmp_path):
    """A round read while the machine's other core idled runs faster than the others: the least would chase it."""
    sweep = make_sweep(tmp_path, "cpu-clock")
    for seed in (0, 1):
        make_trial(sweep, 64, 0.1, seed, hits={0.9: hit(9.0, 100, 64, 16)})
        make_trial(sweep, 256, 0.2, seed, hits={0.9: hit(3.0, 40, 256, 4)})
    fast = [0.01 * r for r in ROUND[:2]] + [0.006] + [0.01 * r for r in ROUND[3:]]  # round 3 ran 0.6x the others
    make_step_times(sweep, {64: fast, 256: [0.05 * r for r in ROUND]}, threads=1, clock=CPU_CLOCK)
    [report] = analyse(sweep)
    rows = report.time_to_accuracy.set_index("batch_size")
    assert rows.loc[64, "seconds_per_step"] == pytest.approx(0.01)  # the median of 1.0, 1.04, 0.6, 1.02, 0.99 x 0.01
    assert rows.loc[256, "predicted_seconds"] == pytest.approx(40 * 0.05)
    assert "timed interleaved (5 rounds over every batch size, median, read on this thread's CPU clock; 1 thread," \
        in report.recommendation.details[1]


def test_same_records_same_answer(tmp_path):
    sweep = make_sweep(tmp_path, "again")
    for bs, steps in ((32, 120), (64, 70), (128, 45)):
        for seed in range(3):
            make_trial(sweep, bs, 0.1, seed, hits={0.9: hit(1.0, steps + 7 * seed, bs, math.ceil(1000 / bs))})
    make_step_times(sweep, {32: [0.010 * r for r in ROUND], 64: [0.016 * r for r in ROUND],
                            128: [0.027 * r for r in ROUND]})
    first, second = analyse(sweep)[0], analyse(sweep)[0]
    assert first.recommendation.to_dict() == second.recommendation.to_dict()
    pd.testing.assert_frame_equal(first.time_to_accuracy, second.time_to_accuracy)


def test_the_interval_pairs_the_rounds_of_the_interleaved_timing():
    """A slow round slows every batch size alike: resampled together, rounds cancel out of the comparison."""
    steps = {16: np.array([100.0]), 32: np.array([53.0])}
    machine = np.array([1.0, 1.6, 0.8, 1.3, 0.9])  # a very noisy machine, the same in each round for both
    costs = {16: StepCost("interleaved", 0.010 * machine), 32: StepCost("interleaved", 0.020 * machine)}
    decision = decide(steps, costs)
    assert decision.fastest == 16  # 100 x 0.01 = 1.0 against 53 x 0.02 = 1.06
    assert decision.within_noise == [32]  # within TIE (10%): too close to call
    low, high = decision.predicted[16][1:]
    assert low < 1.0 < high  # the machine's speed moves each batch size's own interval
    # Timed in different moments (independent resamples), a 25% gap could still not be called:
    far = {16: np.array([100.0]), 32: np.array([62.5])}
    paired = decide(far, costs)
    unpaired = decide(far, {b: StepCost("trials", c.values) for b, c in costs.items()})
    assert paired.within_noise == [] and unpaired.within_noise == [32]


def test_a_setting_that_missed_a_seed_is_named_with_its_count(tmp_path):
    sweep = make_sweep(tmp_path, "partly")
    for seed, reached in enumerate((True, False)):
        make_trial(sweep, 256, 1.0, seed, hits={0.9: hit(0.5, 30, 256, 4) if reached else None},
                   final_accuracy=0.91 if reached else 0.87)
        make_trial(sweep, 32, 0.1, seed, hits={0.9: None}, final_accuracy=0.6)
    [report] = analyse(sweep)
    answer = report.recommendation
    assert not answer.reached and answer.batch_size is None and answer.closest_batch_size == 256
    assert answer.sentence.startswith("No batch size reached test_accuracy ≥ 0.9 on every seed, so none can be "
                                      "recommended without a caveat; the closest was batch size 256 with lr 1, "
                                      "which reached it on 1 of 2 seeds (final test accuracy 0.8900, median)")


def test_the_closest_setting_is_ranked_by_the_metric_not_the_loss(tmp_path):
    """No lr reached: the one with the better final accuracy is named, whatever its train loss."""
    sweep = make_sweep(tmp_path, "closest")
    make_trial(sweep, 64, 0.1, hits={0.9: None}, final_accuracy=0.31, final_train_loss=0.2)
    make_trial(sweep, 64, 0.03, hits={0.9: None}, final_accuracy=0.51, final_train_loss=0.9)
    [report] = analyse(sweep)
    assert report.time_to_accuracy.set_index("batch_size").loc[64, "best_lr"] == 0.03
    assert "the closest was batch size 64 with lr 0.03" in report.recommendation.sentence


def _edge(tmp_path, per_step_64: float):
    """32 reaches the target at step 100 of a 500-step budget, 64 at step 60, the last of its budget."""
    sweep = make_sweep(tmp_path, "edge")
    for bs, steps in ((32, 100), (64, 60)):
        trial = make_trial(sweep, bs, 0.1, hits={0.9: hit(1.0, steps, bs, math.ceil(1000 / bs))}, total_steps=steps)
        summary = json.loads((trial / "summary.json").read_text())
        (trial / "summary.json").write_text(json.dumps({**summary, "budget_steps": steps if bs == 64 else 500}))
    make_step_times(sweep, {32: [0.01] * 5, 64: [per_step_64] * 5})
    return analyse(sweep)


def test_a_target_met_only_at_the_budgets_last_step_is_flagged(tmp_path):
    [report] = _edge(tmp_path, 0.012)
    rows = report.time_to_accuracy.set_index("batch_size")
    assert (rows.loc[64, "at_budget_end"], rows.loc[32, "at_budget_end"]) == (1, 0)
    answer = report.recommendation
    assert answer.batch_size == 64 and answer.at_budget_end == 1  # 60 x 0.012 = 0.72 s against 1 s
    assert "1 of its seeds met the target only at the budget's last step" in answer.sentence


def test_a_missed_seed_is_not_counted_as_met_at_the_budgets_end(tmp_path):
    """64's seed 0 met the target at step 60 of its 80; seed 1 missed it: that is no seed at the budget's end."""
    sweep = make_sweep(tmp_path, "missed")
    for seed, hits in ((0, {0.9: hit(1.0, 60, 64, 16)}), (1, {0.9: None})):
        trial = make_trial(sweep, 64, 0.1, seed, hits=hits, total_steps=80)
        summary = json.loads((trial / "summary.json").read_text())
        (trial / "summary.json").write_text(json.dumps({**summary, "budget_steps": 80}))
    make_step_times(sweep, {64: [0.01] * 5})
    [report] = analyse(sweep)
    row = report.time_to_accuracy.set_index("batch_size").loc[64]
    assert row["at_budget_end"] == 0 and row["seeds_reached"] == "1/2"


def test_a_schedule_that_met_the_target_at_step_0_is_decided_not_a_crash(tmp_path):
    """The first evaluation already met the target: no batch size trained, 0 seconds, on every seed."""
    sweep = make_sweep(tmp_path, "instant")
    for seed in (0, 1):
        for bs in (32, 128):
            make_trial(sweep, bs, 0.05, seed, hits={0.9: hit(1.0, 50, bs, 10)}, train_size=100_000)
        make_schedule_trial(sweep, [(0, 32), (50, 128)], 0.05, seed, reached_at=0)
    make_step_times(sweep, {32: [0.01] * 5, 128: [0.03] * 5})
    [report] = analyse(sweep)
    assert report.recommendation.sentence.endswith("it met the target before its first step.")
    mixed = decide({32: np.array([50.0, 50.0])}, {32: StepCost("interleaved", np.full(5, 0.01))},
                   {"at once": Mixed(np.zeros((2, 0)), [])})
    assert mixed.fastest == "at once" and mixed.predicted["at once"] == (0.0, 0.0, 0.0)


def test_a_batch_size_with_an_unknown_seed_takes_no_part_in_the_decision():
    """Steps to the target must be finite on every seed: a NaN (a record without its hit) is not a prediction."""
    costs = {32: StepCost("interleaved", np.full(5, 0.01)), 64: StepCost("interleaved", np.full(5, 0.015))}
    decision = decide({32: np.array([np.nan, 100.0]), 64: np.array([60.0, 61.0])}, costs)
    assert decision.fastest == 64 and 32 not in decision.predicted and decision.within_noise == []


def test_a_race_cut_frontier_is_not_fitted_to_the_survivors(tmp_path):
    """The race stopped bs 1024 and 4096 early (slow steps on this machine): their steps are unknown, so the
    frontier is fitted on the three batch sizes it did not cut, and no claim is made about other hardware."""
    sweep = make_sweep(tmp_path, "raced")
    steps = {16: 1000, 64: 260, 256: 80}
    for bs, s in steps.items():
        make_trial(sweep, bs, 0.1, hits={0.9: hit(1.0, s, bs, math.ceil(100_000 / bs))}, train_size=100_000)
        make_trial(sweep, bs, 0.3, status="raced", hits={0.9: None}, train_size=100_000, total_steps=s + 5)
    for bs in (1024, 4096):
        make_trial(sweep, bs, 0.1, status="raced", hits={0.9: None}, train_size=100_000, total_steps=12)
    make_trial(sweep, 256, 0.03, status="raced", hits={0.9: None}, train_size=100_000, total_steps=50)
    [report] = analyse(sweep)
    rows = report.time_to_accuracy.set_index("batch_size")
    # 256: a raced lr stopped at 50 steps, under the 80 its best needed: cut; 16 and 64 raced only past theirs.
    assert list(rows["cut_by_race"]) == [False, False, True, True, True]
    frontier = report.science.frontier
    assert frontier.fit is None and frontier.reason == (
        "2 batch sizes reached the target with known steps; a fit needs 3 (the race cut 256, 1024, 4096's "
        "trials before their steps to the target were known)")
    assert "the race cut trials at batch sizes 256, 1024, 4096" in " ".join(frontier.notes)
    answer = report.recommendation
    assert answer.fewest_steps_batch_size is None and answer.data_efficient_batch_size is None
    assert "The race stopped trials at batch sizes 256, 1024, 4096 before their best lr was known" in answer.why[2]


def _tiny(tmp_path, batch_sizes, extra=()):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]},
                               "threads": 1, "budget": {"steps": 6}, "eval": {"every": 1.0},
                               "target": {"value": [0.2]}, "sweep": {"batch_size": batch_sizes, "lr": [0.1]}}))
    return runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp_path), "--quiet", *extra])


def test_a_sweep_times_its_steps_interleaved_once(tmp_path):
    result = _tiny(tmp_path, [8, 32])
    assert result.exit_code == 0, result.output
    assert f"2 completed; a step timed at every batch size ({ROUNDS} rounds); records in" in result.output
    path = tmp_path / "tiny" / "step_times.json"
    recorded = json.loads(path.read_text())
    assert recorded["threads"] == 1 and recorded["device"] == "cpu" and recorded["torch_version"]
    assert recorded["errors"] == [] and recorded["cost_seconds"] > 0
    timings = recorded["timings"]
    assert sorted({(t["batch_size"], t["round"]) for t in timings}) == [(b, r) for b in (8, 32) for r in range(ROUNDS)]
    assert recorded["rounds"] == ROUNDS == 10
    assert all(t["steps"] >= 2 and t["seconds"] > 0 for t in timings)
    # Rounds alternate direction: no batch size is always timed right after the same one.
    order = [t["batch_size"] for t in timings]
    assert order[:4] == [8, 32, 32, 8]
    before = path.read_bytes()
    again = _tiny(tmp_path, [8, 32])  # nothing new trained, the grid covered: not timed again
    assert "nothing to run (2 already recorded); the recorded step times kept (step_times.json)" in again.output
    assert path.read_bytes() == before
    assert _tiny(tmp_path, [8, 32, 128]).exit_code == 0  # a new batch size: all of them timed again, together
    again = json.loads(path.read_text())["timings"]
    assert sorted({t["batch_size"] for t in again}) == [8, 32, 128] and len(again) == 3 * ROUNDS
    [report] = analyse(tmp_path / "tiny")
    assert set(report.time_to_accuracy["step_time_source"].dropna()) == {"interleaved"}
    older = json.loads(path.read_text())  # as an earlier batchlab wrote it: 5 rounds (it took their least)
    older["rounds"], older["timings"] = 5, [t for t in older["timings"] if t["round"] < 5]
    path.write_text(json.dumps(older))
    reported = runner.invoke(app, ["report", str(tmp_path / "tiny"), "--out", str(tmp_path / "report")])
    assert f"step_times.json: 5 timing rounds, from an earlier batchlab (it takes {ROUNDS} now); run the same " \
           "`batchlab sweep` again, not on Dask, to time the steps anew (nothing is trained again)" in reported.output
    again = _tiny(tmp_path, [8, 32, 128])  # nothing new trained, but fewer rounds: timed again
    assert f"nothing to run (3 already recorded); a step timed at every batch size ({ROUNDS} rounds)" in again.output
    assert json.loads(path.read_text())["rounds"] == ROUNDS


def test_without_step_times_the_report_says_it_used_the_trials_clocks(tmp_path):
    result = _tiny(tmp_path, [8, 32], ["--no-time-steps"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "tiny" / "step_times.json").exists()
    [report] = analyse(tmp_path / "tiny")
    rows = report.time_to_accuracy.dropna(subset=["seconds_per_step"])
    assert set(rows["step_time_source"]) == {"trials"}
    summaries = {json.loads(p.read_text())["batch_size"]: json.loads(p.read_text())
                 for p in (tmp_path / "tiny" / "trials").glob("*/summary.json")}
    for row in rows.itertuples():
        s = summaries[row.batch_size]
        assert row.seconds_per_step == pytest.approx(s["train_seconds"] / s["steps"])
    if report.recommendation.batch_size is not None:
        assert any(line.startswith("Seconds per step from each trial's own clock") for line in
                   report.recommendation.details)


def test_an_exact_tie_is_broken_as_the_tables_break_it(tmp_path):
    """32 @ 100 steps x 0.032 s and 64 @ 50 x 0.064 s both predict 3.2 s: fewer steps first, in the decision as in
    the table's fastest flag, so the answer names 64 first and 32 beside it (it read "64 or 64")."""
    sweep = make_sweep(tmp_path, "even")
    for bs, steps in ((32, 100), (64, 50)):
        make_trial(sweep, bs, 0.1, hits={0.9: hit(1.0, steps, bs, math.ceil(1000 / bs))})
    make_step_times(sweep, {32: [0.032] * 5, 64: [0.064] * 5})
    [report] = analyse(sweep)
    rows = report.time_to_accuracy.set_index("batch_size")
    assert bool(rows.loc[64, "fastest"]) and not bool(rows.loc[32, "fastest"])
    answer = report.recommendation
    assert answer.batch_size == 64 and [e["batch_size"] for e in answer.within_noise] == [32]
    assert answer.sentence.startswith("Use batch size 64 or 32: they cannot be told apart")


def test_a_batch_size_whose_trials_diverged_after_the_target_is_timed_by_their_clocks(tmp_path):
    """No step_times.json: 64's only trial reached the target, then diverged. Its clock up to then is a clock: the
    prediction is its steps x its seconds a step, never NaN in the answer."""
    sweep = make_sweep(tmp_path, "blew-up")
    make_trial(sweep, 32, 0.1, hits={0.9: hit(1.0, 100, 32, 32)})
    late = make_trial(sweep, 64, 0.1, status="diverged", hits={0.9: hit(1.0, 40, 64, 16)}, total_steps=60)
    summary = json.loads((late / "summary.json").read_text())
    [report] = analyse(sweep)
    rows = report.time_to_accuracy.set_index("batch_size")
    assert rows.loc[64, "predicted_seconds"] == pytest.approx(40 * summary["train_seconds"] / summary["steps"])
    assert "nan" not in report.recommendation.sentence.lower()


def test_two_loss_targets_below_numpys_tolerance_are_two_targets(tmp_path):
    """Loss targets 5e-9 and 1e-9 are distinct targets (np.isclose's default absolute tolerance, 1e-8, made them
    one, and the report failed on the duplicated hits)."""
    sweep = make_sweep(tmp_path, "tiny-loss")
    for seed in (0, 1):
        for bs in (32, 64):
            make_trial(sweep, bs, 0.1, seed, target_metric="test_loss", targets=(5e-9, 1e-9), final_loss=1e-10,
                       hits={5e-9: hit(2.0, 60, bs, 1000 // bs), 1e-9: hit(3.0, 90, bs, 1000 // bs)})
    [report] = analyse(sweep)
    assert report.recommendation.target == 1e-9  # the hardest reached
    assert sorted(report.time_to_accuracy["target"].unique()) == [1e-9, 5e-9]
    assert set(report.time_to_accuracy.query("target == 1e-9")["steps"]) == {90}


def test_a_tie_says_which_of_its_batch_sizes_met_the_target_only_at_the_budgets_last_step(tmp_path):
    [report] = _edge(tmp_path, 0.0166)  # 1 s against 0.996 s: within the noise
    answer = report.recommendation
    assert answer.sentence.startswith("Use batch size 64 or 32: they cannot be told apart")
    assert answer.sentence.endswith(" Batch size 64: 1 of its seeds met the target only at the budget's last step: "
                                    "a longer budget would show whether it holds.")
    assert "Batch size 32:" not in answer.sentence
