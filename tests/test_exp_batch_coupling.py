"""batch_coupling, quick: BatchNorm couples a batch; LayerNorm and RMSNorm do not, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import batch_coupling


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(batch_coupling.NAME)


def batch_norm_spread(sample: dict) -> np.ndarray:
    return np.mean(sample["coupling"]["batch"]["spread"], axis=1)  # one per batch size


def test_typical_sample_coupling_falls_as_the_batch_grows(results):
    typical = results["samples"][0]
    assert typical["percentile"] == 50
    assert np.all(np.diff(batch_norm_spread(typical)) < 0)


def test_every_sample_is_less_coupled_in_the_largest_batch(results):
    for sample in results["samples"]:
        spread = batch_norm_spread(sample)
        assert spread[-1] < spread[0]
        assert spread[-1] > 0


@pytest.mark.parametrize("method", ["layer", "rms", "group"])
def test_per_sample_norms_are_exactly_uncoupled(results, method):
    for sample in results["samples"]:
        assert np.max(sample["coupling"][method]["spread"]) == 0.0
        assert np.max(sample["coupling"][method]["max_abs_change"]) == 0.0


def test_batch_norm_jacobian_mixes_samples_only_in_training_mode(results):
    jacobian = results["jacobian"]
    assert jacobian["batch_train"]["max_off_diagonal"] > 0.1
    assert np.min(np.asarray(jacobian["batch_train"]["block_norms"])) > 0
    assert jacobian["batch_eval"]["max_off_diagonal"] == 0.0
    assert jacobian["layer"]["max_off_diagonal"] == 0.0
    for panel in ("batch_eval", "layer"):
        assert jacobian[panel]["mean_diagonal"] > 0
