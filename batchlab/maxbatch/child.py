"""The max-batch search's child process: every try runs here, and reports back over a pipe.

The child is started with multiprocessing's "spawn" (a forked child would inherit libgomp's thread pool in
a broken state). It dies with its parent (PR_SET_PDEATHSIG), and its death is a readable error in the parent.

Memory figures are above the baseline: what the child holds after loading the data, building the model and
one warm-up step at batch 2, so thread pools, lazily loaded kernels and allocator pools are in it. A try's
peak then counts the batch, activations, gradients and optimizer state.
- CPU: before each try RLIMIT_DATA is set to what the child maps now plus the limit (memory.limit_data), so
  an oversize batch is a real allocation failure. The peak is VmHWM (reset before the try) less the
  file-backed pages at its start (program code, not under RLIMIT_DATA) less the baseline's RssAnon.
- CUDA: torch.cuda.max_memory_allocated during the try less memory_allocated at the baseline; a limit is
  made real with set_per_process_memory_fraction, and a try whose peak passes it does not fit either.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

from batchlab import registry
from batchlab.data import fits_on_device, load_dataset
from batchlab.errors import BatchlabError
from batchlab.machine import Clock
from batchlab.maxbatch.search import Try, is_oom, oom_message, search
from batchlab.memory import fixed_mmap_threshold, limit_data, mib, proc_status, reset_peak_rss
from batchlab.optimizers import build_optimizer
from batchlab.processes import die_with_parent
from batchlab.step import Step
from batchlab.train import build_parts

WARMUP_BATCH = 2  # the untimed, unrecorded step before the baseline is taken
# Read by MKL and oneDNN when torch loads, so set around the child's start (a value the user set wins): MKL
# would keep the buffers of the largest product seen, and oneDNN add JIT code for every new batch size, so
# every try's room would shrink. They can make CPU throughput a little lower; memory is what this measures.
CPU_CHILD_ENV = {"MKL_DISABLE_FAST_MM": "1", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32", "LRU_CACHE_CAPACITY": "32"}


class RemoteTraceback(Exception):
    """The child's traceback, as the `__cause__` of its error raised again in the parent."""

    def __str__(self) -> str:
        return self.args[0]


@contextmanager
def env_vars(values: dict[str, str]):
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
    """Run `child_main(job)` in one spawned process; return its result, or raise its error here."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=child_main, args=(sender, job), name="batchlab-max-batch", daemon=True)
    started, trying, tries = False, None, []
    try:
        with env_vars(CPU_CHILD_ENV if job["device"] == "cpu" else {}):
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
                raise rebuild_error(*payload)
        process.join()
        if not started:
            raise BatchlabError(
                f"the max-batch search process could not start (exit code {process.exitcode}; its error is above). "
                "It is started with multiprocessing's 'spawn', which imports the main script again (a script "
                "calling find_max_batch needs its entry point under `if __name__ == '__main__':`)")
        raise BatchlabError(death_message(process.exitcode, trying, tries, job["device"]))
    finally:
        receiver.close()
        sender.close()
        if process.pid is not None and process.is_alive():  # Ctrl-C or an error here: stop the child
            process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def death_message(exitcode: int | None, trying: int | None, tries: list[dict], device: str) -> str:
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


def rebuild_error(blob: bytes | None, summary: str, tb: str) -> BaseException:
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


def child_main(conn, job: dict) -> None:
    die_with_parent()
    try:
        conn.send(("started", os.getpid()))
        conn.send(("done", child_search(conn, **job)))
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
class Setup:
    """What every try uses, made once in the child."""
    cfg: object  # the Experiment
    device: torch.device
    model: torch.nn.Module
    initial: dict  # the model's initial weights: every try starts from them
    data: object  # the Data, on the device where the sweep would keep it there
    criterion: object
    steps: int
    generator: torch.Generator
    baseline: dict = field(default_factory=dict)
    limit: int | None = None


def child_search(conn, experiment, device: str, memory_limit: int | None, start: int, max_batch: int | None,
                 steps: int, code_dirs: tuple[str, ...]) -> dict:
    registry.make_importable(*code_dirs)
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
    if dev.type == "cuda" and fits_on_device(data, dev):  # where the sweep keeps it, so that the baselines agree
        data = data.to(dev)
    model, criterion, _ = build_parts(cfg, data, dev)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(cfg.seed)
    s = Setup(cfg, dev, model, initial, data, criterion, steps, generator)
    cap = min(max_batch or len(data.train), len(data.train))  # a larger batch trains as the full batch anyway

    # a step before the baseline, without a limit: thread pools, lazily loaded kernels and allocator pools
    # then exist, and a model that cannot train at all fails here, with its own error
    train_steps(s, min(WARMUP_BATCH, cap), 1)
    free(dev)
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
        t = one_try(s, b)
        conn.send(("try", asdict(t)))
        return t

    best, tries = search(run_try, start, cap)
    return {"batch_size": best, "tries": [asdict(t) for t in tries], "device": str(dev),
            "limit_bytes": memory_limit, "max_batch": cap, "baseline_bytes": baseline_bytes, "context": data.context}


def train_steps(s: Setup, b: int, steps: int) -> float:
    """`steps` optimizer steps at batch size b from the initial weights, as training takes them (batchlab.step).
    The examples are drawn from the training set with replacement: real shapes, values and labels at any size.

    Returns the seconds of all steps but the first.
    """
    cfg, device = s.cfg, s.device
    index = torch.randint(len(s.data.train), (b,), generator=s.generator)
    x, y = s.data.train.take(index)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    with torch.no_grad():
        for name, value in s.model.state_dict().items():
            value.copy_(s.initial[name])
    s.model.train()
    optimizer = build_optimizer(cfg.optimizer, s.model.parameters(), cfg.lr)
    channels_last = device.type == "cuda" and x.dim() == 4
    step = Step(s.model, optimizer, s.criterion, device, cfg.precision, None, cfg.optimizer.grad_clip, channels_last)
    clock = Clock(device)
    for i in range(steps):
        if i == 1:
            clock.start()
        step(x, y)
    seconds = clock.stop() if steps > 1 else 0.0
    s.model.zero_grad(set_to_none=True)
    return seconds


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def one_try(s: Setup, b: int) -> Try:
    device = s.device
    free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
        before = proc_status()
        limit_data(before["VmData"] + s.limit)
    error = None
    try:
        seconds = train_steps(s, b, s.steps)
    except Exception as e:
        if not is_oom(e, cpu_limited=device.type == "cpu"):
            raise
        error = oom_message(e)
    # the tensors of a try that failed went with its traceback: give their memory back before the next
    s.model.zero_grad(set_to_none=True)
    free(device)
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
