"""lm_batch_composition, quick: padded batches, random or bucketed, masked BatchNorm or not.

The quick run shows the set-up at any size (how much padding each batching leaves, what
each BatchNorm counts); the default run's outcomes are checked on its committed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from normlab.experiments import lm_batch_composition

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(lm_batch_composition.NAME)


def test_bucketing_leaves_less_padding_than_random_batching(results):
    padding = results["padding_fraction"]
    assert np.all(np.asarray(padding["bucketed"]) < np.asarray(padding["random"]))
    assert np.all(np.asarray(padding["random"]) > 0.2)


def test_unmasked_batchnorm_counts_the_padding_and_masked_batchnorm_does_not(results):
    masked = results["fluctuation"]["batch_masked"]["random"]
    unmasked = results["fluctuation"]["batch"]["random"]
    config = results["config"]
    for one, other in zip(masked, unmasked, strict=True):
        assert max(other["count"]) <= config["batch_size"] * config["context_length"]
        assert min(other["count"]) > max(one["count"])  # padding counted as data


def test_every_run_is_validated_on_the_same_unpadded_text_from_the_same_start(results):
    starts = [
        curve[0]
        for method in results["methods"]
        for batching in results["batchings"]
        for curve in results["validation_loss"][method][batching]
    ]
    seeds = len(results["config"]["seeds"])
    by_seed = np.asarray(starts).reshape(-1, seeds)
    assert np.allclose(by_seed, by_seed[0])  # same initialization for a seed, same text


def test_default_run_bucketing_makes_masked_batchnorm_statistics_fluctuate_more():
    """The committed default numbers: the prediction of the docstring, both parts."""
    headline = json.loads((FIGURES / "lm_batch_composition.json").read_text())["headline"]
    assert (
        headline["batch_masked_bucketed"]["fluctuation_mean"]
        > headline["batch_masked_random"]["fluctuation_mean"]
    )
    assert (
        headline["batch_random"]["fluctuation_mean"]
        > headline["batch_masked_random"]["fluctuation_mean"]
    )
