"""Trials at once in local worker processes: `--workers N`, or `--gpus 0,1` (one worker per GPU).

Workers are started with "spawn" (a forked child would inherit libgomp's thread pool in a broken state), are not
daemonic (a Dataset's DataLoader may start processes in them) and die with the driver, even a driver killed with
SIGKILL (processes.die_with_parent). Each talks to the driver over a pipe of its own: no queue shared by all, so
no named semaphore that a killed driver could leave behind (multiprocessing's resource tracker would report it
as leaked), and a worker that dies is seen at once. They ignore Ctrl-C, which a terminal sends to the whole
process group: the driver decides, and stops them with SIGTERM, on which a worker records its running trial as
interrupted and ends without a word. The driver hands a worker its next trial only when it is free, so a
trial's directory exists once it runs. A library warning (BatchlabWarning) raised in a worker is sent to the
driver and raised there, so that the command line shows it as its one `warning:` line.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import contextlib
import os
import signal
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

from batchlab import preflight, processes
from batchlab.errors import BatchlabError, BatchlabWarning, RecordsError
from batchlab.executors.base import (DataCache, Executor, Job, StartProgress, describe, format_traceback,
                                     process_cache, record_without_run, run_job)
from batchlab.grid import Trial
from batchlab.machine import now
from batchlab.records import Status, SweepDir

STOP_WAIT = 30.0  # seconds stopping workers get to record their trials as interrupted: one needs well under 1 s
# (0.5-2.3 s from Ctrl-C to the driver's exit with its two workers, 75 tries, 2 cores shared with 4 busy processes)


class ProcessPool(Executor):
    """`workers` processes on this machine, each trial with CPU cores / workers threads unless its config sets
    threads (the thread count changes float results, so it is recorded). With `gpus`, one worker per GPU id,
    each seeing only its GPU (as cuda:0)."""

    concurrent = True

    def __init__(self, workers: int, gpus: list[int] | None = None):
        self.workers = len(gpus) if gpus else workers
        self.gpus = gpus
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)

    def check(self, trials: list[Trial], eval_cap: int | None, code_dirs: tuple[str, ...]) -> list[str]:
        preflight.check_importable(trials)
        return preflight.check(trials, DataCache(eval_cap))

    def run(self, jobs: list[Job], sweep: SweepDir, start_progress: StartProgress) -> Iterator[tuple[Trial, dict]]:
        waiting = list(reversed(jobs))
        workers: list[Worker] = []

        def hand_over(worker: Worker) -> None:
            job = waiting.pop()
            worker.job, worker.trial_dir = job, sweep.start_trial(job.trial.id, job.trial.resolved())
            worker.started = now()
            worker.conn.send((job, worker.trial_dir, job.trial.config.threads or self.threads))

        try:
            for slot in range(min(self.workers, len(jobs))):
                workers.append(Worker.start(self.gpus[slot] if self.gpus else None))
                hand_over(workers[-1])
            while busy := [w for w in workers if w.job is not None]:
                multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    ended = worker.receive()
                    if ended is None:
                        continue
                    job, summary = worker.job, self.summary(worker, *ended)
                    worker.job = None
                    if not worker.process.is_alive():  # it died: a fresh one takes its place
                        workers[workers.index(worker)] = worker = Worker.start(worker.gpu)
                    if waiting:
                        hand_over(worker)
                    yield job.trial, summary
            for worker in workers:
                with contextlib.suppress(OSError):  # one that died idle has ended already
                    worker.conn.send(None)  # no more trials: end
        except BaseException:  # Ctrl-C, SIGTERM, or the caller stopped: running trials record themselves
            for worker in workers:
                worker.process.terminate()
            raise
        finally:
            deadline = time.monotonic() + STOP_WAIT
            for worker in workers:  # one that does not end (its interrupt swallowed) must not hang the driver; a
                worker.process.join(max(0.0, deadline - time.monotonic()))  # second Ctrl-C here leaves the rest
                if worker.process.is_alive():  # to die with the driver (processes.die_with_parent)
                    worker.process.kill()  # its trial, without a summary, is trained again by the next run
                    worker.process.join()
                worker.conn.close()

    @staticmethod
    def summary(worker: Worker, kind: str, value, details: str | None = None) -> dict:
        """The ended trial's summary: as it recorded it, or recorded here when it could not (it raised outside
        its own recording, e.g. its data did not load, or its worker died)."""
        if kind == "done":
            return value
        if isinstance(value, RecordsError):  # the records cannot be written (a full or read-only disk)
            raise value  # ... the sweep stops, as it does in one process
        return record_without_run(worker.job, worker.trial_dir, Status.FAILED, value, worker.started, details)


@dataclass(eq=False)
class Worker:
    """One worker process, the driver's end of its pipe, and the trial it runs (None: idle)."""
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    gpu: int | None
    job: Job | None = None
    trial_dir: os.PathLike | None = None
    started: str = ""
    ready: bool = False  # it said it started (worker_main)

    @classmethod
    def start(cls, gpu: int | None) -> Worker:
        context = multiprocessing.get_context("spawn")
        here, there = context.Pipe()
        process = context.Process(target=worker_main, args=(there, gpu, os.getpid()), name="batchlab-worker")
        process.start()
        there.close()
        return cls(process, here, gpu)

    def receive(self) -> tuple | None:
        """Read what the worker sent: warnings are raised here; returns how its trial ended, once it has
        ("done", summary), ("error", error, traceback) or, for a worker that died, ("error", reason)."""
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message[0] == "ready":
                    self.ready = True
                elif message[0] != "warning":
                    return message
                else:
                    warnings.warn(message[1], BatchlabWarning, stacklevel=1)
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            return None
        self.process.join()
        code = self.process.exitcode
        if not self.ready and code > 0:  # it raised while starting (a kill is a kill): no worker can start
            raise BatchlabError(
                f"a worker process could not start (exit code {code}; its error is above). Workers are started "
                "with multiprocessing's 'spawn', which imports the main script again (a script calling "
                "batchlab.sweep with workers > 1 needs its entry point under `if __name__ == '__main__':`)")
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return "error", f"its worker process died ({how})"


# ---------------------------------------------------------------- in a worker process

running_trial = False  # whether this worker is inside a trial (SIGTERM then records it as interrupted)
stopping = False  # whether the driver is stopping the pool (SIGTERM came)


def worker_main(conn, gpu: int | None, parent_pid: int) -> None:
    processes.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the driver decides
    signal.signal(signal.SIGTERM, stop)
    if gpu is not None:  # one GPU per worker: before CUDA starts, this process sees only its own
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    shown = warnings.showwarning

    def to_driver(message, category, *where, **kw):
        if issubclass(category, BatchlabWarning):
            conn.send(("warning", str(message)))
        else:
            shown(message, category, *where, **kw)

    warnings.simplefilter("always", BatchlabWarning)  # the driver's filters decide what is shown
    warnings.showwarning = to_driver
    try:
        conn.send(("ready",))  # started: a worker that dies before this could not start at all
        while (task := conn.recv()) is not None:
            conn.send(worker_run(*task))
    except (EOFError, OSError):  # the driver is gone (killed): there is no one to tell, and nothing to print
        pass


def stop(signum, frame) -> None:
    """The driver is stopping the pool: a running trial is recorded as interrupted (run_trial does it as the
    KeyboardInterrupt passes), an idle worker just ends."""
    global stopping
    stopping = True
    if running_trial:
        raise KeyboardInterrupt
    os._exit(0)


def worker_run(job: Job, trial_dir, threads: int) -> tuple:
    """One trial: ("done", its summary), or ("error", what it raised, the traceback) when it raised outside its
    own recording."""
    global running_trial
    running_trial = True
    try:
        return "done", run_job(job, trial_dir, process_cache(job.eval_cap), threads)
    except BaseException as e:
        if stopping:  # recorded as interrupted (or, on a full disk, as far as it could be); the driver says so,
            os._exit(130)  # once
        return "error", e if isinstance(e, RecordsError) else describe(e), format_traceback(e)
    finally:
        running_trial = False
