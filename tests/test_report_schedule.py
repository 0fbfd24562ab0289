"""Batch-size schedules in the report: decided against the constant batch sizes by the same rule, compared seed by
seed with the fastest constant one, and kept out of everything that needs a single batch size. Records are
written by hand (tests/report_fixtures.py); expected numbers are worked out here."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batchlab import batches, steptime
from batchlab.cli import app
from batchlab.reporting import analyse, schedule_plots
from batchlab.reporting.display import tie_sentence
from report_fixtures import check_png, hit, make_schedule_trial, make_step_times, make_sweep, make_trial

runner = CliRunner()
ROUND = (1.0, 1.04, 0.97, 1.02, 0.99)  # the machine's speed in each timing round (median 1.0)
CHANGES = [(0, 32), (50, 128), (80, 512)]  # from step 50 on batch 128, from step 80 on batch 512
REACHED_AT = {0: 100, 1: 110}  # the schedule's steps to the target, per seed
CONSTANT = {32: (400, 440), 128: (150, 160)}  # the constant batch sizes' steps to the target, seeds 0 and 1
COST = {32: 0.01, 128: 0.02}  # seconds per step, timed interleaved


def sweep_with(tmp_path, cost_512: float | None, reached_at=REACHED_AT, constants=CONSTANT):
    """Constant batch sizes 32 and 128 (2 seeds each) and the schedule 32→128→512 (2 seeds); step_times.json at
    32, 128 and 512 (cost_512 a step at 512), or none (None)."""
    sweep = make_sweep(tmp_path, "sched")
    for bs, steps in constants.items():
        for seed, s in enumerate(steps):
            make_trial(sweep, bs, 0.1 if bs >= 128 else 0.05, seed, hits={0.9: hit(1.0, s, bs, 1000 // bs)})
    for seed, at in reached_at.items():
        make_schedule_trial(sweep, CHANGES, 0.05, seed, reached_at=at)
    if cost_512 is not None:
        make_step_times(sweep, {**{bs: [c * r for r in ROUND] for bs, c in COST.items()},
                                512: [cost_512 * r for r in ROUND]})
    [report] = analyse(sweep)
    return report


def by_hand(at: int) -> dict[int, int]:
    """Steps at each batch size up to step `at`: 50 at 32, 30 at 128, the rest at 512."""
    return {32: 50, 128: 30, 512: at - 80}


def test_steps_by_batch_counts_the_steps_at_each_batch_size():
    changes = [{"step": s, "batch_size": b} for s, b in CHANGES]
    assert batches.steps_by_batch(changes, 100) == by_hand(100)
    assert batches.steps_by_batch(changes, 60) == {32: 50, 128: 10}
    assert batches.steps_by_batch(changes, 50) == {32: 50}
    assert batches.label({"schedule": [[0, 32], [1600, 128], [5440, 512]], "unit": "examples"}) == "32→128→512"
    assert batches.label({"follow": "noise", "min": 16, "max": 1024}) == "noise 16→1024"


def test_a_schedule_is_predicted_from_its_steps_at_each_batch_size(tmp_path):
    report = sweep_with(tmp_path, 0.05)
    cost = {**COST, 512: 0.05}
    per_seed = {seed: sum(steps * cost[b] for b, steps in by_hand(at).items()) for seed, at in REACHED_AT.items()}
    assert per_seed == pytest.approx({0: 2.1, 1: 2.6})  # 50 x 0.01 + 30 x 0.02 + 20 (30) x 0.05
    schedules = report.tables.schedules
    row = schedules.headline_rows.set_index("schedule").loc["32→128→512"]
    assert row["status"] == "reached" and row["seeds_reached"] == "2/2"
    assert row["predicted_seconds"] == pytest.approx(statistics.median(per_seed.values()))
    assert row["predicted_low"] < row["predicted_seconds"] < row["predicted_high"]
    assert row["step_time_source"] == "interleaved"
    seeds = schedules.headline_seeds.set_index("seed")
    assert seeds["predicted_seconds"].to_dict() == pytest.approx(per_seed)
    assert seeds.loc[0, "steps_by_batch"] == "50@32 30@128 20@512"


def test_steps_saved_and_examples_against_the_fastest_constant_per_seed(tmp_path):
    report = sweep_with(tmp_path, 0.05)
    rows = report.time_to_accuracy.set_index("batch_size")
    assert rows.loc[128, "fastest"]  # 155 x 0.02 = 3.1 s against 420 x 0.01 = 4.2 s: the best constant
    examples = {seed: 50 * 32 + 30 * 128 + (at - 80) * 512 for seed, at in REACHED_AT.items()}
    constant_examples = {seed: s * 128 for seed, s in enumerate(CONSTANT[128])}
    seeds = report.tables.schedules.headline_seeds.set_index("seed")
    for seed, at in REACHED_AT.items():
        assert seeds.loc[seed, "best_constant"] == 128
        assert seeds.loc[seed, "steps_saved"] == pytest.approx(1 - at / CONSTANT[128][seed])
        assert seeds.loc[seed, "examples_ratio"] == pytest.approx(examples[seed] / constant_examples[seed])
    # seed 0: 33% fewer steps with 0.82x the examples; seed 1: 31% fewer but 1.02x the examples
    assert seeds["clears_bar"].tolist() == [True, False]
    row = report.tables.schedules.headline_rows.iloc[0]
    # the summary: the median over seeds of each seed's figure (not the ratio of the two medians, 1 - 105 / 155)
    assert row["steps_saved"] == pytest.approx(statistics.median(1 - at / CONSTANT[128][seed]
                                                                 for seed, at in REACHED_AT.items()))
    assert row["examples_ratio"] == pytest.approx(statistics.median(examples[s] / constant_examples[s]
                                                                    for s in REACHED_AT))
    assert (row["seeds_clearing_bar"], row["clears_bar_every_seed"]) == (1, False)
    statement = [d for d in report.recommendation.details if d.startswith("Batch-size schedule 32→128→512")]
    assert len(statement) == 1
    assert "seed 0: 100 steps against 150 (33% fewer), 0.82× its examples" in statement[0]
    assert "seed 1: 110 steps against 160 (31% fewer), 1.02× its examples" in statement[0]
    assert (f"seed by seed, a median {row['steps_saved']:.0%} fewer steps with {row['examples_ratio']:.2f}× its "
            "examples" in statement[0])
    assert statement[0].endswith("≥ 25% fewer steps with no more examples on 1 of 2 seeds: not on every seed.")


def test_the_bar_holds_on_every_seed_when_each_seed_clears_it(tmp_path):
    report = sweep_with(tmp_path, 0.05, constants={32: (400, 440), 128: (150, 170)})  # 170 x 128 > 20,800
    row = report.tables.schedules.headline_rows.iloc[0]
    assert (row["seeds_clearing_bar"], row["clears_bar_every_seed"]) == (2, True)
    assert "on every seed (2 of 2): yes." in " ".join(report.recommendation.details)


def test_the_answer_names_the_schedule_when_it_is_faster(tmp_path):
    report = sweep_with(tmp_path, 0.05)  # 2.35 s against batch size 128's 3.1 s
    answer = report.recommendation
    assert (answer.schedule, answer.batch_size, answer.lr) == ("32→128→512", None, 0.05)
    assert answer.within_noise == []
    assert answer.predicted_seconds == pytest.approx(2.35)
    assert answer.baseline_batch_size == 128 and answer.speedup == pytest.approx(3.1 / 2.35)
    assert answer.sentence.startswith("Use the batch-size schedule 32→128→512 (lr 0.05 at 32, sqrt-scaled): 2.35 s "
                                      "to test_accuracy ≥ 0.9 on this machine (median 105 steps over its seeds")
    assert answer.sentence.endswith("1.3× as fast as batch size 128, the fastest constant batch size.")
    assert answer.in_short() == "use the batch-size schedule 32→128→512 (lr 0.05 at its start)"
    assert answer.to_dict()["schedule"] == "32→128→512"


def test_the_answer_names_the_constant_when_the_schedule_is_slower(tmp_path):
    report = sweep_with(tmp_path, 0.2)  # seed 0: 0.5 + 0.6 + 20 x 0.2 = 5.1 s against 3.1 s
    answer = report.recommendation
    assert (answer.schedule, answer.batch_size, answer.within_noise) == (None, 128, [])
    assert answer.sentence.startswith("Use batch size 128 with lr 0.1: 3.1 s")
    row = report.tables.schedules.headline_rows.iloc[0]
    assert row["predicted_seconds"] == pytest.approx(statistics.median([5.1, 7.1]))
    assert not row["fastest"] and not row["within_noise"]


def test_a_schedule_within_the_noise_is_named_beside_the_constant(tmp_path):
    report = sweep_with(tmp_path, 0.085)  # median of 2.8 and 3.65 = 3.225 s: within 10% of 3.1 s
    answer = report.recommendation
    assert answer.batch_size == 128
    assert [o.get("schedule") for o in answer.within_noise] == ["32→128→512"]
    assert answer.sentence.startswith("Use batch size 128 or the batch-size schedule 32→128→512: they cannot be "
                                      "told apart on this machine")
    assert answer.in_short() == ("use batch size 128 (lr 0.1) or the batch-size schedule 32→128→512 "
                                 "(lr 0.05 at its start)")


def test_a_schedule_that_missed_a_seed_is_partly_reached_and_not_recommended(tmp_path):
    report = sweep_with(tmp_path, 0.05, reached_at={0: 100, 1: None})  # seed 0 alone would be fastest
    row = report.tables.schedules.headline_rows.iloc[0]
    assert (row["status"], row["seeds_reached"]) == ("partly reached", "1/2")
    assert np.isnan(row["predicted_seconds"]) and not row["fastest"]
    assert np.isnan(row["steps_saved"]) and np.isnan(row["examples_ratio"])  # not a median of the seed that reached
    answer = report.recommendation
    assert (answer.schedule, answer.batch_size) == (None, 128)
    assert any(d.startswith("Batch-size schedule 32→128→512 (lr 0.05 at 32, sqrt-scaled) partly reached "
                            "test_accuracy ≥ 0.9 (1/2 seeds)") for d in answer.details)
    seeds = report.tables.schedules.headline_seeds.set_index("seed")
    assert bool(seeds.loc[1, "reached"]) is False and not seeds.loc[1, "clears_bar"]


def test_the_frontier_and_the_batch_size_tables_leave_schedules_out(tmp_path):
    report = sweep_with(tmp_path, 0.05, constants={**CONSTANT, 512: (80, 84)})
    rows = report.time_to_accuracy.set_index("batch_size")
    assert sorted(rows.index) == [32, 128, 512]
    assert rows.loc[32, "seeds"] == 2 and rows.loc[32, "steps"] == 420  # not merged with the schedule starting at 32
    frontier = report.science.frontier
    assert sorted(frontier.points["batch_size"]) == [32, 128, 512]
    assert frontier.fit is not None and sorted(frontier.fit.batch_sizes) == [32, 128, 512]
    assert set(report.tables.trials["schedule"].dropna()) == {"32→128→512"}  # trials.csv lists them all
    assert report.counts == {"completed": 8}


def test_without_step_times_each_batch_size_takes_the_trials_own_clocks(tmp_path):
    """Constant trials ran at bs/1000 s a step; no constant trial ran at 512, so the schedule's own metrics.csv
    rows at 512 give it: 512 examples x 1e-4 s each."""
    report = sweep_with(tmp_path, None)
    cost = {32: 0.032, 128: 0.128, 512: 512 * 1e-4}
    per_seed = [sum(steps * cost[b] for b, steps in by_hand(at).items()) for at in REACHED_AT.values()]
    row = report.tables.schedules.headline_rows.iloc[0]
    assert row["step_time_source"] == "trials"
    assert row["predicted_seconds"] == pytest.approx(statistics.median(per_seed))
    assert report.recommendation.schedule == "32→128→512"  # 6.72 s against 155 x 0.128 = 19.8 s
    assert "each trial's own clock" in " ".join(report.recommendation.details)


def test_the_documents_and_the_terminal_show_the_schedules(tmp_path):
    report = sweep_with(tmp_path, 0.05)
    files = report.write(formats={"md", "csv", "png"})
    markdown = (report.out_dir / "report.md").read_text()
    assert "## Batch-size schedules" in markdown
    assert check_png(report.out_dir / "batch_size_schedules.png") == "schedule trials drawn: 2"
    assert markdown.index("batch_size_schedules.png") > markdown.index("## Batch-size schedules")
    assert "| 32→128→512 | 0 | 50@32 30@128 20@512 | 100 | 150 | 33% |" in markdown
    assert report.out_dir / "schedules.csv" in files and report.out_dir / "schedule_seeds.csv" in files
    result = runner.invoke(app, ["report", str(report.sweep_dir), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "batch-size schedules" in result.output
    assert "In short: use the batch-size schedule 32→128→512" in result.output


def test_step_times_cover_every_batch_size_a_schedule_used():
    class Config(SimpleNamespace):
        def model_copy(self, update):
            return Config(**{**vars(self), **update})

    constant = SimpleNamespace(id="c", config=Config(batch_size=64, batch_schedule=None), axes={"batch_size": 64})
    scheduled = SimpleNamespace(id="s", config=Config(batch_size=32, batch_schedule={"schedule": [[0, 32]]}),
                                axes={"batch_size": {"schedule": [[0, 32]]}})
    used = {"s": [{"step": 0, "batch_size": 32}, {"step": 50, "batch_size": 64}, {"step": 80, "batch_size": 256}]}
    found = steptime.subjects([constant, scheduled], used)
    assert [s.key[0] for s in found] == [32, 64, 256]
    timed = {s.key[0]: s.config for s in found}
    assert timed[256].batch_size == 256 and timed[256].batch_schedule is None  # timed as a constant batch
    assert timed[64] is constant.config  # shared with the constant trial at 64
    assert [s.key[0] for s in steptime.subjects([scheduled])] == [32]  # no records yet: its starting batch size


def test_a_sweep_of_schedules_alone(tmp_path):
    sweep = make_sweep(tmp_path, "alone")
    for seed, at in ((0, 100), (1, 90)):
        make_schedule_trial(sweep, [(0, 32), (50, 128)], 0.05, seed, reached_at=at)
    make_step_times(sweep, {32: [0.01 * r for r in ROUND], 128: [0.02 * r for r in ROUND]})
    [report] = analyse(sweep)
    answer = report.recommendation
    assert answer.schedule == "32→128"
    assert answer.predicted_seconds == pytest.approx(statistics.median([50 * 0.01 + 50 * 0.02, 50 * 0.01 + 40 * 0.02]))
    assert answer.sentence.endswith("; no constant batch size ran.")
    assert report.time_to_accuracy.empty
    assert report.write(formats={"md", "png"})[0].name == "batch_size_schedules.png"
    assert report.table() is None  # the terminal printed an empty table of constant batch sizes
    shown = runner.invoke(app, ["report", str(sweep), "--format", "md"])
    assert shown.exit_code == 0, shown.output
    assert "batch-size schedules (no constant batch size reached the target to compare them with)" in shown.output
    assert "(the fastest constant)" not in shown.output and "time to test_accuracy" not in shown.output
    missed = make_sweep(tmp_path, "missed")
    for seed, at in ((0, 100), (1, None)):
        make_schedule_trial(missed, [(0, 32), (50, 128)], 0.05, seed, reached_at=at)
    [report] = analyse(missed)
    assert report.recommendation.sentence.startswith("No batch-size schedule reached test_accuracy ≥ 0.9 on every "
                                                     "seed")
    assert report.recommendation.in_short() is None


def test_a_schedule_without_lr_scaling_says_its_lr_stays(tmp_path):
    sweep = make_sweep(tmp_path, "held")
    for seed in (0, 1):
        make_trial(sweep, 128, 0.1, seed, hits={0.9: hit(1.0, 150, 128, 8)})
        make_schedule_trial(sweep, CHANGES, 0.05, seed, reached_at=100, lr_scale=None)
    [report] = analyse(sweep)
    assert report.recommendation.sentence.startswith("Use the batch-size schedule 32→128→512 (lr 0.05 at every "
                                                     "batch size): ")


def test_a_schedule_still_running_has_no_row_yet(tmp_path):
    sweep = make_sweep(tmp_path, "running")
    for seed in (0, 1):
        make_trial(sweep, 128, 0.1, seed, hits={0.9: hit(1.0, 150, 128, 8)})
        make_schedule_trial(sweep, CHANGES, 0.05, seed, reached_at=None, status="interrupted")
    [report] = analyse(sweep)
    assert report.tables.schedules.headline_rows.empty
    assert report.recommendation.batch_size == 128 and report.recommendation.schedule is None
    assert report.counts == {"completed": 2, "interrupted": 2}
    report.write(formats={"md"})
    assert "## Batch-size schedules" in (report.out_dir / "report.md").read_text()


def test_schedules_of_the_same_batch_sizes_are_not_pooled(tmp_path):
    """32→128 switching at step 50 or 100, and at 50 without lr scaling: three schedules, each its own seeds and
    median steps, named apart; trials.csv names each trial's."""
    runs = {"32→128 at 1600 examples (lr sqrt)": ([(0, 32), (50, 128)], "sqrt", {0: 100, 1: 110}),
            "32→128 at 3200 examples (lr sqrt)": ([(0, 32), (100, 128)], "sqrt", {0: 150, 1: 160}),
            "32→128 at 1600 examples (lr none)": ([(0, 32), (50, 128)], None, {0: 120, 1: 140})}
    sweep = make_sweep(tmp_path, "apart")
    for changes, scale, reached in runs.values():
        for seed, at in reached.items():
            make_schedule_trial(sweep, changes, 0.05, seed, reached_at=at, lr_scale=scale)
    [report] = analyse(sweep)
    rows = report.tables.schedules.headline_rows.set_index("schedule")
    assert sorted(rows.index) == sorted(runs)
    assert {name: s if isinstance(s, str) else None for name, s in rows["lr_scale"].items()} == \
        {name: scale for name, (_, scale, _) in runs.items()}
    for name, (changes, scale, reached) in runs.items():
        assert rows.loc[name, "seeds"] == 2
        assert rows.loc[name, "steps"] == statistics.median(reached.values())
        seeds = report.tables.schedules.headline_seeds.query("schedule == @name").set_index("seed")
        assert seeds["steps"].to_dict() == reached
    trials = report.tables.trials.set_index("trial_id")["schedule"]
    assert sorted(trials.value_counts().items()) == sorted((name, 2) for name in runs)


def test_the_batch_sizes_of_a_schedule_are_every_seed_s(tmp_path):
    """follow: noise trains at the sizes each seed measured: schedules.csv lists each seed's where they differ, and
    the one list where every seed trained at the same sizes."""
    follow = {"follow": "noise", "min": 32, "max": 512, "lr_scale": "sqrt"}
    used = {0: [(0, 32), (50, 128), (80, 512)], 1: [(0, 32), (60, 256)]}
    sweep = make_sweep(tmp_path, "follow")
    for seed, changes in used.items():
        make_schedule_trial(sweep, changes, 0.05, seed, reached_at=100, schedule=follow)
    [report] = analyse(sweep)
    [row] = report.tables.schedules.headline_rows.itertuples()
    sizes = {seed: " ".join(str(b) for _, b in changes) for seed, changes in used.items()}
    assert (row.schedule, row.batch_sizes) == ("noise 32→512", f"seed 0: {sizes[0]}; seed 1: {sizes[1]}")
    same = sweep_with(tmp_path / "same", 0.05)
    assert same.tables.schedules.headline_rows["batch_sizes"].tolist() == [" ".join(str(b) for _, b in CHANGES)]


def test_a_tie_with_a_schedule_says_which_setting_met_the_target_only_at_the_budgets_last_step(tmp_path,
                                                                                               monkeypatch):
    import test_report_schedule as here
    made = here.make_trial

    def at_its_budget_end(sweep, bs, lr, seed=0, **kw):  # 128 met the target at the last step its budget allowed
        trial = made(sweep, bs, lr, seed, **kw)
        if bs == 128:
            summary = json.loads((trial / "summary.json").read_text())
            (trial / "summary.json").write_text(json.dumps({**summary, "budget_steps": CONSTANT[128][seed]}))
        return trial
    monkeypatch.setattr(here, "make_trial", at_its_budget_end)
    report = sweep_with(tmp_path, 0.085)  # 3.23 s against 128's 3.1 s: within the noise
    sentence = report.recommendation.sentence
    assert sentence.startswith("Use batch size 128 or the batch-size schedule 32→128→512: they cannot be told apart")
    assert sentence.endswith(" Batch size 128: 2 of its seeds met the target only at the budget's last step: a "
                             "longer budget would show whether it holds.")


def test_one_tie_sentence_for_batch_sizes_and_schedules():
    """Batch sizes alone are named once ("batch size 64 or 32"); with a schedule every setting by its name. Equal
    steps go to the smaller batch size among batch sizes, to the faster setting with a schedule; each setting with
    seeds at the budget's end is warned about."""
    def constant(b, steps, examples, at_end=0):
        return {"name": f"batch size {b}", "batch_size": b, "setting": "lr 0.1", "predicted_seconds": 1.0,
                "steps": steps, "examples": examples, "at_budget_end": at_end}

    text = tie_sentence([constant(64, 50, 3200), constant(32, 50, 1600, at_end=1)], "test_accuracy ≥ 0.9")
    assert text.startswith("Use batch size 64 or 32: they cannot be told apart on this machine, within the noise of "
                           "its timing and of the seeds (64: lr 0.1, 1 s; 32: lr 0.1, 1 s predicted to "
                           "test_accuracy ≥ 0.9, steps x seconds per step); batch size 32 takes both the fewest "
                           "steps (50) and the fewest examples (1,600).")
    assert text.endswith(" Batch size 32: 1 of its seeds met the target only at the budget's last step: a longer "
                         "budget would show whether it holds.")
    schedule = {"name": "the batch-size schedule 32→128", "schedule": "32→128", "setting": "lr 0.1 at 32",
                "predicted_seconds": 0.9, "steps": 40, "examples": 4000}
    text = tie_sentence([schedule, constant(64, 50, 3200)], "test_accuracy ≥ 0.9")
    assert text == ("Use the batch-size schedule 32→128 or batch size 64: they cannot be told apart on this machine, "
                    "within the noise of its timing and of the seeds (the batch-size schedule 32→128: lr 0.1 at 32, "
                    "0.9 s; batch size 64: lr 0.1, 1 s predicted to test_accuracy ≥ 0.9, steps x seconds per step); "
                    "the batch-size schedule 32→128 takes the fewest steps (40), batch size 64 the fewest examples "
                    "(3,200).")
    text = tie_sentence([{**schedule, "steps": 50}, constant(16, 50, 960)], "test_accuracy ≥ 0.9")
    assert text.endswith("the batch-size schedule 32→128 takes the fewest steps (50), batch size 16 the fewest "
                         "examples (960).")


def read_sweep(tmp_path, log_every: int):
    """Batch size 128 (2,000 steps, an evaluation every 4 x log_every) reaching the target at 1,500 / 1,600 steps,
    and the schedule 32→128→512 (an evaluation every log_every) at 1,000 / 1,100."""
    sweep = make_sweep(tmp_path, f"read{log_every}")
    for seed, steps in enumerate((1500, 1600)):
        make_trial(sweep, 128, 0.1, seed, hits={0.9: hit(1.0, steps, 128, 8)}, total_steps=2000,
                   points=2000 // log_every)
    for seed, at in enumerate((1000, 1100)):
        make_schedule_trial(sweep, CHANGES, 0.05, seed, reached_at=at, total_steps=1200, log_every=log_every)
    make_step_times(sweep, {32: [0.01] * 10, 128: [0.02] * 10, 512: [0.05] * 10})
    [report] = analyse(sweep)
    return sweep, report


def evaluated_before(trial_dir, steps: int) -> int:
    """The last step below `steps` with an evaluation in the trial's metrics.csv."""
    rows = [line.split(",") for line in (trial_dir / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("test_accuracy")
    return max(int(r[0]) for r in rows[1:] if r[column] and int(r[0]) < steps)


def test_steps_read_at_coarse_evaluations_are_said_beside_the_comparison(tmp_path):
    sweep, report = read_sweep(tmp_path, log_every=25)
    seeds = report.tables.schedules.headline_seeds.set_index("seed")
    trials = {json.loads((t / "summary.json").read_text())["trial_id"]: t for t in (sweep / "trials").iterdir()}
    for seed in (0, 1):
        own = trials[next(i for i in trials if i.startswith("bs0032to0512") and f"-s{seed}-" in i)]
        constant = trials[next(i for i in trials if i.startswith("bs0128") and f"-s{seed}-" in i)]
        steps, constant_steps = (1000, 1100)[seed], (1500, 1600)[seed]
        assert seeds.loc[seed, "read_every"] == steps - evaluated_before(own, steps)  # 25: a row every 25 steps
        assert seeds.loc[seed, "constant_read_every"] == constant_steps - evaluated_before(constant, constant_steps)
    assert seeds["constant_read_every"].tolist() == [100, 100]  # an evaluation every 4 rows of 25 steps
    # seed 0: 25 / 1,000 + 100 / 1,500 = 9.2%; seed 1: 25 / 1,100 + 100 / 1,600 = 8.5%: both over 2%
    [line] = [w for w in report.recommendation.why if w.startswith("Steps to the target are read at evaluations")]
    assert ("on seed 0 the batch-size schedule 32→128→512 was last evaluated 25 steps before its 1,000, batch size "
            f"128 100 steps before its 1,500 (together {25 / 1000 + 100 / 1500:.0%} of their steps)") in line
    assert "2 of 2 comparisons seed by seed are read this coarsely. Set eval.every lower" in line
    result = runner.invoke(app, ["report", str(sweep)])
    assert result.exit_code == 0, result.output
    assert "Steps to the target are read at evaluations" in " ".join(result.output.split())
    assert "read_every" in (sweep / "report" / "schedule_seeds.csv").read_text().splitlines()[0]


def test_steps_read_finely_need_no_word(tmp_path):
    _, report = read_sweep(tmp_path, log_every=1)
    seeds = report.tables.schedules.headline_seeds
    assert seeds["read_every"].tolist() == [1, 1] and seeds["constant_read_every"].tolist() == [4, 4]
    assert not any(w.startswith("Steps to the target are read") for w in report.recommendation.why)


def test_the_coarse_reading_is_said_when_the_schedule_is_the_answer_and_counts_only_seeds_compared(tmp_path):
    """The schedule's answer rebuilt the list of reasons and dropped the line; a seed the schedule missed has no
    steps saved, so it is not counted (nor named)."""
    report = sweep_with(tmp_path, 0.05, reached_at={0: 100, 1: None, 2: 110}, constants={128: (150, 160, 170)})
    seeds = report.tables.schedules.headline_seeds.set_index("seed")
    assert seeds["read_every"].tolist()[0] == 10 and seeds["steps_saved"].isna().tolist() == [False, True, False]
    [line] = [w for w in report.recommendation.why if w.startswith("Steps to the target are read at evaluations")]
    assert "2 of 2 comparisons seed by seed" in line and "–" not in line

    report = sweep_with(tmp_path / "won", 0.05)  # the schedule is the answer (2.35 s against 3.1 s)
    assert report.recommendation.schedule == "32→128→512"
    why = report.recommendation.why
    assert why[0].startswith("A schedule has no single batch size")
    assert any(w.startswith("Steps to the target are read at evaluations") for w in why)


def test_a_sequence_tasks_schedules_give_tokens_beside_examples(tmp_path):
    """The README says a language model's tables state tokens: the schedule tables gave examples only."""
    sweep_with(tmp_path, 0.05)
    sweep = tmp_path / "sched"
    for summary_file in sweep.glob("trials/*/summary.json"):
        summary = json.loads(summary_file.read_text())
        summary_file.write_text(json.dumps({**summary, "context": 8}))  # 8 tokens an example
    [report] = analyse(sweep)
    schedules = report.tables.schedules
    seeds = schedules.headline_seeds
    assert (seeds["tokens"] == seeds["examples"] * 8).all()
    assert (seeds["constant_tokens"] == seeds["constant_examples"] * 8).all()
    row = schedules.headline_rows.iloc[0]
    assert row["tokens"] == row["examples"] * 8 and row["constant_tokens"] == row["constant_examples"] * 8
    result = runner.invoke(app, ["report", str(sweep)])
    assert result.exit_code == 0, result.output
    markdown = (sweep / "report" / "report.md").read_text()
    examples = {seed: 50 * 32 + 30 * 128 + (at - 80) * 512 for seed, at in REACHED_AT.items()}
    assert f"| {statistics.median(examples.values()) * 8:,.0f} |" in markdown  # the median seed's tokens
    assert "tokens (bs 128)" in markdown
    header = (sweep / "report" / "schedule_seeds.csv").read_text().splitlines()[0].split(",")
    assert header.index("tokens") == header.index("examples") + 1


def test_a_sequence_tasks_schedule_figure_is_drawn_over_tokens(tmp_path, monkeypatch):
    """Its budget and schedules count tokens: the figure's x axis was examples (sequences)."""
    sweep_with(tmp_path, 0.05)
    sweep = tmp_path / "sched"
    for summary_file in sweep.glob("trials/*/summary.json"):
        summary_file.write_text(json.dumps({**json.loads(summary_file.read_text()), "context": 8}))
    [report] = analyse(sweep)
    drawn = []
    monkeypatch.setattr(schedule_plots, "png", lambda fig, note=None: drawn.append(fig) or b"")
    schedule_plots.schedule_plots(report.records, report.tables)
    [fig] = drawn
    sizes_ax, metric_ax = fig.axes[:2]
    assert sizes_ax.get_xlabel() == metric_ax.get_xlabel() == "tokens"
    schedule_rows = pd.read_csv(next(sweep.glob("trials/*to*/metrics.csv")))
    xs = np.concatenate([line.get_xdata() for line in sizes_ax.get_lines()])
    assert xs.max() == schedule_rows["examples"].max() * 8


@pytest.mark.parametrize("listed", [(0.8, 0.9), (0.9, 0.8)])
def test_with_only_schedules_the_headline_is_the_hardest_target_reached(tmp_path, listed):
    """The schedule 32→128→512 met accuracy 0.8 at step 40 and 0.9 at step 100 (110 on seed 1), with no constant
    batch size beside it: the report headlined the first target listed, 0.8 when listed first, where a constant
    batch size's sweep headlines the hardest target reached, 0.9, whichever order they are listed in."""
    sweep = make_sweep(tmp_path, "only")
    for seed, at in REACHED_AT.items():
        trial = make_schedule_trial(sweep, CHANGES, 0.05, seed, reached_at=at)
        config, summary = (json.loads((trial / name).read_text()) for name in ("config.json", "summary.json"))
        config["target"]["value"] = list(listed)
        easy = {"seconds": 40 * 32 * 1e-4, "steps": 40, "epochs": 40 * 32 / 100_000, "examples": 40 * 32}
        summary["targets"]["0.8"] = easy  # 40 steps at 32 (before the first change, at step 50)
        (trial / "config.json").write_text(json.dumps(config))
        (trial / "summary.json").write_text(json.dumps(summary))
    make_step_times(sweep, {bs: [c * r for r in ROUND] for bs, c in {**COST, 512: 0.03}.items()})
    [report] = analyse(sweep)
    assert report.tables.target == 0.9
    assert report.recommendation.target == 0.9 and report.recommendation.schedule == "32→128→512"
    assert report.recommendation.steps == statistics.median(REACHED_AT.values())
