"""The reference run and the branches from its points, trained with batchlab's own parts (build_parts, Step,
the data's loader), each timed on a training clock that evaluation, the noise measurement and copying leave out.

A point keeps the reference's state in memory: a deep copy of the model, the optimizer's state, and where the
data order stood (the epoch's generator state and the examples into the epoch). A branch at batch size B
starts from those: the same weights and optimizer state, the same epoch's order from the same place (so every
branch of a point sees the same examples first), the lr set to its own.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from batchlab.critical_batch.analysis import crossing, loss_at
from batchlab.data import Data
from batchlab.data.splits import order_of
from batchlab.evaluation import evaluate
from batchlab.losses import build_loss
from batchlab.machine import Clock
from batchlab.noise_scale import at_fixed_parameters
from batchlab.optimizers import build_optimizer
from batchlab.schedules import lr_schedule
from batchlab.schema import Experiment
from batchlab.step import Step
from batchlab.train import EXPLODED, build_parts, set_lr


@dataclass
class Point:
    """The reference's state after `examples` examples (`steps` steps), and what was measured there."""
    index: int
    examples: int
    steps: int
    model: torch.nn.Module = field(repr=False)
    optimizer_state: dict = field(repr=False)
    epoch_state: torch.Tensor = field(repr=False)  # the order generator's state when the epoch began
    epoch_position: int  # examples of that epoch already trained on
    lr_multiplier: float  # the lr schedule's, at the point: branches keep it
    loss: float  # held-out, on the evaluation subset
    noise: dict  # batchlab.noise_scale.at_fixed_parameters there


class Diverged(Exception):
    """The reference run's held-out loss diverged at a point: the points kept before it, and where."""

    def __init__(self, points: list[Point], seconds: float, examples: int, loss: float, initial: float):
        super().__init__(f"held-out loss {loss:.4g} after {examples:,} examples (at the start {initial:.4g})")
        self.points, self.seconds = points, seconds


class Parts:
    """What the reference and every branch share: the config, the data, the loss, the evaluation subset."""

    def __init__(self, cfg: Experiment, data: Data, device: torch.device, eval_examples: int, measurements: int):
        self.cfg, self.data, self.device, self.measurements = cfg, data, device, measurements
        self.subset = data.eval_subset(cfg.eval.subset or eval_examples)
        self.criterion = build_loss(cfg.loss, data.task, data.ignore_index)
        self.channels_last = device.type == "cuda" and len(data.input_shape) == 3

    def step(self, model, optimizer, criterion, batch: int) -> Step:
        micro = self.cfg.micro_batch_size if isinstance(self.cfg.micro_batch_size, int) else None
        return Step(model, optimizer, criterion, self.device, self.cfg.precision, min(micro or batch, batch),
                    self.cfg.optimizer.grad_clip, self.channels_last)

    def evaluate(self, model, criterion, batch: int) -> float:
        return evaluate(model, self.subset, criterion, self.data.task, self.cfg.eval.batch_for(batch), self.device,
                        self.data.ignore_index)[0]


def reference(parts: Parts, at: list[int], total_steps: int, on_step=None) -> tuple[list[Point], float]:
    """Train the config at its batch size to the last of `at` (examples, increasing), keeping a Point at the
    first step boundary at or past each (one Point where several fall within one step). Returns the points and
    the training seconds. Raises Diverged at the first point whose held-out loss has diverged (the trainer's
    rule: not finite, or over EXPLODED x the loss at the start), with the points kept before it."""
    cfg, data, device = parts.cfg, parts.data, parts.device
    model, criterion, optimizer = build_parts(cfg, data, device)
    n, batch = len(data.train), min(cfg.batch_size, len(data.train))
    spe = n // batch if cfg.drop_last else math.ceil(n / batch)
    epoch = spe * batch if cfg.drop_last else n  # the examples an epoch trains on (drop_last: the rest dropped)
    initial = parts.evaluate(model, criterion, batch)
    schedule = lr_schedule(cfg.schedule, spe, total_steps)
    set_lr(optimizer, cfg.lr * schedule(0))
    loader = data.train.loader(batch, cfg.drop_last, cfg.seed)
    order = order_of(loader)
    step = parts.step(model, optimizer, criterion, batch)
    points: list[Point] = []
    clock = Clock(device)
    steps = examples = position = 0
    due = 0  # the first of `at` not yet kept

    def keep():
        nonlocal due
        clock.stop()
        if position >= epoch or order.epoch_state is None:  # the epoch is over: the next begins where the order
            state, pos = order.generator.get_state(), 0  # stands
        else:
            state, pos = order.epoch_state.clone(), position
        loss = parts.evaluate(model, criterion, batch)
        if not math.isfinite(loss) or loss > EXPLODED * initial > 0:
            raise Diverged(points, clock.total, examples, loss, initial)
        model.eval()
        noise = at_fixed_parameters(cfg, model, criterion, data, device, parts.measurements)
        points.append(Point(len(points), examples, steps, copy.deepcopy(model),
                            copy.deepcopy(optimizer.state_dict()), state, pos, schedule(steps), loss, noise))
        while due < len(at) and at[due] <= examples:
            due += 1
        model.train()
        clock.start()

    model.train()
    clock.start()
    if at[0] <= 0:
        keep()
    while due < len(at):
        position = 0
        for x, y in loader:
            step(x, y)
            steps += 1
            examples += len(x)
            position += len(x)
            if schedule.varies:
                set_lr(optimizer, cfg.lr * schedule(steps))
            if on_step:
                on_step(examples)
            if examples >= at[due]:
                keep()
            if due == len(at):
                break
    return points, clock.stop()


def branch(parts: Parts, point: Point, batch: int, lr: float, window: int, longest: int, evals: int,
           target: float | None) -> dict:
    """Train from `point` at `batch` and `lr` (times the point's schedule multiplier): `window` examples at
    least, then on to `longest` or until the held-out loss reaches `target` (None: stop at the window).
    Evaluated at the point, then every window / evals examples (at least every step). Returns the branch's
    figures (examples_to_target is filled in later, when the target is known)."""
    cfg, data, device = parts.cfg, parts.data, parts.device
    torch.manual_seed(cfg.seed + 1 + point.index)  # dropout's stream: the same for every branch of a point
    model = copy.deepcopy(point.model)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), lr)
    optimizer.load_state_dict(copy.deepcopy(point.optimizer_state))
    set_lr(optimizer, lr * point.lr_multiplier)
    criterion = parts.criterion
    loader = data.train.loader(batch, cfg.drop_last, cfg.seed)
    # From the point's place in the epoch, in examples: a batch other than the reference's must not round it
    order_of(loader).resume(point.epoch_state.clone(), point.epoch_position // batch, point.epoch_position)
    step = parts.step(model, optimizer, criterion, batch)
    every = max(1, round(window / evals))
    curve, examples, steps, next_eval = [(0, point.loss)], 0, 0, every
    clock = Clock(device)
    diverged = False
    model.train()
    clock.start()
    while examples < longest and not diverged:
        for x, y in loader:
            step(x, y)
            steps += 1
            examples += len(x)
            if examples >= next_eval or examples >= longest:
                clock.stop()
                loss = parts.evaluate(model, criterion, batch)
                model.train()
                curve.append((examples, loss))
                next_eval = (examples // every + 1) * every
                diverged = not math.isfinite(loss) or loss > EXPLODED * point.loss
                done = examples >= window and (target is None or loss <= target)
                if diverged or done or examples >= longest:
                    return _figures(point, batch, lr, steps, examples, clock.total, curve, window, diverged)
                clock.start()
    return _figures(point, batch, lr, steps, examples, clock.stop(), curve, window, diverged)


def _figures(point: Point, batch: int, lr: float, steps: int, examples: int, seconds: float, curve, window: int,
             diverged: bool, error: str | None = None) -> dict:
    return {"point": point.index, "point_examples": point.examples, "batch_size": batch, "lr": lr, "steps": steps,
            "examples": examples, "loss_after_window": loss_at(curve, window), "examples_to_target": None,
            "diverged": diverged, "error": error, "train_seconds": seconds, "curve": [[e, loss] for e, loss in curve]}


def failed(point: Point, batch: int, lr: float, error: str) -> dict:
    """The figures of a branch that raised: no curve past the point, so it reaches no loss level."""
    return _figures(point, batch, lr, 0, 0, 0.0, [(0, point.loss)], 1, False, error)


def examples_to(figures: dict, target: float) -> float | None:
    """E_B of a branch: the examples its curve takes to reach `target`, one step's at least (within a step
    the loss does not move by degrees: interpolating there would credit a large batch with part of a step)."""
    found = crossing([(e, loss) for e, loss in figures["curve"]], target)
    return None if found is None else max(found, float(figures["batch_size"]))
