"""effective_learning_rate in quick mode: scale invariance before a norm, Pythagoras
without weight decay, and the angular update √(2ηλ) with it."""

from __future__ import annotations

import pytest

from normlab.experiments import effective_learning_rate


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(effective_learning_rate.NAME)


def test_a_weight_before_a_norm_is_scale_invariant_to_rounding_once_eps_is_negligible(results):
    check = results["headline"]["check"]
    for norm in ("batch", "layer", "rms"):
        assert check[norm]["negligible_eps"]["max_abs_cosine"] < 1e-10
        assert check[norm]["negligible_eps"]["max_gradient_ratio_error"] < 1e-10
    assert check["none"]["negligible_eps"]["max_abs_cosine"] > 1e-3
    assert check["none"]["negligible_eps"]["max_gradient_ratio_error"] > 0.1


def test_eps_is_what_breaks_batchnorms_invariance(results):
    batch = results["headline"]["check"]["batch"]
    default = batch["default_eps"]["max_gradient_ratio_error"]
    assert default > 1e3 * batch["negligible_eps"]["max_gradient_ratio_error"]


def test_without_weight_decay_the_norm_grows_exactly_by_pythagoras(results):
    headline = results["headline"]
    assert headline["pythagoras_ratio_without_decay"] == pytest.approx(1.0, abs=1e-3)
    assert headline["dynamics"]["0"]["final_over_initial_norm"] > 1
    assert headline["angle_last_over_first_window_without_decay"] < 1  # the step shrinks


def test_with_weight_decay_the_angular_update_settles_near_sqrt_2_eta_lambda(results):
    dynamics = results["headline"]["dynamics"]
    settled = [label for label, entry in dynamics.items() if entry["equilibrated"]]
    assert settled, "no weight decay reached equilibrium: train longer"
    for label in settled:
        ratio = dynamics[label]["measured_over_theory"]
        assert abs(ratio - 1) < effective_learning_rate.AGREEMENT, (label, ratio)
    for label, entry in dynamics.items():
        if label != "0":
            assert entry["final_over_initial_norm"] < 1  # weight decay shrank the weight


def test_summary_has_a_line_per_method_and_weight_decay(results):
    text = effective_learning_rate.summary(results)
    assert all(f"λ = {decay:>6g}" in text for decay in results["weight_decays"])
    assert all(f"{norm:>6}: |cos" in text for norm in results["norms"])
