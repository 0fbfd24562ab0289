"""The learning-rate schedule: a multiplier of the peak lr for each optimizer step, warmup included.

Built in: constant, step and cosine. By import path (schedule.name: module:attribute):
- a torch.optim.lr_scheduler class (e.g. torch.optim.lr_scheduler:StepLR with args {step_size: 1000}): built
  with `args` on an optimizer of its own at lr 1 and stepped once per optimizer step, so its lr is the
  multiplier (its step counts optimizer steps, as torch's schedulers do);
- a function `f(step, **args) -> multiplier`, also given total_steps and steps_per_epoch when it names them.
Either way batchlab's linear warmup (schedule.warmup_epochs) comes first, and the imported schedule starts
at the step where warmup ends.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Callable

import torch

from batchlab import registry
from batchlab.schema import SCHEDULES, ScheduleConfig

KEY = "schedule.name"


def imported(s: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The multiplier an imported schedule gives `step` steps after warmup."""
    found = registry.resolve(KEY, s.name, {})
    if inspect.isclass(found) and issubclass(found, torch.optim.lr_scheduler.LRScheduler):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = registry.call(KEY, found, s.args, optimizer, total_steps=total_steps)
        values = [optimizer.param_groups[0]["lr"]]

        def stepped(step: int) -> float:
            while len(values) <= step:  # asked in order: each step is one scheduler.step()
                optimizer.step()  # no gradients, so nothing moves: only torch's order of calls is kept
                scheduler.step()
                values.append(optimizer.param_groups[0]["lr"])
            return values[step]
        return stepped
    if inspect.isclass(found):
        raise registry.ComponentError(KEY, f"{s.name} is a class but not a torch.optim.lr_scheduler.LRScheduler; "
                                           "give a scheduler class or a function of the step")
    try:
        parameters = inspect.signature(found).parameters
    except (TypeError, ValueError):
        parameters = {}
    offered = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch}
    function = partial(found, **s.args, **{k: v for k, v in offered.items() if k in parameters and k not in s.args})

    def called(step: int) -> float:
        try:
            value = function(step)
        except Exception as e:  # noqa: BLE001 -- the user's function raised
            raise registry.ComponentError(KEY, f"{s.name}({step}) raised {type(e).__name__}: {e}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise registry.ComponentError(KEY, f"{s.name}({step}) returned {value!r}; expected a finite "
                                               "multiplier of the lr, >= 0")
        return float(value)
    return called


def lr_schedule(s: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr before optimizer step `step` (0-based): warmup, then the schedule.

    Set straight into the optimizer rather than through an LRScheduler, and only when it varies:
    at batch size 1 a scheduler's per-step bookkeeping is a measurable part of a step.
    """
    warmup = round(s.warmup_epochs * steps_per_epoch)
    user = imported(s, steps_per_epoch, total_steps) if s.name not in SCHEDULES else None
    if user is not None:
        user(0)  # a schedule that fails, fails before training

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if user is not None:
            return user(step - warmup)
        if s.name == "step":
            return s.gamma ** math.floor(step / (s.step_epochs * steps_per_epoch))
        if s.name == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return s.final_fraction + (1 - s.final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    multiplier.varies = warmup > 0 or s.name != "constant"
    return multiplier
