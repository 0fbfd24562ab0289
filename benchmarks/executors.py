#!/usr/bin/env python
"""Where trials run: one sweep sequential, with `--workers`, and on Dask; the driver's cost per trial; an estimate
for 1,000 trials on 64 GPUs.

1. Scaling. The 16-trial small-batch grid (digits, MLP 64-32-10, batch 1, 2, 4, 8 x 4 lrs, 6 epochs, 1 thread per
   trial) run by `batchlab sweep` as a user runs it, a fresh process each time (start-up included): sequential,
   `--workers W`, `--executor dask --workers W` (a LocalCluster of W single-threaded workers). Interleaved
   repetition by repetition, the order rotated, since the machine is noisy. Wall seconds; the records of every
   run are checked identical to the sequential run's (timing aside).
2. The driver's overhead per trial. N tiny trials (one step on 256 examples, digits' 360 test examples) with ONE
   worker in every executor, so trials run one after another and every cost of handing a trial over and
   writing its records adds up: the steady-state wall seconds per trial on the driver (from the first trial's
   end to the last one's), and the excess over the in-process executor.
3. A paper estimate for 1,000 trials on 64 GPUs: Dask's scheduler overhead per task (its documentation), the
   driver's overhead per trial (2) and the records each trial sends back (measured on the runs of 1).

    python benchmarks/executors.py                    # ~10 min on 2 CPU cores
    python benchmarks/executors.py --reps 1 --tiny 20 --workers 2

Writes <out>/executors.md (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Measure the batchlab of the checkout this file is in, not whichever copy is installed.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

GRID = {  # the 16 small-batch trials of the README's --workers figure
    "name": "scaling", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
    "budget": {"epochs": 6}, "target": {"value": [0.9]}, "eval": {"every": 1.0}, "threads": 1,
    "sweep": {"batch_size": [1, 2, 4, 8], "lr": [0.01, 0.03, 0.1, 0.3]},
}
TINY = {  # trials that do almost nothing: what is left is the cost of running a trial at all
    "name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
    "budget": {"steps": 1}, "eval": {"every": 1.0, "batch_size": 64, "train_subset": 0}, "threads": 1,
}
DASK_TASK_OVERHEAD_S = (200e-6, 1e-3)  # Dask's best practices: "somewhere between 200us and 1ms" per task
TIMING = ("train_seconds", "eval_seconds", "noise_seconds", "compile_seconds", "samples_per_second",
          "peak_memory_bytes", "started_at", "finished_at", "run_token", "command")


def cli_run(config: Path, out: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "batchlab", "sweep", str(config), "--out", str(out), "--quiet", *args],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def comparable(trial_dir: Path) -> tuple:
    """A trial's records without the timing figures: what must not depend on where it ran."""
    summary = json.loads((trial_dir / "summary.json").read_text())
    for key in TIMING:
        summary.pop(key, None)
    for hit in summary["targets"].values():
        if hit:
            hit.pop("seconds")
    rows = [r.split(",") for r in (trial_dir / "metrics.csv").read_text().splitlines()]
    return (trial_dir / "config.json").read_text(), summary, [r[:3] + r[4:] for r in rows]


def scaling(work: Path, reps: int, workers: int) -> tuple[dict[str, list[float]], list[int]]:
    config = work / "scaling.yaml"
    config.write_text(yaml.safe_dump(GRID))
    kinds = {"sequential": [], f"--workers {workers}": ["--workers", str(workers)],
             f"--executor dask --workers {workers}": ["--executor", "dask", "--workers", str(workers)]}
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    reference, sizes = None, []
    for rep in range(reps):
        names = list(kinds)
        names = names[rep % len(names):] + names[:rep % len(names)]
        for name in names:
            out = work / f"scaling-{rep}-{names.index(name)}"
            walls[name].append(cli_run(config, out, kinds[name]))
            trials = sorted((out / "scaling" / "trials").iterdir())
            records = [comparable(d) for d in trials]
            reference = reference or records
            if records != reference:
                raise SystemExit(f"{name}: records differ from the first run's (timing aside)")
            sizes = [sum(f.stat().st_size for f in d.iterdir()) for d in trials]
            print(f"  rep {rep + 1} {name}: {walls[name][-1]:.1f} s", flush=True)
    return walls, sizes


def overhead(work: Path, reps: int, n: int) -> dict[str, list[float]]:
    import batchlab
    from batchlab.executors import ProcessPool, Sequential
    from batchlab.executors.dask import DaskExecutor

    kinds = {"in-process": Sequential, "process pool, 1 worker": lambda: ProcessPool(1),
             "Dask LocalCluster, 1 worker": lambda: DaskExecutor(workers=1)}
    per_trial: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    config = {**TINY, "sweep": {"seed": list(range(n))}}
    for rep in range(reps):
        names = list(kinds)
        names = names[rep % len(names):] + names[:rep % len(names)]
        for name in names:
            ends: list[tuple[float, float]] = []  # (wall, this process's CPU seconds) as each trial ends

            def ended(trial, summary):
                usage = resource.getrusage(resource.RUSAGE_SELF)
                ends.append((time.perf_counter(), usage.ru_utime + usage.ru_stime))

            with kinds[name]() as executor:
                batchlab.sweep(config, work / f"tiny-{rep}-{names.index(name)}", executor=executor,
                               overrides={"dataset.subset": 256}, command="benchmark", on_trial_end=ended)
            per_trial[name].append((ends[-1][0] - ends[0][0]) / (len(ends) - 1))
            cpu[name].append((ends[-1][1] - ends[0][1]) / (len(ends) - 1))
            print(f"  rep {rep + 1} {name}: {per_trial[name][-1] * 1e3:.1f} ms per trial, driver CPU "
                  f"{cpu[name][-1] * 1e3:.1f} ms", flush=True)
    return per_trial, cpu


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    m = statistics.median(values) * scale
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each measurement")
    parser.add_argument("--workers", type=int, default=2, help="worker processes in part 1")
    parser.add_argument("--tiny", type=int, default=40, help="tiny trials per run in part 2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="batchlab-executors-") as tmp:
        work = Path(tmp)
        print("1. scaling: the 16-trial grid", flush=True)
        walls, sizes = scaling(work, args.reps, args.workers)
        print("2. the driver's overhead per trial", flush=True)
        per_trial, cpu = overhead(work, args.reps, args.tiny)
    load = f"{load:.1f} before, {os.getloadavg()[0]:.1f} after"

    sequential = statistics.median(walls["sequential"])
    lines = [f"# Executors ({os.cpu_count()} CPU cores, load average {load}; {args.reps} interleaved repetitions, "
             "median (min-max))", "", f"1. The 16-trial grid, {args.workers} worker processes of one thread:", "",
             "| executor | wall seconds | speed-up |", "|---|---:|---:|"]
    for name, values in walls.items():
        lines.append(f"| {name} | {spread(values)} | {sequential / statistics.median(values):.2f}x |")
    lines += ["", "Records identical between executors (timing aside): checked on every run.", "",
              f"2. The driver's time per tiny trial ({args.tiny} trials of one step, one worker; CPU: the driver "
              "process's own, in which a LocalCluster's scheduler runs too; in-process it is the trial's):", "",
              "| executor | wall ms per trial | over in-process | driver CPU ms per trial |", "|---|---:|---:|---:|"]
    base = statistics.median(per_trial["in-process"])
    for name, values in per_trial.items():
        lines.append(f"| {name} | {spread(values, 1e3)} | {(statistics.median(values) - base) * 1e3:+.1f} | "
                     f"{spread(cpu[name], 1e3)} |")

    dask = "Dask LocalCluster, 1 worker"
    # What the driver spends on each trial, one after another: at most its CPU per trial or the wall time a
    # trial takes over running in-process (which also counts the worker's scratch writes), whichever is larger.
    dask_extra = max(statistics.median(per_trial[dask]) - base, statistics.median(cpu[dask]))
    record_kib = statistics.median(sizes) / 1024
    per_epoch_kib = record_kib / GRID["budget"]["epochs"]
    low, high = DASK_TASK_OVERHEAD_S
    lines += ["", "3. Estimate: 1,000 trials on 64 GPUs (one Dask worker per GPU, `--gpus-per-trial 1`):", "",
              f"- Dask's scheduler: {low * 1e6:.0f} us to {high * 1e3:.0f} ms per task (its best-practices page) "
              f"-> {1000 * low:.1f}-{1000 * high:.0f} s for 1,000 trials, spread over the sweep.",
              f"- The driver: at most {dask_extra * 1e3:.0f} ms per trial (2: the larger of its CPU per trial and "
              f"the wall time over in-process), one trial at a time -> "
              f"{1000 * dask_extra:.0f} s for 1,000 trials; it keeps 64 GPUs busy as long as a trial lasts more "
              f"than 64 x {dask_extra * 1e3:.0f} ms = {64 * dask_extra:.1f} s.",
              f"- Records sent back: {record_kib:.1f} KiB per trial of {GRID['budget']['epochs']} epochs here "
              f"(config, metrics, summary), about {per_epoch_kib:.1f} KiB per epoch logged at the default 20 rows "
              f"an epoch -> {1000 * record_kib / 1024:.0f} MiB for 1,000 such trials, "
              f"{1000 * per_epoch_kib * 100 / 1024 ** 2:.1f} GiB if each ran 100 epochs."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "executors.md").write_text(text)


if __name__ == "__main__":
    main()
