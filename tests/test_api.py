"""The Python API's names stay what they are: importing any part of the package never replaces them.

(A subpackage named like an API function, imported lazily, would rebind the package's attribute to the
module on its first import: `batchlab.suggest(...)` then worked once per process.)"""

import importlib
import pkgutil

import batchlab
from batchlab import api


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
