"""The models the experiments train: an MLP, a small sequence model and a small CNN."""

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
    as_float_array,
    as_generator,
    check_mask,
    check_positive_int,
)
from normlab.nn.activations import ReLU, Tanh
from normlab.nn.containers import Sequential
from normlab.nn.conv import Conv2d, GlobalAvgPool2d, MaxPool2d
from normlab.nn.linear import Linear
from normlab.nn.mixing import MixingBlock

__all__ = ["CNN", "MLP", "CNNConfig", "SequenceModel"]


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
