"""Mid-trial checkpoints: a long trial resumes where it stopped instead of from step 0.

A checkpoint is written at a log point (where the running loss sum is empty and the clock stopped) once
`checkpoint.every` minutes of training have passed since the last. It holds what the loop needs to go on
as if it had never stopped: model, optimizer and loss-scaler states; the figures so far; the noise
monitor's averages; where the epoch began and how many of its batches (and examples) were trained on; a
batch-size schedule's state; every random stream (torch CPU and CUDA, Python, numpy); and how many rows metrics.csv had. Resumed, a trial on the
CPU gives metrics bit-identical to an uninterrupted one (timing columns aside).

The file is written atomically (temp file + rename) and read with torch.load(weights_only=True): it
holds tensors and plain Python values only.
"""

from __future__ import annotations

import csv
import itertools
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from batchlab.disk import write_atomic
from batchlab.errors import VALUE_CHARS, BatchlabWarning, short
from batchlab.records import CHECKPOINT as FILE
from batchlab.records import METRICS


def save(trial_dir: Path, state: dict) -> None:
    write_atomic(trial_dir / FILE, lambda f: torch.save(state, f), binary=True)


KEYS = ("trial_id", "model", "optimizer", "scaler", "summary", "noise", "targets_left", "epoch_state",
        "epoch_batches", "metrics_rows", "random")  # what save writes and resume reads


class Unusable(Exception):
    """A checkpoint that cannot be resumed from (damaged, another trial's, or out of step with metrics.csv)."""


def load(trial_dir: Path, trial_id: str) -> dict | None:
    """The trial's checkpoint, or None when none was written. Raises Unusable (the reason) when it cannot be
    resumed from: unreadable, another trial's, keys missing, or metrics.csv not holding the rows it points to."""
    path = trial_dir / FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- truncated, empty, garbage: whatever torch says, it is unreadable
        raise Unusable(f"unreadable ({short(f'{type(e).__name__}: {e}', 120)})") from None
    if not isinstance(state, dict):
        raise Unusable(f"not a batchlab checkpoint (a {type(state).__name__})")
    owner = state.get("trial_id")
    if isinstance(owner, str) and owner != trial_id:
        raise Unusable(f"it belongs to trial {short(repr(owner), VALUE_CHARS)}")
    # without a trial id (or with None) it belongs to no trial: malformed, not "trial None"'s
    missing = [k for k in KEYS if k not in state or (k == "trial_id" and not isinstance(owner, str))]
    if missing or not isinstance(state["summary"], dict) or not isinstance(state["metrics_rows"], int):
        raise Unusable(f"keys missing or malformed: {', '.join(missing) or 'summary, metrics_rows'}")
    agree_with_metrics(trial_dir / METRICS, state["metrics_rows"], state["summary"].get("steps"))
    return state


def agree_with_metrics(path: Path, rows: int, step) -> None:
    """metrics.csv holds at least the checkpoint's rows, the last of them at its step: else resuming would keep
    a curve with rows missing (the checkpoint keeps `rows` and appends after them)."""
    try:
        with open(path, newline="") as f:
            kept = list(itertools.islice(csv.DictReader(f), rows))
    except OSError as e:
        raise Unusable(f"{path.name} cannot be read ({e.strerror or e})") from None
    except csv.Error as e:
        raise Unusable(f"{path.name} is damaged ({short(str(e), 120)})") from None
    if len(kept) < rows:
        raise Unusable(f"{path.name} has {len(kept)} rows, the checkpoint was written after {rows}")
    last = kept[-1].get("step") if kept else None
    if rows < 1 or last != str(step):
        raise Unusable(f"{path.name}'s row {rows} is step {last}, the checkpoint's step is {step}")


def remove(trial_dir: Path) -> None:
    for name in (FILE, FILE + ".tmp"):  # .tmp: a write cut short
        path = trial_dir / name
        if path.is_dir() and not path.is_symlink():  # one made by hand is as unusable as a damaged file: unlink
            shutil.rmtree(path)  # raised IsADirectoryError after the summary was removed, and ended the sweep
        else:
            path.unlink(missing_ok=True)


def random_streams() -> dict:
    """Every global random stream, in a form torch.load(weights_only=True) accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_random_streams(streams: dict) -> None:
    torch.set_rng_state(streams["torch"])
    if streams["cuda"]:
        torch.cuda.set_rng_state_all(streams["cuda"])
    version, internal, gauss_next = streams["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = streams["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))


# the Summary fields a resumed trial carries on from
PROGRESS = ("steps", "examples", "tokens", "train_seconds", "eval_seconds", "noise_seconds", "compile_seconds",
            "initial", "final", "targets", "noise", "resumed_from", "batch_changes")


class Checkpoints:
    """One trial's checkpoints: the one in its directory to resume from, and new ones when they are due."""

    def __init__(self, every_minutes: float | None, trial_dir: Path, trial_id: str):
        self.every = every_minutes * 60 if every_minutes else None  # seconds of training
        self.trial_dir, self.trial_id = trial_dir, trial_id
        try:
            self.found = load(trial_dir, trial_id)
        except Unusable as e:
            self.found = None
            self.discard(str(e))
        self.metrics_rows = self.found["metrics_rows"] if self.found else 0  # metrics.csv rows to keep
        self.last = 0.0  # training seconds at the last checkpoint

    def discard(self, reason: str) -> None:
        """Say why the checkpoint found cannot be resumed from, and remove it: the trial starts over."""
        warnings.warn(f"{self.trial_dir / FILE}: {reason}; the trial starts over from step 0", BatchlabWarning,
                      stacklevel=2)
        remove(self.trial_dir)

    def due(self, train_seconds: float) -> bool:
        return self.every is not None and train_seconds - self.last >= self.every

    def save(self, model, step, noise, summary, order, targets_left: list, epoch_batches: int,
             metrics_rows: int, epoch_examples: int | None = None, sizes=None, gap: float | None = None) -> None:
        save(self.trial_dir, {
            "trial_id": self.trial_id,
            "model": getattr(model, "_orig_mod", model).state_dict(),  # the module inside torch.compile's
            "optimizer": step.optimizer.state_dict(),
            "scaler": step.scaler.state_dict(),
            "summary": {k: getattr(summary, k) for k in PROGRESS},
            "noise": noise.state() if noise else None,
            "targets_left": list(targets_left),
            "epoch_state": order.epoch_state,
            "epoch_batches": epoch_batches,
            "epoch_examples": epoch_examples,  # absent from older checkpoints: a constant batch size's
            "sizes": sizes.state() if sizes else None,  # batches.Sizes: the batch size it trains at
            "metrics_rows": metrics_rows,
            "gap": gap,  # evaluation.near's whole-split-minus-subset difference (absent from older checkpoints)
            "random": random_streams(),
        })
        self.last = summary.train_seconds

    def resume(self, model, step, noise, summary, order, sizes=None) -> dict | None:
        """Load the checkpoint found into the trial's parts; None when there is none.

        Returns what the loop itself carries on from: targets_left, epoch_batches, epoch_examples, the subset's
        gap (evaluation.near) and the random streams (set by the loop once it has started the epoch, whose
        DataLoader draws from them). Raises Unusable when the states do not load; the summary is then
        untouched."""
        state, self.found = self.found, None
        if state is None:
            return None
        try:  # a checkpoint of another model (same trial id, code changed) fails here, before anything ran
            getattr(model, "_orig_mod", model).load_state_dict(state["model"])
            step.optimizer.load_state_dict(state["optimizer"])
            step.scaler.load_state_dict(state["scaler"])
            if noise and state["noise"]:
                noise.load_state(state["noise"])
            if sizes and state.get("sizes"):
                sizes.load_state(state["sizes"])
                order.batch_size = sizes.batch
            order.resume(state["epoch_state"], state["epoch_batches"], state.get("epoch_examples"))
        except Exception as e:  # noqa: BLE001 -- the caller starts the trial over with fresh parts
            raise Unusable(f"it does not fit this trial ({type(e).__name__}: {short(str(e), 200)})") from None
        for key, value in state["summary"].items():
            setattr(summary, key, value)
        summary.resumed_from = [*summary.resumed_from, summary.steps]
        self.last = summary.train_seconds
        examples = state.get("epoch_examples")
        return {"targets_left": state["targets_left"], "epoch_batches": state["epoch_batches"],
                "epoch_examples": state["epoch_batches"] * order.batch_size if examples is None else examples,
                "gap": state.get("gap"), "random": state["random"]}
