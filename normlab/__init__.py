"""normlab: BatchNorm, LayerNorm, RMSNorm and GroupNorm in numpy, to see, measure and rerun.

All layers share one normalization core (:mod:`normlab.functional`) and one
interface: ``y = layer(x, mask=None)``, ``dx = layer.backward(dy)``,
``layer.params`` / ``layer.grads``, ``layer.train()`` / ``layer.eval()``.
Inputs are features-last: (N, D), (N, T, D) or (N, H, W, C).

>>> import numpy as np, normlab as nl
>>> x = np.random.default_rng(0).normal(size=(32, 10, 64)).astype(np.float32)
>>> y = nl.LayerNorm(64)(x)
>>> y.shape, y.dtype
((32, 10, 64), dtype('float32'))
"""

from normlab import functional
from normlab.gradcheck import gradcheck
from normlab.layers import BatchNorm, GroupNorm, LayerNorm, Norm, RMSNorm

__version__ = "0.1.0"

__all__ = [
    "BatchNorm",
    "GroupNorm",
    "LayerNorm",
    "Norm",
    "RMSNorm",
    "functional",
    "gradcheck",
]
