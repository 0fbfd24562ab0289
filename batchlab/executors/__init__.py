"""Where a sweep's trials run: one after another in this process (Sequential), at once in local worker
processes (ProcessPool, `--workers`), or as tasks of a Dask cluster (`--executor dask`, or a dask.distributed
Client). The trial function, the planning, the records and the progress are the same for all (see base.py)."""

from __future__ import annotations

from batchlab.errors import ConfigError
from batchlab.executors.base import DataCache, Executor, Job, run_job
from batchlab.executors.local import Sequential
from batchlab.executors.pool import ProcessPool

EXECUTORS = ("local", "dask")
DASK_ONLY = "--scheduler, --gpus-per-trial and --retries (scheduler=, gpus_per_trial=, retries=)"


def make_executor(executor=None, *, workers: int | None = None, gpus: list[int] | None = None,
                  scheduler: str | None = None, gpus_per_trial: float | None = None,
                  retries: int | None = None) -> Executor:
    """The executor a sweep names: "local" (one after another here, or `workers` processes, or one process per
    GPU id in `gpus`), "dask" (the cluster at `scheduler`, else a LocalCluster of `workers` processes on
    127.0.0.1), a dask.distributed Client, or an Executor as it is."""
    if isinstance(executor, Executor):
        return executor
    client = executor if is_dask_client(executor) else None
    if executor in (None, "local"):
        if scheduler or gpus_per_trial or retries is not None:
            raise ConfigError(f"{DASK_ONLY} are for the dask executor (--executor dask)")
        if gpus or (workers or 1) > 1:
            return ProcessPool(workers or 1, gpus)
        return Sequential()
    if executor != "dask" and client is None:
        raise ConfigError(f"executor {executor!r}: choose from {', '.join(EXECUTORS)}, or pass a dask.distributed "
                          "Client")
    if gpus:
        raise ConfigError("--gpus picks this machine's GPUs for --workers; on Dask ask each trial for GPUs with "
                          "--gpus-per-trial")
    if client is not None and (scheduler or workers):
        raise ConfigError("a Dask client names its cluster already: no --scheduler or --workers with it")
    if scheduler and workers:
        raise ConfigError("--workers sizes the local Dask cluster; the cluster at --scheduler has its own workers")
    if retries is not None and retries < 0:
        raise ConfigError(f"--retries {retries}: must be 0 or more")
    if gpus_per_trial is not None and gpus_per_trial <= 0:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial:g}: must be more than 0")
    try:
        from batchlab.executors.dask import DaskExecutor
    except ImportError:
        raise ConfigError("--executor dask needs Dask: pip install 'batchlab[dask]'") from None
    return DaskExecutor(client, scheduler, workers, gpus_per_trial, 1 if retries is None else retries)


def is_dask_client(obj) -> bool:
    """A dask.distributed Client, recognised without importing Dask (an optional extra)."""
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "submit")


__all__ = ["DataCache", "Executor", "Job", "ProcessPool", "Sequential", "make_executor", "run_job"]
