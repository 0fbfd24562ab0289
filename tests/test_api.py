"""The Python API's names stay what they are: importing any part of the package never replaces them.

(A subpackage named like an API function, imported lazily, would rebind the package's attribute to the
module on its first import: `batchlab.suggest(...)` then worked once per process.)"""

import functools
import importlib
import json
import pkgutil
import re

import pytest
import torch

import batchlab
from batchlab import api
from batchlab.errors import ArgumentError, ConfigError, RecordsError

# One trial of ten steps on the digits: what a call needs to run its callables and write its records (at lr 0.5
# it learns: fewer steps, or a smaller lr, and the trial is recorded diverged for learning nothing).
TINY = {"name": "tiny", "dataset": {"name": "digits"}, "budget": {"steps": 10}, "lr": 0.5, "threads": 1,
        "target": {"value": [0.5]}}


class Tiny(torch.nn.Module):
    built: list[int] = []  # the hidden width of each one built (by the checks, then the trial): a partial's keyword

    def __init__(self, input_shape, num_classes, hidden=8):
        super().__init__()
        Tiny.built.append(hidden)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


def recorded_config(sweep_dir) -> dict:
    return json.loads(next((sweep_dir / "trials").iterdir()).joinpath("config.json").read_text())


def test_every_api_name_is_the_api_function_after_importing_every_module():
    for module in pkgutil.walk_packages(batchlab.__path__, "batchlab."):
        if module.name != "batchlab.__main__":  # (runs the command line)
            importlib.import_module(module.name)
    for name in batchlab.__all__:
        if name != "__version__":
            assert getattr(batchlab, name) is getattr(api, name), name


def test_load_records_holds_the_schedule_trials_too(tmp_path):
    from report_fixtures import hit, make_schedule_trial, make_sweep, make_trial

    sweep = make_sweep(tmp_path, "mixed")
    constant = make_trial(sweep, 64, 0.1, hits={0.9: hit(1.0, 40, 64, 16)})
    scheduled = make_schedule_trial(sweep, [(0, 32), (50, 128)], 0.05, reached_at=60)
    records = batchlab.load_records(sweep)
    trials = records.trials.set_index("trial_id")
    assert sorted(trials.index) == sorted([constant.name, scheduled.name])
    assert trials.loc[scheduled.name, "schedule"] == "32→128" and trials.loc[scheduled.name, "batch_size"] == 32
    assert set(records.metrics["trial_id"]) == set(trials.index)


def test_a_misspelt_keyword_is_a_type_error_naming_the_function_called(tmp_path):
    import pytest

    config = {"name": "typo", "dataset": {"name": "digits"}, "target": {"value": [0.9]}}
    plan = api.plan_sweep(config, tmp_path)
    calls = [("sweep", lambda: batchlab.sweep(config, tmp_path, workrs=2)),
             ("sweep", lambda: batchlab.sweep(config, tmp_path, plan=plan, workrs=2)),  # a plan given: checked too
             ("plan_sweep", lambda: api.plan_sweep(config, tmp_path, smok=True)),
             ("suggest", lambda: batchlab.suggest(config, tmp_path, targte=0.9)),
             ("noise_scale", lambda: batchlab.noise_scale(config, step=3)),
             ("cbs", lambda: batchlab.cbs(config, tmp_path, windw=5)),
             ("find_max_batch", lambda: batchlab.find_max_batch(config, memory_limt=10))]
    for name, call in calls:
        with pytest.raises(TypeError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"batchlab.{name}() got an unexpected keyword argument"), message
        assert "load_config" not in message
        assert "a callable for dataset, model, loss, optimizer" in message
    assert not any(tmp_path.iterdir())  # nothing was written


def test_a_lambda_a_partial_or_an_object_runs_in_this_process_and_the_records_name_it(tmp_path):
    Tiny.built.clear()
    steps = []  # the optimizer lambda's: it ran, not the model lambda of the same name in its place
    result = batchlab.sweep({**TINY, "name": "lambdas"}, tmp_path, time_steps=False,
                            model=lambda input_shape, num_classes: Tiny(input_shape, num_classes, hidden=6),
                            optimizer=lambda params, lr: steps.append(lr) or torch.optim.SGD(params, lr=lr),
                            loss=torch.nn.CrossEntropyLoss())
    assert result.counts == {"completed": 1} and set(Tiny.built) == {6} and set(steps) == {0.5}
    names = {part: recorded_config(result.path)[part]["name"] for part in ("model", "optimizer", "loss")}
    here = "test_a_lambda_a_partial_or_an_object_runs_in_this_process_and_the_records_name_it.<locals>.<lambda>"
    assert re.fullmatch(rf"[\w.]+:{re.escape(here)}\.<[0-9a-f]{{8}}>", names["model"]), names["model"]
    assert names["optimizer"].startswith(names["model"][:-10]) and names["optimizer"] != names["model"]  # stamped
    assert re.fullmatch(r"torch\.nn\.modules\.loss:CrossEntropyLoss\.<instance>\.<[0-9a-f]{8}>", names["loss"])

    Tiny.built.clear()
    partial = batchlab.sweep({**TINY, "name": "partial"}, tmp_path, time_steps=False,
                             model=functools.partial(Tiny, hidden=5))
    assert partial.counts == {"completed": 1} and set(Tiny.built) == {5}
    assert re.search(r":Tiny\.<partial>\.<[0-9a-f]{8}>$", recorded_config(partial.path)["model"]["name"])


def test_two_partials_or_lambdas_of_one_name_are_two_experiments(tmp_path):
    """partial(Tiny, hidden=5) and hidden=500 (or two lambdas) shared a name, so the second sweep into the same
    records counted the first one's trial as its own, and a plan made before another took the later callable."""
    same = {**TINY, "name": "same"}
    first = batchlab.sweep(same, tmp_path, time_steps=False, model=functools.partial(Tiny, hidden=5))
    assert first.ran == {"completed": 1}
    with pytest.raises(RecordsError, match="holds trials of a different experiment: model.name changed"):
        batchlab.sweep(same, tmp_path, time_steps=False, model=functools.partial(Tiny, hidden=500))
    again = batchlab.sweep(same, tmp_path, time_steps=False, model=functools.partial(Tiny, hidden=5))
    assert again.ran == {} and again.skipped == 1  # the same partial again: its records

    Tiny.built.clear()
    early = api.plan_sweep({**TINY, "name": "early"}, tmp_path,
                           model=lambda input_shape, num_classes: Tiny(input_shape, num_classes, 3))
    late = api.plan_sweep({**TINY, "name": "late"}, tmp_path,
                          model=lambda input_shape, num_classes: Tiny(input_shape, num_classes, 4))
    assert early.experiment.model.name != late.experiment.model.name
    batchlab.sweep(None, plan=early, time_steps=False)
    assert Tiny.built and set(Tiny.built) == {3}  # the early plan's own lambda


@pytest.mark.parametrize("given, why", [
    (functools.partial(Tiny, hidden=5), "as a functools.partial"),
    (lambda input_shape, num_classes: Tiny(input_shape, num_classes), "as a lambda")])
def test_a_lambda_or_a_partial_another_process_would_import_is_refused_before_anything_runs(tmp_path, given, why):
    with pytest.raises(ConfigError, match=f"handed over from Python {why}, which worker processes cannot import; "
                                          "move it into a module"):
        batchlab.sweep({**TINY, "name": "workers"}, tmp_path, model=given, workers=2)
    with pytest.raises(ConfigError, match=f"{why}, which the search's child process cannot import"):
        batchlab.find_max_batch(TINY, model=given, max_batch=8)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("call, message", [
    (lambda out: batchlab.sweep(TINY, out, workers=0), "batchlab.sweep(workers=0): expected a whole number from 1"),
    (lambda out: batchlab.sweep(TINY, out, workers="2"), "batchlab.sweep(workers='2'): expected a whole number"),
    (lambda out: batchlab.sweep(TINY, out, retries=-1), "batchlab.sweep(retries=-1): expected a whole number from 0"),
    (lambda out: batchlab.sweep(TINY, out, gpus="0,1"), "batchlab.sweep(gpus='0,1'): expected a list of CUDA device"),
    (lambda out: batchlab.sweep(TINY, out, threads=0), "batchlab.sweep(threads=0): expected a whole number from 1"),
    (lambda out: batchlab.sweep(TINY, 3), "batchlab.sweep(out=3): expected a path"),
    (lambda out: batchlab.sweep(TINY, ""), "batchlab.sweep(out=''): expected a path"),
    (lambda out: batchlab.sweep(TINY, out, overrides=3), "batchlab.sweep(overrides=3): expected {"),
    (lambda out: api.plan_sweep(TINY, out, memory_limit=0), "batchlab.plan_sweep(memory_limit=0): expected bytes"),
    (lambda out: api.check_plan(api.plan_sweep(TINY, out), workers=0), "batchlab.check_plan(workers=0): expected"),
    (lambda out: batchlab.find_max_batch(TINY, memory_limit="64XB"),
     "batchlab.find_max_batch(memory_limit='64XB'): expected a size such as 512MiB, 2GiB or 1000000"),
    (lambda out: batchlab.find_max_batch(TINY, max_batch=0), "batchlab.find_max_batch(max_batch=0): expected a whole"),
    (lambda out: batchlab.noise_scale(TINY, steps=-1), "batchlab.noise_scale(steps=-1): expected a whole number"),
    (lambda out: batchlab.noise_scale(TINY, measurements=1),
     "batchlab.noise_scale(measurements=1): expected a whole number from 2 to 100,000"),
    (lambda out: batchlab.suggest(TINY, out, budget=0), "batchlab.suggest(budget=0): expected a finite number above 0"),
    (lambda out: batchlab.suggest(TINY, out, target=float("nan")), "batchlab.suggest(target=nan): expected a finite"),
    (lambda out: batchlab.cbs(TINY, out, tolerance="1"), "batchlab.cbs(tolerance='1'): expected a number"),
    (lambda out: batchlab.report(out, target="0.9"), "batchlab.report(target='0.9'): expected a finite number"),
    (lambda out: batchlab.load_records(None), "batchlab.load_records(path=None): expected a path")])
def test_a_wrong_argument_is_one_error_naming_the_function_and_the_argument(tmp_path, call, message):
    with pytest.raises(ArgumentError) as raised:
        call(tmp_path)
    assert str(raised.value).startswith(message), str(raised.value)
    assert isinstance(raised.value, ValueError) and not any(tmp_path.iterdir())  # refused before any work


def test_one_override_string_and_a_memory_limit_as_the_command_line_writes_them(tmp_path):
    result = batchlab.sweep({**TINY, "name": "one"}, tmp_path, overrides="budget.steps=4", time_steps=False)
    assert list(result.trials["steps"]) == [4]  # one override, not a character at a time ('b': expected path=value)
    found = batchlab.find_max_batch(TINY, "threads=1", memory_limit="256MiB", max_batch=8)
    assert found.limit_bytes == 256 * 2**20 and found.batch_size == 8
    found = batchlab.find_max_batch(TINY, "threads=1", memory_limit=2.5 * 2**27, max_batch=8)  # bytes as a float
    assert found.limit_bytes == 335544320 and found.batch_size == 8


def test_a_rerun_counts_the_trials_already_recorded(tmp_path):
    first = batchlab.sweep({**TINY, "name": "again"}, tmp_path, time_steps=False)
    again = batchlab.sweep({**TINY, "name": "again"}, tmp_path, time_steps=False)
    assert first.counts == first.ran == {"completed": 1} and first.skipped == 0
    assert again.counts == {"completed": 1} and len(again.trials) == 1  # what trials holds: it was {}
    assert again.ran == {} and again.skipped == 1 and again.summaries == []
