#!/usr/bin/env python
"""The Dataset path: batchlab serving a per-example-transform Dataset against a hand-written DataLoader loop.

A user's torch Dataset (Fashion-MNIST with a random crop and flip done per example, examples/custom/data.py)
is served two ways, in ONE process, interleaved repetition by repetition, the same model and optimizer:

  a  hand-written  DataLoader(dataset, batch_size, shuffle=True, num_workers=N), forward, loss, zero_grad,
                   backward, step: the loop a user writes.
  b  batchlab      `batchlab.train.run_trial` on the same Dataset (a DatasetSplit with num_workers N: its
                   batch sampler, per-batch seeding, persistent workers), timed by the trainer's clock.

Both count from the first batch asked for (so starting the workers is in both) to the last step, over the
same number of steps (calibrated on column a to about --seconds). The goal: b/a >= 0.95 at batch 32..1024.

    python benchmarks/datasets.py                                   # ~5 min on 2 CPU cores
    python benchmarks/datasets.py --batch-sizes 32,1024 --workers 0,2 --reps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "examples" / "custom"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from batchlab.data import Data, DatasetSplit  # noqa: E402
from batchlab.models import mlp  # noqa: E402
from batchlab.schema import Experiment  # noqa: E402
from batchlab.train import run_trial  # noqa: E402

LR, MOMENTUM, SEED = 0.01, 0.9, 0
GOAL = 0.95


def fresh(input_shape):
    torch.manual_seed(SEED)
    model = mlp(input_shape, 10, hidden=[256])
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def hand_written(dataset, input_shape, bs: int, workers: int, steps: int) -> float:
    """(a) seconds for `steps` steps of the loop a user writes."""
    model, opt = fresh(input_shape)
    loader = DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers)
    done, start = 0, time.perf_counter()
    while done < steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def batchlab(dataset, test, input_shape, bs: int, workers: int, steps: int) -> float:
    """(b) the trainer's own clock for `steps` steps of run_trial on the same Dataset."""
    cfg = Experiment.model_validate({"model": {"name": "mlp", "hidden": [256]}, "batch_size": bs, "lr": LR,
                                     "optimizer": {"name": "sgd", "momentum": MOMENTUM}, "seed": SEED,
                                     "budget": {"steps": steps}, "eval": {"every": 1e9, "train_subset": 0},
                                     "checkpoint": {"every": None}, "device": "cpu"})
    data = Data(DatasetSplit(dataset, workers), DatasetSplit(test, 0), "classification", 10, "test", input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_trial(cfg, "bench", {}, Path(tmp), data, torch.device("cpu"), "benchmarks/datasets.py",
                            judge=False)
    assert summary["steps"] == steps, summary
    return summary["train_seconds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="32,128,512,1024")
    p.add_argument("--workers", default="0,2", help="DataLoader worker counts N")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="about how long one measurement lasts")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from data import Images, load  # examples/custom/data.py

    xtr, ytr, xte, yte = load("fashion-mnist")
    dataset, test = Images(xtr, ytr, True, 2, True), Images(xte[:64], yte[:64], False, 0, False)
    shape = tuple(dataset[0][0].shape)
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s), "
          f"load {os.getloadavg()[0]:.1f}; Fashion-MNIST, random crop (pad 2) + flip per example, MLP 784-256-10")
    print("| workers | batch | steps | a hand-written samples/s | b batchlab samples/s | b/a (median, min-max) |")
    print("|---:|---:|---:|---:|---:|---|")
    worst = float("inf")
    for workers in [int(w) for w in args.workers.split(",")]:
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            per_step = hand_written(dataset, shape, bs, workers, 20) / 20  # also the warm-up
            steps = max(20, round(args.seconds / per_step))
            batchlab(dataset, test, shape, bs, workers, 5)  # warm-up
            ratios, a_rates, b_rates = [], [], []
            for r in range(args.reps):
                order = ("a", "b") if r % 2 == 0 else ("b", "a")
                t = {}
                for col in order:
                    t[col] = hand_written(dataset, shape, bs, workers, steps) if col == "a" else \
                        batchlab(dataset, test, shape, bs, workers, steps)
                a_rates.append(bs * steps / t["a"])
                b_rates.append(bs * steps / t["b"])
                ratios.append(t["a"] / t["b"])
            ratio = statistics.median(ratios)
            worst = min(worst, ratio)
            print(f"| {workers} | {bs} | {steps} | {statistics.median(a_rates):,.0f} | {statistics.median(b_rates):,.0f} "
                  f"| {ratio:.3f} ({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)
    print(f"\nworst median b/a: {worst:.3f} (goal >= {GOAL})")
    return 0 if worst >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
