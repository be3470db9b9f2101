"""variance_numerics in quick mode: the one-pass variance fails in float32, two passes do not.

The pattern of every experiment test: run the quick config once (module fixture),
assert the qualitative property from the experiment's own numbers, check that
the figure draws, and that a second run gives the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from normlab.experiments import variance_numerics
from normlab.experiments.variance_numerics import Config


@pytest.fixture(scope="module")
def results():
    return variance_numerics.run(Config.quick())


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


def test_same_config_same_numbers(results):
    assert variance_numerics.run(Config.quick()) == results


def test_plot_draws_a_log_log_figure(results):
    figure = variance_numerics.plot(results)
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_config_rejects_what_cannot_run():
    with pytest.raises(ValueError, match="sample_size"):
        Config(sample_size=1)
    with pytest.raises(ValueError, match="positive"):
        Config(mean_to_std_ratios=(0.0, 10.0))
