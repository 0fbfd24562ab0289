"""The report's batch-size science (frontier, noise scale, lr rule, seeds, generalisation gap,
recommendation) on records written by hand with known answers (tests/report_fixtures.py).

Expected numbers are worked out here from the values the fixtures set, never by calling the
report code a second time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchlab.reporting import build_report
from batchlab.reporting.decision import TIE
from report_fixtures import FULL_HEADER, check_png, hit, make_step_times, make_sweep, make_trial

# --- a sweep with a known frontier: S(B) = S_MIN + E_MIN / B ---------------------------------------

S_MIN, E_MIN = 128, 32_768  # B_crit = 256
B_CRIT = E_MIN / S_MIN
SIZES = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
TRAIN_SIZE = 100_000
RULE = {"base": 0.1, "base_batch_size": 128, "scale": "sqrt", "warmup_epochs": None, "factors": [0.5, 1.0]}


def steps_to_target(bs: int) -> int:
    return S_MIN + E_MIN // bs  # whole numbers for every size above


def step_seconds(bs: int) -> float:
    return 0.01 * (1 + bs / 300)  # bigger batches: longer steps, more examples per second


def rule_lr(bs: int, factor: float = 1.0) -> float:
    return 0.1 * factor * math.sqrt(bs / 128)


def noise_value(bs: int, i: int) -> float | None:
    """B_simple in metrics row i: nan at the first measurement, then measured every other row."""
    if i == 0:
        return math.nan
    if i % 2:
        return None  # not measured at this row: an empty cell
    return 50.0 + bs / 16 + 10 * i


def gap_value(bs: int):
    return lambda progress: round(0.004 * math.log2(bs) * (0.2 + progress), 4)


def _frontier_sweep(root: Path) -> Path:
    """Per batch size: the rule's lr (factor 1) reaches the target in exactly S(B) steps, and its
    metrics.csv has an evaluation row there (total steps 2 S(B)); factor 0.5 takes 1.5 S(B) steps
    (slower: never the best). Noise and the train-subset evaluation are recorded. Plus a diverged
    trial whose noise must not count."""
    sweep = make_sweep(root, "frontier")
    for bs in SIZES:
        s = steps_to_target(bs)
        spe = math.ceil(TRAIN_SIZE / bs)
        for factor, steps in ((1.0, s), (0.5, round(1.5 * s))):
            make_trial(sweep, bs, rule_lr(bs, factor), 0, extra_axes={"lr_factor": factor},
                       hits={0.9: hit(steps * step_seconds(bs), steps, bs, spe)}, train_size=TRAIN_SIZE,
                       samples_per_second=bs / step_seconds(bs), total_steps=2 * s, lr_rule=RULE,
                       noise_every=0.1, noise=lambda i, bs=bs: noise_value(bs, i),
                       summary_noise={"g2": 1.0, "trace": 100.0 + bs * factor, "b_simple": 100.0 + bs * factor,
                                      "b_small": 64, "b_big": 1024, "measurements": 20},
                       train_eval_gap=gap_value(bs))
    make_trial(sweep, 64, 5.0, 0, status="diverged", extra_axes={"lr_factor": 10.0}, train_size=TRAIN_SIZE,
               total_steps=100, final_accuracy=None, final_loss=None, final_train_loss=None, lr_rule=RULE,
               noise_every=0.1, noise=lambda i: 1e6, summary_noise={"g2": 1.0, "trace": 1e6, "b_simple": 1e6})
    return sweep


@pytest.fixture(scope="module")
def frontier(tmp_path_factory):
    sweep = _frontier_sweep(tmp_path_factory.mktemp("runs"))
    [report] = build_report(sweep)
    return sweep, report


def test_frontier_csv_recovers_the_known_frontier(frontier):
    _, report = frontier
    table = pd.read_csv(report.out_dir / "frontier.csv")
    assert len(table) == 1
    row = table.iloc[0]
    assert bool(row["fitted"]) and row["target"] == 0.9
    assert row["s_min"] == pytest.approx(S_MIN, rel=1e-6)
    assert row["e_min"] == pytest.approx(E_MIN, rel=1e-6)
    assert row["b_crit"] == pytest.approx(B_CRIT, rel=1e-6)
    assert row["r2"] == pytest.approx(1.0) and row["rms_log_error"] < 1e-6
    assert row["points"] == len(SIZES)
    assert row["batch_sizes"] == ";".join(map(str, SIZES))


def test_regime_column_follows_b_crit(frontier):
    _, report = frontier
    table = pd.read_csv(report.out_dir / "time_to_accuracy.csv").set_index("batch_size")
    for bs in SIZES:
        expected = ("perfect scaling" if bs <= B_CRIT / 9 else
                    "maximal data parallelism" if bs >= 9 * B_CRIT else "diminishing returns")
        assert table.loc[bs, "regime"] == expected, bs
        assert table.loc[bs, "frontier_steps"] == pytest.approx(steps_to_target(bs), rel=1e-6)
        assert table.loc[bs, "steps"] == steps_to_target(bs)
        assert table.loc[bs, "best_lr"] == pytest.approx(rule_lr(bs))
    markdown = (report.out_dir / "report.md").read_text()
    assert "| 8 | 4,224 | 33,792 | 1.00× |" in markdown  # S, the examples recorded (here B·S), vs the smallest
    assert "perfect scaling" in markdown and "maximal data parallelism" in markdown


def test_fitted_curve_is_drawn(frontier):
    _, report = frontier
    steps = check_png(report.out_dir / "steps_to_target.png")
    assert steps.startswith("frontier fit: drawn")
    assert check_png(report.out_dir / "frontier.png").startswith("frontier fit: drawn")
    assert "B_crit 256" in steps


def test_recommendation_names_the_right_batch_sizes(frontier):
    sweep, report = frontier
    # (a) fastest and runner-up by seconds = S(B) x seconds per step (ties: fewer steps)
    seconds = {bs: steps_to_target(bs) * step_seconds(bs) for bs in SIZES}
    ranked = sorted(SIZES, key=lambda bs: (seconds[bs], steps_to_target(bs), bs))
    fastest, runner_up = ranked[:2]
    # (b) the largest batch size whose examples B·S stay within 1/0.9 of the smallest's
    examples = {bs: bs * steps_to_target(bs) for bs in SIZES}
    efficient = max(bs for bs in SIZES if examples[bs] <= examples[SIZES[0]] / 0.9)
    assert (fastest, runner_up, efficient) == (256, 512, 32)  # the arithmetic behind the fixture

    lines = report.recommendation.details
    assert len(lines) == 4
    assert f"batch size {fastest} (lr {rule_lr(fastest):g})" in lines[0]
    assert f"Runner-up: batch size {runner_up}" in lines[0]
    assert f"{seconds[fastest]:.3g} s" in lines[0] and f"{seconds[runner_up]:.3g} s" in lines[0]
    # One seed each, seconds per step from the trials' own clocks (the same at every lr): no spread, so the two
    # are told apart by TIE alone: 512's 5.20 s is 1.095x 256's 4.74 s.
    tied = seconds[runner_up] <= TIE * seconds[fastest]
    assert ("cannot be told apart" in lines[0]) == tied
    assert [o["batch_size"] for o in report.recommendation.within_noise] == ([runner_up] if tied else [])
    assert lines[1].startswith("Seconds per step from each trial's own clock")
    assert f"Most data-efficient large batch: batch size {efficient}," in lines[2]
    assert f"{examples[efficient]:,}" in lines[2] and f"{examples[8]:,}" in lines[2]
    assert f"The next, batch size {efficient * 2}" in lines[2]
    assert "B_crit ≈ 256" in lines[3]
    assert f"B_simple ≈ {np.median(list(_means_to_target(sweep).values())):.3g}, averaged" in lines[3]
    summary_median = np.median([100.0 + bs * f for bs in SIZES for f in (1.0, 0.5)])  # completed trials only
    assert f"{summary_median:.3g} when training ended" in lines[3]

    markdown = (report.out_dir / "report.md").read_text()
    head = markdown.split("|  | value |")[0]  # the top of the report, above the setup table
    assert head.index("**Use batch size 256") < head.index("## Recommendation in detail")
    for line in lines:
        assert f"- {line}" in head


def _metrics(sweep: Path, bs: int, factor: float) -> pd.DataFrame:
    [trial] = [p for p in (sweep / "trials").glob(f"bs{bs:04d}-lr{rule_lr(bs, factor):g}-s0-*")]
    return pd.read_csv(trial / "metrics.csv")


def _means_to_target(sweep: Path) -> dict[int, float]:
    """Per batch size, its best lr's mean B_simple over the metrics rows up to its steps to target."""
    means = {}
    for bs in SIZES:
        rows = _metrics(sweep, bs, 1.0)
        values = rows.loc[rows["step"] <= steps_to_target(bs), "noise_b_simple"].dropna()
        means[bs] = values.mean()
    return means


def test_noise_table_is_the_median_of_the_records(frontier):
    sweep, report = frontier
    table = pd.read_csv(report.out_dir / "noise_scale.csv").set_index("quantity")
    completed = [(bs, f) for bs in SIZES for f in (1.0, 0.5)]  # the diverged trial does not count
    summary = table.loc["measured B_simple, summary.json"]
    assert summary["value"] == pytest.approx(np.median([100.0 + bs * f for bs, f in completed]))
    assert summary["count"] == summary["trials"] == len(completed)
    averaged = table.loc["measured B_simple, averaged to the target"]
    means = _means_to_target(sweep)
    assert averaged["value"] == pytest.approx(np.median(list(means.values())))
    assert averaged["trials"] == len(SIZES)  # the best lr of each batch size; factor 0.5 is never best
    # measured at every even row from row 2; the target is row 20 (steps S of 2 S, 40 intervals)
    assert averaged["count"] == len(SIZES) * 10
    starts, ends = [], []
    for bs, f in completed:
        values = _metrics(sweep, bs, f)["noise_b_simple"].dropna()
        starts.append(values.iloc[0])  # the nan of row 0 is skipped: the first finite value
        ends.append(values.iloc[-1])
    assert starts[0] == noise_value(SIZES[0], 2)
    assert table.loc["measured B_simple, start of training", "value"] == pytest.approx(np.median(starts))
    assert table.loc["measured B_simple, end of training", "value"] == pytest.approx(np.median(ends))
    assert table.loc["fitted B_crit", "value"] == pytest.approx(B_CRIT, rel=1e-6)
    assert "per trial (median): set a smaller noise.every" not in (report.out_dir / "report.md").read_text()
    description = check_png(report.out_dir / "noise_scale.png")
    assert f"B_simple curves: {len(SIZES)} batch sizes" in description
    assert "batch sizes marked: " + ", ".join(map(str, SIZES)) in description
    markdown = (report.out_dir / "report.md").read_text()
    assert "| measured B_simple, averaged to the target |" in markdown and "| fitted B_crit | 256 |" in markdown


# B_simple measured by hand: (step, value) rows of metrics.csv; None is an empty cell. A batch size's
# best lr reaches the target at the step given; later rows, other lrs and seeds that missed do not count.
HAND_NOISE = {
    (32, 0.1, 0): (40, [(0, None), (10, 20.0), (20, math.nan), (30, 40.0), (40, 60.0), (50, 500.0), (60, 700.0)]),
    (32, 0.1, 1): (30, [(0, 10.0), (15, 30.0), (30, 50.0), (45, 900.0)]),
    (32, 0.01, 0): (80, [(0, 1000.0), (40, 1000.0), (80, 1000.0)]),  # reached, but not the best lr
    (64, 0.1, 0): (20, [(0, None), (10, 100.0), (20, 140.0), (30, 5000.0)]),
    (64, 0.1, 1): (25, [(0, None), (25, 160.0), (50, 5000.0)]),
    (64, 0.1, 2): (None, [(0, 3000.0), (50, 3000.0)]),  # missed: bs 64 is partly reached and does not count
    (128, 0.1, 0): (None, [(0, 7000.0), (50, 7000.0)]),  # bs 128 never reached
}


def _write_noise_rows(trial: Path, rows: list[tuple[int, float | None]], batch_size: int) -> None:
    lines = [FULL_HEADER]
    for step, value in rows:
        cell = "" if value is None else repr(value)
        lines.append(f"{step},{step * batch_size / 1000},{step * batch_size},{step * 0.01},0.1,1.0,1.0,0.5,,,,,{cell}")
    (trial / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_b_simple_is_averaged_up_to_the_target(tmp_path):
    sweep = make_sweep(tmp_path, "noise-hand")
    for (bs, lr, seed), (steps, rows) in HAND_NOISE.items():
        reached = {0.9: hit(steps / 10, steps, bs, math.ceil(1000 / bs)) if steps else None}
        # a trial's last row is at the steps its summary ends at (else the report leaves its curves out)
        trial = make_trial(sweep, bs, lr, seed, hits=reached, total_steps=rows[-1][0], noise_every=0.5,
                           summary_noise={"b_simple": rows[-1][1]})
        _write_noise_rows(trial, rows, bs)
    [report] = build_report(sweep, formats={"csv", "md"})
    assert not report.warnings

    means, counts = [], []  # the best lr's seeds, where every seed reached: lr 0.1 at bs 32
    for (bs, lr, _), (steps, rows) in HAND_NOISE.items():
        if bs != 32 or lr != 0.1:
            continue
        values = [v for step, v in rows if step <= steps and v is not None and math.isfinite(v)]
        means.append(sum(values) / len(values))
        counts.append(len(values))
    assert means == [40.0, 30.0] and counts == [3, 3]  # the arithmetic above

    table = pd.read_csv(report.out_dir / "noise_scale.csv").set_index("quantity")
    row = table.loc["measured B_simple, averaged to the target"]
    assert row["value"] == pytest.approx(np.median(means))
    assert (row["count"], row["trials"]) == (sum(counts), len(means))
    answer = report.recommendation
    assert answer.b_simple == pytest.approx(np.median(means))
    assert (answer.b_simple_measurements, answer.b_simple_trials) == (sum(counts), len(means))
    per_trial = np.median(counts)
    assert per_trial == 3  # the plural is what the report prints here
    advice = (f"B_simple up to the target rests on only {per_trial:g} measurements per trial (median): "
              "set a smaller noise.every (now 0.5 epochs) for a steadier figure.")
    assert advice in answer.why[1]
    assert advice in (report.out_dir / "report.md").read_text()
    assert answer.to_dict()["b_simple"] == pytest.approx(np.median(means))


def test_lr_rule_line_and_table(frontier):
    _, report = frontier
    description = check_png(report.out_dir / "lr_vs_batch_size.png")
    assert description == "lr rule line: drawn (sqrt, base 0.1 at batch 128)"
    markdown = (report.out_dir / "report.md").read_text()
    for bs in SIZES:
        assert f"| {bs} | {rule_lr(bs):g} | {rule_lr(bs):g} | 1 | reached |" in markdown


def test_generalisation_gap_at_the_end_and_at_the_target(frontier):
    sweep, report = frontier
    table = pd.read_csv(report.out_dir / "generalisation_gap.csv").set_index("batch_size")
    assert list(table.index) == SIZES
    for bs in SIZES:
        metrics = _metrics(sweep, bs, 1.0)
        rows = metrics.dropna(subset=["train_eval_accuracy", "test_accuracy"])
        end = rows.iloc[-1]
        at = rows[rows["step"] == steps_to_target(bs)].iloc[0]
        assert table.loc[bs, "gap_end"] == pytest.approx(end["train_eval_accuracy"] - end["test_accuracy"])
        assert table.loc[bs, "gap_at_target"] == pytest.approx(at["train_eval_accuracy"] - at["test_accuracy"])
        assert table.loc[bs, "gap_at_target"] == pytest.approx(gap_value(bs)(0.5), abs=1e-4)
        assert table.loc[bs, "metric"] == "accuracy" and table.loc[bs, "seeds"] == 1
    assert check_png(report.out_dir / "generalisation_gap.png").startswith("generalisation gap (accuracy)")


def test_every_new_png_is_valid_and_in_the_html(frontier):
    _, report = frontier
    names = {p.name for p in report.files if p.suffix == ".png"}
    assert {"frontier.png", "noise_scale.png", "lr_vs_batch_size.png", "generalisation_gap.png"} <= names
    for name in names:
        check_png(report.out_dir / name)
    html = (report.out_dir / "report.html").read_text()
    for name in names:
        assert f'data-file="{name}"' in html
    assert 'id="recommendation"' in html and 'id="frontier"' in html and 'id="noise-scale"' in html
    assert 'id="generalisation-gap"' in html and 'id="lr-rule"' in html


def test_spread_with_one_seed(frontier):
    _, report = frontier
    table = pd.read_csv(report.out_dir / "time_to_accuracy.csv")
    assert (table["seconds_min"] == table["seconds"]).all() and (table["seconds_max"] == table["seconds"]).all()
    assert (table["steps_min"] == table["steps"]).all() and table["steps_q1"].isna().all()


# --- only two batch sizes reach the target: no fit -----------------------------------------------

def test_two_batch_sizes_reaching_give_no_fit(tmp_path):
    sweep = make_sweep(tmp_path, "two")
    for bs, steps in ((32, 400), (64, 250), (128, None)):
        spe = math.ceil(1000 / bs)
        make_trial(sweep, bs, 0.1, hits={0.9: hit(steps / 100, steps, bs, spe) if steps else None},
                   total_steps=500)
    [report] = build_report(sweep)
    row = pd.read_csv(report.out_dir / "frontier.csv").iloc[0]
    reason = "2 batch sizes reached the target; a fit needs 3"
    assert not bool(row["fitted"]) and row["reason"] == reason
    assert math.isnan(row["s_min"]) and math.isnan(row["b_crit"]) and row["points"] == 2
    assert row["batch_sizes"] == "32;64"
    markdown = (report.out_dir / "report.md").read_text()
    assert f"No frontier fit: {reason}. No fitted curve is drawn." in markdown
    assert check_png(report.out_dir / "steps_to_target.png") == f"frontier fit: not drawn ({reason})"
    assert check_png(report.out_dir / "frontier.png") == f"frontier fit: not drawn ({reason})"
    assert pd.read_csv(report.out_dir / "time_to_accuracy.csv")["regime"].isna().all()
    assert f"the frontier cannot be fitted ({reason})" in report.recommendation.details[-1]
    # (b) with two points: 64 needed 16,000 examples against 32's 12,800 (80% efficient)
    assert "No batch size above 32 stayed within 10% of perfect scaling" in report.recommendation.details[2]
    assert "scaling efficiency 80%" in report.recommendation.details[2]
    assert report.recommendation.regime is None and report.recommendation.b_crit is None
    assert f"No regime can be named: the steps–examples frontier was not fitted ({reason})" in \
        report.recommendation.why[0]


# --- seeds: spread columns, intervals and ties -------------------------------------------------------

ROUND = (1.0, 1.03, 0.98, 1.01, 0.99)  # the machine's speed in each round of the interleaved timing


def _seeded(root: Path, name: str, seconds: dict[int, list[float]]) -> Path:
    """Seeds of one lr per batch size taking 10 steps a second of `seconds`; every batch size timed at 0.1 s a
    step (interleaved, 5 rounds), so the predicted seconds are the median steps / 10."""
    sweep = make_sweep(root, name)
    for bs, values in seconds.items():
        spe = math.ceil(1000 / bs)
        for seed, s in enumerate(values):
            steps = round(s * 10)
            make_trial(sweep, bs, 0.1, seed, hits={0.9: hit(s, steps, bs, spe)}, total_steps=500)
    make_step_times(sweep, {bs: [0.1 * r for r in ROUND] for bs in seconds})
    return sweep


def _bootstrap_faster(a: list[int], b: list[int], draws: int = 4000) -> float:
    """How often the median of a resample of b's steps comes out below a's (the seeds' part of the interval)."""
    rng = np.random.default_rng(1)
    ma = np.median(rng.choice(a, size=(draws, len(a))), axis=1)
    mb = np.median(rng.choice(b, size=(draws, len(b))), axis=1)
    return float(np.mean(mb < ma))


def test_overlapping_seeds_are_declared_a_tie(tmp_path):
    seconds = {32: [9.0, 10.0, 14.0], 64: [5.0, 7.5, 8.0], 128: [6.0, 8.5, 9.0]}
    [report] = build_report(_seeded(tmp_path, "overlap", seconds), formats={"csv", "md"})
    medians = {bs: float(np.median(v)) for bs, v in seconds.items()}
    fastest, runner_up = sorted(medians, key=medians.get)[:2]
    assert (fastest, runner_up) == (64, 128)
    assert medians[runner_up] > TIE * medians[fastest]  # 8.5 against 7.5: not close enough by the margin alone
    steps = {bs: [round(v * 10) for v in values] for bs, values in seconds.items()}
    assert _bootstrap_faster(steps[64], steps[128]) > 0.05  # but 128's seeds often come out ahead
    answer = report.recommendation
    assert answer.batch_size == 64 and [o["batch_size"] for o in answer.within_noise] == [128]
    assert answer.sentence.startswith("Use batch size 64 or 128: they cannot be told apart on this machine")
    assert "batch size 64 takes both the fewest steps (75) and the fewest examples (4,800)" in answer.sentence
    assert answer.in_short() == "use batch size 64 (lr 0.1) or 128 (lr 0.1)"
    line = answer.details[0]
    assert "batch size 64 (lr 0.1), predicted 7.5 s = 75 steps (median of 3 seeds, 50–80)" in line
    assert "Runner-up: batch size 128 (lr 0.1), predicted 8.5 s" in line and "cannot be told apart" in line
    table = pd.read_csv(report.out_dir / "time_to_accuracy.csv").set_index("batch_size")
    assert bool(table.loc[128, "within_noise"]) and not bool(table.loc[32, "within_noise"])
    for bs, values in seconds.items():
        assert table.loc[bs, "seconds_min"] == min(values) and table.loc[bs, "seconds_max"] == max(values)
        assert table.loc[bs, "steps_min"] == round(min(values) * 10)
        assert table.loc[bs, "steps_max"] == round(max(values) * 10)
        assert table.loc[bs, "predicted_seconds"] == pytest.approx(medians[bs])
        assert table.loc[bs, "predicted_low"] <= medians[bs] <= table.loc[bs, "predicted_high"]
        assert math.isnan(table.loc[bs, "seconds_q1"])  # fewer than 5 seeds
    markdown = (report.out_dir / "report.md").read_text()
    assert "| 64 | 0.1 | 7.5 (5–8) | 75 (50–80) |" in markdown


def test_separate_seeds_and_quartiles(tmp_path):
    seconds = {32: [9.0, 10.0, 11.0, 12.0, 30.0], 64: [4.0, 5.0, 5.5, 6.0, 8.0]}
    [report] = build_report(_seeded(tmp_path, "apart", seconds), formats={"csv"})
    steps = {bs: [round(v * 10) for v in values] for bs, values in seconds.items()}
    assert _bootstrap_faster(steps[64], steps[32]) < 0.005  # 32's median never comes below 64's
    line = report.recommendation.details[0]
    assert "batch size 64" in line and "Runner-up: batch size 32" in line
    assert "larger than this machine's timing noise" in line and "cannot be told apart" not in line
    assert report.recommendation.within_noise == []
    table = pd.read_csv(report.out_dir / "time_to_accuracy.csv").set_index("batch_size")
    for bs, values in seconds.items():
        assert table.loc[bs, "seconds_q1"] == pytest.approx(np.percentile(values, 25))
        assert table.loc[bs, "seconds_q3"] == pytest.approx(np.percentile(values, 75))
        assert table.loc[bs, "steps_q1"] == pytest.approx(np.percentile(steps[bs], 25))


def test_a_missed_seed_keeps_a_batch_size_out_of_the_answer(tmp_path):
    sweep = make_sweep(tmp_path, "missed")
    for seed, s in enumerate([4.0, 6.0, None]):
        make_trial(sweep, 64, 0.1, seed, hits={0.9: hit(s, round(s * 10), 64, 16) if s else None})
    make_trial(sweep, 32, 0.1, 0, hits={0.9: hit(5.5, 55, 32, 32)})
    [report] = build_report(sweep, formats={"csv", "md"})
    row = pd.read_csv(report.out_dir / "time_to_accuracy.csv").set_index("batch_size").loc[64]
    assert row["status"] == "partly reached" and row["seeds_reached"] == "2/3"
    assert (row["seconds"], row["seconds_min"], row["seconds_max"]) == (6.0, 4.0, math.inf)
    assert not row["fastest"] and math.isnan(row["predicted_seconds"])
    answer = report.recommendation
    assert answer.batch_size == 32  # 64 is faster on its two seeds that reached, but the third missed
    assert "the only batch size that reached the target on every seed" in answer.details[0]


# --- nothing reached, one batch size, NaN noise, regression ----------------------------------------

def test_nothing_reached_says_so(tmp_path):
    sweep = make_sweep(tmp_path, "hard")
    for bs in (32, 64, 128):
        make_trial(sweep, bs, 0.1, targets=(0.99,), final_accuracy=0.8 + bs / 1000, noise_every=0.5,
                   noise=lambda i: math.nan, summary_noise={"g2": None, "trace": None, "b_simple": None},
                   train_eval_gap=lambda progress: 0.05)
    [report] = build_report(sweep)
    answer = report.recommendation
    assert answer.sentence.startswith("No batch size reached test_accuracy ≥ 0.99")
    # the closest: no seed reached anywhere, so the best final accuracy, 0.8 + 128 / 1000
    assert "the closest was batch size 128 with lr 0.1 (0/1 seeds reached it, final test accuracy 0.9280)" \
        in answer.sentence
    assert not answer.reached and answer.batch_size is None and answer.closest_batch_size == 128
    assert answer.details == [answer.sentence]
    row = pd.read_csv(report.out_dir / "frontier.csv").iloc[0]
    assert not bool(row["fitted"]) and row["points"] == 0
    markdown = (report.out_dir / "report.md").read_text()
    assert "No finite gradient noise scale is recorded yet (noise.every = 0.5 epochs)" in markdown
    assert not (report.out_dir / "noise_scale.png").exists() and not (report.out_dir / "noise_scale.csv").exists()
    gap = pd.read_csv(report.out_dir / "generalisation_gap.csv")
    assert gap["gap_end"].to_numpy() == pytest.approx([0.05] * 3, abs=1e-4)
    assert gap["gap_at_target"].isna().all()
    for png in (p for p in report.files if p.suffix == ".png"):
        check_png(png)


def test_one_batch_size_and_nan_noise(tmp_path):
    sweep = make_sweep(tmp_path, "one")
    make_trial(sweep, 64, 0.1, 0, hits={0.9: hit(3.0, 30, 64, 16)}, noise_every=0.1,
               noise=lambda i: math.nan if i < 10 else 200.0 + i,
               summary_noise={"g2": 1.0, "trace": 240.0, "b_simple": 240.0, "measurements": 40})
    make_trial(sweep, 64, 0.3, 0, status=None, noise=lambda i: 300.0)  # still running: no summary
    [report] = build_report(sweep)
    lines = report.recommendation.details
    assert "the only batch size that reached the target on every seed" in lines[0]
    assert "Only batch size 64 reached the target" in lines[2]
    assert "the frontier cannot be fitted (1 batch size reached" in lines[3]
    # Reached at step 30 of 80; metrics rows every 2 steps (row i at step 2i), B_simple 200 + i from
    # row 10: the measurements up to the target are rows 10..15.
    up_to_target = [200.0 + i for i in range(10, 16)]
    assert f"B_simple ≈ {np.mean(up_to_target):.3g}, averaged over training up to the target (median over 1 " \
           f"trial of each trial's mean, {len(up_to_target)} measurements in all; 240 when training ended, " \
           "210 at the first measurement)" in lines[3]
    assert report.recommendation.b_simple == pytest.approx(np.mean(up_to_target))
    assert "only batch size that reached it" in report.recommendation.sentence
    table = pd.read_csv(report.out_dir / "noise_scale.csv").set_index("quantity")
    assert table.loc["measured B_simple, start of training", "value"] == 210.0
    assert table.loc["measured B_simple, end of training", "value"] == 240.0
    assert math.isnan(table.loc["fitted B_crit", "value"])
    assert "no fit: 1 batch size reached" in table.loc["fitted B_crit", "source"]
    markdown = (report.out_dir / "report.md").read_text()
    assert "No train-subset evaluation was recorded" in markdown
    assert not (report.out_dir / "generalisation_gap.png").exists()
    for png in (p for p in report.files if p.suffix == ".png"):
        check_png(png)


def test_regression_gap_is_test_minus_train_loss(tmp_path):
    sweep = make_sweep(tmp_path, "linear")
    common = dict(targets=(0.05,), target_metric="test_loss", dataset="linear", model="linear",
                  train_size=256, final_accuracy=None, train_eval_gap=lambda progress: 0.01 + progress / 100)
    for bs in (16, 64, 256):
        make_trial(sweep, bs, 0.1, hits={0.05: hit(2, 40, bs, math.ceil(256 / bs))}, total_steps=400, **common)
    [report] = build_report(sweep, formats={"csv", "md"})
    gap = pd.read_csv(report.out_dir / "generalisation_gap.csv")
    assert (gap["metric"] == "loss").all()
    # the fixture writes train_eval_loss = test_loss - gap: test minus train gives the gap back
    assert gap["gap_end"].to_numpy() == pytest.approx([0.02] * 3, abs=1e-5)
    assert gap["gap_at_target"].to_numpy() == pytest.approx([0.01 + 40 / 400 / 100] * 3, abs=1e-5)
    assert "test − train loss" in (report.out_dir / "report.md").read_text()


def test_thousand_trials_with_noise_and_gap(tmp_path):
    """A report over 1,000 trials with noise and train-evaluation columns (it once took minutes; how long it
    takes is not asserted here: a wall-clock bound failed on this shared machine under load, with nothing wrong)."""
    sweep = make_sweep(tmp_path, "big")
    for bs in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096):
        for lr in (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512):
            for seed in range(10):
                steps = 100 + 10_000 // bs
                make_trial(sweep, bs, lr, seed, train_size=50_000, total_steps=2 * steps,
                           hits={0.9: hit(steps * (1 + abs(math.log2(lr * bs)) / 10), steps, bs,
                                          math.ceil(50_000 / bs))},
                           noise=lambda i: 100.0 + i, summary_noise={"b_simple": 150.0},
                           train_eval_gap=lambda p: 0.02)
    [report] = build_report(sweep)
    assert report.counts == {"completed": 1000}
    assert report.science.frontier.fit is not None


# --- examples to each target, relative to the fewest --------------------------------------------------

def test_examples_by_target_in_training_order(tmp_path):
    """Loss targets listed 1.5 first are shown as training meets them (2.0 first); each cell is the median
    examples over seeds divided by the fewest at that target, a dash where a seed missed it."""
    steps = {16: {2.0: (160, 160), 1.5: (600, 600)}, 32: {2.0: (100, 100), 1.5: (300, 310)},
             64: {2.0: (60, 60), 1.5: (150, None)}}
    sweep = make_sweep(tmp_path, "by-target")
    for bs, by_target in steps.items():
        spe = math.ceil(1000 / bs)
        for seed in (0, 1):
            hits = {t: hit(s[seed] / 100, s[seed], bs, spe) if s[seed] else None for t, s in by_target.items()}
            make_trial(sweep, bs, 0.01, seed, hits=hits, targets=(1.5, 2.0), target_metric="test_loss",
                       total_steps=700)
    [report] = build_report(sweep)
    markdown = (report.out_dir / "report.md").read_text()
    head = "| batch size | test_loss ≤ 2 | test_loss ≤ 1.5 |"
    assert head in markdown
    rows = markdown.split(head)[1].splitlines()[2:5]
    at_2 = {bs: s[2.0][0] * bs for bs, s in steps.items()}  # 2,560 / 3,200 / 3,840 examples
    at_15 = {16: 600 * 16, 32: (300 + 310) / 2 * 32}  # 9,600 and 9,760: 64 missed on seed 1
    for row, bs in zip(rows, (16, 32, 64)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        expected_15 = f"{at_15[bs] / min(at_15.values()):.2f}×" if bs in at_15 else "–"
        assert cells == [str(bs), f"{at_2[bs] / min(at_2.values()):.2f}×", expected_15]
    assert rows[1].endswith("| 1.25× | 1.02× |")  # 3,200 / 2,560 and 9,760 / 9,600


def test_the_data_efficient_batch_size_is_judged_on_the_examples_recorded(tmp_path):
    """Each epoch's short last batch: 64 trained 1,750 examples to the target in 28 steps, not 28 x 64 = 1,792.
    Against 16's 1,600, 1,750 is within 1/0.9 (1,777.8) and 1,792 is not: the recorded examples decide, and the
    answer and the frontier's table quote them."""
    sweep = make_sweep(tmp_path, "short-last-batch")
    for bs, steps, examples in ((16, 100, 1600), (64, 28, 1750), (128, 20, 2500)):
        make_trial(sweep, bs, 0.1, hits={0.9: {**hit(steps / 100, steps, bs, math.ceil(1000 / bs)),
                                               "examples": examples}}, total_steps=200)
    [report] = build_report(sweep)
    answer = report.recommendation
    assert answer.data_efficient_batch_size == 64
    efficient = next(d for d in answer.details if d.startswith("Most data-efficient large batch"))
    assert efficient.startswith("Most data-efficient large batch: batch size 64, the largest still within 10% of "
                                "perfect scaling — it needed 1,750 examples to the target (28 steps) against batch "
                                f"size 16's 1,600 (scaling efficiency {1600 / 1750:.0%})")
    assert f"The next, batch size 128, needed 2,500 (scaling efficiency {1600 / 2500:.0%})." in efficient
    assert f"| 64 | 28 | 1,750 | {1750 / 1600:.2f}× |" in (report.out_dir / "report.md").read_text()  # not B·S


def test_examples_by_target_leaves_out_what_the_race_cut_and_a_target_met_before_training(tmp_path):
    """256's trials were cut by the race (its examples are unknown): a dash, not a ratio. Target 0.5 held at
    step 0 for everyone (0 examples): no column for it, and with one target left, no table."""
    sweep = make_sweep(tmp_path, "cut")
    for bs, steps in ((16, 100), (64, 30)):
        make_trial(sweep, bs, 0.1, hits={0.5: hit(0.0, 0, bs, 63), 0.9: hit(steps / 10, steps, bs, 63),
                                         0.95: hit(steps / 5, 2 * steps, bs, 63)}, targets=(0.5, 0.9, 0.95))
    make_trial(sweep, 256, 0.1, hits={0.5: hit(0.0, 0, 256, 4), 0.9: hit(1.0, 10, 256, 4),
                                      0.95: hit(2.0, 20, 256, 4)}, targets=(0.5, 0.9, 0.95))
    make_trial(sweep, 256, 0.3, status="raced", hits={0.5: None, 0.9: None, 0.95: None}, targets=(0.5, 0.9, 0.95),
               total_steps=5)  # stopped at 5 steps, under the 10 its other lr needed: cut
    [report] = build_report(sweep)
    table = report.time_to_accuracy
    assert table.loc[(table["batch_size"] == 256) & (table["target"] == 0.9), "cut_by_race"].all()
    markdown = (report.out_dir / "report.md").read_text()
    head = "| batch size | test_accuracy ≥ 0.9 | test_accuracy ≥ 0.95 |"
    assert head in markdown and "nan" not in markdown.split(head)[1]
    rows = markdown.split(head)[1].splitlines()[2:5]
    assert rows == ["| 16 | 1.00× | 1.00× |", f"| 64 | {30 * 64 / 1600:.2f}× | {60 * 64 / 3200:.2f}× |", "| 256 | – | – |"]
