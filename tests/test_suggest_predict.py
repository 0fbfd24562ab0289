"""The prediction arithmetic of `batchlab suggest`, on throughput curves whose optimum is known in closed form."""

import math

import numpy as np
import pytest

from batchlab.suggestion.predict import predict, relative_time

POWERS = [2 ** k for k in range(0, 15)]


def overhead_curve(overhead: float, per_example: float):
    """A step costs `overhead` + `per_example` * B seconds: throughput(B) = B / (o + c B). Then
    T(B) / S_min = (B + B_crit)(o + c B) / B, smallest at B* = sqrt(o B_crit / c)."""
    return [b / (overhead + per_example * b) for b in POWERS]


@pytest.mark.parametrize("b_crit, overhead, per_example", [(256, 1e-3, 1e-3 / 256), (1000, 4e-3, 1e-5),
                                                           (20, 1e-4, 1e-4)])
def test_the_best_batch_size_is_the_closed_form_optimum(b_crit, overhead, per_example):
    rates = overhead_curve(overhead, per_example)
    optimum = math.sqrt(overhead * b_crit / per_example)
    times = relative_time(POWERS, rates, b_crit)
    expected = (np.array(POWERS, dtype=float) + b_crit) * (overhead + per_example * np.array(POWERS)) / POWERS
    np.testing.assert_allclose(times, expected, rtol=1e-12)
    p = predict(POWERS, rates, (b_crit, b_crit), margin=0.0)
    # the optimum lies between two powers of two; the better of those two is the answer
    below, above = 2 ** math.floor(math.log2(optimum)), 2 ** math.ceil(math.log2(optimum))
    t = lambda b: (b + b_crit) * (overhead + per_example * b) / b  # noqa: E731
    assert p.best == (min((below, above), key=t),) * 2
    assert p.candidates == [p.best[0]]


def test_a_band_widens_the_candidates_and_orders_them_by_closeness():
    rates = overhead_curve(1e-3, 1e-3 / 256)
    p = predict(POWERS, rates, (64, 1024), margin=0.2, most=10)
    t_low, t_high = (relative_time(POWERS, rates, b) for b in (64, 1024))
    closeness = np.minimum(t_low / t_low.min(), t_high / t_high.min())
    expected = [b for c, b in sorted(zip(closeness, POWERS)) if c <= 1.2]
    assert p.candidates == expected
    assert p.best == (POWERS[int(np.argmin(t_low))], POWERS[int(np.argmin(t_high))])
    assert p.best[0] < p.best[1]  # a larger B_crit favours larger batches
    assert predict(POWERS, rates, (64, 1024), margin=0.2, most=2).candidates == expected[:2]


def test_flat_throughput_favours_the_largest_batch_and_linear_throughput_the_smallest():
    # a step costs the same at any batch (latency-bound): fewest steps wins; each example costs the same:
    # fewest examples wins
    assert predict(POWERS, [float(b) for b in POWERS], (100, 100), margin=0).best[0] == POWERS[-1]
    assert predict(POWERS, [1000.0] * len(POWERS), (100, 100), margin=0).best[0] == POWERS[0]


def test_bad_throughput_is_refused():
    with pytest.raises(ValueError, match="positive throughput"):
        predict([1, 2], [1.0, 0.0], (1, 2))
