"""One side of a data set (train, or the evaluation split), and the batches training draws from it.

Two kinds, one interface:
- `TensorSplit`: examples held as tensors (arrays a factory returned, every built-in). A training batch is
  one gather `x[index]` through a DataLoader whose sampler yields a whole batch's indices, so no
  per-example Python runs: batch 1 and batch 60,000 are both fast.
- `DatasetSplit`: a map-style torch Dataset (per-example transforms, e.g. augmentation). Batches come from
  a DataLoader with `num_workers` processes, pinned memory on CUDA and persistent workers; the order still
  comes from the trial's seed, and the workers' random streams from a generator seeded by it too.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

Batch = tuple[torch.Tensor, torch.Tensor]


class ShuffledBatches(Sampler):
    """Yields index tensors, a fresh permutation each epoch from the trial's generator.

    Used as a DataLoader's sampler with batch_size=None, so one sampler item is one batch.
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


class IndexLists(ShuffledBatches):
    """The same batches as lists of ints: a DataLoader's batch_sampler over a Dataset."""

    def __iter__(self):
        for index in super().__iter__():
            yield list(range(self.n)) if isinstance(index, slice) else index.tolist()


class TensorBatches(Dataset):
    """Pre-loaded tensors served a whole batch per call: `dataset[index_tensor]` is one gather."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: torch.Tensor | slice) -> Batch:
        return self.x[index], self.y[index]


def passthrough(batch):
    return batch


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, drop_last: bool,
                generator: torch.Generator) -> DataLoader:
    sampler = ShuffledBatches(len(x), min(batch_size, len(x)), drop_last, generator)
    return DataLoader(TensorBatches(x, y), sampler=sampler, batch_size=None, collate_fn=passthrough)


class TensorSplit:
    """Examples held as two tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size() + self.y.numel() * self.y.element_size()

    def take(self, index: torch.Tensor) -> Batch:
        """The examples at `index`, as one batch."""
        index = index.to(self.x.device)
        return self.x[index], self.y[index]

    def head(self, n: int) -> TensorSplit:
        return TensorSplit(self.x[:n], self.y[:n])

    def select(self, index: torch.Tensor) -> TensorSplit:
        return TensorSplit(self.x[index].contiguous(), self.y[index].contiguous())

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Every example once, in order (evaluation)."""
        for i in range(0, len(self.x), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]

    def loader(self, batch_size: int, drop_last: bool, seed: int) -> DataLoader:
        """Shuffled training batches, the order drawn from `seed` (on the data's device)."""
        generator = torch.Generator(device=self.x.device).manual_seed(seed)
        return make_loader(self.x, self.y, batch_size, drop_last, generator)

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))


def seed_numpy(worker_id: int) -> None:
    """DataLoader workers seed torch and `random` from the loader's generator; numpy too, from the same seed."""
    np.random.seed(torch.initial_seed() % 2**32)


class DatasetSplit:
    """A map-style Dataset, served through DataLoader workers."""

    def __init__(self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self._eval_loader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    device = torch.device("cpu")
    nbytes = 0  # never moved to a device as a whole

    def take(self, index: torch.Tensor) -> Batch:
        return default_collate([self.dataset[i] for i in index.tolist()])

    def head(self, n: int) -> DatasetSplit:
        return DatasetSplit(Subset(self.dataset, range(min(n, len(self.dataset)))), self.num_workers, self.pin_memory)

    def select(self, index: torch.Tensor) -> DatasetSplit:
        return DatasetSplit(Subset(self.dataset, index.tolist()), self.num_workers, self.pin_memory)

    def _options(self) -> dict:
        return dict(num_workers=self.num_workers, pin_memory=self.pin_memory,
                    persistent_workers=self.num_workers > 0, worker_init_fn=seed_numpy)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        if self._eval_loader is None or self._eval_loader.batch_size != batch_size:  # kept: its workers persist
            self._eval_loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, **self._options())
        return iter(self._eval_loader)

    def loader(self, batch_size: int, drop_last: bool, seed: int) -> DataLoader:
        n = len(self.dataset)
        order = torch.Generator().manual_seed(seed)
        workers_seed = torch.Generator().manual_seed(seed + 1)  # base seed of the workers' torch and random
        return DataLoader(self.dataset, batch_sampler=IndexLists(n, min(batch_size, n), drop_last, order),
                          generator=workers_seed, **self._options())

    def to(self, device: torch.device) -> DatasetSplit:
        return DatasetSplit(self.dataset, self.num_workers, device.type == "cuda")
