"""Seconds per step: samples/s at batch sizes 1, 2, 4, ... up to the throughput curve's plateau, then the batch
sizes the search trains at timed interleaved.

Two passes. A quick one, one batch size after another, gives the curve the candidates are predicted from and
where to stop: past the plateau a larger batch only costs more time a step for no more samples/s, so
T(B) ~ (B + B_crit) / throughput(B) grows there. Then the pilot's batch size and the candidates are timed
interleaved by batchlab.steptime, several rounds, so a slow minute slows them all alike: those are the seconds
per step the race multiplies steps by, and what the decision (batchlab.reporting.decision) bootstraps over.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from batchlab import steptime
from batchlab.data import Data
from batchlab.machine import Clock, machine_facts, now
from batchlab.optimizers import build_optimizer
from batchlab.reporting.decision import INTERLEAVED, StepCost
from batchlab.schema import Experiment
from batchlab.step import Step
from batchlab.train import build_parts

QUICK_SECONDS = 0.01  # of timed steps at each batch size in the first pass, best of QUICK_TRIES: only where the
QUICK_TRIES = 3  # curve flattens matters, and the least of three timings is the one a busy moment disturbed least
SECONDS = 0.05  # timed per batch size and round of the interleaved pass: 10 rounds x 5 batch sizes cost 2.5 s
# where steps are short (the quickstart's whole scan took 4.4 s against 69 s for its 3-seed grid; README)
MIN_STEPS = 1  # timed steps at least in each timing of the first pass: one at batch 16,384 can take a second
# The first pass stops once two doublings gained less than this in samples/s, at two batch sizes running (one
# slow moment on a shared machine once made a single check stop the scan at batch size 8 on Fashion-MNIST).
PLATEAU_GAIN = 1.05


@dataclass
class Rate:
    """One batch size of the scan: its seconds per step over the interleaved rounds, as the report summarises them
    (their median: decision.StepCost), and the rounds themselves."""
    batch_size: int
    seconds_per_step: float | None  # None: it could not be timed (see error)
    rounds: list[float]  # seconds per step, one a round, in round order
    error: str | None = None

    @property
    def samples_per_second(self) -> float | None:
        return self.batch_size / self.seconds_per_step if self.seconds_per_step else None


@dataclass
class Scan:
    speeds: dict[int, float]  # the first pass: samples/s at 1, 2, 4, ... up to the plateau (best of QUICK_TRIES)
    rates: list[Rate]  # the batch sizes the search trains at, timed interleaved, ascending
    seconds: float  # training seconds of both passes' steps, timed or warm-up: what the scan cost, as a trial's
    # clock counts its own
    times: steptime.StepTimes | None = None  # the interleaved rounds, as <sweep>/step_times.json records them
    facts: dict | None = None  # what they were measured on (machine.machine_facts)
    measured_at: str | None = None  # when (machine.now)

    def costs(self) -> dict[int, StepCost]:
        """Seconds per step as the decision takes them (interleaved rounds, paired across batch sizes)."""
        return {r.batch_size: StepCost(INTERLEAVED, np.asarray(r.rounds, dtype=float))
                for r in self.rates if r.seconds_per_step}

    def seconds_per_step(self) -> dict[int, float]:
        """The seconds per step of every batch size timed interleaved (those that could be)."""
        return {r.batch_size: r.seconds_per_step for r in self.rates if r.seconds_per_step}


def batch_sizes(largest: int) -> list[int]:
    """1, 2, 4, ... below `largest`, and `largest` itself."""
    sizes, b = [], 1
    while b < largest:
        sizes.append(b)
        b *= 2
    return sizes + [largest]


def first_pass(cfg: Experiment, data: Data, device: torch.device, largest: int,
               seconds: float = QUICK_SECONDS) -> Scan:
    """Samples/s at 1, 2, 4, ... one batch size after another, briefly, up to where doubling stopped paying:
    the curve the candidates are predicted from, and the batch sizes the search may train at."""
    model, criterion, _ = build_parts(cfg, data, device)
    initial = copy.deepcopy(model.state_dict())
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    speeds: dict[int, float] = {}
    spent = 0.0
    for b in batch_sizes(largest):
        model.load_state_dict(initial)
        optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
        step = Step(model, optimizer, criterion, device, cfg.precision, None, cfg.optimizer.grad_clip, channels_last)
        batches = _endless(data.train.loader(b, False, cfg.seed))
        warmup = Clock(device)
        warmup.start()
        step(*next(batches))  # lazy initialisation, kernels for this shape, caches, worker start: not timed
        spent += warmup.stop()
        best = 0.0
        for _ in range(QUICK_TRIES):
            clock, steps = Clock(device), 0
            clock.start()
            while steps < MIN_STEPS or clock.peek() < seconds:
                step(*next(batches))
                steps += 1
            timed = clock.stop()
            spent += timed
            best = max(best, b * steps / timed)
        speeds[b] = best
        curve = list(speeds.values())
        flat = [i for i in range(2, len(curve)) if curve[i] < PLATEAU_GAIN * curve[i - 2]]
        if flat[-2:] == [len(curve) - 2, len(curve) - 1]:
            break  # on a CPU this saves steps of tens of thousands of examples each
    return Scan(speeds, [], spent)


def interleaved(found: Scan, cfg: Experiment, data: Data, device: torch.device, sizes: list[int],
                rounds: int = steptime.ROUNDS, seconds: float = SECONDS) -> Scan:
    """`found` with `sizes` (the batch sizes the search trains at) timed interleaved over `rounds` rounds."""
    sizes = sorted(set(sizes))
    key = steptime.cost_key({})  # the search's trials vary only batch size, lr and seed: one step cost a size
    subjects = [steptime.Subject((b, key), cfg.model_copy(update={"batch_size": b})) for b in sizes]
    times = steptime.measure(subjects, lambda _: data, device, rounds, seconds)
    rates = []
    for b in sizes:
        values = times.seconds_per_step((b, key))
        cost = StepCost(INTERLEAVED, np.asarray(values, dtype=float)).value if values else None
        rates.append(Rate(b, cost, values, times.errors.get((b, key))))
    return Scan(found.speeds, rates, found.seconds + times.cost, times, machine_facts(device), now())


def _endless(loader):
    while True:
        yield from loader
