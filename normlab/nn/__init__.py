"""The pieces the experiments train with, written out in numpy with hand-written backward.

Every module has the one interface of :mod:`normlab.module` (the normalization layers of
:mod:`normlab.layers` too)::

    y = module(x, mask=None)     # same as module.forward(x, mask=None)
    dx = module.backward(dy)     # gradient w.r.t. the input of the last forward; fills grads
    module.params, module.grads  # name -> ndarray; grads are overwritten, never accumulated
    module.train(); module.eval()  # module.training tells the mode
    module.state_dict()          # PyTorch's names and layouts; load_state_dict takes them

Inputs are features-last: (N, D) vectors or (N, T, D) sequences, with an optional
padding ``mask`` of shape ``x.shape[:-1]`` (True = real token), and (N, H, W, C) images.

What is here, by topic
----------------------
* :mod:`~normlab.nn.linear`: :class:`Linear`; :mod:`~normlab.nn.activations`:
  :class:`ReLU`, :class:`Tanh`, :class:`GELU`; :class:`Identity` (from :mod:`normlab.module`).
* :mod:`~normlab.nn.embedding`: :class:`Embedding`, learned vectors looked up by integer ids.
* :mod:`~normlab.nn.attention`: :class:`MultiheadAttention`, self-attention with padding
  masks of any pattern and causal masking; :mod:`~normlab.nn.transformer`:
  :class:`TransformerEncoderLayer`, Pre-LN or Post-LN, with any normalization.
* :mod:`~normlab.nn.conv`: :class:`Conv2d`, :class:`MaxPool2d` and
  :class:`GlobalAvgPool2d` on (N, H, W, C) images.
* :mod:`~normlab.nn.containers`: :class:`Sequential`, a chain of modules whose
  parameters appear as one flat, live dict (``"0.weight"``, ``"2.bias"``, ...).
* :mod:`~normlab.nn.mixing`: :class:`MeanMixing`, token mixing by running means, and
  :class:`MixingBlock`, a pre-norm residual block around it.
* :mod:`~normlab.nn.models`: :class:`MLP` (``Linear -> norm -> ReLU`` blocks and a
  ``Linear`` head), :class:`SequenceModel`, :class:`CNN` (``Conv2d -> norm -> ReLU ->
  MaxPool2d`` blocks, a global average pool and a ``Linear`` head; its shape as a
  :class:`CNNConfig`) and :class:`TransformerLM` (a causal character-level language
  model, with its :class:`TransformerLMConfig`).
* :mod:`~normlab.nn.losses`: :func:`softmax_cross_entropy`, :func:`accuracy`.
* :mod:`~normlab.nn.optim`: :class:`SGD` (with momentum), :class:`Adam` and
  :class:`AdamW`, updating ``params`` in place, and :class:`WarmupSchedule`, a learning
  rate with linear warm-up.

The normalization layers are chosen by name with :func:`normlab.make_norm`.

Example
-------
>>> import numpy as np
>>> from normlab import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.MLP(64, 32, 10, norm="layer", rng=rng)
>>> optimizer = nn.SGD(model.params, model.grads, lr=0.1)
>>> x, y = rng.normal(size=(16, 64)).astype(np.float32), rng.integers(0, 10, size=16)
>>> loss, dlogits = nn.softmax_cross_entropy(model(x), y)
>>> _ = model.backward(dlogits)
>>> optimizer.step()   # every array in model.params moved, in place
>>> sorted(model.params)[:3]
['0.bias', '0.weight', '1.bias']
"""

from normlab.module import Container, Identity, Module
from normlab.nn.activations import GELU, ReLU, Tanh
from normlab.nn.attention import MultiheadAttention
from normlab.nn.containers import Sequential
from normlab.nn.conv import Conv2d, GlobalAvgPool2d, MaxPool2d
from normlab.nn.embedding import Embedding
from normlab.nn.linear import Linear
from normlab.nn.losses import accuracy, softmax_cross_entropy
from normlab.nn.mixing import MeanMixing, MixingBlock
from normlab.nn.models import CNN, MLP, CNNConfig, SequenceModel, TransformerLM, TransformerLMConfig
from normlab.nn.optim import SGD, Adam, AdamW, WarmupSchedule
from normlab.nn.transformer import TransformerEncoderLayer

__all__ = [
    "CNN",
    "GELU",
    "MLP",
    "SGD",
    "Adam",
    "AdamW",
    "CNNConfig",
    "Container",
    "Conv2d",
    "Embedding",
    "GlobalAvgPool2d",
    "Identity",
    "Linear",
    "MaxPool2d",
    "MeanMixing",
    "MixingBlock",
    "Module",
    "MultiheadAttention",
    "ReLU",
    "SequenceModel",
    "Sequential",
    "Tanh",
    "TransformerEncoderLayer",
    "TransformerLM",
    "TransformerLMConfig",
    "WarmupSchedule",
    "accuracy",
    "softmax_cross_entropy",
]
