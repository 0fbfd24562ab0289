#!/usr/bin/env python
"""How often a trial with `eval.subset` reads the whole evaluation split, and whether it finds every crossing of a
target at the same evaluation as reading the whole split every time (batchlab.evaluation.near, NEAR and NEAR_GAP).

Trains Fashion-MNIST's MLP (the critical-batch config's model, SGD momentum 0.9) at several batch sizes and seeds,
reading both the subset (`--subset` examples, drawn as batchlab draws it) and the whole test split at every
evaluation (`--every` examples). Then replays batchlab's rule on those figures, targets `--targets`: the whole
split is read where `near` says so (3 standard errors until the trial has read both, then the subset corrected
by their difference, 2 standard errors of that difference), and a target is found where the whole split, so
read, meets it. Prints, per rule (NEAR alone, as before the correction; batchlab's), the share of evaluations
that read the whole split and the crossings found later than the whole split met them; and the subset's
difference from the whole split (mean, sd over a trial's evaluations, sd from one evaluation to the next).

    python benchmarks/eval_subset.py            # 6 settings x 3 seeds, targets 0.80 and 0.84; ~3 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402

from batchlab.config import load_config  # noqa: E402
from batchlab.data import load_dataset  # noqa: E402
from batchlab.evaluation import near  # noqa: E402

SETTINGS = [(64, 0.05), (128, 0.0707), (256, 0.1), (512, 0.1414), (256, 0.05), (1024, 0.2)]  # (batch, lr): the
# critical-batch grid's best lrs around its fastest, and two off it
CONFIG = _ROOT / "configs" / "fashion-mnist-critical-batch.yaml"


def curve(data, subset, batch: int, lr: float, seed: int, every: int, stop: float, most: int) -> list[tuple]:
    """(examples, subset accuracy, whole-split accuracy) at every evaluation, until the whole split reads `stop`."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = data.train.x, data.train.y
    generator = torch.Generator().manual_seed(seed)
    rows, seen, due = [], 0, every

    @torch.inference_mode()
    def accuracy(split) -> float:
        return (model(split.x).argmax(1) == split.y).float().mean().item()

    while seen < most:
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x) - batch + 1, batch):
            index = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += batch
            if seen >= due:
                due += every
                rows.append((seen, accuracy(subset), accuracy(data.eval)))
                if rows[-1][2] >= stop:
                    return rows
    return rows


def replay(rows: list[tuple], targets: list[float], n: int, total: int, corrected: bool) -> tuple[int, int, int]:
    """(evaluations, whole-split reads, crossings found late) under batchlab's rule (`corrected`) or NEAR alone."""
    left, gap, reads, found = sorted(targets), None, 0, {}
    for i, (_, on_subset, whole) in enumerate(rows):
        if not left:
            return i, reads, late(rows, targets, found)
        if any(near("test_accuracy", on_subset, t, n, total, gap if corrected else None) for t in left):
            reads += 1
            gap = whole - on_subset
            for t in [t for t in left if whole >= t]:
                found[t] = i
                left.remove(t)
    return len(rows), reads, late(rows, targets, found)


def late(rows, targets, found) -> int:
    first = {t: next((i for i, r in enumerate(rows) if r[2] >= t), None) for t in targets}
    return sum(found.get(t) != first[t] for t in targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, default=2000, help="examples of the test split in the subset")
    parser.add_argument("--every", type=int, default=3000, help="examples between evaluations")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.80, 0.84])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(load_config(CONFIG).dataset, 0)
    subset = data.eval_subset(args.subset)
    stop = max(args.targets) + 0.02
    curves = []
    for batch, lr in SETTINGS:
        for seed in args.seeds:
            rows = curve(data, subset, batch, lr, seed, args.every, stop, most=400_000)
            curves.append(rows)
            print(f"batch {batch}, lr {lr}, seed {seed}: {len(rows)} evaluations, whole split {rows[-1][2]:.4f}",
                  flush=True)
    crossings = len(curves) * len(args.targets)
    for name, corrected in (("NEAR alone (3 standard errors)", False), ("batchlab (corrected by the gap)", True)):
        totals = [replay(rows, args.targets, len(subset), len(data.eval), corrected) for rows in curves]
        evaluations, reads, missed = (sum(t[k] for t in totals) for k in range(3))
        print(f"{name}: whole split read at {reads}/{evaluations} evaluations ({reads / evaluations:.0%}); "
              f"crossings found late: {missed}/{crossings}")
    near_target = min(args.targets) - 0.02
    gaps = [[w - s for _, s, w in rows if w >= near_target] for rows in curves]
    steps = [b - a for g in gaps for a, b in zip(g, g[1:])]
    pooled = [d for g in gaps for d in g]
    print(f"whole minus subset from {near_target:.2f} on: mean {statistics.mean(pooled):+.4f}, sd "
          f"{statistics.pstdev(pooled):.4f}; sd from one evaluation to the next {statistics.pstdev(steps):.4f}")


if __name__ == "__main__":
    main()
