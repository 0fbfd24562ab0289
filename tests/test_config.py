"""Config validation, overrides and sweep expansion."""

import pytest
from typer.testing import CliRunner

from batchlab import api, config
from batchlab.cli import app
from batchlab.errors import BatchlabWarning, ConfigError
from batchlab.grid import MAX_TRIALS, expand

runner = CliRunner()


def sweep_error(path, *args):
    result = runner.invoke(app, ["sweep", str(path), "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("text, expected", [
    ("name: x\nmodle: {name: mlp}\n", "line 2: modle: unknown key"),
    ("!!float ", "a YAML value cannot be read (IndexError"),  # PyYAML's own crash, found by the fuzzer
    ("name: !!int abc\n", "a YAML value cannot be read (ValueError: invalid literal for int()"),
    ("name: x\nmodel:\n  name: mlp\n  hiden: [3]\n", "line 4: model.hiden: unknown key"),
    ("name: x\nbatch_size: 0\n", "line 2: batch_size: Input should be greater than or equal to 1"),
    ("name: x\nlr: -0.1\n", "line 2: lr: Input should be greater than 0"),
    ("name: x\nlr: fast\n", "lr: Input should be a valid number"),
    ("dataset: {name: imagenet}\n", "line 1: dataset.name: 'imagenet' is not one of digits, mnist, fashion-mnist, "
                                    "linear, npz, image-folder, chars, tokens, nor an import path like "
                                    "package.module:attribute"),
    ("model: {name: resnet}\n", "model.name: 'resnet' is not one of linear, logreg, mlp, lenet5"),
    ("optimizer: {name: lion}\n", "optimizer.name: 'lion' is not one of sgd, adam, adamw"),
    ("sweep:\n  batch_size: []\n", "sweep.batch_size: empty list"),
    ("sweep:\n  model.widht: [1, 2]\n", "sweep.model.widht: names no config field"),
    ("sweep:\n  batch_size: [8, 0]\n", "line 2: sweep.batch_size: value 0: Input should be greater than or equal to 1"),
    ("sweep:\n  lr: [0.1, -1]\n", "line 2: sweep.lr: value -1: Input should be greater than 0"),
    ("name: x\n  bad: indent: here\n", "line 2: YAML syntax error"),
    ("- a\n- b\n", "expected a mapping of sections"),
    ("budget: {epochs: 1, steps: 3}\n", "budget: give exactly one of epochs, steps, examples"),
    ("optimizer: {name: sgd, nesterov: true}\n", "optimizer: nesterov: true needs momentum > 0"),
    ("budget: {steps: yes}\n",  # pydantic alone takes a boolean as 1: this trained one step, silently
     "line 1: budget.steps: expected a number, got the boolean true (YAML reads yes/no, on/off too)"),
    ("name: x\nlr: off\n", "line 2: lr: expected a number, got the boolean false"),
    ("sweep:\n  batch_size: [8, true]\n", "line 2: sweep.batch_size: value True: expected a number, got the boolean"),
    ("model: {name: mlp, hidden: [yes, 64]}\n", "line 1: model.hidden: expected a number, got the boolean true"),
    ("sweep:\n  lr: {base: 0.1, base_batch_size: 64, factors: [on, 2]}\n",
     "line 2: sweep.lr: factors: expected a number, got the boolean true"),
    ("batch_size: {schedule: [[0, 8], [yes, 16]]}\n", "batch_size: schedule point 2: expected a number, got the boolean "
                                                     "true"),
    ("name: x\nsweep:\n  lr: [0.1]\n  seed: [0]\n  lr: [0.4]\n",  # PyYAML alone would train at 0.4, silently
     "line 5: 'lr' is given twice in one mapping (first on line 3); YAML would keep only the last: remove one"),
    ("name: x\nmodel: {name: mlp, name: linear}\n", "line 2: 'name' is given twice in one mapping (first on line 2)"),
])
def test_bad_config_is_one_readable_line(write_config, text, expected):
    path = write_config(text=text)
    out = sweep_error(path)
    assert expected in out
    assert str(path) in out
    assert out.startswith("error: ")


def test_a_key_given_twice_in_an_override_is_refused_and_a_merge_may_be_overridden():
    with pytest.raises(ConfigError, match=r"--set x, line 1: 'a' is given twice in one mapping"):
        config.parse_yaml("{a: 1, b: 2, a: 3}", "--set x")
    # a << merge's keys are not the mapping's own: overriding one is what merges are for
    merged = config.parse_yaml("base: &b {lr: 0.1, seed: 0}\nrun:\n  <<: *b\n  lr: 0.4\n", "config")
    assert merged["run"] == {"lr": 0.4, "seed": 0}
    # a merged mapping merged again: PyYAML writes the first merge into the anchored node before reading it
    nested = config.parse_yaml("a: &a {x: 1}\nc: &c\n  <<: *a\n  x: 2\nd:\n  <<: *c\n", "config")
    assert nested == {"a": {"x": 1}, "c": {"x": 2}, "d": {"x": 2}}


def test_an_error_found_after_validation_says_the_value_came_from_set(write_config):
    """The file's line holds the key, not the value at fault, when --set gave it: the line says so, as a
    validation error's does."""
    path = write_config(text="name: x\nsweep:\n  batch_size: [8]\n  lr: [0.1]\n")
    assert sweep_error(path, "--set", "sweep.batch_size=[8, 8]").strip() == (
        f"error: {path} (with --set), line 3: sweep.batch_size: 8 is listed twice; each trial runs once, so give "
        "it once")
    path.write_text("name: x\nsweep:\n  batch_size: [8, 8]\n  lr: [0.1]\n")
    assert sweep_error(path).startswith(f"error: {path}, line 3: sweep.batch_size: 8 is listed twice")


def test_missing_file_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["sweep", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_unreadable_file_is_exit_2(write_config):
    path = write_config(text="name: x\n")
    path.write_bytes(b"\xff\xfe\x00bad")
    assert "cannot read" in sweep_error(path)


def test_bad_override_is_exit_2(write_config):
    path = write_config()
    assert "expected path=value" in sweep_error(path, "--set", "budget.epochs")
    assert "budget.epochs: Input should be greater than 0" in sweep_error(path, "--set", "budget.epochs=-1")
    assert "(with --set)" in sweep_error(path, "--set", "budget.epoch=2")
    # a forgotten value unset the field (YAML reads nothing as null): the budget fell silently to 1 epoch
    assert sweep_error(path, "--set", "budget.epochs=") == ("error: --set 'budget.epochs=': no value after '='; "
                                                           "to unset the field, write budget.epochs=null\n")
    assert config.load(path, ["noise.every=null"]).noise.every is None  # unsetting, said so, still works


def test_overrides_apply_before_validation(write_config):
    path = write_config()
    exp = config.load(path, ["budget.epochs=2", "sweep.batch_size=[8, 16, 32]", "sweep.optimizer.momentum=[0, 0.9]",
                                  "model.hidden=[32, 16]"])
    assert exp.budget.epochs == 2.0
    assert exp.sweep == {"batch_size": [8, 16, 32], "lr": [0.1, 0.5], "optimizer.momentum": [0, 0.9]}
    assert exp.model.hidden == [32, 16]


def test_a_count_in_scientific_notation_is_that_count(write_config):
    """YAML 1.1 reads 3e6 as text: `budget.tokens: 3e6` was 'unable to parse string as an integer', and a schedule's
    point 2e3 was kept as the text '2e3'. A whole number so written is that integer wherever a count is read."""
    path = write_config(text="name: x\nbudget: {steps: 1e2}\nmodel: {name: mlp, hidden: [1.6e1]}\nseed: 1E1\n"
                             "batch_size: {schedule: [[0, 1.6e1], [2e3, 6.4e1]]}\n")
    exp = config.load(path)
    assert (exp.budget.steps, exp.model.hidden, exp.seed, exp.batch_size) == (100, [16], 10, 16)
    assert exp.batch_schedule.schedule == [(0, 16), (2000, 64)] and isinstance(exp.batch_schedule.schedule[1][0], int)
    assert config.load(path, ["budget.tokens=3e6"]).budget.tokens == 3_000_000
    assert config.load(path, ["batch_size={follow: noise, min: 1.6e1, max: 6.4e1}", "noise.every=0.5"]
                       ).batch_schedule.max == 64
    assert config.load_config({"budget": {"examples": 3e6}}).budget.examples == 3_000_000  # a float, from Python
    swept = config.load(path, ["sweep.budget.steps=[2e1]", "sweep.batch_size=[3.2e1, {schedule: [[0, 16], [2e3, 64]]}]",
                               "sweep.lr=[1e-3]", "sweep.seed=[1e0]"]).sweep
    assert swept == {"budget.steps": [20], "batch_size": [32, {"schedule": [[0, 16], [2000, 64]]}], "lr": [0.001],
                     "seed": [1]}  # an axis's values as numbers: trial ids, smoke, cbs and suggest read them
    assert all(type(v) is int for v in (swept["budget.steps"][0], swept["batch_size"][0], swept["seed"][0]))
    # not whole: the field's own error; plain digits quoted stay text, refused where a batch size is strict
    assert sweep_error(path, "--set", "budget.steps=2.5e0").strip() == (
        f"error: {path} (with --set), line 2: budget.steps: Input should be a valid integer, got a number with a "
        "fractional part")
    assert "schedule point 2: the batch size must be a whole number >= 1, got '64'" in sweep_error(
        path, "--set", "batch_size={schedule: [[0, 16], [2e3, '64']]}")


def test_a_field_a_sweep_axis_overrides_is_warned_about_once(write_config, tmp_path):
    """`batch_size: 32` and `lr: 0.5` beside `sweep: {batch_size: [16, 64], lr: [0.1]}` ran 16 and 64 at 0.1 without a
    word. Not for a default, nor for a value one of the trials trains with."""
    path = write_config(text="name: both\ndataset: {name: digits}\nbatch_size: 32\nlr: 0.5\nbudget: {steps: 5}\n"
                             "target: {value: [0.5]}\nsweep: {batch_size: [16, 64], lr: [0.1]}\n")
    result = runner.invoke(app, ["sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {path}, line 3: batch_size: given, but sweep.batch_size sets every trial's, to other values: the "
        "sweep axis wins, and no trial of the sweep trains with this one (batchlab cbs and batchlab noise use the "
        "top-level batch_size)",
        f"warning: {path}, line 4: lr: given, but sweep.lr sets every trial's, to other values: the sweep axis wins, "
        "and no trial of the sweep trains with this one (batchlab cbs and batchlab noise use the top-level lr)"]
    quiet = runner.invoke(app, ["sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs"), "--set",
                                "batch_size=16", "--set", "sweep.lr=[0.1, 0.5]"])
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.output  # each trained with by some trial
    path.write_text("name: both\ntarget: {value: [0.5]}\nsweep: {batch_size: [16], seed: [1]}\n")
    assert runner.invoke(app, ["sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs")]).stderr == ""
    with pytest.warns(BatchlabWarning) as caught:  # set by an override; the Python API's sweep plans alike
        api.plan_sweep(str(path), tmp_path / "runs", ["seed=3"])
    assert [str(w.message) for w in caught] == [
        f"{path} (with --set): seed: given, but sweep.seed sets every trial's, to other values: the sweep axis "
        "wins, and no trial of the sweep trains with this one (batchlab noise uses the top-level seed)"]


def test_one_target_value_is_a_list_of_one_and_an_empty_one_is_none(write_config):
    path = write_config()
    assert config.load(path, ["target.value=0.9"]).target.value == [0.9]
    assert config.load(path, ["target.value=null"]).target.value == []  # YAML's `value:` with nothing after it
    assert config.load(path, ["target={value: }"]).target.value == []


def test_expansion_is_the_cartesian_product_with_stable_readable_ids(write_config):
    exp = config.load(write_config(), ["sweep.seed=[0, 1]", "sweep.model.hidden=[[8], [16, 8]]"])
    trials = expand(exp)
    assert len(trials) == 2 * 2 * 2 * 2
    # a list that is a value is never an axis: model.hidden takes whole lists
    assert {tuple(t.config.model.hidden) for t in trials} == {(8,), (16, 8)}
    assert len({t.id for t in trials}) == len(trials)
    t = next(t for t in trials if t.axes == {"batch_size": 64, "lr": 0.5, "seed": 1, "model.hidden": [16, 8]})
    assert t.id.startswith("bs0064-lr0.5-s1-hidden16x8-")
    assert t.config.batch_size == 64 and t.config.lr == 0.5 and t.config.seed == 1
    assert t.config.sweep == {}
    # the same trial in a bigger grid keeps its id
    exp2 = config.load(write_config(), ["sweep.seed=[0, 1, 2]", "sweep.model.hidden=[[8], [16, 8]]",
                                              "sweep.batch_size=[64, 512, 1024]"])
    assert t.id in {u.id for u in expand(exp2)}


def test_absurd_grid_needs_yes(write_config):
    path = write_config({"sweep": {"batch_size": list(range(1, 102)), "lr": [0.001 * i for i in range(1, 101)]}})
    assert f"over {MAX_TRIALS:,}" in sweep_error(path)
    exp = config.load(path)
    with pytest.raises(ConfigError):
        expand(exp)
    assert len(expand(exp, allow_many=True)) == 101 * 100


def test_dry_run_prints_the_trial_table(write_config):
    result = runner.invoke(app, ["sweep", str(write_config()), "--dry-run", "--out", "unused"])
    assert result.exit_code == 0, result.output
    assert "bs0064-lr0.1-s0-" in result.output
    assert "4 trials, 4 to run" in result.output


def test_dry_run_refuses_what_the_run_would_refuse_before_training(write_config, tmp_path):
    """It said "4 trials, 4 to run" where the run then refused the records (a changed budget), an unknown
    executor, or dask's options without dask; and it writes nothing."""
    cfg = str(write_config({"budget": {"steps": 2}, "sweep": {"batch_size": [64], "lr": [0.1]}}))
    out = str(tmp_path / "runs")
    assert runner.invoke(app, ["sweep", cfg, "--out", out, "--quiet", "--no-time-steps"]).exit_code == 0
    recorded = sorted(p.name for p in (tmp_path / "runs" / "tiny" / "trials").iterdir())
    for args, expected in (
            (["--set", "budget.steps=3"], "holds trials of a different experiment: budget.steps changed"),
            (["--executor", "foo"], "executor 'foo': choose from local, dask"),
            (["--retries", "3"], "are for the dask executor (--executor dask)")):
        result = runner.invoke(app, ["sweep", cfg, "--out", out, "--dry-run", *args])
        assert result.exit_code == 2 and expected in result.output, (args, result.output)
        assert result.output.count("\n") == 1 and "to run" not in result.output
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "trials").iterdir()) == recorded
    missing = str(write_config({"model": {"name": "nosuchmodule:Net"}}, name="missing.yaml"))
    result = runner.invoke(app, ["sweep", missing, "--out", out, "--dry-run"])  # user code that does not import
    assert result.exit_code == 2 and "model.name: cannot import 'nosuchmodule'" in result.output, result.output
    fresh = runner.invoke(app, ["sweep", cfg, "--out", str(tmp_path / "elsewhere"), "--dry-run"])
    assert fresh.exit_code == 0 and "1 trial, 1 to run" in fresh.output and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("scale, expected", [("linear", lambda b: 0.1 * b / 128), ("sqrt", lambda b: 0.1 * (b / 128) ** 0.5),
                                             ("none", lambda b: 0.1)])
def test_lr_rule_gives_each_batch_size_its_lr_and_factors(write_config, scale, expected):
    rule = {"base": 0.1, "base_batch_size": 128, "scale": scale, "warmup_epochs": 2, "factors": [0.5, 1, 2]}
    exp = config.load(write_config({"sweep": {"batch_size": [32, 128, 512], "lr": rule}}))
    trials = expand(exp)
    assert len(trials) == 9
    for t in trials:
        b, f = t.config.batch_size, t.axes["lr_factor"]
        assert t.config.lr == pytest.approx(expected(b) * f)
        assert t.axes["lr"] == t.config.lr
        assert t.config.schedule.warmup_epochs == 2
        assert t.resolved()["lr_rule"]["scale"] == scale
    assert {t.id.split("-")[3] for t in trials} == {"lrx0.5", "lrx1", "lrx2"}


@pytest.mark.parametrize("text, expected", [
    ("sweep:\n  lr: {base: 0.1, base_batch_size: 128, factors: [1, -2]}\n", "factors must all be > 0"),
    ("sweep:\n  lr: {base: 0.1}\n", "line 2: sweep.lr: base_batch_size: Field required"),
    ("sweep:\n  lr: {base: 0.1, base_batch_size: 128, scale: cubic}\n", "expected one of 'linear', 'sqrt' or 'none'"),
    ("sweep:\n  batch_size: {base: 0.1, base_batch_size: 128}\n", "sweep.batch_size: only lr can be a rule"),
    ("sweep:\n  batch_size: 64\n", "line 2: sweep.batch_size: expected a list of values"),
])
def test_bad_lr_rule(write_config, text, expected):
    assert expected in sweep_error(write_config(text=text))
