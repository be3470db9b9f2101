"""Optimizers that update a model's ``params`` in place (SGD, Adam, AdamW), and warm-up."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from numbers import Integral

import numpy as np

__all__ = ["SGD", "Adam", "AdamW", "WarmupSchedule"]


class _Optimizer:
    """Shared plumbing: live ``params``/``grads`` mappings, updated in place by ``step``.

    ``lr`` is a plain attribute: a schedule sets it before each step
    (``optimizer.lr = schedule.lr_at(step)``).
    """

    #: weight decay as a separate shrinking of the weights (AdamW), not a gradient term
    decoupled_weight_decay = False

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
        if self.weight_decay and not self.decoupled_weight_decay:
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
            if self.decoupled_weight_decay and self.weight_decay:
                param *= 1 - self.lr * self.weight_decay  # AdamW: shrink, then the Adam step
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


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), torch's ``AdamW``.

    .. math::

        p \\leftarrow p\\,(1 - \\eta \\lambda), \\quad\\text{then the Adam step of}\\ g

    The decay shrinks every weight by the same factor, whatever its gradient history;
    Adam with ``weight_decay`` instead adds ``λ p`` to the gradient, which the division by
    ``sqrt(v)`` then rescales per weight. Every parameter is decayed (one group, as
    ``torch.optim.AdamW(model.parameters())``), norms' γ and β included.

    Parameters
    ----------
    params, grads, lr, betas, eps : as :class:`Adam`.
    weight_decay : float, default 0.01 (torch's), λ.
    """

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Mapping,
        grads: Mapping,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, grads, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


#: How a WarmupSchedule's learning rate falls after the warm-up.
DECAYS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class WarmupSchedule:
    """A learning rate that rises linearly for ``warmup_steps`` updates, then holds or decays.

    .. math::

        \\eta_s = \\eta \\cdot \\frac{s}{S_w} \\quad (s \\le S_w), \\qquad
        \\eta_s = \\eta_{min} + (\\eta - \\eta_{min})\\, f\\Big(\\frac{s - S_w}{S - S_w}\\Big)
            \\quad (s > S_w)

    for update ``s = 1, 2, ...`` (the first update already gets ``η / S_w``, not 0), with
    ``f = 1`` (``"constant"``), ``f(p) = 1 - p`` (``"linear"``) or
    ``f(p) = (1 + cos(π p)) / 2`` (``"cosine"``), and ``p`` held at 1 after ``total_steps``.
    Warm-up is what lets Post-LN transformers train with Adam (Xiong et al., 2020): the
    first updates, whose Adam statistics rest on a handful of gradients, stay small.

    Parameters
    ----------
    base_lr : float > 0, η, the rate at the end of the warm-up.
    warmup_steps : int >= 0, S_w; 0 starts at ``base_lr``.
    total_steps : int, S, needed by the decays (the step where ``min_lr`` is reached).
    decay : ``"constant"`` (default), ``"linear"`` or ``"cosine"``.
    min_lr : float >= 0, default 0.

    Examples
    --------
    >>> schedule = WarmupSchedule(1e-3, warmup_steps=4, total_steps=8, decay="cosine")
    >>> [round(schedule.lr_at(step) * 1e3, 3) for step in range(1, 9)]
    [0.25, 0.5, 0.75, 1.0, 0.854, 0.5, 0.146, 0.0]

    Use: ``optimizer.lr = schedule.lr_at(step)`` before the ``step``-th ``optimizer.step()``.
    """

    base_lr: float
    warmup_steps: int = 0
    total_steps: int | None = None
    decay: str = "constant"
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.base_lr, (int, float)) and self.base_lr > 0):
            raise ValueError(f"WarmupSchedule: base_lr must be > 0, got {self.base_lr!r}.")
        if not isinstance(self.warmup_steps, Integral) or self.warmup_steps < 0:
            raise ValueError(
                f"WarmupSchedule: warmup_steps must be an integer >= 0, got {self.warmup_steps!r}."
            )
        if self.decay not in DECAYS:
            raise ValueError(f"WarmupSchedule: decay must be one of {DECAYS}, got {self.decay!r}.")
        decays = self.decay != "constant"
        if decays and (
            not isinstance(self.total_steps, Integral) or self.total_steps <= self.warmup_steps
        ):
            raise ValueError(
                f"WarmupSchedule: decay={self.decay!r} needs total_steps > warmup_steps="
                f"{self.warmup_steps}, got total_steps={self.total_steps!r}."
            )
        if not 0 <= self.min_lr <= self.base_lr:
            raise ValueError(
                f"WarmupSchedule: min_lr must be in [0, base_lr={self.base_lr}], got "
                f"{self.min_lr!r}."
            )

    def lr_at(self, step: int) -> float:
        """The learning rate of update number ``step`` (1 for the first)."""
        if not isinstance(step, Integral) or step < 1:
            raise ValueError(f"WarmupSchedule.lr_at: step must be an integer >= 1, got {step!r}.")
        if step <= self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        if self.decay == "constant":
            return self.base_lr
        progress = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        if self.decay == "linear":
            factor = 1.0 - progress
        else:
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.base_lr - self.min_lr) * factor
