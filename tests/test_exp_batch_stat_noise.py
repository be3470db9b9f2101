"""batch_stat_noise, quick: batch statistics get less noisy as B grows, as the theory says."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import batch_stat_noise


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(batch_stat_noise.NAME)


def seed_mean(results, population: str, quantity: str) -> np.ndarray:
    return np.mean(results["measured"][population][quantity], axis=1)  # one per batch size


@pytest.mark.parametrize("population", ["gaussian", "digits_relu"])
@pytest.mark.parametrize("quantity", ["std_mean_over_sigma", "std_var_over_sigma2"])
def test_spread_falls_as_the_batch_grows(results, population, quantity):
    spread = seed_mean(results, population, quantity)
    assert np.all(np.diff(spread) < 0)


def test_gaussian_mean_spread_matches_sigma_over_root_b(results):
    ratio = np.asarray(results["measured"]["gaussian"]["mean_ratio"])  # (batch sizes, seeds)
    assert np.all(np.abs(ratio.mean(axis=1) - 1) < 0.06)


def test_gaussian_variance_spread_matches_the_exact_biased_formula(results):
    ratio = np.asarray(results["measured"]["gaussian"]["var_ratio"])
    assert np.all(np.abs(ratio.mean(axis=1) - 1) < 0.1)


def test_heavy_tailed_activations_beat_the_gaussian_variance_formula(results):
    # the digits activations have kurtosis well above 3: their variance is noisier than
    # the Gaussian formula says, while the mean still follows sigma / sqrt(B)
    digits = results["measured"]["digits_relu"]
    assert results["kurtosis"]["digits_relu"]["mean"] > 3
    assert np.mean(digits["var_ratio_gaussian_theory"][-1]) > 1.5
    assert abs(np.mean(digits["mean_ratio"]) - 1) < 0.06


def test_exact_variance_formula_reduces_to_the_gaussian_one():
    batch_sizes = np.array([2, 4, 16, 256])
    exact = batch_stat_noise.std_of_biased_variance(1.0, 3.0, batch_sizes)
    assert np.allclose(exact, np.sqrt(2 * (batch_sizes - 1)) / batch_sizes)
