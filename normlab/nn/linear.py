"""The affine map of the last axis, ``y = x @ weight + bias`` (torch's ``nn.Linear``)."""

from __future__ import annotations

import numpy as np

from normlab.module import (
    Module,
    as_float_array,
    as_generator,
    check_mask,
    check_positive_int,
    float_dtype,
)

__all__ = ["Linear"]


class Linear(Module):
    """Affine map of the last axis: ``y = x @ weight + bias``.

    .. math::  y = x W + b, \\qquad
        \\frac{\\partial L}{\\partial x} = \\frac{\\partial L}{\\partial y} W^\\top, \\quad
        \\frac{\\partial L}{\\partial W} = x^\\top \\frac{\\partial L}{\\partial y}, \\quad
        \\frac{\\partial L}{\\partial b} = \\sum \\frac{\\partial L}{\\partial y}

    with every leading axis flattened into the rows of ``x``. ``weight`` has
    shape (in_features, out_features), so ``x @ weight`` reads left to right;
    PyTorch stores the transpose: :meth:`state_dict` and :meth:`load_state_dict`
    convert, so ``state_dict()["weight"]`` has torch's shape (out_features, in_features).

    Parameters
    ----------
    in_features, out_features : int
    rng : np.random.Generator or int seed
        The only source of randomness of the initialization.
    bias : bool, default True
    init : ``"he"``, ``"glorot"`` or ``"torch"``, default ``"he"``
        He: ``weight ~ N(0, 2 / in_features)``, which keeps the mean square of
        the activations constant through ReLU layers (He et al., 2015).
        Glorot: ``weight ~ U(-a, a)``, ``a = sqrt(6 / (in + out))``, for layers
        not followed by a ReLU (Glorot & Bengio, 2010). With both the bias starts at 0.
        torch: ``nn.Linear``'s default, weight and bias ``~ U(-a, a)`` with
        ``a = 1 / sqrt(in_features)``.
    dtype : floating dtype, default float32 (the parameters').

    Shape
    -----
    Input (*, in_features); output (*, out_features). With a ``mask`` of shape
    ``x.shape[:-1]`` the outputs at masked positions are exactly 0, so padding
    stays 0 through a network, and nothing flows back from them.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Linear(3, 2, rng=0)
    >>> layer(np.ones((4, 5, 3), dtype=np.float32)).shape
    (4, 5, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rng,
        bias: bool = True,
        init: str = "he",
        dtype=np.float32,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "Linear")
        self.out_features = check_positive_int(out_features, "out_features", "Linear")
        rng = as_generator(rng, "Linear")
        self.dtype = float_dtype(dtype, "Linear")
        shape = (self.in_features, self.out_features)
        if init == "he":
            weight = rng.normal(0.0, np.sqrt(2.0 / self.in_features), size=shape)
        elif init == "glorot":
            limit = np.sqrt(6.0 / (self.in_features + self.out_features))
            weight = rng.uniform(-limit, limit, size=shape)
        elif init == "torch":
            limit = 1.0 / np.sqrt(self.in_features)
            weight = rng.uniform(-limit, limit, size=shape)
        else:
            raise ValueError(f"Linear: init must be 'he', 'glorot' or 'torch', got {init!r}.")
        self.init = init
        self.add_param("weight", weight.astype(self.dtype))
        if bias:
            if init == "torch":
                initial_bias = rng.uniform(-limit, limit, size=self.out_features)
            else:
                initial_bias = np.zeros(self.out_features)
            self.add_param("bias", initial_bias.astype(self.dtype))
        self._cache = None

    def __repr__(self) -> str:
        return (
            f"Linear({self.in_features}, {self.out_features}, "
            f"bias={'bias' in self.params}, init={self.init!r})"
        )

    def torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        return value.T if name == "weight" else value  # torch keeps (out_features, in_features)

    def from_torch_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        return value.T if name == "weight" else value

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "Linear")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expected the last dimension to be in_features={self.in_features}, "
                f"got input shape {x.shape}."
            )
        mask = check_mask(mask, x.shape, "Linear")
        self.check_params()
        rows = x.reshape(-1, self.in_features)  # (M, in), M = product of the leading axes
        y = rows @ self.params["weight"]  # (M, out): one BLAS call for all tokens
        if "bias" in self.params:
            y += self.params["bias"]
        y = y.reshape(*x.shape[:-1], self.out_features)  # (*, out)
        if mask is not None:
            y *= mask[..., None]
        self._cache = (rows, mask, x.shape)
        return y

    def backward(self, dy) -> np.ndarray:
        rows, mask, input_shape = self.require_cache()
        dy = np.asarray(dy)
        if mask is not None:
            dy = dy * mask[..., None]  # masked outputs are constants
        dy_rows = dy.reshape(-1, self.out_features)  # (M, out)
        weight = self.params["weight"]
        self.set_grad("weight", rows.T @ dy_rows)  # (in, out)
        if "bias" in self.params:
            self.set_grad("bias", dy_rows.sum(axis=0))  # (out,)
        return (dy_rows @ weight.T).reshape(input_shape)  # (*, in)
