"""Batch Renormalization (Ioffe, 2017): normlab.BatchRenorm against the paper and BatchNorm.

* the training forward and backward equal the textbook version of the paper's Algorithm 1
  (``normlab.reference.batch_renorm_forward`` / ``_backward``; clipped and unclipped r and
  d, with a mask);
* with r_max = 1 and d_max = 0 it is BatchNorm, bit for bit (outputs, gradients,
  running statistics, over several steps);
* the backward treats r and d as constants: float64 finite differences agree once r and
  d are held fixed, and the gradient equals the independent derivation "BatchNorm's
  gradient with γ·r in place of γ" (dx = r·dx_BN, dγ = r·dγ_BN + d·dβ_BN, dβ = dβ_BN);
  without holding them fixed the finite differences of the unclipped layer measure the
  eval-mode map instead, which is why the check must hold them;
* running statistics, eval mode, state_dict and masks are BatchNorm's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import normlab as nl
from normlab import reference
from normlab.gradcheck import numerical_gradient, relative_error

X_SHAPE = (4, 3, 6)  # (N, T, C)
GRADCHECK_TOLERANCE = 1e-7


def renorm_layer(rng, num_features=X_SHAPE[-1], *, layer_class=nl.BatchRenorm, **options):
    """A float64 BatchRenorm with random γ, β and running statistics away from 0 and 1."""
    layer = layer_class(num_features, dtype=np.float64, **options)
    if "weight" in layer.params:
        layer.params["weight"][...] = rng.uniform(0.5, 2.0, size=num_features)
    if "bias" in layer.params:
        layer.params["bias"][...] = rng.normal(size=num_features)
    layer.running_mean[...] = rng.normal(0.0, 1.0, size=num_features)
    layer.running_var[...] = rng.uniform(0.5, 6.0, size=num_features)
    return layer


def padding_mask() -> np.ndarray:
    return np.arange(X_SHAPE[1]) < np.array([3, 1, 2, 3])[:, None]  # (N, T)


# ---------------------------------------------------------------------------
# Forward: the paper's Algorithm 1
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize(("r_max", "d_max"), [(1.0, 0.0), (1.5, 0.5), (3.0, 5.0), (np.inf, np.inf)])
def test_training_pass_is_the_papers_algorithm_1(r_max, d_max, use_mask, rng):
    layer = renorm_layer(rng, r_max=r_max, d_max=d_max)
    x, dy = rng.normal(0.5, 2.0, size=X_SHAPE), rng.normal(size=X_SHAPE)
    mask = padding_mask() if use_mask else None
    weight, bias = layer.params["weight"].copy(), layer.params["bias"].copy()
    running = layer.running_mean.copy(), layer.running_var.copy()  # before the update
    expected, cache = reference.batch_renorm_forward(
        x, weight, bias, *running, layer.eps, r_max, d_max, mask=mask
    )
    expected_dx, expected_dweight, expected_dbias = reference.batch_renorm_backward(dy, cache)
    r, d = cache[2].reshape(-1), cache[3].reshape(-1)
    np.testing.assert_allclose(layer(x, mask=mask), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.correction.r, r, rtol=1e-13)
    np.testing.assert_allclose(layer.correction.d, d, rtol=1e-13, atol=1e-15)
    assert relative_error(layer.backward(dy), expected_dx) < 1e-12
    assert relative_error(layer.grads["weight"], expected_dweight) < 1e-12
    assert relative_error(layer.grads["bias"], expected_dbias) < 1e-12


def test_the_cases_above_include_clipped_and_unclipped_corrections(rng):
    """So that the Algorithm 1 test exercises both sides of every clip."""
    layer = renorm_layer(rng, r_max=1.5, d_max=0.5)
    layer(rng.normal(0.5, 2.0, size=X_SHAPE))
    r, d = layer.correction
    assert np.any(r == 1.5) or np.any(r == 1 / 1.5)
    assert np.any((r > 1 / 1.5) & (r < 1.5))
    assert np.any(np.abs(d) == 0.5) and np.any(np.abs(d) < 0.5)


def test_unclipped_training_output_is_exactly_the_eval_output(rng):
    """With r = σ_B/σ and d = (μ_B - μ)/σ, x̂ = (x - μ)/σ: eps inside both σ makes it exact."""
    layer = renorm_layer(rng, r_max=np.inf, d_max=np.inf)
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    eval_output = copy.deepcopy(layer).eval()(x)
    np.testing.assert_allclose(layer(x), eval_output, rtol=1e-12, atol=1e-12)


def test_correction_uses_the_running_statistics_from_before_the_update(rng):
    layer = renorm_layer(rng, r_max=np.inf, d_max=np.inf)
    mean_before, var_before = layer.running_mean.copy(), layer.running_var.copy()
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    layer(x)
    values = x.reshape(-1, X_SHAPE[-1])
    expected_d = (values.mean(axis=0) - mean_before) / np.sqrt(var_before + layer.eps)
    np.testing.assert_allclose(layer.correction.d, expected_d, rtol=1e-12)
    assert not np.allclose(layer.running_mean, mean_before)  # and they did move afterwards


# ---------------------------------------------------------------------------
# r_max = 1, d_max = 0 is BatchNorm, bit for bit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_with_r_max_1_and_d_max_0_it_is_batchnorm_bit_for_bit(dtype, use_mask, affine, rng):
    renorm = nl.BatchRenorm(6, affine=affine, r_max=1.0, d_max=0.0, dtype=dtype)
    batchnorm = nl.BatchNorm(6, affine=affine, dtype=dtype)
    if affine:
        for name in ("weight", "bias"):
            batchnorm.params[name][...] = renorm.params[name][...] = rng.normal(size=6)
    mask = padding_mask() if use_mask else None
    for step in range(3):
        x = rng.normal(2.0, 3.0, size=X_SHAPE).astype(dtype)
        dy = rng.normal(size=X_SHAPE).astype(dtype)
        np.testing.assert_array_equal(renorm(x, mask=mask), batchnorm(x, mask=mask), f"step {step}")
        np.testing.assert_array_equal(renorm.backward(dy), batchnorm.backward(dy))
        assert renorm.grads.keys() == batchnorm.grads.keys()
        for name, grad in batchnorm.grads.items():
            np.testing.assert_array_equal(renorm.grads[name], grad, name)
        np.testing.assert_array_equal(renorm.running_mean, batchnorm.running_mean)
        np.testing.assert_array_equal(renorm.running_var, batchnorm.running_var)
    assert renorm.num_batches_tracked == batchnorm.num_batches_tracked == 3
    assert np.all(renorm.correction.r == 1) and np.all(renorm.correction.d == 0)


def test_make_norm_builds_it_and_its_defaults_are_the_papers_starting_point():
    layer = nl.make_norm("batch_renorm", 8, r_max=3.0, d_max=5.0, num_groups=2, momentum=0.01)
    assert isinstance(layer, nl.BatchRenorm)
    assert (layer.r_max, layer.d_max, layer.momentum) == (3.0, 5.0, 0.01)
    default = nl.BatchRenorm(8)
    assert (default.r_max, default.d_max) == (1.0, 0.0)
    assert repr(layer) == (
        "BatchRenorm(8, eps=1e-05, momentum=0.01, affine=True, r_max=3.0, d_max=5.0)"
    )


def test_r_max_and_d_max_are_settable_and_take_effect_at_the_next_forward(rng):
    """The paper's schedule (1/0, relaxed to 3/5) is applied by setting the attributes."""
    layer = renorm_layer(rng)
    batchnorm = nl.BatchNorm(6, dtype=np.float64)
    batchnorm.load_state_dict(layer.state_dict())
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    np.testing.assert_array_equal(copy.deepcopy(layer)(x), copy.deepcopy(batchnorm)(x))
    layer.r_max, layer.d_max = 3.0, 5.0
    assert not np.allclose(layer(x), batchnorm(x))
    assert np.any(layer.correction.d != 0)


# ---------------------------------------------------------------------------
# Backward: r and d are constants
# ---------------------------------------------------------------------------


class FixedCorrectionRenorm(nl.BatchRenorm):
    """BatchRenorm whose r and d stay those of its first training batch: the function the
    stop-gradient backward differentiates, so that finite differences can check it."""

    fixed = None

    def renorm_correction(self, batch_mean, batch_var, running_mean, running_var):
        if self.fixed is None:
            self.fixed = super().renorm_correction(batch_mean, batch_var, running_mean, running_var)
        return self.fixed


def assert_gradients_correct(layer, x, mask=None) -> None:
    errors = nl.gradcheck(layer, x, mask=mask)
    assert set(errors) == {"input", *layer.params}
    for name, error in errors.items():
        assert error < GRADCHECK_TOLERANCE, f"gradient of {name}: relative error {error:.3g}"


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_finite_differences_with_r_max_1_and_d_max_0(
    training, affine, use_mask, rng
):
    layer = renorm_layer(rng, affine=affine).train(training)
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    assert_gradients_correct(layer, x, mask=padding_mask() if use_mask else None)


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize(
    "options", [{}, {"bias": False}, {"affine": False}], ids=["affine", "no-bias", "no-affine"]
)
def test_backward_matches_finite_differences_with_r_and_d_held_fixed(use_mask, options, rng):
    """The general case: r ≠ 1 and d ≠ 0, some features clipped and some not."""
    layer = renorm_layer(rng, layer_class=FixedCorrectionRenorm, r_max=1.5, d_max=0.5, **options)
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    mask = padding_mask() if use_mask else None
    layer(x, mask=mask)  # fixes r and d at this input's values
    r, d = layer.fixed
    assert np.any(r != 1) and np.any(d != 0)
    assert np.any(np.abs(d) == 0.5) and np.any(np.abs(d) < 0.5)  # clipped and not
    assert_gradients_correct(layer, x, mask=mask)


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
def test_gradients_are_batchnorms_with_gamma_times_r(use_mask, rng):
    """The derivation: with r, d constant, y = (γ r)·x̂_B + (γ d + β) is BatchNorm with
    scale γ·r and shift γ·d + β. BatchNorm's input gradient is linear in its scale, so

        dx = r · dx_BN(γ),   dγ = r · Σ dy x̂_B + d · Σ dy = r · dγ_BN + d · dβ_BN,   dβ = dβ_BN

    where dx_BN, dγ_BN, dβ_BN are BatchNorm's gradients with the same γ and β."""
    layer = renorm_layer(rng, r_max=1.5, d_max=0.5)
    batchnorm = nl.BatchNorm(6, dtype=np.float64)
    batchnorm.load_state_dict(layer.state_dict())
    x, dy = rng.normal(0.5, 2.0, size=X_SHAPE), rng.normal(size=X_SHAPE)
    mask = padding_mask() if use_mask else None
    layer(x, mask=mask)
    batchnorm(x, mask=mask)
    r, d = layer.correction
    dx, dx_batchnorm = layer.backward(dy), batchnorm.backward(dy)
    assert relative_error(dx, r * dx_batchnorm) < 1e-13
    dgamma_bn, dbeta_bn = batchnorm.grads["weight"], batchnorm.grads["bias"]
    assert relative_error(layer.grads["weight"], r * dgamma_bn + d * dbeta_bn) < 1e-13
    np.testing.assert_array_equal(layer.grads["bias"], dbeta_bn)


def test_finite_differences_without_fixing_r_and_d_measure_another_function(rng):
    """Why the check must hold r and d: unclipped, the forward *is* (x - μ)/σ·γ + β, whose
    derivative is the eval-mode one; the stop-gradient backward is BatchNorm's times r."""
    layer = renorm_layer(rng, r_max=np.inf, d_max=np.inf)
    layer.track_running_stats = False  # freeze μ and σ, so that the loss is one function of x
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    upstream = rng.normal(size=X_SHAPE)

    def loss() -> float:
        return float(np.sum(layer(x) * upstream))

    numeric = numerical_gradient(loss, x)
    layer(x)
    stop_gradient = layer.backward(upstream)
    eval_mode = copy.deepcopy(layer).eval()
    eval_mode(x)
    assert relative_error(numeric, eval_mode.backward(upstream)) < GRADCHECK_TOLERANCE
    assert relative_error(numeric, stop_gradient) > 0.1


# ---------------------------------------------------------------------------
# BatchNorm's running statistics, eval mode, state and masks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_are_updated_exactly_as_batchnorms(momentum, rng):
    layer = nl.BatchRenorm(6, momentum=momentum, r_max=3.0, d_max=5.0, dtype=np.float64)
    batchnorm = nl.BatchNorm(6, momentum=momentum, dtype=np.float64)
    mask = padding_mask()
    for _ in range(3):
        x = rng.normal(4.0, 3.0, size=X_SHAPE)
        layer(x, mask=mask)
        batchnorm(x, mask=mask)
    assert np.any(layer.correction.d != 0)  # the correction was active all along
    np.testing.assert_array_equal(layer.running_mean, batchnorm.running_mean)
    np.testing.assert_array_equal(layer.running_var, batchnorm.running_var)
    assert layer.num_batches_tracked == batchnorm.num_batches_tracked == 3


def test_eval_mode_is_batchnorms_eval_mode_and_has_no_correction(rng):
    layer = renorm_layer(rng, r_max=3.0, d_max=5.0)
    layer(rng.normal(size=X_SHAPE))
    batchnorm = nl.BatchNorm(6, dtype=np.float64)
    batchnorm.load_state_dict(layer.state_dict())
    x, dy = rng.normal(size=(1, 6)), rng.normal(size=(1, 6))
    layer.eval(), batchnorm.eval()
    np.testing.assert_array_equal(layer(x), batchnorm(x))
    np.testing.assert_array_equal(layer.backward(dy), batchnorm.backward(dy))
    assert layer.correction is None


def test_state_dict_has_batchnorms_names_and_loads_from_a_batchnorm(rng):
    layer = renorm_layer(rng, r_max=3.0, d_max=5.0)
    layer(rng.normal(size=X_SHAPE))
    assert list(layer.state_dict()) == list(nl.BatchNorm(6).state_dict())
    assert sorted(layer.state_dict()) == [
        "bias",
        "num_batches_tracked",
        "running_mean",
        "running_var",
        "weight",
    ]
    copy_of_batchnorm = nl.BatchRenorm(6, dtype=np.float64)
    copy_of_batchnorm.load_state_dict(layer.state_dict())
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(copy_of_batchnorm.state_dict()[name], value)


def test_masked_tokens_take_no_part_and_get_zero_output_and_gradient(rng):
    layer = renorm_layer(rng, r_max=1.5, d_max=0.5)
    x, dy = rng.normal(size=X_SHAPE), rng.normal(size=X_SHAPE)
    mask = padding_mask()
    other_padding = np.where(mask[..., None], x, 1e3)  # different values at padded positions
    first = copy.deepcopy(layer)
    y, y_other = first(x, mask=mask), layer(other_padding, mask=mask)
    np.testing.assert_array_equal(y, y_other)
    np.testing.assert_array_equal(first.running_mean, layer.running_mean)
    assert np.all(y[~mask] == 0)
    assert np.all(layer.backward(dy)[~mask] == 0)


def test_float32_in_float32_out_even_with_a_large_offset(rng):
    layer = nl.BatchRenorm(6, r_max=3.0, d_max=5.0)
    x = (rng.normal(size=X_SHAPE) + 1e4).astype(np.float32)
    for _ in range(3):
        y = layer(x)
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    assert layer.correction.r.dtype == np.float32
    # d is clipped (the running mean is far behind 1e4), r is σ_B/σ, both finite
    assert np.all(np.isfinite(y)) and np.all(np.abs(layer.correction.d) == 5.0)


# ---------------------------------------------------------------------------
# Bad arguments (bad input is in test_bad_input.py, as for every layer)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("r_max", 0.5), ("r_max", np.nan), ("r_max", True), ("d_max", -1.0), ("d_max", "1")],
)
def test_clip_limits_out_of_range_are_rejected_at_construction_and_when_set(name, value):
    with pytest.raises(ValueError, match=name):
        nl.BatchRenorm(6, **{name: value})
    layer = nl.BatchRenorm(6)
    with pytest.raises(ValueError, match=name):
        setattr(layer, name, value)
    assert (layer.r_max, layer.d_max) == (1.0, 0.0)


def test_batch_renorm_needs_running_statistics():
    with pytest.raises(ValueError, match=r"track_running_stats=True.*BatchNorm\(track"):
        nl.BatchRenorm(6, track_running_stats=False)
