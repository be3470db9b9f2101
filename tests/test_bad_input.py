"""Bad input: the right exception type, a message naming what was expected and what was
given (with the fix where there is one), and no layer state changed by the failed call.

Messages are checked for their key words only (both numbers, the np.moveaxis hint, the
dtype), so rewording a message does not break a test but dropping information does.

Batch Renorm is held to the same tests as every other layer (it is added to ``kind`` here)
and to BatchNorm's own; ghost batches' bad input is in ``test_ghost_batches.py``.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from conftest import LAYER_KINDS, build_layer

import normlab as nl

X_SHAPE = (4, 5, 6)  # (N, T, C)
MOVEAXIS_HINT = re.escape("np.moveaxis(x, 1, -1)")
KINDS = (*LAYER_KINDS, "batch_renorm")
BATCH_KINDS = ("batch", "batch_renorm")  # the layers with batch and running statistics


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    """conftest's layers and Batch Renorm, which must fail in the same ways."""
    return request.param


def mentions(*patterns: str) -> str:
    """A regex matching a message that contains every pattern, in any order, and that is
    not numpy's "operands could not be broadcast" from deep inside the computation."""
    return "^(?![\\s\\S]*could not be broadcast)" + "".join(
        f"(?=[\\s\\S]*{pattern})" for pattern in patterns
    )


def number(value) -> str:
    """The value as a whole number in the text: 6 matches "6." but not "16" or "6.5"."""
    return rf"(?<![\d.]){re.escape(str(value))}(?!\.?\d)"


def shape(value: tuple) -> str:
    return re.escape(str(tuple(value)))


# ---------------------------------------------------------------------------
# Constructor arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf")])
def test_negative_or_non_finite_eps_is_rejected(kind, eps):
    with pytest.raises(ValueError, match=mentions("eps", re.escape(repr(eps)))):
        build_layer(kind, eps=eps)


def test_batchnorm_rejects_eps_zero_but_the_batch_free_layers_accept_it():
    # Deliberate difference from torch (listed in the README): a constant BatchNorm feature
    # with eps = 0 divides by zero in every training step.
    for batch_kind in BATCH_KINDS:
        with pytest.raises(ValueError, match=mentions("eps", "> 0", number(0.0))):
            build_layer(batch_kind, eps=0.0)
    for kind in ("layer", "rms", "group", "instance"):
        assert build_layer(kind, eps=0.0).eps == 0.0


@pytest.mark.parametrize("batch_kind", BATCH_KINDS)
@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_batchnorm_momentum_outside_zero_one_is_rejected(batch_kind, momentum):
    with pytest.raises(ValueError, match=mentions("momentum", number(momentum))):
        build_layer(batch_kind, momentum=momentum)


@pytest.mark.parametrize(
    ("make", "argument", "value"),
    [
        (lambda: nl.BatchNorm(0), "num_features", 0),
        (lambda: nl.BatchNorm(-3), "num_features", -3),
        (lambda: nl.BatchRenorm(0), "num_features", 0),
        (lambda: nl.LayerNorm(0), "normalized_shape", 0),
        (lambda: nl.LayerNorm((5, 0)), "normalized_shape", 0),
        (lambda: nl.LayerNorm((-2, 6)), "normalized_shape", -2),
        (lambda: nl.RMSNorm(0), "normalized_shape", 0),
        (lambda: nl.RMSNorm((5, -1)), "normalized_shape", -1),
        (lambda: nl.GroupNorm(2, 0), "num_channels", 0),
        (lambda: nl.GroupNorm(0, 6), "num_groups", 0),
    ],
    ids=[
        "BatchNorm(0)",
        "BatchNorm(-3)",
        "BatchRenorm(0)",
        "LayerNorm(0)",
        "LayerNorm((5,0))",
        "LayerNorm((-2,6))",
        "RMSNorm(0)",
        "RMSNorm((5,-1))",
        "GroupNorm(2,0)",
        "GroupNorm(0,6)",
    ],
)
def test_sizes_not_positive_are_rejected(make, argument, value):
    with pytest.raises(ValueError, match=mentions(argument, number(value))):
        make()


def test_groupnorm_channels_not_divisible_by_groups_names_both_numbers():
    with pytest.raises(ValueError, match=mentions("divisible", number(6), number(4))):
        nl.GroupNorm(4, 6)


# ---------------------------------------------------------------------------
# Input shape and dtype
# ---------------------------------------------------------------------------

#: (kind, size the layer expects, x shape given, what the message must name)
WRONG_SHAPE_CASES = [
    ("batch", 6, (4, 7), [number(6), number(7)]),
    ("batch", 6, (4, 6, 5), [number(6), number(5), MOVEAXIS_HINT]),  # channels-first (N, C, L)
    ("batch", 6, (2, 6, 3, 3), [number(6), number(3), MOVEAXIS_HINT]),  # (N, C, H, W)
    ("batch_renorm", 6, (4, 7), [number(6), number(7)]),
    ("batch_renorm", 6, (2, 6, 3, 3), [number(6), number(3), MOVEAXIS_HINT]),
    ("group", 6, (4, 7), [number(6), number(7)]),
    ("group", 6, (2, 6, 3, 4), [number(6), number(4), MOVEAXIS_HINT]),
    ("layer", 6, (4, 7), [number(6), number(7)]),
    ("layer", 6, (4, 5, 7), [number(6), number(7), MOVEAXIS_HINT]),
    ("layer", (5, 6), (4, 3, 6), [shape((5, 6)), shape((3, 6)), MOVEAXIS_HINT]),
    ("rms", 6, (4, 8), [number(6), number(8)]),
    ("rms", 6, (4, 5, 8), [number(6), number(8), MOVEAXIS_HINT]),
]


@pytest.mark.parametrize(("kind", "size", "x_shape", "key_words"), WRONG_SHAPE_CASES)
def test_wrong_feature_size_names_both_numbers_and_the_moveaxis_fix(
    kind, size, x_shape, key_words, rng
):
    layer = build_layer(kind, size)
    with pytest.raises(ValueError, match=mentions(*key_words)):
        layer(rng.normal(size=x_shape))


@pytest.mark.parametrize("kind", ["batch", "batch_renorm", "group"])
def test_input_with_fewer_than_two_dims_is_rejected(kind, rng):
    layer = build_layer(kind)
    with pytest.raises(ValueError, match=mentions(number(2), shape((6,)))):
        layer(rng.normal(size=6))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_non_floating_input_is_a_type_error_saying_how_to_convert(kind, dtype):
    layer = build_layer(kind)
    x = np.ones(X_SHAPE, dtype=dtype)
    with pytest.raises(TypeError, match=mentions(np.dtype(dtype).name, "astype")):
        layer(x)


# ---------------------------------------------------------------------------
# BatchNorm needs more than one value per feature in training mode
# ---------------------------------------------------------------------------

#: (x shape, mask or None, how many values per feature that leaves)
TOO_FEW_VALUES_CASES = [
    pytest.param((1, 6), None, 1, id="one-sample"),
    pytest.param((1, 1, 6), None, 1, id="one-token"),
    pytest.param((1, 1, 1, 6), None, 1, id="one-pixel"),
    pytest.param((0, 6), None, 0, id="empty-batch"),
    pytest.param((3, 4, 6), np.arange(12).reshape(3, 4) == 5, 1, id="one-real-token"),
    pytest.param((3, 4, 6), np.zeros((3, 4), dtype=bool), 0, id="all-padding"),
]


@pytest.mark.parametrize("batch_kind", BATCH_KINDS)
@pytest.mark.parametrize(("x_shape", "mask", "values_per_feature"), TOO_FEW_VALUES_CASES)
def test_batchnorm_training_with_at_most_one_value_per_feature_is_rejected(
    x_shape, mask, values_per_feature, batch_kind, rng
):
    layer = build_layer(batch_kind)
    with pytest.raises(ValueError, match=mentions("per feature", number(values_per_feature))):
        layer(rng.normal(size=x_shape), mask=mask)


@pytest.mark.parametrize("batch_kind", BATCH_KINDS)
def test_batchnorm_eval_with_running_stats_accepts_a_single_sample(batch_kind, rng):
    layer = build_layer(batch_kind).eval()
    assert layer(rng.normal(size=(1, 6))).shape == (1, 6)


def test_batchnorm_without_running_stats_rejects_a_single_sample_even_in_eval(rng):
    """It normalizes with batch statistics in both modes; torch raises here too."""
    layer = build_layer("batch", track_running_stats=False).eval()
    with pytest.raises(ValueError, match=mentions("per feature", number(1))):
        layer(rng.normal(size=(1, 6)))


# ---------------------------------------------------------------------------
# Masks and upstream gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask_shape", [X_SHAPE, (5, 4), (4,)], ids=["x.shape", "transposed", "too-few-dims"]
)
def test_mask_of_the_wrong_shape_names_both_shapes(kind, mask_shape, rng):
    layer = build_layer(kind)
    mask = np.ones(mask_shape, dtype=bool)
    with pytest.raises(ValueError, match=mentions(shape(X_SHAPE[:-1]), shape(mask_shape))):
        layer(rng.normal(size=X_SHAPE), mask=mask)


@pytest.mark.parametrize("mask_dtype", [np.int64, np.float64])
def test_non_boolean_mask_is_rejected(kind, mask_dtype, rng):
    layer = build_layer(kind)
    mask = np.ones(X_SHAPE[:-1], dtype=mask_dtype)
    with pytest.raises(ValueError, match=mentions("bool", np.dtype(mask_dtype).name)):
        layer(rng.normal(size=X_SHAPE), mask=mask)


@pytest.mark.parametrize("dy_shape", [(4, 5, 7), (4, 6, 5), (20, 6)])
def test_upstream_gradient_of_the_wrong_shape_names_both_shapes(kind, dy_shape, rng):
    layer = build_layer(kind)
    layer(rng.normal(size=X_SHAPE))
    with pytest.raises(ValueError, match=mentions(shape(X_SHAPE), shape(dy_shape))):
        layer.backward(rng.normal(size=dy_shape))


def test_non_floating_upstream_gradient_is_a_type_error(kind, rng):
    layer = build_layer(kind)
    layer(rng.normal(size=X_SHAPE))
    with pytest.raises(TypeError, match=mentions("int64", "astype")):
        layer.backward(np.ones(X_SHAPE, dtype=np.int64))


def test_backward_before_any_forward_is_a_runtime_error(kind, rng):
    layer = build_layer(kind)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(rng.normal(size=X_SHAPE))


# ---------------------------------------------------------------------------
# No state changes after a failed call
# ---------------------------------------------------------------------------


def failing_calls(kind: str, rng) -> dict:
    """Calls that must raise, by name: each takes the layer and calls it."""
    x = rng.normal(size=X_SHAPE)
    calls = {
        "wrong-feature-size": lambda layer: layer(rng.normal(size=(4, 5, 7))),
        "channels-first": lambda layer: layer(np.moveaxis(x, -1, 1)),
        "integer-input": lambda layer: layer(np.ones(X_SHAPE, dtype=np.int64)),
        "mask-wrong-shape": lambda layer: layer(x, mask=np.ones(X_SHAPE, dtype=bool)),
        "mask-not-boolean": lambda layer: layer(x, mask=np.ones(X_SHAPE[:-1])),
    }
    if kind in BATCH_KINDS:
        calls["one-value-per-feature"] = lambda layer: layer(rng.normal(size=(1, 1, 6)))
        calls["all-padding"] = lambda layer: layer(x, mask=np.zeros(X_SHAPE[:-1], dtype=bool))
        calls["one-dim-input"] = lambda layer: layer(rng.normal(size=6))
    return calls


@pytest.mark.parametrize("kind", KINDS)
def test_failed_forward_changes_no_state_and_backward_still_uses_the_last_good_forward(kind, rng):
    options = {"r_max": 3.0, "d_max": 5.0} if kind == "batch_renorm" else {}
    layer = build_layer(kind, rng=rng, **options)
    x, dy = rng.normal(1.0, 2.0, size=X_SHAPE), rng.normal(size=X_SHAPE)
    mask = np.arange(X_SHAPE[1]) < np.array([5, 2, 3, 4])[:, None]
    layer(x, mask=mask)
    dx_before = layer.backward(dy)
    state_before = copy.deepcopy(layer)

    for name, call in failing_calls(kind, rng).items():
        with pytest.raises((ValueError, TypeError)):
            call(layer)
        if kind in BATCH_KINDS:
            np.testing.assert_array_equal(layer.running_mean, state_before.running_mean, name)
            np.testing.assert_array_equal(layer.running_var, state_before.running_var, name)
            assert layer.num_batches_tracked == state_before.num_batches_tracked, name
        for param_name, value in state_before.params.items():
            np.testing.assert_array_equal(layer.params[param_name], value, name)
        assert layer.training == state_before.training
        # the cached forward is still the good one, so the same dy gives the same dx
        np.testing.assert_array_equal(layer.backward(dy), dx_before, name)
        for grad_name, value in state_before.grads.items():
            np.testing.assert_array_equal(layer.grads[grad_name], value, name)


def test_failed_backward_leaves_the_gradients_and_the_cache_alone(kind, rng):
    layer = build_layer(kind, rng=rng)
    x, dy = rng.normal(size=X_SHAPE), rng.normal(size=X_SHAPE)
    layer(x)
    dx = layer.backward(dy)
    grads_before = {name: grad.copy() for name, grad in layer.grads.items()}
    with pytest.raises(ValueError):
        layer.backward(rng.normal(size=(4, 5, 7)))
    for name, value in grads_before.items():
        np.testing.assert_array_equal(layer.grads[name], value)
    np.testing.assert_array_equal(layer.backward(dy), dx)


# ---------------------------------------------------------------------------
# NaN or inf in a training batch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_kind", BATCH_KINDS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_nan_or_inf_training_batch_warns_and_does_not_update_running_stats(
    bad_value, momentum, batch_kind, rng
):
    """normlab's rule, on purpose unlike torch 2.13.

    torch writes NaN into running_mean/running_var and still increments
    num_batches_tracked, so one bad batch poisons every later eval forward. normlab
    returns what the math gives for that batch, warns, and takes nothing from it:
    the running statistics stay as they were and num_batches_tracked is not
    incremented either, because the batch was not tracked (counting it would also
    bias the momentum=None cumulative average towards the initial 0 and 1).
    """
    options = {"r_max": 3.0, "d_max": 5.0} if batch_kind == "batch_renorm" else {}
    layer = build_layer(batch_kind, rng=rng, momentum=momentum, **options)
    good_batch = rng.normal(2.0, 3.0, size=X_SHAPE)
    layer(good_batch)
    mean, var = layer.running_mean.copy(), layer.running_var.copy()

    bad_batch = rng.normal(size=X_SHAPE)
    bad_batch[1, 2, 3] = bad_value
    with pytest.warns(RuntimeWarning, match="running") as warned:
        y = layer(bad_batch)
    # one clear message from normlab, not numpy's "invalid value encountered in ..."
    assert [
        str(warning.message) for warning in warned if "running" not in str(warning.message)
    ] == []
    assert np.isnan(y[..., 3]).any()  # the feature holding the bad value: what the math gives
    assert np.isfinite(np.delete(y, 3, axis=-1)).all()  # the other features are untouched
    np.testing.assert_array_equal(layer.running_mean, mean)
    np.testing.assert_array_equal(layer.running_var, var)
    assert layer.num_batches_tracked == 1

    # The next good batch updates as if the bad one had never been seen.
    reference = build_layer("batch", momentum=momentum)
    next_batch = rng.normal(-1.0, 0.5, size=X_SHAPE)
    reference(good_batch)
    reference(next_batch)
    layer(next_batch)
    np.testing.assert_allclose(layer.running_mean, reference.running_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, reference.running_var, rtol=1e-12)
    assert layer.num_batches_tracked == reference.num_batches_tracked == 2


# ---------------------------------------------------------------------------
# Axes, as numpy users write them
# ---------------------------------------------------------------------------


def test_core_functions_take_an_int_or_a_tuple_of_axes_negative_ones_too(rng):
    x = rng.normal(size=(3, 4, 5))
    mean, var, count = nl.functional.moments(x, -1)
    np.testing.assert_allclose(mean[..., 0], x.mean(axis=-1))
    np.testing.assert_allclose(var[..., 0], x.var(axis=-1))
    assert count == 5
    for axes in [(0, 1), (-3, -2), (1, 0)]:
        mean, var, _ = nl.functional.moments(x, axes)
        np.testing.assert_allclose(mean[0, 0], x.mean(axis=(0, 1)))
    _, cache = nl.functional.normalize(x, *nl.functional.moments(x, -1)[:2], 1e-5, reduce_axes=-1)
    assert cache.reduce_axes == (2,)
    np.testing.assert_allclose(nl.functional.reduce_sum(x, -1), x.sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(
        nl.functional.reduce_sum_product(x, x, 0), (x * x).sum(axis=0, keepdims=True)
    )


@pytest.mark.parametrize(
    ("axes", "error", "words"),
    [
        (3, np.exceptions.AxisError, ("axis 3", "3 dimensions")),
        ((0, -4), np.exceptions.AxisError, ("axis -4",)),
        ((1, 1), ValueError, ("repeated axis",)),
        ("-1", TypeError, ("int or a tuple of ints",)),
        ((0.5,), TypeError, ("int or a tuple of ints",)),
    ],
)
def test_bad_axes_are_named(axes, error, words, rng):
    with pytest.raises(error, match=mentions(*map(re.escape, words))):
        nl.functional.moments(rng.normal(size=(3, 4, 5)), axes)
