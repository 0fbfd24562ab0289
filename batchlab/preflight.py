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


def check(trials: list[Trial], cache: DataCache) -> list[str]:
    """Before any trial runs: every distinct data set, model, loss and optimizer builds, and the model's
    output suits the data (a batch of two examples through the model and the loss), on the CPU; the
    training set is large enough for the noise measurement when it is on; a batch-size schedule changes within the
    budget (check_points).

    Raises DataError or ComponentError (a ConfigError naming the config key) with the reason. Returns the warnings
    to give, each once, starting with the config key (the caller names the file and line, and warns).
    """
    check_devices(trials)
    warnings: dict[str, None] = {}  # in order, each once
    for trial in trials:  # the noise settings and lengths may be axes: every trial (its data set is loaded once)
        data = cache.get(trial.config, torch.device("cpu"))
        if trial.config.noise.every:
            check_noise(trial.config, len(data.train), trial.axes)
        check_units(trial.config, data, trial.axes)  # tokens only where the data has them, not silently examples
        check_follow(trial.config, data, trial.axes)
        if warning := check_points(trial.config, data, trial.axes):
            warnings.setdefault(warning)  # once, for all the trials of one schedule and budget
    for trial in distinct(trials):
        cfg = trial.config
        data = cache.get(cfg, torch.device("cpu"))
        model, criterion, _ = build_parts(cfg, data, torch.device("cpu"))
        check_output(cfg, model, criterion, data)
        lr_schedule(cfg.schedule, steps_per_epoch=1, total_steps=1)  # an imported schedule builds and gives a value
    return list(warnings)


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


UNBOUNDED = 2 ** 62  # a data set's size where it is not known: no epoch ends, no batch is short


def check_points(cfg: Experiment, data: Data | None, axes: dict | None = None) -> str | None:
    """A points schedule changes within the budget: one whose every change lies past its last step trains at its
    first batch size throughout, silently (and the report then recommends it by its label), so it is refused, as
    check_follow refuses a follow that never moves; one whose later changes alone lie past it still moves, so the
    warning to give is returned (it never trains at their batch sizes). `data` None: not loaded, so only what the
    config tells: a budget counted in the schedule's unit (no step starts at or past its end), or in steps (each a
    whole batch at most; in tokens where the data set's context is the config's); the rest (epochs) once the
    data is loaded."""
    schedule = cfg.batch_schedule
    if not isinstance(schedule, batches.Points) or len(schedule.schedule) < 2:
        return None
    unit, amount = cfg.budget.length
    length = f"{int(amount):,}" if float(amount).is_integer() else f"{amount:g}"
    length = f"the budget of {length} {unit[:-1] if amount == 1 else unit}"
    what = schedule.unit
    if data is not None:
        reach = batches.last_start(schedule, cfg.budget.length, len(data.train), cfg.drop_last, data.tokens_per_example)
        trains = f"{length} trains on {reach:,} {what} before its last step"
    elif unit == what:
        reach, trains = amount - 1, f"the budget trains on {int(amount):,} {what}"  # each step starts before it
    elif unit == "steps" and (what == "examples" or cfg.dataset.name in ("chars", "tokens")):
        per = cfg.dataset.context if what == "tokens" else 1  # (those two data sets' examples: context tokens)
        reach = batches.last_start(schedule, cfg.budget.length, UNBOUNDED, cfg.drop_last, per)  # every step a whole
        # batch, as on a data set without end: the most any data set trains before the last step
        trains = f"{length} trains on at most {reach:,} {what} before its last step"
    else:
        return None
    missed = [(p, b) for p, b in schedule.schedule[1:] if p > reach]
    if not missed:
        return None
    where = axis_key("batch_size", axes)
    if not where.startswith("sweep.") and (budget := axis_key(f"budget.{unit}", axes)).startswith("sweep."):
        where = budget
    changes = (f"change{'s' if len(missed) > 1 else ''} " + " and ".join(f"to {b} at {p:,}" for p, b in missed)
               + f" {what} {'are' if len(missed) > 1 else 'is'} past it")
    if len(missed) < len(schedule.schedule) - 1:
        kept = batches.Points(schedule=schedule.schedule[:len(schedule.schedule) - len(missed)], unit=what)
        return (f"{where}: {trains}, and the schedule's {changes}: it trains at {batches.label(kept)} only; move "
                f"{'them' if len(missed) > 1 else 'it'} earlier or lengthen the budget")
    raise ConfigError(f"{where}: {trains}, and the schedule's {changes}: the batch size would stay {schedule.start} "
                      "throughout; move the change earlier or lengthen the budget")


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
