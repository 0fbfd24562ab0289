"""Data sets (a registry of loaders yielding tensors) and the batched DataLoader that serves them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from batchlab.config import DatasetConfig


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor  # the test set, or the validation split when val_fraction > 0
    y_eval: torch.Tensor
    task: str  # "classification" | "regression"
    num_classes: int | None
    eval_split: str  # "test" | "val"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device) -> Data:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Data(move(self.x_train), move(self.y_train), move(self.x_eval), move(self.y_eval),
                    self.task, self.num_classes, self.eval_split)


def digits(cfg: DatasetConfig) -> tuple:
    """sklearn's 8x8 digits (1,797 images, bundled): a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return xtr, ytr, xte, yte, 10


def idx(name: str):
    def load(cfg: DatasetConfig) -> tuple:
        from batchlab.idx import load_idx_dataset

        root = Path(cfg.root).expanduser() if cfg.root else None
        xtr, ytr, xte, yte = load_idx_dataset(name, root=root, download=cfg.download, mirrors=cfg.mirrors)
        scale = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731  (N, 1, 28, 28) in [0, 1]
        return scale(xtr), ytr, scale(xte), yte, 10
    return load


def linear(cfg: DatasetConfig) -> tuple:
    """y = 3x + 2 + 0.1 * noise, x ~ U(-1, 1): the batch / stochastic / mini-batch GD classic."""
    rng = np.random.default_rng(1234)  # fixed: the data is part of the experiment, not of the trial seed
    x = rng.uniform(-1, 1, size=(2 * cfg.n, 1)).astype(np.float32)
    y = (3 * x[:, 0] + 2 + 0.1 * rng.standard_normal(2 * cfg.n)).astype(np.float32)
    return x[: cfg.n], y[: cfg.n], x[cfg.n:], y[cfg.n:], None


REGISTRY = {"digits": digits, "mnist": idx("mnist"), "fashion-mnist": idx("fashion-mnist"), "linear": linear}


def load_dataset(cfg: DatasetConfig, seed: int) -> Data:
    xtr, ytr, xte, yte, num_classes = REGISTRY[cfg.name](cfg)
    task = "regression" if num_classes is None else "classification"
    ydtype = torch.float32 if task == "regression" else torch.int64
    xtr, xte = torch.as_tensor(xtr), torch.as_tensor(xte)
    ytr, yte = torch.as_tensor(ytr, dtype=ydtype), torch.as_tensor(yte, dtype=ydtype)
    split = "test"
    if cfg.val_fraction > 0:
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(len(xtr) * cfg.val_fraction))
        val, keep = perm[:n_val], perm[n_val:]
        xte, yte, xtr, ytr, split = xtr[val], ytr[val], xtr[keep], ytr[keep], "val"
    if cfg.subset is not None:
        xtr, ytr = xtr[: cfg.subset], ytr[: cfg.subset]
    return Data(xtr.contiguous(), ytr.contiguous(), xte.contiguous(), yte.contiguous(), task, num_classes, split)


# ---------------------------------------------------------------- batches

class TensorBatches(Dataset):
    """Pre-loaded tensors served a whole batch per call: `dataset[index_tensor]` is one gather."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


class ShuffledBatches(Sampler):
    """Yields index tensors, a fresh permutation each epoch from the trial's generator.

    Used as a DataLoader's sampler with batch_size=None, so one sampler item is one batch and
    no per-sample Python call is made (batch 1 and batch 60,000 are both fast).
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator):
        self.n, self.batch_size, self.drop_last, self.generator = n, batch_size, drop_last, generator

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self):
        if self.batch_size >= self.n:  # the full batch: its mean gradient does not depend on the order
            yield slice(None)  # a view of the whole set, not a 60,000-row gather per step
            return
        perm = torch.randperm(self.n, generator=self.generator, device=self.generator.device)
        for i in range(len(self)):
            yield perm[i * self.batch_size:(i + 1) * self.batch_size]


def passthrough(batch):
    return batch


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, drop_last: bool,
                generator: torch.Generator) -> DataLoader:
    sampler = ShuffledBatches(len(x), min(batch_size, len(x)), drop_last, generator)
    return DataLoader(TensorBatches(x, y), sampler=sampler, batch_size=None, collate_fn=passthrough)
