"""The fast sums behind :mod:`normlab.functional`: speed only, no new mathematics.

Every function here computes something one line of numpy would, only faster;
:mod:`normlab.functional` reads as the formulas and calls these by name.

* :func:`reduce_sum` and :func:`reduce_sum_product`: ``np.sum(x, axes)`` and
  ``np.sum(a * b, axes)`` (keepdims) as BLAS matrix-vector products and one-pass
  ``np.einsum`` / ``np.vecdot`` calls, planned around the largest block of
  consecutive reduced axes (:func:`_sum_plan`).
* :func:`repeat_along_short_run`: a statistic repeated along the short trailing
  run of axes it is constant over (GroupNorm's channels of one group), so that
  numpy's elementwise loops stay long.

They give the results of the plain numpy lines up to the order of the additions;
``tests/test_fast_paths.py`` checks them at shapes that take every path.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from normlab.module import check_axes

__all__ = ["SHORT_RUN", "reduce_sum", "reduce_sum_product", "repeat_along_short_run"]


# ---------------------------------------------------------------------------
# Sums over a set of axes
# ---------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _ones(length: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ones: the right operand of a BLAS matrix-vector sum."""
    ones = np.ones(length, dtype=dtype)
    ones.flags.writeable = False
    return ones


class _SumPlan(NamedTuple):
    """How :func:`reduce_sum` and :func:`reduce_sum_product` sum an array: see :func:`_sum_plan`."""

    view: tuple[int, int, int]  # (before, block, after): the array reshaped around the block
    block_shape: tuple[int, ...]  # shape once the block is summed (keepdims)
    rest_axes: tuple[int, ...]  # reduced axes outside the block, summed afterwards


@lru_cache(maxsize=256)
def _sum_plan(shape: tuple[int, ...], axes: tuple[int, ...]) -> _SumPlan:
    """Plan a sum over ``axes`` of a C-contiguous array of ``shape`` (cached: shapes repeat).

    The block of consecutive reduced axes holding the most values is summed by
    one call on the ``(before, block, after)`` view; the other reduced axes, if
    any, are summed afterwards on that much smaller result. For (N, T, D):
    ``axes=(2,)`` -> view (N·T, D, 1); ``axes=(0, 1)`` -> (1, N·T, D). GroupNorm's
    (N, H, W, G, C/G) over ``(1, 2, 4)`` -> (N, H·W, G·C/G), then C/G.
    """
    ndim = len(shape)
    axes = sorted({axis % ndim for axis in axes})
    blocks: list[list[int]] = []  # runs of consecutive reduced axes
    for axis in axes:
        if blocks and blocks[-1][-1] == axis - 1:
            blocks[-1].append(axis)
        else:
            blocks.append([axis])
    block = max(blocks, key=lambda run: math.prod(shape[axis] for axis in run))
    start, stop = block[0], block[-1] + 1
    view = (math.prod(shape[:start]), math.prod(shape[start:stop]), math.prod(shape[stop:]))
    block_shape = (*shape[:start], *(1,) * (stop - start), *shape[stop:])
    rest_axes = tuple(axis for axis in axes if axis not in block)
    return _SumPlan(view, block_shape, rest_axes)


def _finish_sum(block_sum: np.ndarray, plan: _SumPlan) -> np.ndarray:
    """Sum the reduced axes left outside the plan's block (a small array by then)."""
    total = block_sum.reshape(plan.block_shape)
    if plan.rest_axes:
        total = np.add.reduce(total, axis=plan.rest_axes, keepdims=True)
    return total


def reduce_sum(x: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """Sum of ``x`` over ``axes`` with ``keepdims=True``.

    The sum is a matrix-vector product with a vector of ones, which BLAS runs
    several times faster than ``np.sum``: for a mean over the last axis,
    ``(rows, D) @ (D,)``; over the leading axes, ``(N·T,) @ (N·T, D)``; over
    axes in the middle, one such product per leading index (``matmul`` on a
    stack). Both give the same result up to the order of the additions.

    Example: for ``x`` of shape (N, T, D), ``axes=(2,)`` gives (N, T, 1) and
    ``axes=(0, 1)`` gives (1, 1, D).
    """
    axes = check_axes(axes, x.ndim, "reduce_sum")
    if not axes:
        return x.copy()
    if x.size == 0 or not x.flags.c_contiguous or x.dtype.kind != "f":
        return np.sum(x, axis=tuple(axes), keepdims=True)
    plan = _sum_plan(x.shape, axes)
    before, block, after = plan.view
    ones = _ones(block, x.dtype)
    if after == 1:  # trailing block: (before, block) @ (block,) -> (before,)
        block_sum = x.reshape(before, block) @ ones
    else:  # (block,) @ (before, block, after) -> (before, after)
        block_sum = ones @ x.reshape(plan.view)
    return _finish_sum(block_sum, plan)


def reduce_sum_product(a: np.ndarray, b: np.ndarray, axes: int | tuple[int, ...]) -> np.ndarray:
    """Sum of ``a * b`` over ``axes`` with ``keepdims=True``, without forming ``a * b``.

    ``a`` and ``b`` have the same shape. ``np.einsum`` (``np.vecdot`` for one dot
    product per row) multiplies and adds in one pass over both arrays, about
    twice as fast as a product followed by :func:`reduce_sum`, and needs no
    temporary array. The variance
    :math:`\\sum (x - \\mu)^2`, the backward's :math:`\\sum \\hat{g}\\hat{x}` and
    :math:`\\partial L/\\partial\\gamma = \\sum dy \\cdot \\hat{x}` are such sums.

    Example: for ``a`` and ``b`` of shape (N, T, D), ``axes=(2,)`` gives
    (N, T, 1), one dot product per token.
    """
    axes = check_axes(axes, a.ndim, "reduce_sum_product")
    if not axes:
        return a * b
    plan = _sum_plan(a.shape, axes)
    before, block, after = plan.view
    if after == 1:  # one dot product per row
        block_sum = np.vecdot(a.reshape(before, block), b.reshape(before, block))
    elif before == 1:  # one dot product per column
        block_sum = np.einsum("kc,kc->c", a.reshape(block, after), b.reshape(block, after))
    else:
        block_sum = np.einsum("rkc,rkc->rc", a.reshape(plan.view), b.reshape(plan.view))
    return _finish_sum(block_sum, plan)


# ---------------------------------------------------------------------------
# A statistic repeated along a short trailing run of axes (GroupNorm)
# ---------------------------------------------------------------------------

#: numpy's inner loop runs along the last axes that an operation's arrays share. A
#: statistic constant along a short trailing run of x's axes but varying just before it
#: (GroupNorm's (N, 1, G, 1) against x's (N, H·W, G, C/G)) cuts that loop to the run's
#: C/G values, which costs about twice the time of a long loop. A run shorter than this
#: is filled in (the statistic repeated along it) when that makes an array at most
#: 1/SHORT_RUN of x's size, so that the copy costs far less than it saves.
SHORT_RUN = 64


@lru_cache(maxsize=256)
def short_run_shape(stat_shape: tuple[int, ...], x_shape: tuple[int, ...]):
    """The shape a statistic is repeated to along x's short trailing run, or None.

    For GroupNorm's statistic (N, 1, 1, G, 1) against x's (N, H, W, G, C/G):
    (N, 1, 1, G, C/G) when C/G < :data:`SHORT_RUN` and N·G·C/G · SHORT_RUN ≤ x.size.
    None when the statistic varies along x's last axis, is constant everywhere,
    or the repeat would not pay.
    """
    varying = [axis for axis, size in enumerate(stat_shape) if size > 1]
    if not varying or len(stat_shape) != len(x_shape):
        return None
    last = varying[-1]
    shape = (*stat_shape[: last + 1], *x_shape[last + 1 :])
    run = math.prod(x_shape[last + 1 :])
    if not 1 < run < SHORT_RUN or math.prod(shape) * SHORT_RUN > math.prod(x_shape):
        return None
    return shape


def repeat_along_short_run(stat: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """``stat``, repeated along the short trailing run of x's axes it is constant over.

    The values broadcast against ``x`` exactly as ``stat`` does; only the loops
    of the elementwise operations that use them get longer (see :data:`SHORT_RUN`).
    Returns ``stat`` itself when there is no such run (every layer but GroupNorm).
    """
    shape = short_run_shape(np.shape(stat), x_shape)
    if shape is None:
        return stat
    repeated = np.empty(shape, dtype=stat.dtype)
    repeated[...] = stat
    return repeated
