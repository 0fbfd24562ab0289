"""Fault injection: a small sweep killed with SIGKILL at random moments, in one process and with --workers 2, each
kill followed by a rerun. No finished trial is ever trained again, every summary on disk parses at every moment,
and the final records equal those of a run that was never interrupted (timing aside)."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pandas as pd
import pytest
import yaml
from conftest import TINY

from batchlab.data import builtin
from batchlab.records import DONE, Status
from batchlab.summary import Summary

KILLS = 7  # per mode (~15 in all), or fewer where the sweep ends first
SEED = 20261127  # the kill moments are drawn from it: a failure is reproducible
# Six trials (digits, batch 8 and 32, ~0.3-1.5 s of training each), a checkpoint every 0.3 s of training. A kill
# lands at a random moment of the training part of a run (the seconds before it, imports and data, are the same
# in every run and write nothing): inside trials, between them, while a checkpoint or a summary is written.
GRID = {"budget": {"epochs": 15}, "eval": {"every": 1.0}, "threads": 1,
        "target": {"metric": "test_accuracy", "value": [0.8, 0.999]},
        "checkpoint": {"every": 0.005}, "sweep": {"batch_size": [8, 32], "lr": [0.02, 0.05, 0.1]}}
# What a rerun may legitimately change: the clock, the machine's load, the run's identity.
TIMING = {"train_seconds", "eval_seconds", "noise_seconds", "compile_seconds", "samples_per_second",
          "peak_memory_bytes", "run_token", "resumed_from", "started_at", "finished_at", "targets", "command"}


def sweep(cfg: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "batchlab", "sweep", str(cfg), "--out", str(out), "--quiet",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def training_started(proc: subprocess.Popen, out: Path, since: float) -> bool:
    """Wait until the run trains (a trial writes a metrics row: the evaluation at its start, or a row after a
    checkpoint it resumed from); False if the run ended first."""
    def wrote_a_row(path: Path) -> bool:
        with contextlib.suppress(OSError):
            return path.stat().st_mtime >= since and path.read_text().count("\n") >= 2
        return False
    while proc.poll() is None:
        if any(wrote_a_row(p) for p in out.glob("tiny/trials/*/metrics.csv")):
            return True
        time.sleep(0.02)
    return False


def finished(out: Path) -> dict[str, tuple[int, bytes]]:
    """Finished trials (completed or diverged) -> (mtime of summary.json, its bytes). Every summary on disk
    must parse, whatever moment the sweep was killed at."""
    found = {}
    for path in sorted(out.glob("tiny/trials/*/summary.json")):
        text = path.read_bytes()
        summary = Summary.from_json(json.loads(text))  # raises on a damaged or half-written summary
        if summary.status in DONE:
            found[path.parent.name] = (path.stat().st_mtime_ns, text)
    return found


def kill_sessions(procs: list[subprocess.Popen]) -> None:
    """Whatever is left of the runs (a pool worker is in its driver's session): gone before the next test."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def comparable(out: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Each trial's summary and metrics, the timing columns and fields left out."""
    records = {}
    for d in sorted((out / "tiny" / "trials").iterdir()):
        summary = json.loads((d / "summary.json").read_text())
        targets = {t: v and {k: x for k, x in v.items() if k != "seconds"} for t, v in summary["targets"].items()}
        summary = {k: v for k, v in summary.items() if k not in TIMING} | {"targets": targets}
        records[d.name] = (summary, pd.read_csv(d / "metrics.csv").drop(columns="train_seconds"))
    return records


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The digits data set saved as .npz: the same examples, without importing scikit-learn in every run."""
    path = tmp_path_factory.mktemp("fault") / "tiny.yaml"
    numpy.savez(path.parent / "digits.npz", **builtin.digits())
    path.write_text(yaml.safe_dump({**TINY, **GRID, "dataset": {"name": "npz", "path": str(path.parent / "digits.npz")}}))
    return path


@pytest.fixture(scope="module")
def expected(config):
    """The records of the same sweep, never interrupted, and how long its training part lasted."""
    out = config.parent / "reference"
    launched = time.time() - 0.1  # (file times may lag the clock by a tick)
    proc = sweep(config, out)
    assert training_started(proc, out, launched)
    started = time.monotonic()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    records = comparable(out)
    assert len(records) == 6 and all(s["status"] == Status.COMPLETED for s, _ in records.values())
    return records, time.monotonic() - started


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "workers-2"])
def test_random_kills_lose_nothing_retrain_nothing_and_end_as_an_uninterrupted_run(config, expected, tmp_path,
                                                                                   workers):
    expected, span = expected
    rng = random.Random(SEED + len(workers))
    out, kept, moments, runs, kills = tmp_path / "runs", {}, [], [], 0
    try:
        while kills < KILLS and len(kept) < len(expected) and len(runs) < 3 * KILLS:  # a run may end before its kill
            launched = time.time() - 0.1
            proc = sweep(config, out, *workers)
            runs.append(proc)
            left = (len(expected) - len(kept)) / len(expected) * span / (2 if workers else 1)
            moment = rng.uniform(0, 0.8 * left)  # within the training this run has left (two trials at a time)
            moments.append(round(moment, 2))
            try:
                if training_started(proc, out, launched):
                    proc.wait(timeout=moment)  # it may end first: then the next run has nothing to do
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)  # the driver alone: its workers must not outlive it
                proc.wait(timeout=30)
                kills += 1
            now = finished(out)
            for trial, before in kept.items():  # a finished trial is never trained again, nor its summary rewritten
                assert now.get(trial) == before, f"{trial} changed after the kills at {moments} s"
            kept = now
    finally:
        kill_sessions(runs)

    final = subprocess.run([sys.executable, "-m", "batchlab", "sweep", str(config), "--out", str(out), "--quiet",
                            *workers], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    now = finished(out)
    assert all(now[trial] == before for trial, before in kept.items())
    got = comparable(out)
    resumed = sum(bool(json.loads((out / "tiny" / "trials" / t / "summary.json").read_text())["resumed_from"])
                  for t in got)
    print(f"{kills} kills (at {moments} s into training), {len(kept)} trials finished before the last run, "
          f"{resumed} resumed from a checkpoint")
    assert kills >= KILLS // 2, f"most runs must be killed, not end first: kills at {moments} s"
    assert got.keys() == expected.keys(), f"kills at {moments} s"
    for trial, (summary, metrics) in expected.items():
        assert got[trial][0] == summary, f"{trial} (kills at {moments} s)"
        pd.testing.assert_frame_equal(got[trial][1], metrics, obj=f"{trial} metrics (kills at {moments} s)")
