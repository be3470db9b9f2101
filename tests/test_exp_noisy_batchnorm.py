"""noisy_batchnorm in quick mode: the injected noise moves the ReLU inputs far more than
no normalization does; the noise layer and the pairing of the three networks."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import nn
from normlab.experiments import noisy_batchnorm
from normlab.layers import BatchNorm


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(noisy_batchnorm.NAME)


def test_noise_after_batchnorm_shifts_the_relu_inputs_far_more_than_no_normalization(results):
    for depth in results["depths"]:
        shift = results["headline"][f"depth_{depth}"]["median_shift_per_step"]
        assert shift["noisy_batch"] > 10 * shift["none"]
        assert shift["batch"] < shift["none"]  # BatchNorm's own outputs barely move


def test_shift_noise_is_a_per_unit_affine_map_in_training_and_the_identity_in_eval():
    rng = np.random.default_rng(0)
    noise = noisy_batchnorm.ShiftNoise(5, max_shift=1.0, max_scale=2.0, rng=rng)
    x, dy = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5))
    np.testing.assert_allclose(noise(x), x * noise.scale + noise.shift)
    np.testing.assert_allclose(noise.backward(dy), dy * noise.scale)
    assert np.all((noise.scale >= 0.5) & (noise.scale <= 2.0))
    assert np.all(np.abs(noise.shift) <= 1.0)
    first = noise.scale.copy()
    noise.resample()
    assert not np.array_equal(first, noise.scale)  # new at every step
    noise.eval()
    np.testing.assert_array_equal(noise(x), x)
    np.testing.assert_array_equal(noise.backward(dy), dy)


def test_the_three_networks_of_a_seed_start_from_the_same_linear_weights():
    config = noisy_batchnorm.Config.quick()
    weights = {}
    for method in noisy_batchnorm.METHODS:
        run = {**config.to_dict(), "depth": 2, "method": method, "seed": 3}
        model, slots, noises = noisy_batchnorm.build(run, np.random.default_rng(3))
        weights[method] = [
            layer.params["weight"] for layer in model if isinstance(layer, nn.Linear)
        ]
        assert len(noises) == (2 if method == "noisy_batch" else 0)
        assert len(slots) == 2 and all(isinstance(model[i + 1], nn.ReLU) for i in slots)
        assert any(isinstance(layer, BatchNorm) for layer in model) == (method != "none")
    for method in ("batch", "noisy_batch"):
        for mine, theirs in zip(weights[method], weights["none"], strict=True):
            np.testing.assert_array_equal(mine, theirs)


def test_comparisons_are_paired_over_seeds_and_the_test_images(results):
    for depth in results["depths"]:
        for comparison in results["comparisons"][str(depth)].values():
            assert len(comparison["per_seed_differences"]) == len(results["config"]["seeds"])
            assert comparison["resampled"] == "seeds and test examples"
            low, high = comparison["interval"]
            assert low <= comparison["mean_difference"] <= high


def test_summary_names_every_network_and_comparison(results):
    text = noisy_batchnorm.summary(results)
    assert all(f"{depth} hidden blocks" in text for depth in results["depths"])
    assert text.count("→") == 3 * len(results["depths"])
