"""Memory accounting on Linux: what a process holds and held at most, what is free, and the limit that makes
running out of memory a real allocation failure (the max-batch search on CPU). CUDA has its allocator's
own statistics; `Peak` measures a trial's training peak either way."""

from __future__ import annotations

import math
import resource
from contextlib import contextmanager

STATUS_KEYS = ("VmData", "VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def proc_status() -> dict[str, int]:
    """VmData, VmRSS, VmHWM, RssAnon, RssFile and RssShmem of this process, in bytes (Linux >= 4.5)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_KEYS:
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def available_memory() -> int | None:
    """Bytes that can be allocated now: MemAvailable, or the cgroup's headroom when that is lower."""
    found = []
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    # cgroup v2, then v1; its usage counts file cache, of which the inactive part is reclaimable
    for limit_file, usage_file, stat_file, inactive_key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
             "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        limit, usage = (_read(limit_file) or "").strip(), (_read(usage_file) or "").strip()
        if not (limit.isdigit() and usage.isdigit()) or int(limit) >= 2**60:  # "max" or huge: no limit
            continue
        inactive = 0
        for line in (_read(stat_file) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key and value.strip().isdigit():
                inactive = int(value)
        found.append(max(0, int(limit) - int(usage) + inactive))
    return min(found) if found else None


def fixed_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Make glibc give every block of nbytes or more its own mmap, unmapped when freed (mallopt(3)).

    By default glibc raises this threshold (up to 32 MiB) each time a large block is freed; later tensors
    then come from the heap and stay mapped there when freed, and the process only grows from try to try.
    Setting it fixes it. False where the C library is not glibc.
    """
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, nbytes))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def limit_data(soft: int) -> None:
    """Set RLIMIT_DATA anew before each try, from what the process maps now: memory a library keeps
    after an earlier try (a kernel cache, an allocator pool) is not this try's, and must not shrink its room.

    Since Linux 4.7 RLIMIT_DATA counts private writable mappings, where torch's CPU tensors live, so an
    oversize batch makes torch's allocator fail ("DefaultCPUAllocator: can't allocate memory"), an ordinary
    RuntimeError, instead of the kernel's OOM killer ending the process. It counts memory mapped, which for
    tensors is memory used; a library that maps more than it touches counts in full: the limit errs safe.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def malloc_trim() -> bool:
    """Give the heap's free memory back to the system (glibc malloc_trim(3)), so RSS is what is in use."""
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


class Peak:
    """A trial's peak memory in training: the most it held above what the process held when it started, over
    its training alone. Evaluation, noise measurement and checkpoint writing run inside `excluded()`, which
    closes the segment of training before them and opens a new one after, so that a large evaluation batch
    (or B_big) never passes for what training needs and batch sizes compare.

    CUDA: torch.cuda.max_memory_allocated in each segment (the statistics reset as it opens), the data on the
    device included.
    CPU (Linux): the RSS high-water mark in each segment (VmHWM, reset as it opens) above the RSS at the
    trial's start, measured after the heap's free memory went back to the system (malloc_trim), so that
    memory an earlier trial freed but the process kept neither hides training's need nor counts in it. It
    covers the model, optimizer state, activations and whatever else training allocated; the data set,
    loaded before, is not in it. None off Linux. What an excluded block leaves resident (freed memory the
    heap keeps: an evaluation batch larger than training's) is subtracted from the segments after it, and the
    heap is trimmed once more only where asked (`release`: after the evaluation at step 0, so that the first
    segment of training starts clean and measures training's need in full). Not after every evaluation: the
    steps after a trim run slower while the heap grows back (measured: training 40-55% slower with a trim
    at each of fashion-mnist's evaluations every 0.05 epochs), and that would be on the training clock.
    """

    def __init__(self, device):
        self.device, self.most, self.kept = device, 0, 0
        self.start = 0 if device.type == "cuda" else None
        if device.type != "cuda":
            malloc_trim()
            try:
                self.start = proc_status()["VmRSS"]
            except (OSError, KeyError):
                return
        self._open()

    def _open(self) -> None:
        """Start a segment of training: its high-water mark from now."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            reset_peak_rss()
        except OSError:
            self.start = None

    def _segment(self) -> int | None:
        """The most the current segment held above the start, less what excluded blocks left resident."""
        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.start
        if self.start is None:
            return None
        try:
            return max(0, proc_status()["VmHWM"] - self.start - self.kept)
        except (OSError, KeyError):
            return None

    @contextmanager
    def excluded(self, release: bool = False):
        """Run what is not training (an evaluation, a noise measurement) outside the measured segments;
        `release`: give the heap's free memory back to the system after it (CPU)."""
        if self.start is None:
            yield
            return
        self.most = max(self.most, self._segment() or 0)
        cpu = self.device.type != "cuda"
        before = proc_status().get("VmRSS", 0) if cpu else 0
        try:
            yield
        finally:
            if cpu and release:
                malloc_trim()
                self.kept = 0
            elif cpu:
                self.kept += max(0, proc_status().get("VmRSS", 0) - before)
            self._open()

    def bytes(self) -> int | None:
        if self.start is None:
            return None
        segment = self._segment()
        return None if segment is None else max(self.most, segment)


def mib(n: float | None) -> str:
    """Bytes as MiB, or KiB under a tenth of a MiB (a small model's peak printed as '0.0 MiB' said nothing)."""
    if n is None:
        return "?"
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 / 10 else f"{n / 2**10:,.1f} KiB"


SIZE_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1, "": 1}


def parse_size(text: str, most: int) -> int:
    """'512MiB', '2GiB', '1.5GB' or plain bytes, from 1 byte to `most`; ValueError saying what is expected (the
    caller names the option or argument it came from)."""
    number = text.strip().rstrip("BbIiKkMmGg")
    unit = text.strip()[len(number):].lower()
    try:
        size = float(number) * SIZE_UNITS[unit]
    except (ValueError, KeyError):
        size = math.nan
    if 1 <= size <= most:  # NaN and inf too
        return int(size)
    raise ValueError(f"expected a size such as 512MiB, 2GiB or 1000000, from 1 byte to {most:,}")
