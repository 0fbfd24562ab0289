"""Run a sweep: plan which trials still need running, load each data set once, train, record."""

from __future__ import annotations

import json
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


def run_sweep(experiment: Experiment, raw: dict, trials: list[Trial], out: Path, command: str,
              restart: bool = False, hooks: Hooks = Hooks(), smoke: bool = False) -> list[dict]:
    """Train every trial not already completed or diverged. Returns the summaries of the trials run."""
    sweep = SweepDir(out, experiment.name)
    summaries = []
    with sweep.lock():
        sweep.prepare(experiment, raw, restart)
        todo = [t for t, status in plan(trials, sweep) if status not in DONE]
        data = DataCache(eval_cap=SMOKE_EXAMPLES if smoke else None)
        for i, trial in enumerate(todo):
            cfg = trial.config
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            device = resolve_device(cfg.device)
            trial_data = data.get(cfg, device)
            trial_dir = sweep.start_trial(trial.id, trial.resolved())
            progress = hooks.trial_start(trial, i, len(todo))
            summary = run_trial(trial, trial_dir, trial_data, device, command, progress)
            hooks.trial_end(trial, summary)
            summaries.append(summary)
    return summaries
