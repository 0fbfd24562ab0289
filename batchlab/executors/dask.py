"""Trials on a Dask cluster: `--executor dask` (a LocalCluster on 127.0.0.1, or the cluster at `--scheduler`), or
`batchlab.sweep(..., executor=client)` with a dask.distributed Client.

Each trial is one task (`run_on_worker`): the worker trains it into a scratch directory of its own and returns
the trial's files, which the driver writes into its records (records.receive_trial: each file atomically,
summary.json last, only with the run token the driver gave the trial). So the records reach the driver whether
or not the workers share its file system, and `batchlab report` reads them as any others. Data sets are loaded
once per worker process (executors.base.process_cache).

The driver learns that a trial started from an event the task logs (Client.subscribe_topic): it then starts
the trial's directory. A worker lost mid-trial (killed, its node gone) makes the scheduler run the task again
on another worker; the driver counts the starts and allows `retries` more, then records the trial `failed`
with the workers that were lost. A task lost before it started (queued on a worker that died) runs again
without costing a retry. An exception inside a trial is the trial's own `failed` record (run_trial), and
any other error of the task fails the trial once, without retry. Ctrl-C cancels the tasks (a running trial stops
at its next log point, having seen its task cancelled) and records the running trials as interrupted.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dask
from distributed import Client, KilledWorker, LocalCluster, Nanny, Scheduler, SpecCluster, get_worker
from distributed.core import Status as ProcessStatus

from batchlab import preflight, processes, registry
from batchlab.errors import BatchlabWarning, ConfigError
from batchlab.executors.base import (Executor, Job, StartProgress, describe, format_traceback, process_cache,
                                     record_without_run, run_job)
from batchlab.grid import Trial
from batchlab.machine import now
from batchlab.records import Status, SweepDir, read_json, receive_trial, start_trial_dir
from batchlab.train import imported_names

LOOPBACK = "127.0.0.1"  # a cluster batchlab starts listens on this machine only
UNSTARTED_MAX = 10  # attempts lost before starting that are run again without costing a retry: a task that kills
# every worker it reaches before it can start is not bad luck
CONNECT_SECONDS = 10  # to reach a scheduler named by --scheduler (a typo fails this fast)
# The cluster's own logging on the driver's terminal: none. Its ERRORs ("Task ... marked as failed because 1
# workers died") say what the records say (the trial's status and error), as a second voice on the terminal
# even under --quiet; a sweep's progress and errors are batchlab's to print.
QUIET = logging.CRITICAL
# The scheduler's and the workers' HTTP servers (health checks; no dashboard) on a free loopback port: left to
# themselves, the scheduler's takes 8787 (perhaps taken), and in distributed 2024.8 both listen on every
# interface whatever `host` says (2026.8 no longer does).
HTTP = f"{LOOPBACK}:0"
SCHEDULER = {"dashboard": False, "dashboard_address": HTTP}


class DaskExecutor(Executor):
    """Trials as tasks of a Dask cluster: the `client` given, the cluster at `scheduler`, or else a LocalCluster
    of `workers` single-threaded processes on 127.0.0.1 (default: one per CPU core), started on first use and
    closed with the executor. `gpus_per_trial`: each task asks for the worker resource GPU=K. `retries`: how
    many times a trial whose worker was lost runs again."""

    concurrent = True
    on_this_machine = False  # a cluster's workers may be other machines, holding data this one lacks

    def __init__(self, client: Client | None = None, scheduler: str | None = None, workers: int | None = None,
                 gpus_per_trial: float | None = None, retries: int = 1):
        self.given, self.scheduler = client, scheduler
        self.workers = workers or os.cpu_count() or 1
        self.gpus_per_trial, self.retries = gpus_per_trial, retries
        self.client: Client | None = None
        self.cluster = None
        self.threads: int | None = None  # torch threads per trial where batchlab knows the machine (its own cluster)

    # ------------------------------------------------------------ the cluster

    def connect(self) -> Client:
        if self.client is not None:
            return self.client
        if self.given is not None:
            self.client = self.given
        elif self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_SECONDS)
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError(f"--scheduler {self.scheduler}: cannot connect to a Dask scheduler there "
                                  f"({describe(e)})") from None
        else:
            self.cluster = local_cluster(self.workers, self.gpus_per_trial, self.retries)
            self.release_semaphore_names()
            self.client = Client(self.cluster)
            self.threads = max(1, (os.cpu_count() or 1) // len(self.cluster.workers))
        return self.client

    def close(self) -> None:
        if self.client is not None and self.given is None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def release_semaphore_names(self) -> None:
        """Each Nanny of batchlab's own cluster hands its worker process two multiprocessing queues (six named
        semaphores) as it starts it, or starts it again: once the worker runs, their names are unlinked, so that
        a driver killed with SIGKILL leaves none behind (processes.release_semaphore_names)."""
        if self.cluster is None:
            return
        for nanny in list(self.cluster.workers.values()):
            process = getattr(nanny, "process", None)
            if process is not None and process.status == ProcessStatus.running:
                processes.release_semaphore_names(getattr(process, "init_result_q", None),
                                                  getattr(process, "child_stop_q", None))

    def resources(self) -> dict | None:
        return {"GPU": self.gpus_per_trial} if self.gpus_per_trial else None

    # ------------------------------------------------------------ before anything trains

    def check(self, trials: list[Trial], eval_cap: int | None, code_dirs: tuple[str, ...]) -> list[str]:
        """The user code imports here (its files are hashed into the records); then, as one task on a worker,
        where the data must exist, the full check of the local executors. The worker's copy of each user module
        must be the driver's: the records name the code that ran."""
        preflight.check_importable(trials)
        preflight.check_imports(trials)
        client = self.connect()
        self.check_resources(client)
        names = sorted({n for t in trials for n in imported_names(t.config)})
        # every trial, not one per distinct config: units and noise are checked per trial
        theirs, said = client.submit(check_on_worker, trials, eval_cap, code_dirs, names, pure=False).result()
        for module, here in registry.source_hashes(names).items():
            there = theirs.get(module)
            if there is not None and there["sha256"] != here["sha256"]:
                raise ConfigError(f"{module}: the workers import {there['file']}, which differs from {here['file']} "
                                  "here; give the workers the same code (the records name the code that ran)")
        return said

    def check_resources(self, client: Client) -> None:
        if not self.gpus_per_trial:
            return
        workers = client.scheduler_info()["workers"].values()
        offered = [w.get("resources", {}).get("GPU", 0) for w in workers]
        if offered and max(offered) < self.gpus_per_trial:
            raise ConfigError(f"--gpus-per-trial {self.gpus_per_trial:g}: no worker of the cluster offers "
                              f"GPU={self.gpus_per_trial:g} (start workers with --resources GPU=1, one per GPU)")

    # ------------------------------------------------------------ the sweep

    def run(self, jobs: list[Job], sweep: SweepDir, start_progress: StartProgress) -> Iterator[tuple[Trial, dict]]:
        if not jobs:
            return
        client = self.connect()
        topic = f"batchlab-{uuid.uuid4().hex}"  # this sweep's start events; other sweeps on the cluster have theirs
        events: queue.Queue = queue.Queue()
        client.subscribe_topic(topic, lambda event: events.put(("warning" if "warning" in event[1] else "start",
                                                                event[1])))
        tracked = {job.trial.id: Tracked(job, uuid.uuid4().hex) for job in jobs}

        def submit(t: Tracked) -> None:
            t.starts_before = len(t.workers)
            t.future = client.submit(run_on_worker, t.job, t.token, topic, t.job.trial.config.threads or self.threads,
                                     key=f"batchlab-{t.job.trial.id}-{uuid.uuid4().hex[:8]}", pure=False, retries=0,
                                     resources=self.resources())
            t.future.add_done_callback(lambda future: events.put(("end", (t, future))))

        def start(t: Tracked) -> None:
            if t.started_at is None:
                sweep.start_trial(t.job.trial.id, t.job.trial.resolved(), t.token)
                t.started_at = now()

        def fail(t: Tracked, error: str, details: str | None = None) -> dict:
            start(t)
            return record_without_run(t.job, sweep.trial_dir(t.job.trial.id), Status.FAILED, error, t.started_at,
                                      details)

        for t in tracked.values():
            submit(t)
        left = len(tracked)
        try:
            while left:
                kind, value = events.get()
                self.release_semaphore_names()  # of a worker started again since
                if kind == "warning":  # raised in a trial on a worker: the driver's, as in one process
                    warnings.warn(value["warning"], BatchlabWarning, stacklevel=1)
                    continue
                if kind == "start":
                    t = tracked.get(value["trial"])
                    if t is None or t.done:
                        continue
                    t.workers.append(value["worker"])
                    start(t)
                    if len(t.workers) <= self.retries + 1:
                        continue
                    t.future.cancel()  # a start beyond the retries: the scheduler ran it again on its own
                    summary = fail(t, self.lost(t.workers[:-1], len(t.workers) - 1))
                else:
                    t, future = value
                    if t.done or future is not t.future:
                        continue  # an attempt already given up
                    if future.status == "finished":
                        start(t)
                        receive_trial(sweep.trial_dir(t.job.trial.id), future.result())
                        summary = (read_json(sweep.trial_dir(t.job.trial.id) / "summary.json")
                                   or fail(t, "the worker sent back no summary.json"))
                    elif future.status == "cancelled":  # not by this driver: the scheduler lost it (restarted?)
                        summary = fail(t, "its task was cancelled on the cluster")
                    elif isinstance(future.exception(), KilledWorker):
                        if len(t.workers) == t.starts_before and t.unstarted < UNSTARTED_MAX:
                            t.unstarted += 1  # lost with a worker before it started there: costs no retry
                            submit(t)
                            continue
                        t.killed += 1
                        if len(t.workers) <= self.retries and t.killed <= self.retries:
                            submit(t)  # the scheduler gave up before our count: once more, on another worker
                            continue
                        summary = fail(t, self.lost(t.workers, max(len(t.workers), t.killed)))
                    else:  # outside the trial's own recording (its data did not load there, ...): no retry
                        summary = fail(t, describe(future.exception()), format_traceback(future.exception()))
                t.done, left = True, left - 1
                yield t.job.trial, summary
        except BaseException:  # Ctrl-C, SIGTERM, or the caller stopped
            self.stop(tracked, sweep, events)
            raise
        finally:
            client.unsubscribe_topic(topic)

    def lost(self, workers: list[str], times: int) -> str:
        """The error of a trial given up after its workers were lost `times` times (`workers`: where it ran)."""
        return (f"the worker running it was lost {times} time(s) ({', '.join(workers) or 'before it started'}); "
                f"retried {self.retries} time(s) (--retries)")

    def stop(self, tracked: dict[str, Tracked], sweep: SweepDir, events: queue.Queue) -> None:
        """Cancel every task not ended; record the trials that had started as interrupted."""
        while True:  # starts already reported, not yet seen
            try:
                kind, value = events.get_nowait()
            except queue.Empty:
                break
            if kind == "start" and value["trial"] in tracked:
                tracked[value["trial"]].workers.append(value["worker"])
        unfinished = [t for t in tracked.values() if not t.done]
        try:
            self.client.cancel([t.future for t in unfinished if t.future is not None])
        except Exception:  # noqa: BLE001 -- the scheduler is gone: nothing runs there any more to cancel
            pass
        for t in unfinished:
            if t.workers:
                if t.started_at is None:
                    sweep.start_trial(t.job.trial.id, t.job.trial.resolved(), t.token)
                    t.started_at = now()
                record_without_run(t.job, sweep.trial_dir(t.job.trial.id), Status.INTERRUPTED,
                                   f"stopped while it ran on {t.workers[-1]}; its metrics stayed there", t.started_at)


@dataclass(eq=False)
class Tracked:
    """One trial of the sweep, as the driver follows it."""
    job: Job
    token: str  # its run token: the driver's trial directory and the worker's files carry it
    future: object = None  # the task of its current attempt
    workers: list[str] = field(default_factory=list)  # where each attempt started
    killed: int = 0  # KilledWorker errors: the scheduler gave up on an attempt after losing its workers
    starts_before: int = 0  # len(workers) when its current attempt was submitted: equal, it has not started
    unstarted: int = 0  # attempts lost before they started (given to a worker that died first): run again free
    started_at: str | None = None
    done: bool = False


def local_cluster(workers: int, gpus_per_trial: float | None, retries: int):
    """A cluster on this machine, listening on 127.0.0.1 only, without a dashboard. CPU: `workers` processes of
    one thread. GPUs: one worker per CUDA device, seeing only its own (CUDA_VISIBLE_DEVICES), with GPU=1."""
    # Workers may start DataLoader processes (a Dataset with num_workers > 0): not daemonic, then.
    dask.config.set({"distributed.worker.daemon": False})
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        if not gpus_per_trial:
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=LOOPBACK,
                                dashboard_address=None, scheduler_kwargs=SCHEDULER, worker_dashboard_address=HTTP,
                                silence_logs=QUIET, preload=[__name__])
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--gpus-per-trial: no CUDA device here for a local cluster; name a cluster whose "
                              "workers have GPUs with --scheduler")
        scheduler = {"cls": Scheduler, "options": {"host": LOOPBACK, "port": 0, **SCHEDULER}}
        spec = {i: {"cls": Nanny, "options": {"host": LOOPBACK, "nthreads": 1, "resources": {"GPU": 1},
                                              "env": {"CUDA_VISIBLE_DEVICES": str(i)}, "silence_logs": QUIET,
                                              "dashboard_address": HTTP, "preload": [__name__]}}
                for i in range(torch.cuda.device_count())}
        return SpecCluster(scheduler=scheduler, workers=spec, silence_logs=QUIET)


# ---------------------------------------------------------------- on a worker

def dask_setup(worker) -> None:
    """Run as each worker of batchlab's own cluster starts (a Dask preload): Ctrl-C at a terminal reaches the
    whole process group, workers included; the driver decides what it means and stops them itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_on_worker(trials: list[Trial], eval_cap: int | None, code_dirs: tuple[str, ...],
                    names: list[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The preflight checks where the trials will run; returns this worker's hashes of the user modules, and the
    checks' warnings."""
    registry.make_importable(*code_dirs)
    said = preflight.check(trials, process_cache(eval_cap))
    return registry.source_hashes(names), said


def run_on_worker(job: Job, token: str, topic: str, threads: int | None) -> dict[str, bytes]:
    """One trial, trained into this worker's scratch directory; returns its files (name -> bytes)."""
    worker = get_worker()
    key = worker.get_current_task()
    worker.log_event(topic, {"trial": job.trial.id, "worker": worker.address})
    scratch = start_trial_dir(Path(worker.local_directory) / "batchlab" / f"{job.trial.id}-{token}",
                              job.trial.resolved(), token)

    def cancelled(step: int, total: int, row: dict) -> None:
        task = worker.state.tasks.get(key)
        if task is None or task.state == "cancelled":  # the driver gave the trial up (Ctrl-C): stop here
            raise KeyboardInterrupt

    with warnings.catch_warnings():
        warnings.simplefilter("always", BatchlabWarning)  # the driver's filters decide what is shown
        shown = warnings.showwarning

        def to_driver(message, category, *where, **kw):
            if issubclass(category, BatchlabWarning):
                worker.log_event(topic, {"warning": str(message)})
            else:
                shown(message, category, *where, **kw)

        warnings.showwarning = to_driver
        try:
            run_job(job, scratch, process_cache(job.eval_cap), threads, cancelled)
        except KeyboardInterrupt:
            pass  # recorded as interrupted; nobody waits for the result
    files = {p.name: p.read_bytes() for p in scratch.iterdir() if p.is_file()}
    shutil.rmtree(scratch, ignore_errors=True)
    return files
