"""Finite-difference gradient checks (float64, random upstream gradient) of every layer.

``nl.gradcheck(layer, x, mask)`` returns the largest relative error of ``backward`` for
the input and for each parameter. The last tests make sure the checker is not vacuous:
it flags a backward that is wrong in the input gradient, in one parameter gradient, or
in the classic ways (forgetting the statistics; returning the zero gradient that the
``sum(BatchNorm(x))`` loss would wrongly confirm). ``jacobian`` builds the full ∂y/∂x
from the backward; it is checked against finite differences and BatchNorm's formula.

Batch Renorm runs every ``kind`` test with its default r_max = 1, d_max = 0 (r and d are
then constants); its general case, with r and d held fixed, is in ``test_batch_renorm.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import LAYER_KINDS, build_layer

import normlab as nl
from normlab.gradcheck import jacobian, relative_error

#: A right backward measures at most 3e-9 here; the wrong ones below, 1e-5 or more.
GRADCHECK_TOLERANCE = 1e-7
X_SHAPE = (3, 4, 6)  # (N, T, C): C = 6 features, GroupNorm with 2 groups of 3


@pytest.fixture(params=(*LAYER_KINDS, "batch_renorm"))
def kind(request) -> str:
    """conftest's layers and Batch Renorm."""
    return request.param


def padding_mask(num_real_tokens=(4, 2, 3), length=X_SHAPE[1]) -> np.ndarray:
    """(N, T) mask of sequences of different lengths, True = real token."""
    return np.arange(length) < np.array(num_real_tokens)[:, None]


def affine_options(kind: str, affine: bool) -> dict:
    name = "elementwise_affine" if kind in ("layer", "rms") else "affine"
    return {name: affine}


def trained_layer(layer, rng, x_shape, steps: int = 2):
    """The layer after a few training steps, so BatchNorm's running stats are not 0 and 1."""
    for _ in range(steps):
        layer(rng.normal(1.0, 2.0, size=x_shape))
    return layer


def assert_gradients_correct(layer, x, mask=None) -> None:
    errors = nl.gradcheck(layer, x, mask=mask)
    assert set(errors) == {"input", *layer.params}
    for name, error in errors.items():
        assert error < GRADCHECK_TOLERANCE, f"gradient of {name}: relative error {error:.3g}"


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_finite_differences(kind, training, affine, use_mask, rng):
    layer = build_layer(kind, rng=rng, **affine_options(kind, affine))
    layer = trained_layer(layer, rng, X_SHAPE).train(training)
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    assert_gradients_correct(layer, x, mask=padding_mask() if use_mask else None)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("layer", {"bias": False}),
        ("layer", {"normalized_shape_is_tuple": True}),
        ("rms", {"eps": 1e-3}),
        ("rms", {"normalized_shape_is_tuple": True}),
        ("batch", {"track_running_stats": False}),
        ("batch", {"momentum": None}),
        ("batch", {"ghost_batch_size": 1}),  # three ghost batches of one sequence each
        ("batch_renorm", {"momentum": None}),
        ("group", {"num_groups": 1}),
        ("group", {"num_groups": 6}),
    ],
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_finite_differences_for_options(kind, options, training, rng):
    options = dict(options)
    size = X_SHAPE[1:] if options.pop("normalized_shape_is_tuple", False) else X_SHAPE[-1]
    layer = trained_layer(build_layer(kind, size, rng=rng, **options), rng, X_SHAPE)
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    assert_gradients_correct(layer.train(training), x, mask=padding_mask())


@pytest.mark.parametrize("x_shape", [(5, 6), (2, 3, 2, 6)], ids=["NC", "NHWC"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_finite_differences_on_2d_and_4d_input(kind, x_shape, training, rng):
    if kind == "instance" and len(x_shape) == 2:
        pytest.skip("InstanceNorm needs a time or spatial axis (its bad-input test covers (N, C))")
    layer = trained_layer(build_layer(kind, rng=rng), rng, x_shape).train(training)
    mask = np.ones(x_shape[:-1], dtype=bool)
    mask.flat[1::3] = False  # a third of the positions padded, spread over the batch
    x = rng.normal(0.5, 2.0, size=x_shape)
    assert_gradients_correct(layer, x)
    assert_gradients_correct(layer, x, mask=mask)


def test_gradcheck_leaves_the_layer_and_input_unchanged(rng):
    layer = trained_layer(build_layer("batch", rng=rng), rng, X_SHAPE)
    before = copy.deepcopy(layer)
    x = rng.normal(size=X_SHAPE)
    x_before = x.copy()
    nl.gradcheck(layer, x, mask=padding_mask())
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(layer.running_mean, before.running_mean)
    np.testing.assert_array_equal(layer.running_var, before.running_var)
    assert layer.num_batches_tracked == before.num_batches_tracked
    for name, value in before.params.items():
        np.testing.assert_array_equal(layer.params[name], value)


# ---------------------------------------------------------------------------
# The checker is not vacuous: it catches wrong backward passes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "wrong_gradient"),
    [
        (kind, gradient)
        for kind in LAYER_KINDS
        for gradient in ("input", "weight", "bias")
        if not (kind == "rms" and gradient == "bias")  # RMSNorm has no bias
    ],
)
def test_gradcheck_flags_one_slightly_wrong_gradient_and_only_that_one(
    kind, wrong_gradient, rng, monkeypatch
):
    layer_class = type(build_layer(kind))
    right_backward = layer_class.backward

    def backward_with_one_wrong_entry(self, dy):
        dx = right_backward(self, dy)
        gradient = dx if wrong_gradient == "input" else self.grads[wrong_gradient]
        gradient.flat[1] += 1e-4 * np.max(np.abs(gradient))
        return dx

    monkeypatch.setattr(layer_class, "backward", backward_with_one_wrong_entry)
    layer = build_layer(kind, rng=rng)
    errors = nl.gradcheck(layer, rng.normal(0.5, 2.0, size=X_SHAPE))
    assert errors[wrong_gradient] > 1e-5
    for name, error in errors.items():
        if name != wrong_gradient:
            assert error < GRADCHECK_TOLERANCE


class ZeroGradientBatchNorm(nl.BatchNorm):
    """Returns dx = 0: exactly the gradient of sum(BatchNorm(x)), so a sum() check passes it."""

    def backward(self, dy):
        super().backward(dy)
        return np.zeros_like(dy)


def test_gradcheck_flags_zero_input_gradient_that_a_sum_loss_would_confirm(rng):
    x = rng.normal(0.5, 2.0, size=X_SHAPE)
    right = build_layer("batch", rng=rng)
    right(x)
    dx_of_sum = right.backward(np.ones_like(x))
    assert np.max(np.abs(dx_of_sum)) < 1e-12  # the trap: d sum(BN(x)) / dx == 0

    wrong = ZeroGradientBatchNorm(X_SHAPE[-1], dtype=np.float64)
    assert nl.gradcheck(wrong, x)["input"] > 0.5


class ConstantStatisticsLayerNorm(nl.LayerNorm):
    """The common bug: dx = dy * γ / sqrt(var + eps), as if mean and var did not depend on x."""

    def forward(self, x, mask=None):
        self.last_input = x
        return super().forward(x, mask=mask)

    def backward(self, dy):
        super().backward(dy)  # keeps the parameter gradients right
        var = np.var(self.last_input, axis=-1, keepdims=True)
        return dy * self.params["weight"] / np.sqrt(var + self.eps)


def test_gradcheck_flags_backward_that_ignores_the_statistics(rng):
    layer = ConstantStatisticsLayerNorm(X_SHAPE[-1], dtype=np.float64)
    errors = nl.gradcheck(layer, rng.normal(0.5, 2.0, size=X_SHAPE))
    assert errors["input"] > 1e-2
    assert errors["weight"] < GRADCHECK_TOLERANCE
    assert errors["bias"] < GRADCHECK_TOLERANCE


# ---------------------------------------------------------------------------
# The Jacobian from the backward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
def test_jacobian_from_backward_equals_finite_differences(kind, use_mask, rng):
    x_shape = (2, 3, 6)
    layer = build_layer(kind, rng=rng)
    x = rng.normal(0.5, 2.0, size=x_shape)
    mask = padding_mask((3, 2), length=3) if use_mask else None
    full = jacobian(layer, x, mask=mask)
    assert full.shape == x_shape + x_shape
    numeric = np.empty_like(full)
    step = 1e-6
    for index in np.ndindex(x_shape):  # the column ∂y/∂x[index], by central differences
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        numeric[(..., *index)] = (layer(plus, mask=mask) - layer(minus, mask=mask)) / (2 * step)
    assert relative_error(full, numeric) < GRADCHECK_TOLERANCE


def test_jacobian_of_chosen_outputs_is_that_slice_of_the_full_jacobian(rng):
    layer = build_layer("batch", rng=rng)
    x = rng.normal(size=(3, 4, 6))
    full = jacobian(layer, x)
    np.testing.assert_array_equal(jacobian(layer, x, outputs=0), full[0])  # (4, 6, 3, 4, 6)
    np.testing.assert_array_equal(jacobian(layer, x, outputs=(1, 2, 3)), full[1, 2, 3])


def test_batchnorm_jacobian_matches_the_formula_off_the_diagonal(rng):
    # ∂y_ik/∂x_jk = γ_k rstd_k (-1 - x̂_ik x̂_jk) / B for samples i ≠ j; features never mix
    batch_size = 5
    layer = build_layer("batch", 3, rng=rng)
    x = rng.normal(size=(batch_size, 3))
    full = jacobian(layer, x)  # (B, D, B, D)
    rstd = 1 / np.sqrt(x.var(axis=0) + layer.eps)
    xhat = (x - x.mean(axis=0)) * rstd
    weight = layer.params["weight"]
    i, j, k = 1, 3, 2
    expected = weight[k] * rstd[k] * (-1 - xhat[i, k] * xhat[j, k]) / batch_size
    assert np.isclose(full[i, k, j, k], expected, rtol=1e-12)
    assert full[i, 0, j, 1] == 0.0
