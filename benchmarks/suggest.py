#!/usr/bin/env python
"""`batchlab suggest` against the full sweep it saves: the batch size, the time to target, and the cost.

For each config: the full grid (`batchlab sweep`), then `batchlab suggest` on the same machine, then (with
--race) the same grid raced. Figures, all from the records:
  - the full sweep's fastest (batch size, lr) by median training seconds to the target over seeds, and its time;
  - suggest's answer and its measured time; their ratio in batch size (goal: within 2x) and in time
    (goal: suggest's within 25% of the sweep's best);
  - cost: training seconds (every trial's clock; suggest adds its throughput scan) of suggest over the
    sweep's (goal: at most 15%);
  - racing: the raced grid's cost over the full grid's, and whether each seed's fastest is the same.
Records go under --out (one folder per config); an existing folder resumes, so a rerun only adds what is
missing. Times are noisy here (+-25%): both sides ran on the same machine minutes apart.

    python benchmarks/suggest.py configs/quickstart.yaml configs/fashion-mnist-critical-batch.yaml --race
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import batchlab  # noqa: E402
from batchlab.records import SweepDir  # noqa: E402
from batchlab.train import hardest_target  # noqa: E402


def fastest(summaries: list[dict], key: str, per_seed: bool = False):
    """(batch size, lr) -> median seconds to target over seeds (a miss: inf); the best, or each seed's best."""
    times = defaultdict(list)
    for s in summaries:
        hit = s["targets"].get(key)
        times[(s["batch_size"], s["lr"]) + ((s["seed"],) if per_seed else ())].append(
            hit["seconds"] if hit else float("inf"))
    if per_seed:
        best = {}
        for (b, lr, seed), t in times.items():
            if t[0] < best.get(seed, (None, float("inf")))[1]:
                best[seed] = ((b, lr), t[0])
        return best
    medians = {k: statistics.median(v) for k, v in times.items()}
    winner = min(medians, key=medians.get)
    return winner, medians[winner]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/suggest-benchmark"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--race", action="store_true", help="also run each grid raced")
    args = p.parse_args()
    rows = []
    for config in args.configs:
        out = args.out / config.stem
        experiment = batchlab.load_config(config, {"threads": args.threads})
        key = f"{hardest_target(experiment):g}"
        print(f"{config}: full sweep", file=sys.stderr, flush=True)
        full = batchlab.sweep(config, out=out / "full", overrides={"threads": args.threads})
        everything = SweepDir(full.path.parent, full.path.name).summaries()
        (b_full, lr_full), t_full = fastest(everything, key)
        cost_full = sum(s["train_seconds"] for s in everything)
        print(f"{config}: suggest", file=sys.stderr, flush=True)
        s = batchlab.suggest(config, out=out / "suggest", overrides={"threads": args.threads})
        row = {"config": config.stem, "sweep": f"{b_full} @ lr {lr_full:g}: {t_full:.3g} s",
               "suggest": f"{s.batch_size} @ lr {s.lr:g}: {s.seconds:.3g} s" if s.batch_size else "none reached",
               "batch ratio": f"{max(s.batch_size, b_full) / min(s.batch_size, b_full):.2g}x" if s.batch_size else "-",
               "time ratio": f"{s.seconds / t_full:.2f}" if s.batch_size else "-",
               "cost": f"{s.cost['total']:.1f} s / {cost_full:.1f} s = {s.cost['total'] / cost_full:.0%}",
               "band": f"B_simple {s.b_simple:.0f}, B_crit {s.band[0]:.0f}-{s.band[1]:.0f}, "
                       f"candidates {', '.join(map(str, s.candidates))}"}
        if args.race:
            print(f"{config}: raced sweep", file=sys.stderr, flush=True)
            raced = batchlab.sweep(config, out=out / "raced", overrides={"threads": args.threads}, race=True)
            raced_all = SweepDir(raced.path.parent, raced.path.name).summaries()
            best_full, best_raced = fastest(everything, key, per_seed=True), fastest(raced_all, key, per_seed=True)
            same = all(best_raced.get(seed, (None,))[0] == winner for seed, (winner, _) in best_full.items())
            row["race"] = (f"{sum(x['train_seconds'] for x in raced_all) / cost_full:.0%} of the cost, "
                           f"same fastest per seed: {'yes' if same else 'no'}")
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row.get(c, "") for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
