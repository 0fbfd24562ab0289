"""A batch-size schedule recommended from a measured batch size over training (the critical batch size of
`batchlab cbs`, or the gradient noise scale B_simple): the config's `batch_size: {schedule: ...}` form.

Powers of 2 only, never decreasing, and a change only where the measured value's monotone fit crosses the next
power of 2: a schedule is read by people and compared against constant batch sizes, which grids take in powers of
2, and a measured value's noise should not turn into a change of batch size at every point. The fit is isotonic
regression (least squares under "never decreases": the critical batch size rises, then plateaus, Merrill et al.
2025): a high point is averaged with the lower ones after it (a high last point has none, and still sets the
last step). A running maximum kept it: on Fashion-MNIST one point's 4,096 (within tolerance, L* 0.002 below the
point's loss) put 2,048 into the schedule, and the schedule spent 12-55% more examples than the best constant
batch size (README, "Result: a batch size that grows").
"""

from __future__ import annotations

import math

import numpy as np


def power_below(value: float) -> int:
    """The largest power of 2 at or below `value` (>= 1)."""
    return 2 ** max(0, math.floor(math.log2(value)))


def power_above(value: float) -> int:
    """The smallest power of 2 at or above `value` (>= 1)."""
    return 2 ** max(0, math.ceil(math.log2(value)))


def recommend(points: list[tuple[float, float | None]], min_batch: int, max_batch: int) -> list[list[int]]:
    """[[progress, batch], ...] from measured (progress, batch size) points: the first at progress 0.

    Each batch is the largest power of 2 at or below the isotonic (non-decreasing least-squares) fit of the
    measured values against progress, clamped to the powers of 2 within [min_batch, max_batch]; a point is
    added only where that batch grows.
    Points without a finite positive value (a fit that failed) are skipped. Raises ValueError on bounds that
    hold no power of 2, or when no point has a value.
    """
    if not 1 <= min_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= max_batch, got {min_batch} and {max_batch}")
    low, high = power_above(min_batch), power_below(max_batch)
    if low > high:
        raise ValueError(f"no power of 2 between min_batch {min_batch} and max_batch {max_batch}")
    measured = sorted((p, v) for p, v in points if v is not None and math.isfinite(v) and v > 0)
    if not measured:
        raise ValueError("no measured batch size to recommend a schedule from")
    from sklearn.isotonic import IsotonicRegression  # here: `yaml_line`'s importers need no scikit-learn

    progress_, values = np.array(measured, dtype=float).T
    fitted = IsotonicRegression(increasing=True).fit_transform(progress_, values)
    schedule: list[list[int]] = []
    for (progress, _), value in zip(measured, fitted):
        batch = min(max(power_below(value), low), high)
        at = int(round(progress))
        if not schedule or (batch > schedule[-1][1] and at <= schedule[-1][0]):  # at 0: the start's batch
            schedule[-1:] = [[schedule[-1][0] if schedule else 0, batch]]
        elif batch > schedule[-1][1]:
            schedule.append([at, batch])
    return schedule


def yaml_line(schedule: list[list[int]], unit: str = "examples") -> str:
    """The config line to paste, e.g. `batch_size: {schedule: [[0, 64], [12000, 256]]}`."""
    points = ", ".join(f"[{p}, {b}]" for p, b in schedule)
    return f"batch_size: {{schedule: [{points}]" + (f", unit: {unit}" if unit != "examples" else "") + "}"
