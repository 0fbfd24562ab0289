"""Train one trial: one loop, timed honestly, writing metrics.csv as it goes and summary.json at the end."""

from __future__ import annotations

import math
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from batchlab import batches, registry
from batchlab.checkpoint import Checkpoints, Unusable, set_random_streams
from batchlab.checkpoint import remove as remove_checkpoint
from batchlab.data import Data
from batchlab.data.splits import kept_torch_stream, order_of
from batchlab.disk import write_json_atomic, write_text
from batchlab.errors import RecordsError, described
from batchlab.evaluation import did_not_learn, near, perplexity, reached, tally
from batchlab.fields import cadence
from batchlab.losses import build_loss
from batchlab.machine import Clock, machine_facts, now
from batchlab.memory import Peak
from batchlab.models import build_model
from batchlab.noise import NoiseMonitor
from batchlab.optimizers import build_optimizer
from batchlab.records import DONE, METRICS, MetricsWriter, Status, run_token
from batchlab.schedules import lr_schedule
from batchlab.schema import Experiment
from batchlab.step import Step, compiled, used_precision
from batchlab.summary import Summary

Progress = Callable[[int, int, dict], None]  # (step, total_steps, latest figures)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def budget_steps(cfg: Experiment, steps_per_epoch: int, batch: int, tokens_per_example: int = 1) -> int:
    unit, amount = cfg.budget.length
    if unit == "steps":
        return int(amount)
    if unit == "examples":
        return max(1, math.ceil(amount / batch))
    if unit == "tokens":
        return max(1, math.ceil(amount / (batch * tokens_per_example)))
    return max(1, math.ceil(amount * steps_per_epoch))


EXPLODED = 100  # a training loss this many times the initial loss has diverged, NaN or not


def hardest_target(cfg: Experiment) -> float | None:
    """The target a trial reaches last (the highest accuracy, the lowest loss): what racing times."""
    if not cfg.target.value:
        return None
    return max(cfg.target.value) if cfg.target.metric == "test_accuracy" else min(cfg.target.value)


def build_parts(cfg: Experiment, data: Data, device: torch.device):
    """(model, loss, optimizer) as the config names them, the model on the device, seeded by the trial."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    criterion = build_loss(cfg.loss, data.task, data.ignore_index)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    return model, criterion, optimizer


def train(cfg: Experiment, data: Data, device: torch.device, summary: Summary, metrics: MetricsWriter,
          progress: Progress | None = None, checkpoints: Checkpoints | None = None,
          deadline: float | None = None, peak: Peak | None = None,
          deadline_steps: int | None = None) -> torch.nn.Module:
    """The loop. Returns the trained model; everything measured goes to `summary` and `metrics`.

    With `checkpoints`, the loop resumes from the trial's checkpoint when it has one, and writes one
    at a log point every `checkpoint.every` minutes of training. With a `deadline` (racing: the best
    training seconds to the hardest target measured so far), the trial stops as soon as its clock passes
    it before reaching that target: its time to the target can then only be longer, so it cannot be the
    fastest. It is recorded `raced`. With `peak`, what is not training (evaluation, noise measurement,
    checkpoint writing) runs outside its measured segments.
    fastest. It is recorded `raced`. `deadline_steps` is the same race in steps (suggest: the best predicted
    seconds so far over this batch size's seconds per step): past that many steps without the target, stop.
    With a batch-size schedule (cfg.batch_schedule), each step trains at the batch size batches.Sizes wants
    after the examples so far; its budget, evaluations and lr schedule count examples (batches.budget).
    """
    def aside():
        """Not training: outside the peak memory; at step 0, before training starts, the heap trimmed after."""
        return peak.excluded(release=summary.steps == 0) if peak else nullcontext()
    model, criterion, optimizer = build_parts(cfg, data, device)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3  # convolutions run faster NHWC on GPUs
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = summary.train_size = len(data.train)
    batch = min(cfg.batch_size, n)  # a batch larger than the data set is the full batch
    if cfg.micro_batch_size == "auto":
        raise ValueError("micro_batch_size: auto must be resolved before training (batchlab.run.resolve_max)")
    sizes = batches.Sizes(cfg.batch_schedule, cfg.lr, n, data.context) if cfg.batch_schedule else None
    micro = min(cfg.micro_batch_size or batch, batch)  # gradient accumulation below batch (a schedule's: any batch)
    micro = summary.micro_batch_size = cfg.micro_batch_size if sizes else micro
    spe = summary.steps_per_epoch = n // batch if cfg.drop_last else math.ceil(n / batch)  # a schedule's: at its start
    per = data.tokens_per_example
    total = summary.budget_steps = budget_steps(cfg, spe, batch, per)
    budget_examples = None  # a schedule's budget (but steps) counts examples: its steps depend on its batch sizes
    if sizes:
        total, budget_examples, summary.budget_steps = batches.budget(sizes.schedule, cfg.budget.length, n,
                                                                     cfg.drop_last, per)
    by_examples = budget_examples is not None  # the lr schedule by examples (in steps of the starting batch)
    schedule = lr_schedule(cfg.schedule, spe, math.ceil(budget_examples / batch) if by_examples else total)
    # evaluation, logging and noise cadence in steps; a schedule's in examples (its steps per epoch change)
    unit = n if sizes else spe
    eval_every = cadence(cfg.eval.every, unit)  # every step when one step is > eval.every
    log_every = min(eval_every, cadence(cfg.eval.log_every, unit))
    loader = data.train.loader(batch, cfg.drop_last, cfg.seed)
    step = Step(model, optimizer, criterion, device, cfg.precision, micro, cfg.optimizer.grad_clip, channels_last)
    train_eval = data.train.head(cfg.eval.train_subset)
    subset = data.eval_subset(cfg.eval.subset)
    eval_batch = cfg.eval.batch_for(micro or batch)
    noise = NoiseMonitor(cfg, n, criterion, data.context) if cfg.noise.every else None
    noise_every = cadence(cfg.noise.every, unit) if noise else None
    summary.batch_schedule = batches.as_json(cfg.batch_schedule)
    targets_left = sorted(cfg.target.value)
    summary.targets = {f"{v:g}": None for v in cfg.target.value}
    hardest = hardest_target(cfg)
    summary.deadline = deadline if hardest is not None else None
    summary.deadline_steps = deadline_steps if hardest is not None else None
    epoch_batches = epoch_examples = 0  # batches (examples) of the current epoch trained on
    order = order_of(loader)
    resumed = checkpoints.resume(model, step, noise, summary, order, sizes) if checkpoints else None
    if resumed:
        targets_left, epoch_batches = resumed["targets_left"], resumed["epoch_batches"]
        epoch_examples = resumed["epoch_examples"]
    elif sizes:
        summary.batch_changes = [sizes.change(0, 0, 0)]

    def lr_now() -> float:
        """The lr of the next step: the schedule's multiplier (by examples for a batch schedule) of the lr at
        the batch size it trains at."""
        if sizes is None:
            return cfg.lr * schedule(summary.steps)
        return sizes.lr * schedule(summary.examples // batch if by_examples else summary.steps)

    def resize() -> bool:
        """Move to the batch size the schedule wants now, if it wants another (and a step is left); whether it did."""
        if sizes is None or sizes.wanted(summary.examples, summary.tokens) == sizes.batch or ended():
            return False
        summary.batch_changes.append(sizes.change(summary.steps, summary.examples, summary.tokens))
        order.batch_size = sizes.batch
        set_lr(optimizer, lr_now())
        return True

    def epochs() -> float:
        return summary.examples / n if sizes else summary.steps / spe

    def ended() -> bool:
        return summary.steps >= total or (by_examples and summary.examples >= budget_examples)
    set_lr(optimizer, lr_now())

    # the whole split's figure minus the subset's at the last evaluation that read both (evaluation.near)
    gap = resumed["gap"] if resumed else None

    def evaluation(judge: bool) -> tuple[dict, bool]:
        """The evaluation split's figures now (and the train subset's), timed as evaluation, and whether they are
        the whole split's (the only figures a target is judged on); with `judge`, the whole split is read
        wherever the subset's figure is near a target not yet met."""
        nonlocal gap
        on = lambda split: tally(model, split, criterion, data.task, eval_batch, device,  # noqa: E731
                                 data.ignore_index)
        named = lambda totals: dict(zip(("test_loss", "test_accuracy"), totals.figures(data.task)))  # noqa: E731
        t0 = time.perf_counter()
        whole = summary.steps == 0 or ended() or subset is data.eval  # the start, the end, no subset: the whole
        read = on(data.eval if whole else subset)
        figures = named(read)
        metric = cfg.target.metric
        if not whole and judge and any(
                near(metric, figures[metric], v, len(subset), len(data.eval), gap) for v in targets_left):
            on_subset = figures[metric]
            # the whole split decides: the subset read above plus the rest of the split (the subset is part of it)
            figures.update(named(read + on(data.eval_rest(len(subset)))))
            whole = True
            gap = figures[metric] - on_subset if figures[metric] is not None and on_subset is not None else None
        if cfg.eval.train_subset:
            figures.update(zip(("train_eval_loss", "train_eval_accuracy"), on(train_eval).figures(data.task)))
        summary.eval_seconds += time.perf_counter() - t0
        summary.final.update(test_loss=figures["test_loss"], test_accuracy=figures["test_accuracy"])
        if data.task == "sequence":
            summary.final["test_perplexity"] = perplexity(figures["test_loss"])
        return figures, whole

    def log(train_loss: float | None, with_eval: bool, judge: bool = True, with_noise: bool = False) -> dict:
        """Write a metrics row; with_eval: evaluate first, and with `judge` record the targets it reaches;
        with_noise: measure the gradient noise scale (a batch size that follows it moves)."""
        row = {"step": summary.steps, "epoch": epochs(), "examples": summary.examples,
               "tokens": summary.tokens if data.context else None, "train_seconds": summary.train_seconds,
               "lr": optimizer.param_groups[0]["lr"], "batch_size": sizes.batch if sizes else batch,
               "train_loss": train_loss}
        whole = False
        if with_eval:
            with aside():
                figures, whole = evaluation(judge)
            row.update(figures)
        if whole and judge:
            for value in list(targets_left):
                if reached(cfg.target.metric, row[cfg.target.metric], value):
                    targets_left.remove(value)
                    summary.targets[f"{value:g}"] = {"seconds": summary.train_seconds, "steps": summary.steps,
                                                     "epochs": epochs(), "examples": summary.examples,
                                                     **({"tokens": summary.tokens} if data.context else {})}
        if noise and with_noise:
            t0 = time.perf_counter()
            with aside():
                row.update(noise.measure(model, data, device))
            summary.noise_seconds += time.perf_counter() - t0
            summary.noise = noise.summary()
            if sizes and summary.steps > 0:  # follow: noise starts at min; each later measurement moves it
                sizes.observe(row["noise_b_simple"])
                if resize():
                    row.update(batch_size=sizes.batch, lr=optimizer.param_groups[0]["lr"])
        if train_loss is not None:
            summary.final["train_loss"] = train_loss
        metrics.write(row)
        if progress:
            progress(summary.steps, total, row)
        return row

    if cfg.compile:
        model = compiled(model, step, data, batch, cfg.drop_last, summary)
    if not resumed:
        first = log(None, with_eval=True, with_noise=True)  # the starting point of every curve
        summary.initial = {"test_loss": first["test_loss"], "test_accuracy": first["test_accuracy"]}
        if data.task == "sequence":
            summary.initial["test_perplexity"] = perplexity(first["test_loss"])
    model.train()
    clock = Clock(device, summary.train_seconds if resumed else 0.0)  # resumed: on from the checkpoint's seconds
    loss_sum, loss_count = torch.zeros((), device=device), 0
    clock.start()
    streams = resumed["random"] if resumed else None  # the random streams as they were at the checkpoint
    resized = False  # the batch size changed mid-epoch: the epoch goes on from the same place, at the new size
    while not ended():
        with kept_torch_stream() if resized else nullcontext():  # the same place in the epoch: no new seed
            epoch = iter(loader)  # a new epoch (a tensor loader draws its seed from the global stream here)
        resized, size = False, order.batch_size
        if streams is not None:  # ... so a checkpoint's streams are set after it
            set_random_streams(streams)
            streams = None
        for x, y in epoch:
            loss_sum += step(x, y)  # stays on the device: no sync per step
            loss_count += 1
            epoch_batches += 1
            epoch_examples += len(x)
            before = summary.examples if sizes else summary.steps  # what the cadence counts
            summary.steps += 1
            summary.examples += len(x)
            if data.context:  # tokens are a sequence task's; others record 0
                summary.tokens += len(x) * per
            if not resize() and schedule.varies:
                set_lr(optimizer, lr_now())  # the lr of the next step
            now = summary.examples if sizes else summary.steps
            measure = noise is not None and now // noise_every != before // noise_every
            if hardest in targets_left and ((summary.deadline is not None and clock.peek() > summary.deadline) or
                                            (summary.deadline_steps is not None and
                                             summary.steps > summary.deadline_steps)):
                summary.train_seconds = clock.stop()
                summary.status = Status.RACED
                # its figures where it stopped (not the last evaluation's, maybe step 0's); no target judged
                # there: its steps would be the clock's, not an evaluation's
                log(loss_sum.item() / loss_count if loss_count else None, with_eval=True, judge=False,
                    with_noise=measure)
                return model
            at_end = ended()
            is_eval = now // eval_every != before // eval_every or at_end
            if is_eval or now // log_every != before // log_every or measure:
                summary.train_seconds = clock.stop()
                train_loss = loss_sum.item() / loss_count  # micro-batch losses add up to their step's loss
                loss_sum.zero_()
                loss_count = 0
                initial = summary.initial["test_loss"]
                if not math.isfinite(train_loss) or (initial is not None and train_loss > EXPLODED * initial > 0):
                    summary.status = Status.DIVERGED
                    summary.error = (f"the training loss became {train_loss}" if not math.isfinite(train_loss) else
                                     f"the training loss {train_loss:.4g} exceeded {EXPLODED}x the initial loss "
                                     f"({initial:.4g})")
                    log(train_loss, with_eval=False, with_noise=measure)
                    return model
                log(train_loss, with_eval=is_eval, with_noise=measure)
                if cfg.budget.stop_at_target and cfg.target.value and not targets_left:
                    return model
                if checkpoints and checkpoints.due(summary.train_seconds) and not at_end:
                    with aside():
                        checkpoints.save(model, step, noise, summary, order, targets_left, epoch_batches,
                                         metrics.rows, epoch_examples, sizes, gap)
                clock.start()
            if at_end:
                break
            if order.batch_size != size:  # the rest of the epoch at the new batch size, from the same place
                order.resume(order.epoch_state, epoch_batches, epoch_examples)
                resized = True
                break
        else:
            epoch_batches = epoch_examples = 0
    summary.train_seconds = clock.stop()
    if sizes and summary.budget_steps is None:  # follow: the steps its budget took, known now
        summary.budget_steps = summary.steps
    return model


def imported_names(cfg: Experiment) -> list[str]:
    """The import paths the config names (its user code)."""
    names = (cfg.dataset.name, cfg.model.name, cfg.loss.name, cfg.optimizer.name, cfg.schedule.name)
    return [n for n in names if ":" in n]


def run_trial(cfg: Experiment, trial_id: str, axes: dict, trial_dir: Path, data: Data, device: torch.device,
              command: str, progress: Progress | None = None, judge: bool = True,
              deadline: float | None = None, deadline_steps: int | None = None) -> dict:
    """Train and record one trial. A failure inside is recorded `failed` (traceback in error.txt) and the
    sweep goes on; Ctrl-C is recorded `interrupted` and re-raised. Returns the summary as written.

    judge: a trial that did not learn is recorded diverged (off for a smoke run: a few steps prove wiring).
    deadline, deadline_steps: racing (see train).
    """
    data.eval_subset(cfg.eval.subset)  # drawn before the peak's start: it is data, kept like the splits
    peak = Peak(device)
    summary = Summary(trial_id=trial_id, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, axes=axes,
                      target_metric=cfg.target.metric, eval_split=data.eval_split,
                      precision=used_precision(cfg.precision, device),
                      command=command, started_at=now(), run_token=run_token(trial_dir))
    checkpoints = Checkpoints(cfg.checkpoint.every, trial_dir, trial_id)
    metrics = MetricsWriter(trial_dir / METRICS, keep_rows=checkpoints.metrics_rows)
    try:
        try:
            train(cfg, data, device, summary, metrics, progress, checkpoints, deadline, peak, deadline_steps)
        except Unusable as e:  # raised before the first step: start over with fresh parts and an empty curve
            checkpoints.discard(str(e))
            metrics.close()
            metrics = MetricsWriter(trial_dir / METRICS)
            train(cfg, data, device, summary, metrics, progress, checkpoints, deadline, peak, deadline_steps)
        reason = did_not_learn(summary, data) if judge and summary.status == Status.COMPLETED else None
        if reason:
            summary.status, summary.error = Status.DIVERGED, reason
    except KeyboardInterrupt:
        summary.status = Status.INTERRUPTED
        raise
    except RecordsError as e:  # the records cannot be written (a full or read-only disk): the sweep stops
        summary.status, summary.error = Status.FAILED, str(e)
        raise
    except Exception as e:  # one trial's failure (e.g. out of memory, a bug in user code) must not end the sweep
        summary.status, summary.error = Status.FAILED, f"{described(e)}"
        write_text(trial_dir / "error.txt", traceback.format_exc())
    finally:
        metrics.close()
        summary.epochs = (summary.examples / summary.train_size if summary.batch_schedule and summary.train_size
                          else summary.steps / summary.steps_per_epoch)  # a schedule's: epochs of examples
        summary.samples_per_second = summary.examples / summary.train_seconds if summary.train_seconds > 0 else None
        if data.context:
            summary.context = data.context
            summary.tokens_per_second = summary.tokens / summary.train_seconds if summary.train_seconds > 0 else None
        summary.peak_memory_bytes = peak.bytes()
        summary.code = registry.source_hashes(imported_names(cfg))
        for key, value in machine_facts(device).items():
            setattr(summary, key, value)
        summary.finished_at = now()
        written = summary.to_json()
        write_json_atomic(trial_dir / "summary.json", written)
        if summary.status in DONE and not cfg.checkpoint.keep:
            remove_checkpoint(trial_dir)
    return written
