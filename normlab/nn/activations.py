"""Elementwise nonlinearities: ReLU and Tanh (no parameters)."""

from __future__ import annotations

import numpy as np

from normlab.module import Module, as_float_array

__all__ = ["ReLU", "Tanh"]


class ReLU(Module):
    """``y = max(x, 0)``; ``dx = dy · [x > 0]``. No parameters.

    ``mask`` is accepted and ignored: ReLU maps zero padding to zero.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "ReLU()"

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "ReLU")
        self._cache = x > 0  # (shape of x), bool
        return np.maximum(x, x.dtype.type(0))  # NaN stays NaN, as in torch

    def backward(self, dy) -> np.ndarray:
        positive = self.require_cache()
        # dy · [x > 0] as a product: np.where branches on every element, which is slow when
        # the mask has no pattern (about half of the units are off, in no order).
        return np.multiply(dy, positive)


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``. No parameters; ``mask`` is ignored."""

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "Tanh()"

    def forward(self, x, mask=None) -> np.ndarray:
        y = np.tanh(as_float_array(x, "Tanh"))
        self._cache = y
        return y

    def backward(self, dy) -> np.ndarray:
        y = self.require_cache()
        return dy * (1 - y * y)
