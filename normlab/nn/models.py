"""The models the experiments train: an MLP and a small sequence model."""

from __future__ import annotations

import numpy as np

from normlab.layers import NORM_KINDS, make_norm, norm_centers
from normlab.module import Container, Identity, as_float_array, as_generator, check_mask
from normlab.nn.activations import ReLU, Tanh
from normlab.nn.containers import Sequential
from normlab.nn.linear import Linear
from normlab.nn.mixing import MixingBlock

__all__ = ["MLP", "SequenceModel"]


_ACTIVATIONS = {"relu": (ReLU, "he"), "tanh": (Tanh, "glorot")}


class MLP(Sequential):
    """``depth`` blocks of ``Linear -> norm -> activation``, then a ``Linear`` head.

    The normalization sits between the affine map and the nonlinearity, where
    Ioffe & Szegedy (2015) put BatchNorm: ``z = act(norm(x W))``. Before a
    centering norm (batch, layer, group) the Linear layer has no bias: the norm
    subtracts the mean, so a bias would be cancelled exactly and only waste
    optimizer steps (Ioffe & Szegedy, §3.2). With ``norm="none"`` or ``"rms"``
    (which does not center) it has one.

    The layer indices are the same for every ``norm`` (``"none"`` puts an
    :class:`Identity` in the norm's place), so parameter names line up across
    a sweep: for ``depth=2``, ``0``/``3`` are the hidden Linear layers,
    ``1``/``4`` the norms, ``2``/``5`` the activations and ``6`` the head.

    Parameters
    ----------
    in_features : int
    hidden : int or sequence of int
        Width of every hidden layer, or one width per hidden layer.
    out_features : int
    norm : str, default ``"batch"``; see :func:`normlab.make_norm`.
    rng : np.random.Generator or int seed, for every initialization.
    depth : int, default 2 (when ``hidden`` is an int): the number of hidden blocks.
    activation : ``"relu"`` (He init) or ``"tanh"`` (Glorot init).
    norm_kwargs : dict, optional, passed to :func:`normlab.make_norm` (e.g. ``{"momentum": None}``).
    dtype : floating dtype, default float32.

    Shape
    -----
    Input (N, in_features); output logits (N, out_features).

    Examples
    --------
    >>> model = MLP(64, 32, 10, norm="batch", rng=0)
    >>> [type(layer).__name__ for layer in model]
    ['Linear', 'BatchNorm', 'ReLU', 'Linear', 'BatchNorm', 'ReLU', 'Linear']
    """

    def __init__(
        self,
        in_features: int,
        hidden,
        out_features: int,
        norm: str = "batch",
        *,
        rng,
        depth: int | None = None,
        activation: str = "relu",
        norm_kwargs: dict | None = None,
        dtype=np.float32,
    ) -> None:
        if isinstance(hidden, (int, np.integer)):
            widths = [int(hidden)] * (2 if depth is None else depth)
        else:
            widths = [int(width) for width in hidden]
            if depth is not None and depth != len(widths):
                raise ValueError(f"MLP: depth={depth} but {len(widths)} hidden widths given.")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {tuple(_ACTIVATIONS)}.")
        if norm not in NORM_KINDS:
            raise ValueError(f"MLP: norm must be one of {tuple(NORM_KINDS)}, got {norm!r}.")
        rng = as_generator(rng, "MLP")
        activation_class, init = _ACTIVATIONS[activation]
        norm_kwargs = {"dtype": dtype, **(norm_kwargs or {})}
        layers = []
        width_in = in_features
        for width in widths:
            layers.append(
                Linear(
                    width_in,
                    width,
                    rng=rng,
                    bias=not norm_centers(norm),
                    init=init,
                    dtype=dtype,
                )
            )
            layers.append(make_norm(norm, width, **norm_kwargs))
            layers.append(activation_class())
            width_in = width
        layers.append(Linear(width_in, out_features, rng=rng, init="glorot", dtype=dtype))
        super().__init__(*layers)
        self.norm = norm


_READOUTS = ("token", "mean", "last")


class SequenceModel(Container):
    """A small sequence model over (N, T, D) with a normalization in every block.

    ::

        h = embed(x)                                   # (N, T, d_model), per token
        for each block:  h = h + proj(relu(mix(norm(h))))   # see MixingBlock
        h = final_norm(h)
        logits = head(h)            readout="token": (N, T, out_features)
        logits = head(pool(h))      readout="mean" or "last": (N, out_features)

    The only layer that looks across time is :class:`MeanMixing`, which
    averages over the prefix (``causal=True``) or the whole sequence. With
    ``causal=True`` and ``readout="token"`` the output at ``t`` depends only on
    inputs at ``s <= t`` -- provided the norm itself does not look across time:
    LayerNorm and RMSNorm never do, BatchNorm does in training mode (its batch
    statistics include later tokens) but not in eval mode, and GroupNorm does
    (it averages over the time axis of each sample). That leak is what the
    ``causal_leak`` experiment shows.

    Padding (``mask`` False) never enters a mean; padded positions of the
    residual stream stay 0 and receive no gradient.

    Parameters
    ----------
    in_features : int, D of the input.
    d_model : int, width of the residual stream.
    out_features : int, number of classes.
    rng : np.random.Generator or int seed.
    norm : str, default ``"layer"``; see :func:`normlab.make_norm`.
    num_blocks : int, default 2.
    hidden : int, optional, width inside a block (default ``2 * d_model``).
    causal : bool, default False.
    readout : ``"token"`` (per-token logits, default), ``"mean"`` (mean over the
        real tokens) or ``"last"`` (the last real token; natural with ``causal``).
    mask_norm : bool, default True
        Give the mask to the norms; False makes them count padding as data
        (see :class:`MixingBlock`).
    final_norm : bool, default True, a norm of the same kind before the head.
    norm_kwargs : dict, optional, for :func:`normlab.make_norm`.
    dtype : floating dtype, default float32.

    Shape
    -----
    Input (N, T, in_features), mask (N, T) with True = real token; output
    (N, T, out_features) for ``readout="token"`` (0 where masked), else (N, out_features).

    Examples
    --------
    >>> import numpy as np
    >>> model = SequenceModel(3, 16, 2, rng=0, norm="rms", causal=True)
    >>> x = np.zeros((4, 7, 3), dtype=np.float32)
    >>> mask = np.arange(7) < np.array([[7], [5], [3], [6]])
    >>> model(x, mask=mask).shape
    (4, 7, 2)
    """

    def __init__(
        self,
        in_features: int,
        d_model: int,
        out_features: int,
        *,
        rng,
        norm: str = "layer",
        num_blocks: int = 2,
        hidden: int | None = None,
        causal: bool = False,
        readout: str = "token",
        mask_norm: bool = True,
        final_norm: bool = True,
        norm_kwargs: dict | None = None,
        dtype=np.float32,
    ) -> None:
        if readout not in _READOUTS:
            raise ValueError(f"SequenceModel: readout must be one of {_READOUTS}, got {readout!r}.")
        if norm not in NORM_KINDS:
            raise ValueError(
                f"SequenceModel: norm must be one of {tuple(NORM_KINDS)}, got {norm!r}."
            )
        rng = as_generator(rng, "SequenceModel")
        hidden = 2 * d_model if hidden is None else hidden
        self.in_features, self.d_model, self.out_features = in_features, d_model, out_features
        self.causal, self.readout, self.mask_norm = bool(causal), readout, bool(mask_norm)
        self.norm_kind = norm
        self.embed = Linear(in_features, d_model, rng=rng, init="glorot", dtype=dtype)
        self.blocks = tuple(
            MixingBlock(
                d_model,
                hidden,
                norm,
                causal=causal,
                rng=rng,
                mask_norm=mask_norm,
                norm_kwargs=norm_kwargs,
                dtype=dtype,
            )
            for _ in range(num_blocks)
        )
        if final_norm:
            self.final_norm = make_norm(norm, d_model, **{"dtype": dtype, **(norm_kwargs or {})})
        else:
            self.final_norm = Identity()
        self.head = Linear(d_model, out_features, rng=rng, init="glorot", dtype=dtype)
        named = [("embed", self.embed)]
        named += [(f"block{index}", block) for index, block in enumerate(self.blocks)]
        named += [("norm", self.final_norm), ("head", self.head)]
        super().__init__(named)
        self._cache = None

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "SequenceModel")
        if x.ndim != 3:
            raise ValueError(
                f"SequenceModel expects input (N, T, D), got shape {x.shape}; "
                "for one sequence use x[None]."
            )
        mask = check_mask(mask, x.shape, "SequenceModel")
        norm_mask = mask if self.mask_norm else None
        h = self.embed(x, mask=mask)  # (N, T, d_model), 0 at padding
        for block in self.blocks:
            h = block(h, mask=mask)  # (N, T, d_model)
        h = self.final_norm(h, mask=norm_mask)  # (N, T, d_model)
        batch, length, _ = h.shape
        if self.readout == "token":
            self._cache = (h.shape, None)
            return self.head(h, mask=mask)  # (N, T, C)
        if self.readout == "mean":
            if mask is None:
                pool_weights = np.full((batch, length, 1), 1.0 / length, dtype=h.dtype)
            else:
                counts = np.maximum(mask.sum(axis=1), 1)  # (N,)
                pool_weights = (mask / counts[:, None])[..., None].astype(h.dtype)  # (N, T, 1)
            pooled = np.einsum("ntd,nt->nd", h, pool_weights[..., 0])  # (N, d_model)
            self._cache = (h.shape, pool_weights)
        else:  # "last": the last real token of each sequence
            if mask is None:
                last = np.full(batch, length - 1)
            else:
                if not mask.any(axis=1).all():
                    raise ValueError("SequenceModel: readout='last' needs >= 1 real token per row.")
                last = length - 1 - np.argmax(mask[:, ::-1], axis=1)  # (N,)
            pooled = h[np.arange(batch), last]  # (N, d_model)
            self._cache = (h.shape, last)
        return self.head(pooled)  # (N, C)

    def backward(self, dy) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("SequenceModel.backward was called before any forward.")
        h_shape, pooling = self._cache
        dh = self.head.backward(dy)  # (N, T, d_model) or (N, d_model)
        if self.readout == "mean":
            dh = dh[:, None, :] * pooling  # (N, T, d_model)
        elif self.readout == "last":
            pooled_grad = dh
            dh = np.zeros(h_shape, dtype=pooled_grad.dtype)
            dh[np.arange(h_shape[0]), pooling] = pooled_grad
        dh = self.final_norm.backward(dh)
        for block in reversed(self.blocks):
            dh = block.backward(dh)
        return self.embed.backward(dh)  # (N, T, in_features)
