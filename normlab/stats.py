"""Comparing two methods honestly: paired differences, bootstrap intervals, verdicts.

An experiment that says "LayerNorm beats BatchNorm at batch size 4" compares two numbers
that are both noisy, for two reasons:

* **training noise**: another seed gives another network (initialization, batch order);
* **test-set noise**: the test set is a sample too. With n test images and accuracy p, one
  run's accuracy has a binomial standard error ``sqrt(p (1 - p) / n)``: 0.8 points at
  p = 97 % and n = 450, as large as many differences between methods.

Both are handled by comparing the methods **paired** (the same seeds, the same test
images) and by a **hierarchical bootstrap** (Efron & Tibshirani 1993; Saravanan et al.
2020, "Application of the hierarchical bootstrap to multi-level data"): resample the
seeds, then the test examples, with the same draws for both methods, and recompute the
mean difference each time. The spread of those differences is the uncertainty of the
comparison. Without per-example results, the bootstrap runs over the per-seed
differences alone.

A **verdict** then follows from the interval and an equivalence margin δ (what counts
as "as good as"; state it next to every verdict):

* ``"better"`` / ``"worse"``: the whole interval lies above / below 0;
* ``"as good as"``: the whole interval lies inside (−δ, +δ) (an equivalence test in
  the two-one-sided-tests spirit: the data exclude any difference larger than δ);
* ``"inconclusive"``: otherwise (too few seeds or test images to tell).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = rng.random((5, 450)) < 0.97     # 5 seeds x 450 test images, correct or not
>>> b = rng.random((5, 450)) < 0.90
>>> comparison = paired_comparison(a, b, margin=0.01)
>>> comparison.verdict
'better'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "VERDICTS",
    "PairedComparison",
    "binomial_standard_error",
    "bootstrap_interval",
    "paired_comparison",
    "range_order",
    "verdict",
    "verdict_phrase",
]

#: The four verdicts :func:`verdict` can reach.
VERDICTS = ("better", "worse", "as good as", "inconclusive")

#: Resamples of every bootstrap here: enough for the 2.5 % / 97.5 % quantiles to be
#: stable to about a tenth of the interval's width.
RESAMPLES = 4000

#: Random draws per chunk of the hierarchical bootstrap (about 16 MB of indices).
_DRAWS_PER_CHUNK = 2_000_000


def binomial_standard_error(accuracy: float, num_examples: int) -> float:
    """Standard error of one accuracy measured on ``num_examples`` test examples.

    >>> round(100 * binomial_standard_error(0.97, 450), 2)   # in points
    0.8
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be ≥ 1, got {num_examples}")
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    return math.sqrt(accuracy * (1 - accuracy) / num_examples)


def bootstrap_interval(
    values, *, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-d), deterministic by ``seed``.

    With a single value the interval is that value on both ends (no spread can be known).
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    _check_confidence(confidence)
    if values.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if not np.isfinite(values).all():
        raise ValueError("bootstrap_interval: values must be finite")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[draws].mean(axis=1)
    return _percentiles(means, confidence)


@dataclass(frozen=True)
class PairedComparison:
    """The result of :func:`paired_comparison`: ``a − b`` with its interval and verdict.

    Attributes
    ----------
    mean_difference : float
        Mean over seeds (and test examples) of ``a − b``, in the units of the inputs
        (fractions for accuracies: multiply by 100 for points).
    interval : (float, float)
        Bootstrap interval of the mean difference at ``confidence``.
    per_seed_differences : tuple of float
        ``a − b`` for each seed (each averaged over the test examples).
    margin, confidence : float
        The equivalence margin δ and the interval's confidence.
    verdict : str
        One of :data:`VERDICTS` (for ``a`` against ``b``).
    resampled : str
        ``"seeds and test examples"`` or ``"seeds"``: what the bootstrap resampled.
    """

    mean_difference: float
    interval: tuple[float, float]
    per_seed_differences: tuple[float, ...]
    margin: float
    confidence: float
    verdict: str
    resampled: str

    def to_dict(self) -> dict:
        """Plain numbers for a results JSON."""
        return {
            "mean_difference": self.mean_difference,
            "interval": list(self.interval),
            "per_seed_differences": list(self.per_seed_differences),
            "margin": self.margin,
            "confidence": self.confidence,
            "verdict": self.verdict,
            "resampled": self.resampled,
        }


def paired_comparison(
    a,
    b,
    *,
    margin: float,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare method ``a`` with method ``b`` on the same seeds (and the same test examples).

    Parameters
    ----------
    a, b : array-like of the same shape
        Either ``(seeds,)``: one number per seed (e.g. an accuracy or a loss), or
        ``(seeds, examples)``: one number per seed and test example (e.g. 1/0 for
        correct/wrong, or a per-example loss), row ``s`` of both from seed ``s``.
        With per-example values the bootstrap resamples seeds and then examples
        (hierarchically, the same draws for ``a`` and ``b``), so the interval accounts
        for the size of the test set as well as for the seeds.
    margin : float ≥ 0
        The equivalence margin δ of the ``"as good as"`` verdict, in the units of ``a``.
    confidence : float in (0, 1), default 0.95
    resamples, seed : the bootstrap's size and its (fixed) random stream.

    Returns
    -------
    PairedComparison
        For a higher-is-better quantity, ``"better"`` means ``a`` is higher. For a
        loss, compare ``b`` with ``a`` (or negate) so that the verdict reads right.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (1, 2) or a.shape[0] == 0 or (a.ndim == 2 and a.shape[1] == 0):
        raise ValueError(
            f"a and b must be (seeds,) or (seeds, examples) with at least one entry, got {a.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_comparison: a and b must be finite (a diverged run? report it)")
    if not margin >= 0:
        raise ValueError(f"margin must be ≥ 0, got {margin}")
    _check_confidence(confidence)
    difference = a - b  # (seeds,) or (seeds, examples)
    per_seed = difference if difference.ndim == 1 else difference.mean(axis=1)
    rng = np.random.default_rng(seed)
    num_seeds = difference.shape[0]
    seed_draws = rng.integers(0, num_seeds, size=(resamples, num_seeds))  # (R, S)
    if difference.ndim == 1:
        means = difference[seed_draws].mean(axis=1)
        resampled = "seeds"
    else:
        num_examples = difference.shape[1]
        means = np.empty(resamples)
        # In chunks of resamples: all (R, S, E) draws at once would not fit in memory.
        chunk = max(1, _DRAWS_PER_CHUNK // (num_seeds * num_examples))
        for start in range(0, resamples, chunk):
            stop = min(start + chunk, resamples)
            rows = difference[seed_draws[start:stop]]  # (chunk, S, E), seeds resampled
            example_draws = rng.integers(0, num_examples, size=rows.shape)
            means[start:stop] = np.take_along_axis(rows, example_draws, axis=2).mean(axis=(1, 2))
        resampled = "seeds and test examples"
    interval = _percentiles(means, confidence)
    return PairedComparison(
        mean_difference=float(difference.mean()),
        interval=interval,
        per_seed_differences=tuple(float(value) for value in per_seed),
        margin=float(margin),
        confidence=float(confidence),
        verdict=verdict(interval, margin),
        resampled=resampled,
    )


def range_order(one, other) -> str:
    """``"below"``, ``"above"`` or ``"overlapping"``: the values of ``one`` against ``other``.

    ``"below"`` when every value of ``one`` (one per seed, say) is below every value of
    ``other``, ``"above"`` when every one is above, else ``"overlapping"``. With a few seeds
    this is the weakest comparison there is, and says so: the ranges separate or they do not.

    >>> range_order([1.0, 2.0], [3.0, 5.0]), range_order([1.0, 4.0], [3.0, 5.0])
    ('below', 'overlapping')
    """
    one, other = np.asarray(one, dtype=float), np.asarray(other, dtype=float)
    if one.max() < other.min():
        return "below"
    if one.min() > other.max():
        return "above"
    return "overlapping"


def verdict(interval: tuple[float, float], margin: float) -> str:
    """The verdict of an interval of ``a − b``: better, worse, as good as, inconclusive.

    >>> verdict((0.01, 0.03), margin=0.01), verdict((-0.004, 0.006), margin=0.01)
    ('better', 'as good as')
    """
    low, high = interval
    if low > high:
        raise ValueError(f"interval must be (low, high) with low ≤ high, got {interval}")
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    if -margin < low and high < margin:
        return "as good as"
    return "inconclusive"


def verdict_phrase(verdict: str, other: str) -> str:
    """A verdict as words about ``other``, for a sentence "a is ...".

    >>> verdict_phrase("better", "train mode"), verdict_phrase("inconclusive", "train mode")
    ('better than train mode', 'not told apart from train mode (inconclusive)')
    """
    phrases = {
        "better": f"better than {other}",
        "worse": f"worse than {other}",
        "as good as": f"as good as {other}",
        "inconclusive": f"not told apart from {other} (inconclusive)",
    }
    if verdict not in phrases:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return phrases[verdict]


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
