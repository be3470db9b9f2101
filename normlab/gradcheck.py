"""Finite-difference gradient checking for any layer with normlab's interface.

The check compares ``layer.backward`` with central differences of the scalar

.. math::

    L(x, \\theta) = \\sum_i g_i \\, y_i(x, \\theta)

where ``g`` is a fixed *random* upstream gradient. A random ``g`` matters:
with ``g = 1`` the loss is ``sum(BatchNorm(x))``, whose gradient with respect
to ``x`` is exactly 0 for any input, so a wrong backward could pass.

:func:`jacobian` uses the same backward the other way round: one pass per output
entry, with a one-hot upstream gradient, gives the full matrix ∂y/∂x, the tool for
questions such as "which inputs does this output depend on?".
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["gradcheck", "jacobian", "numerical_gradient", "relative_error"]

_UPSTREAM_STREAM = 7919  # any constant: keeps the upstream gradient apart from the data


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Largest absolute difference, relative to the largest entry of either gradient.

    .. math::  \\frac{\\max_i |a_i - n_i|}{\\max(\\max_i |a_i|, \\max_i |n_i|)}

    Scaling by the whole gradient (not entry by entry) keeps entries that are
    0 in exact arithmetic, such as masked positions, from dividing noise by
    noise. Two zero gradients have error 0.
    """
    scale = max(np.max(np.abs(analytic), initial=0.0), np.max(np.abs(numeric), initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(analytic - numeric), initial=0.0) / scale)


def numerical_gradient(f, array: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences ``(f(a + h e_i) - f(a - h e_i)) / 2h`` of a scalar ``f()``.

    ``array`` is perturbed in place, one entry at a time, and restored.
    """
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)  # views
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + step
        loss_plus = f()
        flat[i] = original - step
        loss_minus = f()
        flat[i] = original
        flat_grad[i] = (loss_plus - loss_minus) / (2 * step)
    return grad


def gradcheck(layer, x: np.ndarray, mask=None, *, step: float = 1e-6, seed: int = 0) -> dict:
    """Largest relative error of ``layer.backward`` against finite differences.

    Parameters
    ----------
    layer : a normlab layer (or anything with ``__call__(x, mask)``,
        ``backward(dy)``, ``params`` and ``grads``) with float64 parameters,
        e.g. ``nl.LayerNorm(8, dtype=np.float64)``. It is not modified: the
        check runs on a copy, so running statistics stay as they were.
    x : float64 ndarray, the input.
    mask : optional bool ndarray of shape ``x.shape[:-1]``.
    step : float, default 1e-6, the finite-difference step h.
    seed : int, default 0, seeds the random upstream gradient.

    Returns
    -------
    dict
        ``{"input": err, "weight": err, "bias": err}`` with one entry per
        parameter; errors below about 1e-7 mean the backward is right.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> x = np.random.default_rng(0).normal(size=(4, 5))
    >>> errors = nl.gradcheck(nl.BatchNorm(5, dtype=np.float64), x)
    >>> all(error < 1e-7 for error in errors.values())
    True
    """
    x = np.array(x, copy=True)
    if x.dtype != np.float64:
        raise TypeError(
            f"gradcheck needs float64 input for accurate finite differences, got {x.dtype}; "
            "pass x.astype(np.float64)."
        )
    for name, value in layer.params.items():
        if value.dtype != np.float64:
            raise TypeError(
                f"gradcheck needs float64 parameters, but {name!r} is {value.dtype}; "
                "build the layer with dtype=np.float64."
            )
    probe = copy.deepcopy(layer)
    # A stream of its own: with default_rng(seed) the upstream gradient would equal an input
    # drawn with the same seed, and sum(x * BatchNorm(x)) has a near-zero gradient.
    upstream_rng = np.random.default_rng([seed, _UPSTREAM_STREAM])
    upstream = upstream_rng.normal(size=np.shape(probe(x, mask=mask)))

    def loss() -> float:
        return float(np.sum(probe(x, mask=mask) * upstream))

    loss()
    errors = {"input": relative_error(probe.backward(upstream), numerical_gradient(loss, x, step))}
    analytic_grads = {name: grad.copy() for name, grad in probe.grads.items()}
    for name, value in probe.params.items():
        errors[name] = relative_error(analytic_grads[name], numerical_gradient(loss, value, step))
    return errors


def jacobian(layer, x: np.ndarray, mask=None, *, outputs=...) -> np.ndarray:
    """∂y/∂x of ``layer`` at ``x``, from its backward: one pass per output entry.

    The backward of ``L = Σ_k g_k y_k`` is ``Σ_k g_k ∂y_k/∂x``; with the one-hot
    upstream gradient ``g = e_k`` it is row ``k`` of the Jacobian, ∂y_k/∂x. The
    forward runs once, on ``x`` (so BatchNorm in training mode updates its
    running statistics once), then one backward per output entry.

    Parameters
    ----------
    layer : anything with ``__call__(x, mask=mask)`` and ``backward(dy)``.
    x : ndarray, the input.
    mask : optional bool ndarray of shape ``x.shape[:-1]``, passed to the forward.
    outputs : index into ``y``, default all of ``y``
        The output entries whose rows are computed, e.g. ``0`` for the first
        sample's outputs only: far fewer backward passes for a large batch.

    Returns
    -------
    ndarray of shape ``y[outputs].shape + x.shape`` and ``x``'s dtype, with
    ``result[i, ..., j, ...] = ∂y[outputs][i, ...]/∂x[j, ...]``. For
    ``x`` of shape (B, D) and all outputs: (B, D, B, D), entry
    ``[i, k, j, l] = ∂y[i, k]/∂x[j, l]``.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> x = np.random.default_rng(0).normal(size=(3, 4))
    >>> full = jacobian(nl.LayerNorm(4, dtype=np.float64), x)  # (3, 4, 3, 4)
    >>> bool(np.all(full[0, :, 1:] == 0))   # LayerNorm: sample 0 ignores samples 1, 2
    True
    """
    y = layer(x, mask=mask)
    chosen = np.arange(y.size).reshape(y.shape)[outputs]  # flat indices into y
    result = np.empty((*np.shape(chosen), *np.shape(x)), dtype=np.asarray(x).dtype)
    rows = result.reshape(-1, *np.shape(x))  # a view: one row per chosen output entry
    upstream = np.zeros(y.shape, dtype=y.dtype)  # one-hot, at one output entry at a time
    for row, flat_index in zip(rows, np.ravel(chosen), strict=True):
        upstream.flat[flat_index] = 1.0
        row[...] = layer.backward(upstream)
        upstream.flat[flat_index] = 0.0
    return result
