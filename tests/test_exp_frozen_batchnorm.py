"""frozen_batchnorm in quick mode: fine-tuning at B = 2 in train mode loses to frozen BatchNorm.

At B = 2 train-mode BatchNorm on vectors maps every feature to ±1, whatever the data, so
the loss against frozen BatchNorm shows in the quick config as in the default run (whose
larger batches, where train mode catches up and overtakes, the quick config does not
train long enough to show). The splits and the learning-rate choice hold at any size.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import training
from normlab.experiments import frozen_batchnorm


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(frozen_batchnorm.NAME)


def test_frozen_batchnorm_fine_tunes_better_at_batch_two(results):
    headline = results["headline"]
    assert headline["smallest_batch_size"] == 2
    low, _ = headline["frozen_minus_train_interval_at_smallest"]
    assert low > 0, headline
    assert headline["frozen_minus_train_verdict_at_smallest"] == "better"


def test_train_mode_fine_tuning_is_worst_at_the_smallest_batch(results):
    assert results["headline"]["train_at_smallest_over_largest_points"] < -5
    assert results["diverged_runs"] == 0


def test_the_learning_rates_are_the_best_on_validation(results, quick_runs):
    config = results["config"]
    validation = {}
    for record in quick_runs.records(frozen_batchnorm.NAME):
        if record["function"].endswith("measure_validation"):
            run = record["run"]
            validation[(run["base_lr"], run["seed"])] = record["result"]["validation_accuracy"]
    for i, mode in enumerate(frozen_batchnorm.MODES):
        for j, size in enumerate(config["batch_sizes"]):
            table = [
                [validation[(rate, seed)][i][j] for seed in config["seeds"]]
                for rate in config["base_learning_rates"]
            ]
            expected = training.best_learning_rate(config["base_learning_rates"], table)
            assert results["base_learning_rates"][mode][str(size)] == expected


def test_pretraining_and_fine_tuning_see_disjoint_digits_and_images():
    run = {"seed": 3, "subset_size": 20}
    validation, test = frozen_batchnorm.target_splits(run)
    split = training.digits()
    for labels in (validation.y_train, validation.y_test, test.y_test):
        assert not np.isin(labels, frozen_batchnorm.SOURCE_CLASSES).any()
    np.testing.assert_array_equal(validation.x_train, test.x_train)  # one subset
    assert len(validation.x_train) == 20
    assert len(validation.x_train) + len(validation.x_test) == np.sum(split.y_train >= 5)
    rows = {row.tobytes() for row in validation.x_train}
    assert not rows & {row.tobytes() for row in validation.x_test}  # validation: the others
    assert len(test.y_test) == np.sum(split.y_test >= 5)


def test_the_summary_states_the_verdict_at_every_batch_size(results):
    text = frozen_batchnorm.summary(results)
    first = results["frozen_minus_train"]["frozen"][0]
    assert f"B =   2: {first['points']:+6.1f} points" in text
    assert text.count("than train mode") + text.count("(inconclusive)") + text.count(
        "as good as train mode"
    ) == 2 * len(results["batch_sizes"])
