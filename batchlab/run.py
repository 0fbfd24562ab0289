"""Run a sweep: plan which trials still need running, load each data set once, train, record."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from batchlab.config import Experiment
from batchlab.data import Data, load_dataset
from batchlab.records import DONE, SweepDir
from batchlab.sweep import Trial
from batchlab.train import Progress, resolve_device, run_trial

SMOKE_STEPS = 3  # a few optimizer steps prove the wiring; they say nothing about the result
SMOKE_EXAMPLES = 256  # train and evaluation examples kept in a smoke run


def smoke_raw(raw: dict) -> dict:
    """The same grid, shrunk: a few steps on a slice of the data, on CPU, under `<name>-smoke`."""
    raw = json.loads(json.dumps(raw))
    raw["name"] = f"{raw.get('name', 'experiment')}-smoke"
    raw["budget"] = {"steps": SMOKE_STEPS}
    raw["device"] = "cpu"
    raw.setdefault("dataset", {})["subset"] = SMOKE_EXAMPLES
    raw.setdefault("eval", {})["every"] = 1000.0  # evaluate at the start and after the last step only
    raw["sweep"] = {k: v for k, v in (raw.get("sweep") or {}).items()
                    if k not in ("budget.epochs", "budget.steps", "budget.examples", "device", "dataset.subset")}
    return raw


def resolve_max(experiment: Experiment, raw: dict, memory_limit: int | None = None
                ) -> tuple[Experiment, dict, list[str]]:
    """Replace `max` in the batch-size axis and `micro_batch_size: auto` by the largest batch that fits.

    Returns the experiment, the raw config with numbers in place, and a line for each value found.
    """
    from batchlab.config import validate
    from batchlab.maxbatch import find_max_batch

    axis = raw.get("sweep", {}).get("batch_size")
    wants_max = isinstance(axis, list) and "max" in axis
    if not wants_max and raw.get("micro_batch_size") != "auto":
        return experiment, raw, []
    raw = json.loads(json.dumps(raw))
    base = experiment.model_copy(update={"micro_batch_size": None})
    result = find_max_batch(base, memory_limit=memory_limit)
    largest = result.batch_size
    found = []
    if wants_max:
        raw["sweep"]["batch_size"] = [largest if b == "max" else b for b in axis]
        found.append(f"batch_size max = {largest}, the largest batch that fits on {result.device}")
    if raw.get("micro_batch_size") == "auto":
        raw["micro_batch_size"] = largest
        found.append(f"micro_batch_size auto = {largest}: larger batches accumulate gradients")
    return validate(raw, "config"), raw, found


def plan(trials: list[Trial], sweep: SweepDir) -> list[tuple[Trial, str | None]]:
    """Each trial with its recorded status (None: never started)."""
    return [(t, sweep.status(t.id)) for t in trials]


@dataclass
class Hooks:
    """What the CLI shows while a sweep runs; every hook is optional."""
    trial_start: Callable[[Trial, int, int], Progress | None] = lambda trial, i, n: None
    trial_end: Callable[[Trial, dict], None] = lambda trial, summary: None


class DataCache:
    """Load each distinct data set once per sweep; it is the slow part of a small trial."""

    def __init__(self, eval_cap: int | None = None):
        self.cache: dict[str, Data] = {}
        self.eval_cap = eval_cap

    def get(self, cfg: Experiment, device: torch.device) -> Data:
        seed = cfg.seed if cfg.dataset.val_fraction > 0 else None  # the val split is drawn from the seed
        key = json.dumps([cfg.dataset.model_dump(mode="json"), seed, str(device)])
        if key not in self.cache:
            data = load_dataset(cfg.dataset, cfg.seed)
            if self.eval_cap:
                data.x_eval, data.y_eval = data.x_eval[:self.eval_cap], data.y_eval[:self.eval_cap]
            self.cache[key] = data.to(device) if fits(data, device) else data
        return self.cache[key]


def fits(data: Data, device: torch.device) -> bool:
    """Keep the data on the GPU when it takes under half of the free memory; else batches are copied."""
    if device.type != "cuda":
        return True
    size = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train, data.x_eval, data.y_eval))
    return size < torch.cuda.mem_get_info(device)[0] / 2


def train_one(trial: Trial, trial_dir: Path, cache: DataCache, command: str, threads: int | None,
              progress: Progress | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(trial.config.device)
    return run_trial(trial, trial_dir, cache.get(trial.config, device), device, command, progress)


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job, or the pool stopping its workers) is handled like Ctrl-C:
    the running trial is recorded as interrupted and the sweep stops."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


_worker_cache: DataCache | None = None


def _worker_start(eval_cap: int | None, gpu_ids) -> None:
    global _worker_cache
    if gpu_ids is not None:  # one GPU per worker: before CUDA starts, this process sees only its own
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())
    _worker_cache = DataCache(eval_cap)
    sigterm_as_interrupt()


def _worker_run(job: tuple) -> dict:
    return train_one(*job[:2], _worker_cache, *job[2:])


def run_sweep(experiment: Experiment, raw: dict, trials: list[Trial], out: Path, command: str,
              restart: bool = False, hooks: Hooks = Hooks(), smoke: bool = False, workers: int = 1,
              gpus: list[int] | None = None) -> list[dict]:
    """Train every trial not already completed or diverged. Returns the summaries of the trials run.

    With workers > 1, trials run at once in separate processes, each with cpu_count // workers threads
    unless the config sets `threads` (the thread count changes float results, so it is recorded).
    With `gpus`, one worker per GPU id, each seeing only its GPU (as cuda:0).
    """
    if gpus:
        workers = len(gpus)
    sweep = SweepDir(out, experiment.name)
    summaries = []
    eval_cap = SMOKE_EXAMPLES if smoke else None
    with sweep.lock():
        sweep.prepare(experiment, raw, restart)
        todo = [t for t, status in plan(trials, sweep) if status not in DONE]
        if workers <= 1 and not gpus:
            cache = DataCache(eval_cap)
            for i, trial in enumerate(todo):
                trial_dir = sweep.start_trial(trial.id, trial.resolved())
                summary = train_one(trial, trial_dir, cache, command, trial.config.threads,
                                    hooks.trial_start(trial, i, len(todo)))
                hooks.trial_end(trial, summary)
                summaries.append(summary)
            return summaries
        threads = max(1, (os.cpu_count() or 1) // workers)
        jobs = [(t, sweep.start_trial(t.id, t.resolved()), command, t.config.threads or threads) for t in todo]
        context = multiprocessing.get_context("spawn")
        gpu_ids = None
        if gpus:
            gpu_ids = context.Manager().Queue()
            for gpu in gpus:
                gpu_ids.put(gpu)
        pool = context.Pool(workers, _worker_start, (eval_cap, gpu_ids))
        try:
            for summary in pool.imap_unordered(_worker_run, jobs):
                hooks.trial_end(next(t for t in todo if t.id == summary["trial_id"]), summary)
                summaries.append(summary)
        except KeyboardInterrupt:
            pool.terminate()  # SIGTERM: each worker records its running trial as interrupted
            raise
        finally:
            pool.close()
            pool.join()
    return summaries
