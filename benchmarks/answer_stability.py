#!/usr/bin/env python
"""Does the report's answer survive a rerun? Times the steps of one sweep's records again and again, at different
moments, and prints the answer each time.

The steps to the target of each trial are exact for its seed (a full rerun at the same thread count retrains
them bit for bit), so what a rerun changes is the moment its steps are timed. Each repetition copies the
sweep's records without step_times.json, runs `batchlab.sweep` on the same config (nothing trains: it only
times a step at every batch size, interleaved) and reads the report's answer. --hog N runs N busy processes
beside it, as another user of the machine would.

    python benchmarks/answer_stability.py configs/fashion-mnist-critical-batch.yaml runs/fashion-mnist-critical-batch \\
        --repeat 5 --pause 30 --hog 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import batchlab  # noqa: E402
from batchlab import steptime  # noqa: E402
from batchlab.reporting import analyse  # noqa: E402
from timing import busy_processes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("records", type=Path, help="the sweep's records, e.g. runs/<name>")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between repetitions")
    parser.add_argument("--hog", type=int, default=0, help="busy processes running beside the timing")
    parser.add_argument("--set", action="append", default=[], help="the overrides the sweep was run with")
    args = parser.parse_args()

    answers = []
    with busy_processes(args.hog):
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / args.records.name
                shutil.copytree(args.records, copy, ignore=shutil.ignore_patterns(steptime.FILE, "report", ".lock"))
                batchlab.sweep(args.config, out=tmp, overrides=args.set, command="answer_stability")
                [report] = analyse(copy)
                answer = report.recommendation
                rows = report.time_to_accuracy[report.time_to_accuracy["target"] == report.target]
                rows = rows.dropna(subset=["predicted_seconds"]).sort_values("predicted_seconds").head(3)
                top = "; ".join(f"{r.batch_size}: {r.predicted_seconds:.3g} s ({r.predicted_low:.3g}-"
                                f"{r.predicted_high:.3g})" for r in rows.itertuples())
                print(f"{i}: {answer.in_short()}  [{top}]  clock {report.records.step_facts.get('clock')}",
                      flush=True)
                answers.append(answer.in_short())
            if i + 1 < args.repeat:
                time.sleep(args.pause)
    print(f"{len(set(answers))} distinct answer(s) in {len(answers)} repetitions (hog: {args.hog} process(es))")


if __name__ == "__main__":
    main()
