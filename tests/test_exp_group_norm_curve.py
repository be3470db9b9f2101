"""group_norm_curve, quick: the rule, the budget and the CNN's answer to Wu & He's Figure 1.

The quick run is small (two images per device and 32, two methods, two seeds), so the
science test asserts what the experiment reports at every size: BatchNorm's error at
two images per device does not rise by the paper's factor (34.7 / 23.6) over its error
at 32; the other tests check the rule lr = base·N/32, equal epochs and the typed data.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import group_norm_curve


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(group_norm_curve.NAME)


def test_batchnorm_error_at_two_images_per_device_does_not_rise_by_the_papers_factor(results):
    paper = group_norm_curve.PAPER_BATCH_NORM_ERROR_PERCENT
    papers_factor = paper[2] / paper[32]
    errors = results["headline"]["batch"]["mean_test_error_percent"]
    smallest, largest = results["images_per_device"][0], results["images_per_device"][-1]
    assert smallest == 2 and largest == 32
    assert errors["2"] < papers_factor * errors["32"]


def test_learning_rate_follows_the_papers_rule_with_each_methods_own_base(results, quick_runs):
    config = results["config"]
    for method in results["methods"]:
        base = results["base_learning_rate"][method]
        validation = results["validation_accuracy"][method]
        assert base == config["base_learning_rates"][int(np.argmax(validation))]
    for record in quick_runs.records(group_norm_curve.NAME):
        run, result = record["run"], record["result"]
        expected = run["base_lr"] * run["images"] / group_norm_curve.REFERENCE_IMAGES_PER_DEVICE
        assert result["learning_rate"] == pytest.approx(expected)


def test_every_images_per_device_trains_for_the_same_epochs(results):
    config = results["config"]
    for size, steps in zip(results["images_per_device"], results["steps"], strict=True):
        assert steps == config["epochs"] * (1347 // (config["devices"] * size))
    assert results["sgd_batch_size"] == [config["devices"] * n for n in config["images_per_device"]]


def test_the_papers_numbers_travel_with_the_results_as_typed(results):
    paper = results["paper_error_percent"]
    assert paper["batch"] == {
        str(size): value for size, value in group_norm_curve.PAPER_BATCH_NORM_ERROR_PERCENT.items()
    }
    assert paper["group_at_every_size"] == group_norm_curve.PAPER_GROUP_NORM_ERROR_PERCENT


def test_layernorm_of_the_paper_is_groupnorm_with_one_group():
    kind, options = group_norm_curve.NORMS["layer"]
    assert (kind, options) == ("group", {"num_groups": 1})
