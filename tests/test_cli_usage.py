"""Every command-line mistake, for every command, is one `error: ...` line and exit code 2 (not Typer's usage
box), and every number has a bound: none is accepted to then overflow or run for ever."""

import pytest
from cli_fuzz import outcome

from batchlab.fields import COUNT_MAX, PARALLEL_MAX


@pytest.fixture
def config(write_config):
    return str(write_config({"dataset": {"name": "digits", "subset": 64}, "budget": {"steps": 2},
                             "eval": {"every": 1, "train_subset": 0}, "sweep": {}}))


def one_line(args, tmp_path, expected: str | None = None) -> str:
    result, line = outcome(args, tmp_path)
    assert result == "one-line exit", f"{result}: {line}"
    assert expected is None or expected in line, line
    return line


@pytest.mark.parametrize("args, expected", [
    (["sweep", "{config}", "--threads", "-1"], "Invalid value for '--threads'"),
    (["sweep", "{config}", "--workers", "0"], "Invalid value for '--workers'"),
    (["sweep"], "Missing argument 'config'"),
    (["sweep", "{config}", "--nope"], "No such option: --nope"),
    (["bogus"], "No such command 'bogus'"),
    (["--nope"], "No such option: --nope"),
    (["report", "{config}", "--target"], "Option '--target' requires an argument"),
    (["report", "{config}", "--target", "x"], "Invalid value for '--target'"),
    (["export", "{config}", "dest"], "Missing option '--to'"),
    (["suggest", "{config}", "--threads", "abc"], "Invalid value for '--threads'"),
    (["max-batch", "{config}", "--max", "0"], "Invalid value for '--max'"),
    (["noise", "{config}", "--measurements", "1"], "Invalid value for '--measurements'"),
    (["noise", "{config}", "--steps", "-1"], "Invalid value for '--steps'"),
])
def test_a_usage_mistake_is_one_line_for_every_command(config, tmp_path, args, expected):
    one_line([a.replace("{config}", config) for a in args], tmp_path, expected)


@pytest.mark.parametrize("args, expected", [
    (["noise", "{config}", "--steps", "99999999999999999999"], f"less than or equal to {COUNT_MAX}"),
    (["noise", "{config}", "--measurements", "100000000000000000000"], "Invalid value for '--measurements'"),
    (["max-batch", "{config}", "--max", "100000000000000000000"], f"less than or equal to {COUNT_MAX}"),
    (["sweep", "{config}", "--dry-run", "--workers", "99999999999999999999999"], f"less than or equal to {PARALLEL_MAX}"),
    (["sweep", "{config}", "--dry-run", "--threads", "1025"], f"less than or equal to {PARALLEL_MAX}"),
    (["suggest", "{config}", "--threads", "1025"], f"less than or equal to {PARALLEL_MAX}"),
    (["sweep", "{config}", "--dry-run", "--retries", "-5"], "Invalid value for '--retries'"),
    (["sweep", "{config}", "--dry-run", "--gpus-per-trial", "nan"], "--gpus-per-trial"),
    (["sweep", "{config}", "--dry-run", "--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["sweep", "{config}", "--dry-run", "--gpus", "-1"], "--gpus"),
    (["max-batch", "{config}", "--memory-limit", "1e99GiB"], "--memory-limit '1e99GiB': expected a size"),
    (["max-batch", "{config}", "--memory-limit", "infGiB"], "--memory-limit 'infGiB': expected a size"),
    (["max-batch", "{config}", "--memory-limit", "nanMiB"], "--memory-limit 'nanMiB': expected a size"),
    (["sweep", "{config}", "--dry-run", "--memory-limit", "-1MiB"], "--memory-limit '-1MiB': expected a size"),
    (["report", "{config}", "--target", "nan"], "--target"),
    (["suggest", "{config}", "--target", "inf"], "--target"),
])
def test_every_number_has_a_bound(config, tmp_path, args, expected):
    """Each of these was accepted, then overflowed (a traceback) or ran on silently past a minute."""
    one_line([a.replace("{config}", config) for a in args], tmp_path, expected)


def test_help_and_no_arguments_still_show_the_help(tmp_path):
    result, text = outcome(["sweep", "--help"], tmp_path)
    assert result == "ran" and "--dry-run" in text
    result, text = outcome([], tmp_path)
    assert result == "help" and "Commands" in text


SHADOW = "root:$6$abcdef$hashhashhash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


@pytest.mark.parametrize("command", [["sweep", "--dry-run"], ["noise"], ["max-batch"], ["suggest"]])
def test_a_file_that_is_no_experiment_is_refused_without_echoing_it(tmp_path, command):
    """A password-hash file given as the config: it parses as a mapping of its lines, none a section."""
    (tmp_path / "shadow").write_text(SHADOW)
    line = one_line([command[0], str(tmp_path / "shadow"), *command[1:]], tmp_path,
                    "not a batchlab experiment: none of its 2 top-level keys is a section")
    assert "$6$" not in line and "hash" not in line and "daemon" not in line


def test_an_unknown_key_beside_known_ones_is_echoed_cut_short(write_config, tmp_path):
    path = write_config(text="name: x\n" + "k" * 500 + ": 1\n")
    line = one_line(["sweep", str(path), "--dry-run"], tmp_path, "line 2: kkk")
    assert "k" * 61 not in line


@pytest.mark.parametrize("args", [["report", "{dir}", "--out", ""], ["report", "{dir}", "--out", " "],
                                  ["sweep", "{config}", "--out", ""], ["suggest", "{config}", "--out", ""],
                                  ["export", "{dir}", "", "--to", "tensorboard"]])
def test_an_empty_directory_is_refused_not_taken_for_the_working_directory(config, tmp_path, args):
    (tmp_path / "records").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line([a.replace("{config}", config).replace("{dir}", str(tmp_path / "records")) for a in args], tmp_path,
             "expected a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written where the command ran


@pytest.mark.parametrize("args, expected", [
    (["sweep", "{config}", "--dry-run", "--set", "target.value=[1.5]"], "target: an accuracy target lies above 0 "
                                                                         "and at most 1 (got 1.5)"),
    (["suggest", "{config}", "--target", "2"], "--target 2: an accuracy target lies above 0 and at most 1"),
    (["sweep", "{config}", "--dry-run", "--set", "sweep.batch_size=[16, 16]"], "sweep.batch_size: 16 is listed "
                                                                                "twice"),
    (["sweep", "{config}", "--dry-run", "--set", "sweep.lr=[0.1, '0.1']"], "sweep.lr: 0.1 and '0.1' are the same "
                                                                           "value"),  # one trial id: one folder
])
def test_a_target_out_of_reach_or_a_value_given_twice_is_refused_before_training(config, tmp_path, args, expected):
    """A target no accuracy can reach (suggest trained a 10-trial pilot first), or an axis value given twice (the
    same trial trained twice into one folder)."""
    one_line([a.replace("{config}", config) for a in args], tmp_path, expected)
    assert not (tmp_path / "runs").exists()  # suggest trained nothing


def test_a_sweep_without_a_target_is_warned_and_its_report_says_why_it_cannot_be_made(config, tmp_path):
    """Without target.value the trials train to their budget: the sweep says, before training, that the report
    will need a target, and the report names the missing target (it had called every trial's config damaged)."""
    from typer.testing import CliRunner

    from batchlab.cli import app

    runner = CliRunner()
    swept = runner.invoke(app, ["sweep", config, "--out", str(tmp_path), "--set", "target.value=[]", "--quiet",
                                "--no-time-steps"])
    assert swept.exit_code == 0, swept.output
    assert swept.stderr.splitlines()[0].startswith("warning: no target.value: the trials train to their budget")
    line = one_line(["report", str(tmp_path / "tiny")], tmp_path)
    assert "config.json: no target.value; the report is built on the times to a target" in line
