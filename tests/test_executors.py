"""How trials run: in-process, in a local process pool (--workers), on a Dask cluster; and what happens when a
process dies or the user stops the sweep. Real processes, real signals; every server binds 127.0.0.1."""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import distributed  # the test extra installs batchlab[dask]
import psutil
import pytest
from typer.testing import CliRunner

import batchlab
from batchlab.cli import app
from batchlab.errors import BatchlabWarning, ConfigError
from batchlab.records import METRIC_COLUMNS
from batchlab.reporting import build_report

# Two short trials, then two long ones: in a run of two at a time, the short ones finish while the long ones train.
SHORT, LONG = 100, 200_000  # optimizer steps (batch 8 on digits: ~3,000 steps a second on one thread); 100 learn
FAULT_GRID = {"budget": {"steps": 5}, "eval": {"every": 0.5}, "sweep": {"budget.steps": [SHORT, LONG],
                                                                       "batch_size": [8], "lr": [0.1, 0.2]}}


def summaries(out: Path, name: str = "tiny") -> dict[str, dict | None]:
    """trial id -> summary.json (None where the trial has none)."""
    found = {}
    for d in sorted((out / name / "trials").iterdir()):
        found[d.name] = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    return found


@pytest.fixture(autouse=True)
def sweeps_take_ctrl_c():
    """A shell starts a background job (`pytest ... &`) with SIGINT ignored, and an ignored signal stays ignored
    in every process it starts: the sweeps here would never see their Ctrl-C. Handled here, it is the default
    again in them, as for a command typed at a terminal."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def start_sweep(cfg: Path, out: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    """`batchlab sweep` in its own session (its own process group, as a shell runs a command)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "batchlab", "sweep", str(cfg), "--out", str(out), "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=env, cwd=cwd)


def wait_for(condition, timeout: float = 90, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(trial_dir: Path) -> int:
    try:
        return len((trial_dir / "metrics.csv").read_text().splitlines())
    except OSError:
        return 0


def long_trials_training(out: Path):
    """True once both short trials are recorded and both long ones have logged a training row."""
    trials = sorted((out / "tiny" / "trials").glob("*")) if (out / "tiny" / "trials").exists() else []
    done = [d for d in trials if f"steps{SHORT}-" in d.name and (d / "summary.json").exists()]
    running = [d for d in trials if f"steps{LONG}-" in d.name and rows(d) >= 3]
    return len(done) == 2 and len(running) == 2


def alive(pids) -> list[int]:
    """The pids still running (a zombie waiting to be reaped is dead)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


# ---------------------------------------------------------------- the local process pool (--workers)

def test_pool_workers_die_with_a_killed_driver(write_config, tmp_path):
    cfg, out = write_config(FAULT_GRID), tmp_path / "runs"
    proc = start_sweep(cfg, out, "--workers", "2")
    workers = []
    try:
        wait_for(lambda: long_trials_training(out), what="the long trials to train")
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(workers) >= 2
        proc.kill()  # SIGKILL: the driver gets no chance to stop its workers
        proc.wait(timeout=30)
        wait_for(lambda: not alive(workers), timeout=20, what="the workers to die with the driver")
    finally:
        for pid in alive([proc.pid, *workers]):
            os.kill(pid, signal.SIGKILL)


def test_a_pool_worker_that_dies_fails_its_trial_and_the_sweep_goes_on(write_config, tmp_path):
    """A worker killed mid-trial (the kernel's OOM killer, a user's kill): its trial is recorded failed, a fresh
    worker takes its place, and the sweep ends instead of waiting for it forever."""
    cfg, out = write_config({**FAULT_GRID, "sweep": {**FAULT_GRID["sweep"], "budget.steps": [SHORT, 20_000]}}), \
        tmp_path / "runs"
    proc = start_sweep(cfg, out, "--workers", "2")
    try:
        wait_for(lambda: [rows(d) >= 3 for d in out.glob("tiny/trials/*steps20000-*")] == [True, True],
                 timeout=180, what="both long trials to train")  # each worker runs one, for seconds yet
        victim = psutil.Process(proc.pid).children()[-1]  # a worker (the resource tracker starts first)
        assert "multiprocessing.spawn" in " ".join(victim.cmdline())
        victim.kill()
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and "3 completed, 1 failed" in output, output  # a failed trial is a result
    found = summaries(out)
    assert len(found) == 4 and all(s is not None for s in found.values()), found
    failed = [s for s in found.values() if s["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "its worker process died (killed by SIGKILL)", found
    assert sorted(s["status"] for s in found.values()) == ["completed", "completed", "completed", "failed"]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_pool_stops_with_one_line_and_keeps_what_finished(write_config, tmp_path, how):
    cfg, out = write_config(FAULT_GRID), tmp_path / "runs"
    proc = start_sweep(cfg, out, "--workers", "2")
    wait_for(lambda: long_trials_training(out), what="the long trials to train")
    workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole process group
    else:
        proc.send_signal(signal.SIGTERM)  # a scheduler stopping the job: the driver alone
    try:  # 0.5-2.3 s here, 4 busy processes sharing the 2 cores; the workers get pool.STOP_WAIT = 30 s at most
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a hung sweep must not outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert output.strip().splitlines() == [
        f"error: interrupted: any trial that was running is recorded as interrupted in {out / 'tiny'}; "
        "run the same command again to resume"]
    statuses = {trial: s["status"] for trial, s in summaries(out).items()}
    assert sorted(statuses.values()) == ["completed", "completed", "interrupted", "interrupted"], statuses
    for trial, status in statuses.items():
        assert (status == "completed") == (f"steps{SHORT}-" in trial)
        if status == "interrupted":  # what it had logged is kept
            assert rows(out / "tiny" / "trials" / trial) >= 3
    wait_for(lambda: not alive(workers), timeout=10, what="every process of the sweep to end")


def deaf_worker(conn, gpu, parent_pid):
    """A pool worker that takes a trial and then neither answers nor stops (its interrupt swallowed); deaf and
    with its trial, it raises the driver's alarm, which the test turns into Ctrl-C: on a loaded machine a worker
    can take seconds to start, and a clock in the test fired while it still could be stopped."""
    from batchlab import processes
    processes.die_with_parent(parent_pid)  # as a real worker: never outlives the test
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.recv()
    os.kill(parent_pid, signal.SIGALRM)
    time.sleep(300)


def test_a_worker_that_does_not_stop_is_killed_once_the_wait_is_over(write_config, tmp_path, monkeypatch):
    """Interrupted, the driver terminates its workers and waits pool.STOP_WAIT for them to record their trials;
    one still running then is killed, and the interrupt goes on: the driver never waits for ever."""
    from batchlab import config
    from batchlab.executors import pool
    from batchlab.executors.base import Job
    from batchlab.grid import expand
    from batchlab.records import SweepDir

    monkeypatch.setattr(pool, "worker_main", deaf_worker)
    monkeypatch.setattr(pool, "STOP_WAIT", 1.0)
    trials = expand(config.load(write_config()))
    executor = pool.ProcessPool(workers=1)
    started = []
    monkeypatch.setattr(pool.Worker, "start", classmethod(
        lambda cls, gpu, real=pool.Worker.start.__func__: started.append(real(cls, gpu)) or started[-1]))

    interrupted = []

    def interrupt(signum, frame):
        interrupted.append(time.monotonic())
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        t0 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 120)  # a backstop only: the deaf worker raises the alarm itself
        with pytest.raises(KeyboardInterrupt):
            list(executor.run([Job(t, "test") for t in trials], SweepDir(tmp_path, "tiny"), lambda *a: None))
        waited = time.monotonic() - interrupted[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    [worker] = started
    assert interrupted[0] - t0 < 110  # the worker's alarm, not the backstop: it held its trial, deaf
    assert not worker.process.is_alive() and worker.process.exitcode == -signal.SIGKILL
    assert waited < 1 + 10  # STOP_WAIT, and slack for a loaded machine


# ---------------------------------------------------------------- Dask


LOOPBACK = {"127.0.0.1", "::1"}
QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
TIMING = ("train_seconds", "eval_seconds", "noise_seconds", "compile_seconds", "samples_per_second",
          "peak_memory_bytes", "started_at", "finished_at", "run_token")


def listening(pids) -> set[str]:
    """The addresses the processes listen on (TCP, UDP bound)."""
    found = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {c.laddr.ip for c in conns if c.status in (psutil.CONN_LISTEN, psutil.CONN_NONE)}
    return found


def tree(pid: int) -> list[int]:
    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


class OwnDirectory(distributed.WorkerPlugin):
    """Each worker process works in a directory of its own, not the driver's (as on another machine)."""

    def setup(self, worker):
        cwd = Path(worker.local_directory) / "cwd"
        cwd.mkdir(exist_ok=True)
        os.chdir(cwd)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Two single-threaded worker processes on 127.0.0.1, each with its own scratch directory (under
    `local_directory`) and working directory, each offering the resource GPU=1 (a label here: no GPU)."""
    scratch = tmp_path_factory.mktemp("workers")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, resources={"GPU": 1}, local_directory=scratch,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  worker_dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster) as c:
            c.register_plugin(OwnDirectory())
            c.wait_for_workers(2)
            assert listening(tree(os.getpid())) <= LOOPBACK  # the scheduler here, the workers in children
            yield c


def trial_files(out: Path, name: str) -> dict[str, dict[str, bytes]]:
    return {d.name: {f.name: f.read_bytes() for f in d.iterdir()} for d in sorted((out / name / "trials").iterdir())}


def same_timings(source: Path, target: Path) -> None:
    """Copy the timing figures (and only those) of one run's records into another's, trial by trial."""
    import pandas as pd

    for d in sorted(source.iterdir()):
        a, b = json.loads((d / "summary.json").read_text()), json.loads((target / d.name / "summary.json").read_text())
        b.update({k: a[k] for k in TIMING if k != "run_token"})  # the token stays: it ties b's summary to its run
        for value, hit in a["targets"].items():
            if hit:
                b["targets"][value]["seconds"] = hit["seconds"]
        (target / d.name / "summary.json").write_text(json.dumps(b))
        m = pd.read_csv(target / d.name / "metrics.csv")
        m["train_seconds"] = pd.read_csv(d / "metrics.csv")["train_seconds"]
        m.to_csv(target / d.name / "metrics.csv", index=False)


def test_dask_records_and_report_are_the_sequential_runs(client, tmp_path):
    overrides = {"budget.steps": 4, "eval.every": 0.001}  # the quickstart grid, 30 trials of a few steps
    # Dask's workers may be other machines: no step times are measured here, so neither are they here
    sequential = batchlab.sweep(QUICKSTART, tmp_path / "seq", overrides, command="same", time_steps=False)
    result = batchlab.sweep(QUICKSTART, tmp_path / "dask", overrides, command="same", executor=client,
                            gpus_per_trial=1)
    assert not (tmp_path / "dask" / "quickstart" / "step_times.json").exists()
    assert result.counts == sequential.counts and sum(result.counts.values()) == 30
    # the workers trained elsewhere: their own directories, emptied once each trial's files came back
    places = client.run(lambda dask_worker: (os.getcwd(), dask_worker.local_directory))
    assert len({cwd for cwd, _ in places.values()} | {os.getcwd()}) == 3
    for cwd, scratch in places.values():
        assert not list((Path(scratch) / "batchlab").iterdir()) and not list(Path(cwd).iterdir())
    # each worker loaded the data set once (the check, then its trials), not once per trial
    loaded = client.run(lambda: {cap: len(c.cache) for cap, c in __import__("batchlab.executors.base").executors
                                 .base.caches.items()})
    assert list(loaded.values()) == [{None: 1}, {None: 1}]
    seq, par = trial_files(tmp_path / "seq", "quickstart"), trial_files(tmp_path / "dask", "quickstart")
    assert list(seq) == list(par)
    for trial in seq:
        assert set(par[trial]) == set(seq[trial]) == {"config.json", "metrics.csv", "summary.json", "run_token"}
        assert par[trial]["config.json"] == seq[trial]["config.json"]
        a, b = (json.loads(files["summary.json"]) for files in (seq[trial], par[trial]))
        assert b["run_token"] == par[trial]["run_token"].decode().strip()  # the driver's token came back
        for s in (a, b):
            for key in TIMING:
                s.pop(key)
            for hit in s["targets"].values():
                if hit:
                    hit.pop("seconds")
        assert a == b
        rows_a, rows_b = (files["metrics.csv"].decode().splitlines() for files in (seq[trial], par[trial]))
        clock = METRIC_COLUMNS.index("train_seconds")  # every column but train_seconds
        assert [r.split(",")[:clock] + r.split(",")[clock + 1:] for r in rows_a] == \
               [r.split(",")[:clock] + r.split(",")[clock + 1:] for r in rows_b]
    same_timings(tmp_path / "seq" / "quickstart" / "trials", tmp_path / "dask" / "quickstart" / "trials")
    reports = {}
    for run in ("seq", "dask"):
        [r] = build_report(tmp_path / run / "quickstart", out=tmp_path / f"report-{run}", formats={"md", "csv"})
        where = str(tmp_path / run)  # as text, and as report.md escapes it
        reports[run] = {f.name: f.read_text().replace(where, "RUNS").replace(where.replace("_", "\\_"), "RUNS")
                        for f in r.out_dir.iterdir()}
    assert reports["seq"] == reports["dask"] and "time_to_accuracy.csv" in reports["seq"]
    # a resource no worker offers is refused before anything runs
    with pytest.raises(ConfigError, match="no worker of the cluster offers GPU=2"):
        batchlab.sweep(QUICKSTART, tmp_path / "gpu", overrides, executor=client, gpus_per_trial=2)


def executing(client) -> dict[str, list[str]]:
    """worker address -> the keys of the tasks it is running now."""
    return client.run(lambda dask_worker: [k for k, ts in dask_worker.state.tasks.items() if ts.state == "executing"])


@pytest.mark.parametrize("retries, scheduler_allows", [(1, 0), (0, 3)])
def test_dask_a_trial_whose_worker_is_lost_runs_again_up_to_retries(client, write_config, tmp_path, retries,
                                                                    scheduler_allows):
    """(1, 0): the scheduler gives up on the task at once (KilledWorker), the driver submits it again.
    (0, 3): the scheduler runs it again on its own; the driver sees the second start and gives up."""
    cfg = write_config({"budget": {"steps": 3000}, "sweep": {"batch_size": [8], "lr": [0.1]}})
    out = tmp_path / "runs"
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", scheduler_allows))
    pids = client.run(os.getpid)
    results = []
    sweeping = threading.Thread(target=lambda: results.append(batchlab.sweep(cfg, out, executor=client,
                                                                              retries=retries)))
    sweeping.start()
    try:
        wait_for(lambda: (out / "tiny" / "trials").is_dir() and any((out / "tiny" / "trials").iterdir()),
                 what="the trial to start")  # its directory exists once the driver heard it started
        [worker] = wait_for(lambda: [w for w, keys in executing(client).items() if keys], what="a running task")
        os.kill(pids[worker], signal.SIGKILL)
        sweeping.join(timeout=120)
    finally:
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 3))
    [s] = summaries(out).values()
    if retries:
        assert s["status"] == "completed" and s["steps"] == 3000
    else:
        assert s["status"] == "failed" and s["steps"] == 0
        assert s["error"].startswith(f"the worker running it was lost 1 time(s) ({worker}); retried 0 time(s)")
    assert results[0].counts == {s["status"]: 1}


def test_dask_a_trial_lost_before_it_started_runs_again_without_costing_a_retry(client, write_config, tmp_path):
    """--retries 0, and a worker killed while it runs one trial and holds others it has not started (the
    scheduler queues no task: each worker is handed two): only the running trial is lost; the others run."""
    cfg = write_config({"budget": {"steps": 3000}, "sweep": {"batch_size": [8], "lr": [0.1, 0.2, 0.3, 0.4]}})
    out = tmp_path / "runs"
    saturation = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
    client.run_on_scheduler(lambda dask_scheduler: (setattr(dask_scheduler, "allowed_failures", 0),
                                                    setattr(dask_scheduler, "WORKER_SATURATION", math.inf)))
    pids = client.run(os.getpid)
    results = []
    sweeping = threading.Thread(target=lambda: results.append(batchlab.sweep(cfg, out, executor=client, retries=0)))
    sweeping.start()
    try:
        held = lambda: client.run(lambda dask_worker: sorted(ts.state for ts in dask_worker.state.tasks.values()
                                                             if ts.key.startswith("batchlab-")))
        [worker] = wait_for(lambda: [w for w, states in held().items() if "executing" in states and len(states) > 1],
                            what="a worker running a trial and holding another")[:1]
        os.kill(pids[worker], signal.SIGKILL)
        sweeping.join(timeout=180)
    finally:
        client.run_on_scheduler(lambda dask_scheduler: (setattr(dask_scheduler, "allowed_failures", 3),
                                                        setattr(dask_scheduler, "WORKER_SATURATION", saturation)))
    found = summaries(out)
    statuses = sorted(s["status"] for s in found.values())
    assert statuses == ["completed", "completed", "completed", "failed"], found
    [lost] = [s for s in found.values() if s["status"] == "failed"]
    assert lost["error"].startswith(f"the worker running it was lost 1 time(s) ({worker}); retried 0 time(s)")


CLUSTER_LOGS = """
import logging
from batchlab.executors.dask import local_cluster
with local_cluster(1, None, 0):
    logging.getLogger("distributed.scheduler").error("Task x marked as failed because 1 workers died")
    logging.getLogger("distributed.scheduler").critical("the scheduler cannot go on")
"""


def test_dask_own_cluster_logs_nothing_on_the_terminal():
    """The scheduler's ERROR on a lost worker repeats the records: batchlab's own cluster keeps it off the
    terminal (it showed under --quiet). In a process of its own: Dask sets up its logging as it is imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CLUSTER_LOGS], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "marked as failed" not in done.stderr
    assert "CRITICAL - the scheduler cannot go on" in done.stderr  # what cannot be recorded still shows


def test_dask_a_trial_raising_in_user_code_fails_alone(client, write_config, tmp_path):
    (tmp_path / "flaky.py").write_text(
        "import math\n"
        "import torch\n"
        "class BreaksLater(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes, after):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(math.prod(input_shape), num_classes)\n"
        "        self.after, self.calls = after, 0\n"
        "    def forward(self, x):\n"
        "        self.calls += self.training\n"
        "        if self.calls > self.after:\n"
        "            raise RuntimeError(f'broken after {self.after} steps')\n"
        "        return self.layer(x.flatten(1))\n")
    cfg = write_config({"budget": {"steps": 20}, "sweep": {
        "model": [{"name": "flaky:BreaksLater", "args": {"after": 5}}, {"name": "mlp", "hidden": [16]}]}})
    result = batchlab.sweep(cfg, tmp_path / "runs", executor=client)
    assert result.counts == {"failed": 1, "completed": 1}
    by_model = {s["trial_id"]: s for s in result.summaries}
    [broken] = [s for s in by_model.values() if s["status"] == "failed"]
    assert broken["error"] == "RuntimeError: broken after 5 steps" and broken["steps"] == 5
    error_txt = tmp_path / "runs" / "tiny" / "trials" / broken["trial_id"] / "error.txt"
    assert "raise RuntimeError" in error_txt.read_text()  # the traceback came back from the worker


def test_dask_a_warning_raised_in_a_trial_is_raised_in_the_driver(client, write_config, tmp_path):
    """A library warning (BatchlabWarning) raised as a trial trains on a worker is raised again in the driver,
    where the command line prints it as its one `warning:` line."""
    (tmp_path / "warns.py").write_text(
        "import math, warnings\n"
        "import torch\n"
        "from batchlab.errors import BatchlabWarning\n"
        "class Warns(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(math.prod(input_shape), num_classes)\n"
        "        self.calls = 0\n"
        "    def forward(self, x):\n"
        "        self.calls += self.training\n"
        "        if self.calls == 3:\n"
        "            warnings.warn(f'pid {__import__(\"os\").getpid()} at step 3', BatchlabWarning)\n"
        "        return self.layer(x.flatten(1))\n")
    cfg = write_config({"budget": {"steps": 5}, "model": {"name": "warns:Warns"}, "sweep": {"lr": [0.1, 0.2]}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = batchlab.sweep(cfg, tmp_path / "runs", executor=client)
    assert result.counts == {"completed": 2}
    workers = {str(pid) for pid in client.run(os.getpid).values()}
    said = [str(w.message) for w in caught if issubclass(w.category, BatchlabWarning)]
    assert len(said) == 2, said
    assert all(m.endswith(" at step 3") and m.split()[1] in workers for m in said), said


def test_dask_without_the_extra_is_one_line(write_config, tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "batchlab.executors.dask", raising=False)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails, as without the extra
    result = CliRunner().invoke(app, ["sweep", str(write_config()), "--out", str(tmp_path), "--executor", "dask"])
    assert result.exit_code == 2
    assert result.output == "error: --executor dask needs Dask: pip install 'batchlab[dask]'\n"
    result = CliRunner().invoke(app, ["sweep", str(write_config()), "--out", str(tmp_path), "--retries", "2"])
    assert result.exit_code == 2 and "are for the dask executor" in result.output


def test_dask_ctrl_c_keeps_finished_trials_and_a_rerun_does_the_rest(client, write_config, tmp_path):
    cfg = write_config({**FAULT_GRID, "sweep": {**FAULT_GRID["sweep"], "budget.steps": [SHORT, 2000]}})
    out = tmp_path / "runs"
    proc = start_sweep(cfg, out, "--executor", "dask", "--workers", "1")  # its own LocalCluster

    def some_finished_and_a_long_one_running():
        found = sorted((out / "tiny" / "trials").glob("*")) if (out / "tiny" / "trials").exists() else []
        done = [d for d in found if (d / "summary.json").exists()]
        return done and any(f"steps{SHORT}-" not in d.name for d in found if d not in done)

    wait_for(some_finished_and_a_long_one_running, timeout=180, what="a trial recorded and a long one started")
    assert listening(tree(proc.pid)) <= LOOPBACK
    processes_of_the_sweep = tree(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the driver and its cluster's processes
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert output.strip().splitlines() == [
        f"error: interrupted: any trial that was running is recorded as interrupted in {out / 'tiny'}; "
        "run the same command again to resume"]
    wait_for(lambda: not alive(processes_of_the_sweep), timeout=20, what="every process of the sweep to end")
    before = summaries(out)  # the trials that had started: finished ones completed, running ones interrupted
    statuses = [s["status"] for s in before.values()]
    assert "completed" in statuses and "interrupted" in statuses and set(statuses) <= {"completed", "interrupted"}
    result = batchlab.sweep(cfg, out, executor=client)  # the rerun, on another cluster: the records decide
    finished = [t for t, s in before.items() if s["status"] == "completed"]
    assert result.skipped == len(finished) and result.ran == {"completed": 4 - len(finished)}
    assert result.counts == {"completed": 4}  # the finished ones too
    after = summaries(out)
    assert all(after[t] == before[t] for t in finished)  # kept as they were
    assert len(after) == 4 and all(s["status"] == "completed" for s in after.values())



# ---------------------------------------------------------------- a driver killed alone


@pytest.mark.parametrize("executor", [[], ["--executor", "dask"]], ids=["pool", "dask"])
def test_a_driver_killed_alone_leaves_no_process_and_no_semaphore_behind(write_config, tmp_path, executor):
    """SIGKILL to the driver's pid alone (not its process group): every process it started ends, and none of
    the named semaphores it created is left for multiprocessing's resource tracker to report ("There appear to
    be 6 leaked semaphore objects": the pool's queues; 12 with Dask: each Nanny's two queues)."""
    cfg, out = write_config(FAULT_GRID), tmp_path / "runs"
    proc = start_sweep(cfg, out, "--workers", "2", *executor)
    try:
        wait_for(lambda: len(list(out.glob(f"tiny/trials/*steps{LONG}-*/config.json"))) == 2, timeout=180,
                 what="the long trials to start")
        started = tree(proc.pid)[1:]  # the workers, the resource tracker
        assert len(started) >= 3
        proc.kill()
        output, _ = proc.communicate(timeout=120)  # to its end: every process holding the output has ended
        assert output == ""
        wait_for(lambda: not alive(started), timeout=30, what="every process of the sweep to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_workers_from_a_script_without_a_main_guard_are_one_error_with_the_advice(tmp_path):
    """Spawned workers import the calling script again; at its top level the sweep runs once more in each and
    fails there: the driver says why, instead of recording every trial as failed and returning."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import batchlab\n"
        f"batchlab.sweep({{'name': 'nm', 'dataset': {{'name': 'digits'}}, 'model': {{'name': 'mlp', 'hidden': [8]}},"
        " 'budget': {'steps': 3}, 'target': {'value': [0.5]}, 'sweep': {'lr': [0.1, 0.3]}},"
        f" out={str(tmp_path / 'runs')!r}, workers=2)\n"
        "print('returned')\n")
    root = Path(batchlab.__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)}, cwd=tmp_path)
    assert done.returncode == 1 and "returned" not in done.stdout
    assert done.stderr.rstrip().splitlines()[-1] == (
        "batchlab.errors.BatchlabError: a worker process could not start (exit code 1; its error is above). Workers "
        "are started with multiprocessing's 'spawn', which imports the main script again (a script calling "
        "batchlab.sweep with workers > 1 needs its entry point under `if __name__ == '__main__':`)")
