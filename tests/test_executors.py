"""How trials run: in-process, in a local process pool (--workers), on a Dask cluster; and what happens when a
process dies or the user stops the sweep. Real processes, real signals; every server binds 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# Two short trials, then two long ones: in a run of two at a time, the short ones finish while the long ones train.
SHORT, LONG = 5, 200_000  # optimizer steps (batch 8 on digits: ~3,000 steps a second on one thread)
FAULT_GRID = {"budget": {"steps": 5}, "eval": {"every": 0.5}, "sweep": {"budget.steps": [SHORT, LONG],
                                                                       "batch_size": [8], "lr": [0.1, 0.2]}}


def summaries(out: Path, name: str = "tiny") -> dict[str, dict | None]:
    """trial id -> summary.json (None where the trial has none)."""
    found = {}
    for d in sorted((out / name / "trials").iterdir()):
        found[d.name] = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    return found


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
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert output.strip().splitlines() == [
        f"error: interrupted: the running trials are recorded as interrupted in {out / 'tiny'}; "
        "run the same command again to resume"]
    statuses = {trial: s["status"] for trial, s in summaries(out).items()}
    assert sorted(statuses.values()) == ["completed", "completed", "interrupted", "interrupted"], statuses
    for trial, status in statuses.items():
        assert (status == "completed") == (f"steps{SHORT}-" in trial)
        if status == "interrupted":  # what it had logged is kept
            assert rows(out / "tiny" / "trials" / trial) >= 3
    wait_for(lambda: not alive(workers), timeout=10, what="every process of the sweep to end")
