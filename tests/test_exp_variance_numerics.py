"""variance_numerics in quick mode: the one-pass variance fails in float32, two passes do not.

The pattern of every experiment test: the quick config's results (run once per session,
``quick_runs`` in conftest.py), and the qualitative property asserted from the
experiment's own numbers. What every experiment must do besides (deterministic numbers,
strict JSON, a figure, checked configs) is tested once for all in
``test_experiment_contract.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import variance_numerics


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(variance_numerics.NAME)


def median_error(results, formula: str) -> np.ndarray:
    return np.median(results["relative_error"][formula], axis=1)  # one value per ratio


def test_one_pass_float32_loses_every_digit_at_large_mean(results):
    ratios = np.asarray(results["mean_to_std_ratios"])
    one_pass = median_error(results, "one_pass_float32")
    assert one_pass[ratios == 1.0][0] < 1e-5
    assert one_pass[ratios == 1e4][0] > 1.0  # more than 100 % wrong
    assert np.all(np.diff(np.log10(one_pass)) > 0)  # grows with μ/σ


def test_one_pass_error_follows_eps_times_ratio_squared(results):
    ratios = np.asarray(results["mean_to_std_ratios"])
    theory = results["float32_eps"] * ratios**2
    ratio_to_theory = median_error(results, "one_pass_float32") / theory
    assert np.all((ratio_to_theory > 1e-2) & (ratio_to_theory < 10))


def test_two_pass_float32_stays_accurate(results):
    assert median_error(results, "two_pass_float32").max() < 1e-4
    assert results["headline"]["two_pass_float32_worst_median_error"] < 1e-4


def test_float64_moves_the_failure_but_does_not_remove_it(results):
    one_pass_64 = median_error(results, "one_pass_float64")
    assert one_pass_64.max() < 1e-5
    assert one_pass_64[-1] > 1e3 * one_pass_64[0]
