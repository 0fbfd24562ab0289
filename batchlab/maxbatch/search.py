"""The largest batch size that fits: real training steps at growing batch sizes until memory runs out.

The search (Lightning's BatchSizeFinder "binsearch" mode) doubles the batch until a try runs out of memory
or reaches the cap, then bisects to a gap of one. Only out-of-memory errors mean "does not fit"; any other
error is a bug in the model or config and is raised, as accelerate's `should_reduce_batch_size` and
Lightning's `is_oom_error` do. Every try runs in one child process (batchlab.maxbatch.child), which keeps
the caller's memory clean and, on CPU, makes running out of memory real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from batchlab.errors import BatchlabError, ConfigError
from batchlab.memory import available_memory, mib

DEFAULT_CPU_FRACTION = 0.5  # of the memory available now: a search should neither swap nor wake the OOM killer

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


def find_max_batch(experiment, memory_limit: int | None = None, start: int = 1, max_batch: int | None = None,
                   steps: int = 3, code_dirs: tuple[str, ...] = ()) -> MaxBatch:
    """The largest batch size at which the experiment's model trains without running out of memory.

    experiment: its dataset, model, loss, optimizer, lr, precision, device, threads and seed are used, its
        batch_size and sweep are not (give a trial's config to search one point of a sweep).
    memory_limit: bytes above the baseline (what the child holds after loading the data, building the model and
        one warm-up step) a try may use. Default: on CPU half of the memory available now; on CUDA the card.
    start: the first batch size tried (at most max_batch).
    max_batch: the largest batch size tried. Default: the training set size, since training turns a larger
        batch into the full batch ("the cap fits": every batch size this data set allows fits).
    steps: optimizer steps per try, >= 2: one warm-up, then the timed ones (Lightning's steps_per_trial is 3).
    code_dirs: directories the child makes importable, for a model or data set named by import path.

    Raises ConfigError for an impossible argument, NoBatchFits when not even batch size 1 fits, BatchlabError
    when the search process dies, and any error a try raises that is not an out-of-memory error, as raised.
    """
    from batchlab.maxbatch.child import run_in_child
    from batchlab.train import resolve_device

    if start < 1:
        raise ConfigError(f"start: the first batch size must be at least 1, got {start}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max batch: must be at least 1, got {max_batch}")
    if steps < 2:
        raise ConfigError(f"steps: each try needs at least 2 steps (a warm-up, then timed ones), got {steps}")
    if memory_limit is not None and memory_limit <= 0:
        raise ConfigError(f"memory limit: must be more than 0 bytes, got {memory_limit}")
    device = resolve_device(experiment.device)
    if device.type == "cpu" and memory_limit is None:
        available = available_memory()
        if available is None:
            raise ConfigError("cannot read the available memory from /proc/meminfo: give a memory limit")
        memory_limit = int(available * DEFAULT_CPU_FRACTION)
    job = {"experiment": experiment, "device": str(device), "memory_limit": memory_limit, "start": start,
           "max_batch": max_batch, "steps": steps, "code_dirs": tuple(code_dirs)}
    result = run_in_child(job)
    tries = [Try(**t) for t in result["tries"]]
    if result["batch_size"] == 0:
        first = next(t for t in tries if t.batch_size == 1)
        limit = f"the limit of {mib(result['limit_bytes'])}" if result["limit_bytes"] else "the device's memory"
        raise NoBatchFits(f"not even batch size 1 fits in {limit} on {result['device']} (above the "
                          f"{mib(result['baseline_bytes'])} held after loading the data and building the model): "
                          f"{first.error}", tries)
    return MaxBatch(batch_size=result["batch_size"], tries=tries, device=result["device"],
                    limit_bytes=result["limit_bytes"], max_batch=result["max_batch"],
                    baseline_bytes=result["baseline_bytes"], steps=steps)
