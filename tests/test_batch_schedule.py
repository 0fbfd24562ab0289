"""A batch size that changes during training: where it changes, the lr that moves with it, what is recorded,
checkpoints across a change, follow: noise, the grid, and bad input as one line."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import batchlab
from batchlab import batches
from batchlab.batches import label, steps_by_batch
from batchlab.cli import app
from batchlab.grid import expand

runner = CliRunner()
BASE = {"name": "bs", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]}, "threads": 1,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "lr": 0.05, "budget": {"epochs": 3}, "target": {"value": [0.6]},
        "eval": {"every": 0.5, "log_every": 0.1, "train_subset": 0}}
POINTS = [[0, 32], [1000, 128], [3000, 512]]


def run(tmp_path: Path, **update) -> tuple[dict, pd.DataFrame]:
    """One trial of BASE (updated) through the Python API: its summary and metrics."""
    cfg = {**BASE, **update}
    result = batchlab.sweep(cfg, out=tmp_path / "runs", time_steps=False)
    [summary] = result.summaries
    metrics = pd.read_csv(result.path / "trials" / summary["trial_id"] / "metrics.csv")
    return summary, metrics


def at(points, progress):
    return [b for p, b in points if p <= progress][-1]


def simulate(points, n, steps, drop_last=False):
    """(examples after each step, batch size of each step) for a schedule over a data set of n, epoch by epoch:
    an epoch's last batch holds what is left of it (dropped with drop_last)."""
    examples, sizes, done, position = [0], [], 0, 0
    while len(sizes) < steps:
        b = min(at(points, done), n)
        if drop_last and position + b > n:
            position = 0
            continue
        take = min(b, n - position)
        done, position = done + take, (position + take) % n
        examples.append(done)
        sizes.append(b)
    return examples, sizes


def test_the_batch_size_changes_at_the_given_points_exactly(tmp_path):
    summary, metrics = run(tmp_path, batch_size={"schedule": POINTS})
    n = summary["train_size"]
    examples, sizes = simulate(POINTS, n, summary["steps"])
    assert summary["examples"] == examples[-1] >= 3 * n > examples[-2]  # a budget in epochs is epochs of examples
    assert summary["budget_steps"] == summary["steps"] and summary["epochs"] == summary["examples"] / n
    for row in metrics.itertuples():
        assert row.examples == examples[row.step]
        assert row.batch_size == sizes[min(row.step, len(sizes) - 1)]  # the next step's (the last row: the last)
        assert row.epoch == pytest.approx(row.examples / n)
    changes = [0] + [s for s in range(1, len(sizes)) if sizes[s] != sizes[s - 1]]
    assert [(c["step"], c["examples"], c["batch_size"]) for c in summary["batch_changes"]] == \
        [(s, examples[s], sizes[s]) for s in changes]
    assert summary["batch_changes"][1]["examples"] >= 1000 > examples[changes[1] - 1]  # the first step past 1000
    assert summary["batch_schedule"] == {"schedule": POINTS, "unit": "examples", "lr_scale": None}
    assert summary["batch_size"] == 32 and summary["trial_id"].startswith("bs0032to0512-lr0.05-s0-")
    # the target: its steps and examples are those of the first evaluation that met it
    hit = metrics[metrics["test_accuracy"] >= 0.6].iloc[0]
    assert summary["targets"]["0.6"]["steps"] == hit.step and summary["targets"]["0.6"]["examples"] == hit.examples
    assert summary["targets"]["0.6"]["examples"] == examples[int(hit.step)]
    # evaluations every 0.5 epochs of examples: where the examples cross a multiple of round(0.5 n)
    every = round(0.5 * n)
    evaluated = metrics[metrics["test_accuracy"].notna()]["step"].tolist()
    assert evaluated == [0] + [s for s in range(1, summary["steps"] + 1)
                               if examples[s] // every != examples[s - 1] // every or s == summary["steps"]]


@pytest.mark.parametrize("scale, factor", [("linear", lambda r: r), ("sqrt", math.sqrt), ("none", lambda r: 1.0)])
def test_the_lr_follows_lr_scale(tmp_path, scale, factor):
    summary, metrics = run(tmp_path, batch_size={"schedule": POINTS, "lr_scale": scale}, budget={"steps": 55})
    for row in metrics.itertuples():
        assert row.lr == pytest.approx(0.05 * factor(row.batch_size / 32), rel=1e-12)
    assert [c["lr"] for c in summary["batch_changes"]] == pytest.approx([0.05 * factor(b / 32) for b in (32, 128, 512)])
    assert summary["steps"] == 55  # a budget in steps is steps, whatever the batch sizes


def test_the_lr_schedule_runs_by_examples_and_multiplies_the_scaled_lr(tmp_path):
    """Warmup of 1 epoch: in steps of the starting batch (n/32), counted by examples."""
    summary, metrics = run(tmp_path, batch_size={"schedule": POINTS, "lr_scale": "linear"},
                           schedule={"name": "constant", "warmup_epochs": 1.0})
    n = summary["train_size"]
    warmup = round(n / 32)
    for row in metrics.itertuples():
        step0 = row.examples // 32  # the lr schedule's step: examples in steps of the starting batch
        multiplier = (step0 + 1) / warmup if step0 < warmup else 1.0
        assert row.lr == pytest.approx(0.05 * row.batch_size / 32 * multiplier, rel=1e-12)


def test_a_budget_in_examples_ends_at_the_first_step_past_it(tmp_path):
    summary, _ = run(tmp_path, batch_size={"schedule": POINTS}, budget={"examples": 2000}, drop_last=True)
    examples, sizes = simulate(POINTS, summary["train_size"], 200, drop_last=True)
    steps = next(s for s, e in enumerate(examples) if e >= 2000)
    assert (summary["steps"], summary["examples"], summary["budget_steps"]) == (steps, examples[steps], steps)


def test_steps_by_batch_and_label():
    changes = [{"step": 0, "batch_size": 32}, {"step": 10, "batch_size": 128}, {"step": 14, "batch_size": 512}]
    assert steps_by_batch(changes, 20) == {32: 10, 128: 4, 512: 6}
    assert steps_by_batch(changes, 12) == {32: 10, 128: 2}
    assert label({"schedule": POINTS, "unit": "examples"}) == "32→128→512"
    assert label({"follow": "noise", "min": 16, "max": 1024}) == "noise 16→1024"


def test_schedules_of_the_same_batch_sizes_get_distinct_names():
    """A label is only the batch sizes: where two schedules share one, the switch points or the lr scale tell them
    apart; a schedule without lr scaling is the same schedule whether it says none or nothing."""
    early, late = [[0, 32], [1600, 128]], [[0, 32], [3200, 128]]
    key = lambda points, scale="sqrt": batches.key({"schedule": points, "lr_scale": scale})  # noqa: E731
    assert key(early) != key(late) != key(early, "linear")
    assert key(early, None) == key(early, "none") == key([(0.0, 32), (1600.0, 128)], "none")
    assert batches.names([key(early), key([[0, 32], [4000, 64]])]) == {
        key(early): "32→128", key([[0, 32], [4000, 64]]): "32→64"}  # nothing shared: the labels
    assert batches.names([key(early), key(late)]) == {
        key(early): "32→128 at 1600 examples", key(late): "32→128 at 3200 examples"}
    assert batches.names([key(early), key(early, "linear")]) == {
        key(early): "32→128 (lr sqrt)", key(early, "linear"): "32→128 (lr linear)"}
    three = [key(early), key(late), key(early, None)]
    assert batches.names(three) == {key(early): "32→128 at 1600 examples (lr sqrt)",
                                    key(late): "32→128 at 3200 examples (lr sqrt)",
                                    key(early, None): "32→128 at 1600 examples (lr none)"}
    tokens = batches.key({"schedule": [[0, 32]], "unit": "tokens"})
    assert len(set(batches.names([tokens, key([[0, 32]], None)]).values())) == 2  # one batch size, alike but the unit
    with pytest.raises(ValueError):
        batches.key({"schedule": [[5, 32]]})


def test_gradient_accumulation_follows_a_changing_batch(tmp_path):
    """micro_batch_size 32 accumulates the batches of 128 and 512: the same training, up to rounding."""
    whole, a = run(tmp_path / "a", batch_size={"schedule": POINTS}, budget={"steps": 52})
    micro, b = run(tmp_path / "b", batch_size={"schedule": POINTS}, budget={"steps": 52}, micro_batch_size=32)
    assert micro["micro_batch_size"] == 32 and whole["examples"] == micro["examples"]
    assert b["train_loss"].dropna().to_numpy() == pytest.approx(a["train_loss"].dropna().to_numpy(), rel=1e-4)


def test_follow_noise_raises_the_batch_size_as_the_measured_noise_scale_grows(tmp_path):
    summary, metrics = run(tmp_path, batch_size={"follow": "noise", "min": 8, "max": 32, "lr_scale": "sqrt"},
                           optimizer={"name": "sgd", "momentum": 0.9}, budget={"epochs": 8},
                           noise={"every": 0.25, "batch_size": 512, "small_batch_size": 32})
    measured = metrics[metrics["noise_b_simple"].notna()]
    current, expected = 8, [(0, 8)]
    for row in measured.itertuples():
        if row.step == 0:
            continue  # it starts at min
        wanted = min(32, max(8, 2 ** int(math.log2(row.noise_b_simple)))) if row.noise_b_simple >= 1 else current
        if max(current, wanted) != current:
            current = max(current, wanted)
            expected.append((row.step, current))
        assert row.batch_size == current
    got = [(c["step"], c["batch_size"]) for c in summary["batch_changes"]]
    assert got == expected
    assert [b for _, b in got] == sorted(b for _, b in got) and got[-1][1] == 32  # grew to max, never past it
    assert measured["noise_b_simple"].max() > 64  # the measurement asked for more than max: clamped
    assert summary["trial_id"].startswith("bsnoise0008to0032-")
    assert summary["budget_steps"] == summary["steps"] and summary["examples"] >= 8 * summary["train_size"]


@pytest.mark.parametrize("steps", [50, 90, 91])
def test_follow_noise_with_no_measurement_in_its_budget_is_one_line(tmp_path, steps):
    """It trained at its min throughout without a word. A measurement after the last step moves nothing: 90 steps
    of 8 measure after step 90 (720 examples), the last; 91 after step 90, with a step left to train at."""
    from batchlab.data import load_dataset

    cfg = {**BASE, "budget": {"steps": steps}, "noise": {"every": 0.5, "batch_size": 512, "small_batch_size": 32},
           "batch_size": {"follow": "noise", "min": 8, "max": 32}}
    n = len(load_dataset(batchlab.load_config(cfg).dataset, 0).train)
    every = round(0.5 * n)  # examples between measurements
    config = tmp_path / "follow.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--quiet"])
    if (steps - 1) * 8 >= every:
        assert result.exit_code == 0, result.output
        [trial] = (tmp_path / "runs" / "bs" / "trials").iterdir()
        metrics = pd.read_csv(trial / "metrics.csv")
        measured = metrics[metrics["noise_b_simple"].notna() & metrics["step"].between(1, steps - 1)]
        assert len(measured) >= 1 and measured["examples"].min() >= every  # one it can move at
        return
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {config}, line ") and "Traceback" not in result.stderr
    assert (f"noise.every: a measurement every 0.5 epochs ({every:,} examples), but the budget trains on "
            f"{(steps - 1) * 8:,} before its last step at the batch size's min (8)") in line
    assert line.endswith("so it would never move; lower noise.every or lengthen the budget")
    line_no = int(line.split(", line ")[1].split(":")[0])
    assert "every" in config.read_text().splitlines()[line_no - 1]
    assert not (tmp_path / "runs" / "bs").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_schedule_whose_change_lies_past_the_budget_is_one_line(tmp_path, dry_run):
    """It trained at 16 throughout without a word, and the report then recommended "16→64"; as follow: noise that
    would never move, it is refused before anything is written, and by a dry run (a budget in the schedule's unit
    needs no data)."""
    from batchlab.data import load_dataset

    cfg = {**BASE, "budget": {"examples": 3000},
           "sweep": {"batch_size": [32, {"schedule": [[0, 16], [1000000, 64]]}]}}
    config = tmp_path / "past.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--quiet",
                                 *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    n = len(load_dataset(batchlab.load_config(cfg).dataset, 0).train)
    examples, _ = simulate([[0, 16]], n, 200)
    trains = ("the budget trains on 3,000 examples" if dry_run else
              f"the budget of 3,000 examples trains on {max(e for e in examples if e < 3000):,} examples before its "
              "last step")
    line_no = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "batch_size:" in text)
    assert line == (f"error: {config}, line {line_no}: sweep.batch_size: {trains}, and the schedule's change to 64 at "
                    "1,000,000 examples is past it: the batch size would stay 16 throughout; move the change earlier "
                    "or lengthen the budget")
    assert not (tmp_path / "runs").exists()


def test_a_change_past_a_budget_in_epochs_is_found_once_the_data_is_loaded_and_in_steps_by_a_dry_run(tmp_path):
    cfg = {**BASE, "budget": {"epochs": 1}, "batch_size": {"schedule": [[0, 16], [100000, 64]]}}
    config = tmp_path / "past.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--dry-run"])
    assert plan.exit_code == 0, plan.output  # one epoch is a number of examples the data alone says
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"{config}, line " in result.stderr and ": batch_size: the budget of 1 epoch trains on " in result.stderr
    assert not list((tmp_path / "runs").glob("bs/trials/*"))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--dry-run", "--set",
                                 "budget.steps=1000", "--set", "sweep.budget.steps=[3, 1000]"])  # named at the axis
    # whose value is too short
    assert result.exit_code == 2
    assert ("sweep.budget.steps: the budget of 3 steps trains on at most 32 examples before its last step, and the "
            "schedule's change to 64 at 100,000 examples is past it") in result.stderr  # 2 steps of 16 before it


@pytest.mark.parametrize("unit, change, most", [("examples", 500, 9 * 16), ("tokens", 5000, 9 * 16 * 16)])
def test_a_dry_run_counts_a_budget_in_steps_step_by_step(tmp_path, unit, change, most):
    """10 steps at 16 start their last at 144 examples (2,304 tokens of 16): a change at 500 (5,000 tokens) is past
    it. The dry run bounded it by 9 x the largest batch (576), so passed it, and skipped a schedule in tokens."""
    cfg = {"name": "steps", "dataset": {"name": "chars", "context": 16}, "budget": {"steps": 10},
           "model": {"name": "gpt", "args": {"n_layer": 1, "n_head": 2, "n_embd": 16}},
           "batch_size": {"schedule": [[0, 16], [change, 64]], "unit": unit}}
    config = tmp_path / "steps.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 2
    assert (f"batch_size: the budget of 10 steps trains on at most {most:,} {unit} before its last step, and the "
            f"schedule's change to 64 at {change:,} {unit} is past it") in result.stderr


def test_a_schedule_whose_later_changes_lie_past_the_budget_is_warned_about_once(tmp_path):
    """It still changes, so it runs; but it never trains at its last batch size, which its label names."""
    cfg = {**BASE, "budget": {"examples": 3000}, "sweep": {"seed": [0, 1], "batch_size": [
        {"schedule": [[0, 16], [1000, 32], [5000, 64], [9000, 128]]}]}}
    config = tmp_path / "late.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 0, result.output
    line_no = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "batch_size:" in text)
    assert [x for x in result.stderr.splitlines() if "past it" in x] == [
        f"warning: {config}, line {line_no}: sweep.batch_size: the budget trains on 3,000 examples, and the schedule's "
        "changes to 64 at 5,000 and to 128 at 9,000 examples are past it: it trains at 16→32 only; move them earlier "
        "or lengthen the budget"]
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--no-time-steps"])
    assert result.exit_code == 0, result.output  # once for its two seeds, as the data says it
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "bs" / "trials").glob("*/summary.json")]
    assert len(summaries) == 2 and {s["batch_changes"][-1]["batch_size"] for s in summaries} == {32}
    examples, _ = simulate([[0, 16], [1000, 32]], summaries[0]["train_size"], 400)
    last = max(e for e in examples if e < 3000)
    assert [x for x in result.stderr.splitlines() if "past it" in x] == [
        f"warning: {config}, line {line_no}: sweep.batch_size: "
        f"the budget of 3,000 examples trains on {last:,} examples before its last step, and the schedule's changes "
        "to 64 at 5,000 and to 128 at 9,000 examples are past it: it trains at 16→32 only; move them earlier or "
        "lengthen the budget"]


def test_a_smoke_run_of_a_points_schedule_changes_within_its_steps(tmp_path):
    """--smoke trains 3 steps, short of any real schedule's change (refused as past the budget): its changes are
    moved within its first step, so the batch size changes, to the schedule's last, as the wiring is proven."""
    config = tmp_path / "smoke.yaml"
    for update, sizes in (({"batch_size": {"schedule": POINTS}}, (32, 256)),  # 512: the smoke run's 256 examples
                          ({"sweep": {"batch_size": [{"schedule": [[0, 8], [2000, 16]], "lr_scale": "linear"}]}},
                           (8, 16))):
        config.write_text(yaml.safe_dump({**BASE, **update}))
        result = runner.invoke(app, ["sweep", str(config), "--smoke", "--out", str(tmp_path / "runs"), "--quiet",
                                     "--restart"])
        assert result.exit_code == 0 and result.stderr == "", result.output
        [trial] = (tmp_path / "runs" / "bs-smoke" / "trials").iterdir()
        summary = json.loads((trial / "summary.json").read_text())
        assert [(c["step"], c["batch_size"]) for c in summary["batch_changes"]] == [(0, sizes[0]), (1, sizes[1])]


def test_a_dry_run_names_each_schedule_by_its_label(tmp_path):
    """The plan showed the schedule's dict, a fractional point as a string ('100.5')."""
    cfg = {**BASE, "noise": {"every": 0.25},
           "sweep": {"batch_size": [64, {"schedule": [[0, 16], [100.5, 64]], "lr_scale": "sqrt"},
                                    {"schedule": [[0, 16], [512, 64]], "unit": "tokens"},
                                    {"follow": "noise", "min": 8, "max": 64}]}}
    config = tmp_path / "plan.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2  # tokens on digits: refused, so the plan is shown without that schedule
    del cfg["sweep"]["batch_size"][2]
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert any(r.split()[0].startswith("bs0064-") and r.split()[1] == "64" for r in rows)
    assert any("16→64 at 100.5 examples (lr sqrt)" in r for r in rows)
    assert any("noise 8→64 (lr none)" in r for r in rows)
    assert "{" not in result.output and "'100.5'" not in result.output
    assert rows[-1].startswith("3 trials, 3 to run; records in ")
    cfg["sweep"]["noise"] = [{"every": 0.25, "batch_size": 512, "small_batch_size": 32}]  # a mapping, no schedule
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "'small_batch_size': 32" in result.output, result.output


def test_a_dry_run_labels_a_schedule_with_the_lr_scale_it_trains_with(tmp_path):
    """A schedule with no lr_scale of its own takes the lr rule's (sqrt here): the plan read the axis value as
    written and said `lr none` for both, though the first moves its lr 0.05 -> 0.1 at the change."""
    cfg = {**BASE, "sweep": {"lr": {"base": 0.05, "base_batch_size": 16, "scale": "sqrt"}}}
    config = tmp_path / "sch.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--dry-run", "--out", str(tmp_path / "runs"), "--set",
                                 "sweep.batch_size=[{schedule: [[0, 16], [2e3, 64]]}, "
                                 "{schedule: [[0, 16], [2000, 64]], lr_scale: none}, 6.4e1]"])
    assert result.exit_code == 0, result.output
    labels = [line.split("1.0 ", 1)[1].rsplit(" pending", 1)[0].strip() for line in result.output.splitlines()[1:4]]
    assert labels == ["16→64 at 2000 examples (lr sqrt)", "16→64 at 2000 examples (lr none)", "64"]


def test_a_smoke_run_measures_after_every_step_under_a_noise_axis_too(tmp_path):
    cfg = {**BASE, "noise": {"every": 0.25}, "batch_size": {"follow": "noise", "min": 8, "max": 32},
           "sweep": {"noise": [{"every": 0.5, "batch_size": 512, "small_batch_size": 32}]}}
    config = tmp_path / "follow.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--smoke", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    [trial] = (tmp_path / "runs" / "bs-smoke" / "trials").iterdir()
    assert pd.read_csv(trial / "metrics.csv")["noise_b_simple"].notna().sum() == 4  # at step 0 and after each


def test_a_smoke_run_of_follow_noise_measures_after_every_step_so_it_can_move(tmp_path):
    """--smoke trains 3 steps: noise.every of a real run (0.25 epoch) fell past them, which the check above
    refused; a smoke run measures after every step instead (a noise.every axis too), and the batch size moves."""
    cfg = {**BASE, "noise": {"every": 0.25, "batch_size": 512, "small_batch_size": 32},
           "batch_size": {"follow": "noise", "min": 8, "max": 32},
           "sweep": {"noise.every": [0.25, 0.5]}}
    config = tmp_path / "follow.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(config), "--smoke", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    [trial] = (tmp_path / "runs" / "bs-smoke" / "trials").iterdir()  # the noise.every axis is a smoke run's
    summary = json.loads((trial / "summary.json").read_text())
    metrics = pd.read_csv(trial / "metrics.csv")
    assert summary["steps"] == 3 and metrics["noise_b_simple"].notna().sum() == 4  # at step 0 and after each step
    assert len(summary["batch_changes"]) > 1 or metrics["noise_b_simple"].iloc[1:-1].max() < 16


def test_a_sweep_axis_mixes_constant_and_scheduled_batch_sizes_under_an_lr_rule():
    cfg = batchlab.load_config({**BASE, "sweep": {
        "batch_size": [64, {"schedule": [[0, 32], [500, 128]]}, {"schedule": [[0, 16], [500, 64]], "lr_scale": "none"}],
        "lr": {"base": 0.1, "base_batch_size": 64, "scale": "sqrt"}}})
    constant, scheduled, own_scale = expand(cfg)
    assert constant.config.batch_schedule is None and constant.config.lr == pytest.approx(0.1)
    assert scheduled.config.batch_size == 32 and scheduled.config.lr == pytest.approx(0.1 * math.sqrt(32 / 64))
    assert scheduled.config.batch_schedule.lr_scale == "sqrt"  # the rule's scale, filled in
    assert own_scale.config.batch_schedule.lr_scale == "none"  # one given is kept
    assert scheduled.id.startswith("bs0032to0128-lr0.0707107-s0-") and own_scale.id.startswith("bs0016to0064-")
    assert batchlab.load_config(scheduled.config.model_dump(mode="json")) == scheduled.config  # a dump round-trips


def test_a_schedule_from_python_overrides(tmp_path):
    cfg = batchlab.load_config(BASE, {"batch_size": {"schedule": [[0, 32], [20000, 128]]}})
    assert (cfg.batch_size, cfg.batch_schedule.at(19999), cfg.batch_schedule.at(20000)) == (32, 32, 128)
    again = batchlab.load_config(cfg, ["batch_size=64"])  # an int replaces the schedule
    assert (again.batch_size, again.batch_schedule) == (64, None)
    axis = batchlab.load_config(BASE, {"sweep.batch_size": [64, {"schedule": [[0, 16], [4000, 256]]}]})
    assert [(t.config.batch_size, label(batches.as_json(t.config.batch_schedule))) for t in expand(axis)] == \
        [(64, ""), (16, "16→256")]


# Writes one checkpoint, at step CHECKPOINT_AT, and kills itself right after the metrics row of step KILL_AT.
KILLED_RUN = """
import os, signal, sys
import batchlab.checkpoint, batchlab.records
from batchlab.cli import main
CHECKPOINT_AT, KILL_AT = int(sys.argv.pop(1)), int(sys.argv.pop(1))
save = batchlab.checkpoint.Checkpoints.save
def save_once(self, model, step, noise, summary, *args):
    if summary.steps == CHECKPOINT_AT:
        save(self, model, step, noise, summary, *args)
batchlab.checkpoint.Checkpoints.due = lambda self, seconds: True
batchlab.checkpoint.Checkpoints.save = save_once
write = batchlab.records.MetricsWriter.write
def write_then_die(self, row):
    write(self, row)
    if row["step"] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
batchlab.records.MetricsWriter.write = write_then_die
sys.argv = ["batchlab"] + sys.argv[1:]
main()
"""
RESUMED = {**BASE, "optimizer": {"name": "sgd", "momentum": 0.9}, "schedule": {"name": "cosine", "warmup_epochs": 0.5},
           "model": {"name": "mlp", "hidden": [32], "activation": "tanh"}, "checkpoint": {"every": 1e-6},
           "noise": {"every": 0.25, "batch_size": 256, "small_batch_size": 32}}


@pytest.mark.parametrize("batch_size, checkpoint_at, kill_at", [
    ({"schedule": [[0, 32], [1000, 128], [1700, 64]], "lr_scale": "sqrt"}, 27, 40),  # changes at 32 and 39
    ({"follow": "noise", "min": 8, "max": 64, "lr_scale": "linear"}, 36, 57),  # changes at 45 and 136
    ({"follow": "noise", "min": 8, "max": 64, "lr_scale": "linear"}, 57, 140),  # after one change, before the next
], ids=["points", "follow-noise", "follow-noise-after-a-change"])
def test_a_checkpoint_taken_before_a_change_resumes_bit_identically_across_it(tmp_path, batch_size, checkpoint_at,
                                                                              kill_at):
    config = tmp_path / "bs.yaml"
    config.write_text(yaml.safe_dump({**RESUMED, "batch_size": batch_size}))

    def sweep(out: str, killed: bool = False):
        code = ["-c", KILLED_RUN, str(checkpoint_at), str(kill_at)] if killed else ["-m", "batchlab"]
        return subprocess.run([sys.executable, *code, "sweep", str(config), "--out", str(tmp_path / out), "--quiet"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    assert sweep("whole").returncode == 0
    assert sweep("resumed", killed=True).returncode == -9
    [trial] = (tmp_path / "resumed" / "bs" / "trials").iterdir()
    assert (trial / "checkpoint.pt").exists()
    assert sweep("resumed").returncode == 0
    summary = json.loads((trial / "summary.json").read_text())
    [reference] = (tmp_path / "whole" / "bs" / "trials").iterdir()
    expected = json.loads((reference / "summary.json").read_text())
    assert summary["resumed_from"] == [checkpoint_at]
    changed = [c["step"] for c in summary["batch_changes"]]
    assert any(checkpoint_at < step <= kill_at for step in changed)  # a change between checkpoint and kill
    assert summary["batch_changes"] == expected["batch_changes"] and summary["final"] == expected["final"]
    got = pd.read_csv(trial / "metrics.csv").drop(columns="train_seconds")
    want = pd.read_csv(reference / "metrics.csv").drop(columns="train_seconds")
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("batch_size, expected", [
    ({"schedule": [[0, 32], [100, 64], [100, 128]]}, "batch_size: progress must be strictly increasing, got 100 after 100"),
    ({"schedule": [[0, 32], [100, 0]]}, "batch_size: schedule point 2: the batch size must be a whole number >= 1, got 0"),
    ({"schedule": [[0, 32.5]]}, "batch_size: schedule point 1: the batch size must be a whole number >= 1, got 32.5"),
    ({"schedule": [[10, 32]]}, "batch_size: the first point must be at progress 0, got 10"),
    ({"follow": "noise", "min": 16, "max": 1024}, "batch_size: follow: noise needs noise.every"),
    ({"follow": "noise", "min": 64, "max": 16}, "batch_size: min (64) must not exceed max (16)"),
    ({"schedule": []}, "batch_size: schedule: give at least one [progress, batch size] point, e.g. [[0, 32], "),
    ({"schedule": [[0, 16, 3], [10, 32]]}, "batch_size: schedule point 1: expected [progress, batch size], got "
                                           "[0, 16, 3]"),
    ({"schedule": [[0, 16], 7]}, "batch_size: schedule point 2: expected [progress, batch size], got 7"),
    ({"schedule": [[0, 16], [10, True]]}, "batch_size: schedule point 2: expected a number, got the boolean true"),
    ({"schedule": [[0, 16], [float("inf"), 32]]}, "batch_size: schedule point 2: the progress must be a finite number "
                                                   ">= 0, got inf"),  # one message, not one per int | float
    ({"schedule": [[0, 16], ["a", 32]]}, "batch_size: schedule point 2: the progress must be a finite number >= 0, "
                                         "got 'a'"),
    ({"schedule": [[0, 16]], "follow": "noise"}, "batch_size: give schedule (batch sizes at given points) or follow "
                                                 "(the measured noise scale), not both"),
])
def test_bad_schedules_are_one_line(tmp_path, batch_size, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**BASE, "batch_size": batch_size}))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert expected in lines[0] and f"{config}, line " in lines[0]
    assert lines[0].count("schedule point") == expected.count("schedule point")  # each problem said once
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("update, expected", [
    ({"batch_size": {"schedule": [[0, 16], [500, 64]], "unit": "tokens"}},
     "batch_size: counted in tokens, but digits is not a sequence task (its examples have no tokens)"),
    ({"budget": {"tokens": 1000}}, "budget.tokens: counted in tokens, but digits is not a sequence task"),
    ({"sweep": {"batch_size": [32, {"schedule": [[0, 16], [500, 64]], "unit": "tokens"}]}},  # named at the axis
     "sweep.batch_size: counted in tokens, but digits is not a sequence task"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_tokens_where_the_data_has_none_are_one_line_before_training(tmp_path, update, expected, dry_run):
    """They were counted as examples without a word; a dry run (no data loaded) let them pass."""
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**BASE, **update}))
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--quiet",
                                 *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert expected in line and f"{config}, line " in line and "Traceback" not in result.stderr
    key = expected.split(":")[0].split(".")[-1]  # the line the key is on
    line_no = int(line.split(", line ")[1].split(":")[0])
    assert key in config.read_text().splitlines()[line_no - 1]
    assert not list((tmp_path / "runs" / "bs").glob("trials/*"))  # nothing trained


def test_a_schedule_in_tokens_on_a_sequence_task(tmp_path):
    """unit: tokens counts examples x context; a budget in tokens ends at the first step past it."""
    seq = {"name": "seq", "dataset": {"name": "seq_parts:successor", "args": {"n": 256, "context": 8, "vocab": 11}},
           "model": {"name": "seq_parts:TokenLM"}, "optimizer": {"name": "adam"}, "lr": 0.05, "threads": 1,
           "batch_size": {"schedule": [[0, 8], [512, 32]], "unit": "tokens"}, "budget": {"tokens": 4096},
           "eval": {"every": 0.5, "log_every": 0.125, "train_subset": 0}}
    [summary] = batchlab.sweep(seq, out=tmp_path / "runs", time_steps=False).summaries
    n, context = summary["train_size"], 8
    examples, sizes = simulate([[0, 8], [512 // context, 32]], n, 200)  # 512 tokens = 64 examples
    steps = next(s for s, e in enumerate(examples) if e * context >= 4096)
    assert (summary["steps"], summary["tokens"], summary["budget_steps"]) == (steps, examples[steps] * context, steps)
    first = sizes.index(32) + 1
    assert summary["batch_changes"][1] == {"step": first - 1, "examples": examples[first - 1],
                                           "tokens": examples[first - 1] * context, "batch_size": 32,
                                           "lr": 0.05}
