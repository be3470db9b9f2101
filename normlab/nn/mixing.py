"""Token mixing by running means, and the residual block built on it (the toy sequence model)."""

from __future__ import annotations

import numpy as np

from normlab.layers import make_norm
from normlab.module import (
    Container,
    Module,
    as_float_array,
    as_generator,
    check_mask,
    check_positive_int,
    float_dtype,
)
from normlab.nn.activations import ReLU
from normlab.nn.linear import Linear

__all__ = ["MeanMixing", "MixingBlock"]


def _reverse_cumsum(a: np.ndarray, axis: int) -> np.ndarray:
    """``out[t] = sum(a[s] for s >= t)`` along ``axis``: the adjoint of ``cumsum``."""
    flipped = np.flip(a, axis=axis)
    return np.flip(np.cumsum(flipped, axis=axis), axis=axis)


class MeanMixing(Module):
    """Token mixing by averaging: each token sees itself and the mean of the others.

    .. math::

        c_t = \\frac{\\sum_{s \\in S(t)} m_s u_s}{\\sum_{s \\in S(t)} m_s}, \\qquad
        y_t = m_t \\,( u_t W_{self} + c_t W_{context} + b )

    where ``m`` is the mask (1 for real tokens) and ``S(t) = {s <= t}`` when
    ``causal`` (a running mean over the prefix) or all positions otherwise (a
    mean over the sequence). Padding takes no part in any mean. A mean, unlike
    a fixed-width convolution, is defined for any length, so a model trained on
    short sequences can be run on long ones.

    Backward: with :math:`g_t = \\partial L/\\partial c_t = m_t\\, dy_t W_{context}^\\top`,

    .. math::

        \\frac{\\partial L}{\\partial u_s} = m_s\\, dy_s W_{self}^\\top
            + m_s \\sum_{t:\\, s \\in S(t)} \\frac{g_t}{n_t}

    a reversed cumulative sum over ``t >= s`` in the causal case.

    Parameters
    ----------
    in_features, out_features : int
    causal : bool
        Average over the prefix (True) or the whole sequence (False).
    rng : np.random.Generator or int seed.
    init : ``"he"`` (default) or ``"glorot"``, with fan-in ``2 * in_features``
        (the two inputs, token and context, are summed).
    dtype : floating dtype, default float32.

    Parameters (learned): ``weight_self`` and ``weight_context`` of shape
    (in_features, out_features), ``bias`` (out_features,).

    Shape
    -----
    Input (N, T, in_features), mask (N, T); output (N, T, out_features), 0 where masked.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        causal: bool,
        rng,
        init: str = "he",
        dtype=np.float32,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "MeanMixing")
        self.out_features = check_positive_int(out_features, "out_features", "MeanMixing")
        self.causal = bool(causal)
        rng = as_generator(rng, "MeanMixing")
        self.dtype = float_dtype(dtype, "MeanMixing")
        fan_in = 2 * self.in_features
        shape = (self.in_features, self.out_features)
        for name in ("weight_self", "weight_context"):
            if init == "he":
                weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
            elif init == "glorot":
                limit = np.sqrt(6.0 / (fan_in + self.out_features))
                weight = rng.uniform(-limit, limit, size=shape)
            else:
                raise ValueError(f"MeanMixing: init must be 'he' or 'glorot', got {init!r}.")
            self.add_param(name, weight.astype(self.dtype))
        self.add_param("bias", np.zeros(self.out_features, dtype=self.dtype))
        self._cache = None

    def __repr__(self) -> str:
        return f"MeanMixing({self.in_features}, {self.out_features}, causal={self.causal})"

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "MeanMixing")
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"MeanMixing expects input (N, T, {self.in_features}), got shape {x.shape}."
            )
        mask = check_mask(mask, x.shape, "MeanMixing")
        self.check_params()
        batch, length, features = x.shape
        dtype = x.dtype
        if mask is None:
            weights = None
            masked = x
        else:
            weights = mask[..., None].astype(dtype)  # (N, T, 1): 1 real, 0 padding
            masked = x * weights  # (N, T, D)
        if self.causal:
            if weights is None:
                counts = np.arange(1, length + 1, dtype=dtype)[None, :, None]  # (1, T, 1)
            else:
                counts = np.maximum(np.cumsum(weights, axis=1), 1)  # (N, T, 1)
            context = np.cumsum(masked, axis=1) / counts  # (N, T, D): mean of s <= t
        else:
            if weights is None:
                counts = np.full((batch, 1, 1), length, dtype=dtype)
            else:
                counts = np.maximum(weights.sum(axis=1, keepdims=True), 1)  # (N, 1, 1)
            context = masked.sum(axis=1, keepdims=True) / counts  # (N, 1, D): one per sequence
        rows = x.reshape(-1, features)  # (N*T, D)
        y = (rows @ self.params["weight_self"]).reshape(batch, length, self.out_features)
        y += context @ self.params["weight_context"]  # (N, T or 1, H) broadcasts over T
        y += self.params["bias"]
        if weights is not None:
            y *= weights
        self._cache = (rows, context, counts, weights, x.shape)
        return y  # (N, T, H)

    def backward(self, dy) -> np.ndarray:
        rows, context, counts, weights, input_shape = self.require_cache()
        features = input_shape[-1]
        dy = np.asarray(dy)
        if weights is not None:
            dy = dy * weights  # (N, T, H)
        dy_rows = dy.reshape(-1, self.out_features)  # (N*T, H)
        weight_self, weight_context = self.params["weight_self"], self.params["weight_context"]
        self.set_grad("weight_self", rows.T @ dy_rows)  # (D, H)
        self.set_grad("bias", dy_rows.sum(axis=0))  # (H,)
        dx = (dy_rows @ weight_self.T).reshape(input_shape)  # (N, T, D)
        if self.causal:
            context_rows = context.reshape(-1, features)  # (N*T, D)
            dweight_context = context_rows.T @ dy_rows  # (D, H)
            dcontext = (dy_rows @ weight_context.T).reshape(input_shape)  # (N, T, D)
            dmasked = _reverse_cumsum(dcontext / counts, axis=1)  # (N, T, D): sum over t >= s
        else:
            dy_sum = dy.sum(axis=1)  # (N, H): the context is shared by every t
            dweight_context = context[:, 0, :].T @ dy_sum  # (D, H)
            dmasked = (dy_sum @ weight_context.T)[:, None, :] / counts  # (N, 1, D)
        self.set_grad("weight_context", dweight_context)
        if weights is not None:
            dmasked = dmasked * weights  # padding did not enter the mean
        dx += dmasked  # broadcasts (N, 1, D) in the non-causal case
        return dx


class MixingBlock(Container):
    """One residual block: ``h + proj(relu(mix(norm(h))))``.

    .. math::

        u = \\mathrm{norm}(h), \\quad
        z = \\mathrm{ReLU}(\\mathrm{MeanMixing}(u)), \\quad
        h' = h + z W_{proj} + b_{proj}

    The normalization is "pre-norm" (inside the residual branch, as in GPT-2),
    so the residual stream ``h`` itself is never normalized and the identity
    path carries the gradient straight through.

    Parameters
    ----------
    d_model : int, width of the residual stream.
    hidden : int, width of the mixing layer's output.
    norm : str, see :func:`normlab.make_norm`.
    causal : bool, see :class:`MeanMixing`.
    rng : np.random.Generator or int seed.
    mask_norm : bool, default True
        Pass the padding mask to the norm. With False the norm treats padded
        tokens (zeros in the residual stream) as data: BatchNorm's statistics
        then depend on how much padding the batch has. Mixing always uses the mask.
    norm_kwargs : dict, optional, for :func:`normlab.make_norm`.
    dtype : floating dtype, default float32.

    Children: ``norm``, ``mix``, ``act``, ``proj`` (parameter names
    ``"norm.weight"``, ``"mix.weight_self"``, ``"proj.bias"``, ...).
    """

    def __init__(
        self,
        d_model: int,
        hidden: int,
        norm: str,
        *,
        causal: bool,
        rng,
        mask_norm: bool = True,
        norm_kwargs: dict | None = None,
        dtype=np.float32,
    ) -> None:
        rng = as_generator(rng, "MixingBlock")
        self.norm = make_norm(norm, d_model, **{"dtype": dtype, **(norm_kwargs or {})})
        self.mix = MeanMixing(d_model, hidden, causal=causal, rng=rng, dtype=dtype)
        self.act = ReLU()
        self.proj = Linear(hidden, d_model, rng=rng, init="glorot", dtype=dtype)
        self.mask_norm = bool(mask_norm)
        super().__init__(
            [("norm", self.norm), ("mix", self.mix), ("act", self.act), ("proj", self.proj)]
        )

    def forward(self, h, mask=None) -> np.ndarray:
        u = self.norm(h, mask=mask if self.mask_norm else None)  # (N, T, D)
        z = self.act(self.mix(u, mask=mask))  # (N, T, H)
        return h + self.proj(z, mask=mask)  # (N, T, D)

    def backward(self, dy) -> np.ndarray:
        dz = self.act.backward(self.proj.backward(dy))  # (N, T, H)
        du = self.mix.backward(dz)  # (N, T, D)
        return dy + self.norm.backward(du)  # identity path + residual branch
