"""The search itself, pure: doubling then bisection over tries that fit or not, and what "does not fit" means.

The search (Lightning's BatchSizeFinder "binsearch" mode) doubles the batch until a try runs out of memory
or reaches the cap, then bisects to a gap of one. Only out-of-memory errors mean "does not fit"; any other
error is a bug in the model or config and is raised, as accelerate's `should_reduce_batch_size` and
Lightning's `is_oom_error` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from batchlab.errors import BatchlabError

OOM_MARKERS = (
    "CUDA out of memory",  # torch.OutOfMemoryError from the caching allocator
    "CUDA error: out of memory",  # a cudaMalloc outside the caching allocator
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS could not allocate its workspace
    "CUDNN_STATUS_ALLOC_FAILED",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED",  # cuDNN refusing an oversize batch (pytorch#4107), as Lightning
    "DefaultCPUAllocator: can't allocate memory",  # torch's CPU allocator (in the child: RLIMIT_DATA reached)
)
# oneDNN (CPU convolutions) reports a failed allocation of its JIT code or scratchpad only as this. It counts as
# out of memory only under the CPU limit, after the warm-up step (run without the limit) has created every kind
# of primitive the model uses: a primitive that cannot be created at all fails there, and is raised.
CPU_LIMITED_OOM_MARKERS = ("could not create a primitive",)
OOM_TYPES = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)  # torch < 2.5: cuda's


@dataclass
class Try:
    batch_size: int
    fits: bool
    peak_memory_bytes: int | None  # above the baseline; None when the try ran out of memory
    samples_per_second: float | None  # over the timed steps; None when it ran out of memory
    error: str | None  # why it does not fit: the out-of-memory message, or the limit its peak went over


@dataclass
class MaxBatch:
    batch_size: int  # the largest batch size that fitted
    tries: list[Try]  # in the order run: doubling, then bisection
    device: str  # "cpu", "cuda:0", ...
    limit_bytes: int | None  # memory above the baseline a try could use; None: CUDA with no memory_limit (the card)
    max_batch: int | None = None  # the cap of the search; batch_size == max_batch: the cap itself fitted
    baseline_bytes: int | None = None  # held before the tries (CPU: the child's RSS; CUDA: allocated memory)
    steps: int = 3  # optimizer steps per try, the first one untimed
    context: int | None = None  # sequence tasks: tokens per example (a batch holds batch_size x context tokens)


class NoBatchFits(BatchlabError):
    """Not even batch size 1 fits. `tries` holds what was tried."""

    def __init__(self, message: str, tries: list[Try] | None = None):
        super().__init__(message)
        self.tries = list(tries or [])


def is_oom(error: BaseException, cpu_limited: bool = False) -> bool:
    """True for an out-of-memory error, the only kind that means "does not fit"; cpu_limited: under RLIMIT_DATA."""
    if isinstance(error, OOM_TYPES):
        return True
    if not isinstance(error, RuntimeError):
        return False
    markers = OOM_MARKERS + (CPU_LIMITED_OOM_MARKERS if cpu_limited else ())
    return any(m in str(error) for m in markers)


def oom_message(error: BaseException) -> str:
    """One line: the allocator's message without torch's `[enforce fail at ...]` prefix or CUDA's advice."""
    if isinstance(error, MemoryError):
        return f"MemoryError: {error}" if str(error) else "MemoryError"
    text = str(error)
    for marker in OOM_MARKERS + CPU_LIMITED_OOM_MARKERS:
        at = text.find(marker)
        if at >= 0:
            text = text[at:]
            break
    line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def search(run_try: Callable[[int], Try], start: int, max_batch: int) -> tuple[int, list[Try]]:
    """Double from `start` until a try does not fit or `max_batch` is reached, then bisect to a gap of 1.

    Returns (the largest batch size that fitted, 0 if none did; the tries in order). A `start` that does not
    fit bisects between 0 and `start`. Every try lies strictly between the largest fit and the smallest
    misfit so far, so every success is below every failure, whatever the tries return.
    """
    fit, misfit = 0, None  # the largest batch size known to fit (0: none yet), the smallest known not to
    b = min(start, max_batch)
    tries: list[Try] = []
    while True:
        t = run_try(b)
        tries.append(t)
        if t.fits:
            fit = b
        else:
            misfit = b
        if misfit is None:
            if b >= max_batch:
                break
            b = min(2 * b, max_batch)
        elif misfit - fit <= 1:
            break
        else:
            b = (fit + misfit) // 2
    return fit, tries
