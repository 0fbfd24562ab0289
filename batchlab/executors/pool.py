"""Trials at once in local worker processes: `--workers N`, or `--gpus 0,1` (one worker per GPU).

Workers are started with "spawn" (a forked child would inherit libgomp's thread pool in a broken state), are not
daemonic (a Dataset's DataLoader may start processes in them) and die with the driver, even a driver killed with
SIGKILL (processes.die_with_parent). They ignore Ctrl-C, which
a terminal sends to the whole process group: the driver decides, and stops them with SIGTERM, on which a
worker records its running trial as interrupted and ends without a word. The driver hands a worker its next
trial only when one is free, so a trial's directory exists once it runs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.pool
import os
import queue
import signal
from typing import Iterator

from batchlab import preflight, processes
from batchlab.errors import RecordsError
from batchlab.executors.base import (DataCache, Executor, Job, StartProgress, describe, format_traceback,
                                     process_cache, record_without_run, run_job)
from batchlab.grid import Trial
from batchlab.records import Status, SweepDir
from batchlab.train import now


class ProcessPool(Executor):
    """`workers` processes on this machine, each trial with CPU cores / workers threads unless its config sets
    threads (the thread count changes float results, so it is recorded). With `gpus`, one worker per GPU id,
    each seeing only its GPU (as cuda:0)."""

    concurrent = True

    def __init__(self, workers: int, gpus: list[int] | None = None):
        self.workers = len(gpus) if gpus else workers
        self.gpus = gpus
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)

    def check(self, trials: list[Trial], eval_cap: int | None, code_dirs: tuple[str, ...]) -> None:
        preflight.check_importable(trials)
        preflight.check(trials, DataCache(eval_cap))

    def run(self, jobs: list[Job], sweep: SweepDir, start_progress: StartProgress) -> Iterator[tuple[Trial, dict]]:
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        gpu_ids = None
        if self.gpus:  # each worker takes one id as it starts
            gpu_ids = context.SimpleQueue()
            for gpu in self.gpus:
                gpu_ids.put(gpu)
        ended: queue.Queue = queue.Queue()  # (job, trial_dir, started_at, summary or None, error or None)
        pool = Pool(self.workers, worker_start, (gpu_ids, os.getpid()), context=context)
        waiting = list(reversed(jobs))

        def hand_over() -> None:
            job = waiting.pop()
            trial_dir, started = sweep.start_trial(job.trial.id, job.trial.resolved()), now()
            pool.apply_async(worker_run, (job, trial_dir, job.trial.config.threads or self.threads),
                             callback=lambda s: ended.put((job, trial_dir, started, s, None)),
                             error_callback=lambda e: ended.put((job, trial_dir, started, None, e)))

        try:
            running = 0
            while waiting and running < self.workers:
                hand_over()
                running += 1
            while running:
                job, trial_dir, started, summary, error = ended.get()
                running -= 1
                if isinstance(error, RecordsError):  # the records cannot be written (a full or read-only disk)
                    raise error  # ... the sweep stops, as it does in one process
                if error is not None:  # raised outside the trial's own recording (e.g. its data did not load)
                    summary = record_without_run(job, trial_dir, Status.FAILED, describe(error), started,
                                                 format_traceback(error))
                if waiting:
                    hand_over()
                    running += 1
                yield job.trial, summary
            pool.close()
        except BaseException:  # Ctrl-C, SIGTERM, or the caller stopped: running trials record themselves
            pool.terminate()
            raise
        finally:
            pool.join()


class WorkerProcess(multiprocessing.context.SpawnProcess):
    """A pool worker that may start processes of its own (a Dataset's DataLoader workers), which a daemonic
    process may not. It still never outlives the driver (die_with_parent), and the pool always joins it."""

    @property
    def daemon(self) -> bool:
        return False

    @daemon.setter
    def daemon(self, value: bool) -> None:
        pass  # multiprocessing.Pool makes its workers daemonic


class Pool(multiprocessing.pool.Pool):
    """multiprocessing's Pool, of WorkerProcess workers."""

    @staticmethod
    def Process(ctx, *args, **kwargs):  # noqa: N802 -- the name multiprocessing.Pool calls
        return WorkerProcess(*args, **kwargs)


# ---------------------------------------------------------------- in a worker process

running_trial = False  # whether this worker is inside a trial (SIGTERM then records it as interrupted)
stopping = False  # whether the driver is stopping the pool (SIGTERM came)


def worker_start(gpu_ids, parent_pid: int) -> None:
    processes.die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the driver decides
    signal.signal(signal.SIGTERM, stop)
    if gpu_ids is not None:  # one GPU per worker: before CUDA starts, this process sees only its own
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())


def stop(signum, frame) -> None:
    """The driver is stopping the pool: a running trial is recorded as interrupted (run_trial does it as the
    KeyboardInterrupt passes), an idle worker just ends."""
    global stopping
    stopping = True
    if running_trial:
        raise KeyboardInterrupt
    os._exit(0)


def worker_run(job: Job, trial_dir, threads: int) -> dict:
    global running_trial
    running_trial = True
    try:
        return run_job(job, trial_dir, process_cache(job.eval_cap), threads)
    except BaseException:
        if stopping:  # recorded as interrupted (or, on a full disk, as far as it could be); the driver says so,
            os._exit(130)  # once. A worker that handed an error back now could block on a pool being torn down
        raise
    finally:
        running_trial = False
