"""length_generalization in quick mode: every norm keeps its accuracy on long sequences.

The quick config trains the causal model (4 methods x 2 seeds) once for the whole
module; each test asserts a property that both the quick and the full numbers
show (see the module docstring for the full-config values).
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import length_generalization
from normlab.experiments.length_generalization import Config


@pytest.fixture(scope="module")
def config() -> Config:
    return Config.quick()


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(length_generalization.NAME)


@pytest.fixture(scope="module")
def causal(results) -> dict:
    return results["by_model"]["causal"]


def table(numbers: dict, key: str, method: str) -> np.ndarray:
    return np.asarray(numbers[key][method])  # (lengths, seeds)


def test_every_method_learns_the_task_at_training_lengths(config, causal):
    assert config.seq_lens[0] <= config.train_max_len  # the first test length was trained on
    chance = np.asarray(causal["chance"])[0]  # (seeds,)
    for method in config.methods:
        accuracy = table(causal, "eval_accuracy", method)[0]  # (seeds,)
        assert np.all(accuracy > 0.8), method
        assert np.all(accuracy > chance + 0.2), method


def test_no_method_loses_accuracy_on_longer_sequences(config, causal):
    for method in config.methods:
        median = np.median(table(causal, "eval_accuracy", method), axis=1)  # (lengths,)
        assert median[-1] >= median[0] - 0.02, method
        assert median.min() > 0.8, method


def test_masked_and_unmasked_batchnorm_agree_in_eval_mode(causal):
    masked = np.median(table(causal, "eval_accuracy", "batch_masked"), axis=1)
    unmasked = np.median(table(causal, "eval_accuracy", "batch"), axis=1)
    assert np.all(np.abs(masked - unmasked) < 0.03)


def test_unmasked_running_statistics_mismatch_real_tokens_as_predicted(causal):
    masked = table(causal, "normalized_std", "batch_masked")
    unmasked = table(causal, "normalized_std", "batch")
    assert np.all(unmasked > masked + 0.05)  # every length and seed
    assert np.all(np.abs(np.median(masked, axis=1) - 1.0) < 0.1)
    theory = length_generalization.unmasked_std_ratio_theory(causal["train_padding_fraction"])
    assert 0.2 < causal["train_padding_fraction"] < 0.3  # lengths 8-16 padded to 16
    assert np.all(np.abs(np.median(unmasked, axis=1) - theory) < 0.1)


def test_batchnorm_in_train_mode_on_long_batches_still_works(causal):
    for method in ("batch_masked", "batch"):
        assert np.all(table(causal, "train_mode_accuracy", method) > 0.85), method


def test_layernorm_and_rmsnorm_have_no_batchnorm_measurements(causal):
    for key in ("train_mode_accuracy", "normalized_std", "normalized_mean_offset"):
        assert set(causal[key]) == {"batch_masked", "batch"}


def test_headline_is_computed_from_the_numbers(causal, results):
    headline = results["headline"]
    longest = np.median(table(causal, "eval_accuracy", "layer")[-1])
    assert headline["causal_layer_eval_accuracy_at_longest_length"] == pytest.approx(longest)
    assert headline["causal_largest_median_accuracy_drop_shortest_to_longest"] < 0.02
