"""`batchlab cbs`: the critical batch size by branching, against a problem whose critical batch is known in
closed form; the recommended schedule; the files and their consistency; bad input as one line."""

import csv
import re
import json
from pathlib import Path
import math

import numpy as np
import pytest
import torch
import yaml
from scipy.optimize import brentq, least_squares
from typer.testing import CliRunner

import batchlab
from batchlab.cli import app
from batchlab.critical_batch import branching
from batchlab.recommend import recommend, yaml_line

runner = CliRunner()

D, SIGMA, N = 62, 0.1, 20_000  # B_noise ~ d + 2 ~ 64 while the excess loss is well above sigma^2


def regression():
    """y = w*.x + sigma xi, x ~ N(0, I_d), |w*| = 1."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(D)
    w /= np.linalg.norm(w)
    x = rng.standard_normal((2 * N, D)).astype(np.float32)
    y = (x @ w + SIGMA * rng.standard_normal(2 * N)).astype(np.float32)
    return {"x_train": x[:N], "y_train": y[:N], "x_test": x[N:], "y_test": y[N:]}


def test_branching_recovers_the_critical_batch_of_linear_regression(tmp_path):
    """The built-in linear model (weights w and a bias b, the true bias 0), MSE loss (the mean of squared
    errors), plain SGD. With D2 = |w - w*|^2 + b^2 the excess loss over sigma^2, and per-example gradients
    g = 2 r (x, 1), r = (w - w*).x + b - sigma xi: G = 2 (w - w*, b), |G|^2 = 4 D2, and (Gaussian fourth
    moments) tr(Sigma) = 4 [(d + 2)|w - w*|^2 + d b^2 + (d + 1) sigma^2]. The Hessian is 2 I, so
    B_noise = B_simple = tr(Sigma) / |G|^2, between d + (d + 1) sigma^2 / D2 and d + 2 + (d + 1) sigma^2 / D2.
    One SGD step at lr eta multiplies the expected D2 by 1 - 4 eta + 4 eta^2 (1 + B_noise / B), least at
    eta = 1 / (2 (1 + B_noise / B)): by B_noise / (B + B_noise). So reaching a level takes
    S(B) = log(D2 / D2*) / log(1 + B / B_noise) steps, E(B) = B S(B) examples, E_min = log(D2 / D2*) B_noise as
    B -> 0, and E(B) = 2 E_min at B = u B_noise, u solving u / log(1 + u) = 2 (u ~ 2.5): the critical batch,
    in closed form, whatever the window. The branching CBS (the fit) and the largest batch within tolerance
    must both be within a factor of 2 of it (the lr search moves in factors of 2, B_noise rises a little over
    the window as sigma^2 begins to count, and the ladder itself is a factor of 2 apart)."""
    cfg = {"name": "synthetic", "model": {"name": "linear"}, "batch_size": 8, "lr": 0.01, "budget": {"steps": 1},
           "threads": 1, "sweep": {"lr": [0.5 * 2 ** -k for k in range(7)]}}
    result = batchlab.cbs(cfg, out=tmp_path, dataset=regression, batch_sizes=[2 ** k for k in range(2, 10)],
                          points=1, window=256, eval_examples=4096)
    [point] = result.points
    d2 = point["loss"] - SIGMA ** 2  # the held-out excess loss at the point
    b_noise = (D + 1) * (1 + SIGMA ** 2 / d2)  # the middle of its bounds above (they are 2 apart, ~64)
    assert point["b_simple"] == pytest.approx(b_noise, rel=0.15)  # the monitor's machinery agrees
    u = brentq(lambda v: v / math.log1p(v) - 2, 0.1, 100)
    expected = u * b_noise
    assert expected / 2 <= point["cbs"] <= expected * 2, (point, expected)
    assert expected / 2 <= point["cbs_tolerance"] <= expected * 2, (point, expected)


def test_recommend_rounds_down_to_powers_of_two_and_never_decreases():
    points = [(1000, 20), (2000, 70), (4000, 50), (8000, 130), (16000, 600), (32000, 3000)]
    schedule = recommend(points, 16, 1024)
    # 70 then 50 break "never decreases": the monotone least-squares fit pools them at their mean, 60
    assert schedule == [[0, 16], [2000, 32], [8000, 128], [16000, 512], [32000, 1024]]
    assert all(b & (b - 1) == 0 for _, b in schedule)  # powers of 2
    assert [b for _, b in schedule] == sorted(b for _, b in schedule)
    assert [p for p, _ in schedule] == sorted({p for p, _ in schedule})
    assert recommend([(10, 40), (20, 63.9), (30, 64)], 1, 4096) == [[0, 32], [30, 64]]  # 64 crossed only at 30


def test_recommend_averages_one_high_point_with_the_lower_ones_after_it():
    # 1000 followed by 100, 100: pooled to (1000 + 100 + 100) / 3 = 400 from progress 2 on; a running maximum
    # would have put 512 there for the rest of training
    assert recommend([(1, 100), (2, 1000), (3, 100), (4, 100)], 1, 4096) == [[0, 64], [2, 256]]
    # the Fashion-MNIST measurement (README): half the largest batch within tolerance at six points
    tolerance = [(3840, 256), (7552, 512), (15104, 1024), (30080, 4096), (60128, 512), (120128, 2048)]
    halves = [(e, b / 2) for e, b in tolerance]  # (4096 + 512 + 2048) / 3 / 2 = 1109 from 30,080 on
    assert recommend(halves, 32, 4096) == [[0, 128], [7552, 256], [15104, 512], [30080, 1024]]


def test_recommend_clamps_skips_missing_values_and_refuses_what_it_cannot_do():
    assert recommend([(100, 3), (200, None), (300, math.nan), (400, 1e6)], 8, 300) == [[0, 8], [400, 256]]
    assert recommend([(0, 100), (50, 300)], 1, 1024) == [[0, 64], [50, 256]]
    assert recommend([(0, 100), (0, 300)], 1, 1024) == [[0, 128]]  # both at the start: their mean, 200
    for args in (([(1, 10)], 64, 32), ([(1, 10)], 0, 32), ([(1, 10)], 33, 63), ([(1, None)], 1, 64)):
        with pytest.raises(ValueError):
            recommend(*args)
    assert yaml_line([[0, 64], [12000, 256]]) == "batch_size: {schedule: [[0, 64], [12000, 256]]}"
    assert yaml.safe_load(yaml_line([[0, 64], [12000, 256]])) == {"batch_size": {"schedule": [[0, 64], [12000, 256]]}}


def test_a_point_where_the_smallest_batch_made_no_progress_has_no_cbs():
    from batchlab.critical_batch.analysis import critical

    def made(batch, curve):
        return {"batch_size": batch, "curve": curve, "loss_after_window": curve[-1][1],
                "examples_to_target": None}
    flat = [made(8, [[0, 1.0], [64, 1.01]]), made(32, [[0, 1.0], [64, 0.95]]), made(32, [[0, 1.0], [64, 0.9]])]
    for b in flat:  # as branches_at fills them in: the first evaluation at or below L* = 1.01, the start
        b["examples_to_target"] = 0.0
    found = critical(flat, 1.0)
    assert found["cbs_fit"] is None and found["cbs_tolerance"] is None and "longer window" in found["note"]
    assert [b["examples_to_target"] for b in flat] == [None, None, None]  # branches.csv agrees with cbs.json
    assert [b["best"] for b in flat] == [True, False, True]  # 32's best lr: the lower loss after the window
    falling = [made(8, [[0, 1.0], [64, 0.8]]), made(32, [[0, 1.0], [64, 0.9], [128, 0.7]]),
               made(128, [[0, 1.0], [128, 0.95], [256, 0.9]])]
    falling[0]["examples_to_target"], falling[1]["examples_to_target"] = 64.0, 96.0
    found = critical(falling, 1.0)
    assert found["target_loss"] == 0.8 and found["e_ref"] == 64.0 and found["cbs_tolerance"] == 32
    assert found["cbs_fit"] is None  # two batch sizes reached it: a fit needs three, and the note says so
    assert found["note"] == ("2 batch sizes of the ladder reached L* within their branches, a fit needs 3 (a longer "
                             "--window gives the larger ones room)")
    assert [b["best"] for b in falling] == [True, True, True]
    two = falling[:2]  # a ladder of two (--batch-sizes 8,32): no window makes a third batch size reach L*
    found = critical(two, 1.0)
    assert found["cbs_tolerance"] == 32 and found["cbs_fit"] is None
    assert found["note"] == ("2 batch sizes of the ladder reached L* within their branches, a fit needs 3 (the "
                             "ladder has 2: give more --batch-sizes)")



@pytest.mark.parametrize("examples, measured", [((64, 64, 64, 64), False), ((64, 65, 67, 71), False),
                                                ((64, 70, 90, 140), True)])
def test_a_cbs_far_above_the_ladder_is_not_a_measurement(examples, measured):
    """E_B = E_min (1 + B / B_crit): over 8-64, E_B grows by (1 + 64 / B_crit) / (1 + 8 / B_crit), under 1/4 for
    B_crit over 4 x 64 (here 1.0x and 1.1x the smallest batch's E_B: no CBS; 2.2x: measured)."""
    from batchlab.critical_batch.analysis import critical

    branches = [{"batch_size": b, "curve": [[0, 1.0], [e, 0.8]], "loss_after_window": 0.8, "examples_to_target": e}
                for b, e in zip((8, 16, 32, 64), examples)]
    found = critical(branches, 1.0)
    assert found["cbs_tolerance"] == max(b for b, e in zip((8, 16, 32, 64), examples) if e <= 2 * examples[0])
    if measured:
        assert found["cbs_fit"] == pytest.approx(fitted_b_crit([8, 16, 32, 64], list(examples)), rel=1e-3)
        assert found["cbs_fit"] <= 4 * 64 and found["note"] is None
    else:
        assert fitted_b_crit([8, 16, 32, 64], list(examples)) > 4 * 64  # the fit alone, written apart from the tool
        assert found["cbs_fit"] is None
        assert found["note"] == ("E_B grew by under 1/4 across the ladder: the critical batch lies above its largest "
                                 "batch, 64 (a ladder reaching higher measures it)")


TINY = {"name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
        "budget": {"epochs": 2}, "batch_size": 32, "threads": 1, "noise": {"batch_size": 256, "small_batch_size": 32},
        "sweep": {"lr": {"base": 0.2, "base_batch_size": 32, "scale": "sqrt", "factors": [0.5, 1, 2]}}}


def within_budget(schedule, budget):
    """A recommended schedule as a run of `budget` examples trains it: a change at its end never happens."""
    return [change for change in schedule if change[0] == 0 or change[0] < budget]


def crossing(curve, level):
    """First examples at which the loss is <= level, linear between evaluations (written apart from the tool's)."""
    e, loss = np.array(curve, dtype=float).T
    below = np.nonzero(loss <= level)[0]
    if not len(below):
        return None
    i = below[0]
    return e[0] if i == 0 else e[i - 1] + (loss[i - 1] - level) / (loss[i - 1] - loss[i]) * (e[i] - e[i - 1])


def fitted_b_crit(sizes, examples):
    """E_B = E_min (1 + B / B_crit), i.e. steps S = S_min + E_min / B, least squares on log S."""
    b, s = np.array(sizes, float), np.array(examples, float) / np.array(sizes, float)
    fit = least_squares(lambda p: np.log(p[0] + p[1] / b) - np.log(s), [s.min(), s.max() * b.min()],
                        bounds=([1e-12, 1e-12], [np.inf, np.inf]))
    return fit.x[1] / fit.x[0]


def test_the_cli_writes_consistent_files(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--points", "3",
                                 "--batch-sizes", "4,16,64,256", "--window", "384"])
    assert result.exit_code == 0, result.output
    where = tmp_path / "tiny" / "cbs"
    data = json.loads((where / "cbs.json").read_text())
    assert (where / "cbs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data["points"]) == 3 and len(data["branches"]) == 3 * 4 * 3  # points x ladder x factors
    # 2 epochs of digits' 1,437 training examples, 45 steps of 32 each (the 45th of 29): the last point is the
    # budget's end, not one step past it
    assert data["budget_examples"] == 2 * 1437 and data["points"][-1]["examples"] == 2 * 1437
    assert data["points"][-1]["steps"] == 2 * math.ceil(1437 / 32)
    assert data["lrs"]["64"] == pytest.approx([0.2 * math.sqrt(64 / 32) * f for f in (0.5, 1, 2)])  # the rule
    with open(where / "cbs.csv") as f:
        rows = list(csv.DictReader(f))
    for row, point in zip(rows, data["points"], strict=True):
        assert float(row["examples"]) == point["examples"]
        assert float(row["b_simple"]) == pytest.approx(point["b_simple"])
        assert str(point["examples"]) in result.output.replace(",", "")
        mine = [b for b in data["branches"] if b["point"] == point["point"]]
        level = min(b["loss_after_window"] for b in mine if b["batch_size"] == 4)
        assert point["target_loss"] == pytest.approx(level)
        if level >= point["loss"]:  # no progress at the smallest batch: nothing to measure
            assert point["cbs"] is None and point["cbs_tolerance"] is None and "longer window" in point["note"]
            continue
        best = {}
        for b in mine:
            e = crossing(b["curve"], level)
            e = None if e is None else max(e, b["batch_size"])
            assert b["examples_to_target"] == pytest.approx(e)
            if e is not None and e < best.get(b["batch_size"], math.inf):
                best[b["batch_size"]] = e
        assert {int(k): v for k, v in point["examples_by_batch"].items() if v is not None} == pytest.approx(best)
        e_ref = best[4]
        assert point["cbs_tolerance"] == max(b for b, e in best.items() if e <= 2 * e_ref)
        if len(best) >= 3:
            assert point["cbs"] == pytest.approx(fitted_b_crit(list(best), list(best.values())), rel=1e-3)
            assert point["ratio"] == pytest.approx(point["cbs"] / point["b_simple"])
        else:
            assert point["cbs"] is None
    values = [(p["examples"], p["cbs"]) for p in data["points"]]
    if any(v for _, v in values):
        assert data["schedule"] == within_budget(recommend(values, 4, 256), data["budget_examples"])
        assert (data["schedule_line"] or "no schedule recommended: ") in result.output
    else:
        assert data["schedule"] is None and f"no schedule recommended: {data['schedule_note']}" in result.output
    assert data["reference_seconds"] > 0
    assert data["branch_seconds"] == pytest.approx(sum(b["train_seconds"] for b in data["branches"]))
    assert "cost: reference" in result.output


def test_the_schedule_from_a_fraction_of_the_largest_batch_within_tolerance(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--points", "3", "--batch-sizes",
                                 "4,16,64,256", "--window", "384", "--by", "tolerance", "--fraction", "0.5"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "tiny" / "cbs" / "cbs.json").read_text())
    assert data["by"] == "tolerance" and data["fraction"] == 0.5
    halves = [(p["examples"], p["cbs_tolerance"] / 2 if p["cbs_tolerance"] else None) for p in data["points"]]
    assert any(v for _, v in halves), data["points"]
    assert data["schedule"] == recommend(halves, 4, 256)
    # this tiny run's halves stay below 8: one batch size throughout, said to be no schedule (a schedule printed as
    # one: test_a_growing_measure_is_recommended_and_printed_as_a_schedule)
    assert len(data["schedule"]) == 1 and data["schedule_line"] is None
    assert f"no schedule recommended: the measured batch gives {data['schedule'][0][1]} at every" in result.output


def test_noise_only_and_an_interruption_keep_what_was_measured(tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    noise = batchlab.cbs(config, out=tmp_path, source="noise", points=4)
    assert noise.branches == [] and len(noise.points) == 4
    assert noise.schedule == within_budget(recommend([(p["examples"], p["b_simple"]) for p in noise.points], 8, 256),
                                           noise.budget_examples)
    assert Path(noise.path) == tmp_path / "tiny" / "cbs-noise"  # apart from the branching's files, never over them
    assert json.loads((Path(noise.path) / "cbs.json").read_text())["source"] == "noise"

    real, calls = branching.branch, []

    def interrupted(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr("batchlab.critical_batch.branch", interrupted)
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--points", "2",
                                 "--batch-sizes", "8,32,128", "--window", "256"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1].startswith("error: interrupted: what was measured so far is in")
    data = json.loads((tmp_path / "tiny" / "cbs" / "cbs.json").read_text())
    assert data["interrupted"] and len(data["branches"]) == 5 and len(data["points"]) == 2
    assert json.loads((tmp_path / "tiny" / "cbs-noise" / "cbs.json").read_text())["points"] == json.loads(
        json.dumps(noise.to_dict(), default=str))["points"]  # the noise-only files are still there, unchanged


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "8,x"], "--batch-sizes '8,x': expected comma-separated batch sizes"),
    (["--batch-sizes", "8,0"], "--batch-sizes '8,0': expected comma-separated batch sizes"),
    (["--batch-sizes", "32"], "--batch-sizes 32: branching compares batch sizes, give at least two"),
    (["--batch-sizes", "8,5000"], "--batch-sizes 8,5000: each must be from 1 to the training set's 1,437 examples"),
    (["--window", "100000"], "--window 100000: longer than both the reference run's budget"),
    (["--window", "100000"], "or a budget that holds it (--set budget.epochs=70)"),  # 100,000 / 1,437 examples
    (["--window", "10", "--batch-sizes", "8,256"], "--window 10: the largest batch of the ladder (256) takes no step"),
    (["--from", "magic"], "--from 'magic': choose from branching, noise"),
    (["--tolerance", "0"], "--tolerance 0.0: expected a number above 0"),
    (["--tolerance", "nan"], "--tolerance nan: expected a number above 0"),
    (["--by", "median"], "--by 'median': choose from fit, tolerance"),
    (["--fraction", "0"], "--fraction 0.0: expected a number above 0, at most 1"),
    (["--fraction", "2"], "--fraction 2.0: expected a number above 0, at most 1"),
    (["--min-batch", "64", "--max-batch", "16"], "--min-batch 64: above --max-batch 16"),
    (["--from", "noise", "--by", "tolerance"], "--by 'tolerance': only with --from branching; --from noise measures B_simple"),
    (["--from", "noise", "--window", "64", "--tolerance", "0.5"], "--window, --tolerance: only with --from branching"),
    (["--points", "0"], "Invalid value for '--points'"),
    (["--set", "budget={tokens: 3000}"], "budget.tokens: counted in tokens, but digits is not a sequence task"),
    (["--set", "batch_size=5000"], "batch_size: 5000 is larger than the training set (1,437 examples)"),
    (["--set", "batch_size={schedule: [[0, 32], [500, 64]]}"], "batch_size: a schedule; the reference run needs a "
                                                               "constant batch size (e.g. --set batch_size=32)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("unit", ["epochs", "steps"])
def test_a_window_longer_than_the_budget_suggests_a_budget_that_holds_it(unit, drop_last):
    """The hint, taken, is accepted: the budget counts each epoch's short last batch, and so does the hint."""
    import re

    from batchlab.critical_batch import plan
    from batchlab.errors import ConfigError
    from batchlab.schema import Experiment

    cfg = Experiment.model_validate({**TINY, "drop_last": drop_last, "budget": {unit: 1}})
    with pytest.raises(ConfigError, match="or a budget that holds it") as refused:
        plan(cfg, 1437, [8, 32], 3, 2880, 1.0)
    amount = int(re.search(rf"'budget\.{unit}=(\d+)'", str(refused.value)).group(1))
    longer = Experiment.model_validate({**TINY, "drop_last": drop_last, "budget": {unit: amount}})
    setup = plan(longer, 1437, [8, 32], 3, 2880, 1.0)
    assert setup.budget_examples >= 2880
    if amount > 1:  # the least that holds it: one less does not
        shorter = Experiment.model_validate({**TINY, "drop_last": drop_last, "budget": {unit: amount - 1}})
        with pytest.raises(ConfigError, match="or a budget that holds it"):
            plan(shorter, 1437, [8, 32], 3, 2880, 1.0)


def recording_parts(update: dict) -> tuple[branching.Parts, list]:
    """Branching's parts for a small MLP on digits (`update`d), and the list every training batch is added to."""
    from batchlab.data import load_dataset
    from batchlab.schema import Experiment

    cfg = Experiment.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]},
                                     "lr": 0.01, "threads": 1, **update})
    parts = branching.Parts(cfg, load_dataset(cfg.dataset, 0), torch.device("cpu"), 64, 2)
    seen = []

    def recording(step):
        def train(x, y):
            seen.append(x.clone())
            return step(x, y)
        return train

    make_step = parts.step
    parts.step = lambda *a: recording(make_step(*a))
    return parts, seen


def test_a_branch_goes_on_with_the_examples_the_reference_would_train_on_next():
    """A point kept 24 examples into an epoch (3 steps of 8): a branch at 16 must start with examples 24-39 of
    that epoch's order, as the reference's own next two steps do, not at 16 (24 // 16 whole batches of 16)."""
    parts, seen = recording_parts({"batch_size": 8, "budget": {"steps": 10}})
    [point, _], _ = branching.reference(parts, [24, 40], 10)
    reference_next = torch.cat(seen[3:5])  # the reference's steps 4 and 5: examples 24-39 of the epoch
    seen.clear()
    branching.branch(parts, point, 16, 0.01, window=16, longest=16, evals=1, target=None)
    assert point.epoch_position == 24
    assert torch.equal(seen[0], reference_next)


@pytest.mark.parametrize("measured, expected", [
    ([5.3, None, 6.0], "the measured batch gives 8 at every point measured (2 of 3; the schedule is held to 8-256)"),
    ([900.0, 2000.0, 5000.0], "the measured batch gives 256 at every point measured (3 of 3;"),
])
def test_one_batch_size_throughout_is_no_schedule(measured, expected):
    """A 'schedule' of one point is a constant batch size: cbs says so instead of printing it as a schedule."""
    from types import SimpleNamespace

    from batchlab.critical_batch import Cbs, finish

    result = Cbs("tiny", "noise", 32, 0.1, 0, [8, 32, 256], {}, 100, 1.0, 10_000, None)
    result.points = [{"examples": e, "b_simple": v} for e, v in zip((1000, 3000, 9000), measured)]
    finish(result, SimpleNamespace(ladder=[8, 32, 256]), None, None)
    assert result.schedule_line is None and result.schedule_note.startswith(expected)
    assert result.schedule_note.endswith("a constant batch size, not a schedule")


def test_a_growing_measure_is_recommended_and_printed_as_a_schedule(capsys):
    from types import SimpleNamespace

    from batchlab.cli.cbs import show_table
    from batchlab.critical_batch import Cbs, finish

    result = Cbs("tiny", "noise", 32, 0.1, 0, [8, 32, 256], {}, 100, 1.0, 10_000, None)
    result.points = [{"point": i, "examples": e, "loss": 1.0, "b_simple": v}
                     for i, (e, v) in enumerate(zip((1000, 3000, 9000), (9.0, 40.0, 300.0)))]
    finish(result, SimpleNamespace(ladder=[8, 32, 256]), None, None)
    assert result.schedule == recommend([(1000, 9.0), (3000, 40.0), (9000, 300.0)], 8, 256) == [[0, 8], [3000, 32],
                                                                                              [9000, 256]]
    show_table(result)
    assert ("recommended schedule (from B_simple): batch_size: {schedule: [[0, 8], [3000, 32], [9000, 256]]}"
            in capsys.readouterr().out)


def test_a_late_change_at_the_budgets_end_is_left_out_and_said(capsys):
    """The last point lies at the budget's end: a change measured there never happens in a run of that budget."""
    from types import SimpleNamespace

    from batchlab.cli.cbs import show_table
    from batchlab.critical_batch import Cbs, finish

    result = Cbs("tiny", "noise", 32, 0.1, 0, [8, 32, 256], {}, 100, 1.0, 9000, None)
    result.points = [{"point": i, "examples": e, "loss": 1.0, "b_simple": v}
                     for i, (e, v) in enumerate(zip((1000, 3000, 9000), (9.0, 40.0, 300.0)))]
    finish(result, SimpleNamespace(ladder=[8, 32, 256]), None, None)
    assert result.schedule == [[0, 8], [3000, 32]] and result.schedule_late == [[9000, 256]]
    show_table(result)
    out = capsys.readouterr().out
    assert "recommended schedule (from B_simple): batch_size: {schedule: [[0, 8], [3000, 32]]}" in out
    assert "left out: batch 256 from 9,000 examples, measured at the budget's end" in out


BOOM = '''import torch


class Boom(torch.nn.Module):
    """Trains at batches of up to LIMIT examples, raises as a GPU out of memory does above."""
    LIMIT = 100

    def __init__(self, input_shape=None, num_classes=10):
        super().__init__()
        self.lin = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        if self.training and len(x) > self.LIMIT:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.lin(x.flatten(1))


class Always(Boom):
    LIMIT = 0


class Silent(Boom):
    def forward(self, x):
        if self.training:
            raise RuntimeError()  # no message: the line ends with its type
        return super().forward(x)
'''


def test_a_branch_that_raises_fails_that_branch_not_the_measurement(tmp_path):
    (tmp_path / "boom.py").write_text(BOOM)
    config = tmp_path / "boom.yaml"
    config.write_text(yaml.safe_dump({**TINY, "name": "boom", "model": {"name": "boom:Boom"}}))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--points", "2",
                                 "--batch-sizes", "8,16,32,128", "--window", "256"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "boom" / "cbs" / "cbs.json").read_text())
    failed = [b for b in data["branches"] if b["error"]]
    assert {b["batch_size"] for b in failed} == {128} and len(failed) == 2 * 3  # points x the rule's factors
    assert all(b["error"].startswith("OutOfMemoryError: CUDA out of memory") for b in failed)
    assert all(b["error"] is None for b in data["branches"] if b["batch_size"] != 128)
    assert all(p["examples_by_batch"]["128"] is None and p["examples_by_batch"]["16"] is not None
               for p in data["points"])
    with open(tmp_path / "boom" / "cbs" / "branches.csv") as f:
        assert sum(1 for row in csv.DictReader(f) if row["error"]) == 6
    assert "6 branches failed (branches.csv, column error), e.g. batch 128 at lr 0.2: OutOfMemoryError" in result.output


@pytest.mark.parametrize("model, lr, message", [
    ("boom:Always", 0.2, "error: the reference run (batch size 32, lr 0.2) failed, nothing was measured: "
                         "OutOfMemoryError: CUDA out of memory"),
    ("mlp", 1e6, "error: the reference run (batch size 32, lr 1e+06) diverged: held-out loss "),
    ("boom:Silent", 0.2, "error: the reference run (batch size 32, lr 0.2) failed, nothing was measured: "
                         "RuntimeError"),
])
def test_a_reference_run_that_fails_or_diverges_is_one_line(tmp_path, model, lr, message):
    (tmp_path / "boom.py").write_text(BOOM)
    config = tmp_path / "ref.yaml"
    config.write_text(yaml.safe_dump({**TINY, "name": "ref", "model": {"name": model, **(
        {"hidden": [16]} if model == "mlp" else {})}, "sweep": {"lr": {"base": lr, "base_batch_size": 32}}}))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--points", "2",
                                 "--batch-sizes", "8,32", "--window", "256"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message) and not lines[0].endswith(":"), result.output
    assert not (tmp_path / "ref" / "cbs").exists()


LATE_NAN = '''import torch


class LateNan(torch.nn.Module):
    """Learns; its weights turn NaN after STEPS training steps (a late divergence)."""
    STEPS = 80

    def __init__(self, input_shape=None, num_classes=10):
        super().__init__()
        self.lin = torch.nn.Linear(64, num_classes)
        self.steps = 0

    def forward(self, x):
        if self.training and len(x) == 32:  # the reference's steps (its batch), not the branches'
            self.steps += 1
            if self.steps > self.STEPS:
                with torch.no_grad():
                    self.lin.weight.fill_(float("nan"))
        return self.lin(x.flatten(1))
'''


def test_a_reference_run_that_diverges_late_keeps_the_points_before(tmp_path):
    """2 epochs of 45 steps, 6 points at 96 ... 2,874 examples: the weights turn NaN at step 81, so the last
    point (step 90) is the first whose held-out loss is not finite; the 5 before it are measured."""
    (tmp_path / "late.py").write_text(LATE_NAN)
    config = tmp_path / "late.yaml"
    config.write_text(yaml.safe_dump({**TINY, "name": "late", "model": {"name": "late:LateNan"}}))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--from", "noise"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "late" / "cbs-noise" / "cbs.json").read_text())
    # geometric from 2,874 / 32 to 2,874 examples: the first step at or past 90, 180, 359, 718, 1,437 (the epoch's
    # end) and 2,874 examples, at 32 a step: 3, 6, 12, 23, 45 and 90, where the weights are NaN
    assert [p["steps"] for p in data["points"]] == [3, 6, 12, 23, 45]
    assert all(math.isfinite(p["loss"]) for p in data["points"])
    assert data["reference_note"].startswith("the reference run (batch size 32, lr 0.2) diverged: held-out loss nan "
                                             "after 2,874 examples")
    assert data["reference_note"].endswith(": 5 of 6 points measured, the ones before it")
    assert data["reference_note"] in result.output


def test_points_within_one_step_are_kept_once_and_said(tmp_path):
    """20 points geometric over 2 epochs of 32-example steps: the first few fall within one step of each other."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--from", "noise", "--points", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "tiny" / "cbs-noise" / "cbs.json").read_text())
    steps = [p["steps"] for p in data["points"]]
    at = np.geomspace(2 * 1437 / 32, 2 * 1437, 20)  # the points asked, as plan lays them out
    epoch = [min(32 * k, 1437) for k in range(1, 46)]  # examples after each step of an epoch (the last of 29)
    ends = epoch + [1437 + e for e in epoch]
    kept = [next(i + 1 for i, e in enumerate(ends) if e >= max(32, round(a))) for a in at]  # steps of the points
    assert steps == sorted(set(kept)) and len(steps) < 20
    assert data["points_asked"] == 20
    assert f"{len(steps)} points of the 20 asked: some fell within one step (32 examples) of another" in result.output


@pytest.mark.parametrize("value, message", [
    ({"points": 0}, "batchlab.cbs(points=0): expected a whole number from 1 to 100"),
    ({"measurements": 1}, "batchlab.cbs(measurements=1): expected a whole number from 2"),
    ({"eval_examples": -5}, "batchlab.cbs(eval_examples=-5): expected a whole number from 1"),
    ({"window": 0}, "batchlab.cbs(window=0): expected a whole number from 1"),
    ({"batch_sizes": "16,32"}, "batchlab.cbs(batch_sizes='16,32'): expected whole numbers"),
    ({"batch_sizes": [16.5, 32]}, "batchlab.cbs(batch_sizes=[16.5, 32]): expected whole"),
    ({"batch_sizes": [32]}, "batchlab.cbs(batch_sizes=[32]): branching compares batch sizes, give at least two"),
    ({"min_batch": 64, "max_batch": 16}, "batchlab.cbs(min_batch=64): above max_batch=16"),
    ({"source": "noise", "by": "tolerance"}, "batchlab.cbs(by='tolerance'): only with source='branching'; "
                                            "source='noise' measures B_simple alone"),
    ({"window": 100000}, "give window=2874 at most, or a budget that holds it (overrides=['budget.epochs=70'])"),
    ({"tolerance": math.nan}, "batchlab.cbs(tolerance=nan): expected a number above 0")])
def test_the_python_api_checks_what_the_cli_does_in_its_own_words(tmp_path, value, message):
    """It named the command line's options (`--points 0`), which a Python caller never typed."""
    from batchlab.errors import ArgumentError

    with pytest.raises(ArgumentError, match=re.escape(message)):
        batchlab.cbs(TINY, out=tmp_path, **value)
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("batch", [8, 16, 64])
def test_a_point_at_an_epochs_end_with_drop_last_branches_into_the_next_epoch(batch):
    """With drop_last, an epoch of digits' 1,437 examples trains 44 steps of 32 (1,408) and drops 29. A point
    there: every branch must begin where the reference goes on, the next epoch's first examples, not with the
    29 the reference dropped (smaller batches would train on them, larger ones not)."""
    parts, seen = recording_parts({"batch_size": 32, "budget": {"steps": 50}, "drop_last": True})
    [point, _], _ = branching.reference(parts, [1408, 1440], 50)
    assert point.examples == 1408 and len(seen) == 45
    reference_next = seen[44]  # the reference's step 45: the next epoch's first 32 examples
    seen.clear()
    branching.branch(parts, point, batch, 0.01, window=batch, longest=batch, evals=1, target=None)
    assert torch.equal(seen[0][:32], reference_next[:batch])


def test_the_python_api_takes_numpy_integers(tmp_path):
    result = batchlab.cbs(TINY, out=tmp_path, source="noise", points=np.int64(2), measurements=np.int64(2))
    assert len(result.points) == 2


def test_a_sequence_tasks_table_gives_tokens_beside_examples(tmp_path):
    """Its budget counts tokens; the table spoke in examples (sequences) alone."""
    config = tmp_path / "lm.yaml"
    config.write_text(yaml.safe_dump({
        "name": "lm", "dataset": {"name": "chars", "context": 16, "held_out": 0.05},
        "model": {"name": "gpt", "args": {"n_layer": 1, "n_head": 2, "n_embd": 16}}, "optimizer": {"name": "adamw"},
        "batch_size": 16, "lr": 0.01, "budget": {"tokens": 20000}, "threads": 1}))
    result = runner.invoke(app, ["cbs", str(config), "--out", str(tmp_path), "--points", "2", "--batch-sizes", "8,16"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "lm" / "cbs" / "cbs.json").read_text())
    lines = result.output.splitlines()
    assert f"window {data['window']:,} examples ({data['window'] * 16:,} tokens)" in lines[0]
    assert lines[1].split()[:4] == ["point", "examples", "tokens", "loss"]
    for point, line in zip(data["points"], lines[2:]):
        assert line.split()[1:3] == [f"{point['examples']:,}", f"{point['examples'] * 16:,}"]
