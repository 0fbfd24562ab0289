"""The max-batch search: the bisection on its own, then real searches in a memory-limited child on CPU.

The real searches train a wide one-hidden-layer MLP on digits, whose memory grows with the batch by a known
amount, under limits of a few tens of MiB, so that running out of memory is real and quick.
"""

import math
import os
import signal

import pytest
import torch
from torch import nn

from batchlab.schema import Experiment
from batchlab.errors import BatchlabError, ConfigError
from batchlab.maxbatch import NoBatchFits, Try, available_memory, find_max_batch, is_oom, oom_message, search
from batchlab.maxbatch.child import RemoteTraceback, rebuild_error
from batchlab.models import mlp

MiB = 2**20
WIDTH = 16384  # one hidden layer this wide: ~200 KB per example, so tens of MiB hold a few hundred examples


def wide(**update) -> Experiment:
    return Experiment.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [WIDTH]},
                                      "threads": 1, **update})


def line(hidden: list[int]) -> Experiment:
    """y = 3x + 2 (1,000 examples, regression): no sklearn to import, for the tests that need no digits."""
    return Experiment.model_validate({"dataset": {"name": "linear"}, "model": {"name": "mlp", "hidden": hidden},
                                      "threads": 1})


# ---------------------------------------------------------------- the search on its own

def fits_up_to(limit: int, log: list):
    def run_try(b: int) -> Try:
        log.append(b)
        ok = b <= limit
        return Try(b, ok, b if ok else None, 1.0 if ok else None, None if ok else "out of memory")
    return run_try


@pytest.mark.parametrize("start,cap,limit", [(1, 4096, 100), (1, 4096, 1), (1, 4096, 4096), (1, 4096, 5000),
                                             (3, 1000, 999), (64, 1437, 1436), (64, 1437, 10), (1, 1, 1),
                                             (5, 2**20, 777_777), (16, 4096, 0), (1, 4096, 0)])
def test_search_doubles_then_bisects_to_a_gap_of_one(start, cap, limit):
    log = []
    best, tries = search(fits_up_to(limit, log), start, cap)
    assert best == min(limit, cap)
    assert [t.batch_size for t in tries] == log and len(set(log)) == len(log)  # nothing tried twice
    ok = [t.batch_size for t in tries if t.fits]
    bad = [t.batch_size for t in tries if not t.fits]
    assert all(s < f for s in ok for f in bad)
    if best < cap:
        assert best + 1 in bad  # resolution 1: the next batch size up was tried and did not fit
    # doubling from start (the last step capped) until the first failure, then bisection
    first_bad = next((i for i, t in enumerate(tries) if not t.fits), len(tries))
    doubling = log[:first_bad + 1]
    assert doubling == [min(start * 2**i, cap) for i in range(len(doubling))]
    assert len(tries) <= 2 * math.ceil(math.log2(cap + 1)) + 2


def test_is_oom_catches_only_out_of_memory():
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 8 bytes. Error code 12 (Cannot allocate memory)"))
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_oom(MemoryError())
    assert not is_oom(ValueError("DefaultCPUAllocator: can't allocate memory"))  # the type matters too
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x64 and 65x10)"))
    assert not is_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_oom(RuntimeError("could not create a primitive"))
    assert is_oom(RuntimeError("could not create a primitive"), cpu_limited=True)
    message = oom_message(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                                       "allocate memory: you tried to allocate 8 bytes."))
    assert message == "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."


def test_arguments_are_checked_before_anything_starts():
    cfg = wide()
    with pytest.raises(ConfigError, match="steps"):
        find_max_batch(cfg, memory_limit=64 * MiB, steps=1)
    with pytest.raises(ConfigError, match="start"):
        find_max_batch(cfg, memory_limit=64 * MiB, start=0)
    with pytest.raises(ConfigError, match="memory limit"):
        find_max_batch(cfg, memory_limit=0)


def test_available_memory_is_read():
    assert 0 < available_memory() <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# ---------------------------------------------------------------- real searches, CPU, under RLIMIT_DATA

@pytest.fixture(scope="module")
def small():
    return find_max_batch(wide(), memory_limit=32 * MiB, max_batch=4096)


def test_the_largest_batch_fits_and_the_next_runs_out_of_memory(small):
    r = small
    # asked up to 4,096: capped at digits' 1,437 training examples, since a larger batch trains as the full batch
    assert r.device == "cpu" and r.limit_bytes == 32 * MiB and r.max_batch == 1437 and r.baseline_bytes > 0
    assert 64 <= r.batch_size < 1437
    by_size = {t.batch_size: t for t in r.tries}
    assert by_size[r.batch_size].fits
    nxt = by_size[r.batch_size + 1]  # bisected down to a gap of 1
    assert not nxt.fits and "DefaultCPUAllocator: can't allocate memory" in nxt.error
    assert nxt.peak_memory_bytes is None and nxt.samples_per_second is None
    ok = [t.batch_size for t in r.tries if t.fits]
    bad = [t.batch_size for t in r.tries if not t.fits]
    assert max(ok) == r.batch_size and min(bad) == r.batch_size + 1
    assert all(s < f for s in ok for f in bad)
    sizes = [t.batch_size for t in r.tries]
    first_bad = next(i for i, t in enumerate(r.tries) if not t.fits)
    assert sizes[:first_bad + 1] == [2**i for i in range(first_bad + 1)]  # 1, 2, 4, ... to the first failure
    fit, misfit = 2 ** (first_bad - 1), sizes[first_bad]
    for t in r.tries[first_bad + 1:]:  # then each try halves the gap between the last fit and misfit
        assert t.batch_size == (fit + misfit) // 2
        fit, misfit = (t.batch_size, misfit) if t.fits else (fit, t.batch_size)
    assert misfit - fit == 1
    for t in r.tries:
        if t.fits:
            assert 0 < t.peak_memory_bytes <= 1.1 * r.limit_bytes  # RSS, so "about" the limit: see maxbatch.py
            assert t.samples_per_second > 0 and t.error is None
        else:
            assert "can't allocate memory" in t.error


def test_peak_grows_with_the_batch_as_the_model_says(small):
    """Per example, backward holds the ReLU output, its gradient and the pre-activation gradient: 3 x WIDTH floats."""
    peak = {t.batch_size: t.peak_memory_bytes for t in small.tries if t.fits}
    sizes = sorted(b for b in peak if b >= 16)
    for b in sizes:
        if 2 * b in peak:
            assert peak[2 * b] > peak[b]
    per_example = (peak[128] - peak[64]) / 64
    assert 0.8 * 3 * WIDTH * 4 <= per_example <= 1.3 * 3 * WIDTH * 4
    # so the largest batch that fits fills most of the limit: little of it goes anywhere else
    assert peak[small.batch_size] > 0.75 * small.limit_bytes
    assert small.batch_size * 3 * WIDTH * 4 <= 1.05 * small.limit_bytes


def test_a_bigger_limit_fits_a_bigger_batch(small):
    big = find_max_batch(wide(), memory_limit=64 * MiB, start=32, max_batch=4096, steps=2)  # 1 timed step
    assert big.batch_size > 1.5 * small.batch_size
    assert [t.batch_size for t in big.tries][:4] == [32, 64, 128, 256]
    assert not next(t for t in big.tries if t.batch_size == big.batch_size + 1).fits


def test_the_default_cap_is_the_training_set_and_the_default_limit_half_the_free_memory():
    r = find_max_batch(line([16]), start=256)
    assert [(t.batch_size, t.fits) for t in r.tries] == [(256, True), (512, True), (1000, True)]
    assert r.batch_size == r.max_batch == 1000
    assert 0 < r.limit_bytes <= 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_not_even_batch_1_fits():
    with pytest.raises(NoBatchFits, match="not even batch size 1 fits in the limit of 1.0 MiB") as e:
        find_max_batch(line([1024, 1024]), memory_limit=1 * MiB, start=4)  # the weights' gradient alone: 4 MiB
    assert [t.batch_size for t in e.value.tries] == [4, 2, 1]
    assert not any(t.fits for t in e.value.tries)


# ---------------------------------------------------------------- errors that are not out of memory

class FailsAbove(nn.Module):
    """The configured model, but a batch above 8 raises ValueError or kills the process."""

    def __init__(self, inner: nn.Module, how: str):
        super().__init__()
        self.inner, self.how = inner, how

    def forward(self, x):
        if len(x) > 8:
            if self.how == "raise":
                raise ValueError(f"broken model at batch {len(x)}")
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x)


def raising_model(input_shape, num_classes):
    return FailsAbove(mlp(input_shape, num_classes, hidden=[16]), "raise")


def dying_model(input_shape, num_classes):
    return FailsAbove(mlp(input_shape, num_classes, hidden=[16]), "die")


def named(factory) -> Experiment:
    """y = 3x + 2 with a model from this file, named by import path as a user's config would."""
    return Experiment.model_validate({"dataset": {"name": "linear"}, "threads": 1,
                                      "model": {"name": f"test_maxbatch:{factory.__name__}"}})


TESTS = (str(os.path.dirname(__file__)),)  # importable in the search's child, as a config's directory is


def test_an_error_that_is_not_out_of_memory_is_raised_not_counted_as_not_fitting():
    with pytest.raises(ValueError, match="broken model at batch 16") as e:
        find_max_batch(named(raising_model), memory_limit=64 * MiB, code_dirs=TESTS)
    assert isinstance(e.value.__cause__, RemoteTraceback)
    assert "in the max-batch search process" in str(e.value.__cause__) and "forward" in str(e.value.__cause__)


def test_a_child_that_dies_is_a_readable_error():
    with pytest.raises(BatchlabError, match=r"killed by SIGKILL .* while trying batch size 16 "
                                            r"\(so far: 1 fits, 2 fits, 4 fits, 8 fits\)"):
        find_max_batch(named(dying_model), memory_limit=64 * MiB, code_dirs=TESTS)


def test_a_user_error_in_the_child_arrives_as_itself():
    cfg = Experiment.model_validate({"dataset": {"name": "linear"}, "model": {"name": "lenet5"}})
    with pytest.raises(ConfigError, match="model.name: .*lenet5 needs image input"):
        find_max_batch(cfg, memory_limit=64 * MiB)


def test_an_error_that_cannot_be_sent_back_arrives_as_text():
    error = rebuild_error(None, "WeirdError: something", "Traceback ...")
    assert isinstance(error, BatchlabError) and "WeirdError: something" in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)
