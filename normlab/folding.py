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
the Linear layer had none, as before a centering BatchNorm). A ``Conv2d`` before a
BatchNorm over its (N, H, W, C) output folds the same way: every output position of
channel o is a dot product with the kernel of o, so that kernel, ``W[..., o]`` of the
(kH, kW, C_in, C_out) weight, is scaled by :math:`s_o`, and the bias rewritten per
channel. Zero padding changes nothing: a padded position adds 0 to the sum before
and after the scaling. The folded network computes the same outputs up to float
rounding with one layer fewer, and nothing in it depends on a batch any more.

In training mode there is nothing to fold: BatchNorm normalizes each batch with
that batch's statistics, and no fixed weights reproduce that.

>>> import numpy as np
>>> from normlab import nn
>>> model = nn.MLP(4, 8, 3, norm="batch", rng=0)
>>> _ = model(np.random.default_rng(1).normal(size=(16, 4)))   # running statistics move
>>> deployed = fold_all_batchnorms(model.eval())
>>> [type(layer).__name__ for layer in deployed]
['Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
>>> cnn = nn.CNN(1, 10, widths=(4, 8), rng=0)
>>> _ = cnn(np.random.default_rng(1).normal(size=(6, 8, 8, 1)))
>>> [type(layer).__name__ for layer in fold_all_batchnorms(cnn.eval())][:4]
['Conv2d', 'ReLU', 'MaxPool2d', 'Conv2d']
"""

from __future__ import annotations

import copy

import numpy as np

from normlab.layers import BatchNorm
from normlab.module import Module
from normlab.nn.containers import Sequential
from normlab.nn.conv import Conv2d
from normlab.nn.linear import Linear

__all__ = ["FOLDABLE_LAYERS", "fold_all_batchnorms", "fold_batchnorm"]

#: The layers a BatchNorm after them folds into: each output feature (a Linear column, a
#: Conv2d output channel) is a weighted sum of the inputs, which a per-feature scale scales.
FOLDABLE_LAYERS = (Linear, Conv2d)


def _out_features(layer) -> int:
    return layer.out_features if isinstance(layer, Linear) else layer.out_channels


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


def fold_batchnorm(layer: Linear | Conv2d, batchnorm: BatchNorm) -> Linear | Conv2d:
    """A new layer equal to ``batchnorm(layer(x))`` for an eval-mode ``batchnorm``.

    .. math::  W'_{\\cdot o} = W_{\\cdot o} \\, s_o, \\quad b'_o = (b_o - \\mu_o)\\, s_o + \\beta_o,
        \\qquad s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}

    per output feature o: a column of a Linear weight (in, out), the kernel
    ``W[..., o]`` of a Conv2d weight (kH, kW, C_in, C_out) (γ = 1 and β = 0 without
    affine parameters, b = 0 without a bias). The folded weights are computed in
    float64 and stored in the layer's dtype. Neither argument is changed.

    Parameters
    ----------
    layer : Linear or Conv2d, the layer right before ``batchnorm``.
    batchnorm : BatchNorm (or BatchRenorm) in eval mode, with running statistics, over
        the layer's output features (``out_features`` / ``out_channels``).

    Returns
    -------
    A layer of the same type and shape (stride, padding kept), always with a bias.

    Raises
    ------
    TypeError for a layer that is not Linear or Conv2d, or a batchnorm that is not a
    BatchNorm; ValueError for a BatchNorm in training mode, one without running
    statistics, or a size mismatch.
    """
    who = "fold_batchnorm"
    if not isinstance(layer, FOLDABLE_LAYERS):
        raise TypeError(
            f"{who}: the layer before the BatchNorm must be a Linear or Conv2d layer, got "
            f"{type(layer).__name__}."
        )
    _check_foldable(batchnorm, who)
    out_features = _out_features(layer)
    if out_features != batchnorm.num_features:
        size = "out_features" if isinstance(layer, Linear) else "out_channels"
        raise ValueError(
            f"{who}: the {type(layer).__name__} layer has {size}={out_features} but the "
            f"BatchNorm has num_features={batchnorm.num_features}; they must be the same "
            "features."
        )
    running_mean = batchnorm.running_mean.astype(np.float64)  # (C,) = (out,)
    running_std = np.sqrt(batchnorm.running_var.astype(np.float64) + batchnorm.eps)
    gamma = batchnorm.params.get("weight", np.ones(batchnorm.num_features))
    beta = batchnorm.params.get("bias", np.zeros(batchnorm.num_features))
    scale = gamma.astype(np.float64) / running_std  # s, (out,)
    # Linear (in, out) or Conv2d (kH, kW, C_in, out): the output feature is the last axis
    weight = layer.params["weight"].astype(np.float64)
    bias = layer.params.get("bias", np.zeros(out_features)).astype(np.float64)
    folded = copy.deepcopy(layer)
    folded.params["weight"][...] = weight * scale  # output feature o scaled by s_o
    folded_bias = ((bias - running_mean) * scale + beta).astype(layer.dtype)
    if "bias" in folded.params:
        folded.params["bias"][...] = folded_bias
    else:
        folded.add_param("bias", folded_bias)
    folded.grads.clear()
    folded._cache = None  # a new layer: no forward has run through it yet
    return folded


def fold_all_batchnorms(model: Sequential) -> Sequential:
    """A copy of ``model`` with every Linear/Conv2d -> BatchNorm pair folded into one layer.

    ``model`` is a :class:`~normlab.nn.Sequential` (an MLP and a CNN are); nested
    Sequential containers are folded too. The result is a plain Sequential whose layers
    keep their names, so ``"0.weight"`` of the result is the folded ``"0.weight"``, and
    the folded BatchNorm layers are gone (``"1.*"`` for an MLP or a CNN). Every
    BatchNorm must directly follow a Linear or Conv2d layer and be foldable (see
    :func:`fold_batchnorm`), else a ValueError names it. ``model`` is not changed; the
    copy has its mode.
    """
    who = "fold_all_batchnorms"
    if not isinstance(model, Sequential):
        raise TypeError(
            f"{who}: expected a Sequential model (such as an MLP), got {type(model).__name__}; "
            "fold its Linear/Conv2d -> BatchNorm pairs one by one with fold_batchnorm."
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
                f"{who}: the BatchNorm {name!r} follows {before}, not a Linear or Conv2d "
                "layer, so there is no layer to fold it into."
            )
        if isinstance(layer, FOLDABLE_LAYERS) and isinstance(following, BatchNorm):
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
