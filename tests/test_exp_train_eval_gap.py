"""train_eval_gap in quick mode: eval vs train mode, precise BN, and a batch of one."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import train_eval_gap

#: Precise BN may lose a few test images against the running averages (450 images:
#: one image is 0.22 points); it never loses more than this in the quick config.
PRECISE_BN_TOLERANCE_POINTS = 2.0


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(train_eval_gap.NAME)


def test_batch_of_one_in_eval_mode_gives_the_full_batch_predictions(results):
    headline = results["headline"]
    assert headline["batch_of_one_changed_predictions_total"] == 0
    assert headline["batch_of_one_eval_accuracy_equals_full_batch"]
    assert headline["batch_of_one_max_logit_difference"] < 1e-3  # float32 rounding only
    assert results["probe_batch_of_one_eval_accuracy"] == results["probe_eval_accuracy"]


def test_batch_of_one_cannot_use_batch_statistics(results):
    for message in results["messages"].values():
        assert "more than 1 value per feature" in message
    assert results["probe_train_mode_accuracy"][results["test_batch_sizes"].index(1)] is None


def test_precise_bn_running_stats_are_the_training_set_statistics(results):
    assert results["headline"]["precise_bn_first_layer_max_relative_stat_error"] < 1e-5


def test_precise_bn_is_no_worse_than_the_running_averages(results):
    for difference in results["headline"]["precise_bn_minus_eval_points"].values():
        assert difference > -PRECISE_BN_TOLERANCE_POINTS


def test_train_mode_gap_shrinks_as_the_batch_grows(results):
    gap = results["headline"]["eval_minus_train_mode_points"]  # keys: str(batch size)
    small, large = str(min(results["batch_sizes"])), str(max(results["batch_sizes"]))
    assert gap[small] > 5
    assert gap[small] > gap[large]


def test_train_mode_accuracy_grows_with_the_test_batch(results):
    sizes = results["test_batch_sizes"]
    by_size = results["probe_train_mode_accuracy"]
    assert np.median(by_size[sizes.index(2)]) < np.median(by_size[sizes.index(max(sizes))])


def test_the_caption_says_which_mode_was_ahead_in_the_run_it_shows(results):
    sentence = train_eval_gap.scope_sentence(results)
    assert "Wu & Johnson (2021)" in sentence and "not a rule" in sentence
    gaps = results["headline"]["eval_minus_train_mode_points"]
    if all(gap > 0 for gap in gaps.values()):
        assert "eval mode was ahead of train mode at every B" in sentence
    one_train_ahead = {
        "batch_sizes": [2, 4],
        "headline": {"eval_minus_train_mode_points": {"2": -1.5, "4": 3.0}},
    }
    assert "train mode was ahead at B = 2;" in train_eval_gap.scope_sentence(one_train_ahead)
