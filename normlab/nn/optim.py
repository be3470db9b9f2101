"""Optimizers that update a model's ``params`` in place: SGD with momentum, and Adam."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

__all__ = ["SGD", "Adam"]


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
