"""The fast paths of the core against a textbook float64 reference.

normlab.functional takes shortcuts that the small shapes of the other tests may
not reach: BLAS and einsum sums planned around the largest block of reduced
axes, GroupNorm's statistics repeated along the short within-group axis, and
BatchNorm's backward finishing from dγ and dβ. Each is run here at a shape that
takes it, in float32 and float64, with and without a padding mask, and compared
with the textbook version (:mod:`normlab.reference`) in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_pass

import normlab as nl
from normlab import _fastsum
from normlab import functional as F

EPS = 1e-5
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


# ---------------------------------------------------------------------------
# The reductions
# ---------------------------------------------------------------------------

REDUCTIONS = [
    ((6, 7, 8), (2,)),  # trailing: LayerNorm
    ((6, 7, 8), (0, 1)),  # leading: BatchNorm
    ((3, 9, 4, 2), (1, 3)),  # a middle block and one more axis: GroupNorm
    ((3, 2, 4, 9), (1, 3)),  # the trailing block is the larger one
    ((2, 3, 4, 5), (0, 2)),  # two blocks, neither leading nor trailing
    ((5, 4), (-1,)),  # negative axis
    ((0, 4), (0,)),  # empty array
]


@pytest.mark.parametrize(("shape", "axes"), REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_equal_np_sum(shape, axes, dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape).astype(dtype)
    b = rng.normal(size=shape).astype(dtype)
    expected_sum = np.sum(a.astype(np.float64), axis=axes, keepdims=True)
    expected_product = np.sum(a.astype(np.float64) * b, axis=axes, keepdims=True)
    total, product = F.reduce_sum(a, axes), F.reduce_sum_product(a, b, axes)
    assert total.shape == product.shape == expected_sum.shape
    assert total.dtype == product.dtype == np.dtype(dtype)
    tolerance = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(total, expected_sum, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(product, expected_product, rtol=tolerance, atol=tolerance)


def test_reductions_of_non_contiguous_arrays_and_no_axes():
    a = np.random.default_rng(1).normal(size=(6, 5, 4)).transpose(2, 0, 1)  # a view
    np.testing.assert_allclose(F.reduce_sum(a, (1, 2)), a.sum(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(F.reduce_sum_product(a, a, (0,)), (a * a).sum(axis=0, keepdims=True))
    np.testing.assert_array_equal(F.reduce_sum(a, ()), a)
    assert not np.shares_memory(F.reduce_sum(a, ()), a)


# ---------------------------------------------------------------------------
# The layers at shapes that take the shortcuts
# ---------------------------------------------------------------------------


LAYERS = [
    ("group", (2, 16, 16, 8)),  # statistics repeated along the 2 channels of a group
    ("group", (3, 10, 12)),  # (N, L, C): a middle block of reduced axes
    ("batch", (4, 32, 8)),  # the backward from dγ and dβ
    ("layer", (4, 32, 16)),
    ("rms", (4, 32, 16)),
]


def build(kind, num_features, dtype, rng):
    layer = {
        "batch": lambda: nl.BatchNorm(num_features, dtype=dtype),
        "layer": lambda: nl.LayerNorm(num_features, dtype=dtype),
        "rms": lambda: nl.RMSNorm(num_features, eps=EPS, dtype=dtype),
        "group": lambda: nl.GroupNorm(4, num_features, dtype=dtype),
    }[kind]()
    for value in layer.params.values():
        value[...] = rng.uniform(0.5, 2.0, size=value.shape)
    return layer


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("kind", "x_shape"), LAYERS)
def test_layers_match_the_textbook_reference(kind, x_shape, dtype, use_mask):
    rng = np.random.default_rng(2)
    layer = build(kind, x_shape[-1], dtype, rng)
    x = rng.normal(3.0, 2.0, size=x_shape).astype(dtype)
    dy = rng.normal(size=x_shape).astype(dtype)
    mask = None
    if use_mask:
        mask = rng.random(x_shape[:-1]) < 0.7
        mask.flat[:2] = True
    y = layer(x, mask=mask)
    dx = layer.backward(dy)
    wanted_y, wanted_dx, wanted_grads = reference_pass(
        layer, x.astype(np.float64), dy.astype(np.float64), mask, layer_input_dtype=dtype
    )
    expected = {"y": wanted_y, "dx": wanted_dx, **wanted_grads}
    results = {"y": y, "dx": dx, **layer.grads}
    tolerance = TOLERANCE[np.dtype(dtype)]
    for name, result in results.items():
        assert result.dtype == np.dtype(dtype), name
        scale = max(np.max(np.abs(expected[name])), 1.0)
        np.testing.assert_allclose(
            result, expected[name], rtol=tolerance, atol=tolerance * scale, err_msg=name
        )


def test_the_groupnorm_case_repeats_its_statistics_along_the_group():
    """The first GroupNorm case above must take that path, or it tests nothing new."""
    grouped = (2, 16, 16, 4, 2)  # (N, H, W, G, C/G)
    assert _fastsum.short_run_shape((2, 1, 1, 4, 1), grouped) == (2, 1, 1, 4, 2)
    assert _fastsum.short_run_shape((2, 1, 1, 4, 1), (2, 2, 2, 4, 2)) is None  # too small to pay
