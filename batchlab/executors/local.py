"""Trials one after another in this process: the default, and what a notebook's callables need."""

from __future__ import annotations

from typing import Iterator

from batchlab import preflight
from batchlab.executors.base import DataCache, Executor, Job, StartProgress, run_job
from batchlab.grid import Trial
from batchlab.records import SweepDir


class Sequential(Executor):
    """Each trial in this process, in order, with its progress shown step by step. The data sets the checks
    loaded stay in this process's cache for the trials."""

    def __init__(self):
        self.cache = DataCache()

    def check(self, trials: list[Trial], eval_cap: int | None, code_dirs: tuple[str, ...]) -> list[str]:
        self.cache = DataCache(eval_cap)
        return preflight.check(trials, self.cache)

    def run(self, jobs: list[Job], sweep: SweepDir, start_progress: StartProgress) -> Iterator[tuple[Trial, dict]]:
        for i, job in enumerate(jobs):
            trial_dir = sweep.start_trial(job.trial.id, job.trial.resolved())
            progress = start_progress(job.trial, i, len(jobs))
            yield job.trial, run_job(job, trial_dir, self.cache, job.trial.config.threads, progress)
