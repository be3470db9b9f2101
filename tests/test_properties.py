"""The properties the notebooks teach, and the guarantees every layer gives.

* invariances: LayerNorm to a per-sample shift and scale, RMSNorm to scale only;
  RMSNorm is LayerNorm without bias on zero-mean rows;
* who depends on whom: BatchNorm in training mode couples a batch, nothing else does;
* padding masks: masked BatchNorm is BatchNorm on the packed real tokens, and masked
  outputs and input gradients are exactly 0;
* numerics: float32 with a large offset, dtype kept, no state leaking between calls;
* running statistics: the momentum formula after one step, momentum=None as a
  cumulative average;
* each forward against the textbook reference (normlab.reference), and the interface itself.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from conftest import LAYER_KINDS, NUM_GROUPS, build_layer, reference_pass

X_SHAPE = (4, 5, 6)  # (N, T, C)
FLOAT64_RTOL = 1e-12


def sequence_mask(num_real_tokens, length) -> np.ndarray:
    """(N, T) mask of sequences of different lengths, True = real token."""
    return np.arange(length) < np.array(num_real_tokens)[:, None]


def random_mask(rng, shape, fraction_real=0.6) -> np.ndarray:
    """A scattered padding mask with at least two real tokens."""
    mask = rng.random(shape) < fraction_real
    mask.flat[:2] = True
    return mask


def forward_backward(layer, x, dy, mask=None):
    """Output, input gradient and a copy of the parameter gradients."""
    y = layer(x, mask=mask)
    dx = layer.backward(dy)
    return y, dx, {name: grad.copy() for name, grad in layer.grads.items()}


def assert_same_grads(grads, expected, rtol=FLOAT64_RTOL, atol=0.0) -> None:
    assert set(grads) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=rtol, atol=atol, err_msg=name)


def copy_state(source, target) -> None:
    """Give ``target`` the parameters and running statistics of ``source``."""
    for name, value in source.params.items():
        target.params[name][...] = value
    if getattr(source, "running_mean", None) is not None:
        target.running_mean[...] = source.running_mean
        target.running_var[...] = source.running_var
        target.num_batches_tracked = source.num_batches_tracked
    target.train(source.training)


# ---------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------

#: eps small enough that the invariances below hold to ~1e-9 in float64
TINY_EPS = 1e-12


@pytest.mark.parametrize("normalized_shape", [6, (5, 6)], ids=["D", "(T,D)"])
def test_layernorm_is_invariant_to_per_sample_shift_and_scale(normalized_shape, rng):
    layer = build_layer("layer", normalized_shape, rng=rng, eps=TINY_EPS)
    x = rng.normal(size=X_SHAPE)
    num_normalized_axes = len(np.atleast_1d(normalized_shape))
    per_sample = X_SHAPE[: len(X_SHAPE) - num_normalized_axes] + (1,) * num_normalized_axes
    scale = rng.uniform(0.1, 10.0, size=per_sample)
    shift = rng.normal(0.0, 100.0, size=per_sample)
    dy = rng.normal(size=X_SHAPE)

    y, dx, _ = forward_backward(layer, x, dy)
    y_moved, dx_moved, _ = forward_backward(layer, scale * x + shift, dy)
    np.testing.assert_allclose(y_moved, y, rtol=1e-8, atol=1e-8)
    # the gradient is invariant to the shift and scales as 1 / scale
    np.testing.assert_allclose(dx_moved * scale, dx, rtol=1e-7, atol=1e-7)


def test_rmsnorm_is_invariant_to_scale_but_not_to_shift(rng):
    layer = build_layer("rms", rng=rng, eps=TINY_EPS)
    x = rng.normal(size=X_SHAPE)
    scale = rng.uniform(0.1, 10.0, size=(*X_SHAPE[:-1], 1))
    shift = rng.normal(0.0, 1.0, size=(*X_SHAPE[:-1], 1))
    y = layer(x)
    np.testing.assert_allclose(layer(scale * x), y, rtol=1e-8, atol=1e-8)
    assert np.max(np.abs(layer(x + shift) - y)) > 0.1


@pytest.mark.parametrize(
    ("rms_eps", "layernorm_eps"),
    [(None, "machine epsilon"), (1e-5, 1e-5)],
    ids=["rms-eps=None", "eps=1e-5"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsnorm_equals_layernorm_without_bias_on_zero_mean_rows(
    rms_eps, layernorm_eps, dtype, rng
):
    if layernorm_eps == "machine epsilon":  # what RMSNorm(eps=None) uses for this dtype
        layernorm_eps = float(np.finfo(dtype).eps)
    rms = build_layer("rms", dtype=dtype, rng=rng, eps=rms_eps)
    layernorm = build_layer("layer", dtype=dtype, bias=False, eps=layernorm_eps)
    layernorm.params["weight"][...] = rms.params["weight"]
    x = rng.normal(1.0, 2.0, size=X_SHAPE)
    x = (x - x.mean(axis=-1, keepdims=True)).astype(dtype)
    dy = rng.normal(size=X_SHAPE).astype(dtype)
    rtol = FLOAT64_RTOL if dtype == np.float64 else 1e-5

    y_rms, dx_rms, grads_rms = forward_backward(rms, x, dy)
    y_ln, dx_ln, grads_ln = forward_backward(layernorm, x, dy)
    np.testing.assert_allclose(y_rms, y_ln, rtol=rtol, atol=rtol)
    assert_same_grads(grads_rms, grads_ln, rtol=rtol, atol=rtol)
    # The input gradients differ: LayerNorm's is RMSNorm's with its mean removed,
    # because LayerNorm's output cannot change when x moves along (1, ..., 1).
    assert np.max(np.abs(dx_rms - dx_ln)) > 100 * rtol
    np.testing.assert_allclose(
        dx_ln, dx_rms - dx_rms.mean(axis=-1, keepdims=True), rtol=rtol, atol=rtol
    )


# ---------------------------------------------------------------------------
# Who depends on whom
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_only_batchnorm_in_training_mode_depends_on_batch_mates(kind, training, rng):
    layer = build_layer(kind, rng=rng)
    for _ in range(3):  # running statistics away from 0 and 1
        layer(rng.normal(2.0, 3.0, size=X_SHAPE))
    layer.train(training)
    x = rng.normal(size=X_SHAPE)
    other_batch_mates = x.copy()
    other_batch_mates[1:] = rng.normal(5.0, 0.5, size=other_batch_mates[1:].shape)

    first_sample = layer(x)[0]
    first_sample_among_others = layer(other_batch_mates)[0]
    if kind == "batch" and training:
        assert np.max(np.abs(first_sample_among_others - first_sample)) > 0.1
    else:
        np.testing.assert_allclose(first_sample_among_others, first_sample, rtol=FLOAT64_RTOL)
        np.testing.assert_allclose(layer(x[:1])[0], first_sample, rtol=FLOAT64_RTOL)


def test_batchnorm_without_running_stats_depends_on_batch_mates_even_in_eval(rng):
    layer = build_layer("batch", rng=rng, track_running_stats=False).eval()
    x = rng.normal(size=X_SHAPE)
    other_batch_mates = x.copy()
    other_batch_mates[1:] += 3.0
    assert np.max(np.abs(layer(other_batch_mates)[0] - layer(x)[0])) > 0.1


@pytest.mark.parametrize("kind", ["layer", "rms", "group"])
def test_per_sample_layers_compute_the_same_in_train_and_eval_mode(kind, rng):
    layer = build_layer(kind, rng=rng)
    x = rng.normal(size=X_SHAPE)
    dy = rng.normal(size=X_SHAPE)
    y_train, dx_train, grads_train = forward_backward(layer.train(), x, dy)
    y_eval, dx_eval, grads_eval = forward_backward(layer.eval(), x, dy)
    np.testing.assert_array_equal(y_eval, y_train)
    np.testing.assert_array_equal(dx_eval, dx_train)
    assert_same_grads(grads_eval, grads_train, rtol=0)


# ---------------------------------------------------------------------------
# Padding masks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("x_shape", [(4, 5, 6), (3, 4, 2, 6)], ids=["NTC", "NHWC"])
def test_masked_batchnorm_equals_batchnorm_on_packed_real_tokens(x_shape, momentum, rng):
    masked = build_layer("batch", rng=rng, momentum=momentum)
    packed = build_layer("batch", momentum=momentum)
    copy_state(masked, packed)

    for step in range(4):
        if step == 3:
            masked.eval()
            packed.eval()
        x = rng.normal(1.0, 2.0, size=x_shape)
        mask = random_mask(rng, x_shape[:-1])
        dy = rng.normal(size=x_shape)
        y, dx, grads = forward_backward(masked, x, dy, mask=mask)
        y_packed, dx_packed, grads_packed = forward_backward(packed, x[mask], dy[mask])

        np.testing.assert_allclose(y[mask], y_packed, rtol=FLOAT64_RTOL, atol=1e-14)
        np.testing.assert_allclose(dx[mask], dx_packed, rtol=FLOAT64_RTOL, atol=1e-14)
        assert_same_grads(grads, grads_packed, atol=1e-13)
        assert not np.any(y[~mask])
        assert not np.any(dx[~mask])
        np.testing.assert_allclose(masked.running_mean, packed.running_mean, rtol=FLOAT64_RTOL)
        np.testing.assert_allclose(masked.running_var, packed.running_var, rtol=FLOAT64_RTOL)
        assert masked.num_batches_tracked == packed.num_batches_tracked == min(step + 1, 3)


@pytest.mark.parametrize("kind", ["layer", "rms", "group"])
def test_masked_per_sample_layers_equal_the_layer_on_each_sample_real_tokens(kind, rng):
    layer = build_layer(kind, rng=rng)
    x = rng.normal(1.0, 2.0, size=X_SHAPE)
    dy = rng.normal(size=X_SHAPE)
    mask = sequence_mask([5, 2, 0, 4], X_SHAPE[1])  # sample 2 is all padding
    y, dx, grads = forward_backward(layer, x, dy, mask=mask)

    summed_grads = {name: np.zeros_like(value) for name, value in layer.params.items()}
    for sample in range(X_SHAPE[0]):
        real = mask[sample]
        if not real.any():
            continue
        # (1, M, C): one sample of M real tokens, no mask
        y_packed, dx_packed, grads_packed = forward_backward(
            layer, x[sample, real][None], dy[sample, real][None]
        )
        np.testing.assert_allclose(y[sample, real], y_packed[0], rtol=FLOAT64_RTOL)
        np.testing.assert_allclose(dx[sample, real], dx_packed[0], rtol=FLOAT64_RTOL)
        for name in summed_grads:
            summed_grads[name] += grads_packed[name]
    assert_same_grads(grads, summed_grads, atol=1e-13)
    assert not np.any(y[2])  # the all-padding sample: no statistic, and 0 everywhere
    assert not np.any(dx[2])


@pytest.mark.parametrize(
    "padding_value", [0.0, 1e6, np.nan, np.inf], ids=["0", "1e6", "nan", "inf"]
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_masked_outputs_and_input_gradients_are_exactly_zero(kind, training, padding_value, rng):
    """Whatever sits at padded positions gives 0 there and changes nothing elsewhere."""
    layer = build_layer(kind, rng=rng)  # a random β, so 0 where masked is not a coincidence
    layer(rng.normal(2.0, 3.0, size=X_SHAPE))  # BatchNorm: running stats away from 0 and 1
    layer.train(training)
    zero_padded_twin = copy.deepcopy(layer)
    x = rng.normal(1.0, 2.0, size=X_SHAPE)
    dy = rng.normal(size=X_SHAPE)
    mask = sequence_mask([5, 2, 3, 4], X_SHAPE[1])

    y_zero_padded, dx_zero_padded, grads_zero_padded = forward_backward(
        zero_padded_twin, np.where(mask[..., None], x, 0.0), dy, mask=mask
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # padding is not bad input: no warning either
        y, dx, grads = forward_backward(
            layer, np.where(mask[..., None], x, padding_value), dy, mask=mask
        )

    assert np.all(y[~mask] == 0)
    assert np.all(dx[~mask] == 0)
    np.testing.assert_array_equal(y[mask], y_zero_padded[mask])
    np.testing.assert_array_equal(dx[mask], dx_zero_padded[mask])
    assert_same_grads(grads, grads_zero_padded, rtol=0)
    if kind == "batch":
        np.testing.assert_array_equal(layer.running_mean, zero_padded_twin.running_mean)
        np.testing.assert_array_equal(layer.running_var, zero_padded_twin.running_var)
        assert layer.num_batches_tracked == zero_padded_twin.num_batches_tracked


# ---------------------------------------------------------------------------
# Numerics and dtypes
# ---------------------------------------------------------------------------


def statistics_view(kind: str, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The array and axes each centered layer averages over, for features-last input."""
    if kind == "batch":
        return x, tuple(range(x.ndim - 1))  # everything but the features
    if kind == "layer":
        return x, (x.ndim - 1,)
    # group: view (N, *spatial, G, C/G), average over the spatial axes and within a group
    num_channels = x.shape[-1]
    grouped = x.reshape(*x.shape[:-1], NUM_GROUPS, num_channels // NUM_GROUPS)
    return grouped, (*range(1, x.ndim - 1), x.ndim)


#: float32 spacing at 1e4 is ~1e-3 of the unit standard deviation, so no float32 method
#: can do much better than 1e-3; measured 1.1e-3 (BatchNorm) to 2e-3 (LayerNorm).
LARGE_OFFSET_TOLERANCE = 1e-2


def test_float32_input_with_large_offset_stays_accurate(kind, rng):
    x_shape = (16, 4, 6)
    x = (rng.normal(size=x_shape) + 1e4).astype(np.float32)
    y = build_layer(kind, dtype=np.float32)(x)
    # the reference sees the very same (already rounded) values, in float64
    y_reference = build_layer(kind, dtype=np.float64)(x.astype(np.float64))
    assert y.dtype == np.float32
    assert np.max(np.abs(y - y_reference)) < LARGE_OFFSET_TOLERANCE

    if kind == "rms":
        return  # RMSNorm does not center: there is no variance to cancel
    # The one-pass form E[x²] - E[x]² on the same float32 data is off by orders of
    # magnitude (and can go negative), which is why the core uses two passes.
    values, axes = statistics_view(kind, x)
    mean = values.mean(axis=axes, keepdims=True)
    one_pass_var = (values * values).mean(axis=axes, keepdims=True) - mean * mean
    y_one_pass = (values - mean) / np.sqrt(np.maximum(one_pass_var, 0) + np.float32(1e-5))
    assert np.max(np.abs(y_one_pass.reshape(x_shape) - y_reference)) > 100 * (
        LARGE_OFFSET_TOLERANCE
    )


@pytest.mark.parametrize("layer_dtype", [np.float32, np.float64], ids=["layer32", "layer64"])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64], ids=["x32", "x64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_and_input_gradient_keep_the_input_dtype(kind, training, x_dtype, layer_dtype, rng):
    layer = build_layer(kind, dtype=layer_dtype, rng=rng)
    layer(rng.normal(size=X_SHAPE).astype(x_dtype))
    layer.train(training)
    x = rng.normal(size=X_SHAPE).astype(x_dtype)
    y, dx, grads = forward_backward(layer, x, rng.normal(size=X_SHAPE).astype(x_dtype))
    assert y.dtype == x_dtype
    assert dx.dtype == x_dtype
    # parameter gradients, like torch's param.grad, have the parameters' dtype
    for name, grad in grads.items():
        assert grad.dtype == layer.params[name].dtype == layer_dtype, name
    if kind == "batch":
        assert layer.running_mean.dtype == layer.running_var.dtype == layer_dtype


#: one layer sees these calls in turn: the shape, the dtype and the mask change every time
CHANGING_CALLS = [
    ((4, 6), np.float64, False),
    ((3, 5, 6), np.float32, True),
    ((2, 3, 4, 6), np.float64, True),
    ((3, 5, 6), np.float64, False),
    ((8, 6), np.float32, False),
    ((3, 5, 6), np.float32, True),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_reused_layer_gives_the_results_of_a_fresh_layer(kind, training, rng):
    """Calls with changing shapes and dtypes leak nothing through reused internal buffers."""
    reused = build_layer(kind, rng=rng).train(training)
    for x_shape, dtype, use_mask in CHANGING_CALLS:
        if kind == "instance" and len(x_shape) == 2:
            continue  # InstanceNorm needs a time or spatial axis
        fresh = build_layer(kind)
        copy_state(reused, fresh)
        x = rng.normal(1.0, 2.0, size=x_shape).astype(dtype)
        dy = rng.normal(size=x_shape).astype(dtype)
        mask = random_mask(rng, x_shape[:-1]) if use_mask else None
        rtol = FLOAT64_RTOL if dtype == np.float64 else 1e-6

        # a module-level buffer would leak into the fresh layer too: check the values
        expected_y, expected_dx, _ = reference_pass(
            fresh, x.astype(np.float64), dy.astype(np.float64), mask, layer_input_dtype=dtype
        )
        y, dx, grads = forward_backward(reused, x, dy, mask=mask)
        y_fresh, dx_fresh, grads_fresh = forward_backward(fresh, x, dy, mask=mask)
        np.testing.assert_allclose(y, y_fresh, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(y, expected_y, rtol=100 * rtol, atol=100 * rtol)
        np.testing.assert_allclose(dx, expected_dx, rtol=100 * rtol, atol=100 * rtol)
        np.testing.assert_allclose(dx, dx_fresh, rtol=rtol, atol=rtol)
        assert_same_grads(grads, grads_fresh, rtol=rtol, atol=rtol)
        if kind == "batch":
            np.testing.assert_array_equal(reused.running_mean, fresh.running_mean)
            np.testing.assert_array_equal(reused.running_var, fresh.running_var)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_returned_arrays_are_not_overwritten_by_later_calls(kind, training, rng):
    layer = build_layer(kind, rng=rng).train(training)
    x, dy = rng.normal(size=X_SHAPE), rng.normal(size=X_SHAPE)
    x_copy, dy_copy = x.copy(), dy.copy()
    y = layer(x)
    dx = layer.backward(dy)
    grads = dict(layer.grads)
    y_copy, dx_copy = y.copy(), dx.copy()
    grads_copy = {name: grad.copy() for name, grad in grads.items()}

    layer(rng.normal(size=X_SHAPE))  # same shape: the easiest case for a buffer to be reused
    layer.backward(rng.normal(size=X_SHAPE))
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(dx, dx_copy)
    assert_same_grads(grads, grads_copy, rtol=0)
    np.testing.assert_array_equal(x, x_copy)  # the inputs are never written either
    np.testing.assert_array_equal(dy, dy_copy)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_editing_the_output_in_place_does_not_change_the_backward(kind, affine, rng):
    """Without γ and β the output is x̂ itself: it must not be the array the cache holds."""
    affine_option = "elementwise_affine" if kind in ("layer", "rms") else "affine"
    layer = build_layer(kind, rng=rng, **{affine_option: affine})
    x, dy = rng.normal(size=X_SHAPE), rng.normal(size=X_SHAPE)
    layer(x)
    dx = layer.backward(dy)
    y = layer(x)
    y *= 0.0  # e.g. an in-place activation after the norm
    y -= 7.0
    np.testing.assert_array_equal(layer.backward(dy), dx)


# ---------------------------------------------------------------------------
# Running statistics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize(
    ("x_shape", "use_mask"),
    [((10, 6), False), ((4, 5, 6), False), ((2, 3, 4, 6), False), ((4, 5, 6), True)],
    ids=["NC", "NTC", "NHWC", "NTC-masked"],
)
def test_running_stats_after_one_step_follow_the_momentum_formula(x_shape, use_mask, momentum, rng):
    layer = build_layer("batch", rng=rng, momentum=momentum)
    assert layer.num_batches_tracked == 0
    np.testing.assert_array_equal(layer.running_mean, 0.0)
    np.testing.assert_array_equal(layer.running_var, 1.0)
    x = rng.normal(3.0, 2.0, size=x_shape)
    mask = random_mask(rng, x_shape[:-1]) if use_mask else np.ones(x_shape[:-1], dtype=bool)
    layer(x, mask=mask if use_mask else None)

    real_values = x[mask]  # (n, C): every value each feature's statistics average
    n = real_values.shape[0]
    batch_mean = real_values.mean(axis=0)
    batch_var = real_values.var(axis=0)  # biased, as used to normalize
    expected_mean = (1 - momentum) * 0.0 + momentum * batch_mean
    expected_var = (1 - momentum) * 1.0 + momentum * batch_var * n / (n - 1)
    np.testing.assert_allclose(layer.running_mean, expected_mean, rtol=FLOAT64_RTOL)
    np.testing.assert_allclose(layer.running_var, expected_var, rtol=FLOAT64_RTOL)
    assert layer.num_batches_tracked == 1


def test_momentum_none_gives_the_cumulative_average_of_batch_statistics(rng):
    layer = build_layer("batch", rng=rng, momentum=None)
    batch_means, batch_unbiased_vars = [], []
    for batch_size in (5, 12, 3, 8):  # every batch weighs the same, whatever its size
        x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 3), size=(batch_size, 6))
        layer(x)
        batch_means.append(x.mean(axis=0))
        batch_unbiased_vars.append(x.var(axis=0, ddof=1))
        np.testing.assert_allclose(
            layer.running_mean, np.mean(batch_means, axis=0), rtol=FLOAT64_RTOL
        )
        np.testing.assert_allclose(
            layer.running_var, np.mean(batch_unbiased_vars, axis=0), rtol=FLOAT64_RTOL
        )
    assert layer.num_batches_tracked == 4


def test_eval_mode_and_track_running_stats_false_do_not_touch_running_stats(rng):
    tracked = build_layer("batch", rng=rng)
    tracked(rng.normal(size=X_SHAPE))
    mean, var = tracked.running_mean.copy(), tracked.running_var.copy()
    tracked.eval()
    tracked(rng.normal(size=X_SHAPE))
    np.testing.assert_array_equal(tracked.running_mean, mean)
    np.testing.assert_array_equal(tracked.running_var, var)
    assert tracked.num_batches_tracked == 1

    untracked = build_layer("batch", track_running_stats=False)
    untracked(rng.normal(size=X_SHAPE))
    assert untracked.running_mean is None
    assert untracked.running_var is None


# ---------------------------------------------------------------------------
# The textbook reference (float64) and the interface
# ---------------------------------------------------------------------------


def test_training_forward_matches_the_textbook_reference(kind, rng):
    eps = 1e-3  # large enough to matter: a forgotten or misplaced eps shows
    layer = build_layer(kind, rng=rng, eps=eps)
    x, dy = rng.normal(1.0, 2.0, size=X_SHAPE), rng.normal(size=X_SHAPE)
    expected_y, _, _ = reference_pass(layer, x, dy)
    np.testing.assert_allclose(layer(x), expected_y, rtol=FLOAT64_RTOL, atol=1e-14)


def test_batchnorm_in_eval_mode_is_the_affine_map_of_its_running_stats(rng):
    eps = 1e-3
    layer = build_layer("batch", rng=rng, eps=eps)
    for _ in range(3):
        layer(rng.normal(2.0, 3.0, size=X_SHAPE))
    layer.eval()
    weight, bias = layer.params["weight"], layer.params["bias"]
    scale = weight / np.sqrt(layer.running_var + eps)  # (C,)
    x, dy = rng.normal(size=X_SHAPE), rng.normal(size=X_SHAPE)
    y, dx, grads = forward_backward(layer, x, dy)

    np.testing.assert_allclose(y, (x - layer.running_mean) * scale + bias, rtol=FLOAT64_RTOL)
    np.testing.assert_allclose(dx, dy * scale, rtol=FLOAT64_RTOL)
    xhat = (x - layer.running_mean) / np.sqrt(layer.running_var + eps)
    np.testing.assert_allclose(grads["weight"], (dy * xhat).sum(axis=(0, 1)), rtol=1e-10)
    np.testing.assert_allclose(grads["bias"], dy.sum(axis=(0, 1)), rtol=1e-10)


#: (kind, constructor options, the parameter names the layer must have)
PARAMETER_CASES = [
    ("batch", {}, {"weight", "bias"}),
    ("batch", {"affine": False}, set()),
    ("layer", {}, {"weight", "bias"}),
    ("layer", {"bias": False}, {"weight"}),
    ("layer", {"elementwise_affine": False}, set()),
    ("rms", {}, {"weight"}),
    ("rms", {"elementwise_affine": False}, set()),
    ("group", {}, {"weight", "bias"}),
    ("group", {"affine": False}, set()),
]


@pytest.mark.parametrize(("kind", "options", "names"), PARAMETER_CASES)
def test_params_and_grads_have_the_enabled_keys_and_the_feature_shape(kind, options, names, rng):
    layer = build_layer(kind, **options)
    assert set(layer.params) == names
    if "weight" in names:
        np.testing.assert_array_equal(layer.params["weight"], np.ones(6))
    if "bias" in names:
        np.testing.assert_array_equal(layer.params["bias"], np.zeros(6))
    for value in layer.params.values():
        assert value.shape == (6,)

    layer(rng.normal(size=X_SHAPE))
    layer.backward(rng.normal(size=X_SHAPE))
    assert set(layer.grads) == names
    for name in names:
        assert layer.grads[name].shape == layer.params[name].shape


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_mode_flag_starts_in_training_and_train_eval_return_the_layer(kind):
    layer = build_layer(kind)
    assert layer.training is True
    assert layer.eval() is layer
    assert layer.training is False
    assert layer.train() is layer
    assert layer.training is True
