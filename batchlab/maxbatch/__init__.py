"""`batchlab max-batch`: the largest batch size that trains without running out of memory.

Every try runs in one child process (child.py), which keeps the caller's memory clean and, on CPU, makes
running out of memory real; search.py is the search itself, pure; Linux memory accounting is batchlab.memory.
"""

from __future__ import annotations

from batchlab import registry
from batchlab.errors import ConfigError
from batchlab.machine import resolve_device
from batchlab.maxbatch.child import run_in_child
from batchlab.maxbatch.search import MaxBatch, NoBatchFits, Try, is_oom, oom_message, search
from batchlab.memory import available_memory, mib

__all__ = ["MaxBatch", "NoBatchFits", "Try", "available_memory", "find_max_batch", "is_oom", "mib", "oom_message",
           "search"]

DEFAULT_CPU_FRACTION = 0.5  # of the memory available now: a search should neither swap nor wake the OOM killer


def find_max_batch(experiment, memory_limit: int | None = None, start: int = 1, max_batch: int | None = None,
                   steps: int = 3, code_dirs: tuple[str, ...] = ()) -> MaxBatch:
    """The largest batch size at which the experiment's model trains without running out of memory.

    experiment: its dataset, model, loss, optimizer, lr, precision, device, threads and seed are used, its
        batch_size and sweep are not (give a trial's config to search one point of a sweep).
    memory_limit: bytes above the baseline (what the child holds after loading the data, building the model and
        one warm-up step) a try may use. Default: on CPU half of the memory available now; on CUDA the card.
    start: the first batch size tried (at most max_batch).
    max_batch: the largest batch size tried, at most the training set size (the default), since training turns
        a larger batch into the full batch ("the cap fits": every batch size this data set allows fits).
    steps: optimizer steps per try, >= 2: one warm-up, then the timed ones (Lightning's steps_per_trial is 3).
    code_dirs: directories the child makes importable, for a model or data set named by import path.

    Raises ConfigError for an impossible argument, NoBatchFits when not even batch size 1 fits, BatchlabError
    when the search process dies, and any error a try raises that is not an out-of-memory error, as raised.
    """

    if start < 1:
        raise ConfigError(f"start: the first batch size must be at least 1, got {start}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max batch: must be at least 1, got {max_batch}")
    if steps < 2:
        raise ConfigError(f"steps: each try needs at least 2 steps (a warm-up, then timed ones), got {steps}")
    if memory_limit is not None and memory_limit <= 0:
        raise ConfigError(f"memory limit: must be more than 0 bytes, got {memory_limit}")
    from batchlab.train import imported_names

    # the spawned child imports each by name (a script's __main__ too, which it runs again)
    registry.check_importable(imported_names(experiment), "the search's child process", main=False)
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
                    baseline_bytes=result["baseline_bytes"], steps=steps, context=result["context"])
