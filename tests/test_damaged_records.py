"""A damaged record is a warning naming its file, and its trial is left out; the report goes on.

Each case damages one trial of a small hand-made sweep (report_fixtures) the way a crash, a full disk or a
hand edit could, and checks the warning, the count of damaged trials, and that the figures come from the
sound trials only.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import hit, make_sweep, make_trial
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.reporting import analyse
from batchlab.summary import Summary


def digits_sweep(tmp_path, name: str, config: str) -> tuple[CliRunner, Path, list[str]]:
    """A sweep of tiny digits trials written and run once through the CLI: (runner, records root, its command)."""
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: {name}\ndataset: {{name: digits, subset: 200}}\nmodel: {{hidden: [8]}}\n"
                    f"budget: {{steps: 3}}\nthreads: 1\n{config}")
    runner, out = CliRunner(), tmp_path / "runs"
    sweep = ["sweep", str(path), "--out", str(out), "--quiet", "--no-time-steps"]
    assert runner.invoke(app, sweep).exit_code == 0
    return runner, out, sweep


def summary_edit(**changes):
    def damage(trial):
        path = trial / "summary.json"
        text = path.read_text()
        for key, value in changes.items():  # JSON text, so 1e400 stays as written (json.dumps would say Infinity)
            old = json.loads(text)[key]
            if isinstance(old, (dict, list)):  # over several lines in a sweep's indented file: rewritten whole
                text = json.dumps({**json.loads(text), key: json.loads(value)}, indent=2)
            else:
                text = text.replace(f'"{key}": {json.dumps(old)}', f'"{key}": {value}', 1)
        path.write_text(text)
        return path, None
    return damage


def metrics_edit(edit):
    def damage(trial):
        path = trial / "metrics.csv"
        lines = path.read_text().splitlines()
        path.write_text("\n".join(edit(lines)) + "\n")
        return path, None
    return damage


def swap_steps(lines):  # rows 3 and 4 of the file: the step count goes back
    lines[3], lines[4] = lines[4], lines[3]
    return lines


def negative_seconds(lines):
    cells = lines[2].split(",")
    cells[3] = "-" + cells[3]
    return [*lines[:2], ",".join(cells), *lines[3:]]


DAMAGE = {
    "steps 1e400": (summary_edit(steps="1e400"), "'steps' is inf, expected a whole number >= 0"),
    "negative seconds in summary": (summary_edit(train_seconds="-3.5"), "'train_seconds' is -3.5, expected a "
                                                                       "finite number >= 0"),
    "a status never written": (summary_edit(status='"great"'), "unknown status 'great'"),
    "a huge status": (summary_edit(status=json.dumps("x" * 100_000)), "unknown status 'xxxxx"),
    "a target without its steps": (summary_edit(targets='{"0.9": {"seconds": 1}}'), "'targets' 0.9: expected null "
                                                                                    "or finite seconds"),
    "metrics with only the header": (metrics_edit(lambda lines: lines[:1]), "holds only its header, though the "
                                                                             "trial ended"),
    "steps going backwards": (metrics_edit(swap_steps), "step goes backwards at row 4"),
    "negative seconds in metrics": (metrics_edit(negative_seconds), "a negative train_seconds"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_record_is_a_warning_and_its_trial_is_left_out(tmp_path, case):
    damage, expected = DAMAGE[case]
    sweep = make_sweep(tmp_path, "dm")
    for bs, seconds in ((32, 2.0), (64, 1.0)):
        make_trial(sweep, bs, 0.1, hits={0.9: hit(seconds, int(100 * seconds), bs, 10)})
    victim = make_trial(sweep, 64, 0.1, seed=1, hits={0.9: hit(0.1, 10, 64, 10)})  # would be the fastest
    path, _ = damage(victim)
    [report] = analyse(sweep)
    assert report.counts == {"completed": 2, "damaged": 1}
    [warning] = report.warnings
    assert warning.startswith(f"{path}: ") and expected in warning and warning.endswith("; trial skipped")
    assert len(warning) < 500  # a value echoed is cut to a readable length
    rows = report.time_to_accuracy.set_index("batch_size")
    assert rows.loc[64, "seconds"] == 1.0  # from the sound seed only

    result = CliRunner().invoke(app, ["report", str(sweep), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert f"warning: {path}: " in result.stderr and "Traceback" not in result.output


def test_metrics_cut_at_the_end_of_a_row_is_a_warning_and_its_curves_are_left_out(tmp_path):
    """A metrics.csv cut at a row's end (head -5: no half line to give it away) was drawn as a short curve without
    a word: a trial that ran to its end logged a row at its last step, so a last row short of it is rows lost."""
    sweep = make_sweep(tmp_path, "cut")
    make_trial(sweep, 32, 0.1, hits={0.9: hit(2.0, 200, 32, 10)})
    victim = make_trial(sweep, 64, 0.1, hits={0.9: hit(1.0, 100, 64, 10)}, total_steps=100)
    path, _ = metrics_edit(lambda lines: lines[:5])(victim)
    [report] = analyse(sweep)
    assert report.warnings == [f"{path}: its last row is step 8, but summary.json says the trial ended at step 100 "
                               "(rows cut off); its curves are left out"]
    assert report.counts == {"completed": 2} and set(report.records.metrics) == {p.name for p in
                                                                                 (sweep / "trials").iterdir()} - {
        victim.name}


def test_summary_from_json_refuses_what_a_trial_never_writes():
    good = {"status": "completed", "steps": 10, "train_seconds": 1.5, "final": {"test_accuracy": 0.9}}
    assert Summary.from_json(good).steps == 10
    for bad, expected in [({"steps": float("inf")}, "'steps' is inf"), ({"steps": -1}, "'steps' is -1"),
                          ({"steps": 2.5}, "'steps' is 2.5"), ({"final": {"test_accuracy": float("nan")}},
                                                               "'final' is {'test_accuracy': nan}"),
                          ({"status": "incomplete"}, "never written"), ({"steps": True}, "'steps' is True")]:
        with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace("{", r"\{")):
            Summary.from_json({**good, **bad})


def test_a_rerun_trains_again_a_trial_whose_config_or_metrics_were_lost(tmp_path):
    """The report leaves out a trial whose config.json is missing or not JSON, or whose metrics.csv holds only its
    header, and the curves of one whose metrics.csv is empty; the same sweep run again counted them as done for
    ever. It trains them again, and the report has no warning left."""
    config = tmp_path / "exp.yaml"
    config.write_text("name: lost\ndataset: {name: digits, subset: 200}\nmodel: {hidden: [8]}\n"
                      "budget: {steps: 3}\ntarget: {value: [0.2]}\nthreads: 1\nsweep: {lr: [0.1, 0.2, 0.3, 0.4]}\n")
    runner = CliRunner()

    def sweep():
        result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "runs"), "--quiet",
                                     "--no-time-steps"])
        assert result.exit_code == 0, result.output
        return result.output

    sweep()
    trials = sorted((tmp_path / "runs" / "lost" / "trials").iterdir())
    (trials[0] / "config.json").unlink()
    (trials[1] / "config.json").write_text("{not json")
    (trials[2] / "metrics.csv").write_text("")
    header = (trials[3] / "metrics.csv").read_text().splitlines()[0]
    (trials[3] / "metrics.csv").write_text(header + "\n")
    [damaged] = analyse(tmp_path / "runs" / "lost")
    assert len(damaged.warnings) == 4 and len(damaged.records.trials) == 1  # three skipped, one without curves
    assert "4 completed" in sweep()
    [report] = analyse(tmp_path / "runs" / "lost")
    assert report.warnings == [] and len(report.records.trials) == 4


def test_a_damaged_run_token_or_sweep_yaml_is_one_line_or_a_rerun_never_a_traceback(tmp_path):
    """Bytes that are no text in a trial's run_token: no summary matches it, so the report counts the trial as
    incomplete and a rerun trains it again. In sweep.yaml, or sweep.yaml made a folder: one line naming it and
    --restart."""
    runner, out, sweep = digits_sweep(tmp_path, "tok", "target: {value: [0.2]}\nsweep: {lr: [0.1, 0.2]}\n")
    victim = sorted((out / "tok" / "trials").iterdir())[0]
    (victim / "run_token").write_bytes(b"\xff\xfe\x00\x9c")
    report = runner.invoke(app, ["report", str(out / "tok"), "--format", "md", "--out", str(tmp_path / "r")])
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output
    [records] = analyse(out / "tok")
    assert records.counts == {"completed": 1, "incomplete": 1}
    again = runner.invoke(app, sweep)
    assert again.exit_code == 0 and "1 completed (1 already recorded)" in again.output, again.output
    for damage in (lambda p: p.write_bytes(b"\xff\xfe\x00 not text"), lambda p: (p.unlink(), p.mkdir())):
        damage(out / "tok" / "sweep.yaml")
        result = runner.invoke(app, [*sweep, "--dry-run"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {out / 'tok' / 'sweep.yaml'} cannot be read (") and line.endswith(
            "); use --restart to start over")


def test_a_rerun_trains_again_what_the_report_skips_or_draws_short(tmp_path):
    """A summary the report skips ('steps' is 'abc', ...) or curves it leaves out (metrics.csv cut mid-row or at a
    row's end) counted as done for the sweep, so the report skipped them for ever. The sweep now asks the
    report's own question: it trains them again, one warning each with the report's reason, and a seed's curve
    comes back exactly."""
    runner, out, sweep = digits_sweep(tmp_path, "mend", "target: {value: [0.2]}\n"
                                                      "sweep: {lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}\n")
    trials = sorted((out / "mend" / "trials").iterdir())
    curves = ["step", "train_loss", "test_loss", "test_accuracy"]
    whole = pd.read_csv(trials[6] / "metrics.csv")[curves]

    def cut_mid_row(trial):
        path = trial / "metrics.csv"
        path.write_text(path.read_text()[:-5])
        return path, None

    damages = [summary_edit(steps='"abc"'), summary_edit(targets="5"), summary_edit(final="null"),
               summary_edit(batch_size="-3"), summary_edit(train_seconds="NaN"),
               cut_mid_row,  # as head -c does
               metrics_edit(lambda lines: lines[:-1])]  # at a row's end, as head -n does
    paths = [damage(trial)[0] for damage, trial in zip(damages, trials)]
    [before] = analyse(out / "mend")
    assert before.counts["damaged"] == 5 and len(before.warnings) == 7

    again = runner.invoke(app, sweep)
    assert again.exit_code == 0 and "(1 already recorded)" in again.output, again.output
    lines = again.stderr.splitlines()
    assert len(lines) == 7, again.stderr
    for line, path in zip(lines, paths):
        assert line.startswith(f"warning: {path}: ") and line.endswith("; the trial is trained again"), line
    [after] = analyse(out / "mend")
    assert after.warnings == [] and len(after.records.metrics) == 8
    pd.testing.assert_frame_equal(pd.read_csv(trials[6] / "metrics.csv")[curves], whole)
    assert "nothing to run (8 already recorded)" in runner.invoke(app, sweep).output



def test_a_sweep_without_a_target_is_not_trained_again(tmp_path):
    """No target.value: the report cannot time the trials, but their files are whole and training them again
    writes the same ones, so a rerun has nothing to do (it trained every trial again, each time)."""
    runner, out, sweep = digits_sweep(tmp_path, "aimless", "sweep: {lr: [0.1, 0.2]}\n")
    again = runner.invoke(app, sweep)
    assert again.exit_code == 0 and "nothing to run (2 already recorded)" in again.output, again.output
    assert "trained again" not in again.output
    report = runner.invoke(app, ["report", str(out / "aimless")])  # the report still says what it lacks
    assert report.exit_code == 2 and "no target.value" in report.output
