"""The few pieces the experiments train with, written out in numpy with hand-written backward.

Every module has the interface of the normalization layers in :mod:`normlab.layers`::

    y = module(x, mask=None)     # same as module.forward(x, mask=None)
    dx = module.backward(dy)     # gradient w.r.t. the input of the last forward; fills grads
    module.params, module.grads  # name -> ndarray; grads are overwritten, never accumulated
    module.train(); module.eval()  # module.training tells the mode

Inputs are features-last: (N, D) vectors or (N, T, D) sequences, with an optional
padding ``mask`` of shape ``x.shape[:-1]`` (True = real token).

What is here
------------
* :class:`Linear`, :class:`ReLU`, :class:`Tanh`, :class:`Identity`.
* :class:`Sequential`: a chain of modules whose parameters appear as one flat,
  live dict (``"0.weight"``, ``"2.bias"``, ...).
* :func:`make_norm`: ``"none" | "batch" | "layer" | "rms" | "group"`` -> a layer.
* :class:`MLP`: ``Linear -> norm -> ReLU`` blocks and a ``Linear`` head, the
  pre-activation placement of Ioffe & Szegedy (2015).
* :class:`SequenceModel`: a small model over (N, T, D) with a normalization in each
  residual block and a token-mixing layer, :class:`MeanMixing`, that averages
  over the sequence so far (``causal=True``) or over the whole sequence.
* :func:`softmax_cross_entropy`, :func:`accuracy`.
* :class:`SGD` (with momentum) and :class:`Adam`, updating ``params`` in place.

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
['0.weight', '1.bias', '1.weight']
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from normlab import layers
from normlab.data import as_generator as _as_generator

__all__ = [
    "MLP",
    "NORM_KINDS",
    "SGD",
    "Adam",
    "Identity",
    "Linear",
    "MeanMixing",
    "MixingBlock",
    "Module",
    "ReLU",
    "SequenceModel",
    "Sequential",
    "Tanh",
    "accuracy",
    "default_num_groups",
    "make_norm",
    "softmax_cross_entropy",
]

#: the ``kind`` names :func:`make_norm` understands
NORM_KINDS = ("none", "batch", "layer", "rms", "group")

#: norms that subtract a mean: a bias in the Linear layer right before them is cancelled exactly
_CENTERING_NORMS = ("batch", "layer", "group")


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _float_dtype(dtype, who: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{who}: dtype must be a floating dtype, got {dtype}.")
    return dtype


def _check_positive_int(value, what: str, who: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{who}: {what} must be a positive integer, got {value!r}.")
    return int(value)


def _as_float_input(x, who: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{who} expects a floating-point input, got dtype {x.dtype}; "
            "convert it first, e.g. x.astype(np.float32)."
        )
    return x


def _check_mask(mask, x_shape: tuple[int, ...], who: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"{who}: mask must be a boolean array (True = real token), got dtype {mask.dtype}; "
            "use mask.astype(bool)."
        )
    if mask.shape != x_shape[:-1]:
        raise ValueError(
            f"{who}: mask must have shape x.shape[:-1] = {x_shape[:-1]}, got {mask.shape}."
        )
    return mask


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


# ---------------------------------------------------------------------------
# Base classes
# ---------------------------------------------------------------------------


class Module:
    """Base class: ``forward``/``backward``, ``params``/``grads`` dicts and the mode flag.

    Attributes
    ----------
    params : dict of str -> ndarray
        Learned parameters. Optimizers update these arrays in place.
    grads : dict of str -> ndarray
        Gradients with the same keys and shapes, overwritten by each :meth:`backward`.
    training : bool
        True after construction; set by :meth:`train` / :meth:`eval`. Only layers
        whose computation depends on it (BatchNorm) behave differently.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def __call__(self, x, mask=None) -> np.ndarray:
        return self.forward(x, mask=mask)

    def forward(self, x, mask=None) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy) -> np.ndarray:
        raise NotImplementedError

    def train(self, mode: bool = True):
        """Set training mode (``mode=True``) or inference mode; returns the module."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set inference mode; returns the module. Same as ``train(False)``."""
        return self.train(False)

    def _require_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before any forward.")
        return self._cache


class _FlatView(Mapping):
    """A live, read-only flat dict over the ``params`` (or ``grads``) of named children.

    ``view["2.bias"]`` looks up ``children["2"].params["bias"]`` at the moment of
    the call, so a layer that replaces a gradient array in its own ``grads`` dict
    is seen by an optimizer holding the view. Nested containers give nested
    names (``"block0.mix.weight_self"``).
    """

    def __init__(self, named_children: Sequence[tuple[str, object]], attribute: str) -> None:
        self._named_children = tuple(named_children)
        self._by_name = dict(self._named_children)
        self._attribute = attribute

    def _entries(self, child) -> Mapping:
        return getattr(child, self._attribute, {})

    def __getitem__(self, key: str) -> np.ndarray:
        child_name, separator, rest = key.partition(".")
        if not separator or child_name not in self._by_name:
            raise KeyError(key)
        return self._entries(self._by_name[child_name])[rest]

    def __iter__(self) -> Iterator[str]:
        for child_name, child in self._named_children:
            for key in self._entries(child):
                yield f"{child_name}.{key}"

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs in one walk over the children (faster than key lookups)."""
        for child_name, child in self._named_children:
            for key, value in self._entries(child).items():
                yield f"{child_name}.{key}", value

    def __len__(self) -> int:
        return sum(len(self._entries(child)) for _, child in self._named_children)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{key!r}: {self[key].shape}" for key in self)
        return f"{{{shapes}}}"


class _Container(Module):
    """A module made of named children; its params/grads are flat live views over theirs."""

    def __init__(self, named_children: Sequence[tuple[str, object]]) -> None:
        named_children = tuple(named_children)
        names = [name for name, _ in named_children]
        for name in names:
            if not name or "." in name:
                raise ValueError(f"child names must be non-empty and without '.', got {name!r}.")
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}.")
        self._named_children = named_children
        self._params_view = _FlatView(named_children, "params")
        self._grads_view = _FlatView(named_children, "grads")
        self.training = True

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        return self._params_view

    @property
    def grads(self) -> Mapping[str, np.ndarray]:
        return self._grads_view

    def named_children(self) -> tuple[tuple[str, object], ...]:
        return self._named_children

    def train(self, mode: bool = True):
        """Set the mode of this module and of every child; returns the module."""
        self.training = bool(mode)
        for _, child in self._named_children:
            if mode:
                child.train()
            else:
                child.eval()
        return self

    def __repr__(self) -> str:
        lines = [
            f"  ({name}): {child!r}".replace("\n", "\n  ") for name, child in self._named_children
        ]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


class Linear(Module):
    """Affine map of the last axis: ``y = x @ weight + bias``.

    .. math::  y = x W + b, \\qquad
        \\frac{\\partial L}{\\partial x} = \\frac{\\partial L}{\\partial y} W^\\top, \\quad
        \\frac{\\partial L}{\\partial W} = x^\\top \\frac{\\partial L}{\\partial y}, \\quad
        \\frac{\\partial L}{\\partial b} = \\sum \\frac{\\partial L}{\\partial y}

    with every leading axis flattened into the rows of ``x``. ``weight`` has
    shape (in_features, out_features), so ``x @ weight`` reads left to right;
    PyTorch stores the transpose.

    Parameters
    ----------
    in_features, out_features : int
    rng : np.random.Generator or int seed
        The only source of randomness of the initialization.
    bias : bool, default True
    init : ``"he"`` or ``"glorot"``, default ``"he"``
        He: ``weight ~ N(0, 2 / in_features)``, which keeps the mean square of
        the activations constant through ReLU layers (He et al., 2015).
        Glorot: ``weight ~ U(-a, a)``, ``a = sqrt(6 / (in + out))``, for layers
        not followed by a ReLU (Glorot & Bengio, 2010). The bias starts at 0.
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
        self.in_features = _check_positive_int(in_features, "in_features", "Linear")
        self.out_features = _check_positive_int(out_features, "out_features", "Linear")
        rng = _as_generator(rng, "Linear")
        self.dtype = _float_dtype(dtype, "Linear")
        shape = (self.in_features, self.out_features)
        if init == "he":
            weight = rng.normal(0.0, np.sqrt(2.0 / self.in_features), size=shape)
        elif init == "glorot":
            limit = np.sqrt(6.0 / (self.in_features + self.out_features))
            weight = rng.uniform(-limit, limit, size=shape)
        else:
            raise ValueError(f"Linear: init must be 'he' or 'glorot', got {init!r}.")
        self.init = init
        self.params["weight"] = weight.astype(self.dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)
        self._cache = None

    def __repr__(self) -> str:
        return (
            f"Linear({self.in_features}, {self.out_features}, "
            f"bias={'bias' in self.params}, init={self.init!r})"
        )

    def forward(self, x, mask=None) -> np.ndarray:
        x = _as_float_input(x, "Linear")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expected the last dimension to be in_features={self.in_features}, "
                f"got input shape {x.shape}."
            )
        mask = _check_mask(mask, x.shape, "Linear")
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
        rows, mask, input_shape = self._require_cache()
        dy = np.asarray(dy)
        if mask is not None:
            dy = dy * mask[..., None]  # masked outputs are constants
        dy_rows = dy.reshape(-1, self.out_features)  # (M, out)
        weight = self.params["weight"]
        self.grads["weight"] = (rows.T @ dy_rows).astype(weight.dtype, copy=False)  # (in, out)
        if "bias" in self.params:
            self.grads["bias"] = dy_rows.sum(axis=0).astype(weight.dtype, copy=False)  # (out,)
        return (dy_rows @ weight.T).reshape(input_shape)  # (*, in)


class ReLU(Module):
    """``y = max(x, 0)``; ``dx = dy`` where ``x > 0`` and 0 elsewhere. No parameters.

    ``mask`` is accepted and ignored: ReLU maps zero padding to zero.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "ReLU()"

    def forward(self, x, mask=None) -> np.ndarray:
        x = _as_float_input(x, "ReLU")
        positive = x > 0  # (shape of x), bool
        self._cache = positive
        return np.where(positive, x, x.dtype.type(0))

    def backward(self, dy) -> np.ndarray:
        positive = self._require_cache()
        return np.where(positive, dy, np.asarray(dy).dtype.type(0))


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``. No parameters; ``mask`` is ignored."""

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "Tanh()"

    def forward(self, x, mask=None) -> np.ndarray:
        y = np.tanh(_as_float_input(x, "Tanh"))
        self._cache = y
        return y

    def backward(self, dy) -> np.ndarray:
        y = self._require_cache()
        return dy * (1 - y * y)


class Identity(Module):
    """``y = x``: the "no normalization" choice of :func:`make_norm`. ``mask`` is ignored."""

    def __repr__(self) -> str:
        return "Identity()"

    def forward(self, x, mask=None) -> np.ndarray:
        return _as_float_input(x, "Identity")

    def backward(self, dy) -> np.ndarray:
        return dy


class Sequential(_Container):
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


# ---------------------------------------------------------------------------
# Normalization factory
# ---------------------------------------------------------------------------


def default_num_groups(num_channels: int, max_groups: int = 8, min_group_size: int = 4) -> int:
    """The most groups, up to ``max_groups``, that divide C into groups of >= ``min_group_size``.

    Falls back to 1 group (all channels together). A minimum group size
    matters on (N, C) vectors, where a group has no spatial axes to average
    over: a group of 1 channel normalizes one number (always 0) and a group of
    2 channels gives only +-1.

    >>> [default_num_groups(channels) for channels in (64, 32, 12, 6)]
    [8, 8, 3, 1]
    """
    num_channels = _check_positive_int(num_channels, "num_channels", "default_num_groups")
    candidates = [
        groups
        for groups in range(1, max_groups + 1)
        if num_channels % groups == 0 and num_channels // groups >= min_group_size
    ]
    return max(candidates, default=1)


def make_norm(kind: str, num_features: int, **kwargs):
    """A normalization layer over the last axis, by name.

    Parameters
    ----------
    kind : ``"none"``, ``"batch"``, ``"layer"``, ``"rms"`` or ``"group"``
        ``"none"`` -> :class:`Identity` (keyword arguments ignored, so one sweep
        can pass the same ones to every kind); ``"batch"`` ->
        ``BatchNorm(num_features, **kwargs)``; ``"layer"`` ->
        ``LayerNorm(num_features, **kwargs)``; ``"rms"`` ->
        ``RMSNorm(num_features, **kwargs)``; ``"group"`` ->
        ``GroupNorm(num_groups, num_features, **kwargs)`` with
        ``num_groups = kwargs.pop("num_groups", default_num_groups(num_features))``
        (up to 8 groups of at least 4 channels; Wu & He's 32 groups are too many
        for the small widths used here).
    num_features : int
        The size of the last axis.
    **kwargs : passed to the layer (``eps``, ``momentum``, ``dtype``, ...).

    Examples
    --------
    >>> make_norm("group", 64)
    GroupNorm(8, 64, eps=1e-05, affine=True)
    """
    if kind == "none":
        return Identity()
    if kind not in NORM_KINDS:
        raise ValueError(f"make_norm: kind must be one of {NORM_KINDS}, got {kind!r}.")
    if kind == "batch":
        return layers.BatchNorm(num_features, **kwargs)
    if kind == "layer":
        return layers.LayerNorm(num_features, **kwargs)
    if kind == "rms":
        return layers.RMSNorm(num_features, **kwargs)
    kwargs = dict(kwargs)
    num_groups = kwargs.pop("num_groups", None)
    if num_groups is None:
        num_groups = default_num_groups(num_features)
    return layers.GroupNorm(num_groups, num_features, **kwargs)


# ---------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------

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
    norm : str, default ``"batch"``; see :func:`make_norm`.
    rng : np.random.Generator or int seed, for every initialization.
    depth : int, default 2 (when ``hidden`` is an int): the number of hidden blocks.
    activation : ``"relu"`` (He init) or ``"tanh"`` (Glorot init).
    norm_kwargs : dict, optional, passed to :func:`make_norm` (e.g. ``{"momentum": None}``).
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
            raise ValueError(f"MLP: norm must be one of {NORM_KINDS}, got {norm!r}.")
        rng = _as_generator(rng, "MLP")
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
                    bias=norm not in _CENTERING_NORMS,
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


# ---------------------------------------------------------------------------
# Sequence model
# ---------------------------------------------------------------------------


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
        self.in_features = _check_positive_int(in_features, "in_features", "MeanMixing")
        self.out_features = _check_positive_int(out_features, "out_features", "MeanMixing")
        self.causal = bool(causal)
        rng = _as_generator(rng, "MeanMixing")
        self.dtype = _float_dtype(dtype, "MeanMixing")
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
            self.params[name] = weight.astype(self.dtype)
        self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)
        self._cache = None

    def __repr__(self) -> str:
        return f"MeanMixing({self.in_features}, {self.out_features}, causal={self.causal})"

    def forward(self, x, mask=None) -> np.ndarray:
        x = _as_float_input(x, "MeanMixing")
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"MeanMixing expects input (N, T, {self.in_features}), got shape {x.shape}."
            )
        mask = _check_mask(mask, x.shape, "MeanMixing")
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
        rows, context, counts, weights, input_shape = self._require_cache()
        features = input_shape[-1]
        dy = np.asarray(dy)
        if weights is not None:
            dy = dy * weights  # (N, T, H)
        dy_rows = dy.reshape(-1, self.out_features)  # (N*T, H)
        param_dtype = self.params["bias"].dtype
        weight_self, weight_context = self.params["weight_self"], self.params["weight_context"]
        self.grads["weight_self"] = (rows.T @ dy_rows).astype(param_dtype, copy=False)
        self.grads["bias"] = dy_rows.sum(axis=0).astype(param_dtype, copy=False)
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
        self.grads["weight_context"] = dweight_context.astype(param_dtype, copy=False)
        if weights is not None:
            dmasked = dmasked * weights  # padding did not enter the mean
        dx += dmasked  # broadcasts (N, 1, D) in the non-causal case
        return dx


class MixingBlock(_Container):
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
    norm : str, see :func:`make_norm`.
    causal : bool, see :class:`MeanMixing`.
    rng : np.random.Generator or int seed.
    mask_norm : bool, default True
        Pass the padding mask to the norm. With False the norm treats padded
        tokens (zeros in the residual stream) as data: BatchNorm's statistics
        then depend on how much padding the batch has. Mixing always uses the mask.
    norm_kwargs : dict, optional, for :func:`make_norm`.
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
        rng = _as_generator(rng, "MixingBlock")
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


_READOUTS = ("token", "mean", "last")


class SequenceModel(_Container):
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
    norm : str, default ``"layer"``; see :func:`make_norm`.
    num_blocks : int, default 2.
    hidden : int, optional, width inside a block (default ``2 * d_model``).
    causal : bool, default False.
    readout : ``"token"`` (per-token logits, default), ``"mean"`` (mean over the
        real tokens) or ``"last"`` (the last real token; natural with ``causal``).
    mask_norm : bool, default True
        Give the mask to the norms; False makes them count padding as data
        (see :class:`MixingBlock`).
    final_norm : bool, default True, a norm of the same kind before the head.
    norm_kwargs : dict, optional, for :func:`make_norm`.
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
            raise ValueError(f"SequenceModel: norm must be one of {NORM_KINDS}, got {norm!r}.")
        rng = _as_generator(rng, "SequenceModel")
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
        x = _as_float_input(x, "SequenceModel")
        if x.ndim != 3:
            raise ValueError(
                f"SequenceModel expects input (N, T, D), got shape {x.shape}; "
                "for one sequence use x[None]."
            )
        mask = _check_mask(mask, x.shape, "SequenceModel")
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
# Loss
# ---------------------------------------------------------------------------


def softmax_cross_entropy(logits, targets, mask=None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer targets, and its gradient.

    .. math::

        L = -\\frac{1}{n} \\sum_{i:\\, m_i} \\log \\mathrm{softmax}(z_i)_{y_i}, \\qquad
        \\frac{\\partial L}{\\partial z_i} = \\frac{m_i}{n}\\,
            (\\mathrm{softmax}(z_i) - \\mathrm{onehot}(y_i))

    with ``n`` the number of real positions. Computed stably through
    ``log_softmax(z) = z - max(z) - log(sum(exp(z - max(z))))``, so logits of
    any size give a finite loss.

    Parameters
    ----------
    logits : float ndarray (..., C), e.g. (N, C) or (N, T, C).
    targets : int ndarray (...), class indices in [0, C). Values at masked
        positions are ignored (any integer, e.g. -1, is fine there).
    mask : bool ndarray (...), optional; True marks positions that count.

    Returns
    -------
    loss : float, the mean over real positions (0.0 if there are none).
    dlogits : ndarray like ``logits``, 0 at masked positions.
    """
    logits = _as_float_input(logits, "softmax_cross_entropy")
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"softmax_cross_entropy: targets must be integers, got {targets.dtype}.")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"softmax_cross_entropy: targets must have shape logits.shape[:-1] = "
            f"{logits.shape[:-1]}, got {targets.shape}."
        )
    num_classes = logits.shape[-1]
    mask = _check_mask(mask, logits.shape, "softmax_cross_entropy")
    if mask is not None:
        targets = np.where(mask, targets, 0)  # ignored positions: any valid index
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"softmax_cross_entropy: targets must lie in [0, {num_classes}), "
            f"got values in [{targets.min()}, {targets.max()}]."
        )
    logit_rows = logits.reshape(-1, num_classes)  # (M, C)
    target_rows = targets.reshape(-1)  # (M,)
    rows = np.arange(target_rows.size)
    shifted = logit_rows - logit_rows.max(axis=1, keepdims=True)  # (M, C), max is 0
    exp_shifted = np.exp(shifted)
    sum_exp = exp_shifted.sum(axis=1, keepdims=True)  # (M, 1), in [1, C]
    log_prob_target = shifted[rows, target_rows] - np.log(sum_exp[:, 0])  # (M,)
    dlogits = exp_shifted / sum_exp  # (M, C): softmax
    dlogits[rows, target_rows] -= 1
    if mask is None:
        count = target_rows.size
        loss = -log_prob_target.sum()
    else:
        mask_rows = mask.reshape(-1)  # (M,)
        count = int(mask_rows.sum())
        loss = -log_prob_target[mask_rows].sum()
        dlogits *= mask_rows[:, None]
    divisor = max(count, 1)
    dlogits /= logits.dtype.type(divisor)
    return float(loss) / divisor, dlogits.reshape(logits.shape)


def accuracy(logits, targets, mask=None) -> float:
    """Fraction of (real) positions where ``argmax(logits) == targets``."""
    correct = np.argmax(logits, axis=-1) == np.asarray(targets)  # (...)
    if mask is None:
        return float(correct.mean())
    mask = np.asarray(mask, dtype=bool)
    return float(correct[mask].mean()) if mask.any() else 0.0


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------


class _Optimizer:
    """Shared plumbing: live ``params``/``grads`` mappings, updated in place by ``step``."""

    def __init__(self, params: Mapping, grads: Mapping, lr: float, weight_decay: float) -> None:
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}.")
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0.")
        self.params, self.grads = params, grads
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)

    def _named_updates(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, parameter, gradient incl. weight decay), with the gradients read now."""
        grads = dict(self.grads.items())  # one walk over a model's live view
        for name, param in self.params.items():
            yield name, param, self._gradient(name, param, grads)

    def _gradient(self, name: str, param: np.ndarray, grads: Mapping) -> np.ndarray:
        try:
            grad = grads[name]
        except KeyError:
            raise KeyError(
                f"{type(self).__name__}: no gradient for parameter {name!r}; "
                "call model.backward(dlogits) before optimizer.step()."
            ) from None
        if grad.shape != param.shape:
            raise ValueError(
                f"{type(self).__name__}: gradient of {name!r} has shape {grad.shape}, "
                f"the parameter {param.shape}."
            )
        if self.weight_decay:
            grad = grad + self.weight_decay * param  # L2 penalty (weight_decay / 2) * |p|^2
        return grad

    def step(self) -> None:
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum, PyTorch's convention.

    .. math::

        g \\leftarrow g + \\lambda p, \\qquad
        v \\leftarrow \\mu v + g \\ (v = g \\text{ at the first step}), \\qquad
        p \\leftarrow p - \\eta v

    Parameters
    ----------
    params, grads : mappings name -> ndarray, e.g. ``model.params, model.grads``.
        The gradients are read at each :meth:`step`; the parameters are updated in place.
    lr : float, η.
    momentum : float, default 0.9, μ (0 = plain SGD).
    weight_decay : float, default 0, λ (L2 penalty added to the gradient).
    """

    def __init__(
        self,
        params: Mapping,
        grads: Mapping,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, grads, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}.")
        self.momentum = float(momentum)
        self.velocity: dict[str, np.ndarray] = {}

    def step(self) -> None:
        """One update of every parameter, in place."""
        for name, param, grad in self._named_updates():
            if self.momentum:
                velocity = self.velocity.get(name)
                if velocity is None:
                    velocity = self.velocity[name] = np.array(grad, dtype=param.dtype)
                else:
                    velocity *= self.momentum
                    velocity += grad
                grad = velocity
            param -= self.lr * grad


class Adam(_Optimizer):
    """Adam (Kingma & Ba, 2015), PyTorch's convention.

    .. math::

        m \\leftarrow \\beta_1 m + (1 - \\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2, \\quad
        p \\leftarrow p - \\eta \\,
            \\frac{m / (1 - \\beta_1^t)}{\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon}

    Parameters
    ----------
    params, grads : mappings name -> ndarray, e.g. ``model.params, model.grads``.
    lr : float, default 1e-3, η.
    betas : (float, float), default (0.9, 0.999).
    eps : float, default 1e-8.
    weight_decay : float, default 0, L2 penalty added to the gradient (not AdamW).
    """

    def __init__(
        self,
        params: Mapping,
        grads: Mapping,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, grads, lr, weight_decay)
        beta1, beta2 = betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}.")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)
        self.step_count = 0
        self.first_moment: dict[str, np.ndarray] = {}
        self.second_moment: dict[str, np.ndarray] = {}

    def step(self) -> None:
        """One update of every parameter, in place."""
        self.step_count += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2 = 1 - beta2**self.step_count
        for name, param, grad in self._named_updates():
            first = self.first_moment.get(name)
            if first is None:  # first step: both moments start at 0
                first = self.first_moment[name] = np.zeros_like(param)
                self.second_moment[name] = np.zeros_like(param)
            second = self.second_moment[name]
            first *= beta1
            first += (1 - beta1) * grad
            second *= beta2
            second += (1 - beta2) * (grad * grad)
            denominator = np.sqrt(second / bias_correction2) + self.eps
            param -= (self.lr / bias_correction1) * first / denominator
