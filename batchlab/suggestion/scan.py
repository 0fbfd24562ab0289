"""The throughput curve: samples/s of real training steps at batch sizes 1, 2, 4, ... up to the largest, or
until the curve has flattened.

Each batch size trains from the same initial weights with a fresh optimizer, its batches drawn by the
training loader (so data loading is in the time, as in a trial), for about `seconds` after one untimed
warm-up step; the clock syncs the device at both ends, as the trainer's does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from batchlab.data import Data
from batchlab.optimizers import build_optimizer
from batchlab.schema import Experiment
from batchlab.step import Step
from batchlab.train import Clock, build_parts

SECONDS_PER_SIZE = 0.2  # of timed steps at each batch size: a few seconds for the whole curve
MIN_STEPS = 3  # timed steps at least, however long one takes
# Past the plateau of the throughput curve a larger batch only costs more time a step for no more samples/s:
# T(B) ~ (B + B_crit) / throughput(B) grows. The scan stops once two doublings gained less than this.
PLATEAU_GAIN = 1.05


@dataclass
class Rate:
    batch_size: int
    samples_per_second: float
    steps: int
    seconds: float  # of the timed steps
    warmup_seconds: float  # of the untimed first step: with the timed ones, what the scan cost in training time


def batch_sizes(largest: int) -> list[int]:
    """1, 2, 4, ... below `largest`, and `largest` itself."""
    sizes, b = [], 1
    while b < largest:
        sizes.append(b)
        b *= 2
    return sizes + [largest]


def scan(cfg: Experiment, data: Data, device: torch.device, largest: int,
         seconds: float = SECONDS_PER_SIZE) -> list[Rate]:
    model, criterion, _ = build_parts(cfg, data, device)
    initial = copy.deepcopy(model.state_dict())
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    rates = []
    for b in batch_sizes(largest):
        model.load_state_dict(initial)
        optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
        step = Step(model, optimizer, criterion, device, cfg.precision, None, cfg.optimizer.grad_clip, channels_last)
        batches = _endless(data.train.loader(b, False, cfg.seed))
        warmup = Clock(device)
        warmup.start()
        step(*next(batches))  # lazy initialisation, kernels for this shape, caches, worker start: not timed
        clock, steps = Clock(device), 0
        clock.start()
        while steps < MIN_STEPS or clock.peek() < seconds:
            step(*next(batches))
            steps += 1
        timed = clock.stop()
        rates.append(Rate(b, b * steps / timed, steps, timed, warmup.stop()))
        if len(rates) >= 3 and rates[-1].samples_per_second < PLATEAU_GAIN * rates[-3].samples_per_second:
            break  # on a CPU this saves steps of tens of thousands of examples each
    return rates


def _endless(loader):
    while True:
        yield from loader
