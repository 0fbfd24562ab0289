"""Sequence-task parts named by import path in test_sequence.py (seq_parts:...): a toy data set, small
language models returning their outputs in each common form, and schedules."""

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def successor(n: int = 256, context: int = 8, vocab: int = 11, ignore_last: bool = False) -> dict:
    """Token windows whose target at each position is the next id (mod vocab): learnable position by position."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(2 * n, context))
    y = (x + 1) % vocab
    if ignore_last:
        y[:, -1] = -100
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


class TokenLM(nn.Module):
    """Embedding then a linear layer: (B, T) int64 ids -> (B, T, V) logits. Refuses anything but integer ids."""

    def __init__(self, num_classes: int, vocab: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(num_classes, 16)
        self.out = nn.Linear(16, vocab or num_classes)

    def logits(self, idx):
        if idx.dtype != torch.int64:
            raise TypeError(f"token ids arrived as {idx.dtype}")
        return self.out(self.embed(idx))

    def forward(self, idx):
        return self.logits(idx)


class WithLoss(TokenLM):
    """nanoGPT's convention: forward(idx, targets) returns (logits, loss); without targets, the last position."""

    def forward(self, idx, targets=None):
        out = self.logits(idx)
        if targets is None:
            return out[:, [-1]], None
        return out, F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1)) * 0  # a wrong loss: unused


class AsDict(TokenLM):
    def forward(self, idx):
        return {"logits": self.logits(idx), "hidden": None}


class AsObject(TokenLM):
    """Hugging Face's style: an output object with .logits."""

    def forward(self, idx):
        return SimpleNamespace(logits=self.logits(idx), loss=None)


def halving(step: int, every: int = 2) -> float:
    """A function of the step: the lr halves every `every` steps."""
    return 0.5 ** (step // every)
