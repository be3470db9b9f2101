"""The normalization layers as a textbook writes them: forward and backward, one layer at a time.

Start here. Each layer is a pair of plain functions, ``forward(...) -> (out, cache)``
and ``backward(dout, cache) -> gradients``, written with nothing but numpy's
``mean``, ``var`` (two passes: the mean first, then the mean squared deviation),
products and sums, and the shape of every line in its comment. Nothing is
shared between the layers and nothing is there for speed, so that each function
can be read, and checked, on its own.

The page ends with the convolution by its definition, four loops over the outputs
(:func:`conv2d_forward_naive`, :func:`conv2d_backward_naive`): what
:class:`normlab.nn.Conv2d` computes with one matrix product.

The layers (``normlab.BatchNorm`` and the others) do not run this code: they run
:mod:`normlab.functional`, one core for all of them, parametrized by the reduction
axes, with fast sums. The two compute the same numbers up to rounding;
``tests/test_reference.py`` checks that, checks these backward passes against
finite differences and, when PyTorch is installed, this module against
``torch.nn``. It is also the ``naive`` column of ``make bench``.

The one idea
------------
Every layer normalizes with a mean and a variance taken over some axes, then
scales by ``weight`` (γ in the papers) and shifts by ``bias`` (β)::

    xhat = (x - mean) / sqrt(var + eps)
    out = xhat * weight + bias

and the layers differ in the axes (shapes features-last):

============  ===============================================  ===============
layer         one mean and variance for each ...               over
============  ===============================================  ===============
BatchNorm     feature                                          every other axis
LayerNorm     token (or sample)                                the trailing ``weight.shape``
RMSNorm       token, as LayerNorm, without centering           the trailing ``weight.shape``
GroupNorm     sample and group of channels                     space and the group's channels
InstanceNorm  sample and channel                               space
============  ===============================================  ===============

The backward, in three terms
----------------------------
Take the n values that share one statistic and write ``dxhat = dout * weight``
(∂L/∂x̂) and ``rstd = 1 / sqrt(var + eps)``. An input reaches x̂ by three roads:
directly, through the mean, and through the variance. Summing them::

    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))

with both means over the n values of the statistic. ``-mean(dxhat)`` is the road
through the mean (``∂mean/∂x_j = 1/n``) and ``-xhat * mean(dxhat * xhat)`` the road
through the variance (``∂var/∂x_j = 2 (x_j - mean) / n``). RMSNorm does not
subtract a mean, so its middle term is absent; BatchNorm in eval mode uses fixed
running statistics, so both are absent and ``dx = rstd * dxhat``. The parameters
get ``dweight = sum(dout * xhat)`` and ``dbias = sum(dout)`` over every axis they
are shared along. Batch Renorm multiplies x̂ by a constant r and adds a constant d,
so its ``dxhat`` is ``dout * weight * r`` and the three terms follow unchanged.

Conventions
-----------
* Shape comments are for a batch of sequences x of shape (N, T, D) (BatchNorm,
  LayerNorm, RMSNorm) or of images (N, H, W, C) (GroupNorm, InstanceNorm); every
  function takes any features-last shape.
* Defaults follow PyTorch: ``eps=1e-5`` (RMSNorm: ``eps=None``, the machine
  epsilon of the input's dtype), the biased variance to normalize, BatchNorm's
  running statistics as in :func:`batch_norm_running_stats`.
* ``mask`` (optional, boolean, shape ``x.shape[:-1]``, True = real token): padded
  tokens take no part in any statistic, and their outputs and input gradients
  are 0. LayerNorm's and RMSNorm's statistics belong to one token, so there the
  mask only zeroes the padded tokens (for a ``weight`` over the last axis). A
  statistic needs at least one real value (BatchNorm's unbiased running variance
  two); GroupNorm and InstanceNorm therefore need a real token in every sample.

Example
-------
>>> import numpy as np
>>> import normlab as nl
>>> from normlab import reference
>>> x = np.random.default_rng(0).normal(size=(2, 3, 4))  # (N, T, D)
>>> dout = np.random.default_rng(1).normal(size=x.shape)
>>> weight, bias = np.full(4, 2.0), np.zeros(4)
>>> out, cache = reference.layer_norm_forward(x, weight, bias)
>>> dx, dweight, dbias = reference.layer_norm_backward(dout, cache)
>>> layer = nl.LayerNorm(4, dtype=np.float64)
>>> layer.params["weight"][...] = weight
>>> bool(np.allclose(layer(x), out)), bool(np.allclose(layer.backward(dout), dx))
(True, True)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "batch_norm_backward",
    "batch_norm_eval_backward",
    "batch_norm_eval_forward",
    "batch_norm_forward",
    "batch_norm_running_stats",
    "batch_renorm_backward",
    "batch_renorm_forward",
    "conv2d_backward_naive",
    "conv2d_forward_naive",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
    "rms_norm_backward",
    "rms_norm_forward",
]


# ---------------------------------------------------------------------------
# BatchNorm (Ioffe & Szegedy, 2015): per feature, over the batch and time
# ---------------------------------------------------------------------------


def batch_norm_forward(x, weight, bias, eps=1e-5, mask=None):
    """BatchNorm in training mode: each feature normalized with the batch's own statistics.

    ``x`` (N, T, D), ``weight`` and ``bias`` (D,). Returns ``(out, cache)``.
    """
    axes = tuple(range(x.ndim - 1))  # (0, 1): every axis but the features
    real = True if mask is None else mask[..., None]  # (N, T, 1): the values that count
    mean = x.mean(axis=axes, keepdims=True, where=real)  # (1, 1, D)
    var = x.var(axis=axes, keepdims=True, where=real)  # (1, 1, D), biased: divides by n
    rstd = 1.0 / np.sqrt(var + eps)  # (1, 1, D)
    xhat = (x - mean) * rstd  # (N, T, D)
    out = xhat * weight + bias  # (N, T, D)
    if mask is not None:  # padded tokens: no output, and no part in the backward
        xhat = np.where(real, xhat, 0.0)  # (N, T, D)
        out = np.where(real, out, 0.0)  # (N, T, D)
    cache = (xhat, rstd, weight, mask)
    return out, cache


def batch_norm_backward(dout, cache):
    """Gradients of :func:`batch_norm_forward`: ``(dx, dweight, dbias)``."""
    xhat, rstd, weight, mask = cache
    axes = tuple(range(xhat.ndim - 1))  # (0, 1)
    real = True if mask is None else mask[..., None]  # (N, T, 1)
    if mask is not None:
        dout = np.where(real, dout, 0.0)  # (N, T, D): padded outputs are constants
    dbias = dout.sum(axis=axes)  # (D,)
    dweight = (dout * xhat).sum(axis=axes)  # (D,)
    dxhat = dout * weight  # (N, T, D)
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True, where=real)  # (1, 1, D)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True, where=real)  # (1, 1, D)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)  # (N, T, D)
    if mask is not None:
        dx = np.where(real, dx, 0.0)  # (N, T, D)
    return dx, dweight, dbias


def batch_norm_running_stats(
    x, running_mean, running_var, num_batches_tracked, momentum=0.1, mask=None
):
    """BatchNorm's running statistics after the training batch ``x``, as PyTorch keeps them.

    ``running = (1 - momentum) * running + momentum * batch``: ``momentum`` is the
    weight of the new batch (Keras' momentum=0.99 is momentum=0.01 here), and
    ``momentum=None`` weighs every batch seen the same (a cumulative average). The
    variance stored is the *unbiased* one, divided by n - 1, although the forward
    normalizes with the biased one. Start with ``running_mean = 0``,
    ``running_var = 1``, ``num_batches_tracked = 0``.

    Returns the new ``(running_mean, running_var, num_batches_tracked)``.
    """
    axes = tuple(range(x.ndim - 1))  # (0, 1)
    real = True if mask is None else mask[..., None]  # (N, T, 1)
    batch_mean = x.mean(axis=axes, where=real)  # (D,)
    batch_var = x.var(axis=axes, ddof=1, where=real)  # (D,), unbiased: divides by n - 1
    num_batches_tracked = num_batches_tracked + 1
    if momentum is None:  # the cumulative average over every batch seen
        momentum = 1.0 / num_batches_tracked
    running_mean = (1 - momentum) * running_mean + momentum * batch_mean  # (D,)
    running_var = (1 - momentum) * running_var + momentum * batch_var  # (D,)
    return running_mean, running_var, num_batches_tracked


def batch_norm_eval_forward(x, running_mean, running_var, weight, bias, eps=1e-5, mask=None):
    """BatchNorm in eval mode: fixed running statistics, so a fixed affine map per feature."""
    rstd = 1.0 / np.sqrt(running_var + eps)  # (D,)
    xhat = (x - running_mean) * rstd  # (N, T, D)
    out = xhat * weight + bias  # (N, T, D)
    if mask is not None:
        xhat = np.where(mask[..., None], xhat, 0.0)  # (N, T, D)
        out = np.where(mask[..., None], out, 0.0)  # (N, T, D)
    cache = (xhat, rstd, weight, mask)
    return out, cache


def batch_norm_eval_backward(dout, cache):
    """Gradients of :func:`batch_norm_eval_forward`: the statistics are constants."""
    xhat, rstd, weight, mask = cache
    axes = tuple(range(xhat.ndim - 1))  # (0, 1)
    if mask is not None:
        dout = np.where(mask[..., None], dout, 0.0)  # (N, T, D)
    dbias = dout.sum(axis=axes)  # (D,)
    dweight = (dout * xhat).sum(axis=axes)  # (D,)
    dx = dout * weight * rstd  # (N, T, D): only the direct road, no term through the statistics
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# Batch Renormalization (Ioffe, 2017): BatchNorm corrected towards the running statistics
# ---------------------------------------------------------------------------


def batch_renorm_forward(
    x, weight, bias, running_mean, running_var, eps=1e-5, r_max=1.0, d_max=0.0, mask=None
):
    """Batch Renorm in training mode, the paper's Algorithm 1: BatchNorm's x̂, times r, plus d.

    ``r = clip(std_B / std, 1 / r_max, r_max)`` and ``d = clip((mean_B - running_mean) /
    std, -d_max, d_max)``, with eps inside both standard deviations: ``std_B = sqrt(var_B
    + eps)``, ``std = sqrt(running_var + eps)``. The running statistics are those from
    before this batch updates them (as BatchNorm's: :func:`batch_norm_running_stats`);
    eval mode is :func:`batch_norm_eval_forward`. Returns ``(out, cache)``; the cache
    holds r and d, the constants of the backward.
    """
    axes = tuple(range(x.ndim - 1))  # (0, 1): every axis but the features
    real = True if mask is None else mask[..., None]  # (N, T, 1)
    mean = x.mean(axis=axes, keepdims=True, where=real)  # (1, 1, D)
    var = x.var(axis=axes, keepdims=True, where=real)  # (1, 1, D), biased
    std = np.sqrt(var + eps)  # (1, 1, D): the batch's
    running_std = np.sqrt(running_var + eps)  # (D,): the running one
    r = np.clip(std / running_std, 1 / r_max, r_max)  # (1, 1, D)
    d = np.clip((mean - running_mean) / running_std, -d_max, d_max)  # (1, 1, D)
    xhat = (x - mean) / std  # (N, T, D): BatchNorm's
    out = (xhat * r + d) * weight + bias  # (N, T, D)
    if mask is not None:
        xhat = np.where(real, xhat, 0.0)  # (N, T, D)
        out = np.where(real, out, 0.0)  # (N, T, D)
    cache = (xhat, 1.0 / std, r, d, weight, mask)
    return out, cache


def batch_renorm_backward(dout, cache):
    """Gradients of :func:`batch_renorm_forward` (r and d constants): ``(dx, dweight, dbias)``."""
    xhat, rstd, r, d, weight, mask = cache
    axes = tuple(range(xhat.ndim - 1))  # (0, 1)
    real = True if mask is None else mask[..., None]  # (N, T, 1)
    if mask is not None:
        dout = np.where(real, dout, 0.0)  # (N, T, D)
    dbias = dout.sum(axis=axes)  # (D,)
    dweight = (dout * (xhat * r + d)).sum(axis=axes)  # (D,): γ multiplies r·x̂ + d
    dxhat = dout * weight * r  # (N, T, D): ∂L/∂x̂ through r·x̂ + d
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True, where=real)  # (1, 1, D)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True, where=real)  # (1, 1, D)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)  # (N, T, D)
    if mask is not None:
        dx = np.where(real, dx, 0.0)  # (N, T, D)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# LayerNorm (Ba, Kiros & Hinton, 2016): per token, over its features
# ---------------------------------------------------------------------------


def layer_norm_forward(x, weight, bias, eps=1e-5, mask=None):
    """LayerNorm over the trailing axes of ``weight.shape`` (PyTorch's ``normalized_shape``).

    ``x`` (N, T, D), ``weight`` and ``bias`` (D,). Returns ``(out, cache)``.
    """
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))  # (2,): the normalized axes
    mean = x.mean(axis=axes, keepdims=True)  # (N, T, 1)
    var = x.var(axis=axes, keepdims=True)  # (N, T, 1), biased: divides by D
    rstd = 1.0 / np.sqrt(var + eps)  # (N, T, 1)
    xhat = (x - mean) * rstd  # (N, T, D)
    out = xhat * weight + bias  # (N, T, D)
    if mask is not None:  # each token has its own statistics: only zero the padded ones
        xhat = np.where(mask[..., None], xhat, 0.0)  # (N, T, D)
        out = np.where(mask[..., None], out, 0.0)  # (N, T, D)
    cache = (xhat, rstd, weight, mask)
    return out, cache


def layer_norm_backward(dout, cache):
    """Gradients of :func:`layer_norm_forward`: ``(dx, dweight, dbias)``."""
    xhat, rstd, weight, mask = cache
    axes = tuple(range(xhat.ndim - weight.ndim, xhat.ndim))  # (2,)
    shared_axes = tuple(range(xhat.ndim - weight.ndim))  # (0, 1): what γ and β are shared along
    if mask is not None:
        dout = np.where(mask[..., None], dout, 0.0)  # (N, T, D)
    dbias = dout.sum(axis=shared_axes)  # (D,)
    dweight = (dout * xhat).sum(axis=shared_axes)  # (D,)
    dxhat = dout * weight  # (N, T, D)
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True)  # (N, T, 1)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)  # (N, T, 1)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)  # (N, T, D), 0 where padded
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# RMSNorm (Zhang & Sennrich, 2019): LayerNorm without the mean
# ---------------------------------------------------------------------------


def rms_norm_forward(x, weight, eps=None, mask=None):
    """RMSNorm over the trailing axes of ``weight.shape``: divide by the root mean square.

    No mean is subtracted and there is no bias. ``eps=None`` is the machine epsilon
    of x's dtype (as PyTorch's ``RMSNorm(eps=None)``). Returns ``(out, cache)``.
    """
    if eps is None:
        eps = np.finfo(x.dtype).eps  # 1.19e-07 for float32, 2.22e-16 for float64
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))  # (2,)
    mean_square = (x**2).mean(axis=axes, keepdims=True)  # (N, T, 1): in place of the variance
    rstd = 1.0 / np.sqrt(mean_square + eps)  # (N, T, 1)
    xhat = x * rstd  # (N, T, D)
    out = xhat * weight  # (N, T, D)
    if mask is not None:
        xhat = np.where(mask[..., None], xhat, 0.0)  # (N, T, D)
        out = np.where(mask[..., None], out, 0.0)  # (N, T, D)
    cache = (xhat, rstd, weight, mask)
    return out, cache


def rms_norm_backward(dout, cache):
    """Gradients of :func:`rms_norm_forward`: ``(dx, dweight)``."""
    xhat, rstd, weight, mask = cache
    axes = tuple(range(xhat.ndim - weight.ndim, xhat.ndim))  # (2,)
    shared_axes = tuple(range(xhat.ndim - weight.ndim))  # (0, 1)
    if mask is not None:
        dout = np.where(mask[..., None], dout, 0.0)  # (N, T, D)
    dweight = (dout * xhat).sum(axis=shared_axes)  # (D,)
    dxhat = dout * weight  # (N, T, D)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)  # (N, T, 1)
    dx = rstd * (dxhat - xhat * mean_dxhat_xhat)  # (N, T, D): no mean, so no middle term
    return dx, dweight


# ---------------------------------------------------------------------------
# GroupNorm (Wu & He, 2018): per sample, over space and a group of channels
# ---------------------------------------------------------------------------


def group_norm_forward(x, num_groups, weight, bias, eps=1e-5, mask=None):
    """GroupNorm: channel c is in group ``c // (C // num_groups)``, as in PyTorch.

    ``x`` (N, H, W, C), ``weight`` and ``bias`` (C,). Returns ``(out, cache)``.
    """
    batch_size, channels = x.shape[0], x.shape[-1]
    grouped_shape = (batch_size, -1, num_groups, channels // num_groups)  # (N, H·W, G, C/G)
    grouped = x.reshape(grouped_shape)  # (N, H·W, G, C/G)
    real = True if mask is None else mask.reshape(batch_size, -1, 1, 1)  # (N, H·W, 1, 1)
    mean = grouped.mean(axis=(1, 3), keepdims=True, where=real)  # (N, 1, G, 1)
    var = grouped.var(axis=(1, 3), keepdims=True, where=real)  # (N, 1, G, 1), biased
    rstd = 1.0 / np.sqrt(var + eps)  # (N, 1, G, 1)
    xhat = ((grouped - mean) * rstd).reshape(x.shape)  # (N, H, W, C)
    out = xhat * weight + bias  # (N, H, W, C): γ and β per channel
    if mask is not None:
        xhat = np.where(mask[..., None], xhat, 0.0)  # (N, H, W, C)
        out = np.where(mask[..., None], out, 0.0)  # (N, H, W, C)
    cache = (xhat, rstd, weight, mask, grouped_shape)
    return out, cache


def group_norm_backward(dout, cache):
    """Gradients of :func:`group_norm_forward`: ``(dx, dweight, dbias)``."""
    xhat, rstd, weight, mask, grouped_shape = cache
    shared_axes = tuple(range(xhat.ndim - 1))  # (0, 1, 2): every axis but the channels
    real = True if mask is None else mask.reshape(xhat.shape[0], -1, 1, 1)  # (N, H·W, 1, 1)
    if mask is not None:
        dout = np.where(mask[..., None], dout, 0.0)  # (N, H, W, C)
    dbias = dout.sum(axis=shared_axes)  # (C,)
    dweight = (dout * xhat).sum(axis=shared_axes)  # (C,)
    dxhat = (dout * weight).reshape(grouped_shape)  # (N, H·W, G, C/G)
    xhat = xhat.reshape(grouped_shape)  # (N, H·W, G, C/G)
    mean_dxhat = dxhat.mean(axis=(1, 3), keepdims=True, where=real)  # (N, 1, G, 1)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=(1, 3), keepdims=True, where=real)  # (N, 1, G, 1)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)  # (N, H·W, G, C/G)
    dx = dx.reshape(dout.shape)  # (N, H, W, C)
    if mask is not None:
        dx = np.where(mask[..., None], dx, 0.0)  # (N, H, W, C)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# InstanceNorm (Ulyanov, Vedaldi & Lempitsky, 2016): per sample and channel, over space
# ---------------------------------------------------------------------------


def instance_norm_forward(x, weight, bias, eps=1e-5, mask=None):
    """InstanceNorm: GroupNorm with one channel per group. ``x`` (N, H, W, C), at least 3-d.

    ``weight`` and ``bias`` (C,). Returns ``(out, cache)``.
    """
    axes = tuple(range(1, x.ndim - 1))  # (1, 2): the spatial axes
    real = True if mask is None else mask[..., None]  # (N, H, W, 1)
    mean = x.mean(axis=axes, keepdims=True, where=real)  # (N, 1, 1, C)
    var = x.var(axis=axes, keepdims=True, where=real)  # (N, 1, 1, C), biased
    rstd = 1.0 / np.sqrt(var + eps)  # (N, 1, 1, C)
    xhat = (x - mean) * rstd  # (N, H, W, C)
    out = xhat * weight + bias  # (N, H, W, C)
    if mask is not None:
        xhat = np.where(real, xhat, 0.0)  # (N, H, W, C)
        out = np.where(real, out, 0.0)  # (N, H, W, C)
    cache = (xhat, rstd, weight, mask)
    return out, cache


def instance_norm_backward(dout, cache):
    """Gradients of :func:`instance_norm_forward`: ``(dx, dweight, dbias)``."""
    xhat, rstd, weight, mask = cache
    axes = tuple(range(1, xhat.ndim - 1))  # (1, 2)
    shared_axes = tuple(range(xhat.ndim - 1))  # (0, 1, 2)
    real = True if mask is None else mask[..., None]  # (N, H, W, 1)
    if mask is not None:
        dout = np.where(real, dout, 0.0)  # (N, H, W, C)
    dbias = dout.sum(axis=shared_axes)  # (C,)
    dweight = (dout * xhat).sum(axis=shared_axes)  # (C,)
    dxhat = dout * weight  # (N, H, W, C)
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True, where=real)  # (N, 1, 1, C)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True, where=real)  # (N, 1, 1, C)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)  # (N, H, W, C)
    if mask is not None:
        dx = np.where(real, dx, 0.0)  # (N, H, W, C)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# Conv2d (LeCun et al., 1989): the definition, one output number at a time
# ---------------------------------------------------------------------------


def _pair(value):
    """An int or a (height, width) pair, as torch takes kernel sizes, strides and paddings."""
    return (value, value) if isinstance(value, int) else tuple(value)


def conv2d_forward_naive(x, weight, bias=None, stride=1, padding=0):
    """Conv2d by its definition: every output is a window of the input times the kernel, summed.

    ``y[n, h, w, o] = bias[o] + Σ_{i, j, c} x_pad[n, h·s + i, w·s + j, c] · weight[o, c, i, j]``

    ``x`` (N, H, W, C_in), features-last; ``weight`` (C_out, C_in, kH, kW), torch's
    layout (``torch.nn.Conv2d(...).weight``, or ``normlab.nn.Conv2d(...).state_dict()``);
    ``bias`` (C_out,) or None; ``stride`` and ``padding`` ints or (height, width) pairs.
    ``x_pad`` is ``x`` with ``padding`` zeros on both sides of H and W. Returns
    ``(out, cache)``, ``out`` of shape (N, Ho, Wo, C_out).
    """
    (stride_h, stride_w), (pad_h, pad_w) = _pair(stride), _pair(padding)
    batch_size, height, width, _ = x.shape  # (N, H, W, C_in)
    out_channels, _, kernel_h, kernel_w = weight.shape  # (C_out, C_in, kH, kW)
    x_pad = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))  # (N, H+2p, W+2p, C_in)
    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1  # the windows that fit
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    out = np.zeros((batch_size, out_h, out_w, out_channels), dtype=x.dtype)  # (N, Ho, Wo, C_out)
    for n in range(batch_size):
        for h in range(out_h):
            for w in range(out_w):
                top, left = h * stride_h, w * stride_w
                window = x_pad[n, top : top + kernel_h, left : left + kernel_w, :]  # (kH, kW, C_in)
                for o in range(out_channels):
                    kernel = weight[o].transpose(1, 2, 0)  # (kH, kW, C_in), as the window
                    out[n, h, w, o] = np.sum(window * kernel)  # one number
    if bias is not None:
        out += bias  # (N, Ho, Wo, C_out): one bias per output channel
    cache = (x, weight, bias is not None, (stride_h, stride_w), (pad_h, pad_w))
    return out, cache


def conv2d_backward_naive(dout, cache):
    """Gradients of :func:`conv2d_forward_naive`: ``(dx, dweight, dbias)``.

    Each output ``out[n, h, w, o]`` used one window of the input and the kernel ``o``, so
    its gradient ``dout[n, h, w, o]`` flows back to exactly those: the window's entries get
    ``dout · kernel``, the kernel gets ``dout · window``. Windows that overlap add up. The
    layouts are the forward's: ``dweight`` (C_out, C_in, kH, kW), ``dbias`` (C_out,) or None.
    """
    x, weight, has_bias, (stride_h, stride_w), (pad_h, pad_w) = cache
    batch_size, height, width, _ = x.shape  # (N, H, W, C_in)
    out_channels, _, kernel_h, kernel_w = weight.shape  # (C_out, C_in, kH, kW)
    _, out_h, out_w, _ = dout.shape  # (N, Ho, Wo, C_out)
    x_pad = np.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))  # (N, H+2p, W+2p, C_in)
    dx_pad = np.zeros_like(x_pad)  # (N, H+2p, W+2p, C_in)
    dweight = np.zeros_like(weight)  # (C_out, C_in, kH, kW)
    for n in range(batch_size):
        for h in range(out_h):
            for w in range(out_w):
                top, left = h * stride_h, w * stride_w
                rows, cols = slice(top, top + kernel_h), slice(left, left + kernel_w)
                window = x_pad[n, rows, cols, :]  # (kH, kW, C_in)
                for o in range(out_channels):
                    grad = dout[n, h, w, o]  # one number
                    kernel = weight[o].transpose(1, 2, 0)  # (kH, kW, C_in), as the window
                    dweight[o] += grad * window.transpose(2, 0, 1)  # (C_in, kH, kW)
                    dx_pad[n, rows, cols, :] += grad * kernel  # (kH, kW, C_in)
    dx = dx_pad[:, pad_h : pad_h + height, pad_w : pad_w + width, :]  # (N, H, W, C_in): no padding
    dbias = dout.sum(axis=(0, 1, 2)) if has_bias else None  # (C_out,)
    return dx, dweight, dbias
