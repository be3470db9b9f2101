"""Sequential: modules applied one after the other, with one flat dict of parameters."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np

from normlab.module import Container

__all__ = ["Sequential"]


def _accepts_mask(layer) -> bool:
    """True if ``layer(x, mask=...)`` is a valid call."""
    try:
        signature = inspect.signature(layer)
    except (TypeError, ValueError):
        return False
    return "mask" in signature.parameters or any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in signature.parameters.values()
    )


class Sequential(Container):
    """Modules applied one after the other; ``backward`` runs them in reverse.

    ``Sequential(a, b, c)`` names its layers ``"0"``, ``"1"``, ``"2"``;
    ``Sequential({"embed": a, "head": b})`` uses the given names. The
    parameters of all layers appear as one flat dict, ``model.params``
    (``{"0.weight": ..., "0.bias": ..., "2.weight": ...}``), and the gradients
    likewise in ``model.grads``. Both are live views: they always show the
    layers' current arrays.

    The ``mask`` is passed to every layer whose call accepts one, and
    :meth:`train` / :meth:`eval` reach every layer.

    Examples
    --------
    >>> import numpy as np
    >>> from normlab.nn import Linear, ReLU
    >>> model = Sequential(Linear(4, 8, rng=0), ReLU(), Linear(8, 2, rng=1, init="glorot"))
    >>> list(model.params)
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> model(np.zeros((3, 4))).shape
    (3, 2)
    """

    def __init__(self, *layers) -> None:
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            named = tuple((str(name), layer) for name, layer in layers[0].items())
        else:
            named = tuple((str(index), layer) for index, layer in enumerate(layers))
        if not named:
            raise ValueError("Sequential needs at least one layer.")
        super().__init__(named)
        self.layers = tuple(layer for _, layer in named)
        self._takes_mask = tuple(_accepts_mask(layer) for layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x, mask=None) -> np.ndarray:
        for layer, takes_mask in zip(self.layers, self._takes_mask, strict=True):
            x = layer(x, mask=mask) if takes_mask else layer(x)
        return x

    def backward(self, dy) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy
