#!/usr/bin/env python
"""Per-step cost, in microseconds, of each piece of batchlab's training loop that a minimal raw loop lacks.

Each piece is timed alone, in a tight loop of --iterations calls, in interleaved rounds (median over
rounds, the empty loop subtracted), with the objects batchlab.train.train builds for an fp32 CPU trial:
its DataLoader (batchlab.data.make_loader), a disabled GradScaler, a disabled autocast, a LambdaLR
scheduler, the on-device loss accumulation and the step bookkeeping. Compare the sum with a raw step
(throughput.py prints ms/step for the raw loop) to see what share of a step batchlab adds.

    python benchmarks/step_overhead.py                 # batch 1
    python benchmarks/step_overhead.py --batch-size 8
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

# Measure the batchlab of the checkout this file is in, not whichever copy is installed.
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch
import torch.nn.functional as F

from batchlab.data import load_dataset, make_loader
from batchlab.models import build_model
from batchlab.schema import DatasetConfig, ModelConfig, ScheduleConfig
from batchlab.schedules import lr_schedule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--iterations", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: these are single-threaded Python costs)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bs, N = args.batch_size, args.iterations

    data = load_dataset(DatasetConfig(name="fashion-mnist"), seed=0)
    x_all, y_all = data.train.x, data.train.y
    n, device = len(x_all), torch.device("cpu")
    spe = math.ceil(n / bs)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), data.input_shape, data.num_classes)
    xb, yb = x_all[:bs], y_all[:bs]
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()

    def tiny_sgd():  # a one-element parameter: SGD.step's own cost is small and steady
        param = torch.nn.Parameter(torch.zeros(1))
        param.grad = torch.zeros(1)
        return torch.optim.SGD([param], lr=0.01, momentum=0.9)

    opt_plain, opt_sched = tiny_sgd(), tiny_sgd()
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt_sched, lr_schedule(ScheduleConfig(), spe, 10**9))
    factor = lr_schedule(ScheduleConfig(), spe, 10**9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss_sum = torch.zeros(())
    gen = torch.Generator().manual_seed(0)
    null = contextlib.nullcontext()

    def empty():
        for _ in range(N):
            pass

    def raw_batch():  # the raw loop's batch: a slice of a permutation, two gathers; a new permutation per epoch
        perm, i = torch.randperm(n, generator=gen), 0
        for _ in range(N):
            if i >= n:
                perm, i = torch.randperm(n, generator=gen), 0
            idx = perm[i:i + bs]
            x_all[idx], y_all[idx]
            i += bs

    def loader_batch():  # batchlab: DataLoader(TensorBatches, sampler=ShuffledBatches, batch_size=None)
        loader = make_loader(x_all, y_all, bs, False, gen)
        it = iter(loader)
        for _ in range(N):
            try:
                next(it)
            except StopIteration:
                it = iter(loader)
                next(it)

    def to_noop():
        for _ in range(N):
            xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

    def micro_tuple():  # the gradient-accumulation branch when micro == batch
        x, y, micro = xb, yb, bs
        for _ in range(N):
            for xm, ym in (zip(x.split(micro), y.split(micro)) if micro < len(x) else ((x, y),)):
                pass
            if micro < len(x):
                pass

    def autocast_off():
        for _ in range(N):
            with torch.autocast(device.type, dtype=torch.float16, enabled=False):
                pass

    def nullcontext():
        for _ in range(N):
            with null:
                pass

    def scaler_scale_update():
        for _ in range(N):
            scaler.scale(loss)
            scaler.update()

    def opt_step_plain():
        for _ in range(N):
            opt_plain.step()

    def scaler_step_wrapped():  # batchlab: scaler.step(optimizer), optimizer.step wrapped by LambdaLR
        for _ in range(N):
            scaler.step(opt_sched)

    def scheduler_step():
        for _ in range(N):
            scheduler.step()

    def set_lr():  # the alternative: write the schedule's lr into the param groups
        step = 0
        for _ in range(N):
            step += 1
            for group in opt_plain.param_groups:
                group["lr"] = 0.01 * factor(step)

    def loss_accumulate():
        nonlocal loss_sum
        for _ in range(N):
            loss_sum += loss.detach().float()

    def bookkeeping():
        class S:
            step = examples = 0
        s, loss_count, total, eval_every, log_every, noise, x = S(), 0, 10**12, 10**12, 10**12, None, xb
        for _ in range(N):
            loss_count += 1
            s.step += 1
            s.examples += len(x)
            is_eval = s.step % eval_every == 0 or s.step == total
            if is_eval or s.step % log_every == 0 or (noise and s.step % noise.every == 0):
                pass

    fns = [empty, raw_batch, loader_batch, to_noop, micro_tuple, autocast_off, nullcontext, scaler_scale_update,
           opt_step_plain, scaler_step_wrapped, scheduler_step, set_lr, loss_accumulate, bookkeeping]
    times = {f.__name__: [] for f in fns}
    for f in fns:
        f()  # warm-up
    for r in range(args.rounds):
        for f in fns[r % len(fns):] + fns[:r % len(fns)]:
            t0 = time.perf_counter()
            f()
            times[f.__name__].append((time.perf_counter() - t0) / N * 1e6)
    m = {k: statistics.median(v) for k, v in times.items()}
    e = m["empty"]
    rows = [
        ("DataLoader batch, minus the raw loop's slicing", m["loader_batch"] - m["raw_batch"], True),
        ("x.to(device), y.to(device) when already there", m["to_noop"] - e, True),
        ("micro-batch tuple/zip and checks (no accumulation)", m["micro_tuple"] - e, True),
        ("torch.autocast(enabled=False) enter + exit", m["autocast_off"] - e, True),
        ("GradScaler.scale + update, disabled", m["scaler_scale_update"] - e, True),
        ("scaler.step(opt) via LambdaLR's step wrapper, minus opt.step()", m["scaler_step_wrapped"] - m["opt_step_plain"], True),
        ("LambdaLR.step()", m["scheduler_step"] - e, True),
        ("loss_sum += loss.detach().float()", m["loss_accumulate"] - e, True),
        ("step counters and modulo checks", m["bookkeeping"] - e, True),
        ("(for reference) raw loop's batch slicing itself", m["raw_batch"] - e, False),
        ("(alternative) contextlib.nullcontext() enter + exit", m["nullcontext"] - e, False),
        ("(alternative) set the lr in the param groups directly", m["set_lr"] - e, False),
    ]
    print(f"batch {bs}, {N} iterations x {args.rounds} rounds, {torch.get_num_threads()} thread(s); "
          f"us per step, median (empty loop, {e:.3f} us, subtracted)")
    for name, v, _ in rows:
        print(f"  {name:<66} {v:7.2f}")
    print(f"  {'sum of the batchlab-only costs above':<66} {sum(v for _, v, own in rows if own):7.2f}")


if __name__ == "__main__":
    main()
