"""Hostile but fair input: each is one line on stderr and exit code 2, before anything is written."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from batchlab import config
from batchlab.cli import app
from batchlab.errors import ConfigError
from batchlab.fields import COUNT_MAX, NAME_MAX
from batchlab.schema import Experiment

runner = CliRunner()


def one_line_error(config_path, *args, out=None):
    """Run `batchlab sweep` and return its one line, checking exit code 2, no traceback and no records."""
    result = runner.invoke(app, ["sweep", str(config_path), "--out", str(out or config_path.parent / "runs"),
                                 "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("override, expected", [
    ("sweep.lr=[0.1, .inf]", "line 22: sweep.lr: value inf: Input should be a finite number"),
    ("budget.epochs=.inf", "line 9: budget.epochs: Input should be a finite number"),
    ("lr=.nan", "lr: Input should be a finite number"),
    ("target.value=[0.5, .inf]", "line 12: target.value.1: Input should be a finite number"),
    ("optimizer.betas=[0.9, -.inf]", "optimizer.betas.1: Input should be a finite number"),
    ("sweep.lr={base: .inf, base_batch_size: 64}", "sweep.lr: base: Input should be a finite number"),
    ("model.args={scale: .nan}", "model.args: scale: expected a finite number, got nan"),
    ("sweep.model.args.width=[8, .inf]", "sweep.model.args.width: value inf: width: expected a finite number"),
    ("dataset.args={x: [[1.0, .inf]]}", "dataset.args: x[0][1]: expected a finite number, got inf"),
])
def test_non_finite_numbers_are_refused_at_validation_and_nothing_is_written(write_config, tmp_path, override,
                                                                             expected):
    """inf and NaN crashed the sweep writing config.json (strict JSON), leaving config.json.tmp behind."""
    path = write_config()
    line = one_line_error(path, "--set", override)
    assert expected in line and line.startswith(f"error: {path} (with --set)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, expected", [
    ("name: x\nmodel: {args: {a: " + "[" * 600 + "]" * 600 + "}}\n", "nested more than 100 levels deep"),
    ("name: x\nmodel:\n  args:\n    a: " + "[" * 150 + "]" * 150 + "\n", "nested more than 100 levels deep"),
    ("".join("  " * i + f"k{i}:\n" for i in range(700)) + "  " * 700 + "1\n", "nested more than 100 levels deep"),
    ("name: x\nmodel: {args: {a: &a [*a]}}\n", "nested more than 100 levels deep"),  # an alias inside itself
    ("a0: &a0 [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 8)),
     "holds more than 1,000,000 values"),  # 10^8 values by aliases
])
def test_deep_or_huge_yaml_is_one_line(write_config, text, expected):
    """Nested 500+ levels deep, YAML raised RecursionError: 3,000 lines of traceback."""
    path = write_config(text=text)
    assert one_line_error(path, "--dry-run") == f"error: {path}: {expected}"


def test_deep_yaml_in_an_override_is_one_line(write_config):
    path = write_config()
    line = one_line_error(path, "--dry-run", "--set", "model.args.a=" + "[" * 600 + "]" * 600)
    assert line.startswith("error: --set 'model.args.a=[[[[") and line.endswith(": nested more than 100 levels deep")


def test_a_config_nested_deep_from_python_is_refused():
    raw = {"name": "x"}
    for _ in range(200):
        raw = {"a": raw}
    with pytest.raises(ConfigError, match="config: nested more than 100 levels deep"):
        config.load_config({"name": "x", "model": {"args": raw}})


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_name_longer_than_a_file_name_is_refused(write_config, dry_run):
    """A 300-character name failed with "File name too long", even under --dry-run."""
    path = write_config({"name": "a" * 300})
    line = one_line_error(path, *(["--dry-run"] if dry_run else []))
    assert line == f"error: {path}, line 1: name: String should have at most {NAME_MAX} characters"
    assert NAME_MAX == 255  # bytes in a file name (the pattern allows ASCII only: a character is a byte)


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_out_under_a_file_is_refused_and_dry_run_says_so_too(write_config, tmp_path, dry_run):
    """--dry-run passed an --out the run could not write in."""
    path, blocker = write_config({"budget": {"steps": 2}, "sweep": {"lr": [0.1]}}), tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_line_error(path, *(["--dry-run"] if dry_run else []), out=blocker / "runs")
    assert line.startswith(f"error: cannot write {blocker / 'runs'}") and line.endswith(
        f"{blocker} is not a directory"), line


def test_the_longest_name_runs_and_so_does_its_smoke_run(write_config, tmp_path):
    path = write_config({"name": "n" * NAME_MAX, "budget": {"steps": 2}, "sweep": {"lr": [0.1]}})
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet", "--smoke"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / ("n" * (NAME_MAX - 6) + "-smoke") / "trials").is_dir()  # cut to fit


def test_long_axis_values_give_trial_ids_that_fit_a_file_name(write_config, tmp_path):
    path = write_config({"budget": {"steps": 2}, "sweep": {"model.hidden": [[4] * 150, [5] * 150], "lr": [0.1]}})
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    ids = [d.name for d in (tmp_path / "runs" / "tiny" / "trials").iterdir()]
    assert len(ids) == 2 and all(len(i) <= 200 for i in ids)
    assert len({i[:-7] for i in ids}) == 2  # still readable apart: 4x4x.. and 5x5x..


BIG = 10 ** 300


@pytest.mark.parametrize("text, expected", [
    ("batch_size: 0\n", "line 2: batch_size: Input should be greater than or equal to 1"),
    ("batch_size: -1\n", "line 2: batch_size: Input should be greater than or equal to 1"),
    ("batch_size: 1.0e+300\n", f"line 2: batch_size: Input should be less than or equal to {COUNT_MAX}"),  # a whole
    # number, read as that integer (batchlab.scientific), was "Unable to parse input string as an integer"
    (f"batch_size: {BIG}\n", f"line 2: batch_size: Input should be less than or equal to {COUNT_MAX}"),
    (f"sweep: {{batch_size: [8, {BIG}]}}\n", f"line 2: sweep.batch_size: value {str(BIG)[:57]}...: "
                                             f"Input should be less than or equal to {COUNT_MAX}"),
    (f"eval: {{batch_size: {2**63}}}\n", "line 2: eval.batch_size: Input should be less than or equal to"),
    (f"budget: {{steps: {2**63}}}\n", "line 2: budget.steps: Input should be less than or equal to"),
    (f"model: {{hidden: [{2**63}]}}\n", "line 2: model.hidden.0: Input should be less than or equal to"),
    (f"seed: {2**64}\n", f"line 2: seed: Input should be less than or equal to {COUNT_MAX}"),
    ("seed: -1\n", "line 2: seed: Input should be greater than or equal to 0"),
    ("threads: 100000\n", "line 2: threads: Input should be less than or equal to 1024"),
    ("dataset: {num_workers: 100000}\n", "line 2: dataset.num_workers: Input should be less than or equal to 1024"),
    ("eval: {every: 1.0e+308}\n", "line 2: eval.every: Input should be less than or equal to 1000000000000"),
    ("budget: {epochs: 1.0e+308}\n", "line 2: budget.epochs: Input should be less than or equal to 1000000000000"),
    ("schedule: {warmup_epochs: 1.0e+300}\n", "line 2: schedule.warmup_epochs: Input should be less than or equal"),
])
def test_integers_out_of_range_are_one_line(write_config, text, expected):
    """batch_size 1e300 raised OverflowError; seed 2**64 "Overflow when unpacking long long" in the trial;
    threads 100000 crashed the process (a segmentation fault in OpenMP); 1e308 epochs failed the trial with
    "cannot convert float infinity to integer"."""
    path = write_config(text="name: x\n" + text)
    assert one_line_error(path).startswith(f"error: {path}, {expected}")


def test_the_largest_seed_and_batch_size_train(write_config, tmp_path):
    path = write_config({"seed": COUNT_MAX, "batch_size": COUNT_MAX, "budget": {"steps": 2}, "noise": {"every": 1.0},
                         "sweep": {}})
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((tmp_path / "runs" / "tiny" / "trials").glob("*/summary.json")).read_text())
    assert summary["seed"] == COUNT_MAX and summary["steps"] == 2 and summary["status"] != "failed"


def test_an_empty_config_file_is_refused(write_config):
    """An empty file silently trained every default."""
    for text in ("", "# nothing but a comment\n", "~\n"):
        path = write_config(text=text)
        assert one_line_error(path, "--dry-run") == (f"error: {path}: the file is empty; expected a mapping of "
                                                     "sections (name, dataset, model, ...)")


HUGE = "x" * 100_000


@pytest.mark.parametrize("where", ["dataset.name", "unknown key", "sweep axis", "sweep value", "--set", "device",
                                   "lr rule", "model.args", "axis not a list"])
def test_a_huge_value_is_cut_to_a_readable_length(write_config, where):
    """A 100,000-character value was echoed whole."""
    update, args = {
        "dataset.name": ({"dataset": {"name": HUGE}}, []),
        "unknown key": ({HUGE: 1}, []),
        "sweep axis": ({"sweep": {HUGE: [1, 2]}}, []),
        "sweep value": ({"sweep": {"optimizer.name": ["sgd", HUGE]}}, []),
        "--set": ({}, ["--set", HUGE]),  # no "=": echoed as given
        "device": ({"device": HUGE}, []),
        "lr rule": ({"sweep": {"lr": {"base": 0.1, "base_batch_size": 8, HUGE: 1}}}, []),
        "model.args": ({"model": {"name": "mlp", "args": {HUGE: math.inf}}}, []),
        "axis not a list": ({"sweep": {"lr": HUGE}}, []),
    }[where]
    line = one_line_error(write_config(update), "--dry-run", *args)
    assert len(line) < 700 and "xxx..." in line


def test_an_experiment_refuses_a_non_finite_value_from_python():
    with pytest.raises(ValueError, match="finite"):
        Experiment(lr=math.inf)
    with pytest.raises(ValueError, match="a: expected a finite number, got nan"):
        Experiment.model_validate({"model": {"args": {"a": math.nan}}})


@pytest.mark.parametrize("dataset, n", [({"name": "digits", "subset": 1}, 1),
                                        ({"name": "digits", "val_fraction": 0.99999}, 1)])
def test_noise_on_a_tiny_training_set_is_refused_before_training(write_config, tmp_path, dataset, n):
    """With noise on, a training set of one example recorded ZeroDivisionError in every trial."""
    path = write_config({"dataset": dataset, "noise": {"every": 0.5}})
    assert one_line_error(path) == (f"error: {path}, line 27: noise.every: a training set of {n} example is too "
                                    "small to measure the gradient noise scale (two examples at least)")
    assert not (tmp_path / "runs" / "tiny" / "trials").exists()  # refused before any trial started


def test_noise_settings_swept_are_checked_for_every_trial_before_training(write_config, tmp_path):
    """A noise setting may be an axis: the trial it makes unmeasurable is refused before any trial trains, and
    the line names the setting at fault, not the training set (found from the config alone, --dry-run too); a
    pair of axes is judged trial by trial, and with the noise off the sizes are not checked."""
    path = write_config({"noise": {"every": 0.5, "small_batch_size": 64},
                         "sweep": {"batch_size": [64], "lr": [0.1], "noise.batch_size": [512, 100]}})
    expected = ("sweep.noise.batch_size: noise.small_batch_size (64) must be at most half of noise.batch_size (100) "
                "to measure the gradient noise scale: give at most 50, or a larger noise.batch_size")
    assert one_line_error(path).endswith(expected)
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and result.output.strip().endswith(expected), result.output
    joint = write_config({"noise": {"every": 0.5, "batch_size": 128},  # 128 alone is not twice 128: the pair is
                          "sweep": {"batch_size": [64], "lr": [0.1], "noise.small_batch_size": [32, 128],
                                    "noise.batch_size": [512]}})
    result = runner.invoke(app, ["sweep", str(joint), "--dry-run"])
    assert result.exit_code == 0 and "2 trials, 2 to run" in result.output, result.output
    off = write_config({"noise": {"every": None, "batch_size": 64}})  # small_batch_size 64 by default: unused
    result = runner.invoke(app, ["sweep", str(off), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs" / "tiny" / "trials").exists()


def test_the_noise_command_on_a_tiny_training_set_is_one_line(write_config):
    path = write_config({"dataset": {"name": "digits", "subset": 1}})
    result = runner.invoke(app, ["noise", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == (f"error: {path}: noise.every: a training set of 1 example is too small to measure the "
                             "gradient noise scale (two examples at least)\n")


def test_a_small_batch_over_half_the_big_one_is_named_as_the_cause(write_config):
    """It blamed noise.every and the data set's size, which the default noise settings measure well. Capped at a
    small data set, valid settings still measure."""
    path = write_config({"dataset": {"name": "digits", "subset": 100}})  # 100 training examples
    result = runner.invoke(app, ["noise", str(path), "--set", "noise.small_batch_size=80", "--set",
                                 "noise.batch_size=64"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.endswith("noise.small_batch_size: noise.small_batch_size (80) must be at most half of "
                                  "noise.batch_size (64) to measure the gradient noise scale: give at most 32, or a "
                                  "larger noise.batch_size\n")
    for small, big in ((32, 64), (80, 512)):  # the advice; and 80 of 100 examples, capped at 50 and 100
        fine = runner.invoke(app, ["noise", str(path), "--set", f"noise.small_batch_size={small}", "--set",
                                   f"noise.batch_size={big}", "--measurements", "2"])
        assert fine.exit_code == 0, fine.output


def test_a_sweep_axis_below_a_value_that_is_no_mapping_is_one_line(write_config):
    """Sweeping model.args.x.y where model.args.x is 5 raised TypeError."""
    path = write_config({"model": {"name": "mlp", "args": {"x": 5}}, "sweep": {"model.args.x.y": [1]}})
    assert one_line_error(path, "--dry-run") == (f"error: {path}, line 19: sweep.model.args.x.y: value 1: "
                                                 "model.args.x is 5, not a mapping that could hold y")
    path = write_config({"sweep": {"model.args.x": [5], "model.args.x.y": [1]}})  # each fine alone
    assert one_line_error(path, "--dry-run") == ("error: model.args.x is 5, not a mapping that could hold y "
                                                 "(in the trial model.args.x=5, model.args.x.y=1)")


def test_a_config_file_too_large_is_refused_before_it_is_parsed(write_config, tmp_path):
    """55 MB of seeds parsed for minutes at gigabytes before: refused after reading 1 MiB."""
    from batchlab.config import MAX_BYTES

    text = "name: x\nsweep:\n  seed:\n" + "".join(f"  - {i}\n" for i in range(MAX_BYTES // 8))
    assert len(text) > MAX_BYTES
    path = write_config(text=text)
    line = one_line_error(path, "--dry-run")
    assert line == f"error: {path}: over {MAX_BYTES:,} bytes, more than a config holds (a sweep list that long is " \
                   "more trials than one sweep can plan)"


def test_an_endless_file_is_refused_as_too_large(tmp_path):
    line = one_line_error(Path("/dev/zero"), "--dry-run", out=tmp_path / "runs")
    assert "over 1,048,576 bytes" in line


def test_a_grid_over_the_planning_limit_is_refused_even_with_yes(write_config):
    """A million trials would take ~25 minutes and ~15 GB to plan: refused at once, from the axis lengths."""
    from batchlab.grid import TRIALS_LIMIT

    path = write_config(text="name: x\nsweep:\n  seed: [" + ", ".join(map(str, range(1000))) + "]\n  lr: ["
             + ", ".join(f"0.{i + 1:04d}" for i in range(1000)) + "]\n")
    line = one_line_error(path, "--dry-run", "--yes")
    assert line.endswith(f"the sweep expands to 1,000,000 trials, over the {TRIALS_LIMIT:,} one sweep can plan; "
                         "split it into several sweeps (e.g. one per seed)")


def test_an_output_that_is_a_file_is_refused_before_any_work(write_config, tmp_path):
    """sweep --dry-run says what the run would, and cbs refuses before its measurement, not when writing it."""
    cfg, taken = write_config(), tmp_path / "taken"
    taken.write_text("a file, not a folder\n")
    assert one_line_error(cfg, "--dry-run", out=taken) == (
        f"error: cannot write {taken / 'tiny'}: {taken} is not a directory")
    result = runner.invoke(app, ["cbs", str(cfg), "--out", str(taken), "--batch-sizes", "16,32", "--points", "2"])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == f"error: cannot write {taken / 'tiny' / 'cbs'}: {taken} is not a directory\n"
    assert taken.read_text() == "a file, not a folder\n"


def test_noise_of_a_diverged_model_says_so(write_config):
    """lr 1e30: the gradients after 3 steps are not finite; the figures are NaN (null in JSON), and the line says
    why instead of advising on batch sizes."""
    cfg = write_config()
    result = runner.invoke(app, ["noise", str(cfg), "--set", "lr=1e30", "--steps", "3", "--measurements", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == ("  B_simple   nan   (the gradients were not finite: did training "
                                              "diverge? a smaller lr, or fewer --steps)")
    as_json = runner.invoke(app, ["noise", str(cfg), "--set", "lr=1e30", "--steps", "3", "--measurements", "2",
                                  "--json"])
    figures = json.loads(as_json.stdout)
    assert as_json.exit_code == 0 and figures["b_simple"] is None and figures["g2_stderr"] is None


def test_a_device_this_machine_lacks_is_refused_before_anything_is_written(write_config, tmp_path, monkeypatch):
    """device: cuda without CUDA was found as the first trial started, after its directory, sweep.yaml and the
    lock were written: the rerun with device: cpu, the fix the line suggests, was then refused as a different
    experiment. --dry-run passed it. Both refuse it now, writing nothing (a device axis too, named as such)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path, out = write_config({"budget": {"steps": 2}, "sweep": {"batch_size": [64], "lr": [0.1]}}), tmp_path / "runs"
    for args in ([], ["--dry-run"]):
        line = one_line_error(path, "--set", "device=cuda", *args)
        assert line.startswith(f"error: {path} (with --set): device: 'cuda' asked for, but CUDA is not available "
                               "here (torch ") and line.endswith("; use device: auto or cpu"), line
        assert not out.exists()
    line = one_line_error(path, "--set", "sweep.device=[cpu, cuda]")
    assert "sweep.device: 'cuda' asked for" in line and not out.exists()
    result = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--quiet", "--no-time-steps",
                                 "--set", "device=cpu"])
    assert result.exit_code == 0 and "1 completed" in result.output, result.output


def test_a_cuda_index_this_machine_lacks_is_refused(write_config, tmp_path, monkeypatch):
    """cuda:3 on a one-GPU machine passed the check above (only 'no CUDA' was caught) and failed each trial."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    path, out = write_config({"budget": {"steps": 2}, "sweep": {"batch_size": [64], "lr": [0.1]}}), tmp_path / "runs"
    for args in ([], ["--dry-run"]):
        line = one_line_error(path, "--set", "device=cuda:3", *args)
        assert line == (f"error: {path} (with --set): device: 'cuda:3' asked for, but this machine has 1 CUDA device "
                        "(cuda:0); use one of those, or cuda (the current one)"), line
        assert not out.exists()
