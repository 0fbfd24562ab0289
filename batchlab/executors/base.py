"""What every way of running trials shares: the job, the trial function, each process's data cache, the interface.

An executor takes the jobs a sweep planned (the trials still to run) and runs each through `run_job`, the one
trial function, wherever its processes are. It starts each trial's directory in the driver's records as the
trial starts (SweepDir.start_trial, which gives the trial its run token), and yields each trial's summary as
it ends. The driver (run.run_sweep) holds the lock, plans, writes sweep.yaml and calls the hooks; the
executor only decides where and how at once trials run.
"""

from __future__ import annotations

import json
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from batchlab import registry
from batchlab.data import Data, fits_on_device, load_dataset
from batchlab.disk import write_json_atomic, write_text
from batchlab.errors import short
from batchlab.grid import Trial
from batchlab.machine import now, resolve_device
from batchlab.records import MetricsWriter, Status, SweepDir, run_token
from batchlab.schema import Experiment
from batchlab.summary import Summary
from batchlab.train import Progress, hardest_target, run_trial

StartProgress = Callable[[Trial, int, int], Progress | None]  # (trial, i, n) -> a per-step callback, or None


@dataclass(frozen=True)
class Job:
    """One trial to run, with everything another process needs to run it."""
    trial: Trial
    command: str  # recorded in summary.json: the command that reproduces the sweep
    eval_cap: int | None = None  # a smoke run keeps this many evaluation examples (None: not a smoke run)
    code_dirs: tuple[str, ...] = ()  # importable first in every process: the config's directory, the driver's cwd
    race: bool = False  # stop once the clock passes the best time to the target recorded when the trial starts
    deadline_steps: int | None = None  # stop once past this many steps without the target (suggest's race)


class DataCache:
    """Load each distinct data set once per process; it is the slow part of a small trial."""

    def __init__(self, eval_cap: int | None = None):
        self.cache: dict[str, Data] = {}
        self.eval_cap = eval_cap

    def get(self, cfg: Experiment, device: torch.device) -> Data:
        seed = cfg.seed if cfg.dataset.val_fraction > 0 else None  # the val split is drawn from the seed
        key = json.dumps([cfg.dataset.model_dump(mode="json"), seed, str(device)])
        if key not in self.cache:
            data = load_dataset(cfg.dataset, cfg.seed)
            if self.eval_cap:
                data.eval = data.eval.head(self.eval_cap)
            self.cache[key] = data.to(device) if fits_on_device(data, device) else data
        return self.cache[key]


caches: dict[int | None, DataCache] = {}  # a worker process's data sets, by evaluation cap


def process_cache(eval_cap: int | None) -> DataCache:
    """The data cache of this (worker) process: each data set is loaded once per worker, not once per trial."""
    return caches.setdefault(eval_cap, DataCache(eval_cap))


def run_job(job: Job, trial_dir: Path, cache: DataCache, threads: int | None = None,
            progress: Progress | None = None) -> dict:
    """The trial function, the same in every executor: train one trial and record it in `trial_dir`, which
    holds its config.json and run token already. `threads`: torch CPU threads (None: as the process has them).
    Returns the summary as written."""
    registry.make_importable(*job.code_dirs)
    if threads:
        torch.set_num_threads(threads)
    cfg = job.trial.config
    device = resolve_device(cfg.device)
    return run_trial(cfg, job.trial.id, job.trial.axes, trial_dir, cache.get(cfg, device), device, job.command,
                     progress, judge=job.eval_cap is None,  # a smoke run proves wiring, not learning
                     deadline=deadline(job.trial, trial_dir) if job.race else None,
                     deadline_steps=job.deadline_steps)


def deadline(trial: Trial, trial_dir: Path) -> float | None:
    """Racing: the least training seconds to the trial's hardest target among the trials of its seed recorded
    beside it when it starts (with trials at once, what had finished; in a worker's scratch directory, none)."""
    hardest = hardest_target(trial.config)
    if hardest is None:
        return None
    sweep_dir = trial_dir.parent.parent
    return SweepDir(sweep_dir.parent, sweep_dir.name).best_time(f"{hardest:g}", trial.config.seed)


def record_without_run(job: Job, trial_dir: Path, status: Status, error: str | None, started_at: str,
                       details: str | None = None) -> dict:
    """Record, from the driver, a trial whose own records never came back: its worker was lost, or its task
    failed outside the trial function, or the sweep was stopped while it ran elsewhere. `details`: error.txt."""
    cfg = job.trial.config
    summary = Summary(trial_id=job.trial.id, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, axes=job.trial.axes,
                      status=status, error=error, target_metric=cfg.target.metric, precision=cfg.precision,
                      targets={f"{v:g}": None for v in cfg.target.value}, command=job.command,
                      run_token=run_token(trial_dir), started_at=started_at, finished_at=now(),
                      torch_version=torch.__version__)
    MetricsWriter(trial_dir / "metrics.csv").close()  # the header: the trial's rows stayed where it ran
    if details:
        write_text(trial_dir / "error.txt", details)
    written = summary.to_json()
    write_json_atomic(trial_dir / "summary.json", written)
    return written


def describe(error: BaseException) -> str:
    """An exception as summary.json's one-line `error`."""
    return f"{type(error).__name__}: {short(str(error))}"


def format_traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


class Executor(ABC):
    """Where and how at once a sweep's trials run."""

    concurrent = False  # trials run at once: no per-trial progress; the sweep's progress moves as trials end
    on_this_machine = True  # trials run here: their step times can be measured here too

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Give back what the executor started (processes, a cluster)."""

    @abstractmethod
    def check(self, trials: list[Trial], eval_cap: int | None, code_dirs: tuple[str, ...]) -> list[str]:
        """Before anything trains: raise a ConfigError or DataError (a user's mistake, naming the config key)
        for what would fail every trial: user code that does not import or build, data that does not load. Returns
        preflight.check's warnings (each starting with the config key) for the caller to give."""

    @abstractmethod
    def run(self, jobs: list[Job], sweep: SweepDir, start_progress: StartProgress) -> Iterator[tuple[Trial, dict]]:
        """Run every job, starting each trial's directory as the trial starts; yield (trial, summary) as each
        ends. On KeyboardInterrupt: the running trials are recorded as interrupted, the finished ones are kept,
        nothing else is left running, and the KeyboardInterrupt goes on up."""
