"""The steps-examples frontier (McCandlish et al. 2018): S = S_min (1 + B_noise / B), B_crit = E_min / S_min.

With the lr tuned per batch size, the steps S and examples E = B S to reach a target trade off as
(S / S_min - 1)(E / E_min - 1) = 1. Writing S = S_min + E_min / B makes the model linear in 1/B;
it is fitted in log space (least squares on log S), so a batch size that took 10 steps counts as
much as one that took 10,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from batchlab.errors import counted

MIN_POINTS = 3  # two parameters: a fit through fewer points says nothing
EFFICIENCY = 0.9  # "within 10% of perfect scaling": a scaling efficiency (E_min / E, or S_min / S) of 90% or more


@dataclass
class Frontier:
    s_min: float  # fewest steps, at an infinite batch
    e_min: float  # fewest examples, at a batch of 1
    b_crit: float  # E_min / S_min: where the trade-off turns
    r2: float  # of log S, fitted vs measured
    rms_log_error: float  # root mean square of log(S_fit / S_measured)
    batch_sizes: list[int]  # the points used
    steps: list[float]

    def steps_at(self, batch_size) -> np.ndarray:
        return self.s_min * (1 + self.b_crit / np.asarray(batch_size, dtype=float))

    def regime(self, batch_size: float) -> str:
        """Perfect scaling while the examples are at most E_min / 0.9 (a scaling efficiency of 90% or more:
        B <= B_crit/9), maximal data parallelism once the steps are at most S_min / 0.9 (B >= 9 B_crit),
        diminishing returns between."""
        if batch_size <= self.b_crit * (1 / EFFICIENCY - 1):
            return "perfect scaling"
        if batch_size >= self.b_crit / (1 / EFFICIENCY - 1):
            return "maximal data parallelism"
        return "diminishing returns"


class TooFewPoints(ValueError):
    pass


def fit(batch_sizes, steps) -> Frontier:
    """Fit S(B) to measured (batch size, steps to target) points; raise TooFewPoints with the reason."""
    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(steps, dtype=float)
    keep = np.isfinite(s) & (s > 0)
    b, s = b[keep], s[keep]
    if len(np.unique(b)) < MIN_POINTS:
        raise TooFewPoints(f"{counted(len(np.unique(b)), 'batch size')} reached the target; a fit needs {MIN_POINTS}")
    # start from ordinary least squares of S = S_min + E_min / B, kept positive
    a0, c0 = np.linalg.lstsq(np.stack([np.ones_like(b), 1 / b], axis=1), s, rcond=None)[0]
    start = [max(a0, s.min() * 1e-3), max(c0, s.min() * b.min() * 1e-3)]
    residual = lambda p: np.log(p[0] + p[1] / b) - np.log(s)  # noqa: E731
    result = least_squares(residual, start, bounds=([1e-12, 1e-12], [np.inf, np.inf]), x_scale="jac")
    s_min, e_min = result.x
    r = residual(result.x)
    total = np.sum((np.log(s) - np.log(s).mean()) ** 2)
    r2 = 1 - np.sum(r ** 2) / total if total > 0 else math.nan
    order = np.argsort(b)
    return Frontier(float(s_min), float(e_min), float(e_min / s_min), float(r2), float(np.sqrt(np.mean(r ** 2))),
                    [int(x) for x in b[order]], [float(x) for x in s[order]])


def largest_efficient_batch(batch_sizes, examples) -> int | None:
    """The largest batch size within 10% of perfect scaling, measured against the smallest one that
    reached the target: perfect scaling keeps the examples to the target constant, so E <= E0 / 0.9."""
    points = sorted((int(b), float(e)) for b, e in zip(batch_sizes, examples) if math.isfinite(e) and e > 0)
    if not points:
        return None
    e0 = points[0][1]
    return max(b for b, e in points if e <= e0 / EFFICIENCY)
