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

When the values of one statistic are spread over several devices (synchronized
BatchNorm, :mod:`normlab.parallel`), each device passes ``all_reduce``: a function
that returns the sum of an array over all devices. Every sum over the reduction
axes -- the count, the two passes of :func:`moments`, the backward's two sums --
is completed by it, and nothing else changes.

This is the code the layers run: its sums are :func:`reduce_sum` and
:func:`reduce_sum_product` (fast ``np.sum``, from :mod:`normlab._fastsum`) and its two
shortcuts are named helpers (BatchNorm's backward from dγ and dβ, GroupNorm's repeated
statistics). :mod:`normlab.reference` is the same computation, plainly, layer by layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from normlab._fastsum import reduce_sum, reduce_sum_product, repeat_along_short_run
from normlab.module import check_axes

#: Sums an array (or an int count) over all devices; each device gets the same result.
AllReduce = Callable[[object], object]

__all__ = [
    "AllReduce",
    "NormCache",
    "moments",
    "normalize",
    "normalize_backward",
    "reduce_sum",
    "reduce_sum_product",
]


def moments(
    x: np.ndarray,
    reduce_axes: tuple[int, ...],
    *,
    center: bool = True,
    mask: np.ndarray | None = None,
    all_reduce: AllReduce | None = None,
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
    reduce_axes : int or tuple of int
        Axes to average over (negative ones count from the end, as in numpy). For
        ``x`` of shape (N, T, D): BatchNorm uses ``(0, 1)`` (one mean per feature),
        LayerNorm ``-1`` or ``(2,)`` (one mean per token).
    center : bool, default True
        Subtract the mean (True) or use the mean square (False, RMSNorm).
    mask : bool ndarray broadcastable to ``x``, optional
        True marks real values; masked values take no part in the statistics.
    all_reduce : callable, optional
        Sums an array over the devices that hold the other values of each
        statistic (synchronized BatchNorm); the count and both passes go through it.

    Returns
    -------
    mean, var : ndarrays of ``x.dtype`` with ``keepdims=True`` shapes.
    count : int or ndarray
        How many values each statistic averaged (an array under a mask).
    """
    reduce_axes = check_axes(reduce_axes, x.ndim, "moments")
    total = _on_this_device_only if all_reduce is None else all_reduce
    count = total(_count(x.shape, reduce_axes, mask))
    divisor = _divisor(count, x.dtype)
    real_x = x if mask is None else np.where(mask, x, 0)  # (shape of x)
    if center:
        mean = total(reduce_sum(real_x, reduce_axes)) / divisor  # first pass
        deviation = x - mean if mask is None else np.where(mask, x - mean, 0)
    else:
        stat_shape = tuple(1 if a in reduce_axes else n for a, n in enumerate(x.shape))
        mean = np.zeros(stat_shape, dtype=x.dtype)
        deviation = real_x
    # second pass: Σ (x - μ)², summed as it is multiplied, no squared array
    var = total(reduce_sum_product(deviation, deviation, reduce_axes)) / divisor
    return mean, var, count


class NormCache(NamedTuple):
    """What :func:`normalize_backward` needs from the forward pass, and nothing more.

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
    count : values per statistic (int or keepdims array), on all devices.
    all_reduce : the sum over devices of synchronized BatchNorm, or None (one device).
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
    all_reduce: AllReduce | None = None


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
    all_reduce: AllReduce | None = None,
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
    reduce_axes, center : how ``mean`` and ``var`` were computed (an int or a tuple,
        as in :func:`moments`); needed by the
        backward when ``batch_statistics`` is True.
    batch_statistics : bool, default True
        True if ``mean``/``var`` were computed from ``x`` (training-mode
        BatchNorm, LayerNorm, RMSNorm, GroupNorm), False if they are constants
        (BatchNorm at inference, where the layer is an affine map).
    mask : bool ndarray broadcastable to ``x``, optional
        Masked outputs are set to exactly 0.
    count : values per statistic, as returned by :func:`moments` (computed
        when omitted).
    all_reduce : callable, optional
        The sum over devices the statistics were computed with (see
        :func:`moments`), kept for the backward's sums.

    Returns
    -------
    y : ndarray of ``x.dtype`` and shape.
    cache : :class:`NormCache` for :func:`normalize_backward`.
    """
    rstd = 1.0 / np.sqrt(var + x.dtype.type(eps))  # statistics' shape
    rstd = repeat_along_short_run(rstd, x.shape)  # GroupNorm: along the channels of a group
    if center:
        xhat = x - repeat_along_short_run(mean, x.shape)  # (shape of x)
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
    reduce_axes = check_axes(reduce_axes, x.ndim, "normalize")
    if count is None:
        count = _count(x.shape, reduce_axes, mask)
    cache = NormCache(
        xhat=xhat,
        rstd=rstd,
        weight=weight,
        bias_shape=None if bias is None else np.shape(bias),
        reduce_axes=reduce_axes,
        center=center,
        batch_statistics=batch_statistics,
        mask=mask,
        count=count,
        all_reduce=all_reduce,
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

    summed over the leading axes that γ and β broadcast over. With
    ``cache.all_reduce`` (synchronized BatchNorm) the two sums behind the means
    run over every device; dγ and dβ stay this device's own.

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
    dweight, dbias = _parameter_grads(dy, cache)  # shapes of γ and β, or None
    if not cache.batch_statistics:  # fixed statistics: y is an affine map of x
        dx = dy * (rstd if weight is None else rstd * weight)
    else:
        # dx = rstd·ĝ - x̂·(rstd·mean(ĝ·x̂)) - rstd·mean(ĝ): only rstd·ĝ and x̂ are
        # full-size; the factors in brackets have the statistics' shape.
        if _statistics_over_parameter_axes(cache):  # BatchNorm
            sum_dxhat_xhat, sum_dxhat = _statistic_sums_from_parameter_grads(
                dy, cache, dweight, dbias
            )
            dx = dy * (weight * rstd)  # rstd·ĝ: one product with a per-feature factor
        else:
            dxhat = dy * weight if weight is not None else dy.copy()  # ĝ, (shape of x)
            sum_dxhat_xhat = reduce_sum_product(dxhat, xhat, cache.reduce_axes)
            sum_dxhat = reduce_sum(dxhat, cache.reduce_axes) if cache.center else None
            dx = dxhat
            dx *= rstd
        if cache.all_reduce is not None:  # the statistic's other values are on other devices
            sum_dxhat_xhat = cache.all_reduce(sum_dxhat_xhat)
            if cache.center:
                sum_dxhat = cache.all_reduce(sum_dxhat)
        rstd_per_value = rstd / _divisor(cache.count, xhat.dtype)  # turns the sums into rstd·means
        # d/dx through the variance: rstd·mean(ĝ·x̂) over the reduction axes
        dx -= xhat * repeat_along_short_run(rstd_per_value * sum_dxhat_xhat, xhat.shape)
        if cache.center:  # d/dx through the mean: rstd·mean(ĝ)
            dx -= repeat_along_short_run(rstd_per_value * sum_dxhat, xhat.shape)
    if mask is not None:
        np.copyto(dx, 0, where=~mask)
    return dx, dweight, dbias


def _on_this_device_only(partial_sum):
    """The ``all_reduce`` of a single device: its sum is already the whole sum."""
    return partial_sum


def _count(x_shape: tuple[int, ...], reduce_axes: tuple[int, ...], mask: np.ndarray | None):
    """Number of values each statistic averages: an int, or an array (keepdims) under a mask."""
    if mask is None:
        return math.prod(x_shape[a] for a in reduce_axes)
    # The mask has x's ndim but may be 1 along axes it broadcasts over (the features).
    real_along_mask = np.sum(mask, axis=reduce_axes, keepdims=True, dtype=np.float64)
    broadcast_factor = math.prod(x_shape[a] for a in reduce_axes if mask.shape[a] == 1)
    return real_along_mask * broadcast_factor


def _divisor(count, dtype: np.dtype):
    """The count as a divisor of x's dtype; a fully masked group has no statistic: avoid 0/0."""
    if isinstance(count, np.ndarray):
        return np.maximum(count, 1).astype(dtype)
    return dtype.type(max(count, 1))


def _parameter_axes(cache: NormCache, parameter_ndim: int) -> tuple[int, ...]:
    """The leading axes of x̂ that γ (or β) broadcasts over: its gradient sums over them."""
    return tuple(range(cache.xhat.ndim - parameter_ndim))


def _parameter_grads(dy: np.ndarray, cache: NormCache):
    """dγ = Σ dy·x̂ and dβ = Σ dy over the axes γ and β broadcast over (None if absent)."""
    dweight = dbias = None
    if cache.weight is not None:
        weight_axes = _parameter_axes(cache, cache.weight.ndim)
        dweight = reduce_sum_product(dy, cache.xhat, weight_axes).reshape(cache.weight.shape)
    if cache.bias_shape is not None:
        dbias = reduce_sum(dy, _parameter_axes(cache, len(cache.bias_shape)))
        dbias = dbias.reshape(cache.bias_shape)
    return dweight, dbias


def _statistics_over_parameter_axes(cache: NormCache) -> bool:
    """True when the statistics sum over exactly γ's broadcast axes (BatchNorm with γ)."""
    weight = cache.weight
    return weight is not None and cache.reduce_axes == _parameter_axes(cache, weight.ndim)


def _statistic_sums_from_parameter_grads(dy, cache: NormCache, dweight, dbias):
    """Σ ĝ·x̂ and Σ ĝ over the reduction axes, from dγ and dβ, with no pass over ĝ = dy·γ.

    When the statistics are summed over exactly the axes γ broadcasts over
    (BatchNorm: every axis but the features), γ is a constant factor inside the
    backward's two sums, and what is left are the parameter gradients::

        Σ ĝ·x̂ = Σ dy·γ·x̂ = γ·Σ dy·x̂ = γ·dγ        Σ ĝ = γ·Σ dy = γ·dβ

    so BatchNorm's backward needs no full-size ĝ and no pass over it (Σ dy is
    summed here only when there is no dβ to reuse).
    """
    weight = cache.weight
    same_axes = cache.bias_shape == weight.shape
    sum_dy = dbias if same_axes else reduce_sum(dy, _parameter_axes(cache, weight.ndim))
    return weight * dweight, weight * sum_dy
