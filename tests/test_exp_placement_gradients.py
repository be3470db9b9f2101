"""placement_gradients, quick: gradient norms per layer at initialization, Pre-LN vs Post-LN.

The quick config is small (d_model 32, depths 2–8); the assertions are properties that the
quick and the default numbers both show, or that hold at any size (said so per test). The
default run's outcome, quoted in the README and the notebook, is checked on its committed
numbers at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from normlab.experiments import placement_gradients

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(placement_gradients.NAME)


def medians(results, table: str, placement: str, quantity="feedforward_output_weight"):
    return np.median(results[table][placement][quantity], axis=1)  # (depths,)


def test_every_layer_of_every_depth_has_a_gradient(results):
    for placement in results["placements"]:
        for depth in results["depths"]:
            norms = np.asarray(results["per_layer"][placement]["block"][str(depth)])
            assert norms.shape == (depth, len(results["config"]["seeds"]))
            assert np.all(norms > 0)


def test_post_ln_block_outputs_have_rms_one_so_its_stream_never_grows(results):
    """Any size: a Post-LN block ends with a LayerNorm (γ = 1, β = 0 at initialization)."""
    growth = np.asarray(results["stream_growth"]["post_ln"])  # (depths, seeds)
    assert np.allclose(growth, growth[:1], rtol=1e-3)  # a seed's embeddings are the same


def test_pre_ln_stream_grows_with_depth_but_far_less_than_the_square_root(results):
    growth = np.median(results["stream_growth"]["pre_ln"], axis=1)
    depths = np.asarray(results["depths"])
    assert np.all(np.diff(growth) > 0)
    assert np.all(growth < np.sqrt(depths + 1))
    assert growth[-1] < 0.6 * np.sqrt(depths[-1] + 1)


def test_post_ln_last_layer_gradient_is_larger_than_pre_ln_at_every_depth(results):
    assert np.all(
        medians(results, "last_layer", "post_ln") > medians(results, "last_layer", "pre_ln")
    )


def test_headline_slopes_are_fitted_to_the_medians(results):
    depths = np.asarray(results["depths"], dtype=float)
    for placement in results["placements"]:
        slope = np.polyfit(np.log(depths), np.log(medians(results, "last_layer", placement)), 1)[0]
        assert results["headline"][placement]["last_layer_slope_vs_depth"] == pytest.approx(slope)


def test_default_run_pre_ln_does_not_follow_one_over_root_depth_at_torchs_initialization():
    """The committed default numbers: the paper's 1/√L (slope −0.5) is not seen, and the
    residual stream, which the final norm divides by, grows far less than √(L + 1)."""
    headline = json.loads((FIGURES / "placement_gradients.json").read_text())["headline"]
    assert headline["pre_ln"]["last_layer_slope_vs_depth"] > -0.25
    assert headline["post_ln"]["last_layer_slope_vs_depth"] > -0.25
    assert (
        headline["pre_ln"]["stream_growth_at_largest_depth"]
        < 0.5 * headline["sqrt_of_blocks_plus_one_at_largest_depth"]
    )
