"""Evaluating a model: the figures over a split, and when a figure read on eval.subset (Data.eval_subset) is
near enough a target that the whole split must judge it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from batchlab.outputs import forward

if TYPE_CHECKING:
    from batchlab.data import Data
    from batchlab.summary import Summary

NEAR = 3  # standard errors: a subset's figure this close to a target has the whole split evaluated. A fixed
# subset's error tends to keep its sign from one evaluation to the next, so without a margin a crossing is
# often noticed late (measured: 1,000 of fashion-mnist's 10,000 test images, no margin: a target of 0.80
# noticed at step 108, the whole split had met it at step 84); 3 misses one about one time in 700.
NEAR_GAP = 2  # standard errors of the subset's difference from the whole split, once a trial has measured that
# difference: the subset's figure corrected by it. Measured on 18 fashion-mnist trials (batch sizes 64-1024, 3
# seeds, 2,000 of 10,000 test images, evaluated every 3,000 examples, targets 0.80 and 0.84): the difference
# keeps a bias (-0.008) and varies around it by 0.0045 (sd; 0.006 from one evaluation to the next); the whole
# split was evaluated at 39% of the evaluations instead of 66% by NEAR alone, and every one of the 36 crossings
# was noticed at the same evaluation as with the whole split every time (the margin: 2 x 0.0073 = 0.0146 at
# 0.84, 0.016 at 0.80; a margin of 1 standard error missed one).


@dataclass(frozen=True)
class Totals:
    """What an evaluation adds up over examples: the loss summed, the correct predictions, the labelled count
    (examples; a sequence task's labelled positions). Two disjoint parts of a split add to the whole's."""
    loss_sum: float
    correct: int
    count: int

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.loss_sum + other.loss_sum, self.correct + other.correct, self.count + other.count)

    def figures(self, task: str) -> tuple[float, float | None]:
        """Mean loss, and accuracy where the task has one."""
        n = max(self.count, 1)
        return self.loss_sum / n, (self.correct / n if task in ("classification", "sequence") else None)


@torch.inference_mode()
def tally(model, split, criterion, task: str, batch_size: int, device: torch.device,
          ignore_index: int = -100) -> Totals:
    """The Totals of a split, in large batches; one sync at the end. A sequence task's count labelled positions
    (tokens): each batch's mean loss weighs by its labelled positions."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = torch.zeros((), device=device, dtype=torch.int64)
    for x, target in split.batches(batch_size):
        x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
        out = forward(model, x, target).float()
        labelled = target != ignore_index if task == "sequence" else None
        weight = labelled.sum() if labelled is not None else len(target)
        loss_sum += criterion(out, target).float() * weight
        count += weight
        if task == "classification":
            correct += (out.argmax(-1) == target).sum()
        elif task == "sequence":
            correct += ((out.argmax(-1) == target) & labelled).sum()
    model.train(was_training)
    return Totals(loss_sum.item(), int(correct.item()), int(count.item()))


def evaluate(model, split, criterion, task: str, batch_size: int, device: torch.device,
             ignore_index: int = -100) -> tuple[float, float | None]:
    """Mean loss and accuracy over a split (per labelled position for a sequence task)."""
    return tally(model, split, criterion, task, batch_size, device, ignore_index).figures(task)


def perplexity(loss: float | None) -> float | None:
    """exp(loss) of a per-token cross-entropy; None (the records' null) past a float's range."""
    return math.exp(loss) if loss is not None and loss < 700 else None


def reached(metric: str, value: float | None, threshold: float) -> bool:
    if value is None:
        return False
    return value >= threshold if metric == "test_accuracy" else value <= threshold


def near(metric: str, value: float | None, threshold: float, n: int, total: int | None = None,
         gap: float | None = None) -> bool:
    """Whether a figure measured on n examples is within NEAR standard errors of reaching `threshold`, so that
    the whole split may reach it. Accuracy: the binomial standard error at the threshold, sqrt(t (1 - t) / n).
    A loss: 1/sqrt(n) of the threshold, taking a per-example loss's spread to be about its mean.
    With `gap` (the whole split's figure minus the subset's at this trial's last evaluation that read both) and
    `total` (the whole split's size): the figure corrected by the gap, within NEAR_GAP standard errors of the
    subset's difference from the whole split (the one above x sqrt(1 - n / total), the subset being part of it).
    A figure that reaches the threshold on the subset is always near."""
    if value is None:
        return False
    if reached(metric, value, threshold):
        return True  # the subset says reached: only the whole split may say so
    margin, guess = NEAR, value
    if gap is not None and total:
        margin, guess = NEAR_GAP * math.sqrt(max(0.0, 1 - n / total)), value + gap
    if metric == "test_accuracy":
        return guess >= threshold - margin * math.sqrt(threshold * (1 - threshold) / n)
    return guess <= threshold * (1 + margin / math.sqrt(n))


def did_not_learn(summary: Summary, data: Data) -> str | None:
    """Why a trial that ran to its end did not learn (its final evaluation no better than its initial one, or
    than chance for classification), or None. Such a trial is recorded diverged, with this reason."""
    if summary.steps == 0:
        return None
    if data.task == "classification":
        first, last, chance = summary.initial["test_accuracy"], summary.final["test_accuracy"], 1 / data.num_classes
        if first is not None and last is not None and last <= max(first, chance):
            return (f"it did not learn: final test accuracy {last:.4f} is no better than at the start ({first:.4f}) "
                    f"or chance ({chance:.4f})")
        return None
    first, last = summary.initial["test_loss"], summary.final["test_loss"]
    if first is not None and last is not None and last >= first:
        return f"it did not learn: final test loss {last:.4g} is no lower than at the start ({first:.4g})"
    return None
