"""Expand an experiment into trials: the cartesian product of its sweep axes, each with a stable id."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from batchlab.config import Experiment, set_path, validate
from batchlab.errors import ConfigError

MAX_TRIALS = 10_000  # more than this is almost surely a typo in a sweep list; --yes runs it anyway


@dataclass(frozen=True)
class Trial:
    id: str
    config: Experiment  # fully resolved, sweep emptied
    axes: dict[str, Any]  # dotted path -> this trial's value, for every axis

    def resolved(self) -> dict:
        """The trial config as saved in config.json: every field, plus its axis values."""
        return {**self.config.model_dump(mode="json"), "axes": self.axes}


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
    parts = [f"bs{config.batch_size:04d}", f"lr{config.lr:g}", f"s{config.seed}"]
    for path, value in axes.items():
        if path not in ("batch_size", "lr", "seed"):
            parts.append(f"{path.split('.')[-1]}{fmt(value)}")
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return "-".join(parts) + "-" + hashlib.sha256(blob.encode()).hexdigest()[:6]


def expand(experiment: Experiment, raw: dict, allow_many: bool = False) -> list[Trial]:
    """One Trial per point of the grid, each validated in full (so `sweep.batch_size: [0]` is caught here)."""
    axes = experiment.sweep
    count = 1
    for values in axes.values():
        count *= len(values)
    if count > MAX_TRIALS and not allow_many:
        raise ConfigError(f"the sweep expands to {count:,} trials (over {MAX_TRIALS:,}); pass --yes if you mean it")
    base = {k: v for k, v in raw.items() if k != "sweep"}
    trials = []
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo))
        trial_raw = json.loads(json.dumps(base))  # deep copy of plain YAML data
        for path, value in point.items():
            set_path(trial_raw, path, value)
        try:
            config = validate(trial_raw, "sweep")
        except ConfigError as e:
            where = ", ".join(f"{p}={v!r}" for p, v in point.items())
            raise ConfigError(f"{e} (in the trial {where})") from None
        trials.append(Trial(trial_id(config, point), config, point))
    return trials
