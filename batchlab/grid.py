"""The grid: an experiment expanded into trials, the cartesian product of its sweep axes, each with a stable id."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from batchlab import batches
from batchlab.config import set_path, validate
from batchlab.errors import VALUE_CHARS, ConfigError, short
from batchlab.schema import Experiment, LrRule

MAX_TRIALS = 10_000  # more than this is almost surely a typo in a sweep list; --yes runs it anyway
TRIALS_LIMIT = 100_000  # even with --yes: each trial is validated and held as a config while planning (100,000
# take ~2 minutes and ~1.5 GB); a larger grid is refused before expanding, in one line: split it into sweeps
NOT_IN_ID = {"checkpoint"}  # settings that do not change what a trial computes
ID_MAX = 200  # characters of a trial id, a directory name (255 bytes at most), hash included


def axis_key(where: str, axes: dict | None) -> str:
    """A config key as an error names it: `where`, or sweep.<axis> when a sweep axis of the trial sets it (the
    error then points at the axis: noise.every under a `noise` axis is sweep.noise)."""
    for axis in axes or {}:
        if axis == where or where.startswith(f"{axis}."):
            return f"sweep.{axis}"
    return where


# What trains with a top-level field that a sweep axis overrides: `batchlab cbs` takes its reference run's batch
# size from the config (and its lr, without an lr rule; its seed is the seed axis's first), and `batchlab noise`
# trains and measures at the config's batch size, lr and seed, sweep or none.
ALSO_USED = {"batch_size": "batchlab cbs and batchlab noise", "lr": "batchlab cbs and batchlab noise",
             "seed": "batchlab noise"}


def overridden(experiment: Experiment, trials: list[Trial]) -> list[str]:
    """The warning (`field: ...`) for each top-level field the config sets itself (in its file, or by an override: a
    default is not set) that a sweep axis sets in every trial to other values, so that no trial trains with the
    config's: `batch_size: 32` beside `sweep: {batch_size: [16, 64]}` ran 16 and 64 without a word; and
    schedule.warmup_epochs beside an lr rule's. Not a field within a section (`budget: {steps: 5}` is what lets
    a budget.steps axis validate at all), nor a whole section an axis of mappings replaces (noise: noise.every is
    needed all the same for follow: noise)."""
    rule = experiment.lr_rule
    found = [(axis, f"sweep.{axis}") for axis in experiment.sweep if "." not in axis]
    if rule and rule.warmup_epochs is not None:
        found.append(("schedule.warmup_epochs", "sweep.lr's warmup_epochs"))
    out = []
    for field, axis in found:
        mine = value_at(experiment, field)
        if (not given(experiment, field) or isinstance(mine, BaseModel)
                or any(value_at(t.config, field) == mine for t in trials)):
            continue
        users = "batchlab noise" if field == "lr" and rule else ALSO_USED.get(field)
        out.append(f"{field}: given, but {axis} sets every trial's, to other values: the sweep axis wins, "
                           "and no trial of the sweep trains with this one" + (
                               f" ({users} {'use' if ' and ' in users else 'uses'} the top-level {field})"
                               if users else ""))
    return out


def given(model: Any, dotted: str) -> bool:
    """Whether a config (a validated model, or a dict below it: args) sets the field at `dotted` itself."""
    head, _, rest = dotted.partition(".")
    if isinstance(model, BaseModel) and head in model.model_fields_set:
        value = getattr(model, head)
    elif isinstance(model, dict) and head in model:
        value = model[head]
    else:
        return False
    return not rest or given(value, rest)


def value_at(config: Experiment, dotted: str) -> Any:
    """A config's value at `dotted` (None where a dict lacks the key); the batch size with its schedule."""
    if dotted == "batch_size":
        return config.batch_size, config.batch_schedule
    value: Any = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    return value


@dataclass(frozen=True)
class Trial:
    id: str
    config: Experiment  # fully resolved, sweep emptied
    axes: dict[str, Any]  # dotted path -> this trial's value, for every axis

    lr_rule: LrRule | None = None

    def resolved(self) -> dict:
        """The trial config as saved in config.json: every field, its axis values, and the lr rule if any."""
        rule = self.lr_rule.model_dump(mode="json") if self.lr_rule else None
        return {**self.config.model_dump(mode="json"), "axes": self.axes, "lr_rule": rule}


def fmt(value: Any) -> str:
    """A value as a file-name-safe id part: 0.1 -> 0.1, [16, 8] -> 16x8, True -> True."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(fmt(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.+-]", "", json.dumps(value) if isinstance(value, dict) else str(value))


def trial_id(config: Experiment, axes: dict[str, Any]) -> str:
    """Readable and stable: `bs0128-lr0.1-s0-3fa2c1`, other axes as `<last key><value>`.

    The hash is of the whole resolved config, so the same trial gets the same id in any grid,
    and a trial under a changed fixed field never reuses an old one's id.
    """
    size = batches.id_part(config.batch_schedule) if config.batch_schedule else f"bs{config.batch_size:04d}"
    parts = [size, f"lr{config.lr:g}", f"s{config.seed}"]
    for path, value in axes.items():
        if path not in ("batch_size", "lr", "seed"):
            parts.append(f"{'lrx' if path == 'lr_factor' else path.split('.')[-1]}{fmt(value)}")
    constant = {"batch_schedule"} if config.batch_schedule is None else set()  # the ids of before schedules
    blob = json.dumps(config.model_dump(mode="json", exclude=NOT_IN_ID | constant), sort_keys=True)
    readable = "-".join(parts)[:ID_MAX - 7]  # long axis values are cut: the hash tells the trials apart
    return readable + "-" + hashlib.sha256(blob.encode()).hexdigest()[:6]


def expand(experiment: Experiment, allow_many: bool = False) -> list[Trial]:
    """One Trial per point of the grid, each validated in full.

    An lr rule is an axis of its factors; each trial's lr is the rule's lr at its batch size times its factor.
    """
    rule = experiment.lr_rule
    axes = {("lr_factor" if rule and k == "lr" else k): (v.factors if k == "lr" and rule else v)
            for k, v in experiment.sweep.items()}
    count = 1
    for values in axes.values():
        count *= len(values)
    if count > TRIALS_LIMIT:
        raise ConfigError(f"the sweep expands to {count:,} trials, over the {TRIALS_LIMIT:,} one sweep can plan; "
                          "split it into several sweeps (e.g. one per seed)")
    if count > MAX_TRIALS and not allow_many:
        raise ConfigError(f"the sweep expands to {count:,} trials (over {MAX_TRIALS:,}); pass --yes if you mean it")
    base = experiment.model_dump(mode="json", exclude={"sweep"})
    trials, seen = [], {}
    for at in itertools.product(*(range(len(v)) for v in axes.values())):
        point = {axis: values[i] for (axis, values), i in zip(axes.items(), at)}
        trial_raw = json.loads(json.dumps(base))  # a deep copy of plain JSON data
        try:
            for path, value in point.items():
                if path != "lr_factor":
                    set_path(trial_raw, path, value)
            config = validate(trial_raw, "sweep")
            if rule:  # the lr at the starting batch size; a schedule moves it by the rule's scale
                point = {"lr": rule.lr(config.batch_size, point["lr_factor"]), **point}
                trial_raw = config.model_dump(mode="json")
                trial_raw["lr"] = point["lr"]
                if config.batch_schedule and config.batch_schedule.lr_scale is None:
                    trial_raw["batch_schedule"]["lr_scale"] = rule.scale
                if rule.warmup_epochs is not None:
                    set_path(trial_raw, "schedule.warmup_epochs", rule.warmup_epochs)
                config = validate(trial_raw, "sweep")
        except ConfigError as e:
            where = ", ".join(f"{p}={short(repr(v), VALUE_CHARS)}" for p, v in point.items())
            raise ConfigError(f"{e} (in the trial {where})") from None
        trial = Trial(trial_id(config, point), config, point, rule)
        if (before := seen.setdefault(trial.id, at)) is not at:  # one trial twice: trained twice into one folder
            k = next(k for k, (i, j) in enumerate(zip(before, at)) if i != j)  # the axis whose values coincide
            axis, values = list(axes.items())[k]
            first, again = (short(repr(values[i]), VALUE_CHARS) for i in (before[k], at[k]))
            same = f"{first} is listed twice" if first == again else f"{first} and {again} are the same value"
            raise ConfigError(f"sweep.{'lr' if axis == 'lr_factor' else axis}: {same}; each trial runs once, so "
                              "give it once")
        trials.append(trial)
    return trials
