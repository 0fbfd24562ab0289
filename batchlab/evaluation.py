"""Evaluating a model: the figures over a split, and when a figure read on eval.subset (Data.eval_subset) is
near enough a target that the whole split must judge it."""

from __future__ import annotations

import math

import torch

NEAR = 3  # standard errors: a subset's figure this close to a target has the whole split evaluated. A fixed
# subset's error tends to keep its sign from one evaluation to the next, so without a margin a crossing is
# often noticed late (measured: 1,000 of fashion-mnist's 10,000 test images, no margin: a target of 0.80
# noticed at step 108, the whole split had met it at step 84); 3 misses one about one time in 700.


@torch.inference_mode()
def evaluate(model, split, criterion, task: str, batch_size: int, device: torch.device) -> tuple[float, float | None]:
    """Mean loss and accuracy over a split, in large batches; one sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for x, target in split.batches(batch_size):
        x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
        out = model(x).float()
        loss_sum += criterion(out, target).float() * len(target)
        if task == "classification":
            correct += (out.argmax(-1) == target).sum()
    model.train(was_training)
    n = len(split)
    return loss_sum.item() / n, (correct.item() / n if task == "classification" else None)


def reached(metric: str, value: float | None, threshold: float) -> bool:
    if value is None:
        return False
    return value >= threshold if metric == "test_accuracy" else value <= threshold


def near(metric: str, value: float | None, threshold: float, n: int) -> bool:
    """Whether a figure measured on n examples is within NEAR standard errors of reaching `threshold`, so that
    the whole split may reach it. Accuracy: the binomial standard error at the threshold, sqrt(t (1 - t) / n).
    A loss: 1/sqrt(n) of the threshold, taking a per-example loss's spread to be about its mean."""
    if value is None:
        return False
    if metric == "test_accuracy":
        return value >= threshold - NEAR * math.sqrt(threshold * (1 - threshold) / n)
    return value <= threshold * (1 + NEAR / math.sqrt(n))
