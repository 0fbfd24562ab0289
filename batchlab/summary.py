"""summary.json: what a trial did (the Summary dataclass), and how it is read back and checked. Every other
file of a sweep's records is batchlab.records'."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from batchlab.disk import strict_json
from batchlab.errors import VALUE_CHARS, short
from batchlab.records import Status


@dataclass
class Summary:
    """summary.json: what a trial did, written last and atomically. Train fills it as it goes; the report
    reads it back with from_json, which checks every field it knows (older records lack some: defaults)."""
    trial_id: str = ""
    batch_size: int = 0  # as configured (a schedule's first); above the training set it ran full-batch steps
    batch_schedule: dict | None = None  # the config's batch-size schedule (batchlab.batches); None: constant
    # one entry per batch size used, in order, the first at step 0: {step, examples, tokens (sequence tasks),
    # batch_size, lr}: from step `step` on it trained at batch_size with lr (before the lr schedule's multiplier)
    batch_changes: list[dict] | None = None
    lr: float = 0.0
    seed: int = 0
    axes: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.COMPLETED
    error: str | None = None
    steps: int = 0  # optimizer steps taken
    budget_steps: int | None = None  # the steps its budget allowed: a target first met there had no margin
    epochs: float = 0.0
    examples: int = 0
    tokens: int = 0  # sequence tasks: examples x context (0 for others)
    context: int | None = None  # sequence tasks: tokens per example
    steps_per_epoch: int = 1
    train_size: int = 0
    micro_batch_size: int | None = None
    train_seconds: float = 0.0  # the training clock: device synchronised at every reading, evaluation excluded
    eval_seconds: float = 0.0
    noise_seconds: float = 0.0
    compile_seconds: float | None = None
    samples_per_second: float | None = None
    tokens_per_second: float | None = None  # sequence tasks
    peak_memory_bytes: int | None = None
    initial: dict[str, float | None] = field(
        default_factory=lambda: {"test_loss": None, "test_accuracy": None})  # the evaluation at step 0
    final: dict[str, float | None] = field(
        default_factory=lambda: {"train_loss": None, "test_loss": None, "test_accuracy": None})
    target_metric: str = "test_accuracy"
    # "0.97" -> {seconds, steps, epochs, examples[, tokens]} or None
    targets: dict[str, dict | None] = field(default_factory=dict)
    noise: dict | None = None  # {g2, trace, b_simple, b_small, b_big, measurements}
    eval_split: str = "test"
    precision: str = "fp32"
    device: str = ""
    device_name: str = ""
    threads: int | None = None
    torch_version: str = ""
    batchlab_version: str = ""
    python_version: str = ""
    platform: str = ""
    code: dict[str, dict[str, str]] = field(default_factory=dict)  # user module -> {file, sha256}
    run_token: str = ""  # the token of the run that wrote this summary (see read_summary)
    resumed_from: list[int] = field(default_factory=list)  # the steps it resumed from a checkpoint at
    deadline: float | None = None  # racing: the best training seconds to the target it had to beat
    deadline_steps: int | None = None  # racing by steps (suggest): the steps it had to reach the target within
    command: str = ""
    started_at: str = ""
    finished_at: str = ""

    def to_json(self) -> dict:
        """JSON-ready: no NaN or inf (a diverged loss is null: its status says why)."""
        return strict_json(asdict(self) | {"status": self.status.value})

    @classmethod
    def from_json(cls, data: dict) -> Summary:
        """A summary read back. ValueError names the first field that is not what a trial writes; keys it does
        not know are ignored."""
        try:
            status = Status(data.get("status"))
        except ValueError:
            raise ValueError(f"unknown status {short(repr(data.get('status')), VALUE_CHARS)}") from None
        if status == Status.INCOMPLETE:
            raise ValueError("status 'incomplete' is never written")
        values = {}
        for f in fields(cls):
            if f.name in data and f.name != "status":
                values[f.name] = _checked(f.name, data[f.name], SUMMARY_KINDS.get(f.name, "text"))
        return cls(status=status, **values)


# How from_json checks each field: count (a whole number >= 0), number (finite, >= 0), figures (a mapping of
# finite numbers or nulls), targets, mapping, list, text. A trailing "?" allows null.
SUMMARY_KINDS = {
    "batch_size": "count", "seed": "count", "steps": "count", "budget_steps": "count?", "examples": "count",
    "steps_per_epoch": "count", "train_size": "count", "micro_batch_size": "count?", "tokens": "count",
    "context": "count?", "threads": "count?", "peak_memory_bytes": "count?",
    "lr": "number", "epochs": "number", "train_seconds": "number", "eval_seconds": "number",
    "noise_seconds": "number", "compile_seconds": "number?", "samples_per_second": "number?",
    "tokens_per_second": "number?",
    "initial": "figures", "final": "figures", "noise": "figures?", "targets": "targets", "axes": "mapping",
    "code": "mapping", "resumed_from": "list", "error": "text?", "deadline": "number?",
    "deadline_steps": "count?", "batch_schedule": "mapping?", "batch_changes": "list?",
}


def _checked(name: str, value: Any, kind: str) -> Any:
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    problem = None
    if kind == "count" and not (number and value >= 0 and float(value).is_integer()):
        problem = "a whole number >= 0"
    elif kind == "number" and not (number and value >= 0):
        problem = "a finite number >= 0"
    elif kind in ("figures", "mapping", "targets") and not isinstance(value, dict):
        problem = "a mapping"
    elif kind == "figures" and not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     and math.isfinite(v)) for v in value.values()):
        problem = "a mapping of finite numbers or nulls"
    elif kind == "targets":
        for target, hit in value.items():
            if hit is not None and not (isinstance(hit, dict) and all(
                    isinstance(hit.get(k), (int, float)) and not isinstance(hit.get(k), bool)
                    and math.isfinite(hit[k]) and hit[k] >= 0 for k in ("seconds", "steps", "epochs", "examples"))):
                raise ValueError(f"'targets' {target}: expected null or finite seconds, steps, epochs, examples >= 0")
    elif kind == "list" and not isinstance(value, list):
        problem = "a list"
    elif kind == "text" and not isinstance(value, str):
        problem = "text"
    if problem:
        raise ValueError(f"'{name}' is {short(repr(value), VALUE_CHARS)}, expected {problem}")
    return int(value) if kind == "count" else value
