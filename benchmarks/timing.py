"""What the step-timing benchmarks share: busy processes beside a measurement, and a config's grid as the
subjects a sweep times after its trials."""

from __future__ import annotations

import multiprocessing
from contextlib import contextmanager
from typing import Iterator

import torch

from batchlab import api, steptime
from batchlab.machine import resolve_device


def _busy() -> None:
    while True:
        pass


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """`n` processes spinning on a core each for the duration, as another user of the machine would."""
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(n)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        for hog in hogs:
            hog.terminate()


def grid_subjects(config: str, scratch: str) -> tuple[list[steptime.Subject], torch.device]:
    """The subjects a sweep of `config` times (one per batch size and step cost), and its device; the torch
    thread count set as the config's. `scratch`: where the plan would write (nothing is written)."""
    subjects = steptime.subjects(api.plan_sweep(config, scratch).trials)
    cfg = subjects[0].config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return subjects, resolve_device(cfg.device)
