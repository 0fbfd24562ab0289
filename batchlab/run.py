"""Run a sweep: check what its trials need, plan which still need running, train them, record each."""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from batchlab import preflight, registry, steptime
from batchlab.disk import check_writable
from batchlab.errors import BatchlabWarning
from batchlab.executors import Executor, Job, Sequential
from batchlab.executors.base import DataCache
from batchlab.fields import NAME_MAX
from batchlab.grid import Trial
from batchlab.machine import machine_facts, resolve_device
from batchlab.records import DONE, Status, SweepDir
from batchlab.schema import Experiment
from batchlab.train import Progress, imported_names

SMOKE_STEPS = 3  # a few optimizer steps prove the wiring; they say nothing about the result
SMOKE_EXAMPLES = 256  # train and evaluation examples kept in a smoke run


def smoke(experiment: Experiment) -> Experiment:
    """The same grid, shrunk: a few steps on a slice of the data, on CPU, under `<name>-smoke`. Where the noise scale
    is measured (noise.every, or a noise axis), it is measured after every step; a noise.every axis is dropped. A
    points schedule changes before the second step, to its last batch size (its points, scaled below one example,
    all lie within the first step): a real run's points lie past a smoke run's budget, which preflight refuses."""
    raw = experiment.model_dump(mode="json", exclude_unset=True)
    raw["name"] = f"{experiment.name[:NAME_MAX - len('-smoke')]}-smoke"  # a long name is cut to fit a file name
    raw["budget"] = {"steps": SMOKE_STEPS}
    raw["device"] = "cpu"
    raw.setdefault("dataset", {})["subset"] = SMOKE_EXAMPLES
    raw.setdefault("eval", {})["every"] = 1000.0  # evaluate at the start and after the last step only
    sweep = raw.get("sweep") or {}
    if (raw.get("noise") or {}).get("every") or "noise.every" in sweep:  # (a noise.every axis is dropped below)
        raw.setdefault("noise", {})["every"] = 1 / SMOKE_EXAMPLES  # after every step: follow: noise can move
    for value in sweep.get("noise") if isinstance(sweep.get("noise"), list) else []:
        if isinstance(value, dict) and value.get("every"):
            value["every"] = 1 / SMOKE_EXAMPLES
    if isinstance(sweep.get("batch_size"), list):
        sweep["batch_size"] = [within_a_step(value) for value in sweep["batch_size"]]
    if "batch_schedule" in raw:
        raw["batch_schedule"] = within_a_step(raw["batch_schedule"])
    raw["sweep"] = {k: v for k, v in sweep.items()
                    if k not in ("budget.epochs", "budget.steps", "budget.examples", "budget.tokens", "device",
                                 "dataset.subset", "noise.every")}
    return Experiment.model_validate(raw)


def within_a_step(value: object) -> object:
    """A points schedule (as a mapping) whose changes all lie within its first step, below one example or token:
    its points over its last + 1, so that schedules apart in their points stay apart (and trials); any other value
    unchanged."""
    if not (isinstance(value, dict) and isinstance(value.get("schedule"), list)):
        return value
    last = value["schedule"][-1][0]
    return {**value, "schedule": [[p / (last + 1), b] for p, b in value["schedule"]]}


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
    # a schedule's micro-batch need not exceed its largest batch: the search stops there
    cap = experiment.batch_schedule.largest if experiment.batch_schedule and not wants_max else None
    result = find_max_batch(base, memory_limit=memory_limit, code_dirs=code_dirs, max_batch=cap)
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
    steps_timed: Callable[[int, int], None] = lambda done, rounds: None  # rounds of the step-time phase


def run_sweep(experiment: Experiment, trials: list[Trial], out: Path, command: str, restart: bool = False,
              hooks: Hooks = Hooks(), smoke: bool = False, executor: Executor | None = None,
              code_dirs: tuple[str, ...] = (), race: bool = False, time_steps: bool = True,
              deadline_steps: int | None = None, place: Callable[[str], str] = str) -> list[dict]:
    """Train every trial not already completed, diverged (or raced, when racing). Returns the summaries of the
    trials run.

    `executor` decides where trials run (default: one after another in this process; see batchlab.executors);
    the planning, the checks, the records and the hooks are the same for all. `code_dirs` are made importable
    in every process that runs trials (the config's directory and the working directory). With `race`, each
    trial stops once its clock passes the best time to the target of its seed recorded when it starts
    (train.train); without, trials recorded as raced are run again in full. `deadline_steps` races by steps
    instead (suggest): each trial stops once past that many steps without the target, recorded raced. `place`:
    a check's warning (`key: ...`) as it is given, the config's file and line named (api.Source).
    """
    executor = executor or Sequential()
    sweep = SweepDir(out, experiment.name)
    summaries = []
    eval_cap = SMOKE_EXAMPLES if smoke else None
    code_dirs = tuple(code_dirs)
    registry.make_importable(*code_dirs)
    check_writable(sweep.path, access=False)  # the part of the path in the way, where writing says "Not a
    # directory" (a path it may not write in: the write's own reason, below)
    with sweep.lock():
        todo, why = _todo(trials, sweep, restart, race or bool(deadline_steps))
        for warning in executor.check(todo, eval_cap, code_dirs) if todo else []:
            warnings.warn(place(warning), BatchlabWarning, stacklevel=2)
        sweep.prepare(experiment, restart, _code(trials))
        for reason in why if not restart else []:  # records the report cannot read whole: trained again
            warnings.warn(f"{reason}; the trial is trained again", BatchlabWarning, stacklevel=2)
        jobs = [Job(t, command, eval_cap, code_dirs, race=race, deadline_steps=deadline_steps) for t in todo]
        with closing(executor.run(jobs, sweep, hooks.trial_start)) as ended:
            for trial, summary in ended:
                hooks.trial_end(trial, summary)
                summaries.append(summary)
        if time_steps and not smoke and executor.on_this_machine:
            time_steps_of(trials, sweep, getattr(executor, "cache", None) or DataCache(), ran=bool(todo),
                          on_round=hooks.steps_timed)
    return summaries


def check_sweep(experiment: Experiment, trials: list[Trial], out: Path, restart: bool = False, race: bool = False,
                code_dirs: tuple[str, ...] = (), here: bool = True) -> None:
    """Of what run_sweep refuses before anything trains, what can be found without loading data, training or
    writing anything (`--dry-run`): user code that does not import, a device this machine lacks (`here`: the
    trials would run on this machine), records of another experiment or of changed code. (Data is checked by the
    run: it may have to be downloaded, or exist on a cluster's workers alone.)"""
    sweep = SweepDir(out, experiment.name)
    registry.make_importable(*code_dirs)
    if todo := _todo(trials, sweep, restart, race)[0]:
        preflight.check_imports(todo)
        if here:  # a cluster's workers have devices of their own: its run checks them there
            preflight.check_devices(todo)
    if not restart:
        sweep.check(experiment, _code(trials))


def _todo(trials: list[Trial], sweep: SweepDir, restart: bool, racing: bool) -> tuple[list[Trial], list[str]]:
    """The trials to run: all with restart, else those not done (a raced one again in full unless racing); and
    why each one with records the report cannot read whole (a damaged summary or config, curves cut short, a
    summary of another run) is among them, the report's reason, read once with its status."""
    todo, why = [], []
    for t in trials:
        status, reason = sweep.recorded(t.id)
        if restart or status not in DONE or (status == Status.RACED and not racing):
            todo.append(t)
            why += [reason] if reason else []
    return todo, why


def _code(trials: list[Trial]) -> dict[str, dict[str, str]]:
    """The user modules the trials import, hashed (registry.source_hashes)."""
    return registry.source_hashes(sorted({n for t in trials for n in imported_names(t.config)}))


def time_steps_of(trials: list[Trial], sweep: SweepDir, cache: DataCache, ran: bool,
                  on_round: Callable[[int, int], None]) -> steptime.StepTimes | None:
    """Seconds per step at every batch size of the grid and every one its schedules trained at (and each other
    axis that may change a step's cost), timed round-robin in one go (batchlab.steptime) into
    <sweep>/step_times.json: what the report multiplies each batch size's steps to the target by. Skipped (None)
    when no trial ran now and the file covers the grid. Timed at the thread count most of the recorded trials
    ran with."""
    path = sweep.path / steptime.FILE
    ids = {t.id for t in trials}
    used = {s["trial_id"]: s["batch_changes"] for s in sweep.summaries()
            if s.get("trial_id") in ids and isinstance(s.get("batch_changes"), list)}
    subjects = steptime.subjects(trials, used)
    if not subjects or (not ran and (steptime.recorded_keys(path) or set()) >= {s.key for s in subjects}):
        return None
    device = resolve_device(trials[0].config.device)
    counts = Counter(s.get("threads") for s in sweep.summaries() if isinstance(s.get("threads"), int))
    before = torch.get_num_threads()
    torch.set_num_threads(counts.most_common(1)[0][0] if counts else (trials[0].config.threads or before))
    try:
        times = steptime.measure(subjects, lambda cfg: cache.get(cfg, device), device, on_round=on_round)
        facts = machine_facts(device)
    finally:
        torch.set_num_threads(before)
    steptime.record(path, times, facts)
    return times
