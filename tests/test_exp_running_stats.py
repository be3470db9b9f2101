"""running_stats, quick: running averages reach the population; momentum trades speed for noise."""

from __future__ import annotations

import pytest

from normlab.experiments import running_stats
from normlab.experiments.running_stats import Config


@pytest.fixture(scope="module")
def config():
    return Config.quick()


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(running_stats.NAME)


def final_for(results, momentum) -> dict:
    return results["final"][results["momenta"].index(momentum)]


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_final_running_mean_is_near_the_true_mean(results, momentum):
    final = final_for(results, momentum)
    assert abs(final["bias_mean"]) < 0.1  # in units of sigma, over seeds and features
    assert final["std_mean"] < 2 * final["theory_std_mean"]


def test_larger_momentum_gives_a_noisier_final_estimate(results):
    noise = [final_for(results, momentum)["std_mean"] for momentum in (0.01, 0.1, 0.5)]
    assert noise[0] < noise[1] < noise[2]
    assert final_for(results, None)["std_mean"] < noise[1]


def test_running_var_is_unbiased_and_the_biased_alternative_is_not(results, config):
    cumulative = final_for(results, None)
    unbiased_error = abs(cumulative["bias_var"])
    biased_error = abs(cumulative["mean_biased_var"] - 1)
    assert unbiased_error < 0.05
    assert unbiased_error < biased_error
    expected_biased = (config.batch_size - 1) / config.batch_size
    assert abs(cumulative["mean_biased_var"] - expected_biased) < 0.05


def test_theory_of_an_exponential_average():
    # one update with momentum 1 keeps the batch statistic: all of its variance
    assert running_stats.kept_fraction(1.0, 1) == pytest.approx(1.0)
    assert running_stats.kept_fraction(0.5, 10**6) == pytest.approx(1 / 3)
    assert running_stats.kept_fraction(None, 4) == pytest.approx(0.25)
