#!/usr/bin/env python
"""Training throughput: batchlab's trainer against a minimal hand-written PyTorch loop.

The requirement (the project's performance issue): batchlab trains at >= 95% of the samples/s of
a minimal raw loop -- same model, same optimizer, data pre-loaded as tensors, `randperm` + index
slicing, nothing else -- at every batch size from 1 to the full batch.

Three columns, measured in ONE process, interleaved repetition by repetition:

  a  raw       the reference: randperm per epoch, x[perm[i:i+bs]], forward, loss, zero_grad,
               backward, step. Nothing else.
  b  batchlab  `batchlab.train.run_trial` on a trial built by `config.validate` + `grid.expand`,
               i.e. exactly what `batchlab sweep` runs. Two clocks: the trainer's own
               (summary["train_seconds"], which excludes evaluation and log rows) and an external
               one (wall clock around the whole run_trial call minus its eval/noise seconds, so it
               includes building the model, the log rows and writing summary.json).
  c  tutorial  DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True): per-sample indexing
               and default_collate, the loop a user would write from a tutorial.

Each (model, batch size) is calibrated on column a to a fixed step count lasting about --seconds;
a, b and c then run that same number of steps, each from a freshly built model (seed 0).
Every column is warmed up (a short untimed run) before timing; the order of the columns is rotated
each repetition (a b c, b c a, c a b, ...) so that no column always runs in the same position.
Ratios are the median over repetitions of the per-repetition ratio (the columns of one
repetition ran within seconds of each other, so machine drift mostly cancels).

    python benchmarks/throughput.py                          # everything, ~5-10 min on 2 CPU cores
    python benchmarks/throughput.py --models mlp --batch-sizes 1,8,full --reps 5
    python benchmarks/throughput.py --device cuda

Results: <out>/throughput.csv (medians, one row per model and batch size), <out>/throughput_reps.csv
(every repetition) and <out>/throughput.md; CSV headers are '# key: value' lines
(pandas: `pd.read_csv(path, comment="#")`).
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

# Measure the batchlab of the checkout this file is in, not whichever copy is installed.
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import batchlab
from batchlab.config import validate
from batchlab.data import Data, load_dataset
from batchlab.grid import expand
from batchlab.machine import resolve_device
from batchlab.models import build_model
from batchlab.schema import DatasetConfig, ModelConfig
from batchlab.train import run_trial

MODELS = {"mlp": {"name": "mlp", "hidden": [256]}, "lenet5": {"name": "lenet5"}}
DEFAULT_BATCH_SIZES = "1,8,32,128,512,2048,8192,full"
LR, MOMENTUM, SEED = 0.01, 0.9, 0
EVAL_EXAMPLES = 64  # batchlab evaluates at step 0 and at the end (off its clock): keep that negligible
COLUMNS = ("a", "b", "c")
NAMES = {"a": "raw loop", "b": "batchlab", "c": "DataLoader tutorial"}
GOAL = 0.95


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh(spec: dict, data: Data, device: torch.device):
    """The model and optimizer every column starts from: seed 0, SGD(lr 0.01, momentum 0.9)."""
    torch.manual_seed(SEED)
    model = build_model(ModelConfig(**spec), data.input_shape, data.num_classes).to(device)
    model.train()
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


@dataclass
class Timing:
    samples: int
    seconds: float
    external_seconds: float | None = None  # column b only: wall clock around run_trial minus eval
    cpu_seconds: float | None = None  # process CPU time (all threads) over the same span as `seconds`


class Stopwatch:
    """Wall clock and process CPU time together; synchronises the device before each reading.

    On a machine shared with other work, CPU time is the steadier of the two when torch runs one
    thread: time-sharing with other processes stretches the wall clock, not this process's CPU time."""

    def __init__(self, device: torch.device):
        self.device = device
        sync(device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        sync(self.device)
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


# ---------------------------------------------------------------- the three columns

def run_raw(spec: dict, data: Data, bs: int, steps: int, device: torch.device) -> Timing:
    """(a) The reference: pre-loaded tensors, randperm + index slicing, nothing else."""
    model, opt = fresh(spec, data, device)
    x, y = data.train.x, data.train.y
    n = len(x)
    gen = torch.Generator(device=x.device).manual_seed(SEED)
    step = samples = 0
    watch = Stopwatch(device)
    while step < steps:
        perm = torch.randperm(n, generator=gen, device=x.device)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            samples += len(idx)
            step += 1
            if step == steps:
                break
    wall, cpu = watch.stop()
    return Timing(samples, wall, cpu_seconds=cpu)


def run_batchlab(spec: dict, data: Data, bs: int, steps: int, device: torch.device) -> Timing:
    """(b) batchlab's trainer, through the same public pieces a sweep uses."""
    exp_raw = {"name": "bench", "dataset": {"name": "fashion-mnist"}, "model": dict(spec),
               "optimizer": {"name": "sgd", "momentum": MOMENTUM}, "lr": LR, "batch_size": bs,
               "budget": {"steps": steps}, "eval": {"every": 1e9, "train_subset": 0},
               "target": {"value": []}, "device": device.type, "seed": SEED}
    trial = expand(validate(exp_raw))[0]
    with tempfile.TemporaryDirectory(prefix="batchlab-throughput-") as tmp:
        watch = Stopwatch(device)
        # judge=False: this measures speed, not learning (a few hundred steps at batch 1 may end no better
        # than chance, which a sweep records as diverged)
        summary = run_trial(trial.config, trial.id, trial.axes, Path(tmp), data, device,
                            command="benchmarks/throughput.py", judge=False)
        wall, cpu = watch.stop()
    if summary["status"] != "completed":
        raise RuntimeError(f"batchlab trial {summary['status']}: {summary.get('error')}")
    off_clock = (summary.get("eval_seconds") or 0.0) + (summary.get("noise_seconds") or 0.0)
    # CPU time of the whole call minus the evaluation's wall seconds: evaluation is compute-bound
    # on this process, so its CPU time is close to its wall time times the threads busy (an
    # approximation, small since batchlab evaluates only at step 0 and at the end)
    return Timing(summary["examples"], summary["train_seconds"], wall - off_clock,
                  cpu_seconds=cpu - off_clock * min(torch.get_num_threads(), cpu / wall if wall > 0 else 1))


def run_tutorial(spec: dict, data: Data, x_cpu: torch.Tensor, y_cpu: torch.Tensor, bs: int, steps: int,
                 device: torch.device) -> Timing:
    """(c) The tutorial loop: a DataLoader over a TensorDataset, per-sample indexing, default collate.

    The data set stays on the CPU and each batch is moved with .to(device), as tutorials do
    (on the CPU that move is a no-op)."""
    model, opt = fresh(spec, data, device)
    loader = DataLoader(TensorDataset(x_cpu, y_cpu), batch_size=bs, shuffle=True)
    step = samples = 0
    watch = Stopwatch(device)
    while step < steps:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            samples += len(xb)
            step += 1
            if step == steps:
                break
    wall, cpu = watch.stop()
    return Timing(samples, wall, cpu_seconds=cpu)


# ---------------------------------------------------------------- driver

def calibrate(spec: dict, data: Data, bs: int, device: torch.device, seconds: float) -> tuple[int, float]:
    """Steps for one measurement of about `seconds`, from column a (this also warms column a up).

    Runs column a with a growing step count until one run lasts >= seconds / 4 (or one step alone
    lasts longer than that), then twice more at that count unless one step already exceeds
    `seconds`; the estimate is the fastest of those runs, since a busy machine only ever slows a run
    down (a calibration hit by another process's burst would otherwise shrink every measurement)."""
    k = 1
    while True:
        t = run_raw(spec, data, bs, k, device)
        per_step = t.seconds / k
        if t.seconds >= seconds / 4:
            break
        k = max(2 * k, math.ceil(0.3 * seconds / max(per_step, 1e-7)))
    if per_step < seconds:
        for _ in range(2):
            per_step = min(per_step, run_raw(spec, data, bs, k, device).seconds / k)
    return max(1, round(seconds / per_step)), per_step


def measure(col: str, spec: dict, data: Data, data_cpu: tuple, bs: int, steps: int, device: torch.device) -> Timing:
    gc.collect()
    if col == "a":
        return run_raw(spec, data, bs, steps, device)
    if col == "b":
        return run_batchlab(spec, data, bs, steps, device)
    return run_tutorial(spec, data, *data_cpu, bs, steps, device)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def bench_one(model_name: str, bs: int, data: Data, data_cpu: tuple, device: torch.device,
              args: argparse.Namespace, log) -> tuple[dict, list[dict]]:
    spec = MODELS[model_name]
    steps, per_step = calibrate(spec, data, bs, device, args.seconds)
    log(f"{model_name} bs={bs}: {steps} steps per measurement ({per_step * 1e3:.3f} ms/step on the raw loop)")
    warm = max(1, min(steps, round(steps * args.warmup)))
    for col in ("b", "c"):  # a was warmed up by the calibration
        measure(col, spec, data, data_cpu, bs, warm, device)
    reps = []
    for r in range(args.reps):
        order = COLUMNS[r % 3:] + COLUMNS[:r % 3]
        t = {col: measure(col, spec, data, data_cpu, bs, steps, device) for col in order}
        if len({t[c].samples for c in COLUMNS}) != 1:
            raise RuntimeError(f"columns trained on different numbers of samples: { {c: t[c].samples for c in COLUMNS} }")
        sps = {c: t[c].samples / t[c].seconds for c in COLUMNS}
        cps = {c: t[c].samples / t[c].cpu_seconds for c in COLUMNS}  # samples per CPU-second
        b_ext = t["b"].samples / t["b"].external_seconds
        row = {"model": model_name, "batch_size": bs, "rep": r, "order": "".join(order), "steps": steps,
               "samples": t["a"].samples, "a_sps": sps["a"], "b_sps": sps["b"], "b_ext_sps": b_ext,
               "c_sps": sps["c"], "b_over_a": sps["b"] / sps["a"], "b_ext_over_a": b_ext / sps["a"],
               "b_over_c": sps["b"] / sps["c"], "a_cpu_sps": cps["a"], "b_cpu_sps": cps["b"], "c_cpu_sps": cps["c"],
               "b_over_a_cpu": cps["b"] / cps["a"], "b_over_c_cpu": cps["b"] / cps["c"],
               "loadavg_1min": os.getloadavg()[0]}
        reps.append(row)
        log(f"  rep {r} ({row['order']}): a {sps['a']:,.0f}  b {sps['b']:,.0f} (external {b_ext:,.0f})  "
            f"c {sps['c']:,.0f} samples/s   b/a {row['b_over_a']:.3f}  b/c {row['b_over_c']:.3f}   "
            f"CPU-time b/a {row['b_over_a_cpu']:.3f}  load {row['loadavg_1min']:.1f}")
    keys = ("a_sps", "b_sps", "b_ext_sps", "c_sps", "b_over_a", "b_ext_over_a", "b_over_c",
            "a_cpu_sps", "b_cpu_sps", "c_cpu_sps", "b_over_a_cpu", "b_over_c_cpu", "loadavg_1min")
    summary = {"model": model_name, "batch_size": bs, "steps": steps, "samples": reps[0]["samples"],
               "reps": len(reps), **{k: median(r[k] for r in reps) for k in keys},
               "b_over_a_min": min(r["b_over_a"] for r in reps), "b_over_a_max": max(r["b_over_a"] for r in reps)}
    return summary, reps


def parse_batch_sizes(text: str, n: int) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        bs = n if part == "full" else int(part)
        if bs < 1:
            raise SystemExit(f"--batch-sizes: {part!r} is not a positive size")
        sizes.append(min(bs, n))  # a batch larger than the data set is the full batch, as in batchlab
    return list(dict.fromkeys(sizes))


def header(args: argparse.Namespace, device: torch.device, n: int) -> dict:
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = platform.processor() or platform.machine()
    cpu = _cpu_model()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{machine}{f' ({cpu})' if cpu and cpu != machine else ''}, {os.cpu_count()} CPUs",
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "batchlab": f"{batchlab.__version__} ({Path(batchlab.__file__).resolve().parent})",
        "data": f"fashion-mnist train, {n} examples", "optimizer": f"SGD lr {LR} momentum {MOMENTUM}",
        "reps": args.reps, "seconds_per_measurement": args.seconds,
        "loadavg_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "command": "python " + " ".join([_rel(sys.argv[0])] + sys.argv[1:]),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _rel(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def fmt_bs(bs: int, n: int) -> str:
    return f"full ({bs})" if bs == n else str(bs)


def markdown(head: dict, rows: list[dict], n: int, elapsed: float) -> str:
    lines = ["# batchlab training throughput", ""]
    lines += [f"- {k}: {v}" for k, v in head.items()]
    lines += [f"- loadavg_at_end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
              f"- total time: {elapsed:.0f} s", "",
              "samples/s, median over repetitions; ratios are the median of the per-repetition ratios. "
              "a: raw loop (randperm + index slicing); b: batchlab run_trial, trainer clock "
              "(b ext: external wall clock around run_trial minus evaluation); c: DataLoader(TensorDataset) "
              f"with per-sample indexing. b/a CPU time: the same ratio in samples per process CPU-second "
              f"(b over the whole run_trial call minus evaluation). Goal: b/a >= {GOAL}.", "",
              "| model | batch | steps | a raw | b batchlab | b ext | c DataLoader | b/a | b/a min-max | b ext/a | b/c "
              "| b/a CPU time | b/a >= 0.95 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {fmt_bs(r['batch_size'], n)} | {r['steps']} | {r['a_sps']:,.0f} | {r['b_sps']:,.0f} | "
            f"{r['b_ext_sps']:,.0f} | {r['c_sps']:,.0f} | {r['b_over_a']:.3f} | "
            f"{r['b_over_a_min']:.2f}-{r['b_over_a_max']:.2f} | {r['b_ext_over_a']:.3f} | {r['b_over_c']:.2f} | "
            f"{r['b_over_a_cpu']:.3f} | "
            f"{'yes' if r['b_over_a'] >= GOAL else '**no**'} |")
    far = [r for r in rows if abs(r["b_ext_sps"] / r["b_sps"] - 1) > 0.05]
    if far:
        lines += ["", "The trainer's clock and the external clock differ by more than 5% at: "
                  + ", ".join(f"{r['model']} bs {fmt_bs(r['batch_size'], n)} "
                              f"({r['b_ext_sps'] / r['b_sps'] - 1:+.1%})" for r in far)
                  + " (the external clock also counts building the model, log rows and writing summary.json)."]
    noisy = [r for r in rows if r["b_over_a_max"] / r["b_over_a_min"] > 1.25]
    if noisy:
        lines += ["", f"Noisy: the per-repetition b/a spread exceeds 25% at {len(noisy)} of {len(rows)} points "
                  "(see every repetition, with the load average, in throughput_reps.csv). A median of few "
                  "repetitions cannot tell a 5% difference apart on such a machine: rerun the points in "
                  "question with more, shorter repetitions, e.g. --reps 25 --seconds 0.25. (Where the CPU-time "
                  "ratio follows the wall-clock one, the noise is not time-sharing with other processes.)"]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, head: dict, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        for k, v in head.items():
            f.write(f"# {k}: {v}\n")
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES, help="comma-separated; 'full' is the whole training set")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of a, b, c")
    p.add_argument("--seconds", type=float, default=1.0, help="target seconds per measurement (a fixed step count "
                   "calibrated on the raw loop; at least one step)")
    p.add_argument("--warmup", type=float, default=0.25, help="untimed warm-up run per column, as a fraction of "
                   "a measurement's steps (at least one step)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="directory for throughput.csv, throughput_reps.csv and throughput.md")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--check", action="store_true", help=f"exit 1 when b/a < {GOAL} anywhere")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        p.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    if args.reps < 1 or args.seconds <= 0:
        p.error("--reps must be >= 1 and --seconds > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    started = time.perf_counter()
    loaded = load_dataset(DatasetConfig(name="fashion-mnist"), seed=SEED)
    loaded = replace(loaded, eval=loaded.eval.head(EVAL_EXAMPLES))
    data = loaded.to(device)  # a and b train from the same device-resident tensors, as a sweep's DataCache does
    data_cpu = (loaded.train.x, loaded.train.y)
    n = len(data.train)
    sizes = parse_batch_sizes(args.batch_sizes, n)
    head = header(args, device, n)
    log(f"{head['machine']}; torch {head['torch']}, {head['threads']} threads, device {device}")

    rows, reps = [], []
    for model_name in models:
        for bs in sizes:
            summary, rep_rows = bench_one(model_name, bs, data, data_cpu, device, args, log)
            rows.append(summary)
            reps.extend(rep_rows)
    elapsed = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(head, rows, n, elapsed)
    (args.out / "throughput.md").write_text(md)
    write_csv(args.out / "throughput.csv", head, rows)
    write_csv(args.out / "throughput_reps.csv", head, reps)
    print(md)
    log(f"wrote {args.out / 'throughput.md'}, throughput.csv and throughput_reps.csv ({elapsed:.0f} s)")
    return 1 if args.check and any(r["b_over_a"] < GOAL for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
