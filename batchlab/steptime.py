"""Seconds per optimizer step at several batch sizes, timed interleaved.

Time to a target is steps to the target (a property of the optimisation: exact for a seed) times seconds per
step (a property of the hardware, which drifts with the machine's load from minute to minute). Trials timed one
after another carry that drift into a comparison between batch sizes: the same trial took 2 s in one run and
9.5 s in the next here. So the batch sizes being compared are timed round-robin: each round times every one of
them for a fraction of a second, in an order rotated from round to round, so a slow minute slows all of them
alike, and what is compared is the median over rounds, or a ratio within one round.

Each batch size trains its own copy of the model from the same initial weights, with its own optimizer and its
own endless loader (data loading is in the time, as in a trial); every timing starts from the weights and
optimizer state left by one untimed warm-up step, so a few steps of drift cannot change what is timed.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from batchlab.data import Data
from batchlab.disk import write_json_atomic
from batchlab.executors.base import describe
from batchlab.machine import Clock, now
from batchlab.schema import Experiment
from batchlab.step import Step
from batchlab.train import build_parts

WALL_CLOCK, CPU_CLOCK = "wall", "thread CPU"  # how a step's cost was read: synchronised wall clock, or this thread's
# CPU time (uses_cpu_clock)

ROUNDS = 10  # timings of each batch size: a median that one slow or fast moment cannot move; its ratios between
# batch sizes moved 0.5-1.03x as much over 10 rounds as over 5 (median 0.68x; benchmarks/step_time_estimators.py)
SECONDS = 0.1  # timed per batch size and round: 10 rounds x 10 batch sizes cost about 10 s
MIN_STEPS = 2  # timed steps at least, however long one takes


@dataclass(frozen=True)
class Subject:
    """One thing to time: a key naming it in the results (e.g. its batch size and other axes), its config."""
    key: tuple
    config: Experiment


@dataclass
class Timing:
    key: tuple
    round: int
    steps: int
    seconds: float

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps


@dataclass
class StepTimes:
    rounds: int
    seconds: float  # timed per subject and round
    timings: list[Timing] = field(default_factory=list)
    warmup_seconds: float = 0.0  # the untimed warm-up steps: with the timed ones, what the measurement cost
    errors: dict[tuple, str] = field(default_factory=dict)  # subjects that could not be timed, and why
    clock: str = WALL_CLOCK  # or CPU_CLOCK (see uses_cpu_clock): how the report reads them

    @property
    def cost(self) -> float:
        """Training seconds spent, timed or not."""
        return self.warmup_seconds + sum(t.seconds for t in self.timings)

    def seconds_per_step(self, key: tuple) -> list[float]:
        """The key's seconds per step, one a round, in round order."""
        return [t.seconds_per_step for t in sorted(self.timings, key=lambda t: t.round) if t.key == key]


def uses_cpu_clock(device: torch.device, cfg: Experiment) -> bool:
    """Whether a step's cost is read from this thread's CPU time rather than the wall clock: on a CPU, with one
    torch thread and the data served in this thread, the step's whole work runs on this thread, and its CPU time
    leaves out the moments the machine's other load took the core (measured here under a load of 5 on 2 cores,
    benchmarks/step_times.py: step-time ratios between batch sizes moved by up to 6% from one measurement to the
    next, then summarised by the least over 5 rounds, against up to 61% on the wall clock). With several threads,
    DataLoader workers or a GPU, the wall clock (synchronised)."""
    return device.type == "cpu" and torch.get_num_threads() == 1 and cfg.dataset.num_workers == 0


class _Runner:
    """A subject's model, optimizer and loader, ready to be timed again and again from the same state."""

    def __init__(self, cfg: Experiment, data: Data, device: torch.device):
        model, criterion, optimizer = build_parts(cfg, data, device)
        channels_last = device.type == "cuda" and len(data.input_shape) == 3
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        batch = min(cfg.batch_size, len(data.train))
        micro = min(cfg.micro_batch_size or batch, batch) if cfg.micro_batch_size != "auto" else None
        self.step = Step(model, optimizer, criterion, device, cfg.precision, micro, cfg.optimizer.grad_clip,
                         channels_last)
        self.batches = _endless(lambda: iter(data.train.loader(batch, cfg.drop_last, cfg.seed)))
        self.device = device
        self.cpu_clock = uses_cpu_clock(device, cfg)
        clock = Clock(device)
        clock.start()
        self.step(*next(self.batches))  # lazy initialisation, kernels for this shape, caches, workers: not timed
        self.warmup_seconds = clock.stop()
        self.state = copy.deepcopy((model.state_dict(), optimizer.state_dict()))

    def time(self, seconds: float) -> tuple[int, float]:
        model_state, optimizer_state = self.state
        self.step.model.load_state_dict(model_state)
        self.step.optimizer.load_state_dict(optimizer_state)
        if self.cpu_clock:
            start, steps = time.thread_time(), 0
            while steps < MIN_STEPS or time.thread_time() - start < seconds:
                self.step(*next(self.batches))
                steps += 1
            return steps, time.thread_time() - start
        clock, steps = Clock(self.device), 0
        clock.start()
        while steps < MIN_STEPS or clock.peek() < seconds:
            self.step(*next(self.batches))
            steps += 1
        return steps, clock.stop()


def measure(subjects: list[Subject], data_for: Callable[[Experiment], Data], device: torch.device,
            rounds: int = ROUNDS, seconds: float = SECONDS,
            on_round: Callable[[int, int], None] = lambda done, total: None) -> StepTimes:
    """Time every subject `rounds` times, round-robin, in an order reversed every other round and rotated every
    two rounds, so no subject always follows the same neighbour. `data_for(config)` gives a subject's data
    on `device`. `on_round(done, rounds)` reports progress. A subject whose step raises (out of memory, say)
    is left out, its error in `errors`: the trials at that batch size failed the same way."""
    result = StepTimes(rounds, seconds)
    runners = {}
    for subject in subjects:
        try:
            runner = _Runner(subject.config, data_for(subject.config), device)
        except Exception as e:  # noqa: BLE001 - user code; the trial records say the rest
            result.errors[subject.key] = describe(e)
            continue
        result.warmup_seconds += runner.warmup_seconds
        runners[subject.key] = runner
        result.clock = CPU_CLOCK if runner.cpu_clock else WALL_CLOCK
    for r in range(rounds):
        keys = list(runners)
        shift = (r // 2) % len(keys) if keys else 0
        order = keys[shift:] + keys[:shift]
        for key in order[::-1] if r % 2 else order:
            try:
                steps, timed = runners[key].time(seconds)
            except Exception as e:  # noqa: BLE001
                result.errors[key] = describe(e)
                del runners[key]
                result.timings = [t for t in result.timings if t.key != key]
                continue
            result.timings.append(Timing(key, r, steps, timed))
        on_round(r + 1, rounds)
    return result


def _endless(make: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make()


# --- a sweep's step times, recorded beside its trials ---------------------------------------------

FILE = "step_times.json"
NOT_COST = ("batch_size", "lr", "lr_factor", "seed")  # axes that change what a step computes, not what it costs


def cost_key(axes: dict) -> str:
    """A trial's axes besides the batch size that may change what a step costs (precision, the model...), as
    JSON text: with the batch size, what names a subject here and in the report."""
    return json.dumps({k: v for k, v in sorted(axes.items()) if k not in NOT_COST}, sort_keys=True, default=str)


def subjects(trials, used: dict[str, list[dict]] | None = None) -> list[Subject]:
    """One subject per distinct step cost among `trials` (grid.Trial): trials that differ only in lr or seed
    share one, timed with the first such trial's config. Key: (batch size, the other axes as JSON). A trial whose
    batch size follows a schedule is timed at every batch size it trained at (`used`: trial id -> its records'
    batch_changes; its starting batch size until it has some), each as a constant batch size of its config."""
    found: dict[tuple, Subject] = {}
    for trial in trials:
        if getattr(trial.config, "batch_schedule", None) is None:
            key = (trial.config.batch_size, cost_key(trial.axes))
            found.setdefault(key, Subject(key, trial.config))
            continue
        changes = (used or {}).get(trial.id) or [{"batch_size": trial.config.batch_size}]
        sizes = [c["batch_size"] for c in changes if isinstance(c, dict) and isinstance(c.get("batch_size"), int)]
        for size in dict.fromkeys(sizes):
            key = (size, cost_key(trial.axes))
            if key not in found:
                found[key] = Subject(key, trial.config.model_copy(update={"batch_size": size,
                                                                          "batch_schedule": None}))
    return sorted(found.values(), key=lambda s: s.key)


def record(path: Path, times: StepTimes, facts: dict, measured_at: str | None = None) -> None:
    """step_times.json: every timing with what it was measured on (`facts`: device, threads, torch version...)
    and when (`measured_at`; default now), written atomically."""
    write_json_atomic(path, {
        **facts, "measured_at": measured_at or now(), "rounds": times.rounds,
        "seconds_per_timing": times.seconds, "clock": times.clock, "cost_seconds": times.cost,
        "errors": [{"batch_size": k[0], "axes": json.loads(k[1]), "error": e} for k, e in times.errors.items()],
        "timings": [{"batch_size": t.key[0], "axes": json.loads(t.key[1]), "round": t.round, "steps": t.steps,
                     "seconds": t.seconds} for t in times.timings]})


def recorded_keys(path: Path) -> set[tuple] | None:
    """The subjects' keys step_times.json holds; None when there is none, it cannot be read, or it has fewer rounds
    than ROUNDS (written by an earlier batchlab: a rerun times the steps again, as this one would)."""
    try:
        recorded = json.loads(path.read_text())
        if recorded["rounds"] < ROUNDS:
            return None
        return {(t["batch_size"], cost_key(t["axes"])) for t in recorded["timings"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
