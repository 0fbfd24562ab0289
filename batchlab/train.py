"""Train one trial: one loop, timed honestly, writing metrics.csv as it goes and summary.json at the end."""

from __future__ import annotations

import contextlib
import math
import platform
import resource
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import batchlab
from batchlab.config import Experiment, ScheduleConfig
from batchlab.data import Data, make_loader
from batchlab.errors import ConfigError
from batchlab.models import build_model
from batchlab.noise import NoiseScale, measure
from batchlab.records import MetricsWriter, write_json_atomic
from batchlab.sweep import Trial

Progress = Callable[[int, int, dict], None]  # (step, total_steps, latest figures)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but CUDA is not available here (torch {torch.__version__}); "
                          "use device: auto or cpu")
    return torch.device(name)


def make_optimizer(cfg: Experiment, params) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    kind = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return kind(params, lr=cfg.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_factor(s: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak lr before optimizer step `step` (0-based): warmup, then the schedule.

    Set straight into the optimizer rather than through an LRScheduler, and only when it varies:
    at batch size 1 a scheduler's per-step bookkeeping is a measurable part of a step.
    """
    warmup = round(s.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if s.name == "step":
            return s.gamma ** math.floor(step / (s.step_epochs * steps_per_epoch))
        if s.name == "cosine":
            progress = (step - warmup) / max(1, total_steps - warmup)
            return s.final_fraction + (1 - s.final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    factor.varies = warmup > 0 or s.name != "constant"
    return factor


def budget_steps(cfg: Experiment, n: int, steps_per_epoch: int, batch: int) -> int:
    b = cfg.budget
    if b.steps is not None:
        return b.steps
    if b.examples is not None:
        return max(1, math.ceil(b.examples / batch))
    return max(1, math.ceil(b.epochs * steps_per_epoch))


@dataclass
class State:
    """What a trial has done so far: enough to write an honest summary at any moment."""
    status: str = "completed"
    error: str | None = None
    step: int = 0
    examples: int = 0
    steps_per_epoch: int = 1
    train_size: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    noise_seconds: float = 0.0
    compile_seconds: float | None = None
    micro_batch_size: int | None = None
    final: dict = field(default_factory=lambda: {"train_loss": None, "test_loss": None, "test_accuracy": None})
    targets: dict = field(default_factory=dict)
    noise: dict | None = None
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def noise_batch_sizes(cfg: Experiment, n: int) -> tuple[int, int]:
    """(B_small, B_big): as configured, capped at the data set, B_big a multiple of B_small."""
    b_small = min(cfg.noise.small_batch_size, n // 2)
    return b_small, min(cfg.noise.batch_size, n) // b_small * b_small


class NoiseProbe:
    """Measures the gradient noise scale every `noise.every` epochs, off the training clock.

    B_big examples (capped at the data set, a multiple of B_small) are drawn with a generator of their
    own, so measuring never changes the training data order.
    """

    def __init__(self, cfg: Experiment, n: int, steps_per_epoch: int, criterion):
        self.every = max(1, round(cfg.noise.every * steps_per_epoch))  # in steps
        self.b_small, self.b_big = noise_batch_sizes(cfg, n)
        self.criterion = criterion
        self.scale = NoiseScale(n=n)  # finite-population correction: we sample without replacement from n
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.count = 0

    def measure(self, model, x, y) -> dict:
        g_small, g_big = measure(model, self.criterion, x, y, self.b_small, self.b_big, self.generator)
        g2, trace, b_simple = self.scale.update(g_small, g_big, self.b_small, self.b_big)
        self.count += 1
        return {"noise_g2": g2, "noise_trace": trace, "noise_b_simple": b_simple}

    def summary(self) -> dict:
        g2, trace, b_simple = self.scale.value
        return {"g2": g2, "trace": trace, "b_simple": b_simple, "b_small": self.b_small, "b_big": self.b_big,
                "measurements": self.count}


class Clock:
    """Accumulates training seconds; synchronises the device before every reading."""

    def __init__(self, device: torch.device):
        self.device, self.total, self.since = device, 0.0, None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self.sync()
        self.since = time.perf_counter()

    def stop(self) -> float:
        self.sync()
        self.total += time.perf_counter() - self.since
        return self.total


def loss_fn(task: str):
    if task == "regression":
        return lambda out, y: F.mse_loss(out.squeeze(-1), y)
    return F.cross_entropy


@torch.inference_mode()
def evaluate(model, x, y, task: str, batch_size: int) -> tuple[float, float | None]:
    """Mean loss and accuracy over (x, y), in large batches; one sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        out, target = model(x[i:i + batch_size]).float(), y[i:i + batch_size]
        if task == "regression":
            loss_sum += F.mse_loss(out.squeeze(-1), target, reduction="sum")
        else:
            loss_sum += F.cross_entropy(out, target, reduction="sum")
            correct += (out.argmax(-1) == target).sum()
    model.train(was_training)
    n = len(x)
    return loss_sum.item() / n, (correct.item() / n if task == "classification" else None)


def reached(metric: str, value: float | None, threshold: float) -> bool:
    if value is None:
        return False
    return value >= threshold if metric == "test_accuracy" else value <= threshold


def train(trial: Trial, data: Data, device: torch.device, state: State, metrics: MetricsWriter,
          progress: Progress | None = None) -> torch.nn.Module:
    """The loop. Returns the trained model; everything measured goes to `state` and `metrics`."""
    cfg = trial.config
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3  # convolutions run faster NHWC on GPUs
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
    n = state.train_size = len(data.x_train)
    batch = min(cfg.batch_size, n)  # a batch larger than the data set is the full batch
    if cfg.micro_batch_size == "auto":
        raise ValueError("micro_batch_size: auto must be resolved before training (batchlab.run.resolve_max)")
    micro = state.micro_batch_size = min(cfg.micro_batch_size or batch, batch)  # gradient accumulation below batch
    spe = state.steps_per_epoch = n // batch if cfg.drop_last else math.ceil(n / batch)
    total = budget_steps(cfg, n, spe, batch)
    factor = lr_factor(cfg.schedule, spe, total)
    set_lr(optimizer, cfg.lr * factor(0))
    eval_every = max(1, round(cfg.eval.every * spe))  # in steps; every step when one step is > eval.every
    log_every = max(1, min(eval_every, round(cfg.eval.log_every * spe)))
    generator = torch.Generator(device=data.x_train.device).manual_seed(cfg.seed)
    loader = make_loader(data.x_train, data.y_train, batch, cfg.drop_last, generator)
    criterion = loss_fn(data.task)
    use_amp = cfg.precision != "fp32" and device.type == "cuda"
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    autocast = torch.autocast(device.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and cfg.precision == "fp16")
    train_x, train_y = data.x_train[:cfg.eval.train_subset], data.y_train[:cfg.eval.train_subset]
    noise = NoiseProbe(cfg, n, spe, criterion) if cfg.noise.every else None
    targets_left = sorted(cfg.target.value)
    state.targets = {f"{v:g}": None for v in cfg.target.value}

    def log(train_loss: float | None, with_eval: bool) -> dict:
        row = {"step": state.step, "epoch": state.step / spe, "examples": state.examples,
               "train_seconds": state.train_seconds, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss}
        if with_eval:
            t0 = time.perf_counter()
            row["test_loss"], row["test_accuracy"] = evaluate(model, data.x_eval, data.y_eval, data.task,
                                                              cfg.eval.batch_size)
            if len(train_x):
                row["train_eval_loss"], row["train_eval_accuracy"] = evaluate(model, train_x, train_y, data.task,
                                                                              cfg.eval.batch_size)
            state.eval_seconds += time.perf_counter() - t0
            state.final.update(test_loss=row["test_loss"], test_accuracy=row["test_accuracy"])
            for value in list(targets_left):
                if reached(cfg.target.metric, row[cfg.target.metric], value):
                    targets_left.remove(value)
                    state.targets[f"{value:g}"] = {"seconds": state.train_seconds, "steps": state.step,
                                                   "epochs": state.step / spe, "examples": state.examples}
        if noise and state.step % noise.every == 0:
            t0 = time.perf_counter()
            row.update(noise.measure(model, data.x_train, data.y_train))
            state.noise_seconds += time.perf_counter() - t0
            state.noise = noise.summary()
        if train_loss is not None:
            state.final["train_loss"] = train_loss
        metrics.write(row)
        if progress:
            progress(state.step, total, row)
        return row

    if cfg.compile:
        model = compiled(model, data, batch, cfg.drop_last, criterion, state)
    log(None, with_eval=True)  # the starting point of every curve
    model.train()
    clock = Clock(device)
    loss_sum, loss_count = torch.zeros((), device=device), 0
    clock.start()
    while state.step < total:
        for x, y in loader:  # one epoch
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-op when already there
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            for xm, ym in (zip(x.split(micro), y.split(micro)) if micro < len(x) else ((x, y),)):
                with autocast:
                    loss = criterion(model(xm), ym)
                if micro < len(x):  # accumulating: weight each micro-batch mean by its share of the batch
                    loss = loss * (len(xm) / len(x))
                scaler.scale(loss).backward()
                loss_sum += loss.detach().float()  # stays on the device: no sync per step
            scaler.step(optimizer)
            scaler.update()
            loss_count += 1
            state.step += 1
            if factor.varies:
                set_lr(optimizer, cfg.lr * factor(state.step))  # the lr of the next step
            state.examples += len(x)
            is_eval = state.step % eval_every == 0 or state.step == total
            if is_eval or state.step % log_every == 0 or (noise and state.step % noise.every == 0):
                state.train_seconds = clock.stop()
                train_loss = loss_sum.item() / loss_count  # micro-batch losses add up to their step's loss
                loss_sum.zero_()
                loss_count = 0
                if not math.isfinite(train_loss):
                    state.status = "diverged"
                    log(train_loss, with_eval=False)
                    return model
                log(train_loss, with_eval=is_eval)
                if cfg.budget.stop_at_target and cfg.target.value and not targets_left:
                    return model
                clock.start()
            if state.step == total:
                break
    state.train_seconds = clock.stop()
    return model


def compiled(model, data: Data, batch: int, drop_last: bool, criterion, state: State) -> torch.nn.Module:
    """torch.compile the model and compile it now, off the training clock: a forward and backward at the
    batch shapes training will see (the full batch, and the last partial one), gradients then dropped."""
    model = torch.compile(model)
    n = len(data.x_train)
    shapes = {batch} | ({n % batch} if n % batch and not drop_last else set())
    t0 = time.perf_counter()
    for size in sorted(shapes):
        criterion(model(data.x_train[:size]), data.y_train[:size]).backward()
    model.zero_grad(set_to_none=True)
    if data.x_train.device.type == "cuda":
        torch.cuda.synchronize(data.x_train.device)
    state.compile_seconds = time.perf_counter() - t0
    return model


def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "batchlab_version": batchlab.__version__,
            "python_version": platform.python_version(), "platform": platform.platform()}


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; the process's peak RSS


def run_trial(trial: Trial, trial_dir: Path, data: Data, device: torch.device, command: str,
              progress: Progress | None = None) -> dict:
    """Train and record one trial. A failure inside is recorded `failed`; Ctrl-C is recorded and re-raised."""
    cfg = trial.config
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    state = State()
    metrics = MetricsWriter(trial_dir / "metrics.csv")
    try:
        train(trial, data, device, state, metrics, progress)
    except KeyboardInterrupt:
        state.status = "interrupted"
        raise
    except Exception as e:  # one trial's failure (e.g. out of memory) must not end the sweep
        state.status, state.error = "failed", f"{type(e).__name__}: {e}"
    finally:
        metrics.close()
        summary = {
            "status": state.status, "trial_id": trial.id, "batch_size": cfg.batch_size, "lr": cfg.lr,
            "micro_batch_size": state.micro_batch_size,
            "seed": cfg.seed, "axes": trial.axes, "steps": state.step, "epochs": state.step / state.steps_per_epoch,
            "examples": state.examples, "steps_per_epoch": state.steps_per_epoch, "train_size": state.train_size,
            "train_seconds": state.train_seconds, "eval_seconds": state.eval_seconds,
            "noise_seconds": state.noise_seconds, "compile_seconds": state.compile_seconds,
            "samples_per_second": state.examples / state.train_seconds if state.train_seconds > 0 else None,
            "peak_memory_bytes": peak_memory(device), "final": state.final, "target_metric": cfg.target.metric,
            "targets": state.targets, "noise": state.noise, "eval_split": data.eval_split,
            "precision": cfg.precision, **environment(device), "command": command, "error": state.error,
            "started_at": state.started_at,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json_atomic(trial_dir / "summary.json", _finite(summary))
    return summary


def _finite(obj):
    """JSON has no NaN: a diverged loss is recorded as null (its status says why)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj
