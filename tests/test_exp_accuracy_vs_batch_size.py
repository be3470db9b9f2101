"""accuracy_vs_batch_size in quick mode: BatchNorm collapses at B = 2, LayerNorm does not.

Also checks the shared training loop (``normlab.training``): it
trains the MLP to a sensible accuracy, is deterministic, and keeps the samples
budget equal across batch sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import training
from normlab.experiments import accuracy_vs_batch_size


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(accuracy_vs_batch_size.NAME)


def median_percent(results, norm: str) -> np.ndarray:
    return 100 * np.median(results["test_accuracy"][norm], axis=1)  # one value per batch size


def test_batchnorm_loses_far_more_at_batch_two_than_layernorm(results):
    per_method = results["headline"]["per_method"]
    assert results["headline"]["smallest_batch_size"] == 2
    batch_drop = per_method["batch"]["drop_from_best_to_smallest_batch_points"]
    layer_drop = per_method["layer"]["drop_from_best_to_smallest_batch_points"]
    assert batch_drop > layer_drop + 10
    assert layer_drop < 3


def test_both_train_sensibly_at_the_reference_batch_size(results):
    at_32 = results["batch_sizes"].index(32)
    for norm in ("batch", "layer"):
        assert median_percent(results, norm)[at_32] > 85


def test_equal_samples_seen_more_steps_for_small_batches(results):
    batch_sizes = np.asarray(results["batch_sizes"])
    samples = np.asarray(results["samples_seen"])
    epochs = results["config"]["training"]["epochs"]
    training_set_size = len(training.digits().x_train)
    assert np.all(samples > epochs * (training_set_size - batch_sizes))  # only partial batches lost
    assert np.all(samples <= epochs * training_set_size)
    assert results["steps"][0] > results["steps"][-1]


def test_learning_rate_follows_the_linear_rule(results):
    training = results["config"]["training"]
    expected = [
        training["base_lr"] * size / training["reference_batch_size"]
        for size in results["batch_sizes"]
    ]
    assert results["learning_rate"] == pytest.approx(expected)


def test_training_loop_is_deterministic_and_batch_free_norms_ignore_the_mode():
    first = training.train_mlp(norm="layer", batch_size=64, seed=3, epochs=1)
    second = training.train_mlp(norm="layer", batch_size=64, seed=3, epochs=1)
    assert first == second
    assert first["test_accuracy_train_mode"] == first["test_accuracy_eval"]


def test_one_loop_trains_the_mlp_and_the_cnn_by_epochs_or_steps_on_one_or_more_devices():
    cnn = training.train_cnn(norm="batch", batch_size=32, seed=0, epochs=1, widths=(8, 16))
    assert cnn["steps"] == 1347 // 32 and cnn["test_accuracy_eval"] > 0.5
    assert len(cnn["test_correct"]) == 450 and np.mean(cnn["test_correct"]) == pytest.approx(
        cnn["test_accuracy_eval"]
    )
    by_steps = training.train_mlp(norm="layer", batch_size=64, seed=0, epochs=1, steps=50)
    assert by_steps["steps"] == 50  # more than one epoch of 21 steps
    on_validation = training.train_mlp(
        norm="layer", batch_size=64, seed=0, epochs=1, evaluation="validation"
    )
    assert len(on_validation["test_correct"]) == 270 and on_validation["evaluation"] == "validation"
    one = training.train_mlp(norm="batch", batch_size=16, seed=0, epochs=1)
    synchronized = training.train_mlp(
        norm="batch", batch_size=16, seed=0, epochs=1, devices=4, sync_batchnorm=True
    )
    assert abs(one["test_accuracy_eval"] - synchronized["test_accuracy_eval"]) < 0.01
    with pytest.raises(ValueError, match="one sample per batch"):
        training.train_mlp(norm="batch", batch_size=4, seed=0, epochs=1, devices=4)
