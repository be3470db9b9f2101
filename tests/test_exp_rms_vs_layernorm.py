"""rms_vs_layernorm, quick: the invariance table, RMS = LN on zero-mean rows, counted work."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import rms_vs_layernorm
from normlab.experiments.rms_vs_layernorm import PAPER_TABLE, TRANSFORMATIONS


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(rms_vs_layernorm.NAME)


def cell(results, method: str, transformation: str, bias: str = "no_bias") -> dict:
    return results["invariance"][bias][method][transformation]


@pytest.mark.parametrize("method", ["batch", "layer", "rms"])
def test_measured_table_matches_zhang_and_sennrich_table_1(results, method):
    measured = tuple(cell(results, method, t)["invariant"] for t in TRANSFORMATIONS)
    assert measured == PAPER_TABLE[method]


def test_the_cells_that_separate_the_methods(results):
    # Re-centering the weights shifts every neuron of a sample alike: only LayerNorm removes it.
    assert cell(results, "layer", "weight_matrix_recentering")["invariant"]
    assert not cell(results, "rms", "weight_matrix_recentering")["invariant"]
    # Re-centering the data shifts each neuron by its own constant: only BatchNorm removes it.
    assert cell(results, "batch", "dataset_recentering")["invariant"]
    assert not cell(results, "layer", "dataset_recentering")["invariant"]
    assert not cell(results, "rms", "dataset_recentering")["invariant"]
    for method in ("batch", "layer", "rms"):  # re-scaling: everyone
        assert cell(results, method, "dataset_rescaling")["invariant"]
        assert cell(results, method, "weight_matrix_rescaling")["invariant"]


def test_invariant_cells_are_exact_without_eps_and_close_with_it(results):
    for bias in results["invariance"].values():
        for row in bias.values():
            for entry in row.values():
                if entry["invariant"]:
                    assert entry["negligible_eps"] < 1e-12
                    assert entry["default_eps"] < 1e-4  # eps breaks scale invariance slightly
                else:
                    assert entry["negligible_eps"] > 1e-2


def test_a_linear_bias_breaks_layernorm_rescaling_but_not_batchnorm(results):
    assert not cell(results, "layer", "weight_matrix_rescaling", "bias")["invariant"]
    assert not cell(results, "rms", "weight_matrix_rescaling", "bias")["invariant"]
    assert cell(results, "batch", "weight_matrix_rescaling", "bias")["invariant"]


def test_rms_equals_layernorm_on_zero_mean_rows(results):
    comparison = results["rms_vs_layer"]
    assert max(comparison["zero_mean"]) < 1e-6
    measured = np.median(comparison["measured"], axis=1)  # grows with mean/std
    assert np.all(np.diff(measured) > 0)
    assert np.allclose(comparison["measured"], comparison["formula"], rtol=0.05, atol=1e-6)


def test_rmsnorm_counts_fewer_reductions_than_layernorm(results):
    headline = results["headline"]
    assert headline["rms_reductions"] < headline["layer_reductions"]
    assert headline["rms_reductions_without_affine"] < headline["layer_reductions_without_affine"]
    assert headline["rms_elementwise_passes"] < headline["layer_elementwise_passes"]
