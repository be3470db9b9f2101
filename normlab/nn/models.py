"""The models the experiments train: an MLP, a small sequence model, a small CNN and a
character-level transformer language model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from normlab.layers import (
    NORM_KINDS,
    make_norm,
)
from normlab.module import (
    Container,
    Identity,
    Module,
    as_float_array,
    as_generator,
    check_mask,
    check_positive_int,
)
from normlab.nn.activations import ReLU, Tanh
from normlab.nn.containers import Sequential
from normlab.nn.conv import Conv2d, GlobalAvgPool2d, MaxPool2d
from normlab.nn.embedding import Embedding, check_ids_mask
from normlab.nn.linear import Linear
from normlab.nn.losses import softmax_cross_entropy
from normlab.nn.mixing import MixingBlock
from normlab.nn.transformer import TransformerEncoderLayer

__all__ = [
    "CNN",
    "MLP",
    "POSITION_SCHEMES",
    "CNNConfig",
    "SequenceModel",
    "TransformerLM",
    "TransformerLMConfig",
    "sinusoidal_positions",
]


_ACTIVATIONS = {"relu": (ReLU, "he"), "tanh": (Tanh, "glorot")}


class MLP(Sequential):
    """``depth`` blocks of ``Linear -> norm -> activation``, then a ``Linear`` head.

    The normalization sits between the affine map and the nonlinearity, where
    Ioffe & Szegedy (2015) put BatchNorm: ``z = act(norm(x W))``. Before a norm
    that cancels a per-feature bias exactly (BatchNorm, Batch Renorm: their mean is
    over each feature's own values; :attr:`~normlab.layers.Norm.cancels_feature_bias`)
    the Linear layer has no bias, which would only waste optimizer steps (Ioffe &
    Szegedy, §3.2). Before LayerNorm, RMSNorm, GroupNorm or no norm it has one: a mean
    over several features removes only their average bias.

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
            norm_layer = make_norm(norm, width, **norm_kwargs)  # draws nothing from rng
            bias = not norm_layer.cancels_feature_bias
            layers.append(Linear(width_in, width, rng=rng, bias=bias, init=init, dtype=dtype))
            layers.append(norm_layer)
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


# ---------------------------------------------------------------------------
# A small convolutional network
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CNNConfig:
    """The shape of a :class:`CNN` apart from its normalization (the axis experiments sweep).

    An experiment's Config can hold one (``model: CNNConfig = CNNConfig(widths=(8, 16))``)
    and add :meth:`to_dict` to every run, so the architecture is part of each run's cache
    key; :meth:`build` makes the network. Construction checks the values (ValueError).
    """

    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    pool: bool = True

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "kernel_size"):
            check_positive_int(getattr(self, name), name, "CNNConfig")
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"CNNConfig: kernel_size must be odd, so that padding kernel_size // 2 keeps "
                f"H and W, got {self.kernel_size}."
            )
        if not isinstance(self.widths, tuple) or not self.widths:
            raise ValueError(
                f"CNNConfig: widths must be a non-empty tuple of channel counts, got "
                f"{self.widths!r}."
            )
        for width in self.widths:
            check_positive_int(width, f"every width (got {self.widths})", "CNNConfig")
        if not isinstance(self.pool, bool):
            raise ValueError(f"CNNConfig: pool must be True or False, got {self.pool!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def min_image_size(self) -> int:
        """The smallest H and W the network takes: each 2×2 pooling halves them."""
        return 2 ** len(self.widths) if self.pool else 1

    def build(self, norm: str = "batch", *, rng, norm_kwargs=None, dtype=np.float32) -> CNN:
        """The :class:`CNN` of this shape with normalization ``norm``."""
        return CNN(
            self.in_channels,
            self.num_classes,
            self.widths,
            norm,
            rng=rng,
            kernel_size=self.kernel_size,
            pool=self.pool,
            norm_kwargs=norm_kwargs,
            dtype=dtype,
        )


class CNN(Sequential):
    """Blocks of ``Conv2d -> norm -> ReLU -> MaxPool2d(2)``, a global average pool, a ``Linear``.

    ::

        for width in widths:   x = maxpool(relu(norm(conv3x3(x))))   # (N, H, W, width)
        logits = linear(global_avg_pool(x))                           # (N, num_classes)

    Every convolution keeps H and W (kernel 3, padding 1); each max pool halves them, so
    8×8 digits become 4×4 and 2×2 with the default two blocks. The global pool leaves no
    spatial axes for the head: the ``Linear`` sees (N, C) in normlab and in torch alike, so
    its weights move between them unchanged (a flatten would order the features
    channels-first in torch and channels-last here).

    The normalization sits between the convolution and the ReLU (Ioffe & Szegedy, 2015).
    ``norm`` takes every kind of :func:`normlab.make_norm`, applied at each position of
    the (N, H, W, C) activations:

    * ``"batch"``: one mean and variance per channel over N·H·W values, torch's
      ``BatchNorm2d``; ``"batch_renorm"``: the same, corrected towards the running
      statistics (:class:`normlab.BatchRenorm`; BatchNorm at its default limits);
    * ``"group"``: per image, over H·W and C/G channels (G from ``norm_kwargs["num_groups"]``
      or :func:`normlab.layers.default_num_groups`), torch's ``GroupNorm``;
    * ``"layer"``: per image *and position*, over its C channels, the channels-last
      LayerNorm of ConvNeXt (``nn.LayerNorm(C)`` on (N, H, W, C) in torch). A LayerNorm
      over all of (H, W, C) of each image is ``norm="group"`` with
      ``norm_kwargs={"num_groups": 1}`` (torch's ``GroupNorm(1, C)``, with per-channel γ/β);
    * ``"instance"``: per image and channel, over H·W, torch's ``InstanceNorm2d`` (without
      γ/β unless ``norm_kwargs={"affine": True}``, as torch);
    * ``"rms"``: like ``"layer"`` without subtracting the mean; ``"none"``: no norm.

    A convolution's bias is left out where the norm after it cancels it exactly: where the
    norm subtracts a mean taken within each channel (batch, instance, and group with one
    channel per group) the output is the same for any bias. LayerNorm over the channels and
    GroupNorm with wider groups subtract means across channels, which remove only the
    average of the biases, so the convolution keeps its bias there (``conv_bias`` decides
    instead when given).

    The layer indices are the same for every ``norm`` (``"none"`` puts an ``Identity``
    in the norm's place), so parameter names line up across a sweep: for two blocks,
    ``0``/``4`` are the convolutions, ``1``/``5`` the norms, ``2``/``6`` the ReLUs,
    ``3``/``7`` the pools, ``8`` the global pool and ``9`` the head. Without ``pool``
    the max pools are left out (and the indices shift).

    Parameters
    ----------
    in_channels : int, C of the input images.
    num_classes : int
    widths : sequence of int, default (16, 32): the channels of each block.
    norm : str, default ``"batch"``; see above and :func:`normlab.make_norm`.
    rng : np.random.Generator or int seed (keyword-only), for every initialization:
        the convolutions torch's default (:class:`Conv2d`), the head Glorot-uniform.
    kernel_size : odd int, default 3; padding ``kernel_size // 2`` keeps H and W.
    pool : bool, default True: a 2×2 max pool ends every block.
    conv_bias : bool, optional: give every convolution a bias (True) or none (False);
        by default, as described above.
    norm_kwargs : dict, optional, passed to :func:`normlab.make_norm`
        (``{"num_groups": 4}``, ``{"momentum": None}``, ...).
    dtype : floating dtype, default float32.

    Attributes
    ----------
    config : :class:`CNNConfig`, the shape given; ``norm``: the kind.

    Shape
    -----
    Input (N, H, W, in_channels) with H, W ≥ ``config.min_image_size`` (4 for two
    pooling blocks); output logits (N, num_classes). No padding mask.

    Examples
    --------
    >>> import numpy as np
    >>> model = CNN(1, 10, widths=(8, 16), norm="group", rng=0)
    >>> [type(layer).__name__ for layer in model][:4]
    ['Conv2d', 'GroupNorm', 'ReLU', 'MaxPool2d']
    >>> model(np.zeros((5, 8, 8, 1), dtype=np.float32)).shape
    (5, 10)
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths=(16, 32),
        norm: str = "batch",
        *,
        rng,
        kernel_size: int = 3,
        pool: bool = True,
        conv_bias: bool | None = None,
        norm_kwargs: dict | None = None,
        dtype=np.float32,
    ) -> None:
        widths = tuple(widths) if isinstance(widths, (list, tuple)) else widths
        self.config = CNNConfig(in_channels, num_classes, widths, kernel_size, pool)
        if norm not in NORM_KINDS:
            raise ValueError(f"CNN: norm must be one of {tuple(NORM_KINDS)}, got {norm!r}.")
        if conv_bias is not None and not isinstance(conv_bias, bool):
            raise ValueError(f"CNN: conv_bias must be None, True or False, got {conv_bias!r}.")
        rng = as_generator(rng, "CNN")
        norm_kwargs = {"dtype": dtype, **(norm_kwargs or {})}
        layers = []
        channels = in_channels
        for width in widths:
            norm_layer = make_norm(norm, width, **norm_kwargs)
            bias = not norm_layer.cancels_feature_bias if conv_bias is None else conv_bias
            padding = kernel_size // 2
            layers.append(
                Conv2d(channels, width, kernel_size, 1, padding, bias, rng=rng, dtype=dtype)
            )
            layers += [norm_layer, ReLU()]
            if pool:
                layers.append(MaxPool2d(2))
            channels = width
        layers.append(GlobalAvgPool2d())
        layers.append(Linear(channels, num_classes, rng=rng, init="glorot", dtype=dtype))
        super().__init__(*layers)
        self.norm = norm

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "CNN")
        size = self.config.min_image_size
        if x.ndim == 4 and min(x.shape[1:3]) < size:
            raise ValueError(
                f"CNN with {len(self.config.widths)} pooling blocks needs images of at least "
                f"{size}×{size}, got H, W = {x.shape[1:3]} (input shape {x.shape}); use fewer "
                "widths or pool=False."
            )
        return super().forward(x, mask=mask)


# ---------------------------------------------------------------------------
# A character-level transformer language model
# ---------------------------------------------------------------------------

#: How a TransformerLM knows where a token is (see TransformerLM).
POSITION_SCHEMES = ("learned", "sinusoidal", "none")


def sinusoidal_positions(length: int, d_model: int, dtype=np.float64) -> np.ndarray:
    """The fixed position codes of Vaswani et al. (2017), (length, d_model), no parameters.

    .. math::

        \\mathrm{PE}_{t, 2i} = \\sin(t / 10000^{2i/D}), \\qquad
        \\mathrm{PE}_{t, 2i+1} = \\cos(t / 10000^{2i/D})

    Defined for every position ``t``, so a model using them runs on any length.

    >>> sinusoidal_positions(3, 4).round(3).tolist()[1]
    [0.841, 0.54, 0.01, 1.0]
    """
    positions = np.arange(length, dtype=np.float64)[:, None]  # (T, 1)
    frequencies = 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)  # (⌈D/2⌉,)
    angles = positions * frequencies  # (T, ⌈D/2⌉)
    table = np.empty((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table.astype(dtype)


@dataclass(frozen=True)
class TransformerLMConfig:
    """The architecture of a :class:`TransformerLM`: its constructor's arguments but the rng.

    ``TransformerLM.from_config(config, rng=...)`` builds it and ``model.config`` gives it
    back; an experiment's Config holds one, and :meth:`to_dict` enters its cache key.
    ``batchnorm_momentum`` reaches the BatchNorm layers only (``norm="batch"``);
    ``mask_norm=False`` makes every norm take padding as data (see
    :class:`~normlab.nn.TransformerEncoderLayer`).
    Construction checks the values and raises ValueError on a bad one.
    """

    vocab_size: int
    context_length: int
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    dim_feedforward: int = 256
    norm: str = "layer"
    norm_first: bool = True
    final_norm: bool | None = None
    activation: str = "gelu"
    positions: str = "learned"
    layer_norm_eps: float = 1e-5
    bias: bool = True
    batchnorm_momentum: float | None = 0.1
    mask_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "num_heads", "num_layers"):
            check_positive_int(getattr(self, name), name, "TransformerLMConfig")
        check_positive_int(self.dim_feedforward, "dim_feedforward", "TransformerLMConfig")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"TransformerLMConfig: d_model={self.d_model} must be divisible by "
                f"num_heads={self.num_heads}."
            )
        if self.norm not in NORM_KINDS:
            raise ValueError(
                f"TransformerLMConfig: norm must be one of {tuple(NORM_KINDS)}, got {self.norm!r}."
            )
        if self.positions not in POSITION_SCHEMES:
            raise ValueError(
                f"TransformerLMConfig: positions must be one of {POSITION_SCHEMES}, "
                f"got {self.positions!r}."
            )
        if self.activation not in ("relu", "gelu"):
            raise ValueError(
                "TransformerLMConfig: activation must be 'relu' or 'gelu', got "
                f"{self.activation!r}."
            )

    @property
    def uses_final_norm(self) -> bool:
        """Whether a norm sits before the head: ``final_norm``, by default ``norm_first``."""
        return self.norm_first if self.final_norm is None else bool(self.final_norm)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TransformerLM(Container):
    """A causal transformer language model over characters (or any tokens), GPT-style.

    ::

        h = token_embedding(ids) + position(t)        # (N, T, D)
        for each of the num_layers blocks:             # TransformerEncoderLayer, causal
            h = block(h)                               # Pre-LN or Post-LN, any norm
        h = final_norm(h)                              # by default only for Pre-LN
        logits = head(h)                               # (N, T, vocab_size)

    The logits at position ``t`` predict token ``t + 1`` and depend on tokens ``s <= t``
    only (causal attention; LayerNorm and RMSNorm act per token). BatchNorm in training
    mode, GroupNorm and InstanceNorm average over the sequence and so let the future in;
    that is their nature, not a bug, and the ``causal_leak`` experiment measures it.

    Pre-LN blocks leave the residual stream unnormalized, so a Pre-LN model needs a norm
    before the head (GPT-2's ``ln_f``); a Post-LN block already ends with a norm, so by
    default a Post-LN model has none.

    Positions
    ---------
    ``positions="learned"`` (default): a learned ``position_embedding`` of
    ``context_length`` rows (torch's ``nn.Embedding``, as in GPT-2). It runs on any length
    up to ``context_length`` (so a model trained on short contexts runs on longer ones up to
    there, through rows its training never updated); a longer input is a ValueError.
    ``"sinusoidal"``: the fixed codes of :func:`sinusoidal_positions`, no parameters,
    defined at every length, so the model runs on contexts longer than any it was trained
    on. ``"none"``: no position signal at all; causal attention alone still tells positions
    apart (a token sees exactly ``t + 1`` tokens), and it too runs at any length.
    ``context_length`` is then only the length the model is meant to be trained at.

    Parameters
    ----------
    vocab_size : int, V.
    context_length : int, the longest input with learned positions (the training length).
    d_model, num_heads, num_layers, dim_feedforward : ints, default 64, 4, 2, 256.
    norm : str, default ``"layer"``; any kind of :func:`normlab.make_norm`, in every block
        and in the final norm.
    norm_first : bool, default True: Pre-LN blocks (False: Post-LN), see
        :class:`~normlab.nn.TransformerEncoderLayer`.
    final_norm : bool or None, default None (= ``norm_first``): a norm before the head.
    activation : ``"gelu"`` (default) or ``"relu"``, inside the feed-forward networks.
    positions : ``"learned"`` (default), ``"sinusoidal"`` or ``"none"``, see above.
    layer_norm_eps : float, default 1e-5; bias : bool, default True (as the blocks).
    norm_kwargs : dict, optional, more options for :func:`normlab.make_norm`.
    mask_norm : bool, default True: the norms get the padding mask; False: they take the
        padding as data (BatchNorm's statistics then count it), outputs at padding still 0.
    rng : np.random.Generator or int seed; dtype : floating dtype, default float32.
        Every module is initialized as torch initializes it (embeddings ``N(0, 1)``, the
        head as ``nn.Linear``).

    Children (state_dict names): ``token_embedding``, ``position_embedding`` (learned
    positions only), ``blocks`` (``blocks.0.self_attn.in_proj_weight``, ...),
    ``final_norm`` (when used), ``head``: those of a torch module with the same attributes
    (``nn.Embedding``, ``nn.ModuleList`` of ``nn.TransformerEncoderLayer``, ``nn.LayerNorm``,
    ``nn.Linear``).

    Shape
    -----
    Input: integer ids (N, T), ``mask`` (N, T) with True = real token (any pattern).
    Output: logits (N, T, vocab_size), exactly 0 at padded positions. Positions are the
    indices along T, padded or not. :meth:`backward` takes d(loss)/d(logits), fills
    ``grads`` and returns None (ids have no gradient).

    Examples
    --------
    >>> import numpy as np
    >>> model = TransformerLM(vocab_size=10, context_length=8, d_model=16, num_heads=2,
    ...                       num_layers=1, dim_feedforward=32, rng=0)
    >>> ids = np.arange(12).reshape(2, 6) % 10
    >>> loss, dlogits = model.loss(ids[:, :-1], ids[:, 1:])
    >>> model.backward(dlogits)
    >>> round(loss, 1), model(ids).shape   # loss about log(10) = 2.3 at initialization
    (2.5, (2, 6, 10))
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        *,
        norm: str = "layer",
        norm_first: bool = True,
        final_norm: bool | None = None,
        activation: str = "gelu",
        positions: str = "learned",
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        norm_kwargs: dict | None = None,
        mask_norm: bool = True,
        rng,
        dtype=np.float32,
    ) -> None:
        momentum = (norm_kwargs or {}).get("momentum", 0.1)
        self._config = TransformerLMConfig(
            vocab_size=vocab_size,
            context_length=context_length,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
            dim_feedforward=dim_feedforward,
            norm=norm,
            norm_first=norm_first,
            final_norm=final_norm,
            activation=activation,
            positions=positions,
            layer_norm_eps=layer_norm_eps,
            bias=bias,
            batchnorm_momentum=momentum,
            mask_norm=bool(mask_norm),
        )
        rng = as_generator(rng, "TransformerLM")
        self.dtype = np.dtype(dtype)
        self.token_embedding = Embedding(vocab_size, d_model, rng=rng, dtype=dtype)
        named: list[tuple[str, Module]] = [("token_embedding", self.token_embedding)]
        self.position_embedding = None
        if positions == "learned":
            self.position_embedding = Embedding(context_length, d_model, rng=rng, dtype=dtype)
            named.append(("position_embedding", self.position_embedding))
        self.blocks = Sequential(
            *(
                TransformerEncoderLayer(
                    d_model,
                    num_heads,
                    dim_feedforward,
                    activation=activation,
                    norm_first=norm_first,
                    norm=norm,
                    layer_norm_eps=layer_norm_eps,
                    bias=bias,
                    causal=True,
                    norm_kwargs=norm_kwargs,
                    mask_norm=mask_norm,
                    rng=rng,
                    dtype=dtype,
                )
                for _ in range(num_layers)
            )
        )
        named.append(("blocks", self.blocks))
        self.final_norm = None
        if self._config.uses_final_norm:
            options = {"eps": layer_norm_eps, "bias": bias, "affine": True, "dtype": dtype}
            self.final_norm = make_norm(norm, d_model, **{**options, **(norm_kwargs or {})})
            named.append(("final_norm", self.final_norm))
        self.head = Linear(d_model, vocab_size, rng=rng, bias=bias, init="torch", dtype=dtype)
        named.append(("head", self.head))
        super().__init__(named)

    @classmethod
    def from_config(cls, config: TransformerLMConfig, *, rng, dtype=np.float32) -> TransformerLM:
        """The model ``config`` describes, initialized from ``rng``."""
        fields = config.to_dict()
        momentum = fields.pop("batchnorm_momentum")
        return cls(**fields, norm_kwargs={"momentum": momentum}, rng=rng, dtype=dtype)

    @property
    def config(self) -> TransformerLMConfig:
        """The architecture; of ``norm_kwargs`` it records BatchNorm's momentum only."""
        return self._config

    def __repr__(self) -> str:
        config = self._config
        placement = "Pre-LN" if config.norm_first else "Post-LN"
        return (
            f"TransformerLM(vocab_size={config.vocab_size}, context_length="
            f"{config.context_length}, d_model={config.d_model}, num_heads={config.num_heads}, "
            f"num_layers={config.num_layers}, norm={config.norm!r} ({placement}), "
            f"positions={config.positions!r})"
        )

    def _position_codes(self, length: int) -> np.ndarray | None:
        """(T, D) added to the token embeddings, or None without positions."""
        config = self._config
        if config.positions == "none":
            return None
        if config.positions == "sinusoidal":
            return sinusoidal_positions(length, config.d_model, self.dtype)
        if length > config.context_length:
            raise ValueError(
                f"TransformerLM: the input has {length} positions, but the learned position "
                f"table has context_length={config.context_length} rows; crop the input to "
                f"at most {config.context_length} tokens, or build the model with "
                "positions='sinusoidal' or 'none' to run on longer contexts."
            )
        return self.position_embedding(np.arange(length))  # (T, D)

    def forward(self, ids, mask=None) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(
                f"TransformerLM expects token ids (N, T), got shape {ids.shape}; for one "
                "sequence use ids[None]."
            )
        mask = check_ids_mask(mask, ids.shape, "TransformerLM")
        h = self.token_embedding(ids, mask=mask)  # (N, T, D), 0 at padding
        positions = self._position_codes(ids.shape[1])
        if positions is not None:
            h += positions  # broadcasts over N
            if mask is not None:
                h *= mask[..., None]  # padding stays 0
        h = self.blocks(h, mask=mask)  # (N, T, D)
        if self.final_norm is not None:
            if self._config.mask_norm or mask is None:
                h = self.final_norm(h, mask=mask)
            else:  # statistics over every position, padding set to 0
                h = self.final_norm(h) * mask[..., None]
        self._cache = (mask,)
        return self.head(h, mask=mask)  # (N, T, V)

    def backward(self, dlogits) -> None:
        (mask,) = self.require_cache()
        dh = self.head.backward(dlogits)  # (N, T, D), 0 at padding
        if self.final_norm is not None:
            dh = self.final_norm.backward(dh)
            if not self._config.mask_norm and mask is not None:
                dh = dh * mask[..., None]  # the padded inputs are constants
        dh = self.blocks.backward(dh)
        if self.position_embedding is not None:
            if mask is not None:
                dh = dh * mask[..., None]
            self.position_embedding.backward(dh.sum(axis=0))  # (T, D): shared by the batch
        self.token_embedding.backward(dh)
        return None

    def loss(self, ids, targets, mask=None) -> tuple[float, np.ndarray]:
        """Forward, then the mean cross-entropy over the real positions (nats per token).

        ``targets`` (N, T) are the next tokens (``targets[:, t] = ids[:, t + 1]`` of the
        text). Returns ``(loss, dlogits)``; pass ``dlogits`` to :meth:`backward`.
        """
        return softmax_cross_entropy(self(ids, mask=mask), targets, mask)

    def generate(self, prompt, num_tokens: int, *, rng, temperature: float = 1.0) -> np.ndarray:
        """``prompt`` (1-D ids) continued by ``num_tokens`` sampled tokens, in eval mode.

        Each step runs the model on the last ``context_length`` tokens and samples from
        ``softmax(logits / temperature)`` at the last position. The mode is restored after.
        """
        rng = as_generator(rng, "TransformerLM.generate")
        if not temperature > 0:
            raise ValueError(f"TransformerLM.generate: temperature must be > 0, got {temperature}.")
        ids = list(np.asarray(prompt).reshape(-1))
        if not ids:
            raise ValueError("TransformerLM.generate: the prompt needs at least one token.")
        was_training = self.training
        self.eval()
        try:
            for _ in range(num_tokens):
                window = np.asarray(ids[-self._config.context_length :])[None]  # (1, T)
                logits = self(window)[0, -1].astype(np.float64) / temperature  # (V,)
                probabilities = np.exp(logits - logits.max())
                probabilities /= probabilities.sum()
                ids.append(int(rng.choice(len(probabilities), p=probabilities)))
        finally:
            self.train(was_training)
        return np.asarray(ids, dtype=np.int64)
