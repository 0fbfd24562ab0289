#!/usr/bin/env python
"""`batchlab suggest` against the full grid it saves: the batch size, whether it holds on the grid's seeds, the cost.

For each config: the full grid (`batchlab sweep`, or the records already in --grid DIR), its decision by the
product's rule (`batchlab report`: median steps to the target over seeds x seconds per step timed interleaved,
ties within the noise declared), then `batchlab suggest` once per --seeds value. Figures, all from the records:
  - the grid's answer (batch size and lr, and those within the noise of it);
  - suggest's answer on each seed: its batch size (or declared tie) and lr, and whether it was confirmed;
  - whether suggest's setting reached the target on every seed of the grid (goal: yes), its batch size over the
    grid's (goal: within 2x), and whether every suggest run recommended the same batch size (goal: yes) and
    named the same tie beside it (the settings within the noise: the tie's edge moves with the hardware's
    ratios of seconds per step, which a rerun measures anew);
  - cost: everything suggest spent (scan, and every trial's training, evaluation and noise measurement) over
    everything the grid's trials spent, by the same fields (goal: at most 15%).
Records go under --out (one folder per config and seed); an existing folder resumes.

    python benchmarks/suggest.py configs/quickstart.yaml --seeds 0 1 2 --grid runs/quickstart
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import batchlab  # noqa: E402
from batchlab.records import SweepDir  # noqa: E402
from batchlab.suggestion.answer import listed  # noqa: E402
from batchlab.suggestion.search import COSTS  # noqa: E402
from batchlab.train import hardest_target  # noqa: E402


def grid_answer(path: Path) -> tuple[set[int], str, list[dict], float]:
    """The grid's decision (the batch sizes it names), in words, its summaries, and what it spent: the same
    fields as suggest's cost (training, evaluation, noise measurement, compilation)."""
    answer = batchlab.report(path).recommendation
    named = {answer.batch_size, *(o["batch_size"] for o in answer.within_noise)} - {None}
    words = answer.in_short() or "nothing reached"
    summaries = SweepDir(path.parent, path.name).summaries()
    return named, words, summaries, sum(s.get(k) or 0 for s in summaries for k in COSTS)


def reached_everywhere(summaries: list[dict], key: str, batch_size: int, lr: float) -> str:
    """'3/3': the grid's seeds of this setting that reached the target ('-' where the grid lacks the setting)."""
    mine = [s for s in summaries if s["batch_size"] == batch_size and abs(s["lr"] - lr) <= 1e-9 * max(1.0, lr)]
    return f"{sum(bool(s['targets'].get(key)) for s in mine)}/{len(mine)}" if mine else "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--grid", type=Path, help="the grid's records (a sweep directory) instead of running it; "
                                             "with one config only")
    p.add_argument("--out", type=Path, default=Path("runs/suggest-benchmark"))
    args = p.parse_args()
    if args.grid and len(args.configs) > 1:
        p.error("--grid takes one config")
    rows = []
    for config in args.configs:
        key = f"{hardest_target(batchlab.load_config(config)):g}"
        if args.grid:
            grid = args.grid if (args.grid / "trials").is_dir() else next(args.grid.glob("*/trials")).parent
        else:
            print(f"{config}: full grid", file=sys.stderr, flush=True)
            grid = batchlab.sweep(config, out=args.out / config.stem / "grid").path
        named, words, summaries, grid_cost = grid_answer(grid)
        answers = []
        for seed in args.seeds:
            print(f"{config}: suggest, seed {seed}", file=sys.stderr, flush=True)
            s = batchlab.suggest(config, out=args.out / config.stem / f"seed{seed}", overrides={"seed": seed})
            mine = {s.batch_size, *(o["batch_size"] for o in s.within_noise)} - {None}
            answers.append((s.batch_size, frozenset(mine)))
            ratio = min(max(s.batch_size, g) / min(s.batch_size, g) for g in named) if s.batch_size and named else None
            cost = s.cost
            rows.append({
                "config": config.stem, "seed": seed, "grid": words,
                "suggest": (f"{s.batch_size} @ lr {s.lr:g}" + (f" (tie: {listed(sorted(mine - {s.batch_size}))})"
                                                                if len(mine) > 1 else "") if s.batch_size else "none")
                + ("" if s.confirmed else " (not confirmed)"),
                "reached on the grid's seeds": reached_everywhere(summaries, key, s.batch_size, s.lr)
                if s.batch_size else "-",
                "batch vs grid": f"{ratio:.2g}x" if ratio else "-",  # to the nearest batch size the grid named
                "cost (scan/pilot/race/confirmation)": f"{cost['total']:.1f} s ({cost['scan']:.1f}/{cost['pilot']:.1f}/"
                                                         f"{cost['race']:.1f}/{cost['confirmation']:.1f})",
                "of the grid's": f"{cost['total'] / grid_cost:.1%} of {grid_cost:.0f} s"})
            print(rows[-1], file=sys.stderr, flush=True)
        same_size, same_tie = (len({a[i] for a in answers}) == 1 for i in (0, 1))
        print(f"{config.stem}: the same recommended batch size on every seed: {'yes' if same_size else 'no'}; "
              f"the same tie: {'yes' if same_tie else 'no'}", file=sys.stderr)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
