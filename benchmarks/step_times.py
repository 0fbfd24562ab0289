#!/usr/bin/env python
"""How steady are interleaved step times from one measurement to the next? The evidence behind decision.TIE.

Times a step at each batch size of a config's grid the way a sweep does after its trials (batchlab.steptime:
round-robin, steptime.ROUNDS rounds of 0.1 s), --repeat times at different moments, and prints for each measurement the median
seconds per step and its ratio to the smallest batch size's. The ratios are what a decision compares: their
spread over the repetitions is the noise that the report's TIE margin has to cover. With --trials RUNS/NAME it
also prints the same ratio from the trials' own clocks (train_seconds / steps, each trial timed at its own
moment), for comparison.

    python benchmarks/step_times.py configs/fashion-mnist-critical-batch.yaml --repeat 8 --pause 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402

from batchlab import steptime  # noqa: E402
from batchlab.executors.base import DataCache  # noqa: E402
from timing import grid_subjects  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--repeat", type=int, default=5, help="independent measurements")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between measurements")
    parser.add_argument("--trials", type=Path, help="a sweep's records: their own clocks, for comparison")
    args = parser.parse_args()

    subjects, device = grid_subjects(args.config, "/tmp/batchlab-step-times")
    cache = DataCache()
    sizes = [s.key[0] for s in subjects]
    ratios = {b: [] for b in sizes}
    print(f"{len(sizes)} batch sizes, {steptime.ROUNDS} rounds of {steptime.SECONDS} s, {torch.get_num_threads()} "
          f"threads, {device}")
    print("measurement  " + "  ".join(f"{b:>9}" for b in sizes) + "   cost s")
    for i in range(args.repeat):
        times = steptime.measure(subjects, lambda c: cache.get(c, device), device)
        medians = {s.key[0]: statistics.median(times.seconds_per_step(s.key)) for s in subjects}
        for b in sizes:
            ratios[b].append(medians[b] / medians[sizes[0]])
        print(f"{i:>11}  " + "  ".join(f"{medians[b] * 1e3:7.3f}ms" for b in sizes) + f"   {times.cost:.1f}")
        if i + 1 < args.repeat:
            time.sleep(args.pause)
    print(f"ratio to batch {sizes[0]}: median (min-max) over {args.repeat} measurements, spread = max/min - 1")
    for b in sizes:
        r = ratios[b]
        print(f"  {b:>6}: {statistics.median(r):8.3f} ({min(r):.3f}-{max(r):.3f}), spread {max(r) / min(r) - 1:6.1%}")
    if args.trials:
        own = {}
        for path in sorted((args.trials / "trials").glob("*/summary.json")):
            s = json.loads(path.read_text())
            if s.get("status") == "completed" and s.get("steps"):
                own.setdefault(s["batch_size"], []).append(s["train_seconds"] / s["steps"])
        base = statistics.median(own[sizes[0]])
        print(f"the trials' own clocks, ratio to batch {sizes[0]} (median (min-max) over the trials):")
        for b in sizes:
            if b in own:
                r = [v / base for v in own[b]]
                print(f"  {b:>6}: {statistics.median(r):8.3f} ({min(r):.3f}-{max(r):.3f}), "
                      f"spread {max(r) / min(r) - 1:6.1%}")


if __name__ == "__main__":
    main()
