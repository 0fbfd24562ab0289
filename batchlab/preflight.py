"""Before anything trains: every distinct data set, model, loss and optimizer of a sweep builds, and the model's
output suits the data; or one readable error naming the config key (exit code 2 on the command line)."""

from __future__ import annotations

import json

import torch

from batchlab import batches, registry
from batchlab.data import Data
from batchlab.errors import ConfigError, described, short
from batchlab.executors.base import DataCache
from batchlab.fields import cadence
from batchlab.grid import Trial, axis_key
from batchlab.machine import resolve_device
from batchlab.noise import check_noise
from batchlab.outputs import logits, takes_targets
from batchlab.schedules import lr_schedule
from batchlab.schema import NO_TOKENS, Experiment
from batchlab.train import build_parts, imported_names

PARTS = ("dataset", "model", "loss", "optimizer", "schedule")  # the config sections that name a callable


def distinct(trials: list[Trial]) -> list[Trial]:
    """One trial per distinct (data set, model, loss, optimizer): what the checks need to build."""
    seen, kept = set(), []
    for trial in trials:
        cfg = trial.config
        key = json.dumps([cfg.model_dump(mode="json", include=set(PARTS)),
                          cfg.seed if cfg.dataset.val_fraction > 0 else None])
        if key not in seen:
            seen.add(key)
            kept.append(trial)
    return kept


def check(trials: list[Trial], cache: DataCache) -> None:
    """Before any trial runs: every distinct data set, model, loss and optimizer builds, and the model's
    output suits the data (a batch of two examples through the model and the loss), on the CPU; the
    training set is large enough for the noise measurement when it is on.

    Raises DataError or ComponentError (a ConfigError naming the config key) with the reason.
    """
    check_devices(trials)
    for trial in trials:  # the noise settings and lengths may be axes: every trial (its data set is loaded once)
        data = cache.get(trial.config, torch.device("cpu"))
        if trial.config.noise.every:
            check_noise(trial.config, len(data.train), trial.axes)
        check_units(trial.config, data, trial.axes)  # tokens only where the data has them, not silently examples
        check_follow(trial.config, data, trial.axes)
    for trial in distinct(trials):
        cfg = trial.config
        data = cache.get(cfg, torch.device("cpu"))
        model, criterion, _ = build_parts(cfg, data, torch.device("cpu"))
        check_output(cfg, model, criterion, data)
        lr_schedule(cfg.schedule, steps_per_epoch=1, total_steps=1)  # an imported schedule builds and gives a value


def check_devices(trials: list[Trial]) -> None:
    """Every device the trials ask for exists here (CUDA, when they name it). Found by the run before it writes
    anything, as the other checks are: a trial directory started for `cuda` made the rerun with `device: cpu`,
    the fix the error suggests, a different experiment."""
    for device, key in {(t.config.device, axis_key("device", t.axes)) for t in trials}:
        resolve_device(device, key)


def check_units(cfg: Experiment, data: Data | None, axes: dict | None = None) -> None:
    """A length in tokens only where the data has them (a sequence task: examples x context). `data` None: not
    loaded, so only a data set in NO_TOKENS is checked. `axes`: the trial's sweep values, so that one from a sweep
    axis is named there (sweep.batch_size), not at the top."""
    has_tokens = bool(data.context) if data is not None else cfg.dataset.name not in NO_TOKENS
    if has_tokens:
        return
    where = ("budget.tokens" if cfg.budget.tokens is not None else
             "batch_size" if cfg.batch_schedule is not None and getattr(cfg.batch_schedule, "unit", None) == "tokens"
             else None)
    if where:
        raise ConfigError(f"{axis_key(where, axes)}: counted in tokens, but {cfg.dataset.name} is not a sequence "
                          "task (its examples have no tokens): count examples instead")


def check_follow(cfg: Experiment, data: Data, axes: dict | None = None) -> None:
    """A batch size that follows the noise scale moves at the measurements after the first (step 0's): one must
    fall within the budget, else it trains at its min throughout without a word."""
    schedule = cfg.batch_schedule
    if not isinstance(schedule, batches.FollowNoise):
        return
    n = len(data.train)
    every = cadence(cfg.noise.every, n)  # examples between measurements, as train.py counts a schedule's
    steps, _, _ = batches.budget(schedule, cfg.budget.length, n, cfg.drop_last, data.tokens_per_example)
    before_last = (steps - 1) * min(schedule.min, n)  # a measurement after the last step moves nothing
    if before_last >= every:
        return
    budget = axis_key(f"budget.{cfg.budget.length[0]}", axes)
    where = budget if budget.startswith("sweep.") else axis_key("noise.every", axes)
    raise ConfigError(f"{where}: a measurement every {cfg.noise.every:g} epochs ({every:,} examples), but the budget "
                      f"trains on {before_last:,} before its last step at the batch size's min ({schedule.min}): "
                      "batch_size follows the noise scale from the second measurement on (the first is at step 0), "
                      "so it would never move; lower noise.every or lengthen the budget")


def check_output(cfg: Experiment, model: torch.nn.Module, criterion, data: Data) -> None:
    x, y = data.train.take(torch.arange(min(2, len(data.train))))
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, targets=y) if takes_targets(model) else model(x)
    except Exception as e:  # noqa: BLE001 -- the user's model fails on real examples
        raise registry.ComponentError("model.name", f"{cfg.model.name} fails on a batch of {len(x)} examples of shape "
                                                    f"{tuple(x.shape[1:])}: {type(e).__name__}: "
                                                    f"{short(str(e))}") from None
    try:
        out = logits(out)
    except TypeError as e:
        raise registry.ComponentError("model.name", f"{cfg.model.name}: {e}") from None
    if data.task == "sequence":
        if out.dim() != 3 or out.shape[:2] != y.shape:
            raise registry.ComponentError("model.name", f"{cfg.model.name} gives outputs of shape {tuple(out.shape)} "
                                                        f"for targets of shape {tuple(y.shape)}; a sequence task needs "
                                                        "(batch, positions, vocabulary)")
        if out.shape[2] < data.num_classes:
            raise registry.ComponentError("model.name", f"{cfg.model.name} outputs {out.shape[2]} values per position "
                                                        f"(its vocabulary), but the tokens go up to "
                                                        f"{data.num_classes - 1}: set its vocabulary to at least "
                                                        f"{data.num_classes}")
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
                                                   f"{described(e)}") from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise registry.ComponentError("loss.name", f"{cfg.loss.name} returned {shape}; a loss must be a scalar "
                                                   "(the mean over the batch)")


def check_imports(trials: list[Trial]) -> None:
    """Only that the user code every trial names imports here, loading no data: what the driver can check of
    trials that run on a cluster, where the data may exist on the workers alone."""
    for trial in distinct(trials):
        for part in PARTS:
            name = getattr(trial.config, part).name
            if ":" in name:
                registry.resolve(f"{part}.name", name, {})


def check_importable(trials: list[Trial]) -> None:
    """With trials in other processes, every import path must be importable there (registry.check_importable)."""
    registry.check_importable(sorted({n for t in trials for n in imported_names(t.config)}), "worker processes",
                              "run with one worker")
