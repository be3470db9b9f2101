"""batch_stat_noise, quick: batch statistics get less noisy as B grows, as the theory says."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import functional as F
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


def test_batch_statistics_from_image_statistics_equal_moments_over_batch_and_positions(rng):
    features = rng.normal(3.0, 2.0, size=(20, 4, 4, 3))  # (n, H, W, C)
    rows = rng.integers(0, 20, size=(5, 6))  # 5 batches of 6 images
    mean, var = batch_stat_noise.batch_moments_from_images(
        *batch_stat_noise.image_moments(features), rows
    )
    expected_mean, expected_var, _ = F.moments(features[rows], reduce_axes=(1, 2, 3))
    assert np.allclose(mean, expected_mean[:, 0, 0, 0], rtol=1e-12, atol=1e-12)
    assert np.allclose(var, expected_var[:, 0, 0, 0], rtol=1e-12, atol=1e-12)


def test_feature_map_mean_follows_the_exact_formula_for_independent_images(results):
    ratio = np.asarray(results["positions"]["measured"]["mean_ratio_images"])  # (B, seeds)
    assert np.all(np.abs(ratio.mean(axis=1) - 1) < 0.1)
    spread = np.mean(results["positions"]["measured"]["std_mean_over_sigma"], axis=1)
    assert np.all(np.diff(spread) < 0)


def test_positions_of_one_image_are_not_independent_values(results):
    # the i.i.d. B·H·W formula is off for the feature map: the mean is less noisy than
    # B·H·W independent values would be, the variance noisier (the CNN's missing link)
    headline = results["headline"]["positions"]
    assert headline["mean_ratio_to_iid_formula_average"] < 0.9
    assert headline["var_ratio_to_iid_formula_average"] > 1.2
    assert headline["var_worth_values_per_image"] < headline["values_per_image"]
