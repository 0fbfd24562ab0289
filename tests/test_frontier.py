"""The steps-examples frontier fit, on points built from known S_min and E_min."""

import numpy as np
import pytest

from batchlab.frontier import TooFewPoints, fit, largest_efficient_batch


def test_fit_recovers_known_parameters_exactly():
    s_min, e_min = 200.0, 51_200.0  # B_crit = 256
    b = np.array([16, 32, 64, 128, 256, 512, 1024, 4096])
    f = fit(b, s_min + e_min / b)
    assert f.s_min == pytest.approx(s_min, rel=1e-6)
    assert f.e_min == pytest.approx(e_min, rel=1e-6)
    assert f.b_crit == pytest.approx(256, rel=1e-6)
    assert f.r2 == pytest.approx(1.0) and f.rms_log_error < 1e-6
    # the paper's form: (S/S_min - 1)(E/E_min - 1) = 1 on the fitted curve
    s = f.steps_at(b)
    assert (s / f.s_min - 1) * (b * s / f.e_min - 1) == pytest.approx(np.ones(len(b)), rel=1e-6)


def test_fit_with_noise_stays_close_and_reports_quality():
    rng = np.random.default_rng(0)
    b = np.array([8, 16, 32, 64, 128, 256, 512, 1024])
    s = (100 + 12_800 / b) * np.exp(rng.normal(0, 0.05, len(b)))  # 5% multiplicative noise
    f = fit(b, s)
    assert f.b_crit == pytest.approx(128, rel=0.25)
    assert 0.9 < f.r2 < 1.0 and 0.01 < f.rms_log_error < 0.1


def test_fit_refuses_too_few_points():
    with pytest.raises(TooFewPoints, match="2 batch sizes reached the target; a fit needs 3"):
        fit([32, 64, 128], [100, 60, float("nan")])
    with pytest.raises(TooFewPoints):
        fit([32, 32, 32], [100, 101, 99])


def test_regimes_follow_b_crit():
    f = fit([16, 64, 256, 1024], [200 + 51_200 / b for b in [16, 64, 256, 1024]])
    assert f.regime(16) == "perfect scaling"  # 16 <= 256/9
    assert f.regime(256) == "diminishing returns"
    assert f.regime(4096) == "maximal data parallelism"  # 4096 >= 9 * 256


def test_largest_efficient_batch_is_measured_against_the_smallest():
    # examples 1600, 1664, 1792 (within 1/0.9 of 1600 = 1777.8? no), 2560
    assert largest_efficient_batch([16, 32, 64, 128], [1600, 1664, 1792, 2560]) == 32
    assert largest_efficient_batch([16, 32], [1600, float("nan")]) == 16
    assert largest_efficient_batch([], []) is None
