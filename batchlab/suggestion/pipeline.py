"""The suggest pipeline: scan, pilot, predict, race (see the package docstring), and the answer it gives."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from batchlab import registry
from batchlab.data import load_dataset
from batchlab.errors import BatchlabError
from batchlab.grid import expand
from batchlab.maxbatch import find_max_batch
from batchlab.disk import write_atomic, write_json_atomic
from batchlab.records import SweepDir
from batchlab.reporting.measured_noise import b_simple_values
from batchlab.run import Hooks, run_sweep
from batchlab.schema import Experiment, LrRule
from batchlab.suggestion.answer import Suggestion, sentence
from batchlab.suggestion.plot import suggest_png
from batchlab.suggestion.predict import Prediction, predict
from batchlab.suggestion.scan import Rate, scan
from batchlab.train import hardest_target, resolve_device

BAND = (1.0, 8.0)  # B_crit between 1x and 8x the measured B_simple: McCandlish et al. (2018) find the critical
# batch near the noise scale B_noise >= B_simple; fitted on sweeps here, B_crit was 2-15x B_simple averaged to target
MARGIN = 0.2  # a candidate's predicted time is within 20% of the best at some end of the band
MOST = 4  # candidates raced at most: each one costs at least the best time before racing can stop it
NOISE_EVERY = 0.05  # epochs between the pilot's noise measurements when the config sets none: several before a target
FACTORS = (1.0, 0.5, 2.0)  # the lr search around a rule batchlab makes (the config's rule keeps its own factors)


class SuggestError(BatchlabError):
    """A suggestion cannot be made (no target, or one the pilot cannot reach)."""


def suggest(experiment: Experiment, out: Path, *, target: float | None = None, budget: float | None = None,
            code_dirs: tuple[str, ...] = (), command: str = "batchlab.suggest",
            on_stage: Callable[[str], None] = lambda text: None, hooks: Hooks = Hooks(),
            restart: bool = False) -> Suggestion:
    """Scan, pilot, predict and race for `experiment` (its model, data, optimizer, lr or lr rule, target and
    budget), recording the trials under out/<name>-suggest. `budget`: training seconds for the whole search
    (the race stops starting trials once it is spent). `on_stage(text)` says what starts next. `restart`: delete
    the records under out/<name>-suggest first (as the pilot starts)."""
    registry.make_importable(*code_dirs)
    cfg = _suggest_config(experiment, target)
    metric, goal = cfg.target.metric, hardest_target(cfg)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cost = {"scan": 0.0, "pilot": 0.0, "race": 0.0}

    on_stage("throughput scan")
    data = load_dataset(cfg.dataset, cfg.seed)
    largest = len(data.train)
    if device.type == "cuda":  # memory is the limit there; on the CPU the training set is
        largest = min(largest, find_max_batch(cfg, code_dirs=code_dirs).batch_size)
    rates = scan(cfg, data.to(device), device, largest)
    cost["scan"] = sum(r.seconds + r.warmup_seconds for r in rates)  # training time, as a trial's clock counts it
    del data

    pilot_batch = min(cfg.batch_size, largest)
    lrs = cfg.sweep.get("lr") if isinstance(cfg.sweep.get("lr"), list) else None
    pilot_lr = cfg.lr_rule.model_copy(update={"factors": [1.0]}) if cfg.lr_rule else lrs or [cfg.lr]
    on_stage(f"pilot: batch size {pilot_batch}, lr {_lrs(pilot_lr, pilot_batch)}, to {metric} {goal:g}")
    pilot_grid = cfg.model_copy(update={"sweep": {"batch_size": [pilot_batch], "lr": pilot_lr}})
    pilots = _run(pilot_grid, out, command, code_dirs, hooks, restart=restart)  # several lrs race each other
    cost["pilot"] = sum(p["train_seconds"] for p in pilots)
    key = f"{goal:g}"
    reached = [p for p in pilots if p["targets"].get(key)]
    if not reached:
        closest = max(pilots, key=lambda p: _progress(p, metric))
        best = closest["final"].get(metric)
        raise SuggestError(
            f"the pilot (batch size {pilot_batch}, lr {_lrs(pilot_lr, pilot_batch)}) did not reach {metric} {goal:g} "
            f"(lr {closest['lr']:g} came closest: {closest['status']}, {closest['epochs']:g} epochs, last {metric} "
            f"{'unknown' if best is None else f'{best:.4g}'}): give a target it can reach (--target), a larger "
            f"budget.epochs, or an lr that trains (the pilot's records are in {SweepDir(out, cfg.name).path})")
    pilot = min(reached, key=lambda p: p["targets"][key]["seconds"])
    hit = pilot["targets"][key]
    rule = cfg.lr_rule or LrRule(base=pilot["lr"], base_batch_size=pilot_batch,
                                 scale="linear" if cfg.optimizer.name == "sgd" else "sqrt", factors=list(FACTORS))
    values = b_simple_values(_metrics(out, cfg.name, pilot["trial_id"]), hit["steps"])
    if not len(values):
        raise SuggestError(f"the pilot reached {metric} {goal:g} after {hit['steps']} steps, before any finite "
                           f"noise-scale measurement: set a smaller noise.every (now {cfg.noise.every:g} epochs)")
    b_simple = float(values.mean())

    band = (BAND[0] * b_simple, BAND[1] * b_simple)
    prediction = predict([r.batch_size for r in rates], [r.samples_per_second for r in rates], band, MARGIN, MOST)
    spent = cost["scan"] + cost["pilot"]
    race_grid = cfg.model_copy(update={"sweep": {"batch_size": prediction.candidates, "lr": rule}})
    on_stage(f"race: batch sizes {', '.join(map(str, prediction.candidates))} x lr factors "
             f"{', '.join(f'{f:g}' for f in rule.factors)}")
    stopped = False

    def trial_end(trial, summary):
        nonlocal spent, stopped
        hooks.trial_end(trial, summary)
        cost["race"] += summary["train_seconds"]
        spent += summary["train_seconds"]
        if budget is not None and spent >= budget:
            stopped = True
            raise BudgetSpent

    measured = {(p["batch_size"], p["lr"]) for p in pilots}  # the pilot's trials are contestants already
    try:
        _run(race_grid, out, command, code_dirs, Hooks(hooks.trial_start, trial_end), skip=measured)
    except BudgetSpent:
        pass
    cost["total"] = cost["scan"] + cost["pilot"] + cost["race"]
    return _answer(out, cfg, goal, pilot, prediction, b_simple, len(values), rates, cost, stopped)


class BudgetSpent(Exception):
    """Raised between trials once the search's budget is spent."""


def _lrs(lr: LrRule | list[float], batch_size: int) -> str:
    return f"{lr.lr(batch_size):g}" if isinstance(lr, LrRule) else ", ".join(f"{v:g}" for v in lr)


def _progress(summary: dict, metric: str) -> float:
    """How near a trial came to the target: its last accuracy, or minus its last loss."""
    value = summary["final"].get(metric)
    return -math.inf if value is None else value if metric == "test_accuracy" else -value


def _suggest_config(experiment: Experiment, target: float | None) -> Experiment:
    cfg = experiment
    if target is not None:
        cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"value": [target]})})
    if not cfg.target.value:
        raise SuggestError("suggest needs a target to time: give --target (e.g. --target 0.9) or target.value "
                           "in the config")
    return cfg.model_copy(update={
        "name": f"{cfg.name}-suggest",
        "budget": cfg.budget.model_copy(update={"stop_at_target": True}),
        "noise": cfg.noise if cfg.noise.every else cfg.noise.model_copy(update={"every": NOISE_EVERY})})


def _run(grid: Experiment, out: Path, command: str, code_dirs: tuple[str, ...], hooks: Hooks,
         skip: set[tuple[int, float]] = frozenset(), restart: bool = False) -> list[dict]:
    """Run (or find recorded) the grid's trials one at a time, racing, less those whose (batch size, lr) is in
    `skip`; their summaries in grid order."""
    trials = [t for t in expand(grid) if not any(t.config.batch_size == b and math.isclose(t.config.lr, lr)
                                                 for b, lr in skip)]
    run_sweep(grid, trials, out, command, restart=restart, hooks=hooks, code_dirs=code_dirs, race=True)
    sweep = SweepDir(out, grid.name)
    by_id = {s["trial_id"]: s for s in sweep.summaries()}
    return [by_id[t.id] for t in trials if t.id in by_id]


def _metrics(out: Path, name: str, trial_id: str) -> pd.DataFrame:
    return pd.read_csv(SweepDir(out, name).trial_dir(trial_id) / "metrics.csv")


def _answer(out: Path, cfg: Experiment, goal: float, pilot: dict, prediction: Prediction, b_simple: float,
            measurements: int, rates: list[Rate], cost: dict, stopped: bool) -> Suggestion:
    key = f"{goal:g}"
    trials = [{"batch_size": s["batch_size"], "lr": s["lr"], "status": s["status"], "train_seconds": s["train_seconds"],
               "seconds": (s["targets"].get(key) or {}).get("seconds"), "steps": (s["targets"].get(key) or {}).get("steps")}
              for s in SweepDir(out, cfg.name).summaries()]
    reached = [t for t in trials if t["seconds"] is not None]
    best = min(reached, key=lambda t: t["seconds"]) if reached else None
    # T(B) = S_min (B + B_crit) / throughput(B), S_min from the pilot's steps at each end of the band
    rate = {r.batch_size: r.samples_per_second for r in rates}
    steps = pilot["targets"][key]["steps"]
    chosen = best["batch_size"] if best else prediction.best[0]
    predicted_seconds = tuple(steps / (1 + b_crit / pilot["batch_size"]) * (chosen + b_crit) / rate[chosen]
                              if chosen in rate else math.nan for b_crit in prediction.band)
    s = Suggestion(SweepDir(out, cfg.name).path, cfg.target.metric, goal,
                   best and best["batch_size"], best and best["lr"], best and best["seconds"], b_simple, measurements,
                   prediction.band, prediction.best, predicted_seconds, prediction.candidates, rates, trials, cost,
                   stopped)
    s.sentence = sentence(s)
    write_json_atomic(s.path / "suggest.json", s.to_dict())
    figure = suggest_png(s, pilot["batch_size"], steps)
    write_atomic(s.path / "suggest.png", lambda f: f.write(figure), binary=True)
    return s
