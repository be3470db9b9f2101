"""Float32 error of the variance E[x²]−E[x]² against the two-pass variance as mean/std grows.

The question: why does every normlab layer compute its variance in two passes
(mean first, then the mean of squared deviations) instead of the one-pass
``E[x²] - E[x]²``? Both are the same number in exact arithmetic. In floating
point the one-pass form subtracts two nearly equal large numbers, E[x²] ≈ μ² + σ²
and E[x]² ≈ μ², so theory puts its relative error at about ε·(μ/σ)² (ε the machine
epsilon of the dtype): it should pass 1 % somewhere near μ/σ = 300 in float32 and be
meaningless beyond a few thousand. The two-pass form subtracts the mean before
squaring and should stay near ε.

What would refute the claim: a one-pass float32 error that does not grow like (μ/σ)²
(off the theory line by more than a factor of 10), or a two-pass float32 error that
grows with μ/σ.

Setup: ``sample_size`` values ``x = μ + σ·z`` with ``z ~ N(0, 1)``, σ = 1, stored in
float32; for each ratio μ/σ and seed, the relative error of three computations
against an exact reference (float64, two passes, correctly rounded sums):
one-pass float32, two-pass float32 and one-pass float64. The same ``z`` is used
for every ratio of a seed, so only μ/σ changes along the x-axis.

This module is the worked example of an experiment: Config → run → plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from normlab import functional, plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    numbers,
    seeds,
)

NAME = "variance_numerics"

#: μ/σ from 1 to 1e5 in half decades.
HALF_DECADES = tuple(10.0 ** (exponent / 2) for exponent in range(11))

#: The three ways of computing the variance that are compared (keys of the results).
FORMULAS = ("one_pass_float32", "two_pass_float32", "one_pass_float64")

#: Errors are shown no lower than this on the log axis (an exact 0 has no logarithm).
ERROR_FLOOR = 1e-18


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    mean_to_std_ratios : tuple of float
        The values of μ/σ on the x-axis.
    sample_size : int
        How many values each variance is taken over (e.g. the N·T entries of
        one BatchNorm feature, or the D features of one LayerNorm token).
    seeds : tuple of int
        One set of samples per seed; the figure shows their median and range.
    """

    mean_to_std_ratios: tuple[float, ...] = numbers(HALF_DECADES, above=0)
    sample_size: int = integer(4096, minimum=2, why="to have a variance")
    seeds: tuple[int, ...] = seeds(10)

    @classmethod
    def quick(cls) -> Config:
        return cls(mean_to_std_ratios=HALF_DECADES[::2], sample_size=1024, seeds=(0, 1, 2))


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def one_pass_variance(x: np.ndarray) -> np.floating:
    """E[x²] − E[x]², in the dtype of ``x``: the formula normlab never uses."""
    return np.mean(x * x) - np.mean(x) ** 2


def two_pass_variance(x: np.ndarray) -> np.floating:
    """Mean of squared deviations from the mean, in the dtype of ``x``.

    This is :func:`normlab.functional.moments`, the very function every normlab
    layer computes its statistics with.
    """
    _, var, _ = functional.moments(x, reduce_axes=(0,))
    return var[0]


def exact_variance(x: np.ndarray) -> float:
    """The reference: two passes in float64 with correctly rounded sums (``math.fsum``)."""
    values = x.astype(np.float64)
    mean = math.fsum(values) / values.size
    return math.fsum((values - mean) ** 2) / values.size


def measure_one(run: dict) -> dict:
    """Relative errors of the three formulas for one (μ/σ, seed, sample size).

    Everything random comes from ``run["seed"]``, so a run gives the same numbers
    in any process and in any order.
    """
    rng = np.random.default_rng(run["seed"])
    standard_normal = rng.standard_normal(run["sample_size"])  # (n,), float64
    x32 = (run["ratio"] + standard_normal).astype(np.float32)  # μ = ratio, σ = 1
    reference = exact_variance(x32)  # the variance of exactly these float32 values
    computed = {
        "one_pass_float32": one_pass_variance(x32),
        "two_pass_float32": two_pass_variance(x32),
        "one_pass_float64": one_pass_variance(x32.astype(np.float64)),
    }
    return {
        formula: abs(float(value) - reference) / reference for formula, value in computed.items()
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Measure every (μ/σ, seed) pair; return plain numbers for :func:`plot` and the JSON file.

    Returns
    -------
    dict with
        ``config``: the config as a dict;
        ``mean_to_std_ratios``: the x values;
        ``relative_error[formula]``: list over ratios of lists over seeds;
        ``float32_eps``, ``float64_eps``: machine epsilons for the theory lines;
        ``headline``: the numbers quoted in the README.
    """
    runs = config.runs(ratio="mean_to_std_ratios", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)
    relative_error = {formula: measured.table(formula) for formula in FORMULAS}  # (ratios, seeds)
    return {
        "config": config.to_dict(),
        "mean_to_std_ratios": list(config.mean_to_std_ratios),
        "relative_error": {formula: errors.tolist() for formula, errors in relative_error.items()},
        "float32_eps": float(np.finfo(np.float32).eps),
        "float64_eps": float(np.finfo(np.float64).eps),
        "headline": _headline(config.mean_to_std_ratios, relative_error),
    }


def _headline(ratios, relative_error: dict[str, np.ndarray]) -> dict:
    one_pass = np.median(relative_error["one_pass_float32"], axis=1)  # (ratios,)
    two_pass = np.median(relative_error["two_pass_float32"], axis=1)  # (ratios,)
    above_one_percent = [
        ratio for ratio, error in zip(ratios, one_pass, strict=True) if error > 1e-2
    ]
    return {
        "first_ratio_where_one_pass_float32_error_exceeds_1_percent": (
            above_one_percent[0] if above_one_percent else None
        ),
        "one_pass_float32_median_error_at_largest_ratio": float(one_pass[-1]),
        "two_pass_float32_worst_median_error": float(two_pass.max()),
    }


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

_LOOKS = {
    "one_pass_float32": ("E[x²] − E[x]², float32", plotting.COLORS["vermillion"], "s"),
    "two_pass_float32": ("two-pass, float32 (normlab)", plotting.COLORS["blue"], "o"),
    "one_pass_float64": ("E[x²] − E[x]², float64", plotting.COLORS["orange"], "^"),
}


@plotting.styled
def plot(results: dict) -> Figure:
    """Relative error against μ/σ on log-log axes, with the ε·(μ/σ)² theory lines."""
    ratios = np.asarray(results["mean_to_std_ratios"])
    config = results["config"]
    figure, ax = plotting.subplots(width=9.0, height=6.0)

    for formula in FORMULAS:
        label, color, marker = _LOOKS[formula]
        errors = np.maximum(np.asarray(results["relative_error"][formula]), ERROR_FLOOR)
        plotting.plot_spread(ax, ratios, errors, color=color, marker=marker, label=label)

    dense = np.geomspace(ratios[0], ratios[-1], 200)
    for eps_key, label in (
        ("float32_eps", "theory: ε·(μ/σ)², ε of the dtype"),
        ("float64_eps", None),
    ):
        plotting.reference_line(ax, dense, results[eps_key] * dense**2, label=label)
    ax.axhline(1.0, color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=1.6)
    plotting.annotate(ax, "100 % error: no digit right", (ratios[0], 1.0))

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(ERROR_FLOOR / 10, 1e4)
    ax.set_xlabel("mean / standard deviation of the data, μ/σ")
    ax.set_ylabel("relative error of the variance")
    ax.legend(loc="lower right")
    plotting.set_title(
        figure,
        "When does E[x²] − E[x]² lose the variance?",
        f"n = {config['sample_size']} values per variance, "
        f"{plotting.spread_caption(len(config['seeds']))}; reference: exact float64 two-pass; "
        f"exact zeros drawn at {ERROR_FLOOR:.0e}",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: A relative error above 10^-0.5 (about 30 %) leaves no correct digit: fewer than half a digit.
NO_DIGIT_LEFT = 0.5


def correct_digits(relative_error, float32_eps: float) -> np.ndarray:
    """−log10 of the relative error, from 0 (no digit right) to all the digits float32 holds.

    float32 holds −log10(ε/2) ≈ 7.2 decimal digits (ε/2: the largest rounding error).
    """
    most = -math.log10(float32_eps / 2)
    errors = np.maximum(np.asarray(relative_error, dtype=float), float32_eps / 2)
    return np.clip(-np.log10(errors), 0.0, most)


def digits_lost(results: dict) -> dict:
    """The numbers the slide states: where the one-pass form keeps no digit, what two passes keep.

    ``ratio_without_digits``: the first μ/σ at which the median one-pass float32 error leaves
    fewer than :data:`NO_DIGIT_LEFT` correct digits (None if none does);
    ``two_pass_digits``: the fewest correct digits of the median two-pass float32 error.
    """
    eps = results["float32_eps"]
    one_pass = np.median(correct_digits(results["relative_error"]["one_pass_float32"], eps), 1)
    two_pass = np.median(correct_digits(results["relative_error"]["two_pass_float32"], eps), 1)
    without = [
        ratio
        for ratio, digits in zip(results["mean_to_std_ratios"], one_pass, strict=True)
        if digits < NO_DIGIT_LEFT
    ]
    return {
        "ratio_without_digits": without[0] if without else None,
        "two_pass_digits": int(np.floor(two_pass.min())),
    }


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: correct digits of the variance against mean/spread, one pass against two."""
    ratios = np.asarray(results["mean_to_std_ratios"])
    config = results["config"]
    eps = results["float32_eps"]
    numbers = digits_lost(results)
    kept = plotting.plural(numbers["two_pass_digits"], "digit")
    if numbers["ratio_without_digits"] is None:
        title = f"In float32, E[x²] − E[x]² loses digits as the mean grows; two passes keep {kept}"
    else:
        title = (
            "In float32, E[x²] − E[x]² loses every digit once the mean is "
            f"~{plotting.rounded(numbers['ratio_without_digits'])}× the spread; "
            f"two passes keep {kept}"
        )
    figure, ax = plotting.slide_figure(
        title,
        f"{config['sample_size']:,} values per variance, stored in float32; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    labels = {
        "one_pass_float32": "one pass: E[x²] − E[x]²",
        "two_pass_float32": "two passes: mean first, then squared deviations",
    }
    for formula, label in labels.items():
        _, color, marker = _LOOKS[formula]
        digits = correct_digits(results["relative_error"][formula], eps)
        plotting.plot_spread(ax, ratios, digits, color=color, marker=marker, label=label)
    most = -math.log10(eps / 2)
    ax.axhline(most, color=plotting.REFERENCE_COLOR, linestyle="--", linewidth=2)
    plotting.annotate(
        ax,
        f"float32's ~{most:.0f} digits",
        (ratios[-1], most),
        ha="right",
        fontsize=plotting.SLIDE_MIN_FONT_SIZE,
    )
    if numbers["ratio_without_digits"] is not None:
        ax.axvline(
            numbers["ratio_without_digits"],
            color=plotting.REFERENCE_COLOR,
            linestyle=":",
            linewidth=2.5,
        )
        ax.annotate(
            "  one pass: no digit left",
            (numbers["ratio_without_digits"], most / 2),
            ha="left",
            va="center",
            color=plotting.REFERENCE_COLOR,
            fontsize=plotting.SLIDE_MIN_FONT_SIZE,
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_xlim(ratios[0] / 1.5, ratios[-1] * 1.5)
    ax.set_ylim(-0.3, most + 1.3)
    ax.set_xlabel("mean of the data ÷ its spread (standard deviation)")
    ax.set_ylabel("correct digits of the variance")
    ax.legend(loc="lower left")
    return [("digits", figure)]
