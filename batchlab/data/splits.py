"""One side of a data set (train, or the evaluation split), and the batches training draws from it.

Two kinds, one interface:
- `TensorSplit`: examples held as tensors (arrays a factory returned, every built-in). A training batch is
  one gather `x[index]` through a DataLoader whose sampler yields a whole batch's indices, so no
  per-example Python runs: batch 1 and batch 60,000 are both fast.
- `DatasetSplit`: a map-style torch Dataset (per-example transforms, e.g. augmentation). Batches come from
  a DataLoader with `num_workers` processes, pinned memory on CUDA and persistent workers. The order comes
  from the trial's seed, and so does the randomness of the transforms: torch, `random` and numpy are seeded
  for each batch from the trial's seed and the batch's place in the epoch, so a batch is the same whichever
  worker fetched it, however many workers there are, and when a trial resumes from a checkpoint.

Either way the sampler remembers where its epoch began (`epoch_state`) and can be told to start a later
epoch there and skip the batches already trained on (`resume`): a checkpoint's way back into an epoch.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

Batch = tuple[torch.Tensor, torch.Tensor]


class ShuffledBatches(Sampler):
    """Yields index tensors, a fresh permutation each epoch from the trial's generator.

    Used as a DataLoader's sampler with batch_size=None, so one sampler item is one batch. Each batch is the
    next `batch_size` positions of the epoch's permutation, read as it is drawn: a batch-size schedule sets it
    between batches, and the epoch goes on from the same place (positions count examples, not batches).
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator):
        self.n, self.batch_size, self.drop_last, self.generator = n, batch_size, drop_last, generator
        self.epoch_state: torch.Tensor | None = None  # the generator's state when the current epoch began
        self.skip = 0  # batches at the start of the next epoch not to yield (they were trained on)
        self.skip_examples: int | None = None  # ... and the examples they held (None: skip full batches)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def resume(self, epoch_state: torch.Tensor, skip: int, skip_examples: int | None = None) -> None:
        """Make the next epoch the one that began at `epoch_state`, less its first `skip` batches (holding
        `skip_examples` examples when the batch size changed within the epoch)."""
        self.generator.set_state(epoch_state)
        self.skip, self.skip_examples = skip, skip_examples

    def __iter__(self):
        self.epoch_state = self.generator.get_state()
        return (index for _, index in self.positioned(*self.taken()))

    def taken(self) -> tuple[int, int]:
        """(batches, examples) of this epoch already trained on, as `resume` said; then none for the next."""
        skip, start = self.skip, self.skip_examples
        self.skip, self.skip_examples = 0, None
        return skip, skip * self.batch_size if start is None else start

    def positioned(self, skip: int, start: int) -> Iterator[tuple[int, torch.Tensor | slice]]:
        """(the batch's place in the epoch, its indices), from `start` examples into the epoch on."""
        if self.batch_size >= self.n and (start == 0 or start >= self.n):  # the full batch: its mean gradient
            if start == 0:  # does not depend on the order: a view of the whole set, not a 60,000-row gather
                yield 0, slice(None)
            return
        perm = torch.randperm(self.n, generator=self.generator, device=self.generator.device)
        position = skip
        while start < self.n:
            end = start + self.batch_size
            if end > self.n and self.drop_last:
                return
            yield position, perm[start:end]
            start, position = end, position + 1


class SeededBatch(list):
    """A batch's indices, with the seed its examples are fetched under."""

    def __init__(self, indices, seed: int):
        super().__init__(indices)
        self.seed = seed


class IndexLists(ShuffledBatches):
    """The same batches as SeededBatch lists: a DataLoader's batch_sampler over a Dataset. Each epoch draws
    one seed from the order generator; a batch's seed is that plus its place in the epoch."""

    def __iter__(self):
        self.epoch_state = self.generator.get_state()
        taken = self.taken()
        epoch_seed = int(torch.randint(2**62, (), generator=self.generator))
        for position, index in self.positioned(*taken):
            yield SeededBatch(range(self.n) if isinstance(index, slice) else index.tolist(), epoch_seed + position)


def order_of(loader: DataLoader) -> ShuffledBatches:
    """The sampler that orders a training loader's batches."""
    return loader.batch_sampler if isinstance(loader.batch_sampler, ShuffledBatches) else loader.sampler


@contextmanager
def kept_torch_stream():
    """Leave torch's CPU random stream (dropout's) as it was."""
    saved = torch.default_generator.get_state()
    try:
        yield
    finally:
        torch.default_generator.set_state(saved)


def seed_streams(seed: int) -> None:
    """Seed torch's CPU stream, Python's and numpy's (a few microseconds; torch.manual_seed would also seed
    every CUDA device, a quarter of a millisecond)."""
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class SeededItems(Dataset):
    """Fetches a SeededBatch with torch, `random` and numpy seeded from it. In the training process (no
    DataLoader workers) torch's stream is kept as it was, so dropout draws the same numbers whatever the
    number of workers; Python's and numpy's are left seeded from the last batch (keeping numpy's costs
    0.2 ms a batch), deterministic all the same, and saved in checkpoints."""

    def __init__(self, dataset: Dataset, in_workers: bool):
        self.dataset, self.in_workers = dataset, in_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]

    def __getitems__(self, batch: SeededBatch) -> list:
        if self.in_workers:
            return self.fetch(batch)
        with kept_torch_stream():
            return self.fetch(batch)

    def fetch(self, batch: SeededBatch) -> list:
        seed_streams(batch.seed)
        return [self.dataset[i] for i in batch]


class InOrder(Sampler):
    """Evaluation batches in order, each seeded by its place: the same examples every evaluation."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        for position, start in enumerate(range(0, self.n, self.batch_size)):
            yield SeededBatch(range(start, min(start + self.batch_size, self.n)), position)


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


class DatasetSplit:
    """A map-style Dataset, served through DataLoader workers."""

    def __init__(self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self._eval_loader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    device = torch.device("cpu")
    nbytes = 0  # never moved to a device as a whole

    def take(self, index: torch.Tensor, seed: int = 0) -> Batch:
        return default_collate(SeededItems(self.dataset, False).__getitems__(SeededBatch(index.tolist(), seed)))

    def head(self, n: int) -> DatasetSplit:
        return DatasetSplit(Subset(self.dataset, range(min(n, len(self.dataset)))), self.num_workers, self.pin_memory)

    def select(self, index: torch.Tensor) -> DatasetSplit:
        return DatasetSplit(Subset(self.dataset, index.tolist()), self.num_workers, self.pin_memory)

    def _loader(self, batches: Sampler) -> DataLoader:
        return DataLoader(SeededItems(self.dataset, self.num_workers > 0), batch_sampler=batches,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(0))  # not the global stream: dropout's

    def batches(self, batch_size: int) -> Iterator[Batch]:
        if self._eval_loader is None or self._eval_loader.batch_sampler.batch_size != batch_size:
            self._eval_loader = self._loader(InOrder(len(self.dataset), batch_size))  # kept: its workers persist
        return iter(self._eval_loader)

    def loader(self, batch_size: int, drop_last: bool, seed: int) -> DataLoader:
        n = len(self.dataset)
        return self._loader(IndexLists(n, min(batch_size, n), drop_last, torch.Generator().manual_seed(seed)))

    def to(self, device: torch.device) -> DatasetSplit:
        return DatasetSplit(self.dataset, self.num_workers, device.type == "cuda")
