"""normlab: BatchNorm, LayerNorm, RMSNorm and GroupNorm in numpy, to see, measure and rerun.

All layers share one normalization core (:mod:`normlab.functional`; the readable
textbook version is :mod:`normlab.reference`) and one interface (:mod:`normlab.module`):
``y = layer(x, mask=None)``, ``dx = layer.backward(dy)``, ``layer.params`` /
``layer.grads``, ``layer.train()`` / ``layer.eval()``, ``layer.state_dict()``.
Inputs are features-last: (N, D), (N, T, D) or (N, H, W, C).

>>> import numpy as np, normlab as nl
>>> x = np.random.default_rng(0).normal(size=(32, 10, 64)).astype(np.float32)
>>> y = nl.LayerNorm(64)(x)
>>> y.shape, y.dtype
((32, 10, 64), dtype('float32'))
>>> nl.make_norm("group", 64)   # every kind by name: "none", "batch", "layer", "rms", ...
GroupNorm(8, 64, eps=1e-05, affine=True)
"""

from normlab import functional
from normlab.folding import fold_all_batchnorms, fold_batchnorm
from normlab.gradcheck import gradcheck
from normlab.layers import (
    NORM_KINDS,
    BatchNorm,
    BatchRenorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    Norm,
    RMSNorm,
    make_norm,
)
from normlab.module import Module

__version__ = "0.1.0"

__all__ = [
    "NORM_KINDS",
    "BatchNorm",
    "BatchRenorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Module",
    "Norm",
    "RMSNorm",
    "fold_all_batchnorms",
    "fold_batchnorm",
    "functional",
    "gradcheck",
    "make_norm",
]
