"""Counting work instead of timing it: the reduction counter and arrays that count."""

from __future__ import annotations

import numpy as np
import pytest

import normlab as nl
from normlab.instruments import count_reductions
from normlab.module import as_float_array


class Tagged(np.ndarray):
    """The smallest ndarray subclass: it only has to survive the layer's input check."""


def test_reductions_are_counted_only_inside_the_block():
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    layer = nl.LayerNorm(8)
    with count_reductions() as forward:
        layer(x)
    with count_reductions() as backward:
        layer.backward(np.ones_like(x))
    assert dict(forward) == {"reduce_sum": 1, "reduce_sum_product": 1}  # mean, then variance
    assert forward.total() == 2
    assert backward.total() == 4  # Σ ĝ, Σ ĝ·x̂, dγ, dβ
    layer(x)
    assert forward.total() == 2  # closed: nothing more counted


def test_nested_blocks_both_count():
    x = np.ones((2, 4), dtype=np.float64)
    with count_reductions() as outer:
        nl.RMSNorm(4)(x)
        with count_reductions() as inner:
            nl.RMSNorm(4)(x)
    assert inner.total() == 1  # RMSNorm: the mean square only
    assert outer.total() == 2


def test_ndarray_subclasses_pass_the_input_check_as_they_are():
    x = np.zeros((2, 3), dtype=np.float32).view(Tagged)
    assert type(as_float_array(x, "LayerNorm")) is Tagged
    assert isinstance(nl.LayerNorm(3)(x), np.ndarray)


def test_the_dtype_check_still_applies_to_subclasses():
    with pytest.raises(TypeError, match="floating-point input"):
        as_float_array(np.zeros((2, 3), dtype=np.int64).view(Tagged), "LayerNorm")
