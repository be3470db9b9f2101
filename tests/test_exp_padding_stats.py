"""padding_stats, quick: the mask repairs BatchNorm statistics; LayerNorm/RMSNorm ignore pads."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import plotting
from normlab.experiments import padding_stats


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(padding_stats.NAME)


def fractions(results) -> np.ndarray:
    return np.asarray(results["padding_fractions"])


@pytest.mark.parametrize("stat", ["mean_error", "var_error"])
def test_masked_error_below_unmasked_at_every_nonzero_padding(results, stat):
    masked = np.asarray(results[stat]["batch_masked"])  # (fractions, seeds)
    unmasked = np.asarray(results[stat]["batch"])
    padded = fractions(results) > 0
    assert np.all(masked[padded] < unmasked[padded])
    assert np.all(unmasked[padded] > 1e-2)  # padding counted as data: a visible error


def test_masked_error_is_float32_rounding_only(results):
    assert np.max(results["mean_error"]["batch_masked"]) < 1e-5
    assert np.max(results["var_error"]["batch_masked"]) < 1e-5


def test_unmasked_mean_error_grows_with_padding(results):
    median = np.median(results["mean_error"]["batch"], axis=1)  # (fractions,)
    assert np.all(np.diff(median) > 0)


def test_unmasked_errors_follow_the_exact_formula(results):
    for stat in ("mean_error", "var_error"):
        measured = np.asarray(results[stat]["batch"])
        predicted = np.asarray(results["predicted_unmasked"][stat])
        assert np.allclose(measured, predicted, rtol=1e-4, atol=1e-5)


def test_layer_reading_agrees_with_functional_moments(results):
    assert results["layer_reading_vs_moments"] < 1e-6


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_layer_and_rms_outputs_do_not_depend_on_the_pads(results, kind):
    token = results["token_norms"][kind]
    assert np.all(np.asarray(token["pad_values"]) == 0.0)  # bit for bit
    # Without the pads, only the BLAS summation order changes: a few float32 ulps.
    ulp_bound = 8 * results["float32_eps"] * np.asarray(token["output_scale"])
    assert np.all(np.asarray(token["padded_vs_unpadded"]) <= ulp_bound)
    assert np.all(np.asarray(token["arrangement"]) <= ulp_bound)


def test_headline_is_computed_from_the_numbers(results):
    headline = results["headline"]
    assert headline["masked_mean_error_worst"] == np.max(results["mean_error"]["batch_masked"])
    assert headline["layer_pad_values_max_abs_diff"] == 0.0


def test_panel_c_draws_exact_zeros_at_zero_on_a_linear_axis_with_no_style_repeated(results):
    """Panel (c) says what its title says: pad values change nothing (a line at exactly 0),
    the rest is rounding in units of ε · max |y|; no two lines share colour, marker and style."""
    figure = padding_stats.plot(results)
    ax = figure.axes[2]
    assert ax.get_yscale() == "linear"
    low, high = ax.get_ylim()
    assert low < 0 < high
    lines = [
        line for line in ax.get_lines() if line.get_label() and not line.get_label().startswith("_")
    ]
    looks = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines]
    assert len(set(looks)) == len(looks)
    for kind in padding_stats.TOKEN_METHODS:
        (pad_line,) = [
            line
            for line in lines
            if line.get_label().endswith("pads of random junk")
            and line.get_label().startswith(plotting.method_label(kind))
        ]
        assert np.all(np.asarray(pad_line.get_ydata()) == 0)
