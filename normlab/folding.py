"""Folding an eval-mode BatchNorm into the layer before it: why a deployed network has none.

In eval mode BatchNorm is a fixed affine map of each feature, with the running
statistics in place of the batch's:

.. math::

    \\mathrm{BN}(z) = \\frac{z - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}}\\, \\gamma + \\beta
                   = z \\cdot s + (\\beta - \\mu s), \\qquad
    s = \\frac{\\gamma}{\\sqrt{\\sigma^2 + \\epsilon}}

(μ = ``running_mean``, σ² = ``running_var``, γ = ``weight``, β = ``bias``). When
``z = x W + b`` comes from a Linear layer, the two affine maps compose into one:

.. math::

    \\mathrm{BN}(x W + b) = x\\, (W s) + \\big((b - \\mu)\\, s + \\beta\\big)

so column j of W is scaled by :math:`s_j` and the bias rewritten (created when
the Linear layer had none, as before a centering BatchNorm). The folded network
computes the same outputs up to float rounding with one layer fewer, and nothing
in it depends on a batch any more.

In training mode there is nothing to fold: BatchNorm normalizes each batch with
that batch's statistics, and no fixed weights reproduce that.

>>> import numpy as np
>>> from normlab import nn
>>> model = nn.MLP(4, 8, 3, norm="batch", rng=0)
>>> _ = model(np.random.default_rng(1).normal(size=(16, 4)))   # running statistics move
>>> deployed = fold_all_batchnorms(model.eval())
>>> [type(layer).__name__ for layer in deployed]
['Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
"""

from __future__ import annotations

import copy

import numpy as np

from normlab.layers import BatchNorm
from normlab.module import Module
from normlab.nn.containers import Sequential
from normlab.nn.linear import Linear

__all__ = ["fold_all_batchnorms", "fold_batchnorm"]


def _check_foldable(batchnorm: BatchNorm, who: str) -> None:
    if not isinstance(batchnorm, BatchNorm):
        raise TypeError(f"{who}: expected a BatchNorm to fold, got {type(batchnorm).__name__}.")
    if not batchnorm.has_running_stats:
        raise ValueError(
            f"{who}: {batchnorm!r} has no running statistics (built with "
            "track_running_stats=False), so it normalizes every batch with that batch's "
            "statistics, which no fixed weights reproduce. Only a BatchNorm with running "
            "statistics, in eval mode, can be folded."
        )
    if batchnorm.training:
        raise ValueError(
            f"{who}: {batchnorm!r} is in training mode, where it normalizes every batch with "
            "that batch's statistics, which no fixed weights reproduce. Call .eval() on it "
            "(or on the model) first: eval mode uses the running statistics."
        )


def fold_batchnorm(layer: Linear, batchnorm: BatchNorm) -> Linear:
    """A new Linear layer equal to ``batchnorm(layer(x))`` for an eval-mode ``batchnorm``.

    .. math::  W' = W \\cdot s, \\quad b' = (b - \\mu)\\, s + \\beta, \\qquad
        s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}

    per output feature (γ = 1 and β = 0 without affine parameters, b = 0 without a
    bias). The folded weights are computed in float64 and stored in the Linear
    layer's dtype. Neither argument is changed.

    Parameters
    ----------
    layer : Linear, the layer right before ``batchnorm``.
    batchnorm : BatchNorm (or BatchRenorm) in eval mode, with running statistics, over
        ``layer.out_features`` features.

    Returns
    -------
    Linear with the same in/out features, always with a bias.

    Raises
    ------
    TypeError for a layer that is not Linear or a batchnorm that is not a BatchNorm;
    ValueError for a BatchNorm in training mode, one without running statistics, or
    a size mismatch.
    """
    who = "fold_batchnorm"
    if not isinstance(layer, Linear):
        raise TypeError(
            f"{who}: the layer before the BatchNorm must be a Linear layer, got "
            f"{type(layer).__name__}."
        )
    _check_foldable(batchnorm, who)
    if layer.out_features != batchnorm.num_features:
        raise ValueError(
            f"{who}: the Linear layer has out_features={layer.out_features} but the BatchNorm "
            f"has num_features={batchnorm.num_features}; they must be the same features."
        )
    running_mean = batchnorm.running_mean.astype(np.float64)  # (C,) = (out,)
    running_std = np.sqrt(batchnorm.running_var.astype(np.float64) + batchnorm.eps)
    gamma = batchnorm.params.get("weight", np.ones(batchnorm.num_features))
    beta = batchnorm.params.get("bias", np.zeros(batchnorm.num_features))
    scale = gamma.astype(np.float64) / running_std  # s, (out,)
    weight = layer.params["weight"].astype(np.float64)  # (in, out)
    bias = layer.params.get("bias", np.zeros(layer.out_features)).astype(np.float64)
    folded = copy.deepcopy(layer)
    folded.params["weight"][...] = weight * scale  # column j scaled by s_j
    folded_bias = ((bias - running_mean) * scale + beta).astype(layer.dtype)
    if "bias" in folded.params:
        folded.params["bias"][...] = folded_bias
    else:
        folded.add_param("bias", folded_bias)
    folded.grads.clear()
    folded._cache = None  # a new layer: no forward has run through it yet
    return folded


def fold_all_batchnorms(model: Sequential) -> Sequential:
    """A copy of ``model`` with every Linear -> BatchNorm pair folded into one Linear layer.

    ``model`` is a :class:`~normlab.nn.Sequential` (an MLP is one); nested Sequential
    containers are folded too. The layers keep their names, so ``"0.weight"`` of the
    result is the folded ``"0.weight"``, and the folded BatchNorm layers are gone
    (``"1.*"`` for an MLP). Every BatchNorm must directly follow a Linear layer and be
    foldable (see :func:`fold_batchnorm`), else a ValueError names it. ``model`` is not
    changed; the copy has its mode.
    """
    who = "fold_all_batchnorms"
    if not isinstance(model, Sequential):
        raise TypeError(
            f"{who}: expected a Sequential model (such as an MLP), got {type(model).__name__}; "
            "fold its Linear -> BatchNorm pairs one by one with fold_batchnorm."
        )
    children = model.named_children()
    folded: dict[str, Module] = {}
    index = 0
    while index < len(children):
        name, layer = children[index]
        following = children[index + 1][1] if index + 1 < len(children) else None
        if isinstance(layer, BatchNorm):
            before = "nothing" if index == 0 else f"a {type(children[index - 1][1]).__name__}"
            raise ValueError(
                f"{who}: the BatchNorm {name!r} follows {before}, not a Linear layer, so there "
                "is no layer to fold it into."
            )
        if isinstance(layer, Linear) and isinstance(following, BatchNorm):
            _check_foldable(following, f"{who} (BatchNorm {children[index + 1][0]!r})")
            folded[name] = fold_batchnorm(layer, following)
            index += 2
            continue
        if isinstance(layer, Sequential):
            folded[name] = fold_all_batchnorms(layer)
        elif any(isinstance(module, BatchNorm) for module in layer.modules()):
            raise ValueError(
                f"{who}: {name!r} ({type(layer).__name__}) holds a BatchNorm inside; only "
                "Sequential containers are searched. Fold it with fold_batchnorm."
            )
        else:
            folded[name] = copy.deepcopy(layer)
        index += 1
    result = Sequential(folded)
    return result.train(model.training)
