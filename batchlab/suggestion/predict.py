"""The time-optimal batch size predicted from the throughput curve and the critical batch size.

Steps to a target follow S(B) = S_min (1 + B_crit / B) (McCandlish et al. 2018), and a step at batch B costs
B / throughput(B) seconds on this hardware, so the time to the target is

    T(B) = S(B) B / throughput(B) = S_min (B + B_crit) / throughput(B),

and the best batch size needs only the throughput curve and B_crit, not S_min. B_crit is known only as a
band (from the noise scale), so T is predicted at both ends of the band, each up to its own constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def relative_time(batch_sizes, throughput, b_crit: float) -> np.ndarray:
    """T(B) / S_min = (B + B_crit) / throughput(B): seconds per unit of S_min."""
    b = np.asarray(batch_sizes, dtype=float)
    return (b + b_crit) / np.asarray(throughput, dtype=float)


@dataclass
class Prediction:
    batch_sizes: list[int]  # the scanned batch sizes
    throughput: list[float]  # samples/s at each
    band: tuple[float, float]  # B_crit's low and high estimates
    best: tuple[int, int]  # the predicted best batch size at each end of the band
    candidates: list[int]  # within `margin` of the best predicted time at some end of the band, best first
    margin: float

    def relative(self, b_crit: float) -> np.ndarray:
        return relative_time(self.batch_sizes, self.throughput, b_crit)


def predict(batch_sizes, throughput, band: tuple[float, float], margin: float = 0.2,
            most: int = 4) -> Prediction:
    """The batch sizes worth measuring: those whose predicted time is within `margin` of the best, at the low
    or the high end of the B_crit band (at most `most` of them, nearest to the best first)."""
    sizes = [int(b) for b in batch_sizes]
    rates = [float(r) for r in throughput]
    if not sizes or len(sizes) != len(rates) or min(rates) <= 0:
        raise ValueError("need a positive throughput at each batch size")
    low, high = sorted(band)
    ratios = []  # for each end of the band: every batch size's predicted time over the best one's
    for b_crit in (low, high):
        t = relative_time(sizes, rates, b_crit)
        ratios.append(t / t.min())
    closeness = np.minimum(*ratios)  # how near the best each batch size comes at either end
    order = np.argsort(closeness, kind="stable")
    candidates = [sizes[i] for i in order if closeness[i] <= 1 + margin][:most]
    best = tuple(sizes[int(np.argmin(r))] for r in ratios)
    return Prediction(sizes, rates, (low, high), best, candidates, margin)
