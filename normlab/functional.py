"""The one normalization core shared by every layer in normlab.

Every layer computes::

    y = (x - mean) / sqrt(var + eps) * weight + bias

and the layers differ in only three choices, which are the arguments of the
functions here:

* ``reduce_axes``: the axes the statistics are taken over (BatchNorm: every axis
  but the features; LayerNorm/RMSNorm: the trailing feature axes; GroupNorm: the
  spatial axes and one group of channels).
* ``center``: subtract the mean (BatchNorm, LayerNorm, GroupNorm) or not
  (RMSNorm, where ``mean := 0`` and ``var := mean(x**2)``).
* where the statistics come from: the input itself (``batch_statistics=True``)
  or fixed values such as BatchNorm's running averages at inference.

The forward functions return ``(y, cache)`` and :func:`normalize_backward`
consumes the cache, so a notebook can show the whole computation without classes::

    >>> import numpy as np
    >>> from normlab import functional as F
    >>> x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    >>> mean, var, count = F.moments(x, reduce_axes=(0,))      # BatchNorm: over the batch
    >>> y, cache = F.normalize(x, mean, var, eps=1e-5, reduce_axes=(0,))
    >>> dx, dweight, dbias = F.normalize_backward(np.ones_like(y), cache)
    >>> bool(np.allclose(dx, 0, atol=1e-6))   # sum(BN(x)) does not depend on x
    True

Arrays are features-last: ``(N, D)``, ``(N, T, D)`` or ``(N, H, W, C)``.
Statistics are kept with ``keepdims=True`` so they broadcast against ``x``;
``weight`` and ``bias`` broadcast over the trailing axes of ``x``.

A padding ``mask`` (boolean, broadcastable to ``x``, True = real value) removes
values from every statistic; the outputs and input gradients at masked
positions are exactly 0.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = [
    "NormCache",
    "moments",
    "normalize",
    "normalize_backward",
    "reduce_sum",
    "reduce_sum_product",
]


# ---------------------------------------------------------------------------
# Reductions
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


def reduce_sum(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sum of ``x`` over ``axes`` with ``keepdims=True``.

    The sum is a matrix-vector product with a vector of ones, which BLAS runs
    several times faster than ``np.sum``: for a mean over the last axis,
    ``(rows, D) @ (D,)``; over the leading axes, ``(N·T,) @ (N·T, D)``; over
    axes in the middle, one such product per leading index (``matmul`` on a
    stack). Both give the same result up to the order of the additions.

    Example: for ``x`` of shape (N, T, D), ``axes=(2,)`` gives (N, T, 1) and
    ``axes=(0, 1)`` gives (1, 1, D).
    """
    if not axes:
        return x.copy()
    if x.size == 0 or not x.flags.c_contiguous or x.dtype.kind != "f":
        return np.sum(x, axis=tuple(axes), keepdims=True)
    plan = _sum_plan(x.shape, tuple(axes))
    before, block, after = plan.view
    ones = _ones(block, x.dtype)
    if after == 1:  # trailing block: (before, block) @ (block,) -> (before,)
        block_sum = x.reshape(before, block) @ ones
    else:  # (block,) @ (before, block, after) -> (before, after)
        block_sum = ones @ x.reshape(plan.view)
    return _finish_sum(block_sum, plan)


def reduce_sum_product(a: np.ndarray, b: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
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
    if not axes:
        return a * b
    plan = _sum_plan(a.shape, tuple(axes))
    before, block, after = plan.view
    if after == 1:  # one dot product per row
        block_sum = np.vecdot(a.reshape(before, block), b.reshape(before, block))
    elif before == 1:  # one dot product per column
        block_sum = np.einsum("kc,kc->c", a.reshape(block, after), b.reshape(block, after))
    else:
        block_sum = np.einsum("rkc,rkc->rc", a.reshape(plan.view), b.reshape(plan.view))
    return _finish_sum(block_sum, plan)


def _count(x_shape: tuple[int, ...], reduce_axes: tuple[int, ...], mask: np.ndarray | None):
    """Number of values each statistic averages: an int, or an array (keepdims) under a mask."""
    if mask is None:
        return math.prod(x_shape[a] for a in reduce_axes)
    # The mask has x's ndim but may be 1 along axes it broadcasts over (the features).
    real_along_mask = np.sum(mask, axis=reduce_axes, keepdims=True, dtype=np.float64)
    broadcast_factor = math.prod(x_shape[a] for a in reduce_axes if mask.shape[a] == 1)
    return real_along_mask * broadcast_factor


def _safe_divisor(count):
    """The count used as a divisor: a fully masked group has no statistic, avoid 0/0."""
    return np.maximum(count, 1) if isinstance(count, np.ndarray) else max(count, 1)


#: numpy's inner loop runs along the last axes that an operation's arrays share. A
#: statistic constant along a short trailing run of x's axes but varying just before it
#: (GroupNorm's (N, 1, G, 1) against x's (N, H·W, G, C/G)) cuts that loop to the run's
#: C/G values, which costs about twice the time of a long loop. A run shorter than this
#: is spelled out (the statistic repeated along it) when that makes an array at most
#: 1/_SHORT_RUN of x's size, so that the copy costs far less than it saves.
_SHORT_RUN = 64


@lru_cache(maxsize=256)
def _spelled_out_shape(stat_shape: tuple[int, ...], x_shape: tuple[int, ...]):
    """The shape to repeat a statistic to along x's short trailing run, or None."""
    varying = [axis for axis, size in enumerate(stat_shape) if size > 1]
    if not varying or len(stat_shape) != len(x_shape):
        return None
    last = varying[-1]
    shape = (*stat_shape[: last + 1], *x_shape[last + 1 :])
    run = math.prod(x_shape[last + 1 :])
    if not 1 < run < _SHORT_RUN or math.prod(shape) * _SHORT_RUN > math.prod(x_shape):
        return None
    return shape


def _spelled_out(stat: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """``stat``, repeated along a short trailing run of x's axes if it has one (GroupNorm)."""
    shape = _spelled_out_shape(np.shape(stat), x_shape)
    if shape is None:
        return stat
    spelled = np.empty(shape, dtype=stat.dtype)
    spelled[...] = stat
    return spelled


def moments(
    x: np.ndarray,
    reduce_axes: tuple[int, ...],
    *,
    center: bool = True,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int | np.ndarray]:
    """Mean and biased variance of ``x`` over ``reduce_axes``, in two passes.

    .. math::

        \\mu = \\frac{1}{n} \\sum_i x_i, \\qquad
        \\sigma^2 = \\frac{1}{n} \\sum_i (x_i - \\mu)^2

    The variance is the mean of squared deviations from the mean (the two-pass
    form), never :math:`E[x^2] - E[x]^2`, which cancels catastrophically in
    float32 once the mean is about 100 times the standard deviation.

    With ``center=False`` (RMSNorm) the mean is defined as 0 and the "variance"
    is the mean square :math:`\\frac{1}{n}\\sum_i x_i^2`.

    Parameters
    ----------
    x : ndarray of floats, features-last.
    reduce_axes : tuple of int
        Axes to average over. For ``x`` of shape (N, T, D): BatchNorm uses
        ``(0, 1)`` (one mean per feature), LayerNorm ``(2,)`` (one mean per token).
    center : bool, default True
        Subtract the mean (True) or use the mean square (False, RMSNorm).
    mask : bool ndarray broadcastable to ``x``, optional
        True marks real values; masked values take no part in the statistics.

    Returns
    -------
    mean, var : ndarrays of ``x.dtype`` with ``keepdims=True`` shapes.
    count : int or ndarray
        How many values each statistic averaged (an array under a mask).
    """
    count = _count(x.shape, reduce_axes, mask)
    divisor = _safe_divisor(count)
    stat_shape = tuple(1 if a in reduce_axes else n for a, n in enumerate(x.shape))
    if mask is None:
        if center:
            mean = reduce_sum(x, reduce_axes) / x.dtype.type(divisor)  # first pass
            deviation = x - mean
        else:
            mean = np.zeros(stat_shape, dtype=x.dtype)
            deviation = x
        # second pass: Σ (x - μ)², summed as it is multiplied, no squared array
        var = reduce_sum_product(deviation, deviation, reduce_axes) / x.dtype.type(divisor)
        return mean, var, count
    divisor = divisor.astype(x.dtype)
    if center:
        mean = reduce_sum(np.where(mask, x, 0), reduce_axes) / divisor
        deviation = np.where(mask, x - mean, 0)
    else:
        mean = np.zeros(stat_shape, dtype=x.dtype)
        deviation = np.where(mask, x, 0)
    var = reduce_sum_product(deviation, deviation, reduce_axes) / divisor  # second pass
    return mean, var, count


# ---------------------------------------------------------------------------
# Forward and backward
# ---------------------------------------------------------------------------


class NormCache(NamedTuple):
    """What :func:`normalize_backward` needs from the forward pass, and nothing more.

    An immutable record (a named tuple: cheap to create once per forward call).

    Attributes
    ----------
    xhat : normalized input ``(x - mean) * rstd``, shape of ``x`` (0 where masked).
    rstd : ``1 / sqrt(var + eps)``, keepdims shape of the statistics (GroupNorm's
        repeated along the channels of a group, which keeps numpy's loops long).
    weight : the scale γ used in the forward (None without affine).
    bias_shape : the shape of the shift β, or None when none was added.
    reduce_axes, center : the statistics' axes and whether they were centered.
    batch_statistics : True when mean/var were computed from this very input,
        so that the gradient flows through them; False for fixed statistics.
    mask : bool array broadcastable to ``xhat`` or None.
    count : values per statistic (int or keepdims array).
    """

    xhat: np.ndarray
    rstd: np.ndarray
    weight: np.ndarray | None
    bias_shape: tuple[int, ...] | None
    reduce_axes: tuple[int, ...]
    center: bool
    batch_statistics: bool
    mask: np.ndarray | None
    count: int | np.ndarray


def normalize(
    x: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    reduce_axes: tuple[int, ...],
    center: bool = True,
    batch_statistics: bool = True,
    mask: np.ndarray | None = None,
    count: int | np.ndarray | None = None,
) -> tuple[np.ndarray, NormCache]:
    """Normalize ``x`` with given statistics, then scale and shift.

    .. math::

        \\hat{x} = (x - \\mu) \\cdot \\frac{1}{\\sqrt{\\sigma^2 + \\epsilon}}, \\qquad
        y = \\gamma \\, \\hat{x} + \\beta

    ``weight`` is γ and ``bias`` is β in the papers; both broadcast over the
    trailing axes of ``x`` (shape (D,) for features, or LayerNorm's
    ``normalized_shape``).

    Parameters
    ----------
    x : ndarray, features-last.
    mean, var : statistics broadcastable to ``x`` (from :func:`moments`, or
        running averages).
    eps : float, added to the variance for numerical stability.
    weight, bias : optional γ and β.
    reduce_axes, center : how ``mean`` and ``var`` were computed; needed by the
        backward when ``batch_statistics`` is True.
    batch_statistics : bool, default True
        True if ``mean``/``var`` were computed from ``x`` (training-mode
        BatchNorm, LayerNorm, RMSNorm, GroupNorm), False if they are constants
        (BatchNorm at inference, where the layer is an affine map).
    mask : bool ndarray broadcastable to ``x``, optional
        Masked outputs are set to exactly 0.
    count : values per statistic, as returned by :func:`moments` (computed
        when omitted).

    Returns
    -------
    y : ndarray of ``x.dtype`` and shape.
    cache : :class:`NormCache` for :func:`normalize_backward`.
    """
    dtype = x.dtype
    rstd = _spelled_out(1.0 / np.sqrt(var + dtype.type(eps)), x.shape)  # statistics' shape
    if center:
        xhat = x - _spelled_out(mean, x.shape)  # (shape of x)
        xhat *= rstd
    else:
        xhat = x * rstd
    if mask is not None:
        np.copyto(xhat, 0, where=~mask)  # masked positions -> exactly 0, even if x was NaN there
    if weight is not None:
        y = xhat * weight
        if bias is not None:
            y += bias
    elif bias is not None:
        y = xhat + bias
    else:
        y = xhat.copy()
    if mask is not None and bias is not None:
        np.copyto(y, 0, where=~mask)
    if count is None:
        count = _count(x.shape, reduce_axes, mask)
    cache = NormCache(
        xhat=xhat,
        rstd=rstd,
        weight=weight,
        bias_shape=None if bias is None else np.shape(bias),
        reduce_axes=tuple(reduce_axes),
        center=center,
        batch_statistics=batch_statistics,
        mask=mask,
        count=count,
    )
    return y, cache


def normalize_backward(
    dy: np.ndarray, cache: NormCache
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`normalize` with respect to ``x``, γ and β.

    With :math:`\\hat{g} = \\partial L/\\partial \\hat{x} = dy \\cdot \\gamma`
    and means taken over the reduction axes (real values only under a mask):

    .. math::

        \\frac{\\partial L}{\\partial x} = \\mathrm{rstd} \\cdot \\Big(
            \\hat{g} - \\overline{\\hat{g}} - \\hat{x}\\, \\overline{\\hat{g}\\hat{x}} \\Big)

    The middle term comes from the gradient through the mean and is absent
    when the statistics are not centered (RMSNorm); both subtracted terms come
    from the gradient through the statistics and are absent when the
    statistics are constants (``batch_statistics=False``), where simply
    :math:`\\partial L/\\partial x = \\mathrm{rstd} \\cdot \\hat{g}`.

    .. math::

        \\frac{\\partial L}{\\partial \\gamma} = \\sum dy \\cdot \\hat{x}, \\qquad
        \\frac{\\partial L}{\\partial \\beta} = \\sum dy

    summed over the leading axes that γ and β broadcast over.

    Returns
    -------
    dx : ndarray, same shape and dtype as ``dy`` (0 at masked positions).
    dweight, dbias : gradients of γ and β with their shapes, or None when the
        forward had no γ / β.
    """
    xhat, mask, weight, rstd = cache.xhat, cache.mask, cache.weight, cache.rstd
    dy = dy.astype(xhat.dtype, copy=False)
    if mask is not None:
        dy = np.where(mask, dy, 0)  # masked outputs are constants: no gradient flows from them

    # γ and β broadcast along the leading axes of x; their gradients sum over those axes.
    dweight = dbias = None
    if weight is not None:
        weight_axes = tuple(range(xhat.ndim - weight.ndim))
        dweight = reduce_sum_product(dy, xhat, weight_axes)  # (1, ..., 1, *weight.shape)
    if cache.bias_shape is not None:
        dbias = reduce_sum(dy, tuple(range(xhat.ndim - len(cache.bias_shape))))

    if not cache.batch_statistics:  # fixed statistics: y is an affine map of x
        dx = dy * (rstd if weight is None else rstd * weight)
    else:
        divisor = _safe_divisor(cache.count)
        divisor = divisor.astype(xhat.dtype) if isinstance(divisor, np.ndarray) else divisor
        # dx = rstd·ĝ - x̂·(rstd·mean(ĝ·x̂)) - rstd·mean(ĝ): only rstd·ĝ and x̂ are
        # full-size; the factors in brackets have the statistics' shape.
        if weight is not None and cache.reduce_axes == weight_axes:
            # BatchNorm: the statistics sum over γ's own axes, where γ is a constant
            # factor, so Σ ĝ·x̂ = γ·Σ dy·x̂ = γ·dγ and Σ ĝ = γ·Σ dy need no pass over ĝ,
            # and rstd·ĝ = dy·(γ·rstd) is one product with a per-feature factor.
            sum_dxhat_xhat = weight * dweight
            same_axes = cache.bias_shape == weight.shape
            sum_dxhat = weight * (dbias if same_axes else reduce_sum(dy, weight_axes))
            dx = dy * (weight * rstd)
        else:
            dxhat = dy * weight if weight is not None else dy.copy()  # ĝ, (shape of x)
            sum_dxhat_xhat = reduce_sum_product(dxhat, xhat, cache.reduce_axes)
            sum_dxhat = reduce_sum(dxhat, cache.reduce_axes) if cache.center else None
            dx = dxhat
            dx *= rstd
        rstd_per_value = rstd / divisor  # turns the sums into rstd·means
        # d/dx through the variance: rstd·mean(ĝ·x̂) over the reduction axes
        dx -= xhat * _spelled_out(rstd_per_value * sum_dxhat_xhat, xhat.shape)
        if cache.center:  # d/dx through the mean: rstd·mean(ĝ)
            dx -= _spelled_out(rstd_per_value * sum_dxhat, xhat.shape)
    if mask is not None:
        np.copyto(dx, 0, where=~mask)
    if dweight is not None:
        dweight = dweight.reshape(weight.shape)
    if dbias is not None:
        dbias = dbias.reshape(cache.bias_shape)
    return dx, dweight, dbias
