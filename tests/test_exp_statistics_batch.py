"""statistics_batch, quick: the MLP's damage at g = 2 comes from the statistics alone.

At g = 2 every BatchNorm feature of the MLP is ±1 whatever the SGD batch, so g = 2 inside
B = 16 must lose about as much as the ordinary B = 2; the CNN, whose statistics average
2·H·W values per channel, must lose far less. Both hold at the quick size already.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import statistics_batch
from normlab.experiments.statistics_batch import Config


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(statistics_batch.NAME)


def comparison(results, model: str, setting: str, size: int = 2) -> dict:
    return results["models"][model]["comparison"][setting][str(size)]


def test_mlp_with_statistics_of_two_inside_a_large_batch_is_worse_than_ordinary_batchnorm(
    results,
):
    inside = comparison(results, "mlp", "inside_fixed_batch")
    assert inside["verdict"] == "worse"
    assert inside["interval"][1] < -10  # the whole interval: more than 10 points lost


def test_the_statistics_carry_most_of_the_mlps_small_batch_damage(results):
    ordinary = comparison(results, "mlp", "small_sgd_batch")
    assert ordinary["verdict"] == "worse"
    assert results["models"]["mlp"]["statistics_share"]["2"] > 0.5


def test_the_cnn_loses_far_less_at_two_images_than_the_mlp_at_two_vectors(results):
    cnn = comparison(results, "cnn", "inside_fixed_batch")
    mlp = comparison(results, "mlp", "inside_fixed_batch")
    assert cnn["mean"] > mlp["mean"] + 10


def test_one_learning_rate_and_one_step_count_at_the_fixed_batch(results):
    config = results["config"]
    batch = results["sgd_batch_size"]
    for model, numbers in results["models"].items():
        assert numbers["learning_rate"] in config["learning_rates"]
        best = config["learning_rates"][int(np.argmax(numbers["validation_accuracy"]))]
        assert numbers["learning_rate"] == best, model
        inside = numbers["steps"]["inside_fixed_batch"]
        assert len(set(inside)) == 1 and inside[0] == config["epochs"] * (1347 // batch)
        assert set(numbers["learning_rate_at"]["inside_fixed_batch"]) == {best}


def test_the_ordinary_small_batch_takes_more_steps_at_the_linear_rule(results):
    batch = results["sgd_batch_size"]
    for numbers in results["models"].values():
        small = [size for size in results["statistics_batch_sizes"] if size < batch]
        for size, steps, rate in zip(
            small,
            numbers["steps"]["small_sgd_batch"],
            numbers["learning_rate_at"]["small_sgd_batch"],
            strict=True,
        ):
            assert steps == results["config"]["epochs"] * (1347 // size)
            assert rate == pytest.approx(numbers["learning_rate"] * size / batch)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sgd_batch_size": 16, "statistics_batch_sizes": (2, 32)}, "must end at"),
        ({"sgd_batch_size": 12, "statistics_batch_sizes": (8, 12)}, "must divide"),
    ],
)
def test_statistics_batches_must_fit_the_sgd_batch(fields, message):
    with pytest.raises(ValueError, match=message):
        Config(**fields)
