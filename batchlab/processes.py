"""How batchlab's own processes live and die: a child dies with its parent; SIGTERM is handled like Ctrl-C.

Used by the trial pool's workers (executors/pool.py), the max-batch search's child, the Dask executor's own
cluster and the command line.
"""

from __future__ import annotations

import os
import signal
import threading
import time

WATCHDOG_SECONDS = 1.0  # where prctl is missing: how often a child checks that its parent still exists


def die_with_parent(parent_pid: int | None = None) -> None:
    """End this process when its parent dies, so that no child outlives a killed parent (kill -9 included).

    Linux: the kernel sends SIGKILL (prctl PR_SET_PDEATHSIG). Elsewhere a daemon thread watches the parent.
    `parent_pid`, when given, closes the race of a parent that died before this call: it is checked after.
    """
    parent = parent_pid or os.getppid()
    try:
        import ctypes

        if ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL) != 0:  # 1: PR_SET_PDEATHSIG
            raise OSError("prctl failed")
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="batchlab-parent-watch").start()
    if os.getppid() != parent:
        os._exit(1)  # the parent is already gone


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCHDOG_SECONDS)
    os._exit(1)


def release_semaphore_names(*holders) -> None:
    """Unlink now the names of the multiprocessing semaphores that `holders` (queues, locks) hold, once every
    process that uses them has opened them: a semaphore lives on while open, only its name goes. A named
    semaphore is otherwise unlinked as its holder is collected or the process exits, which a process killed with
    SIGKILL never does: multiprocessing's resource tracker then unlinks it, reporting "There appear to be N
    leaked semaphore objects", or, killed too, leaves it in /dev/shm. The release at exit is cancelled with the
    name; a name released already is left alone. Pythons without these internals keep the names."""
    from multiprocessing import synchronize, util

    names = {v._semlock.name for h in holders if h is not None for v in vars(h).values()
             if isinstance(v, synchronize.SemLock)}
    try:
        pending = [f for f in list(util._finalizer_registry.values())
                   if f._callback is synchronize.SemLock._cleanup and f._args[0] in names]
    except AttributeError:
        return
    for finalizer in pending:
        name = finalizer._args[0]
        finalizer.cancel()
        synchronize.SemLock._cleanup(name)  # unlinks the name, and unregisters it from the tracker


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler stopping the job, or the driver stopping its workers) is handled like Ctrl-C:
    the running trial is recorded as interrupted and the sweep stops."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
