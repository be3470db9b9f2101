"""lm_norms, quick: how each run was set up and measured; the default run's outcomes.

The quick model trains for 40 updates, too few for the methods to separate; its tests check
what holds at any size (the learning rate is the one the tuning text chose, the counts of
values behind each BatchNorm statistic, the bins of the length test, the validation text).
The default run's outcomes, quoted in the README and the notebooks, are checked on its
committed numbers.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from normlab import data
from normlab.experiments import lm_norms

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(lm_norms.NAME)


def schemes(results):
    return results["by_positions"].values()


def test_each_method_trains_at_the_rate_that_did_best_on_the_tuning_text(results):
    rates = results["config"]["learning_rates"]
    for numbers in schemes(results):
        for norm, losses in numbers["tuning_loss"].items():
            scores = [np.inf if loss is None else loss for loss in losses]
            assert numbers["chosen_lr"][norm] == rates[int(np.argmin(scores))]


def test_reported_curves_are_measured_on_the_validation_text(results):
    assert results["unigram_baseline"] == pytest.approx(data.load_char_corpus().unigram_baseline())
    assert results["unigram_baseline"] != pytest.approx(
        data.load_tuning_corpus().unigram_baseline()
    )


def test_every_method_learns_something(results):
    for numbers in schemes(results):
        for norm, curves in numbers["validation_loss"].items():
            for curve in curves:
                assert curve[-1] < curve[0] - 0.5, norm


def test_batchnorm_statistics_average_every_token_of_the_batch_and_the_cnn_its_pixels(results):
    config = results["config"]
    tokens = config["batch_size"] * config["context_length"]
    for numbers in schemes(results):
        for noise in numbers["batchnorm"]["fluctuation"]:
            assert set(noise["count"]) == {tokens}
            assert all(value > 0 for value in noise["mean"] + noise["var"])
    images = config["cnn_batch_size"]
    for noise in results["cnn"]["fluctuation"]:
        assert noise["count"] == [images * 8 * 8, images * 4 * 4]  # before and after a 2×2 pool


def test_train_mode_differs_from_eval_mode_for_batchnorm(results):
    for numbers in schemes(results):
        batchnorm = numbers["batchnorm"]
        assert all(
            train != evaluated
            for train, evaluated in zip(
                batchnorm["train_mode_loss"], batchnorm["eval_mode_loss"], strict=True
            )
        )


def test_position_bins_double_from_the_training_length_to_the_test_length(results):
    config = results["config"]
    bins = results["position_bins"]
    assert bins[0] == [0, config["context_length"]]
    assert bins[-1][1] == config["test_context_length"]
    assert all(one[1] == two[0] for one, two in itertools.pairwise(bins))
    for numbers in schemes(results):
        for binned in numbers["loss_by_bin"].values():
            assert len(binned) == len(bins)


def test_headline_ratios_are_computed_from_the_numbers(results):
    for scheme, numbers in results["by_positions"].items():
        entry = results["headline"][scheme]
        assert entry["fluctuation_mean_text_over_images"] == pytest.approx(
            entry["fluctuation_mean_text"] / entry["fluctuation_mean_images"]
        )
        for norm in results["norms"]:
            trained = np.median(numbers["loss_by_bin"][norm][0])
            assert entry[norm]["loss_in_trained_positions"] == pytest.approx(trained)


def test_default_run_batchnorm_rises_no_more_beyond_the_training_length_than_layernorm():
    """The committed default numbers: the length test refutes "LN is better for long
    sequences" here (BatchNorm's rise is not larger than LayerNorm's and RMSNorm's), and the
    text batches do not fluctuate much more than the image batches."""
    headline = json.loads((FIGURES / "lm_norms.json").read_text())["headline"]
    for entry in (value for key, value in headline.items() if isinstance(value, dict)):
        batch_rise = entry["batch"]["rise_to_longest_bin"]
        assert batch_rise <= entry["layer"]["rise_to_longest_bin"]
        assert batch_rise <= entry["rms"]["rise_to_longest_bin"]
        assert entry["fluctuation_mean_text_over_images"] < 2
