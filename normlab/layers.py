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

import inspect
import math
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from normlab import functional as F
from normlab.module import (
    CHANNELS_FIRST_HINT,
    Identity,
    Module,
    as_float_array,
    check_eps,
    check_mask,
    check_positive_int,
)

__all__ = [
    "NORM_KINDS",
    "BatchNorm",
    "BatchRenorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Norm",
    "NormKind",
    "RMSNorm",
    "RenormCorrection",
    "default_num_groups",
    "make_norm",
]


def _as_shape(normalized_shape, layer_name: str) -> tuple[int, ...]:
    shape = (
        (normalized_shape,) if isinstance(normalized_shape, Integral) else tuple(normalized_shape)
    )
    if not shape:
        raise ValueError(f"{layer_name}: normalized_shape must not be empty.")
    for size in shape:
        check_positive_int(size, f"every normalized_shape entry (got {shape})", layer_name)
    return tuple(int(size) for size in shape)


# ---------------------------------------------------------------------------
# The shared interface
# ---------------------------------------------------------------------------


class Norm(Module):
    """Base class of the normalization layers: one forward, one backward, parametrized.

    A subclass sets :attr:`center` and implements :meth:`_check_input`,
    :meth:`_reduce_axes` and, where the data must be viewed differently
    (GroupNorm, BatchNorm's ghost batches), :meth:`_grouped`. BatchNorm also
    overrides :meth:`_statistics` to use and update its running averages, and
    Batch Renorm :meth:`_scale_and_shift` and :meth:`_parameter_grads` to apply its
    correction.

    Attributes
    ----------
    params : dict of str -> ndarray
        Learned parameters: ``"weight"`` (γ) and ``"bias"`` (β) when enabled.
    grads : dict of str -> ndarray
        Gradients with the same keys and shapes, overwritten by each
        :meth:`backward` (not accumulated as in PyTorch); empty before the first
        backward, as PyTorch's ``.grad`` is None then.
    training : bool
        The mode, True after construction; set by :meth:`train` / :meth:`eval`.
    all_reduce : callable or None
        None (the default): every value of a statistic is on this device.
        :mod:`normlab.parallel` sets it on the BatchNorm layers of a model replica to
        a sum over all devices, which makes them synchronized BatchNorm (see
        :func:`normlab.functional.moments`); the per-sample norms never need it.
    """

    #: subtract the mean (False for RMSNorm)
    center = True

    #: A bias b_c added to feature c just before the layer is cancelled exactly when the
    #: layer subtracts a mean taken within each feature: BatchNorm (over N and positions),
    #: InstanceNorm (over positions), GroupNorm with one channel per group. A mean over
    #: several features (LayerNorm, GroupNorm's wider groups) removes only their average
    #: bias, and RMSNorm subtracts nothing. (Ioffe & Szegedy 2015, §3.2, drop the bias
    #: before BatchNorm for this reason.) Checked numerically in the tests.
    cancels_feature_bias = False
    #: completes each statistic's sums over devices (synchronized BatchNorm), or None
    all_reduce: Callable | None = None

    def __init__(self, param_shape, eps, weight: bool, bias: bool, dtype) -> None:
        super().__init__()
        self.eps = eps
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}: dtype must be floating, got {self.dtype}.")
        if weight:
            self.add_param("weight", np.ones(param_shape, dtype=self.dtype))
        if bias:
            self.add_param("bias", np.zeros(param_shape, dtype=self.dtype))
        self._input_shape: tuple[int, ...] | None = None

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
        mean, var, count = F.moments(
            x, reduce_axes, center=self.center, mask=mask, all_reduce=self.all_reduce
        )
        return mean, var, count, True

    def _scale_and_shift(self, weight, bias):
        """The scale and shift the core applies after normalizing: γ and β themselves."""
        return weight, bias

    def _parameter_grads(self, dweight, dbias):
        """Gradients of γ and β from those of the applied scale and shift: the same here."""
        return dweight, dbias

    # -- forward and backward ----------------------------------------------

    def forward(self, x, mask=None) -> np.ndarray:
        """Normalize ``x`` (features-last); ``mask`` (shape ``x.shape[:-1]``) marks real tokens.

        Returns an array of the same shape and dtype; masked positions are 0.
        """
        name = type(self).__name__
        x = as_float_array(x, name)
        self.check_params()
        self._check_input(x)
        mask = check_mask(mask, x.shape, name)
        self._check_batch(x, mask)
        feature_mask = None if mask is None else mask[..., None]  # broadcasts over features
        weight = self.params.get("weight")
        bias = self.params.get("bias")
        if weight is not None:
            weight = weight.astype(x.dtype, copy=False)
        if bias is not None:
            bias = bias.astype(x.dtype, copy=False)
        x_view, mask_view, weight, bias = self._grouped(x, feature_mask, weight, bias)
        reduce_axes = self._reduce_axes(x_view.ndim)
        mean, var, count, batch_statistics = self._statistics(x_view, reduce_axes, mask_view)
        weight, bias = self._scale_and_shift(weight, bias)
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
            all_reduce=self.all_reduce,
        )
        self._cache, self._input_shape = cache, x.shape
        return y.reshape(x.shape)

    def backward(self, dy) -> np.ndarray:
        """Gradient with respect to the input of the last forward; fills :attr:`grads`.

        Works in both modes: in training mode the gradient also flows through
        the batch statistics; BatchNorm in eval mode is an affine map.
        """
        name = type(self).__name__
        cache = self.require_cache()
        dy = as_float_array(dy, name, what="dy (upstream gradient)")
        if dy.shape != self._input_shape:
            raise ValueError(
                f"{name}.backward: dy must have the shape of the last forward's output "
                f"{self._input_shape}, got {dy.shape}."
            )
        dx, dweight, dbias = F.normalize_backward(dy.reshape(cache.xhat.shape), cache)
        dweight, dbias = self._parameter_grads(dweight, dbias)
        if dweight is not None:
            self.set_grad("weight", dweight)
        if dbias is not None:
            self.set_grad("bias", dbias)
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

    **Ghost batches** (Hoffer et al., 2017): with ``ghost_batch_size=g`` the batch is
    split into groups of g consecutive samples and each group is normalized with
    its own statistics, exactly as ordinary BatchNorm would normalize it as a batch
    of its own: the batch the statistics come from is smaller than the batch SGD
    averages over, as on k devices with B/k samples each. The running averages take
    one step per training forward, towards the *average* of the ghost batches'
    statistics (their means, and their unbiased variances). Hoffer et al. take one
    momentum step per ghost batch instead, which makes the averaging horizon
    depend on g (a step then keeps ``(1 - momentum) ** (B / g)`` of the old value);
    one step per forward keeps the horizon and ``num_batches_tracked`` in SGD steps
    whatever g is, so a sweep over g changes only the statistics batch. It is also
    what per-device BatchNorm with its buffers averaged over the devices keeps
    (:mod:`normlab.parallel`).

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
        Create running averages for eval mode. When False at construction,
        ``running_mean``/``running_var`` are None and batch statistics are used
        in both modes.
    bias : bool, default True (keyword-only)
        Learn β too (only with ``affine``), as ``torch.nn.BatchNorm1d(bias=...)``.
    ghost_batch_size : int or None, default None (keyword-only)
        None: statistics over the whole batch. g: over each group of g consecutive
        samples (ghost batches, above); the batch size must then be a multiple of g
        (a ValueError otherwise, naming both) whenever batch statistics are used.
        ``ghost_batch_size`` equal to the batch size is ordinary BatchNorm.
    max_positions : int or None, default None (keyword-only)
        None: one statistic per feature, over the batch and every position. T_max:
        **per-position statistics** on sequences (N, T, C), the BatchNorm of recurrent
        networks (Cooijmans et al. 2016, "Recurrent Batch Normalization"): position t is
        normalized with the mean and variance of the N values at that position (over the
        real tokens under a mask), and the running statistics are kept per position,
        of shape (T_max, C). Training batches must be at most T_max long; in eval mode a
        position t >= T_max reuses the statistics of position T_max - 1, as Cooijmans et
        al. do for test sequences longer than any seen in training. Not with ghost batches.
    dtype : floating dtype, default float32
        dtype of the parameters and running statistics.

    Attributes
    ----------
    running_mean : (C,) ndarray or None, starts at 0; updated with the batch mean
        ((T_max, C) with ``max_positions``: one row per position).
    running_var : (C,) ndarray or None, starts at 1; updated with the *unbiased*
        batch variance ``var * n / (n - 1)``, while the forward normalizes with the
        biased one, as PyTorch does.
    num_batches_tracked : int, the number of training batches that updated them.
    track_running_stats : bool
        Whether training batches update the running averages. As in PyTorch, the
        *existence* of the running averages decides what eval mode uses: a layer
        built with them and later set to ``track_running_stats = False`` still
        normalizes with them in eval mode (frozen statistics) and no longer updates
        them in training mode.
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
    >>> ghost = nl.BatchNorm(3, ghost_batch_size=4)   # two ghost batches of 4 samples
    >>> means = ghost(x).reshape(2, 4, 3).mean(axis=1)   # (ghost batch, feature)
    >>> bool(np.allclose(means, 0, atol=1e-5))
    True
    >>> per_position = nl.BatchNorm(3, max_positions=5)   # statistics per time step
    >>> sequences = np.random.default_rng(1).normal(size=(8, 5, 3)).astype(np.float32)
    >>> per_position(sequences).mean(axis=0).round(5).max() == 0, per_position.running_mean.shape
    (np.True_, (5, 3))
    """

    cancels_feature_bias = True  # its mean is over each feature's own values

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        ghost_batch_size: int | None = None,
        max_positions: int | None = None,
        dtype=np.float32,
    ) -> None:
        name = type(self).__name__  # BatchRenorm's messages name BatchRenorm
        self.num_features = check_positive_int(num_features, "num_features", name)
        if ghost_batch_size is not None:
            ghost_batch_size = check_positive_int(ghost_batch_size, "ghost_batch_size", name)
        if max_positions is not None:
            max_positions = check_positive_int(max_positions, "max_positions", name)
            if ghost_batch_size is not None:
                raise ValueError(
                    f"{name}: ghost batches and per-position statistics do not combine; "
                    f"give ghost_batch_size={ghost_batch_size} or max_positions={max_positions}, "
                    "not both."
                )
        self.ghost_batch_size = ghost_batch_size
        self.max_positions = max_positions
        self._ghost_axis = False  # whether the last forward split the batch into ghost batches
        eps = check_eps(eps, name)
        if momentum is not None and (
            not isinstance(momentum, Real) or isinstance(momentum, bool) or not 0 <= momentum <= 1
        ):
            raise ValueError(
                f"{name}: momentum must be in [0, 1] or None (cumulative average), "
                f"got {momentum!r}. PyTorch's convention: running = (1 - momentum) * running "
                "+ momentum * batch, so Keras' momentum=0.99 is momentum=0.01 here."
            )
        super().__init__((self.num_features,), eps, affine, affine and bias, dtype)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.bias = bool(bias)
        self.track_running_stats = bool(track_running_stats)
        if self.track_running_stats:
            # (C,), or one row per position: (T_max, C)
            stat_shape = (self.num_features,)
            if max_positions is not None:
                stat_shape = (max_positions, self.num_features)
            self.running_mean = np.zeros(stat_shape, dtype=self.dtype)
            self.running_var = np.ones(stat_shape, dtype=self.dtype)
        else:
            self.running_mean = self.running_var = None
        self.num_batches_tracked = 0

    def __repr__(self) -> str:
        bias = "" if self.bias else ", bias=False"
        ghost = (
            "" if self.ghost_batch_size is None else f", ghost_batch_size={self.ghost_batch_size}"
        )
        positions = "" if self.max_positions is None else f", max_positions={self.max_positions}"
        return (
            f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}{bias}{ghost}"
            f"{positions})"
        )

    @property
    def has_running_stats(self) -> bool:
        """True when the layer holds running averages (it was built to track them)."""
        return self.running_mean is not None

    @property
    def uses_batch_statistics(self) -> bool:
        """True when the forward normalizes with the statistics of its own input.

        Training mode always does; eval mode does only without running averages.
        """
        return self.training or not self.has_running_stats

    def reset_running_stats(self) -> None:
        """Running mean to 0, running variance to 1, ``num_batches_tracked`` to 0."""
        if self.has_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
        self.num_batches_tracked = 0

    def buffers(self) -> dict[str, np.ndarray]:
        if not self.has_running_stats:
            return {}
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": np.array(self.num_batches_tracked, dtype=np.int64),
        }

    def load_buffer(self, name: str, value: np.ndarray) -> None:
        if name == "num_batches_tracked":
            self.num_batches_tracked = int(value)
        else:
            getattr(self, name)[...] = value

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        if self._ghost_axis:  # (B/g, g, T, C) -> (1, 2): one statistic per ghost batch and feature
            return tuple(range(1, ndim - 1))
        if self.max_positions is not None:  # (N, T, C) -> (0,): one per position and feature
            return (0,)
        return tuple(range(ndim - 1))  # (N, T, C) -> (0, 1): one statistic per feature

    def _grouped(self, x, mask, weight, bias):
        ghost = self.ghost_batch_size
        # A single ghost batch is the batch itself: computed as ordinary BatchNorm, bit for bit.
        self._ghost_axis = ghost is not None and self.uses_batch_statistics and x.shape[0] > ghost
        if not self._ghost_axis:
            return x, mask, weight, bias
        x_view = x.reshape(x.shape[0] // ghost, ghost, *x.shape[1:])  # (B/g, g, *spatial, C)
        mask_view = None if mask is None else mask.reshape(*x_view.shape[:-1], 1)
        return x_view, mask_view, weight, bias

    def _check_input(self, x: np.ndarray) -> None:
        name = type(self).__name__
        if x.ndim < 2:
            raise ValueError(
                f"{name} expects input of at least 2 dims (N, C), got shape {x.shape}; "
                "for a single sample use x[None, :]."
            )
        if x.shape[-1] != self.num_features:
            hint = CHANNELS_FIRST_HINT if x.ndim >= 3 else ""
            raise ValueError(
                f"{name} expected the last dimension to be num_features={self.num_features}, "
                f"got {x.shape[-1]} (input shape {x.shape}).{hint}"
            )
        if self.max_positions is not None:
            if x.ndim != 3:
                raise ValueError(
                    f"{name} with max_positions={self.max_positions} normalizes sequences "
                    f"(N, T, C) position by position, got input of shape {x.shape}."
                )
            if self.uses_batch_statistics and x.shape[1] > self.max_positions:
                raise ValueError(
                    f"{name}: a training batch of {x.shape[1]} positions is longer than "
                    f"max_positions={self.max_positions}, which has no running statistics for "
                    f"the positions beyond; crop the batch to {self.max_positions} positions or "
                    "build the layer with a larger max_positions (eval mode takes any length)."
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
        name = type(self).__name__
        batch_size, ghost = x.shape[0], self.ghost_batch_size
        if ghost is not None and batch_size % ghost:
            raise ValueError(
                f"{name}: a batch of {batch_size} samples does not split into ghost batches "
                f"of ghost_batch_size={ghost}; pass a batch size that is a multiple of {ghost} "
                f"(e.g. drop the last {batch_size % ghost} samples) or another ghost_batch_size."
            )
        if self.max_positions is not None:  # a statistic per position: its real tokens
            per_position = mask.sum(axis=0) if mask is not None else np.full(x.shape[1], batch_size)
            occupied = per_position[per_position > 0]  # a position of padding only has none
            values_per_feature = int(occupied.min(initial=batch_size))
        elif mask is None:
            statistics_batch = batch_size if ghost is None else min(ghost, batch_size)
            values_per_feature = statistics_batch * math.prod(x.shape[1:-1])
        elif ghost is None:
            values_per_feature = int(mask.sum())
        else:  # the ghost batch with the fewest real tokens
            real_per_ghost = mask.reshape(batch_size // ghost, -1).sum(axis=1)
            values_per_feature = int(real_per_ghost.min(initial=mask.size))
        if self.all_reduce is not None:  # synchronized: the values on every device count
            values_per_feature = int(self.all_reduce(values_per_feature))
        if values_per_feature <= 1:
            padding = " after masking" if mask is not None else ""
            where = "" if ghost is None else f" in a ghost batch of {ghost} samples"
            if self.has_running_stats:
                fix = "call .eval() to normalize with the running statistics"
            else:  # no running statistics to fall back on
                fix = "build the layer with track_running_stats=True and call .eval()"
            larger = "batch" if ghost is None else "ghost_batch_size"
            raise ValueError(
                f"{name} needs more than 1 value per feature to compute batch statistics, "
                f"got {values_per_feature}{padding}{where} (input shape {x.shape}). Use a "
                f"larger {larger}, or {fix}."
            )

    def _statistics(self, x, reduce_axes, mask):
        if not self.uses_batch_statistics:
            running_mean = self.running_mean.astype(x.dtype, copy=False)
            running_var = self.running_var.astype(x.dtype, copy=False)
            if self.max_positions is not None:  # row t, or the last row for t >= T_max
                rows = np.minimum(np.arange(x.shape[1]), self.max_positions - 1)  # (T,)
                running_mean, running_var = running_mean[rows][None], running_var[rows][None]
            return running_mean, running_var, None, False
        mean, var, count = F.moments(
            x, reduce_axes, center=True, mask=mask, all_reduce=self.all_reduce
        )
        if self.training and self.track_running_stats and self.has_running_stats:
            self._update_running_stats(mean, var, count)
        return mean, var, count, True

    def _update_running_stats(self, mean, var, count) -> None:
        """One momentum step towards this batch's mean and unbiased variance.

        ``mean``, ``var`` and ``count`` are what :func:`~normlab.functional.moments`
        returned: one statistic per feature, or per ghost batch and feature, whose
        average is then the step's target.
        """
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            warnings.warn(
                f"{type(self).__name__}: the training batch contains NaN or inf; its output is "
                "what the math gives, but the running statistics were not updated from it.",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self.num_batches_tracked += 1
        if self.momentum is None:  # cumulative average over all batches seen
            factor = 1.0 / self.num_batches_tracked
        else:
            factor = self.momentum
        n = count  # values per statistic: an int, or an array under a mask
        bessel = n / (n - 1)  # Bessel's correction for the population estimate
        if isinstance(bessel, np.ndarray):
            bessel = bessel.astype(var.dtype)
        unbiased_var = var * bessel
        if self.max_positions is not None:  # (1, T, C): rows 0..T-1 of the (T_max, C) buffers
            # a position with no real token in this batch has no statistic: its row stays
            seen = np.broadcast_to(np.asarray(n) > 0, mean.shape)[0]  # (T, C)
            length = mean.shape[1]
            for running, batch in (
                (self.running_mean, mean[0]),
                (self.running_var, unbiased_var[0]),
            ):
                rows = running[:length]  # (T, C), a view
                rows[...] = np.where(seen, (1 - factor) * rows + factor * batch, rows)
            return
        ghost_means = mean.reshape(-1, self.num_features)  # (G, C): G ghost batches, or 1
        ghost_vars = unbiased_var.reshape(-1, self.num_features)  # (G, C)
        if len(ghost_means) == 1:  # no ghost batches: the batch's own statistics
            batch_mean, batch_var = ghost_means[0], ghost_vars[0]  # (C,)
        else:  # one step towards the ghost batches' average
            batch_mean, batch_var = ghost_means.mean(axis=0), ghost_vars.mean(axis=0)  # (C,)
        self.running_mean[...] = (1 - factor) * self.running_mean + factor * batch_mean
        self.running_var[...] = (1 - factor) * self.running_var + factor * batch_var


# ---------------------------------------------------------------------------
# Batch Renormalization
# ---------------------------------------------------------------------------


class RenormCorrection(NamedTuple):
    """Batch Renorm's per-feature correction of one training batch, each of shape (C,)."""

    r: np.ndarray  # clip(σ_B / σ, 1/r_max, r_max): the batch's scale relative to the running one
    d: np.ndarray  # clip((μ_B - μ) / σ, -d_max, d_max): its shift, in running standard deviations


def _check_clip_limit(value, name: str, lowest: float) -> float:
    valid = isinstance(value, Real) and not isinstance(value, bool) and value >= lowest
    if not valid:  # NaN fails the comparison too
        raise ValueError(f"BatchRenorm: {name} must be a number >= {lowest:g}, got {value!r}.")
    return float(value)


class BatchRenorm(BatchNorm):
    """Batch Renormalization: BatchNorm corrected towards its running statistics (Ioffe, 2017).

    In training mode each feature is normalized with the batch statistics, then
    corrected by ``r`` and ``d`` towards what the running statistics would give:

    .. math::

        \\hat{x} = \\frac{x - \\mu_B}{\\sigma_B}\\, r + d, \\qquad
        y = \\gamma \\hat{x} + \\beta, \\qquad
        r = \\mathrm{clip}\\Big(\\frac{\\sigma_B}{\\sigma}, \\frac{1}{r_{max}}, r_{max}\\Big),
        \\quad
        d = \\mathrm{clip}\\Big(\\frac{\\mu_B - \\mu}{\\sigma}, -d_{max}, d_{max}\\Big)

    where eps sits inside both standard deviations: the batch's
    :math:`\\sigma_B = \\sqrt{\\mathrm{Var}_B[x] + \\epsilon}` (the biased variance
    BatchNorm normalizes with) and the running
    :math:`\\sigma = \\sqrt{\\texttt{running\\_var} + \\epsilon}`, with
    :math:`\\mu` = ``running_mean``. So when neither r nor d is clipped, the training
    output is exactly the eval output :math:`\\gamma (x - \\mu)/\\sigma + \\beta`; the
    clipping lets the batch statistics take over when the running ones are far off.
    r and d are computed with the running statistics from *before* this batch
    updates them (the paper's Algorithm 1), per feature over the real tokens.

    **Backward.** r and d are constants in the backward pass (stop-gradient). The
    training forward is then BatchNorm with scale :math:`\\gamma r` and shift
    :math:`\\gamma d + \\beta`, and it is computed that way, on the same core; its
    gradients follow, with :math:`\\hat{x}_B = (x - \\mu_B)/\\sigma_B`:

    .. math::

        \\frac{\\partial L}{\\partial x}
            = r \\cdot \\frac{\\partial L}{\\partial x}\\Big|_{\\text{BatchNorm}},
        \\qquad
        \\frac{\\partial L}{\\partial \\gamma} = r \\sum dy\\, \\hat{x}_B + d \\sum dy,
        \\qquad
        \\frac{\\partial L}{\\partial \\beta} = \\sum dy

    (BatchNorm's input gradient is linear in γ, so scaling γ by r scales it by r).

    **Running statistics, eval mode, state** are BatchNorm's: the PyTorch momentum
    convention, the unbiased variance, the same ``state_dict`` names; eval mode is
    BatchNorm's eval mode. (The paper keeps a moving average of σ_B itself; here it is
    the variance, as in BatchNorm, which the σ above is taken from.)

    **Schedule.** With ``r_max = 1`` and ``d_max = 0`` (the defaults) r = 1 and d = 0:
    the layer is exactly BatchNorm. The paper starts there and relaxes the limits
    during training (to r_max = 3 and d_max = 5 in its experiments); that schedule is
    the caller's: ``layer.r_max`` and ``layer.d_max`` may be set at any step.

    Parameters
    ----------
    num_features, eps, momentum, affine, bias, dtype : as :class:`BatchNorm`.
    track_running_stats : bool, default True
        Must be True: r and d compare the batch with the running statistics (for
        batch statistics only, use ``BatchNorm(track_running_stats=False)``). Setting
        the attribute to False later freezes the running statistics, as in BatchNorm.
    r_max : float >= 1, default 1.0 (keyword-only)
        r is clipped to [1/r_max, r_max]; ``float("inf")`` does not clip.
    d_max : float >= 0, default 0.0 (keyword-only)
        d is clipped to [-d_max, d_max]; ``float("inf")`` does not clip.

    Attributes
    ----------
    correction : :class:`RenormCorrection` or None
        The r and d of the last training forward, each (C,); None after a forward
        that used the running statistics (eval mode).
    r_max, d_max : the clipping limits, settable.
    running_mean, running_var, num_batches_tracked, params, grads, training :
        see :class:`BatchNorm`.

    Shape
    -----
    As :class:`BatchNorm`.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> x = np.random.default_rng(0).normal(10.0, 2.0, size=(8, 3))
    >>> bool(np.array_equal(nl.BatchRenorm(3)(x), nl.BatchNorm(3)(x)))   # r_max=1, d_max=0
    True
    >>> layer = nl.BatchRenorm(3, r_max=3.0, d_max=5.0)
    >>> y = layer(x)   # the running statistics are still 0 and 1
    >>> layer.correction.d   # (μ_B - 0) / 1 ≈ 10 for every feature: clipped to d_max
    array([5., 5., 5.])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        r_max: float = 1.0,
        d_max: float = 0.0,
        bias: bool = True,
        dtype=np.float32,
    ) -> None:
        if not track_running_stats:
            raise ValueError(
                "BatchRenorm needs track_running_stats=True: r and d compare each batch with "
                "the running statistics. For batch statistics only, use "
                "BatchNorm(track_running_stats=False)."
            )
        super().__init__(num_features, eps, momentum, affine, True, bias=bias, dtype=dtype)
        self.r_max = r_max
        self.d_max = d_max
        self.correction: RenormCorrection | None = None

    @property
    def r_max(self) -> float:
        """r is clipped to [1/r_max, r_max]; settable during training (the paper's schedule)."""
        return self._r_max

    @r_max.setter
    def r_max(self, value) -> None:
        self._r_max = _check_clip_limit(value, "r_max", 1.0)

    @property
    def d_max(self) -> float:
        """d is clipped to [-d_max, d_max]; settable during training (the paper's schedule)."""
        return self._d_max

    @d_max.setter
    def d_max(self, value) -> None:
        self._d_max = _check_clip_limit(value, "d_max", 0.0)

    def __repr__(self) -> str:
        bias = "" if self.bias else ", bias=False"
        return (
            f"BatchRenorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}{bias}, r_max={self.r_max}, d_max={self.d_max})"
        )

    def renorm_correction(self, batch_mean, batch_var, running_mean, running_var):
        """r and d per feature, from the batch's and the running statistics (all (C,)).

        .. math::  r = \\mathrm{clip}(\\sigma_B/\\sigma, 1/r_{max}, r_{max}), \\quad
            d = \\mathrm{clip}((\\mu_B - \\mu)/\\sigma, -d_{max}, d_{max})

        with :math:`\\sigma_B = \\sqrt{\\mathrm{var}_B + \\epsilon}` and
        :math:`\\sigma = \\sqrt{\\texttt{running\\_var} + \\epsilon}`.
        """
        eps = batch_var.dtype.type(self.eps)
        batch_std = np.sqrt(batch_var + eps)
        running_std = np.sqrt(running_var + eps)
        r = np.clip(batch_std / running_std, 1.0 / self.r_max, self.r_max)
        d = np.clip((batch_mean - running_mean) / running_std, -self.d_max, self.d_max)
        return RenormCorrection(r, d)

    def _statistics(self, x, reduce_axes, mask):
        # r and d compare the batch with the running statistics from before its update
        running_mean = self.running_mean.astype(x.dtype)  # (C,), copies
        running_var = self.running_var.astype(x.dtype)
        mean, var, count, batch_statistics = super()._statistics(x, reduce_axes, mask)
        self.correction = None
        if batch_statistics:
            self.correction = self.renorm_correction(
                mean.reshape(-1), var.reshape(-1), running_mean, running_var
            )
        return mean, var, count, batch_statistics

    def _scale_and_shift(self, weight, bias):
        if self.correction is None:  # eval mode: BatchNorm's affine map
            return weight, bias
        r, d = self.correction
        if weight is None:  # no affine: the correction is the whole scale and shift
            return r, d
        shift = weight * d if bias is None else weight * d + bias  # γ·d + β
        return weight * r, shift  # γ·r

    def _parameter_grads(self, dweight, dbias):
        # dweight and dbias are the gradients of the applied scale γ·r and shift γ·d + β
        if self.correction is None:
            return dweight, dbias
        if not self.affine:
            return None, None
        r, d = self.correction
        dgamma = r * dweight + d * dbias  # ∂(γ·r)/∂γ = r, ∂(γ·d + β)/∂γ = d
        return dgamma, (dbias if "bias" in self.params else None)


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
            hint = CHANNELS_FIRST_HINT if x.ndim >= 3 else ""
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
    eps : float ≥ 0, default 1e-5
        Added to the variance; 0 is allowed (a constant row then gives NaN, which
        is what a lesson on eps shows).
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
        eps = check_eps(eps, "LayerNorm", allow_zero=True)
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
    eps : float ≥ 0 or None, default None
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
            eps = check_eps(eps, "RMSNorm", allow_zero=True)
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
    eps : float ≥ 0, default 1e-5
    affine : bool, default True
        Learn per-channel γ (``weight``, ones) and β (``bias``, zeros) of shape (C,).
    bias : bool, default True (keyword-only)
        Learn β too (only with ``affine``), as ``torch.nn.GroupNorm(bias=...)``.
    dtype : floating dtype, default float32 (the parameters').

    Attributes
    ----------
    params, grads, training : see :class:`Norm`.

    Shape
    -----
    Input (N, C), (N, L, C) or (N, H, W, C); output the same. Every group must hold
    more than one value, ``spatial size · C/G > 1`` (a ValueError otherwise, in
    both modes, as in PyTorch).

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
        bias: bool = True,
        dtype=np.float32,
    ) -> None:
        self.num_groups = check_positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = check_positive_int(num_channels, "num_channels", "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: num_channels={self.num_channels} must be divisible by "
                f"num_groups={self.num_groups}."
            )
        eps = check_eps(eps, "GroupNorm", allow_zero=True)
        super().__init__((self.num_channels,), eps, affine, affine and bias, dtype)
        self.affine = bool(affine)
        self.bias = bool(bias)

    @property
    def cancels_feature_bias(self) -> bool:
        """Only with one channel per group is the mean taken within each channel."""
        return self.num_groups == self.num_channels

    def __repr__(self) -> str:
        bias = "" if self.bias else ", bias=False"
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}{bias})"
        )

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 2:
            raise ValueError(
                f"GroupNorm expects input of at least 2 dims (N, C), got shape {x.shape}."
            )
        if x.shape[-1] != self.num_channels:
            hint = CHANNELS_FIRST_HINT if x.ndim >= 3 else ""
            raise ValueError(
                f"GroupNorm expected the last dimension to be num_channels={self.num_channels}, "
                f"got {x.shape[-1]} (input shape {x.shape}).{hint}"
            )
        values_per_group = math.prod(x.shape[1:]) // self.num_groups
        if values_per_group <= 1:
            raise ValueError(
                "GroupNorm needs more than 1 value per group to compute statistics, got "
                f"{values_per_group} (input shape {x.shape}, {self.num_groups} groups of "
                f"{self.num_channels // self.num_groups} channel(s)). Use fewer groups, or an "
                "input with spatial or time positions."
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


# ---------------------------------------------------------------------------
# InstanceNorm
# ---------------------------------------------------------------------------


class InstanceNorm(Norm):
    """Instance normalization: per sample and channel, over space or time (Ulyanov et al., 2016).

    .. math::

        y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} \\cdot \\gamma + \\beta

    For ``x`` of shape (N, H, W, C) there is one mean per sample and channel,
    averaged over its H·W positions; for (N, L, C), over its L time steps. It is
    GroupNorm with one channel per group (``GroupNorm(C, C)``), with PyTorch's
    defaults: no affine parameters unless ``affine=True``. Like LayerNorm it needs no
    batch and computes the same in both modes; unlike LayerNorm it looks across the
    whole sequence, so it is not causal.

    ``nl.InstanceNorm`` on (N, L, C) equals ``torch.nn.InstanceNorm1d`` on (N, C, L),
    on (N, H, W, C) ``torch.nn.InstanceNorm2d`` on (N, C, H, W) (with their default
    ``track_running_stats=False``; normlab's InstanceNorm keeps no running averages).

    Parameters
    ----------
    num_features : int
        C, the size of the last axis.
    eps : float ≥ 0, default 1e-5
    affine : bool, default False
        Learn per-channel γ (``weight``, ones) and β (``bias``, zeros) of shape (C,).
    bias : bool, default True (keyword-only)
        Learn β too (only with ``affine``).
    dtype : floating dtype, default float32 (the parameters').

    Shape
    -----
    Input (N, L, C) or (N, H, W, C) with more than one position per sample (a
    ValueError otherwise, as in PyTorch); output the same.

    Examples
    --------
    >>> import numpy as np, normlab as nl
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 5, 4))
    >>> y = nl.InstanceNorm(4)(x)
    >>> bool(np.allclose(y.mean(axis=1), 0)), bool(np.allclose(y.var(axis=1), 1, atol=1e-4))
    (True, True)
    """

    cancels_feature_bias = True  # its mean is over each channel's own positions

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        affine: bool = False,
        *,
        bias: bool = True,
        dtype=np.float32,
    ) -> None:
        self.num_features = check_positive_int(num_features, "num_features", "InstanceNorm")
        eps = check_eps(eps, "InstanceNorm", allow_zero=True)
        super().__init__((self.num_features,), eps, affine, affine and bias, dtype)
        self.affine = bool(affine)
        self.bias = bool(bias)

    def __repr__(self) -> str:
        bias = "" if self.bias else ", bias=False"
        return f"InstanceNorm({self.num_features}, eps={self.eps}, affine={self.affine}{bias})"

    def _reduce_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(1, ndim - 1))  # (N, H, W, C) -> (1, 2): one statistic per channel

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim < 3:
            raise ValueError(
                "InstanceNorm expects input with time or spatial axes, (N, L, C) or "
                f"(N, H, W, C), got shape {x.shape}; on (N, C) vectors use LayerNorm."
            )
        if x.shape[-1] != self.num_features:
            raise ValueError(
                f"InstanceNorm expected the last dimension to be num_features="
                f"{self.num_features}, got {x.shape[-1]} (input shape {x.shape})."
                f"{CHANNELS_FIRST_HINT}"
            )
        positions = math.prod(x.shape[1:-1])
        if positions <= 1:
            raise ValueError(
                "InstanceNorm needs more than 1 spatial or time position per sample, got "
                f"{positions} (input shape {x.shape})."
            )


# ---------------------------------------------------------------------------
# The registry of kinds, and the one factory
# ---------------------------------------------------------------------------


def default_num_groups(num_channels: int, max_groups: int = 8, min_group_size: int = 4) -> int:
    """The most groups, up to ``max_groups``, that divide C into groups of >= ``min_group_size``.

    Falls back to 1 group (all channels together). A minimum group size
    matters on (N, C) vectors, where a group has no spatial axes to average
    over: a group of 1 channel normalizes one number (always 0) and a group of
    2 channels gives only +-1. (Wu & He's 32 groups are too many for the small
    widths used here.)

    >>> [default_num_groups(channels) for channels in (64, 32, 12, 6)]
    [8, 8, 3, 1]
    """
    num_channels = check_positive_int(num_channels, "num_channels", "default_num_groups")
    candidates = [
        groups
        for groups in range(1, max_groups + 1)
        if num_channels % groups == 0 and num_channels // groups >= min_group_size
    ]
    return max(candidates, default=1)


def _group_norm(num_features: int, *, num_groups: int | None = None, **options) -> GroupNorm:
    if num_groups is None:
        num_groups = default_num_groups(num_features)
    return GroupNorm(num_groups, num_features, **options)


def _no_norm(num_features: int) -> Identity:
    check_positive_int(num_features, "num_features", "make_norm")
    return Identity()


def _keywords(layer_class: type, size_arguments: tuple[str, ...]) -> frozenset[str]:
    """The constructor arguments of ``layer_class`` other than its size arguments."""
    parameters = inspect.signature(layer_class.__init__).parameters
    return frozenset(name for name in parameters if name not in ("self", *size_arguments))


class NormKind(NamedTuple):
    """One kind of normalization in the registry :data:`NORM_KINDS`."""

    build: Callable[..., Module]  # (num_features, **options) -> the layer
    options: frozenset[str]  # the keyword arguments ``build`` takes


#: Every kind of normalization, by the name experiments, tests and notebooks use. Adding a
#: normalization means: its class above, one entry here, one style in ``plotting.METHODS``.
NORM_KINDS: dict[str, NormKind] = {
    "none": NormKind(_no_norm, frozenset()),
    "batch": NormKind(BatchNorm, _keywords(BatchNorm, ("num_features",))),
    "batch_renorm": NormKind(BatchRenorm, _keywords(BatchRenorm, ("num_features",))),
    "layer": NormKind(LayerNorm, _keywords(LayerNorm, ("normalized_shape",))),
    "rms": NormKind(RMSNorm, _keywords(RMSNorm, ("normalized_shape",))),
    "group": NormKind(_group_norm, _keywords(GroupNorm, ("num_channels",)) | {"num_groups"}),
    "instance": NormKind(InstanceNorm, _keywords(InstanceNorm, ("num_features",))),
}

_ALL_OPTIONS = frozenset().union(*(kind.options for kind in NORM_KINDS.values()))


def _check_kind(kind: str, who: str) -> NormKind:
    try:
        return NORM_KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"{who}: kind must be one of {tuple(NORM_KINDS)}, got {kind!r}.") from None


def make_norm(kind: str, num_features: int, **options) -> Module:
    """A normalization layer over the last axis, by name: the one factory of normlab.

    Parameters
    ----------
    kind : ``"none"``, ``"batch"``, ``"batch_renorm"``, ``"layer"``, ``"rms"``, ``"group"``
        or ``"instance"``
        ``"none"`` -> :class:`Identity`; ``"batch"`` -> ``BatchNorm(num_features)``
        (ghost batches with the option ``ghost_batch_size``); ``"batch_renorm"`` ->
        ``BatchRenorm(num_features)`` (set ``r_max``/``d_max``, see its schedule);
        ``"layer"`` -> ``LayerNorm(num_features)``; ``"rms"`` -> ``RMSNorm(num_features)``;
        ``"group"`` -> ``GroupNorm(num_groups, num_features)`` with ``num_groups``
        from the options or :func:`default_num_groups`; ``"instance"`` ->
        ``InstanceNorm(num_features)``.
    num_features : int
        The size of the last axis.
    **options
        Keyword arguments of the layers (``eps``, ``momentum``, ``affine``, ``dtype``,
        ``num_groups``, ...). Each kind takes those its constructor has and ignores the
        others, so one sweep can pass the same options to every kind (``momentum``
        reaches the BatchNorm kinds only). A keyword that no kind takes is a TypeError.

    Examples
    --------
    >>> make_norm("group", 64)
    GroupNorm(8, 64, eps=1e-05, affine=True)
    >>> make_norm("layer", 8, momentum=0.01)   # momentum is BatchNorm's: ignored here
    LayerNorm((8,), eps=1e-05, elementwise_affine=True, bias=True)
    """
    entry = _check_kind(kind, "make_norm")
    unknown = sorted(set(options) - _ALL_OPTIONS)
    if unknown:
        raise TypeError(
            f"make_norm: no normalization takes the keyword(s) {unknown}; "
            f"the keywords are: {', '.join(sorted(_ALL_OPTIONS))}."
        )
    return entry.build(
        num_features, **{name: value for name, value in options.items() if name in entry.options}
    )
