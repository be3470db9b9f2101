"""BatchNorm, LayerNorm, RMSNorm and GroupNorm: thin layers over one shared core.

Each layer only declares

* which axes its statistics are taken over (``reduce_axes``),
* whether it subtracts the mean (``center``), and
* where its statistics come from (the input, or BatchNorm's running averages),

and hands the computation to :mod:`normlab.functional`. Inputs are
features-last: ``(N, D)``, ``(N, T, D)`` or ``(N, H, W, C)``.

Every layer has the same interface::

    y = layer(x, mask=None)      # same as layer.forward(x, mask=None)
    dx = layer.backward(dy)      # fills layer.grads
    layer.params, layer.grads    # {"weight": γ, "bias": β} (keys absent when disabled)
    layer.train(); layer.eval()  # layer.training tells the mode
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np

from normlab import functional as F

__all__ = ["BatchNorm", "GroupNorm", "LayerNorm", "Norm", "RMSNorm"]

_CHANNELS_FIRST_HINT = (
    " normlab is features-last; for channels-first data (N, C, ...) as in PyTorch, "
    "pass np.moveaxis(x, 1, -1)."
)


# ---------------------------------------------------------------------------
# Argument checks (each raises before any state is touched)
# ---------------------------------------------------------------------------


def _check_eps(eps, layer_name: str) -> float:
    if not isinstance(eps, Real) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"{layer_name}: eps must be a number > 0, got {eps!r}.")
    return float(eps)


def _check_positive_int(value, what: str, layer_name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{layer_name}: {what} must be a positive integer, got {value!r}.")
    return int(value)


def _as_shape(normalized_shape, layer_name: str) -> tuple[int, ...]:
    shape = (
        (normalized_shape,) if isinstance(normalized_shape, Integral) else tuple(normalized_shape)
    )
    if not shape:
        raise ValueError(f"{layer_name}: normalized_shape must not be empty.")
    for size in shape:
        _check_positive_int(size, f"every normalized_shape entry (got {shape})", layer_name)
    return tuple(int(size) for size in shape)


def _as_float_array(x, layer_name: str, what: str = "input") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{layer_name} expects a floating-point {what}, got dtype {x.dtype}; "
            f"convert it first, e.g. {what.split()[0]}.astype(np.float32)."
        )
    return x


def _check_mask(mask, x_shape: tuple[int, ...], layer_name: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"{layer_name}: mask must be a boolean array (True = real token), got dtype "
            f"{mask.dtype}; use mask.astype(bool)."
        )
    if mask.shape != x_shape[:-1]:
        raise ValueError(
            f"{layer_name}: mask must have shape x.shape[:-1] = {x_shape[:-1]}, got {mask.shape}."
        )
    return mask


# ---------------------------------------------------------------------------
# The shared interface
# ---------------------------------------------------------------------------


class Norm:
    """Base class: one forward, one backward, parametrized by the subclass.

    A subclass sets :attr:`center` and implements :meth:`_check_input`,
    :meth:`_reduce_axes` and, where the data must be viewed differently
    (GroupNorm), :meth:`_grouped`. BatchNorm also overrides :meth:`_statistics`
    to use and update its running averages.

    Attributes
    ----------
    params : dict of str -> ndarray
        Learned parameters: ``"weight"`` (γ) and ``"bias"`` (β) when enabled.
    grads : dict of str -> ndarray
        Gradients with the same keys and shapes, overwritten by each
        :meth:`backward` (not accumulated as in PyTorch).
    training : bool
        The mode, True after construction; set by :meth:`train` / :meth:`eval`.
    """

    #: subtract the mean (False for RMSNorm)
    center = True

    def __init__(self, param_shape, eps, weight: bool, bias: bool, dtype) -> None:
        self.eps = eps
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}: dtype must be floating, got {self.dtype}.")
        self.params: dict[str, np.ndarray] = {}
        if weight:
            self.params["weight"] = np.ones(param_shape, dtype=self.dtype)
        if bias:
            self.params["bias"] = np.zeros(param_shape, dtype=self.dtype)
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.training = True
        self._cache: F.NormCache | None = None
        self._input_shape: tuple[int, ...] | None = None

    # -- mode ---------------------------------------------------------------

    def train(self, mode: bool = True):
        """Set training mode (``mode=True``) or inference mode; returns the layer."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set inference mode; returns the layer. Same as ``train(False)``."""
        return self.train(False)

    # -- what subclasses declare -------------------------------------------

    def _check_input(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        raise NotImplementedError

    def _grouped(self, x, mask, weight, bias):
        """The view the statistics are taken on: identity except for GroupNorm."""
        return x, mask, weight, bias

    def _eps_for(self, dtype: np.dtype) -> float:
        return self.eps

    def _check_batch(self, x: np.ndarray, mask: np.ndarray | None) -> None:
        """Raise if the statistics cannot be computed from this input (BatchNorm)."""

    def _statistics(self, x, reduce_axes, mask):
        """Mean, variance, count and whether they depend on ``x`` (batch statistics)."""
        mean, var, count = F.moments(x, reduce_axes, center=self.center, mask=mask)
        return mean, var, count, True

    # -- forward and backward ----------------------------------------------

    def __call__(self, x, mask=None) -> np.ndarray:
        return self.forward(x, mask=mask)

    def forward(self, x, mask=None) -> np.ndarray:
        """Normalize ``x`` (features-last); ``mask`` (shape ``x.shape[:-1]``) marks real tokens.

        Returns an array of the same shape and dtype; masked positions are 0.
        """
        name = type(self).__name__
        x = _as_float_array(x, name)
        self._check_input(x)
        mask = _check_mask(mask, x.shape, name)
        self._check_batch(x, mask)
        mask_b = None if mask is None else mask[..., None]  # broadcasts over features
        weight = self.params.get("weight")
        bias = self.params.get("bias")
        if weight is not None:
            weight = weight.astype(x.dtype, copy=False)
        if bias is not None:
            bias = bias.astype(x.dtype, copy=False)
        x_view, mask_view, weight, bias = self._grouped(x, mask_b, weight, bias)
        reduce_axes = self._reduce_axes(x_view.ndim)
        mean, var, count, batch_statistics = self._statistics(x_view, reduce_axes, mask_view)
        y, cache = F.normalize(
            x_view,
            mean,
            var,
            self._eps_for(x.dtype),
            weight,
            bias,
            reduce_axes=reduce_axes,
            center=self.center,
            batch_statistics=batch_statistics,
            mask=mask_view,
            count=count,
        )
        self._cache, self._input_shape = cache, x.shape
        return y.reshape(x.shape)

    def backward(self, dy) -> np.ndarray:
        """Gradient with respect to the input of the last forward; fills :attr:`grads`.

        Works in both modes: in training mode the gradient also flows through
        the batch statistics; BatchNorm in eval mode is an affine map.
        """
        name = type(self).__name__
        if self._cache is None:
            raise RuntimeError(f"{name}.backward was called before any forward call.")
        dy = _as_float_array(dy, name, what="dy (upstream gradient)")
        if dy.shape != self._input_shape:
            raise ValueError(
                f"{name}.backward: dy must have the shape of the last forward's output "
                f"{self._input_shape}, got {dy.shape}."
            )
        cache = self._cache
        dx, dweight, dbias = F.normalize_backward(dy.reshape(cache.xhat.shape), cache)
        if dweight is not None:
            self.grads["weight"] = dweight.reshape(self.params["weight"].shape).astype(
                self.dtype, copy=False
            )
        if dbias is not None:
            self.grads["bias"] = dbias.reshape(self.params["bias"].shape).astype(
                self.dtype, copy=False
            )
        return dx.reshape(self._input_shape)


# ---------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------


class BatchNorm(Norm):
    """Batch normalization over every axis except the last (Ioffe & Szegedy, 2015).

    .. math::

        y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} \\cdot \\gamma + \\beta

    The mean and (biased) variance are taken per feature over the batch and
    every other non-feature axis: for ``x`` of shape (N, T, D) one mean per
    feature, averaged over all N·T tokens. In training mode the batch
    statistics are used and the running averages updated; in eval mode the
    running averages are used and the layer is a fixed affine map, so each
    sample's output no longer depends on its batch-mates.

    ``nl.BatchNorm`` on (N, L, C) equals ``torch.nn.BatchNorm1d`` on (N, C, L),
    and on (N, H, W, C) equals ``torch.nn.BatchNorm2d`` on (N, C, H, W).

    Parameters
    ----------
    num_features : int
        C, the size of the last axis.
    eps : float, default 1e-5
        Added to the variance.
    momentum : float in [0, 1] or None, default 0.1
        ``running = (1 - momentum) * running + momentum * batch``; None gives
        the cumulative average over all batches seen (``num_batches_tracked``).
    affine : bool, default True
        Learn γ (``weight``, ones) and β (``bias``, zeros) of shape (C,).
    track_running_stats : bool, default True
        Keep running averages for eval mode; when False, batch statistics are
        used in both modes and ``running_mean``/``running_var`` are None.
    dtype : floating dtype, default float32
        dtype of the parameters and running statistics.

    Attributes
    ----------
    running_mean : (C,) ndarray, starts at 0; updated with the batch mean.
    running_var : (C,) ndarray, starts at 1; updated with the *unbiased* batch
        variance ``var * n / (n - 1)``, while the forward normalizes with the
        biased one, as PyTorch does.
    num_batches_tracked : int, the number of training batches that updated them.
    params, grads, training : see :class:`Norm`.

    Shape
    -----
    Input (N, C), (N, L, C) or (N, H, W, C); output the same. ``mask`` of shape
    ``x.shape[:-1]`` removes padded tokens from every statistic.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> bn = nl.BatchNorm(3)
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(8, 3)).astype(np.float32)
    >>> y = bn(x)
    >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5))
    True
    >>> bn.num_batches_tracked
    1
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype=np.float32,
    ) -> None:
        self.num_features = _check_positive_int(num_features, "num_features", "BatchNorm")
        eps = _check_eps(eps, "BatchNorm")
        if momentum is not None and (
            not isinstance(momentum, Real) or isinstance(momentum, bool) or not 0 <= momentum <= 1
        ):
            raise ValueError(
                f"BatchNorm: momentum must be in [0, 1] or None (cumulative average), "
                f"got {momentum!r}. PyTorch's convention: running = (1 - momentum) * running "
                "+ momentum * batch, so Keras' momentum=0.99 is momentum=0.01 here."
            )
        super().__init__((self.num_features,), eps, affine, affine, dtype)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, dtype=self.dtype)
            self.running_var = np.ones(self.num_features, dtype=self.dtype)
        else:
            self.running_mean = self.running_var = None
        self.num_batches_tracked = 0

    def __repr__(self) -> str:
        return (
            f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats})"
        )

    @property
    def uses_batch_statistics(self) -> bool:
        """True when the forward normalizes with the statistics of its own input."""
        return self.training or not self.track_running_stats

    def reset_running_stats(self) -> None:
        """Running mean to 0, running variance to 1, ``num_batches_tracked`` to 0."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
        self.num_batches_tracked = 0

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - 1))  # (N, T, C) -> (0, 1): one statistic per feature

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 2:
            raise ValueError(
                f"BatchNorm expects input of at least 2 dims (N, C), got shape {x.shape}; "
                "for a single sample use x[None, :]."
            )
        if x.shape[-1] != self.num_features:
            hint = _CHANNELS_FIRST_HINT if x.ndim >= 3 else ""
            raise ValueError(
                f"BatchNorm expected the last dimension to be num_features={self.num_features}, "
                f"got {x.shape[-1]} (input shape {x.shape}).{hint}"
            )

    def forward(self, x, mask=None) -> np.ndarray:
        # A batch with inf gives NaN statistics (inf - inf): "what the math gives". The
        # running statistics then stay as they were, and one RuntimeWarning says so in
        # normlab's words instead of numpy's "invalid value" warnings.
        with np.errstate(invalid="ignore"):
            return super().forward(x, mask)

    def _check_batch(self, x: np.ndarray, mask: np.ndarray | None) -> None:
        if not self.uses_batch_statistics:
            return
        values_per_feature = x.size // self.num_features if mask is None else int(mask.sum())
        if values_per_feature <= 1:
            padding = " after masking" if mask is not None else ""
            if self.track_running_stats:
                fix = "call .eval() to normalize with the running statistics"
            else:  # no running statistics to fall back on
                fix = "build the layer with track_running_stats=True and call .eval()"
            raise ValueError(
                "BatchNorm needs more than 1 value per feature to compute batch statistics, "
                f"got {values_per_feature}{padding} (input shape {x.shape}). Use a larger "
                f"batch, or {fix}."
            )

    def _statistics(self, x, reduce_axes, mask):
        if not self.uses_batch_statistics:
            running_mean = self.running_mean.astype(x.dtype, copy=False)
            running_var = self.running_var.astype(x.dtype, copy=False)
            return running_mean, running_var, None, False
        mean, var, count = F.moments(x, reduce_axes, center=True, mask=mask)
        if self.training and self.track_running_stats:
            values_per_feature = float(np.max(count))  # the same for every feature
            self._update_running_stats(mean.reshape(-1), var.reshape(-1), values_per_feature)
        return mean, var, count, True

    def _update_running_stats(self, mean, var, values_per_feature: float) -> None:
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            warnings.warn(
                "BatchNorm: the training batch contains NaN or inf; its output is what the math "
                "gives, but the running statistics were not updated from it.",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self.num_batches_tracked += 1
        if self.momentum is None:  # cumulative average over all batches seen
            factor = 1.0 / self.num_batches_tracked
        else:
            factor = self.momentum
        n = values_per_feature
        unbiased_var = var * (n / (n - 1))  # Bessel's correction for the population estimate
        self.running_mean[...] = (1 - factor) * self.running_mean + factor * mean
        self.running_var[...] = (1 - factor) * self.running_var + factor * unbiased_var


# ---------------------------------------------------------------------------
# LayerNorm and RMSNorm
# ---------------------------------------------------------------------------


class _TrailingNorm(Norm):
    """Statistics over the trailing ``normalized_shape`` axes of each sample/token."""

    def __init__(self, normalized_shape, eps, weight: bool, bias: bool, dtype) -> None:
        name = type(self).__name__
        self.normalized_shape = _as_shape(normalized_shape, name)
        super().__init__(self.normalized_shape, eps, weight, bias, dtype)

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - len(self.normalized_shape), ndim))

    def _check_input(self, x: np.ndarray) -> None:
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k :] != self.normalized_shape:
            trailing = x.shape[max(x.ndim - k, 0) :]
            hint = _CHANNELS_FIRST_HINT if x.ndim >= 3 else ""
            size = self.normalized_shape[0] if k == 1 else self.normalized_shape
            given = trailing[0] if k == 1 and trailing else trailing
            raise ValueError(
                f"{type(self).__name__} expected the trailing shape to be normalized_shape="
                f"{size}, got {given} (input shape {x.shape}).{hint}"
            )


class LayerNorm(_TrailingNorm):
    """Layer normalization over the last axes of each sample (Ba, Kiros & Hinton, 2016).

    .. math::

        y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} \\cdot \\gamma + \\beta

    The mean and (biased) variance are taken over the trailing
    ``normalized_shape`` axes, separately for every sample and token: for ``x``
    of shape (N, T, D) and ``normalized_shape=D`` there is one mean per token,
    averaged over its D features. Nothing is shared across the batch, so the
    layer computes the same in training and eval mode.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing shape to normalize over (D, or e.g. (T, D)).
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learn γ (``weight``, ones) and β (``bias``, zeros) of ``normalized_shape``.
    bias : bool, default True
        Learn β too (only with ``elementwise_affine``).
    dtype : floating dtype, default float32 (the parameters').

    Attributes
    ----------
    params, grads, training : see :class:`Norm`.

    Shape
    -----
    Input (*, *normalized_shape); output the same.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> ln = nl.LayerNorm(4)
    >>> x = np.arange(8, dtype=np.float64).reshape(2, 4)
    >>> np.round(ln(x), 3)
    array([[-1.342, -0.447,  0.447,  1.342],
           [-1.342, -0.447,  0.447,  1.342]])
    """

    def __init__(
        self,
        normalized_shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype=np.float32,
    ) -> None:
        eps = _check_eps(eps, "LayerNorm")
        super().__init__(
            normalized_shape, eps, elementwise_affine, elementwise_affine and bias, dtype
        )
        self.elementwise_affine = bool(elementwise_affine)
        self.bias = bool(bias)

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias})"
        )


class RMSNorm(_TrailingNorm):
    """Root-mean-square normalization over the last axes (Zhang & Sennrich, 2019).

    .. math::

        y = \\frac{x}{\\sqrt{\\frac{1}{n}\\sum_i x_i^2 + \\epsilon}} \\cdot \\gamma

    LayerNorm without the centering: the mean is not subtracted and there is
    no β. The mean square is taken over the trailing ``normalized_shape`` axes
    of every sample and token, as in :class:`LayerNorm`. The output is
    invariant to re-scaling each sample, but not to shifting it.

    Parameters
    ----------
    normalized_shape : int or tuple of int
    eps : float or None, default None
        None means the machine epsilon of the input's dtype
        (``np.finfo(x.dtype).eps``: 1.19e-7 for float32, 2.22e-16 for float64).
    elementwise_affine : bool, default True
        Learn γ (``weight``, ones) of ``normalized_shape``.
    dtype : floating dtype, default float32 (the parameters').

    Attributes
    ----------
    params, grads, training : see :class:`Norm`.

    Shape
    -----
    Input (*, *normalized_shape); output the same.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> rms = nl.RMSNorm(2)
    >>> rms(np.array([[3.0, 4.0]]))   # rms = sqrt((9 + 16) / 2)
    array([[0.84852814, 1.13137085]])
    """

    center = False

    def __init__(
        self,
        normalized_shape,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype=np.float32,
    ) -> None:
        if eps is not None:
            eps = _check_eps(eps, "RMSNorm")
        super().__init__(normalized_shape, eps, elementwise_affine, False, dtype)
        self.elementwise_affine = bool(elementwise_affine)

    def _eps_for(self, dtype: np.dtype) -> float:
        return float(np.finfo(dtype).eps) if self.eps is None else self.eps

    def __repr__(self) -> str:
        return (
            f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine})"
        )


# ---------------------------------------------------------------------------
# GroupNorm
# ---------------------------------------------------------------------------


class GroupNorm(Norm):
    """Group normalization: per sample, over space and one group of channels (Wu & He, 2018).

    .. math::

        y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} \\cdot \\gamma + \\beta

    The C channels are split into ``num_groups`` consecutive groups (channel c
    is in group ``c // (C // num_groups)``, as in PyTorch). For ``x`` of shape
    (N, H, W, C) there is one mean per sample and group, averaged over
    H·W·C/G values. ``num_groups=1`` normalizes each sample over all its values
    (LayerNorm over (H, W, C) with per-channel γ/β); ``num_groups=C`` is
    InstanceNorm. Computed as the same core on the view (N, H, W, G, C/G).

    Parameters
    ----------
    num_groups : int
        G, which must divide ``num_channels``.
    num_channels : int
        C, the size of the last axis.
    eps : float, default 1e-5
    affine : bool, default True
        Learn per-channel γ (``weight``, ones) and β (``bias``, zeros) of shape (C,).
    dtype : floating dtype, default float32 (the parameters').

    Attributes
    ----------
    params, grads, training : see :class:`Norm`.

    Shape
    -----
    Input (N, C), (N, L, C) or (N, H, W, C); output the same.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> gn = nl.GroupNorm(2, 4)
    >>> x = np.random.default_rng(0).normal(size=(3, 5, 4))
    >>> y = gn(x)
    >>> bool(np.allclose(y[..., :2].mean(axis=(1, 2)), 0))   # group 0 of every sample
    True
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dtype=np.float32,
    ) -> None:
        self.num_groups = _check_positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = _check_positive_int(num_channels, "num_channels", "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: num_channels={self.num_channels} must be divisible by "
                f"num_groups={self.num_groups}."
            )
        eps = _check_eps(eps, "GroupNorm")
        super().__init__((self.num_channels,), eps, affine, affine, dtype)
        self.affine = bool(affine)

    def __repr__(self) -> str:
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine})"
        )

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 2:
            raise ValueError(
                f"GroupNorm expects input of at least 2 dims (N, C), got shape {x.shape}."
            )
        if x.shape[-1] != self.num_channels:
            hint = _CHANNELS_FIRST_HINT if x.ndim >= 3 else ""
            raise ValueError(
                f"GroupNorm expected the last dimension to be num_channels={self.num_channels}, "
                f"got {x.shape[-1]} (input shape {x.shape}).{hint}"
            )

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        # view (N, *spatial, G, C/G): every spatial axis and the within-group channel axis
        return (*range(1, ndim - 2), ndim - 1)

    def _grouped(self, x, mask, weight, bias):
        group_size = self.num_channels // self.num_groups
        grouped_shape = (*x.shape[:-1], self.num_groups, group_size)
        x_view = x.reshape(grouped_shape)  # (N, *spatial, G, C/G)
        mask_view = None if mask is None else mask[..., None]  # (N, *spatial, 1, 1)
        if weight is not None:
            weight = weight.reshape(self.num_groups, group_size)
        if bias is not None:
            bias = bias.reshape(self.num_groups, group_size)
        return x_view, mask_view, weight, bias
