#!/usr/bin/env python
"""Which summary of the interleaved rounds gives step-cost ratios that survive a rerun? The evidence behind
decision.StepCost (the median) and steptime.ROUNDS.

Times a step at each batch size of a config's grid the way a sweep does after its trials (batchlab.steptime),
--repeat times, and keeps every round. A decision compares ratios between batch sizes' costs, so for each way of
summarising a batch size's rounds (the least, the lower quartile, the median) it prints how
much the log of that ratio moves from one measurement to the next: the standard deviation over the repetitions,
its median and largest over all pairs of batch sizes. Each summary is taken over all --rounds rounds and over
the first half of them, from the same measurements, so rounds are compared in one run. --hog N runs N busy
processes beside it, as another user of the machine would.

    python benchmarks/step_time_estimators.py configs/quickstart.yaml --repeat 20 --hog 1
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from batchlab import steptime  # noqa: E402
from batchlab.executors.base import DataCache  # noqa: E402
from timing import busy_processes, grid_subjects  # noqa: E402

SUMMARIES = {  # rounds (repetitions x batch sizes x rounds) -> one cost per repetition and batch size
    "least": lambda r: np.sort(r, axis=2)[:, :, 0],
    "lower quartile": lambda r: np.quantile(r, 0.25, axis=2),
    "median": lambda r: np.median(r, axis=2),
}


def movement(costs: np.ndarray) -> tuple[float, float]:
    """The standard deviation over repetitions of log(cost_i / cost_j): median and largest over the pairs."""
    logs = np.log(costs)
    sds = [np.std(logs[:, i] - logs[:, j]) for i, j in itertools.combinations(range(logs.shape[1]), 2)]
    return float(np.median(sds)), float(np.max(sds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--repeat", type=int, default=20, help="independent measurements")
    parser.add_argument("--rounds", type=int, default=steptime.ROUNDS, help="rounds a measurement")
    parser.add_argument("--hog", type=int, default=0, help="busy processes running beside it")
    args = parser.parse_args()

    subjects, device = grid_subjects(args.config, "/tmp/batchlab-step-time-estimators")
    cache, rounds = DataCache(), []  # per measurement: each subject's seconds per step, one a round
    with busy_processes(args.hog):
        for i in range(args.repeat):
            times = steptime.measure(subjects, lambda c: cache.get(c, device), device, rounds=args.rounds)
            rounds.append({s.key: times.seconds_per_step(s.key) for s in subjects})
            print(f"measurement {i + 1}/{args.repeat} ({times.clock} clock)", file=sys.stderr)
    subjects = [s for s in subjects if all(rep[s.key] for rep in rounds)]  # one that failed (out of memory): left out
    r = np.array([[rep[s.key] for s in subjects] for rep in rounds])  # repetitions x batch sizes x rounds
    low = r / np.median(r, axis=2, keepdims=True)
    print(f"{len(subjects)} batch sizes ({', '.join(str(s.key[0]) for s in subjects)}), {args.repeat} measurements "
          f"of {args.rounds} rounds, {args.hog} busy processes beside; rounds under 0.7x their batch size's median: "
          f"{int((low < 0.7).sum())} of {low.size}, over 1.4x: {int((low > 1.4).sum())}")
    half = args.rounds // 2
    print(f"sd over measurements of log(cost ratio), median / largest over pairs: {half} rounds | {args.rounds} rounds")
    for name, summary in SUMMARIES.items():
        (a, b), (c, d) = movement(summary(r[:, :, :half])), movement(summary(r))
        print(f"  {name:15s} {a:.3f} / {b:.3f} | {c:.3f} / {d:.3f}")


if __name__ == "__main__":
    main()
