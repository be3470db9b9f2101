"""test_time_shift in quick mode: the MLP with BatchNorm and LayerNorm under shifted test images.

AdaBN undoes an affine shift of every pixel exactly in the MLP (its first BatchNorm sees
an affine map of every feature): that holds at any size. That BatchNorm with training
statistics loses under a strong contrast change, and that noise costs every network
including AdaBN, hold with a wide margin in the quick config as in the default run.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import training
from normlab.experiments import test_time_shift
from normlab.experiments.test_time_shift import ADABN

#: One test image of 450, in points.
ONE_IMAGE_POINTS = 100 / 450


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(test_time_shift.NAME)


def median_percent(results, method: str, kind: str) -> np.ndarray:
    return 100 * np.median(results["accuracy"]["mlp"][method][kind], axis=1)  # per strength


def test_adabn_undoes_contrast_and_brightness_exactly_in_the_mlp(results):
    assert (
        results["headline"]["adabn_affine_shift_accuracy_range_points"]["mlp"] <= ONE_IMAGE_POINTS
    )
    for kind in ("contrast", "brightness"):
        per_seed = np.asarray(results["accuracy"]["mlp"][ADABN][kind])  # (strengths, seeds)
        assert np.ptp(per_seed, axis=0).max() <= ONE_IMAGE_POINTS / 100


def test_training_statistics_pass_a_contrast_change_through(results):
    strengths = results["strengths"]["contrast"]
    batch = median_percent(results, "batch", "contrast")
    lowest, clean = strengths.index(min(strengths)), strengths.index(1.0)
    assert batch[lowest] < batch[clean] - 10
    assert median_percent(results, ADABN, "contrast")[lowest] > batch[lowest] + 10


def test_noise_costs_every_network_and_adabn_does_not_undo_it(results):
    strengths = results["strengths"]["noise"]
    noisiest, clean = strengths.index(max(strengths)), strengths.index(0.0)
    for method in results["methods"]:
        accuracy = median_percent(results, method, "noise")
        assert accuracy[noisiest] < accuracy[clean] - 5, method


def test_the_learning_rates_are_the_best_on_validation(results, quick_runs):
    config = results["config"]
    validation = {}
    for record in quick_runs.records(test_time_shift.NAME):
        if record["function"].endswith("measure_validation"):
            run = record["run"]
            key = (run["model"], run["norm"], run["learning_rate"])
            validation.setdefault(key, {})[run["seed"]] = record["result"]["validation_accuracy"]
    for model in config["models"]:
        for norm in config["norms"]:
            table = [
                [validation[(model, norm, rate)][seed] for seed in config["seeds"]]
                for rate in config["learning_rates"]
            ]
            expected = training.best_learning_rate(config["learning_rates"], table)
            assert results["learning_rates"][model][norm] == expected


def test_instance_norm_needs_the_cnn():
    with pytest.raises(ValueError, match="InstanceNorm"):
        test_time_shift.Config(models=("mlp",), norms=("instance",))
    assert test_time_shift.Config(models=("cnn",), norms=("instance",)).norms == ("instance",)


def test_the_summary_has_a_row_per_method_and_the_adabn_range(results):
    text = test_time_shift.summary(results)
    assert "AdaBN: accuracy across every contrast and brightness tested varies by" in text
    assert text.count("\n  LayerNorm") == len(results["models"])
