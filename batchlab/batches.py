"""A batch size that changes over training (a schedule): how it is named and what it trained at.

The records hold a schedule trial's config schedule as JSON (Summary.batch_schedule: points
`{"schedule": [[progress, batch], ...], "unit": ..., "lr_scale": ...}` or a rule `{"follow": "noise", "min": ..,
"max": .., "lr_scale": ...}`) and the batch sizes it used (Summary.batch_changes: one entry per batch size, in
order, the first at step 0: from step s on, steps s+1, s+2, ... ran at batch b).
"""

from __future__ import annotations

from collections.abc import Mapping


def _plain(schedule) -> Mapping:
    """The schedule as a mapping: as recorded (JSON), or a config object dumped."""
    return schedule.model_dump() if hasattr(schedule, "model_dump") else schedule


def label(batch_schedule) -> str:
    """A schedule's name for display: '32→128→512' for points, 'noise 16→1024' for the noise rule."""
    schedule = _plain(batch_schedule)
    if schedule.get("follow") is not None:
        return f"{schedule['follow']} {int(schedule['min'])}→{int(schedule['max'])}"
    return "→".join(str(int(batch)) for _, batch in schedule["schedule"])


def steps_by_batch(batch_changes: list[dict], upto_step: float) -> dict[int, int]:
    """Steps taken at each batch size up to step `upto_step` (steps 1..upto_step), in the order first used."""
    steps: dict[int, int] = {}
    for i, change in enumerate(batch_changes):
        start = int(change["step"])
        end = int(batch_changes[i + 1]["step"]) if i + 1 < len(batch_changes) else upto_step
        taken = min(end, upto_step) - start
        if taken > 0:
            batch = int(change["batch_size"])
            steps[batch] = steps.get(batch, 0) + int(taken)
    return steps
