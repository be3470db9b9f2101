"""One transformer block: self-attention and a feed-forward network, each in a residual branch."""

from __future__ import annotations

import numpy as np

from normlab.layers import NORM_KINDS, make_norm
from normlab.module import Container, as_float_array, as_generator, check_mask
from normlab.nn.activations import GELU, ReLU
from normlab.nn.attention import MultiheadAttention
from normlab.nn.linear import Linear

__all__ = ["TransformerEncoderLayer"]

#: The feed-forward activations torch's TransformerEncoderLayer takes by name.
_FEEDFORWARD_ACTIVATIONS = {"relu": ReLU, "gelu": GELU}


class TransformerEncoderLayer(Container):
    """Self-attention then a feed-forward network, each with a residual connection and a norm.

    ``norm_first`` decides where the two normalizations sit. With ``norm_first=False``
    (Post-LN, the original transformer of Vaswani et al., 2017) a norm follows each
    residual addition; with ``norm_first=True`` (Pre-LN, GPT-2's) each branch normalizes
    its own input and the residual stream itself is never normalized:

    .. math::

        \\text{Post-LN:}\\quad h = \\mathrm{norm}_1(x + \\mathrm{SA}(x)), \\qquad
            y = \\mathrm{norm}_2(h + \\mathrm{FF}(h))

        \\text{Pre-LN:}\\quad h = x + \\mathrm{SA}(\\mathrm{norm}_1(x)), \\qquad
            y = h + \\mathrm{FF}(\\mathrm{norm}_2(h))

    with ``SA`` the :class:`~normlab.nn.MultiheadAttention` and
    ``FF(u) = act(u W_1 + b_1) W_2 + b_2``. In Pre-LN the identity path carries the
    gradient from the output straight to the input; in Post-LN it passes through both
    norms. Xiong et al. (2020) trace Post-LN's need for a learning-rate warm-up to this:
    at initialization its gradients near the output are large, Pre-LN's are not.

    With ``norm="layer"`` this is the computation of torch's
    ``TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0,
    activation=activation, layer_norm_eps=layer_norm_eps, batch_first=True,
    norm_first=norm_first, bias=bias)``, called with ``src_key_padding_mask=~mask`` and,
    when ``causal``, the causal ``src_mask``; the state_dict has torch's names
    (``self_attn.in_proj_weight``, ``linear1.weight``, ``norm1.weight``, ...).

    Parameters
    ----------
    d_model : int, D, the width of the residual stream.
    nhead : int, the number of attention heads (must divide ``d_model``).
    dim_feedforward : int, default 2048 (torch's), the hidden width of ``FF``.
    activation : ``"relu"`` (default) or ``"gelu"`` (exact, erf-based, as torch's default GELU).
    norm_first : bool, default False: Pre-LN (True) or Post-LN (False), see above.
    norm : str, default ``"layer"``: any kind of :func:`normlab.make_norm` -- ``"layer"``,
        ``"rms"``, ``"batch"`` (statistics over the real tokens of the batch), ``"group"``,
        ``"instance"`` (these two average over time, so they see the future even when
        ``causal``), ``"none"``. Both norms get ``eps=layer_norm_eps`` and learned γ and β.
    layer_norm_eps : float, default 1e-5, the eps of both norms.
    bias : bool, default True: biases in the attention, the feed-forward layers and the norms.
    causal : bool, default False: query ``t`` attends to keys ``s <= t`` only.
    norm_kwargs : dict, optional, more options for :func:`normlab.make_norm`
        (e.g. ``{"momentum": 0.01}`` for BatchNorm).
    mask_norm : bool, default True: give the padding mask to the norms. With False they
        take the padded positions (zeros) as data: BatchNorm's statistics, and GroupNorm's
        and InstanceNorm's, then count them, the mistake the ``lm_batch_composition``
        experiment measures (the norms' outputs at padding are still set to 0).
        LayerNorm and RMSNorm give the same outputs either way.
    rng : np.random.Generator or int seed, for every initialization (torch's: see
        :class:`~normlab.nn.MultiheadAttention`; ``linear1``/``linear2`` as ``nn.Linear``).
    dtype : floating dtype, default float32.

    Shape
    -----
    Input (N, T, D), mask (N, T) with True = real token (any pattern); output (N, T, D).
    Padding is exactly 0 in the output and in the input gradient, whatever the input held
    there, and a gradient arriving at a padded output is ignored.

    Examples
    --------
    >>> import numpy as np
    >>> block = TransformerEncoderLayer(16, 4, 32, norm_first=True, causal=True, rng=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 6, 16)).astype(np.float32)
    >>> mask = np.array([[True] * 6, [True, True, False, True, True, False]])
    >>> y = block(x, mask=mask)
    >>> y.shape, float(np.abs(y[1, 2]).max())
    ((2, 6, 16), 0.0)
    >>> sorted(block.state_dict())[:3]
    ['linear1.bias', 'linear1.weight', 'linear2.bias']
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        *,
        activation: str = "relu",
        norm_first: bool = False,
        norm: str = "layer",
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        causal: bool = False,
        norm_kwargs: dict | None = None,
        mask_norm: bool = True,
        rng,
        dtype=np.float32,
    ) -> None:
        who = "TransformerEncoderLayer"
        if activation not in _FEEDFORWARD_ACTIVATIONS:
            raise ValueError(
                f"{who}: activation must be one of {tuple(_FEEDFORWARD_ACTIVATIONS)}, "
                f"got {activation!r}."
            )
        if norm not in NORM_KINDS:
            raise ValueError(f"{who}: norm must be one of {tuple(NORM_KINDS)}, got {norm!r}.")
        rng = as_generator(rng, who)
        norm_options = {
            "eps": layer_norm_eps,
            "bias": bias,
            "affine": True,
            "dtype": dtype,
            **(norm_kwargs or {}),
        }
        linear_options = {"rng": rng, "bias": bias, "init": "torch", "dtype": dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, bias, causal=causal, rng=rng, dtype=dtype
        )
        self.linear1 = Linear(d_model, dim_feedforward, **linear_options)
        self.linear2 = Linear(dim_feedforward, d_model, **linear_options)
        self.norm1 = make_norm(norm, d_model, **norm_options)
        self.norm2 = make_norm(norm, d_model, **norm_options)
        self.activation = _FEEDFORWARD_ACTIVATIONS[activation]()
        super().__init__(
            [
                ("self_attn", self.self_attn),
                ("linear1", self.linear1),
                ("linear2", self.linear2),
                ("norm1", self.norm1),
                ("norm2", self.norm2),
            ]
        )
        self.d_model, self.nhead, self.dim_feedforward = d_model, nhead, dim_feedforward
        self.activation_name, self.norm_kind = activation, norm
        self.norm_first, self.causal = bool(norm_first), bool(causal)
        self.mask_norm = bool(mask_norm)

    def __repr__(self) -> str:
        placement = "Pre-LN" if self.norm_first else "Post-LN"
        return (
            f"TransformerEncoderLayer({self.d_model}, {self.nhead}, {self.dim_feedforward}, "
            f"activation={self.activation_name!r}, norm={self.norm_kind!r} ({placement}), "
            f"causal={self.causal})"
        )

    def _norm(self, norm, x, mask) -> np.ndarray:
        if self.mask_norm or mask is None:
            return norm(x, mask=mask)
        return norm(x) * mask[..., None]  # statistics over every position, padding set to 0

    def _norm_backward(self, norm, dy, mask) -> np.ndarray:
        if self.mask_norm or mask is None:
            return norm.backward(dy)  # 0 at padding already
        return norm.backward(dy * mask[..., None]) * mask[..., None]

    def _feedforward(self, u, mask) -> np.ndarray:
        # u is a norm's output, exactly 0 at padding, so the hidden units there are act(b1):
        # finite, and cut off by linear2's mask (output 0, no gradient back), which costs
        # less than masking the F-wide hidden layer as well.
        hidden = self.activation(self.linear1(u))  # (N, T, F)
        return self.linear2(hidden, mask=mask)  # (N, T, D), 0 at padding

    def _feedforward_backward(self, dy) -> np.ndarray:
        return self.linear1.backward(self.activation.backward(self.linear2.backward(dy)))

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "TransformerEncoderLayer")
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"TransformerEncoderLayer expects input (N, T, d_model={self.d_model}), got "
                f"shape {x.shape}; for one sequence use x[None]."
            )
        mask = check_mask(mask, x.shape, "TransformerEncoderLayer")
        if mask is not None:
            x = np.where(mask[..., None], x, x.dtype.type(0))  # padding is 0 from here on
        norm1, norm2 = self.norm1, self.norm2
        if self.norm_first:  # Pre-LN
            h = x + self.self_attn(self._norm(norm1, x, mask), mask=mask)
            y = h + self._feedforward(self._norm(norm2, h, mask), mask)
        else:  # Post-LN
            h = self._norm(norm1, x + self.self_attn(x, mask=mask), mask)
            y = self._norm(norm2, h + self._feedforward(h, mask), mask)
        self._cache = (mask, x.shape)
        return y

    def backward(self, dy) -> np.ndarray:
        mask, shape = self.require_cache()
        dy = as_float_array(dy, "TransformerEncoderLayer.backward", what="dy (upstream gradient)")
        if dy.shape != shape:
            raise ValueError(
                f"TransformerEncoderLayer.backward: dy must have the shape of the last output "
                f"{shape}, got {dy.shape}."
            )
        if mask is not None:
            dy = np.where(mask[..., None], dy, dy.dtype.type(0))  # padded outputs are constants
        norm1, norm2 = self.norm1, self.norm2
        if self.norm_first:  # y = h + FF(norm2(h)), h = x + SA(norm1(x))
            dh = dy + self._norm_backward(norm2, self._feedforward_backward(dy), mask)
            return dh + self._norm_backward(norm1, self.self_attn.backward(dh), mask)
        # y = norm2(h + FF(h)), h = norm1(x + SA(x))
        dsum2 = self._norm_backward(norm2, dy, mask)
        dh = dsum2 + self._feedforward_backward(dsum2)
        dsum1 = self._norm_backward(norm1, dh, mask)
        return dsum1 + self.self_attn.backward(dsum1)
