"""`batchlab export` on a real tiny sweep, read back with TensorBoard's and MLflow's own readers."""

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.export import export

runner = CliRunner()
TARGETS = (0.3, 0.999)  # the first is reached at once, the second never (1 epoch of digits)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    cfg = tmp / "exp.yaml"
    cfg.write_text(json.dumps({
        "name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]}, "threads": 1,
        "budget": {"epochs": 1}, "eval": {"every": 0.5}, "noise": {"every": 0.5, "batch_size": 256},
        "target": {"value": list(TARGETS)},
        "sweep": {"batch_size": [32, 128], "lr": [0.3], "optimizer.momentum": [0.0, 0.9]}}))
    result = runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp), "--quiet"])
    assert result.exit_code == 0, result.output
    (tmp / "tiny" / "report").mkdir()
    (tmp / "tiny" / "report" / "report.md").write_text("# a report\n")
    return tmp / "tiny"


def trials(sweep):
    """(trial dir, summary.json, config.json, metrics.csv rows), read here with json and csv only."""
    out = []
    for d in sorted((sweep / "trials").iterdir()):
        with open(d / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        out.append((d, json.loads((d / "summary.json").read_text()), json.loads((d / "config.json").read_text()),
                    rows))
    assert len(out) == 4 and all(s["status"] == "completed" for _, s, _, _ in out)
    assert all(s["targets"]["0.3"] and s["targets"]["0.999"] is None for _, s, _, _ in out)
    return out


def recorded(rows, column, x="step"):
    """(x, value) for the non-empty cells of a metrics.csv column."""
    return [(int(r[x]), float(r[column])) for r in rows if r[column] != ""]


def started(summary) -> float:
    return datetime.fromisoformat(summary["started_at"]).timestamp()


def test_tensorboard_scalars_and_hparams_are_the_records(sweep, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = runner.invoke(app, ["export", str(sweep), "--to", "tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert f"tiny: 4 trials -> {tmp_path / 'tb' / 'tiny'}" in result.output
    for trial_dir, summary, config, rows in trials(sweep):
        events = EventAccumulator(str(tmp_path / "tb" / "tiny" / trial_dir.name), size_guidance={"scalars": 0})
        events.Reload()
        columns = [c for c in rows[0] if c != "step"]
        assert "noise_b_simple" in columns and "train_eval_accuracy" in columns
        for column in columns:
            # TensorBoard keeps scalars as float32: equal to the CSV value rounded to float32, row for row.
            expected = [(step, np.float32(value)) for step, value in recorded(rows, column)]
            if not expected:  # a column this task never fills (tokens: sequence tasks only)
                assert column not in events.Tags()["scalars"], column
                continue
            assert [(e.step, e.value) for e in events.Scalars(column)] == expected, column
        by_examples = [(e.step, e.value) for e in events.Scalars("by_examples/test_accuracy")]
        assert by_examples == [(n, np.float32(v)) for n, v in recorded(rows, "test_accuracy", x="examples")]
        # Each point is stamped started_at + train_seconds: relative time is the training clock.
        seconds = [float(r["train_seconds"]) for r in rows if r["test_loss"] != ""]
        walls = [e.wall_time for e in events.Scalars("test_loss")]
        assert walls == pytest.approx([started(summary) + s for s in seconds], abs=1e-3)

        figures = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("summary/")}
        assert figures["summary/final_test_accuracy"] == np.float32(summary["final"]["test_accuracy"])
        assert figures["summary/final_test_loss"] == np.float32(summary["final"]["test_loss"])
        assert figures["summary/seconds_to_0.3"] == np.float32(summary["targets"]["0.3"]["seconds"])
        assert figures["summary/steps_to_0.3"] == summary["targets"]["0.3"]["steps"]
        assert not [tag for tag in figures if tag.endswith("_to_0.999")]  # missed: left out

        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = start.session_start_info.hparams
        assert hparams["batch_size"].number_value == config["batch_size"] == summary["batch_size"]
        assert hparams["lr"].number_value == config["lr"]
        assert hparams["seed"].number_value == config["seed"]
        assert hparams["optimizer.momentum"].number_value == config["optimizer"]["momentum"]
        assert hparams["status"].string_value == "completed"
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        metrics = {m.name.tag for m in experiment.metric_infos}
        assert {"summary/seconds_to_0.3", "summary/seconds_to_0.999", "summary/final_test_accuracy"} <= metrics


def test_tensorboard_export_twice_rewrites_instead_of_appending(sweep, tmp_path):
    calls = []
    for _ in range(2):
        results, warnings = export(sweep, "tensorboard", str(tmp_path), progress=lambda *a: calls.append(a))
        assert warnings == [] and [(r.sweep, r.written) for r in results] == [("tiny", 4)]
    assert calls == [(i, 4) for i in range(1, 5)] * 2
    for run_dir in (tmp_path / "tiny").iterdir():
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1


@pytest.fixture(params=["dir", "sqlite"])
def store(request, tmp_path, monkeypatch):
    # The file store is refused by MLflow 3 unless allowed; the export allows it, our reader must too.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return str(tmp_path / "mlruns") if request.param == "dir" else f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"


def test_mlflow_params_metrics_and_tags_are_the_records(sweep, store, tmp_path):
    from mlflow.tracking import MlflowClient

    result = runner.invoke(app, ["export", str(sweep), "--to", "mlflow", store])
    assert result.exit_code == 0, result.output
    assert "tiny: 4 runs written, 0 unchanged, report/ as artifacts" in result.output
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == 5  # a run per trial, and one holding the report
    for trial_dir, summary, config, rows in trials(sweep):
        run = runs.pop(trial_dir.name)
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert (tags["trial_id"], tags["status"], tags["device"], tags["torch_version"]) == \
            (trial_dir.name, "completed", summary["device"], summary["torch_version"])
        params = run.data.params
        assert params["batch_size"] == str(config["batch_size"]) and params["lr"] == str(config["lr"])
        assert params["optimizer.momentum"] == str(config["optimizer"]["momentum"])
        assert params["model.name"] == "mlp" and params["dataset.name"] == "digits"
        assert params["model.hidden"] == "[16]" and params["target.value"] == str(list(TARGETS))

        for column in [c for c in rows[0] if c != "step"]:
            history = sorted(client.get_metric_history(run.info.run_id, column), key=lambda m: m.step)
            assert [(m.step, m.value) for m in history] == recorded(rows, column), column
        stamps = [m.timestamp for m in sorted(client.get_metric_history(run.info.run_id, "test_loss"),
                                              key=lambda m: m.step)]
        seconds = [float(r["train_seconds"]) for r in rows if r["test_loss"] != ""]
        assert stamps == pytest.approx([1000 * (started(summary) + s) for s in seconds], abs=1)

        metrics = run.data.metrics
        assert metrics["summary/final_test_accuracy"] == summary["final"]["test_accuracy"]
        assert metrics["summary/seconds_to_0.3"] == summary["targets"]["0.3"]["seconds"]
        assert metrics["summary/examples_to_0.3"] == summary["targets"]["0.3"]["examples"]
        assert metrics["summary/samples_per_second"] == summary["samples_per_second"]
        assert not [m for m in metrics if m.endswith("_to_0.999")]  # missed: left out
    report = runs.pop("report")
    assert [a.path for a in client.list_artifacts(report.info.run_id, "report")] == ["report/report.md"]

    again = runner.invoke(app, ["export", str(sweep), "--to", "mlflow", store])
    assert again.exit_code == 0 and "tiny: 0 runs written, 4 unchanged" in again.output, again.output
    assert len(client.search_runs([experiment.experiment_id])) == 5


def test_mlflow_replaces_the_run_of_a_changed_record(sweep, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    copy, store = tmp_path / "tiny", str(tmp_path / "mlruns")
    shutil.copytree(sweep, copy)
    export(copy, "mlflow", store)
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    before = {r.info.run_name: r.info.run_id for r in client.search_runs([experiment])}

    rerun = sorted((copy / "trials").iterdir())[0]  # as if trained again: a new start time
    summary = json.loads((rerun / "summary.json").read_text())
    summary["started_at"] = "2030-01-01T00:00:00+00:00"
    (rerun / "summary.json").write_text(json.dumps(summary))
    results, _ = export(copy, "mlflow", store)
    assert (results[0].written, results[0].unchanged) == (1, 3)
    after = {r.info.run_name: r.info.run_id for r in client.search_runs([experiment])}
    assert after.keys() == before.keys()
    assert [name for name in after if after[name] != before[name]] == [rerun.name]
    assert client.get_run(before[rerun.name]).info.lifecycle_stage == "deleted"


@pytest.mark.parametrize("to, module, package", [("tensorboard", "torch.utils.tensorboard", "tensorboard"),
                                                 ("mlflow", "mlflow", "mlflow-skinny")])
def test_a_missing_extra_is_one_line_naming_the_install(sweep, tmp_path, monkeypatch, to, module, package):
    for name in [m for m in sys.modules if m.startswith(module + ".")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if the package were not installed
    result = runner.invoke(app, ["export", str(sweep), "--to", to, str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert f"the {package} package" in result.output and f"pip install 'batchlab[{to}]'" in result.output
    assert not (tmp_path / "out").exists()


def test_a_damaged_record_is_a_warning_and_the_rest_is_exported(sweep, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    copy = tmp_path / "records" / "tiny"
    shutil.copytree(sweep, copy)
    damaged, truncated, running, _ = sorted((copy / "trials").iterdir())
    (damaged / "summary.json").write_text("{not json")
    (truncated / "metrics.csv").write_text((truncated / "metrics.csv").read_text()[:-5])
    (running / "summary.json").unlink()  # no summary yet: a trial still running, or killed hard
    result = runner.invoke(app, ["export", str(tmp_path / "records"), "--to", "tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert f"warning: {damaged / 'summary.json'}: invalid JSON" in result.output
    assert f"warning: {truncated / 'metrics.csv'}: truncated" in result.output
    assert "tiny: 3 trials" in result.output
    assert sorted(p.name for p in (tmp_path / "tb" / "tiny").iterdir()) == \
        sorted(p.name for p in (copy / "trials").iterdir() if p != damaged)
    events = EventAccumulator(str(tmp_path / "tb" / "tiny" / running.name), size_guidance={"scalars": 0})
    events.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["status"].string_value == "incomplete"
    assert len(events.Scalars("test_accuracy")) > 0 and "summary/final_test_accuracy" not in events.Tags()["scalars"]


def test_bad_arguments_are_one_line(sweep, tmp_path):
    result = runner.invoke(app, ["export", str(sweep), "--to", "wandb", str(tmp_path)])
    assert result.exit_code == 2 and result.output == "error: --to 'wandb': choose from tensorboard, mlflow\n"
    result = runner.invoke(app, ["export", str(tmp_path / "nothing"), "--to", "tensorboard", str(tmp_path)])
    assert result.exit_code == 2 and "no such directory" in result.output
    (tmp_path / "not-a-db").write_text("plain text")
    result = runner.invoke(app, ["export", str(sweep), "--to", "mlflow", f"sqlite:///{tmp_path / 'not-a-db'}"])
    assert result.exit_code == 2 and result.output.startswith("error: cannot open the database")
    inside = tmp_path / "not-a-db" / "runs"
    for store, path in ((tmp_path / "not-a-db", tmp_path / "not-a-db"), (f"file:{inside}", inside),
                        (f"file://{inside}", inside)):  # a file where the store's folder would be
        result = runner.invoke(app, ["export", str(sweep), "--to", "mlflow", str(store)])
        assert result.exit_code == 2 and result.output == (
            f"error: cannot write {path}: {tmp_path / 'not-a-db'} is not a directory\n")


def test_every_status_has_an_mlflow_run_status():
    from mlflow.entities import RunStatus

    from batchlab.export import MLFLOW_STATUS
    from batchlab.records import Status

    assert {str(s): RunStatus.from_string(MLFLOW_STATUS[s]) for s in Status}  # from_string refuses a wrong name
    assert MLFLOW_STATUS["raced"] == "FINISHED" and MLFLOW_STATUS["failed"] == "FAILED"


def test_a_raced_trial_is_exported_to_mlflow(sweep, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    copy, store = tmp_path / "tiny", str(tmp_path / "mlruns")
    shutil.copytree(sweep, copy)
    raced = sorted((copy / "trials").iterdir())[1]
    summary = json.loads((raced / "summary.json").read_text())
    (raced / "summary.json").write_text(json.dumps({**summary, "status": "raced"}))
    result = runner.invoke(app, ["export", str(copy), "--to", "mlflow", store])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=store)
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                               filter_string=f"tags.trial_id = '{raced.name}'")
    assert (run.info.status, run.data.tags["status"]) == ("FINISHED", "raced")


def test_an_export_cut_short_is_completed_by_the_next(sweep, tmp_path, monkeypatch):
    """Killed between creating a trial's run and logging into it: that run stays RUNNING with no params or
    metrics, and the next export replaces it instead of counting it unchanged."""
    import mlflow.tracking
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = str(tmp_path / "mlruns")
    log_batch = mlflow.tracking.MlflowClient.log_batch
    calls = []

    def killed_on_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return log_batch(self, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(mlflow.tracking.MlflowClient, "log_batch", killed_on_the_second)
        with pytest.raises(KeyboardInterrupt):
            export(sweep, "mlflow", store)
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    assert sorted(r.info.status for r in client.search_runs([experiment])) == ["FINISHED", "RUNNING"]

    results, _ = export(sweep, "mlflow", store)
    assert (results[0].written, results[0].unchanged) == (3, 1)  # the cut one and the two never reached
    results, _ = export(sweep, "mlflow", store)
    assert (results[0].written, results[0].unchanged) == (0, 4)
    runs = client.search_runs([experiment])
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.info.run_name != "report":
            assert run.data.params["batch_size"] and run.data.metrics["summary/final_test_accuracy"] >= 0


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A sweep of 60 short trials: an export of it takes long enough to be killed mid-way."""
    tmp = tmp_path_factory.mktemp("many")
    cfg = tmp / "exp.yaml"
    cfg.write_text(json.dumps({
        "name": "many", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]}, "threads": 1,
        "budget": {"steps": 4}, "eval": {"every": 0.5}, "target": {"value": [0.3]},
        "sweep": {"batch_size": [8, 16, 32, 64, 128], "lr": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
                  "optimizer.momentum": [0.0, 0.9]}}))
    result = runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp), "--quiet"])
    assert result.exit_code == 0, result.output
    return tmp / "many"


def runs_logged(store: str) -> int:
    """Runs created so far in the store, read beside the export that writes them (0 while it is locked)."""
    if store.startswith("sqlite:///"):
        import sqlite3
        try:
            with contextlib.closing(sqlite3.connect(store.removeprefix("sqlite:///"), timeout=0.1)) as db:
                return db.execute("SELECT count(*) FROM runs").fetchone()[0]
        except sqlite3.Error:
            return 0
    return len([p for p in Path(store).glob("*/*/meta.yaml")])


def test_a_run_folder_a_killed_export_left_without_its_meta_is_written_again(sweep, tmp_path, monkeypatch):
    """SIGKILL just after MLflow's file store created a run's meta.yaml leaves it empty (or cut short), and
    MLflow's own search fails on it: the next export removes such a folder and exports every trial once."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    export(sweep, "mlflow", str(store))
    client = MlflowClient(tracking_uri=str(store))
    experiment = client.get_experiment_by_name("tiny").experiment_id
    [killed, *_] = sorted(p.parent for p in (store / experiment).glob("*/meta.yaml")  # a trial's run: the
                          if "run_name: report" not in p.read_text())  # report's is not counted among the trials
    (killed / "meta.yaml").write_text("")  # as the kill left it
    cut = store / experiment / ("0" * 32)
    cut.mkdir()
    (cut / "meta.yaml").write_text("artifact_uri: file")  # written part-way
    with pytest.raises((AttributeError, KeyError)):
        client.search_runs([experiment])  # what MLflow itself does with them

    results, warnings = export(sweep, "mlflow", f"file://{store}")
    assert warnings == [] and (results[0].written, results[0].unchanged) == (1, 3)  # the killed one, again
    assert not killed.exists() and not cut.exists()
    runs = client.search_runs([experiment])
    assert sorted(r.info.run_name for r in runs) == sorted([*(p.name for p in (sweep / "trials").iterdir()), "report"])


def test_an_export_killed_with_sigkill_is_completed_by_the_next(many, store, tmp_path):
    """`export --to mlflow` killed with SIGKILL part-way through a sweep: the rerun leaves every trial one
    FINISHED run with its params and metrics, and no RUNNING run."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "batchlab", "export", str(many), "--to", "mlflow", store]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 300
        while proc.poll() is None and runs_logged(store) < 3 and time.time() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the export ended before it could be killed"
    trials = sorted((many / "trials").iterdir())
    assert 3 <= runs_logged(store) < len(trials)  # killed part-way

    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("many").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    assert sorted(r.info.run_name for r in runs) == [t.name for t in trials]  # one each, none twice
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        trial = many / "trials" / run.info.run_name
        config, summary = (json.loads((trial / name).read_text()) for name in ("config.json", "summary.json"))
        assert (run.data.params["batch_size"], run.data.params["lr"]) == (str(config["batch_size"]),
                                                                         str(config["lr"]))
        assert run.data.metrics["summary/final_test_accuracy"] == summary["final"]["test_accuracy"]
        with open(trial / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        history = sorted(client.get_metric_history(run.info.run_id, "test_accuracy"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == recorded(rows, "test_accuracy")
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and f"many: 0 runs written, {len(trials)} unchanged" in again.stdout, again.stdout


def test_a_schedule_trial_is_exported_beside_the_constant_ones(tmp_path, monkeypatch):
    """A trial whose batch size followed a schedule is a run like any other, its schedule named."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from report_fixtures import hit, make_schedule_trial, make_sweep, make_trial

    sweep = make_sweep(tmp_path / "records", "mixed")
    constant = make_trial(sweep, 64, 0.1, hits={0.9: hit(1.0, 40, 64, 16)})
    scheduled = make_schedule_trial(sweep, [(0, 32), (50, 128)], 0.05, reached_at=60)
    rows = list(csv.DictReader((scheduled / "metrics.csv").open(newline="")))

    results, warnings = export(sweep, "tensorboard", str(tmp_path / "tb"))
    assert warnings == [] and [(r.sweep, r.written) for r in results] == [("mixed", 2)]
    assert sorted(p.name for p in (tmp_path / "tb" / "mixed").iterdir()) == sorted([constant.name, scheduled.name])
    events = EventAccumulator(str(tmp_path / "tb" / "mixed" / scheduled.name), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("batch_size")] == recorded(rows, "batch_size")
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert (hparams["batch_size"].number_value, hparams["schedule"].string_value) == (32, "32→128")

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = str(tmp_path / "mlruns")
    [result], _ = export(sweep, "mlflow", store)
    assert (result.written, result.unchanged) == (2, 0)
    client = MlflowClient(tracking_uri=store)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("mixed").experiment_id])}
    assert sorted(runs) == sorted([constant.name, scheduled.name])
    run = runs[scheduled.name]
    assert run.data.tags["schedule"] == "32→128" and "schedule" not in runs[constant.name].data.tags
    history = sorted(client.get_metric_history(run.info.run_id, "batch_size"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == recorded(rows, "batch_size")


def test_an_unreachable_tracking_server_is_one_line_at_once(sweep, monkeypatch):
    """MLflow retries a server that does not answer for minutes, saying nothing; export connects once first."""
    import socket

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):  # through a proxy it is not probed
        monkeypatch.delenv(name, raising=False)

    with socket.socket() as s:  # a port on this machine that nothing listens on once the socket closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["export", str(sweep), "--to", "mlflow", f"HTTP://127.0.0.1:{port}"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: MLflow at HTTP://127.0.0.1:{port}: cannot connect (")
    assert result.output.endswith("is the tracking server running there?\n")  # batchlab's probe, not MLflow


def test_a_database_store_without_its_driver_is_one_line(sweep, monkeypatch):
    """MLflow opens mysql:// through SQLAlchemy, which imports the database's driver (MySQLdb): absent, that was
    an 87-line traceback. The driver is hidden here, so the test holds where it is installed too."""
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    result = runner.invoke(app, ["export", str(sweep), "--to", "mlflow", "mysql://user@127.0.0.1/db"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output == ("error: MLflow at mysql://user@127.0.0.1/db: needs the Python module MySQLdb, not "
                             "installed here: install the driver for that database\n")
