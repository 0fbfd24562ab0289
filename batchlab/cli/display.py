"""What a running sweep shows: progress bars on a terminal, a plain line per finished trial otherwise."""

from __future__ import annotations

import math
import sys

import typer
from tqdm import tqdm

from batchlab import batches
from batchlab.records import DONE, Status
from batchlab.steptime import FILE


TIMING = "timing a step at each batch size, interleaved"


class Display:
    """Progress bars on a terminal; a plain line per finished trial otherwise; nothing with --quiet."""

    def __init__(self, total: int, quiet: bool):
        self.quiet, self.tty = quiet, sys.stdout.isatty()
        self.bars = not quiet and self.tty
        self.sweep_bar = tqdm(total=total, desc="sweep", unit="trial", position=0, file=sys.stdout) if self.bars else None
        self.trial_bar = None
        self.rounds_timed = 0  # rounds of the step-time phase after the trials; 0: the steps were not timed

    def trial_start(self, trial, i, n):
        if not self.bars:  # (with --workers, trials run elsewhere: only the sweep bar moves)
            return None
        self.trial_bar = tqdm(total=None, desc=trial.id, unit="step", position=1, leave=False, file=sys.stdout)

        def progress(step, total, row):
            bar = self.trial_bar
            bar.total = total
            bar.update(step - bar.n)
            shown = {k: f"{row[k]:.4g}" for k in ("train_loss", "test_loss", "test_accuracy") if row.get(k) is not None}
            if shown:
                bar.set_postfix(shown, refresh=False)
        return progress

    def trial_end(self, trial, summary):
        line = trial_line(summary)
        if self.bars:
            if self.trial_bar:
                self.trial_bar.close()
            self.sweep_bar.update(1)
            self.sweep_bar.write(line)
        elif not self.quiet:
            typer.echo(line)

    def steps_timed(self, done: int, rounds: int) -> None:
        """The step-time phase after the trials: a bar of its rounds."""
        self.rounds_timed = done
        if not self.bars:
            return
        if self.trial_bar is None or self.trial_bar.desc != TIMING:
            if self.trial_bar:
                self.trial_bar.close()
            self.trial_bar = tqdm(total=rounds, desc=TIMING, unit="round", position=1, leave=False, file=sys.stdout)
        self.trial_bar.update(done - self.trial_bar.n)

    def finished(self, result, time_steps: bool) -> str:
        """The sweep's last line: what ran, whether the steps were timed (`time_steps`: they would be, when
        needed), where the records are."""
        done = ", ".join(f"{n} {status}" for status, n in result.ran.items()) or "nothing to run"
        skipped = f" ({result.skipped} already recorded)" if result.skipped else ""
        timed = (f"; a step timed at every batch size ({self.rounds_timed} rounds)" if self.rounds_timed else
                 f"; the recorded step times kept ({FILE})" if time_steps and (result.path / FILE).exists() else "")
        return f"{done}{skipped}{timed}; records in {result.path}"

    def close(self):
        if self.trial_bar:
            self.trial_bar.close()
        if self.sweep_bar:
            self.sweep_bar.close()

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def plan_table(statuses: list, restart: bool) -> tuple[str, int]:
    """The trials of a plan (`--dry-run`), a row each with its axes (a batch-size schedule by its label, where it
    switches and its lr scale), and how many are still to run."""
    import pandas as pd

    def shown(trial, axis: str, value):
        """The batch size as the trial trains at it, from its config: the axis value as written left a schedule's lr
        scale unset where the lr rule's fills it in (labelled `lr none` for a sqrt-scaled trial), and a point 2e3
        as the text '2e3'."""
        if axis != "batch_size":
            return value
        schedule = trial.config.batch_schedule
        return batches.label(schedule, points=True, scale=True) if schedule else trial.config.batch_size

    rows = [{"trial": t.id, **{axis: shown(t, axis, value) for axis, value in t.axes.items()},
             "status": "pending" if restart else str(status or "pending")} for t, status in statuses]
    return pd.DataFrame(rows).to_string(index=False), sum(r["status"] not in DONE for r in rows)


def trial_line(s: dict) -> str:
    """A finished trial in one line. A raced one says where it stopped: its figure is the evaluation there."""
    acc = s["final"].get("test_accuracy")
    by_loss = acc is None or s.get("target_metric") == "test_loss"  # the figure the targets are judged on
    loss = s["final"].get("test_loss")
    metric = f"loss {loss if loss is not None else math.nan:.4g}" if by_loss else f"acc {acc:.4f}"
    reached = sum(v is not None for v in s["targets"].values())
    seconds = f"{s['train_seconds']:.2f}s"
    if s["status"] == Status.RACED:
        seconds += f" (past the best time to the target, {s['deadline']:.2f}s)" if s.get("deadline") else ""
        metric += " when stopped"
    line = (f"{s['trial_id']}: {s['status']}, {s['steps']} steps, {seconds}, {metric}, "
            f"targets {reached}/{len(s['targets'])}")
    return line + (f" ({s['error']})" if s.get("error") else "")
