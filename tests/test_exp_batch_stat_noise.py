"""batch_stat_noise, quick: batch statistics get less noisy as B grows, as the theory says."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from normlab.experiments import SweepOptions, batch_stat_noise
from normlab.experiments.batch_stat_noise import Config


@pytest.fixture(scope="module")
def results():
    return batch_stat_noise.run(Config.quick(), SweepOptions(progress=False))


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


def test_plot_draws_four_panels(results):
    figure = batch_stat_noise.plot(results)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 4


def test_config_rejects_what_cannot_run():
    with pytest.raises(ValueError, match="batch_sizes"):
        Config(batch_sizes=(1, 2))
    with pytest.raises(ValueError, match="populations"):
        Config(populations=("cauchy",))
    with pytest.raises(ValueError, match="num_batches"):
        Config(num_batches=1)


def test_same_config_same_numbers(results):
    assert batch_stat_noise.run(Config.quick(), SweepOptions(progress=False)) == results
