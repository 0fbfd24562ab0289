"""Mid-trial checkpoints: a long trial resumes where it stopped instead of from step 0.

A checkpoint is written at a log point (where the running loss sum is empty and the clock stopped) once
`checkpoint.every` minutes of training have passed since the last. It holds what the loop needs to go on
as if it had never stopped: model, optimizer and loss-scaler states; the figures so far; the noise
monitor's averages; where the epoch began and how many of its batches were trained on; every random
stream (torch CPU and CUDA, Python, numpy); and how many rows metrics.csv had. Resumed, a trial on the
CPU gives metrics bit-identical to an uninterrupted one (timing columns aside).

The file is written atomically (temp file + rename) and read with torch.load(weights_only=True): it
holds tensors and plain Python values only.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from batchlab.disk import write_atomic
from batchlab.records import CHECKPOINT as FILE


def save(trial_dir: Path, state: dict) -> None:
    write_atomic(trial_dir / FILE, lambda f: torch.save(state, f), binary=True)


def load(trial_dir: Path, trial_id: str) -> dict | None:
    """The trial's checkpoint, or None: none written, unreadable, or another trial's."""
    path = trial_dir / FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- a damaged checkpoint is no checkpoint: the trial starts over
        return None
    return state if isinstance(state, dict) and state.get("trial_id") == trial_id else None


def remove(trial_dir: Path) -> None:
    for name in (FILE, FILE + ".tmp"):  # .tmp: a write cut short
        (trial_dir / name).unlink(missing_ok=True)


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
            "initial", "final", "targets", "noise", "resumed_from")


class Checkpoints:
    """One trial's checkpoints: the one in its directory to resume from, and new ones when they are due."""

    def __init__(self, every_minutes: float | None, trial_dir: Path, trial_id: str):
        self.every = every_minutes * 60 if every_minutes else None  # seconds of training
        self.trial_dir, self.trial_id = trial_dir, trial_id
        self.found = load(trial_dir, trial_id)
        self.metrics_rows = self.found["metrics_rows"] if self.found else 0  # metrics.csv rows to keep
        self.last = 0.0  # training seconds at the last checkpoint

    def due(self, train_seconds: float) -> bool:
        return self.every is not None and train_seconds - self.last >= self.every

    def save(self, model, step, noise, summary, order, targets_left: list, epoch_batches: int,
             metrics_rows: int) -> None:
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
            "metrics_rows": metrics_rows,
            "random": random_streams(),
        })
        self.last = summary.train_seconds

    def resume(self, model, step, noise, summary, order) -> dict | None:
        """Load the checkpoint found into the trial's parts; None when there is none.

        Returns what the loop itself carries on from: targets_left, epoch_batches and the random streams
        (set by the loop once it has started the epoch, whose DataLoader draws from them)."""
        state, self.found = self.found, None
        if state is None:
            return None
        getattr(model, "_orig_mod", model).load_state_dict(state["model"])
        step.optimizer.load_state_dict(state["optimizer"])
        step.scaler.load_state_dict(state["scaler"])
        for key, value in state["summary"].items():
            setattr(summary, key, value)
        summary.resumed_from = [*summary.resumed_from, summary.steps]
        if noise and state["noise"]:
            noise.load_state(state["noise"])
        order.resume(state["epoch_state"], state["epoch_batches"])
        self.last = summary.train_seconds
        return {"targets_left": state["targets_left"], "epoch_batches": state["epoch_batches"],
                "random": state["random"]}
