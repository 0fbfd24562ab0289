"""Build sweep records by hand, as `batchlab sweep` would leave them (see the records contract).

Nothing here calls the report code: tests compare its output with numbers they set here.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

HEADER = "step,epoch,examples,train_seconds,lr,train_loss,test_loss,test_accuracy,noise_g2"
# What `batchlab sweep` writes today (records.METRIC_COLUMNS); used when a trial asks for the
# train-subset evaluation or the noise scale, so the older HEADER above stays covered too.
FULL_HEADER = ("step,epoch,examples,train_seconds,lr,train_loss,test_loss,test_accuracy,"
               "train_eval_loss,train_eval_accuracy,noise_g2,noise_trace,noise_b_simple")


def hit(seconds: float, steps: int, batch_size: int, steps_per_epoch: int) -> dict:
    """A summary.json target entry."""
    return {"seconds": seconds, "steps": steps, "epochs": steps / steps_per_epoch,
            "examples": steps * batch_size}


def make_sweep(root: Path, name: str, sweep_yaml: str | None = None) -> Path:
    sweep = root / name
    (sweep / "trials").mkdir(parents=True, exist_ok=True)
    (sweep / "sweep.yaml").write_text(sweep_yaml or f"name: {name}\nsweep:\n  batch_size: [32, 64]\n")
    return sweep


def make_trial(sweep: Path, batch_size: int, lr: float, seed: int = 0, *,
               status: str | None = "completed",
               hits: dict[float, dict | None] | None = None,
               targets: tuple[float, ...] = (0.9,),
               target_metric: str = "test_accuracy",
               dataset: str = "digits", model: str = "mlp",
               train_size: int = 1000,
               samples_per_second: float = 1000.0,
               final_accuracy: float | None = 0.9, final_loss: float | None = 0.3,
               final_train_loss: float | None = 0.25,
               total_steps: int | None = None,
               metrics: bool = True, extra_axes: dict | None = None,
               peak_memory: int | None = None,
               train_eval_gap: Callable[[float], float] | None = None,
               noise: Callable[[int], float] | None = None,
               summary_noise: dict | None = None,
               lr_rule: dict | None = None,
               noise_every: float | None = None,
               config_extra: dict | None = None,
               error: str | None = None, points: int = 40, context: int | None = None) -> Path:
    """One trial directory. status=None leaves out summary.json (an incomplete trial).
    `hits` maps a target value to a hit(...) entry or None (never reached).
    `train_eval_gap(progress)`: write train_eval_* columns at evaluation rows, the train-subset
    accuracy that much above the test accuracy (the loss that much below the test loss).
    `noise(i)`: noise_b_simple of metrics row i (nan allowed; None: the cell is left empty).
    `summary_noise`: summary.json's "noise"; `lr_rule`: config.json's "lr_rule".
    `config_extra`: sections of config.json to set (e.g. a model named by import path, a loss);
    `error`: summary.json's error (default: "loss is nan" for a diverged trial); `points`: metrics.csv's rows
    after step 0 (every fourth an evaluation). `context`: a sequence task's tokens per example: summary.json gets
    context, tokens and tokens_per_second, and each hit tokens (examples x context) unless it has them already."""
    steps_per_epoch = math.ceil(train_size / batch_size)
    total_steps = total_steps or 5 * steps_per_epoch
    number = sum(1 for _ in (sweep / "trials").iterdir())  # keeps ids unique across other axes
    trial_id = f"bs{batch_size:04d}-lr{lr:g}-s{seed}-{number:06x}"
    trial = sweep / "trials" / trial_id
    trial.mkdir(parents=True)
    axes = {"batch_size": batch_size, "lr": lr, "seed": seed, **(extra_axes or {})}
    config = {
        "name": sweep.name,
        "dataset": {"name": dataset, "train_size": train_size},
        "model": {"name": model, "hidden": [64]},
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {"name": "constant", "warmup_epochs": 0.0},
        "budget": {"epochs": 5.0, "steps": None, "examples": None, "stop_at_target": False},
        "target": {"metric": target_metric, "value": list(targets)},
        "eval": {"every": 0.5, "batch_size": 500},
        "batch_size": batch_size, "lr": lr, "seed": seed,
        "device": "cpu", "precision": "fp32", "axes": axes,
        "noise": {"every": noise_every, "batch_size": 1024, "small_batch_size": 64},
        "lr_rule": lr_rule,
        **(config_extra or {}),
    }
    (trial / "config.json").write_text(json.dumps(config))
    seconds_per_step = batch_size / samples_per_second
    if metrics:
        (trial / "metrics.csv").write_text(
            metrics_csv(total_steps, steps_per_epoch, batch_size, lr, seconds_per_step,
                        final_train_loss if final_train_loss is not None else math.nan,
                        regression=target_metric == "test_loss", diverge=status == "diverged",
                        train_eval_gap=train_eval_gap, noise=noise, points=points))
    if status is None:
        return trial
    hits = hits if hits is not None else {t: None for t in targets}
    summary = {
        "status": status, "trial_id": trial_id, "batch_size": batch_size, "lr": lr, "seed": seed,
        "axes": axes, "steps": total_steps, "epochs": total_steps / steps_per_epoch,
        "examples": total_steps * batch_size, "steps_per_epoch": steps_per_epoch, "train_size": train_size,
        "train_seconds": total_steps * seconds_per_step, "eval_seconds": 0.5,
        "samples_per_second": samples_per_second, "peak_memory_bytes": peak_memory,
        "final": {"train_loss": final_train_loss, "test_loss": final_loss,
                  "test_accuracy": None if target_metric == "test_loss" else final_accuracy},
        "target_metric": target_metric,
        "targets": {f"{t:g}": hits.get(t) for t in targets},
        "noise": summary_noise,
        "device": "cpu", "device_name": "Test CPU", "threads": 2, "precision": "fp32",
        "torch_version": "2.13.0", "batchlab_version": "0.1.0", "python_version": "3.11.2",
        "command": f"batchlab sweep configs/{sweep.name}.yaml",
        "error": error if error is not None else "loss is nan" if status == "diverged" else None,
        "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:01:00",
    }
    if context is not None:
        summary.update(context=context, tokens=summary["examples"] * context,
                       tokens_per_second=samples_per_second * context)
        summary["targets"] = {t: h if h is None or "tokens" in h else {**h, "tokens": h["examples"] * context}
                              for t, h in summary["targets"].items()}
    (trial / "summary.json").write_text(json.dumps(summary))
    return trial


def metrics_csv(total_steps: int, steps_per_epoch: int, batch_size: int, lr: float,
                seconds_per_step: float, final_train_loss: float, regression: bool = False,
                diverge: bool = False, points: int = 40,
                train_eval_gap: Callable[[float], float] | None = None,
                noise: Callable[[int], float] | None = None) -> str:
    """A plausible metrics.csv: an evaluation-only row at step 0, log rows, and an evaluation
    every fourth log row. Loss decays from 2.3 towards final_train_loss."""
    steps = np.unique(np.linspace(0, total_steps, points + 1).round().astype(int))
    full = train_eval_gap is not None or noise is not None
    lines = [FULL_HEADER if full else HEADER]
    floor = final_train_loss if math.isfinite(final_train_loss) else 0.5
    for i, step in enumerate(steps):
        progress = step / max(total_steps, 1)
        loss = floor + (2.3 - floor) * math.exp(-6 * progress)
        if diverge and progress > 0.5:
            loss = loss * 10 ** (20 * (progress - 0.5))
        evaluate = i % 4 == 0 or step == total_steps
        test_loss = f"{loss * 1.1:.6g}" if evaluate else ""
        accuracy = "" if regression or not evaluate else f"{min(0.99, 1 - loss / 2.5):.4f}"
        train_loss = "" if step == 0 else f"{loss:.6g}"
        row = (f"{step},{step / steps_per_epoch:.6g},{step * batch_size},{step * seconds_per_step:.6g},"
               f"{lr:g},{train_loss},{test_loss},{accuracy}")
        if not full:
            lines.append(row + f",{0.01 * (i + 1):.3g}")
            continue
        train_eval_loss = train_eval_accuracy = ""
        if train_eval_gap is not None and evaluate:
            gap = train_eval_gap(progress)
            train_eval_loss = f"{loss * 1.1 - gap:.6g}"
            train_eval_accuracy = "" if regression else f"{float(accuracy) + gap:.4f}"
        b_simple = noise(i) if noise is not None else None
        noise_cells = ",," if b_simple is None else f"1,{b_simple!r},{b_simple!r}"
        lines.append(row + f",{train_eval_loss},{train_eval_accuracy},{noise_cells}")
    return "\n".join(lines) + "\n"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> str:
    """Assert `path` is a real, non-blank PNG of report size; return its Description text."""
    import matplotlib.image
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 5_000, path
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        description = image.text.get("Description", "")
    assert width >= 800 and height >= 300, (path, (width, height))
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.01  # not a blank canvas
    return description


def make_step_times(sweep: Path, per_step: dict[int | tuple[int, str, object], list[float]], threads: int = 2,
                    clock: str | None = None) -> Path:
    """step_times.json as `batchlab sweep` writes it: `per_step` maps a batch size to its seconds per step in each
    round (every batch size the same number of rounds), recorded as 10 steps a timing; a key (batch size, axis,
    value) times that batch size at one value of another swept axis (e.g. (16, "dataset.context", 8)). `clock`:
    steptime's CPU_CLOCK or WALL_CLOCK (None: left out, as older records)."""
    def subject(key) -> dict:
        return {"batch_size": key, "axes": {}} if isinstance(key, int) else {"batch_size": key[0],
                                                                            "axes": {key[1]: key[2]}}

    timings = [{**subject(key), "round": r, "steps": 10, "seconds": 10 * value}
               for key, values in per_step.items() for r, value in enumerate(values)]
    path = sweep / "step_times.json"
    path.write_text(json.dumps({"device": "cpu", "device_name": "Test CPU", "threads": threads,
                                "torch_version": "2.13.0", "measured_at": "2025-01-01T00:02:00",
                                "rounds": len(next(iter(per_step.values()))), "seconds_per_timing": 0.1,
                                "cost_seconds": sum(t["seconds"] for t in timings), "errors": [],
                                "timings": timings, **({"clock": clock} if clock else {})}))
    return path


def schedule_examples(changes: list[tuple[int, int]], step: int) -> int:
    """Examples after `step` steps of a schedule that trains at batch b from step s on, for each (s, b)."""
    total = 0
    for i, (start, batch) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else step
        total += max(0, min(end, step) - start) * batch
    return total


def make_schedule_trial(sweep: Path, changes: list[tuple[int, int]], lr: float, seed: int = 0, *,
                        reached_at: int | None, total_steps: int = 200, lr_scale: str | None = "sqrt",
                        status: str = "completed", target: float = 0.9, seconds_per_example: float = 1e-4,
                        train_size: int = 100_000, schedule: dict | None = None, log_every: int = 10) -> Path:
    """A trial whose batch size followed a schedule, as the records contract has it: config.json's batch_size is
    the starting one and batch_schedule the schedule (points in examples); summary.json's batch_changes the batch
    sizes it used from which step; metrics.csv a batch_size column. `changes`: (from step, batch size), the
    first at step 0; `reached_at`: the step it reached `target` (None: never). `schedule`: the recorded schedule
    (e.g. follow: noise, whose changes differ by seed) in place of the one the changes follow. metrics.csv has a
    row, each an evaluation, every `log_every` steps."""
    points = [[schedule_examples(changes, start), batch] for start, batch in changes]
    schedule = schedule or {"schedule": points, "unit": "examples", "lr_scale": lr_scale}
    start, last = changes[0][1], changes[-1][1]
    number = sum(1 for _ in (sweep / "trials").iterdir())
    trial_id = f"bs{start:04d}to{last:04d}-lr{lr:g}-s{seed}-{number:06x}"
    trial = sweep / "trials" / trial_id
    trial.mkdir(parents=True)
    axes = {"batch_size": schedule, "lr": lr, "seed": seed}
    config = {"name": sweep.name, "dataset": {"name": "digits", "train_size": train_size},
              "model": {"name": "mlp", "hidden": [64]}, "optimizer": {"name": "sgd", "momentum": 0.9},
              "schedule": {"name": "constant", "warmup_epochs": 0.0},
              "budget": {"epochs": None, "steps": total_steps, "examples": None, "stop_at_target": False},
              "target": {"metric": "test_accuracy", "value": [target]}, "eval": {"every": 0.5, "batch_size": 500},
              "batch_size": start, "batch_schedule": schedule, "lr": lr, "seed": seed, "device": "cpu",
              "precision": "fp32", "axes": axes, "noise": {"every": None}, "lr_rule": None}
    (trial / "config.json").write_text(json.dumps(config))
    examples = lambda step: schedule_examples(changes, step)  # noqa: E731
    lines = ["step,epoch,examples,train_seconds,lr,batch_size,train_loss,test_loss,test_accuracy"]
    for step in range(0, total_steps + 1, log_every):
        batch = [b for s, b in changes if s <= step][-1]  # the batch size the next step trains at
        accuracy = min(0.95, 0.5 + 0.4 * step / (reached_at or 10 * total_steps))
        lines.append(f"{step},{examples(step) / train_size:.6g},{examples(step)},"
                     f"{examples(step) * seconds_per_example:.6g},{lr:g},{batch},{1.0 - accuracy / 2:.4g},"
                     f"{1.1 - accuracy / 2:.4g},{accuracy:.4f}")
    (trial / "metrics.csv").write_text("\n".join(lines) + "\n")
    hit_entry = None if reached_at is None else {
        "seconds": examples(reached_at) * seconds_per_example, "steps": reached_at,
        "epochs": examples(reached_at) / train_size, "examples": examples(reached_at)}
    summary = {
        "status": status, "trial_id": trial_id, "batch_size": start, "lr": lr, "seed": seed, "axes": axes,
        "batch_schedule": schedule,
        "batch_changes": [{"step": s, "examples": examples(s), "batch_size": b, "lr": lr} for s, b in changes],
        "steps": total_steps, "epochs": examples(total_steps) / train_size, "examples": examples(total_steps),
        "steps_per_epoch": 1, "train_size": train_size,
        "train_seconds": examples(total_steps) * seconds_per_example, "eval_seconds": 0.5,
        "samples_per_second": 1 / seconds_per_example, "peak_memory_bytes": None,
        "final": {"train_loss": 0.55, "test_loss": 0.6, "test_accuracy": 0.95 if reached_at else 0.85},
        "target_metric": "test_accuracy", "targets": {f"{target:g}": hit_entry}, "noise": None,
        "device": "cpu", "device_name": "Test CPU", "threads": 2, "precision": "fp32",
        "torch_version": "2.13.0", "batchlab_version": "0.1.0", "python_version": "3.11.2",
        "command": f"batchlab sweep configs/{sweep.name}.yaml", "error": None,
        "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:01:00",
    }
    (trial / "summary.json").write_text(json.dumps(summary))
    return trial
