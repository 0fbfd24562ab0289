"""Find the largest batch size that fits: real training steps at growing batch sizes until memory runs out.

The search (Lightning's BatchSizeFinder "binsearch" mode) doubles the batch from `start` until a try runs
out of memory or reaches `max_batch`, then bisects between the largest batch that fitted and the smallest
that did not, down to a gap of 1: the answer `b` fitted and `b + 1` was tried and did not, unless `b` is
`max_batch`. Each try is `steps` real optimizer steps (forward, backward, step) of the configured model,
optimizer, lr and precision (autocast bf16/fp16 on CUDA, as `train` does), from the same initial weights;
the first step is a warm-up, the others are timed with a device sync. Batches are drawn from the
training set with replacement: real shapes, dtypes, values and labels, at any batch size.

Only out-of-memory errors mean "does not fit": CUDA OOM, cuBLAS/cuDNN allocation failures, cuDNN's
NOT_SUPPORTED for oversize inputs (as Lightning), torch's "DefaultCPUAllocator: can't allocate memory",
Python's MemoryError, and oneDNN's "could not create a primitive" under the CPU limit (see
CPU_LIMITED_OOM_MARKERS). Any other error is a bug in the model or the config and is raised, as
accelerate's `should_reduce_batch_size` and Lightning's `is_oom_error` do.

The whole search runs in ONE child process, started with multiprocessing's "spawn" (a forked child would
inherit libgomp's thread pool in a broken state). That keeps the caller's memory clean, and on CPU it is
what makes the out-of-memory real rather than estimated: after loading the data, building the model and
one warm-up step, the child sets its own RLIMIT_DATA before each try to (its VmData then + the limit), so
what a library kept from an earlier try does not shrink the next one's room. Since Linux 4.7
RLIMIT_DATA counts private writable mappings, where torch's CPU tensors live (glibc gives large blocks their
own mmap), so an oversize batch makes torch's allocator fail with "DefaultCPUAllocator: can't allocate
memory", an ordinary RuntimeError caught here, instead of the kernel's OOM killer ending the process. What
the limit counts is memory *mapped*, which for tensors is memory used; a library that maps more than it
touches counts in full, so the limit errs on the safe side. Three settings keep every try's room the same:
- glibc's mmap threshold is fixed (mallopt), else it rises after large frees and freed tensors stay mapped
  in the heap, so the process only grows from try to try;
- MKL_DISABLE_FAST_MM=1, else MKL keeps the buffers of the largest matrix product seen so far;
- oneDNN's and ideep's primitive caches are capped at 32 entries, else every new batch size adds JIT code
  (a few MiB) for good.
The last two are read by MKL and oneDNN when torch loads, before any code of ours runs in the child, so
they are set in os.environ around the child's start (a value the user set wins) and restored at once.
They can make CPU throughput a little lower than in a sweep; memory is what this measures.
On CUDA a `memory_limit` is made real with `torch.cuda.set_per_process_memory_fraction` (the caching
allocator then raises a real OOM), and a try whose measured peak passes the limit does not fit either.

Memory figures are above the *baseline*: what the child holds after loading the data, building the model
and one warm-up step at batch 2 (so thread pools, lazily loaded kernels and allocator pools are in it), all
freed but the model. So a try's peak counts the batch, activations, gradients and optimizer state: what a
training run at that batch needs beyond the model and data. `MaxBatch.baseline_bytes` gives the baseline.
- CPU: the RSS high-water mark is reset before the try by writing "5" to /proc/self/clear_refs; the peak is
  VmHWM after the try less the file-backed pages at its start (program code: neither batch memory nor
  under RLIMIT_DATA) less the baseline's anonymous memory (RssAnon).
- CUDA: torch.cuda.max_memory_allocated during the try (after reset_peak_memory_stats) less
  torch.cuda.memory_allocated at the baseline.
A try that ran out of memory has no peak (None): it never finished. A small try can show 0: it fitted
in memory the process already held.

Defaults:
- memory_limit: on CPU, half of the memory available when the search starts (MemAvailable in
  /proc/meminfo, or the cgroup's limit less its usage net of reclaimable file cache when that is lower):
  a search should neither swap nor wake the OOM killer, and the rest of the machine keeps running. On CUDA
  none: the card is the limit.
- max_batch: the training set size. `train` turns a larger batch into the full batch, so no sweep runs a
  batch beyond it, and "the cap fits" means every batch size this data set allows fits. A larger
  `max_batch` looks beyond it.
- steps: 3, one warm-up and two timed, as Lightning's steps_per_trial default.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import resource
import signal
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from batchlab.config import Experiment
from batchlab.errors import BatchlabError, ConfigError

DEFAULT_CPU_FRACTION = 0.5  # of the memory available when the search starts: the default CPU memory_limit
WARMUP_BATCH = 2  # the untimed, unrecorded step before the baseline is taken

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

# read by MKL and oneDNN when torch loads: set for the child's start, see the module docstring
CPU_CHILD_ENV = {"MKL_DISABLE_FAST_MM": "1", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32", "LRU_CACHE_CAPACITY": "32"}


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


OOM_TYPES = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)  # torch < 2.5: cuda's


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


# ---------------------------------------------------------------- the search (pure: tested on its own)

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


# ---------------------------------------------------------------- memory, on Linux

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


def mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------- the entry point

def find_max_batch(experiment: Experiment, memory_limit: int | None = None, start: int = 1,
                   max_batch: int | None = None, steps: int = 3, *,
                   model_builder: Callable | None = None) -> MaxBatch:
    """The largest batch size at which the experiment's model trains without running out of memory.

    experiment: its dataset, model, optimizer, lr, precision, device, threads and seed are used, its
        batch_size and sweep are not (give a trial's config to search one point of a sweep).
    memory_limit: bytes above the baseline a try may use (module docstring). Default: on CPU half of the
        memory available now; on CUDA none, the card's memory is the limit.
    start: the first batch size tried (at most max_batch).
    max_batch: the largest batch size tried. Default: the training set size (the full batch).
    steps: optimizer steps per try, >= 2: one warm-up, then the timed ones.
    model_builder: a picklable callable with build_model's signature (model config, input shape, number of
        classes) -> nn.Module, to search a model outside the registry. Default: batchlab.models.build_model.

    Raises ConfigError for an impossible argument, NoBatchFits when not even batch size 1 fits, BatchlabError
    when the search process dies, and any error a try raises that is not an out-of-memory error, as raised.
    """
    from batchlab.train import resolve_device

    if start < 1:
        raise ConfigError(f"start: the first batch size must be at least 1, got {start}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max batch: must be at least 1, got {max_batch}")
    if steps < 2:
        raise ConfigError(f"steps: each try needs at least 2 steps (a warm-up, then timed ones), got {steps}")
    if memory_limit is not None and memory_limit <= 0:
        raise ConfigError(f"memory limit: must be more than 0 bytes, got {memory_limit}")
    if model_builder is not None:
        try:
            pickle.dumps(model_builder)
        except Exception as e:
            raise TypeError(f"model_builder must be picklable, e.g. a module-level function: {e}") from None
    device = resolve_device(experiment.device)
    if device.type == "cpu" and memory_limit is None:
        available = available_memory()
        if available is None:
            raise ConfigError("cannot read the available memory from /proc/meminfo: give a memory limit")
        memory_limit = int(available * DEFAULT_CPU_FRACTION)
    job = {"experiment": experiment, "device": str(device), "memory_limit": memory_limit, "start": start,
           "max_batch": max_batch, "steps": steps, "model_builder": model_builder}
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


# ---------------------------------------------------------------- parent <-> child

class RemoteTraceback(Exception):
    """The child's traceback, as the `__cause__` of its error raised again in the parent."""

    def __str__(self) -> str:
        return self.args[0]


@contextmanager
def environment(values: dict[str, str]):
    """Set environment variables not already set, for a child started inside; restore them after."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_in_child(job: dict) -> dict:
    """Run `_child_main(job)` in one spawned process; return its result, or raise its error here."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, job), name="batchlab-max-batch", daemon=True)
    started, trying, tries = False, None, []
    try:
        with environment(CPU_CHILD_ENV if job["device"] == "cpu" else {}):
            process.start()
        sender.close()  # the child holds the only sending end now: its death is EOF here
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "started":
                started = True
            elif kind == "trying":
                trying = payload
            elif kind == "try":
                tries.append(payload)
                trying = None
            elif kind == "done":
                process.join()
                return payload
            elif kind == "error":
                process.join()
                raise _rebuild_error(*payload)
        process.join()
        if not started:
            raise BatchlabError(
                f"the max-batch search process could not start (exit code {process.exitcode}; its error is above). "
                "It is started with multiprocessing's 'spawn', which imports the main script again (a script "
                "calling find_max_batch needs its entry point under `if __name__ == '__main__':`) and every "
                "function it is given by module name (a model_builder must be importable)")
        raise BatchlabError(_death_message(process.exitcode, trying, tries, job["device"]))
    finally:
        receiver.close()
        sender.close()
        if process.pid is not None and process.is_alive():  # Ctrl-C or an error here: stop the child
            process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def _death_message(exitcode: int | None, trying: int | None, tries: list[dict], device: str) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            how += " (the system's out-of-memory killer does this: give a smaller memory limit)"
    else:
        how = f"exited with code {exitcode} and no result"
    where = f" while trying batch size {trying}" if trying is not None else ""
    so_far = ", ".join(f"{t['batch_size']} {'fits' if t['fits'] else 'does not fit'}" for t in tries)
    return f"the max-batch search process on {device} {how}{where}" + (f" (so far: {so_far})" if so_far else "")


def _rebuild_error(blob: bytes | None, summary: str, tb: str) -> BaseException:
    error = None
    if blob is not None:
        try:
            error = pickle.loads(blob)
        except Exception:
            error = None
    if not isinstance(error, BaseException):
        error = BatchlabError(f"the max-batch search failed: {summary}")
    error.__cause__ = RemoteTraceback(f"\n\nin the max-batch search process:\n{tb}")
    return error


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so no search outlives it."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main(conn, job: dict) -> None:
    _die_with_parent()
    try:
        conn.send(("started", os.getpid()))
        conn.send(("done", _child_search(conn, **job)))
    except BrokenPipeError:
        return  # the parent is gone: nobody to tell
    except BaseException as e:  # noqa: BLE001 -- every error goes to the parent, which raises it
        tb = traceback.format_exc()
        try:
            blob = pickle.dumps(e)
            pickle.loads(blob)  # one that pickles but cannot be rebuilt goes as text
        except Exception:
            blob = None
        try:
            conn.send(("error", (blob, f"{type(e).__name__}: {e}", tb)))
        except OSError:
            pass
    finally:
        conn.close()


# ---------------------------------------------------------------- in the child

@dataclass
class _Setup:
    """What every try uses, made once in the child."""
    cfg: Experiment
    device: torch.device
    model: torch.nn.Module
    initial: dict  # the model's initial weights: every try starts from them
    x: torch.Tensor  # the training set, on the device where the sweep would keep it there
    y: torch.Tensor
    task: str
    steps: int
    generator: torch.Generator
    baseline: dict = field(default_factory=dict)
    limit: int | None = None


def _child_search(conn, experiment: Experiment, device: str, memory_limit: int | None, start: int,
                  max_batch: int | None, steps: int, model_builder: Callable | None) -> dict:
    from batchlab.data import load_dataset
    from batchlab.models import build_model
    from batchlab.run import fits

    cfg, dev = experiment, torch.device(device)
    if dev.type == "cpu":
        fixed_mmap_threshold()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if dev.type == "cuda":
        if dev.index is None:  # "auto" and "cuda" mean the current device: name it, for the memory calls
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    data = load_dataset(cfg.dataset, cfg.seed)
    if dev.type == "cuda" and fits(data, dev):  # where the sweep keeps it, so that the baselines agree
        data = data.to(dev)
    torch.manual_seed(cfg.seed)
    if model_builder is None:
        try:
            model = build_model(cfg.model, data.input_shape, data.num_classes)
        except ValueError as e:  # the model does not suit the data set (lenet5 on non-images)
            raise ConfigError(f"model: {e}") from None
    else:
        model = model_builder(cfg.model, data.input_shape, data.num_classes)
    model = model.to(dev)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    generator = torch.Generator(device=data.x_train.device).manual_seed(cfg.seed)
    s = _Setup(cfg, dev, model, initial, data.x_train, data.y_train, data.task, steps, generator)
    cap = max_batch if max_batch is not None else len(data.x_train)

    # a step before the baseline, without a limit: thread pools, lazily loaded kernels and allocator pools
    # then exist, and a model that cannot train at all fails here, with its own error
    _train_steps(s, min(WARMUP_BATCH, cap), 1)
    _free(dev)
    gc.freeze()  # all that exists now stays: each try's collection only looks at what is new

    if dev.type == "cuda":
        s.baseline = {"allocated": torch.cuda.memory_allocated(dev)}
        baseline_bytes = s.baseline["allocated"]
        if memory_limit is not None:  # the caching allocator then cannot reserve past baseline + limit
            total = torch.cuda.get_device_properties(dev).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, (baseline_bytes + memory_limit) / total), dev)
    else:
        s.baseline = proc_status()
        baseline_bytes = s.baseline["VmRSS"]
    s.limit = memory_limit

    def run_try(b: int) -> Try:
        conn.send(("trying", b))
        t = _one_try(s, b)
        conn.send(("try", asdict(t)))
        return t

    best, tries = search(run_try, start, cap)
    return {"batch_size": best, "tries": [asdict(t) for t in tries], "device": str(dev),
            "limit_bytes": memory_limit, "max_batch": cap, "baseline_bytes": baseline_bytes}


def _batch(s: _Setup, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """b training examples drawn with replacement, on the device."""
    index = torch.randint(len(s.x), (b,), generator=s.generator, device=s.x.device)
    return s.x[index].to(s.device, non_blocking=True), s.y[index].to(s.device, non_blocking=True)


def _train_steps(s: _Setup, b: int, steps: int) -> float:
    """`steps` optimizer steps at batch size b from the initial weights, as `train` takes them.

    Returns the seconds of all steps but the first.
    """
    from batchlab.train import Clock, loss_fn, make_optimizer

    cfg, device = s.cfg, s.device
    x, y = _batch(s, b)
    with torch.no_grad():
        for name, value in s.model.state_dict().items():
            value.copy_(s.initial[name])
    s.model.train()
    optimizer = make_optimizer(cfg, s.model.parameters())
    criterion = loss_fn(s.task)
    use_amp = cfg.precision != "fp32" and device.type == "cuda"
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and cfg.precision == "fp16")
    clock = Clock(device)
    for step in range(steps):
        if step == 1:
            clock.start()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            loss = criterion(s.model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        del loss
    seconds = clock.stop() if steps > 1 else 0.0
    s.model.zero_grad(set_to_none=True)
    return seconds


def limit_data(soft: int) -> None:
    """Set RLIMIT_DATA anew before each try, from what the process maps now: memory a library keeps
    after an earlier try (a kernel cache, an allocator pool) is not this try's, and must not shrink its room."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _one_try(s: _Setup, b: int) -> Try:
    device = s.device
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
        before = proc_status()
        limit_data(before["VmData"] + s.limit)
    error = None
    try:
        seconds = _train_steps(s, b, s.steps)
    except Exception as e:
        if not is_oom(e, cpu_limited=device.type == "cpu"):
            raise
        error = oom_message(e)
    # the tensors of a try that failed went with its traceback: give their memory back before the next
    s.model.zero_grad(set_to_none=True)
    _free(device)
    if error is not None:
        return Try(b, False, None, None, error)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - s.baseline["allocated"]
    else:  # exact unless code is paged in during the try, and then a little over
        peak = proc_status()["VmHWM"] - before["RssFile"] - before["RssShmem"] - before["RssAnon"]
    peak = max(peak, 0)
    rate = b * (s.steps - 1) / seconds if seconds > 0 else None
    # on CUDA behind set_per_process_memory_fraction, for what it does not see; on CPU RLIMIT_DATA decides
    if device.type == "cuda" and s.limit is not None and peak > s.limit:
        return Try(b, False, peak, rate, f"peak {mib(peak)} is over the limit of {mib(s.limit)}")
    return Try(b, True, peak, rate, None)
