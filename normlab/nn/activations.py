"""Elementwise nonlinearities: ReLU, Tanh and GELU (no parameters)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import erfcx, ndtr

from normlab.module import Module, as_float_array

__all__ = ["ACTIVATIONS", "GELU", "ReLU", "Tanh", "normal_cdf"]


class ReLU(Module):
    """``y = max(x, 0)``; ``dx = dy · [x > 0]``. No parameters.

    ``mask`` is accepted and ignored: ReLU maps zero padding to zero. Both passes are
    arithmetic (``np.fmax``, a product with the 0/1 pattern), not ``np.where``, whose
    branch on the random sign of the inputs costs far more; they give exactly what
    ``np.where(x > 0, x, 0)`` and ``np.where(x > 0, dy, 0)`` give, NaN and signed zeros
    included (NaN input -> 0; a non-finite ``dy`` takes the ``np.where`` path).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "ReLU()"

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "ReLU")
        y = np.fmax(x, x.dtype.type(0))  # fmax(NaN, 0) = 0
        y += 0  # -0.0 + 0 = +0.0
        self._cache = x > 0  # (shape of x), bool
        return y

    def backward(self, dy) -> np.ndarray:
        positive = self.require_cache()
        dy = np.asarray(dy)
        if not np.isfinite(dy).all():  # inf · 0 would give NaN where the gradient is 0
            return np.where(positive, dy, dy.dtype.type(0))
        dx = np.multiply(dy, positive, dtype=dy.dtype)
        dx += 0  # -0.0 + 0 = +0.0
        return dx


class Tanh(Module):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``. No parameters; ``mask`` is ignored."""

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "Tanh()"

    def forward(self, x, mask=None) -> np.ndarray:
        y = np.tanh(as_float_array(x, "Tanh"))
        self._cache = y
        return y

    def backward(self, dy) -> np.ndarray:
        y = self.require_cache()
        return dy * (1 - y * y)


class GELU(Module):
    """The Gaussian error linear unit, exact (Hendrycks & Gimpel, 2016), torch's ``nn.GELU()``.

    .. math::

        y = x\\, \\Phi(x) = \\frac{x}{2} \\Big(1 + \\mathrm{erf}\\big(x / \\sqrt{2}\\big)\\Big),
        \\qquad
        \\frac{dy}{dx} = \\Phi(x) + x\\, \\varphi(x),
        \\quad \\varphi(x) = \\frac{e^{-x^2/2}}{\\sqrt{2\\pi}}

    with Φ the standard normal CDF, not the tanh approximation (torch's
    ``approximate="tanh"``). Φ is computed by :func:`normal_cdf`. No parameters; ``mask``
    is ignored: GELU maps zero padding to zero.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def __repr__(self) -> str:
        return "GELU()"

    def forward(self, x, mask=None) -> np.ndarray:
        x = as_float_array(x, "GELU")
        cdf = normal_cdf(x)
        self._cache = (x, cdf)
        return x * cdf

    def backward(self, dy) -> np.ndarray:
        x, cdf = self.require_cache()
        slope = x * x
        slope *= x.dtype.type(-0.5)
        np.exp(slope, out=slope)  # exp(-x²/2) = φ(x)·√(2π)
        slope *= x.dtype.type(1 / math.sqrt(2 * math.pi))
        slope *= x  # x φ(x)
        slope += cdf  # dy/dx = Φ(x) + x φ(x)
        slope *= dy
        return slope


# ---------------------------------------------------------------------------
# The normal CDF, fast in float32
# ---------------------------------------------------------------------------

#: Degree of the float32 fit of erfc; its error is below float32's rounding (see normal_cdf).
_ERFC_FIT_DEGREE = 9
#: float32 elements per chunk: the ~30 passes of the fit then run in the CPU's cache.
_CHUNK = 65536


@lru_cache(maxsize=1)
def _erfc_fit() -> np.ndarray:
    """Coefficients ``c`` (float32, in powers of ``u``) of ``erfc(z) / 2 ≈ t·exp(Σ c_k u^k - z²)``.

    With ``t = 1 / (1 + z/2)`` and ``u = 2t - 1`` in (-1, 1] for z ≥ 0, the function
    ``log(erfc(z)·exp(z²) / t)`` is smooth and bounded on the whole half-line (its limit at
    z → ∞ is ``log(1 / (2√π))``), so a polynomial in ``u`` fits it everywhere. The
    coefficients come from Chebyshev interpolation of scipy's ``erfcx`` (exact), computed
    once, with ``log(1/2)`` folded into the constant term.
    """
    from numpy.polynomial import chebyshev

    def log_scaled_erfc(u):
        t = (u + 1) / 2
        z = 2 / t - 2
        return np.log(erfcx(z) / t)

    series = chebyshev.chebinterpolate(log_scaled_erfc, _ERFC_FIT_DEGREE)
    coefficients = chebyshev.cheb2poly(series)
    coefficients[0] += math.log(0.5)
    return coefficients.astype(np.float32)


def _normal_cdf_float32(x: np.ndarray) -> np.ndarray:
    """Φ(x) for float32 ``x`` from the fit of :func:`_erfc_fit`, branch-free."""
    coefficients = _erfc_fit()
    one, two = np.float32(1), np.float32(2)
    z = np.abs(x)
    z *= np.float32(1 / math.sqrt(2))  # Φ(x) = erfc(-x/√2)/2; z = |x|/√2
    t = z * np.float32(0.5)
    t += one
    np.reciprocal(t, out=t)  # t = 1 / (1 + z/2)
    u = t * two
    u -= one  # u = 2t - 1
    exponent = u * coefficients[-1]
    exponent += coefficients[-2]
    for coefficient in coefficients[-3::-1]:  # Horner
        exponent *= u
        exponent += coefficient
    z *= z
    exponent -= z
    half_erfc = np.exp(exponent, out=exponent)
    half_erfc *= t  # erfc(z)/2 = Φ(-|x|)
    # Φ(x) = Φ(-|x|) for x <= 0 and 1 - Φ(-|x|) for x > 0, without np.where, whose
    # branch on a random sign costs far more than the arithmetic
    positive = (x > 0).astype(np.float32)
    cdf = half_erfc * np.float32(-2)
    cdf += one
    cdf *= positive
    cdf += half_erfc
    return cdf


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF ``Φ(x) = (1 + erf(x/√2)) / 2``, in ``x``'s dtype.

    float64 (and other non-float32 dtypes): scipy's ``ndtr``, exact to rounding, also in the
    negative tail, where ``(1 + erf)/2`` loses its relative accuracy to cancellation. float32:
    ``Φ(-|x|) = erfc(|x|/√2) / 2`` from a fitted polynomial (:func:`_erfc_fit`) and
    ``Φ(x) = 1 - Φ(-x)``, far faster than scipy's float32 ``erf``; its error
    is at float32's rounding level (``tests/test_transformer.py`` bounds it against the
    float64 path), also relative to Φ in the negative tail.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        return ndtr(x)
    flat = x.reshape(-1)
    cdf = np.empty_like(flat)
    for start in range(0, flat.size, _CHUNK):
        cdf[start : start + _CHUNK] = _normal_cdf_float32(flat[start : start + _CHUNK])
    return cdf.reshape(x.shape)


#: The activations by name, as torch's TransformerEncoderLayer spells them.
ACTIVATIONS = {"relu": ReLU, "gelu": GELU, "tanh": Tanh}
