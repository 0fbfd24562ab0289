"""The machine a trial runs on: choosing the device, timing on it honestly, and recording what it was."""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone

import torch

from batchlab.errors import ConfigError, counted
from batchlab.version import __version__


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`key`: the config key an error names (sweep.device where an axis sets it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name!r} asked for, but CUDA is not available here (torch {torch.__version__}); "
                          "use device: auto or cpu")
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ConfigError(f"{key}: {name!r} asked for, but this machine has {counted(count, 'CUDA device')} "
                          f"({have}); use one of those, or cuda (the current one)")
    return device


class Clock:
    """Accumulates training seconds; synchronises the device before every reading."""

    def __init__(self, device: torch.device, total: float = 0.0):
        self.device, self.total, self.since = device, total, None  # total: seconds before (a resumed trial's)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self.sync()
        self.since = time.perf_counter()

    def stop(self) -> float:
        self.sync()
        self.total += time.perf_counter() - self.since
        return self.total

    def peek(self) -> float:
        """The seconds so far without a sync: on CUDA never more than stop() would say."""
        return self.total + (time.perf_counter() - self.since)


def machine_facts(device: torch.device) -> dict:
    """What the numbers were measured on: recorded in every summary."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "batchlab_version": __version__,
            "python_version": platform.python_version(), "platform": platform.platform()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
