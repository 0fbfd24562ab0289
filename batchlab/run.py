"""Run a sweep: check what its trials need, plan which still need running, train them, record each."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from batchlab import registry
from batchlab.data import Data, fits_on_device, load_dataset
from batchlab.errors import ConfigError, short
from batchlab.grid import Trial
from batchlab.records import DONE, Status, SweepDir
from batchlab.schema import NAME_MAX, Experiment
from batchlab.train import Progress, build_parts, check_noise, imported_names, resolve_device, run_trial

SMOKE_STEPS = 3  # a few optimizer steps prove the wiring; they say nothing about the result
SMOKE_EXAMPLES = 256  # train and evaluation examples kept in a smoke run


def smoke(experiment: Experiment) -> Experiment:
    """The same grid, shrunk: a few steps on a slice of the data, on CPU, under `<name>-smoke`."""
    raw = experiment.model_dump(mode="json", exclude_unset=True)
    raw["name"] = f"{experiment.name[:NAME_MAX - len('-smoke')]}-smoke"  # a long name is cut to fit a file name
    raw["budget"] = {"steps": SMOKE_STEPS}
    raw["device"] = "cpu"
    raw.setdefault("dataset", {})["subset"] = SMOKE_EXAMPLES
    raw.setdefault("eval", {})["every"] = 1000.0  # evaluate at the start and after the last step only
    raw["sweep"] = {k: v for k, v in (raw.get("sweep") or {}).items()
                    if k not in ("budget.epochs", "budget.steps", "budget.examples", "device", "dataset.subset")}
    return Experiment.model_validate(raw)


def resolve_max(experiment: Experiment, memory_limit: int | None = None,
                code_dirs: tuple[str, ...] = ()) -> tuple[Experiment, list[str]]:
    """Replace `max` in the batch-size axis and `micro_batch_size: auto` by the largest batch that fits.

    Returns the experiment with numbers in place, and a line for each value found.
    """
    from batchlab.maxbatch import find_max_batch

    axis = experiment.sweep.get("batch_size")
    wants_max = isinstance(axis, list) and "max" in axis
    if not wants_max and experiment.micro_batch_size != "auto":
        return experiment, []
    base = experiment.model_copy(update={"micro_batch_size": None})
    result = find_max_batch(base, memory_limit=memory_limit, code_dirs=code_dirs)
    largest = result.batch_size
    update, found = {}, []
    if wants_max:
        update["sweep"] = {**experiment.sweep, "batch_size": [largest if b == "max" else b for b in axis]}
        found.append(f"batch_size max = {largest}, the largest batch that fits on {result.device}")
    if experiment.micro_batch_size == "auto":
        update["micro_batch_size"] = largest
        found.append(f"micro_batch_size auto = {largest}: larger batches accumulate gradients")
    return experiment.model_copy(update=update), found


def plan(trials: list[Trial], sweep: SweepDir) -> list[tuple[Trial, Status | None]]:
    """Each trial with its recorded status (None: never started)."""
    return [(t, sweep.status(t.id)) for t in trials]


@dataclass
class Hooks:
    """What the caller shows while a sweep runs; every hook is optional."""
    trial_start: Callable[[Trial, int, int], Progress | None] = lambda trial, i, n: None
    trial_end: Callable[[Trial, dict], None] = lambda trial, summary: None


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


def check(trials: list[Trial], cache: DataCache) -> None:
    """Before any trial runs: every distinct data set, model, loss and optimizer builds, and the model's
    output suits the data (a batch of two examples through the model and the loss), on the CPU; the
    training set is large enough for the noise measurement when it is on.

    Raises DataError or ComponentError (a ConfigError naming the config key) with the reason.
    """
    seen = set()
    for trial in trials:
        cfg = trial.config
        key = json.dumps([cfg.model_dump(mode="json", include={"dataset", "model", "loss", "optimizer"}),
                          cfg.seed if cfg.dataset.val_fraction > 0 else None])
        data = cache.get(cfg, torch.device("cpu"))  # loaded once: the trials then train on the same
        if cfg.noise.every:
            check_noise(cfg, len(data.train))
        if key in seen:
            continue
        seen.add(key)
        model, criterion, _ = build_parts(cfg, data, torch.device("cpu"))
        check_output(cfg, model, criterion, data)


def check_output(cfg: Experiment, model: torch.nn.Module, criterion, data: Data) -> None:
    x, y = data.train.take(torch.arange(min(2, len(data.train))))
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001 -- the user's model fails on real examples
        raise registry.ComponentError("model.name", f"{cfg.model.name} fails on a batch of {len(x)} examples of shape "
                                                    f"{tuple(x.shape[1:])}: {type(e).__name__}: "
                                                    f"{short(str(e))}") from None
    if not isinstance(out, torch.Tensor):
        raise registry.ComponentError("model.name", f"{cfg.model.name} returned a {type(out).__name__}, expected a "
                                                    "tensor of outputs")
    if data.task == "classification":
        if out.dim() != 2 or out.shape[0] != len(x):
            raise registry.ComponentError("model.name", f"{cfg.model.name} gives outputs of shape {tuple(out.shape)} "
                                                        f"for {len(x)} examples; classification needs (batch, classes)")
        if out.shape[1] < data.num_classes:
            raise registry.ComponentError("model.name", f"{cfg.model.name} outputs {out.shape[1]} values per example, "
                                                        f"but the labels go up to {data.num_classes - 1} "
                                                        f"({data.num_classes} classes)")
    if data.task == "regression" and out.shape != y.shape and out.shape != (*y.shape, 1):
        raise registry.ComponentError("model.name", f"{cfg.model.name} gives outputs of shape {tuple(out.shape)} "
                                                    f"for targets of shape {tuple(y.shape)}")
    try:
        loss = criterion(out, y)
    except Exception as e:  # noqa: BLE001
        raise registry.ComponentError("loss.name", f"{cfg.loss.name} fails on the model's outputs "
                                                   f"{tuple(out.shape)} and targets {tuple(y.shape)}: "
                                                   f"{type(e).__name__}: {short(str(e))}") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise registry.ComponentError("loss.name", f"{cfg.loss.name} returned {shape}; a loss must be a scalar "
                                                   "(the mean over the batch)")


def check_importable(trials: list[Trial]) -> None:
    """With worker processes, every import path must be importable there: not a callable from __main__."""
    for name in sorted({n for t in trials for n in imported_names(t.config)}):
        if not registry.importable_elsewhere(name):
            raise ConfigError(f"{name} was handed over from Python but is defined in {name.split(':')[0]}, "
                              "which worker processes cannot import; move it into a module and name it by "
                              "import path (e.g. model: {name: my_nets:SmallCNN}), or run with one worker")


def train_one(trial: Trial, trial_dir: Path, cache: DataCache, command: str, threads: int | None, smoke: bool,
              progress: Progress | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(trial.config.device)
    return run_trial(trial.config, trial.id, trial.axes, trial_dir, cache.get(trial.config, device), device,
                     command, progress, judge=not smoke)  # a smoke run proves wiring, not learning


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job, or the pool stopping its workers) is handled like Ctrl-C:
    the running trial is recorded as interrupted and the sweep stops."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


_worker_cache: DataCache | None = None


def _worker_start(eval_cap: int | None, gpu_ids, code_dirs: tuple[str, ...]) -> None:
    global _worker_cache
    if gpu_ids is not None:  # one GPU per worker: before CUDA starts, this process sees only its own
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())
    registry.make_importable(*code_dirs)
    _worker_cache = DataCache(eval_cap)
    sigterm_as_interrupt()


def _worker_run(job: tuple) -> dict:
    return train_one(*job[:2], _worker_cache, *job[2:])


def run_sweep(experiment: Experiment, trials: list[Trial], out: Path, command: str, restart: bool = False,
              hooks: Hooks = Hooks(), smoke: bool = False, workers: int = 1, gpus: list[int] | None = None,
              code_dirs: tuple[str, ...] = ()) -> list[dict]:
    """Train every trial not already completed or diverged. Returns the summaries of the trials run.

    With workers > 1, trials run at once in separate processes, each with cpu_count // workers threads
    unless the config sets `threads` (the thread count changes float results, so it is recorded).
    With `gpus`, one worker per GPU id, each seeing only its GPU (as cuda:0). `code_dirs` are made
    importable in every process (the config's directory and the working directory).
    """
    if gpus:
        workers = len(gpus)
    sweep = SweepDir(out, experiment.name)
    summaries = []
    eval_cap = SMOKE_EXAMPLES if smoke else None
    registry.make_importable(*code_dirs)
    if workers > 1:
        check_importable(trials)
    cache = DataCache(eval_cap)
    with sweep.lock():
        todo = [t for t, status in plan(trials, sweep) if restart or status not in DONE]
        check(todo, cache)
        names = sorted({n for t in trials for n in imported_names(t.config)})
        sweep.prepare(experiment, restart, registry.source_hashes(names))
        if workers <= 1:
            for i, trial in enumerate(todo):
                trial_dir = sweep.start_trial(trial.id, trial.resolved())
                summary = train_one(trial, trial_dir, cache, command, trial.config.threads, smoke,
                                    hooks.trial_start(trial, i, len(todo)))
                hooks.trial_end(trial, summary)
                summaries.append(summary)
            return summaries
        threads = max(1, (os.cpu_count() or 1) // workers)
        jobs = [(t, sweep.start_trial(t.id, t.resolved()), command, t.config.threads or threads, smoke) for t in todo]
        context = multiprocessing.get_context("spawn")
        gpu_ids = None
        if gpus:
            gpu_ids = context.Manager().Queue()
            for gpu in gpus:
                gpu_ids.put(gpu)
        pool = context.Pool(workers, _worker_start, (eval_cap, gpu_ids, tuple(code_dirs)))
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
