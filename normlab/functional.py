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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "NormCache",
    "moments",
    "normalize",
    "normalize_backward",
    "reduce_sum",
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


def reduce_sum(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sum of ``x`` over ``axes`` with ``keepdims=True``.

    When ``axes`` are the leading or the trailing axes of a C-contiguous array,
    the sum is a matrix-vector product with a vector of ones, which BLAS runs
    several times faster than ``np.sum``; otherwise it is ``np.sum``. Both give
    the same result up to the order of the additions.

    Example: for ``x`` of shape (N, T, D), ``axes=(2,)`` gives (N, T, 1) and
    ``axes=(0, 1)`` gives (1, 1, D).
    """
    ndim = x.ndim
    axes = tuple(sorted(a % ndim for a in axes)) if ndim else ()
    keep_shape = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    if not axes:
        return x.copy()
    if x.size == 0 or not x.flags.c_contiguous or x.dtype.kind != "f":
        return np.sum(x, axis=axes, keepdims=True)
    num_reduced = int(np.prod([x.shape[a] for a in axes]))
    if axes == tuple(range(ndim - len(axes), ndim)):  # trailing: (M, K) @ (K,) -> (M,)
        return (x.reshape(-1, num_reduced) @ _ones(num_reduced, x.dtype)).reshape(keep_shape)
    if axes == tuple(range(len(axes))):  # leading: (K,) @ (K, M) -> (M,)
        return (_ones(num_reduced, x.dtype) @ x.reshape(num_reduced, -1)).reshape(keep_shape)
    return np.sum(x, axis=axes, keepdims=True)


def _count(x_shape: tuple[int, ...], reduce_axes: tuple[int, ...], mask: np.ndarray | None):
    """Number of values each statistic averages: an int, or an array (keepdims) under a mask."""
    if mask is None:
        return int(np.prod([x_shape[a] for a in reduce_axes]))
    # The mask has x's ndim but may be 1 along axes it broadcasts over (the features).
    real_along_mask = np.sum(mask, axis=reduce_axes, keepdims=True, dtype=np.float64)
    broadcast_factor = np.prod([x_shape[a] for a in reduce_axes if mask.shape[a] == 1])
    return real_along_mask * broadcast_factor


def _safe_divisor(count):
    """The count used as a divisor: a fully masked group has no statistic, avoid 0/0."""
    return np.maximum(count, 1) if isinstance(count, np.ndarray) else max(count, 1)


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
        squared = np.multiply(deviation, deviation)
        var = reduce_sum(squared, reduce_axes) / x.dtype.type(divisor)  # second pass
        return mean, var, count
    divisor = divisor.astype(x.dtype)
    if center:
        mean = reduce_sum(np.where(mask, x, 0), reduce_axes) / divisor
        deviation = np.where(mask, x - mean, 0)
    else:
        mean = np.zeros(stat_shape, dtype=x.dtype)
        deviation = np.where(mask, x, 0)
    var = reduce_sum(deviation * deviation, reduce_axes) / divisor
    return mean, var, count


# ---------------------------------------------------------------------------
# Forward and backward
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NormCache:
    """What :func:`normalize_backward` needs from the forward pass, and nothing more.

    Attributes
    ----------
    xhat : normalized input ``(x - mean) * rstd``, shape of ``x`` (0 where masked).
    rstd : ``1 / sqrt(var + eps)``, keepdims shape of the statistics.
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
    rstd = 1.0 / np.sqrt(var + dtype.type(eps))  # keepdims shape of the statistics
    xhat = x - mean if center else x.copy()
    xhat *= rstd  # (same shape as x)
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
    xhat, mask = cache.xhat, cache.mask
    dy = dy.astype(xhat.dtype, copy=False)
    if mask is not None:
        dy = np.where(mask, dy, 0)  # masked outputs are constants: no gradient flows from them

    dweight = dbias = None
    if cache.weight is not None:
        param_axes = tuple(range(xhat.ndim - cache.weight.ndim))  # the leading axes
        dweight = reduce_sum(dy * xhat, param_axes).reshape(cache.weight.shape)
        dxhat = dy * cache.weight  # (shape of x)
    else:
        dxhat = dy.copy()
    if cache.bias_shape is not None:
        param_axes = tuple(range(xhat.ndim - len(cache.bias_shape)))
        dbias = reduce_sum(dy, param_axes).reshape(cache.bias_shape)

    if cache.batch_statistics:
        divisor = _safe_divisor(cache.count)
        divisor = divisor.astype(xhat.dtype) if isinstance(divisor, np.ndarray) else divisor
        # d/dx through the variance: mean(dxhat * xhat) over the reduction axes
        projection = reduce_sum(dxhat * xhat, cache.reduce_axes) / divisor  # (stat shape)
        dx = dxhat
        if cache.center:  # d/dx through the mean: mean(dxhat)
            dx -= reduce_sum(dxhat, cache.reduce_axes) / divisor
        dx -= xhat * projection
        dx *= cache.rstd
    else:
        dx = dxhat * cache.rstd
    if mask is not None:
        np.copyto(dx, 0, where=~mask)
    return dx, dweight, dbias
