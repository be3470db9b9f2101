"""accuracy_vs_batch_size in quick mode: BatchNorm collapses at B = 2, LayerNorm does not.

Also checks the shared training loop (``normlab.training``): it
trains the MLP to a sensible accuracy, is deterministic, and keeps the samples
budget equal across batch sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import training
from normlab.experiments import SweepOptions, accuracy_vs_batch_size


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


def test_batchnorm_at_batch_two_is_worse_than_layernorm_beyond_the_test_sets_noise(results):
    versus = results["minus_layer"]["batch"]["2"]
    assert versus["verdict"] == "worse"
    assert versus["interval"][1] < -10
    headline = results["headline"]
    assert 2 in headline["batch_worse_than_layer_at"]
    assert headline["layer_minus_batch_points"]["2"] == pytest.approx(-versus["mean"])


def test_each_learning_rate_is_the_best_candidate_on_validation(results):
    config = results["config"]
    setup = config["training"]
    for norm in results["norms"]:
        for index, size in enumerate(results["batch_sizes"]):
            validation = results["validation_accuracy"][norm][index]
            factor = config["lr_factors"][int(np.argmax(validation))]
            assert results["lr_factor"][norm][index] == factor
            rule = setup["base_lr"] * size / setup["reference_batch_size"]
            assert results["learning_rate"][index] == pytest.approx(rule)
            assert results["chosen_learning_rate"][norm][index] == pytest.approx(factor * rule)


def test_as_good_as_is_two_sided_and_holds_from_there_on(results):
    headline = results["headline"]
    start = headline["batch_as_good_as_layer_from_batch_size"]
    for size, (low, high) in headline["batch_minus_layer_interval_points"].items():
        inside = (
            low > -accuracy_vs_batch_size.MARGIN_POINTS
            and high < accuracy_vs_batch_size.MARGIN_POINTS
        )
        assert inside == (headline["batch_minus_layer_verdict"][size] == "as good as")
        if start is not None and int(size) >= start:
            assert inside


def test_equal_steps_budget_gives_every_batch_size_the_same_steps():
    config = accuracy_vs_batch_size.Config(
        norms=("layer",),
        batch_sizes=(4, 64),
        seeds=(0,),
        lr_factors=(1.0,),
        budget_steps=25,
    )
    results = accuracy_vs_batch_size.run(config, SweepOptions(progress=False))
    assert results["steps"] == [25, 25]
    assert results["samples_seen"] == [100, 1600]
    assert "equal steps" in results["budget"]


def test_train_mode_evaluation_of_ghost_batches_uses_the_statistics_batch():
    numbers = training.train_mlp(
        norm="batch", batch_size=32, seed=0, epochs=1, norm_kwargs={"ghost_batch_size": 4}
    )
    # 450 test images do not split into batches of 32 made of ghost batches of 4; the
    # train-mode pass normalizes test batches of 4, as training normalized its samples
    assert 0 <= numbers["test_accuracy_train_mode"] <= 1


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


def test_statistics_batch_is_the_ghost_batch_or_each_devices_share():
    from normlab import nn

    plain = nn.MLP(4, 8, 2, rng=0)
    ghost = nn.MLP(4, 8, 2, rng=0, norm_kwargs={"ghost_batch_size": 4})
    assert training.statistics_batch_size(plain, 32) == 32
    assert training.statistics_batch_size(ghost, 32) == 4
    assert training.statistics_batch_size(plain, 32, devices=4) == 8
    assert training.statistics_batch_size(plain, 32, devices=4, sync_batchnorm=True) == 32
