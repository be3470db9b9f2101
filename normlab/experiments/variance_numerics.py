"""Float32 error of the variance E[x²]−E[x]² against the two-pass variance as mean/std grows.

The question: why does every normlab layer compute its variance in two passes
(mean first, then the mean of squared deviations) instead of the one-pass
``E[x²] - E[x]²``? Both are the same number in exact arithmetic. In floating
point the one-pass form subtracts two nearly equal large numbers, E[x²] ≈ μ² + σ²
and E[x]² ≈ μ², so its relative error is about ε·(μ/σ)² (ε = 1.2e-7 in float32):
0.1 % at μ/σ = 100, every digit wrong near μ/σ = 3000. The two-pass form
subtracts the mean before squaring and stays near ε.

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

from normlab import functional, plotting
from normlab.experiments.framework import ExperimentConfig, SweepOptions, grid, sweep

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

    mean_to_std_ratios: tuple[float, ...] = HALF_DECADES
    sample_size: int = 4096
    seeds: tuple[int, ...] = tuple(range(10))

    @classmethod
    def quick(cls) -> Config:
        return cls(mean_to_std_ratios=HALF_DECADES[::2], sample_size=1024, seeds=(0, 1, 2))

    def validate(self) -> None:
        super().validate()  # seeds: non-empty, integers ≥ 0
        if not self.mean_to_std_ratios or min(self.mean_to_std_ratios) <= 0:
            raise ValueError(
                f"mean_to_std_ratios must be positive numbers, got {self.mean_to_std_ratios}"
            )
        if self.sample_size < 2:
            raise ValueError(f"sample_size must be ≥ 2 to have a variance, got {self.sample_size}")


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
    runs = grid(ratio=config.mean_to_std_ratios, seed=config.seeds)
    for one_run in runs:
        one_run["sample_size"] = config.sample_size  # part of the cache key: it changes results
    measured = sweep(NAME, measure_one, runs, options)

    table_shape = (len(config.mean_to_std_ratios), len(config.seeds))  # grid order: ratio, seed
    relative_error = {
        formula: np.reshape([one[formula] for one in measured], table_shape) for formula in FORMULAS
    }
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
        f"n = {config['sample_size']} values per variance, {len(config['seeds'])} seeds "
        "(line: median, band: min–max); reference: exact float64 two-pass; "
        f"exact zeros drawn at {ERROR_FLOOR:.0e}",
    )
    return figure
