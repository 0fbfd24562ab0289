"""Losses: cross-entropy and mean squared error built in, or any callable `(output, target) -> scalar`.

The loss must be the mean over the batch: gradient accumulation weights micro-batches by their size,
evaluation multiplies by the batch size, and the gradient noise scale assumes a mean. A sequence task's
cross-entropy is the mean over its labelled positions (a loss per token, as language models report it).
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from batchlab import registry
from batchlab.schema import LossConfig


def cross_entropy(label_smoothing: float = 0.0) -> Callable[[Tensor, Tensor], Tensor]:
    return partial(F.cross_entropy, label_smoothing=label_smoothing) if label_smoothing else F.cross_entropy


def mse() -> Callable[[Tensor, Tensor], Tensor]:
    return F.mse_loss


def per_position(label_smoothing: float = 0.0, ignore_index: int = -100) -> Callable[[Tensor, Tensor], Tensor]:
    """Sequence tasks: (B, T, V) outputs against (B, T) targets, cross-entropy over the last dimension, the mean
    over positions whose target is not ignore_index."""
    def sequence_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), ignore_index=ignore_index,
                               label_smoothing=label_smoothing)
    return sequence_cross_entropy


def squeezed(loss: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Regression: (N, 1) outputs are compared with (N,) targets as (N,), not broadcast to (N, N)."""
    def regression_loss(output: Tensor, target: Tensor) -> Tensor:
        if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
            output = output.squeeze(-1)
        return loss(output, target)
    return regression_loss


BUILTIN = {"cross_entropy": cross_entropy, "mse": mse}


def build_loss(cfg: LossConfig, task: str, ignore_index: int = -100) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss the config names. `auto` is cross-entropy for classification and sequences, mse for regression.

    An imported class (e.g. torch.nn:HuberLoss) is built with `args`; an imported function is the
    loss itself, with `args` bound as keywords.
    """
    name = cfg.name if cfg.name != "auto" else ("mse" if task == "regression" else "cross_entropy")
    if name == "cross_entropy" and task == "sequence":
        loss = per_position(cfg.label_smoothing, ignore_index)
    elif name == "cross_entropy":
        loss = cross_entropy(cfg.label_smoothing)
    elif name == "mse":
        loss = mse()
    else:
        found = registry.resolve("loss.name", name, BUILTIN)
        if inspect.isclass(found):
            loss = registry.call("loss.name", found, cfg.args)
        else:
            loss = partial(found, **cfg.args) if cfg.args else found
    return squeezed(loss) if task == "regression" else loss
