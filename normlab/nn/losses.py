"""Softmax cross-entropy (with a mask for padded positions) and accuracy."""

from __future__ import annotations

import numpy as np

from normlab.module import as_float_array, check_mask

__all__ = ["accuracy", "softmax_cross_entropy"]


def softmax_cross_entropy(logits, targets, mask=None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer targets, and its gradient.

    .. math::

        L = -\\frac{1}{n} \\sum_{i:\\, m_i} \\log \\mathrm{softmax}(z_i)_{y_i}, \\qquad
        \\frac{\\partial L}{\\partial z_i} = \\frac{m_i}{n}\\,
            (\\mathrm{softmax}(z_i) - \\mathrm{onehot}(y_i))

    with ``n`` the number of real positions. Computed stably through
    ``log_softmax(z) = z - max(z) - log(sum(exp(z - max(z))))``, so logits of
    any size give a finite loss.

    Parameters
    ----------
    logits : float ndarray (..., C), e.g. (N, C) or (N, T, C).
    targets : int ndarray (...), class indices in [0, C). Values at masked
        positions are ignored (any integer, e.g. -1, is fine there).
    mask : bool ndarray (...), optional; True marks positions that count.

    Returns
    -------
    loss : float, the mean over real positions (0.0 if there are none).
    dlogits : ndarray like ``logits``, 0 at masked positions.
    """
    logits = as_float_array(logits, "softmax_cross_entropy")
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: targets must be integers, got {targets.dtype}.")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"softmax_cross_entropy: targets must have shape logits.shape[:-1] = "
            f"{logits.shape[:-1]}, got {targets.shape}."
        )
    num_classes = logits.shape[-1]
    mask = check_mask(mask, logits.shape, "softmax_cross_entropy")
    if mask is not None:
        targets = np.where(mask, targets, 0)  # ignored positions: any valid index
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"softmax_cross_entropy: targets must lie in [0, {num_classes}), "
            f"got values in [{targets.min()}, {targets.max()}]."
        )
    logit_rows = logits.reshape(-1, num_classes)  # (M, C)
    target_rows = targets.reshape(-1)  # (M,)
    rows = np.arange(target_rows.size)
    shifted = logit_rows - logit_rows.max(axis=1, keepdims=True)  # (M, C), max is 0
    exp_shifted = np.exp(shifted)
    sum_exp = exp_shifted.sum(axis=1, keepdims=True)  # (M, 1), in [1, C]
    log_prob_target = shifted[rows, target_rows] - np.log(sum_exp[:, 0])  # (M,)
    dlogits = exp_shifted / sum_exp  # (M, C): softmax
    dlogits[rows, target_rows] -= 1
    if mask is None:
        count = target_rows.size
        loss = -log_prob_target.sum()
    else:
        mask_rows = mask.reshape(-1)  # (M,)
        count = int(mask_rows.sum())
        loss = -log_prob_target[mask_rows].sum()
        dlogits *= mask_rows[:, None]
    divisor = max(count, 1)
    dlogits /= logits.dtype.type(divisor)
    return float(loss) / divisor, dlogits.reshape(logits.shape)


def accuracy(logits, targets, mask=None) -> float:
    """Fraction of (real) positions where ``argmax(logits) == targets``."""
    correct = np.argmax(logits, axis=-1) == np.asarray(targets)  # (...)
    if mask is None:
        return float(correct.mean())
    mask = np.asarray(mask, dtype=bool)
    return float(correct[mask].mean()) if mask.any() else 0.0
