"""Spread of BatchNorm's batch mean and variance against batch size, measured against 1/√B theory.

The question: BatchNorm normalizes every sample with the mean and variance of
its batch, which are only estimates of the population's. How noisy are they at
a given batch size B, and does the textbook theory predict it?

Setup: for each batch size and seed, draw ``num_batches`` batches of B
independent samples from a fixed population and compute each batch's mean and
biased variance with :func:`normlab.functional.moments` (the function every
normlab layer uses). The spread is the standard deviation of these estimates
over the batches, per feature, divided by the theory below and averaged over
the features. Two populations:

* ``gaussian``: independent N(μ, σ²) features;
* ``digits_relu``: scikit-learn's digits (train split, standardized) through a
  fixed random ``Linear(64, width)`` + ReLU, i.e. real hidden activations.
  Batches are drawn *with replacement* from these rows, so the samples are
  independent and the theory holds exactly, with σ and kurtosis those of the
  rows. These features are far from Gaussian: half zeros from the ReLU and
  heavy tails from rarely-inked pixels, which standardization blows up.

Theory, for B independent samples with variance σ² and kurtosis κ = E[(x−μ)⁴]/σ⁴:

* batch mean: std = σ/√B, for any distribution.
* biased batch variance v = (1/B) Σ (xᵢ − x̄)², the estimator BatchNorm
  normalizes with. With the unbiased s² = B/(B−1)·v, the exact result is
  Var(s²) = σ⁴ (κ/B − (B−3)/(B(B−1))), hence

      std(v) = σ² (B−1)/B · √(κ/B − (B−3)/(B(B−1))).

  For Gaussian data κ = 3, B·v/σ² ~ χ²(B−1), and this becomes exactly
  std(v) = σ² √(2(B−1))/B ≈ σ² √(2/B) for large B. (The often quoted
  σ² √(2/(B−1)) is the std of the *unbiased* s²; the biased v is smaller by
  (B−1)/B.) Relative to its own mean, either spreads by √(2/(B−1)).
  For heavy-tailed data (κ ≫ 3) the variance is much noisier than the
  Gaussian formula says, by about √((κ−1)/2) at large B; the figure shows
  the measured spread against both formulas.

Images. In a CNN, BatchNorm2d takes one statistic per channel over the B images of the
batch AND their H·W positions, so the argument "a CNN statistic averages B·H·W values"
would give std σ/√(B·H·W). But the positions of one image are not independent draws:
neighbouring outputs share input pixels, and one image's strokes set all of its
positions at once, so the values of one image are correlated (either way). The third
column measures this on the feature map BatchNorm2d normalizes in the digits CNN's first
block (the digits images through a fixed random ``Conv2d(1, C, 3, padding=1)``, before
the ReLU, :func:`normlab.data.digits_conv_features`): batches of B images drawn with
replacement, each channel's mean and biased variance over the B·H·W values. The exact
theory for B independent *images* is std(image mean)/√B for the batch mean (the batch
mean is the mean of the B image means), and, to first order in 1/B, std over images of
each image's mean of (x − μ)², divided by √B, for the variance. The figure shows the
measured spread against the i.i.d. B·H·W formula (with the pooled σ and kurtosis) and
against the per-image one. "Values worth per image" is H·W / (measured / i.i.d.)²: how
many independent values one image's H·W positions are worth for that statistic.
Each batch's statistics are combined exactly from each image's own mean and sum of
squared deviations (two passes, no E[x²] − E[x]²; a test checks them against
:func:`normlab.functional.moments` over the (B, H, W) axes).

What would refute the theory: a Gaussian batch-mean spread off σ/√B, or a Gaussian
variance spread off the exact formula, by more than the sampling error of
``num_batches`` batches (a few percent); a digits mean spread off σ/√B (the mean's
formula holds for any distribution); or an image-position mean spread off
std(image mean)/√B, the exact formula for independent images. Whether the i.i.d.
B·H·W formula over- or underestimates the image case is the measurement itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import data, plotting
from normlab import functional as F
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    integers,
    measure_together,
    number,
    seeds,
)

NAME = "batch_stat_noise"

#: The populations the batches are drawn from.
POPULATIONS = ("gaussian", "digits_relu")

#: The CNN feature map, measured beside the populations of vectors (the third column).
IMAGE_POPULATION = "digits_conv_positions"

#: The quantities measured per run; each is averaged over the features.
QUANTITIES = (
    "std_mean_over_sigma",  # std of the batch mean / σ
    "std_var_over_sigma2",  # std of the biased batch variance / σ²
    "mean_ratio",  # measured std of the batch mean / (σ/√B)
    "var_ratio",  # measured std of the variance / theory with the population's kurtosis
    "var_ratio_gaussian_theory",  # measured std of the variance / Gaussian theory (κ = 3)
)

#: The quantities measured per run on the positions of a CNN feature map (channel means).
POSITION_QUANTITIES = (
    "std_mean_over_sigma",  # std of the batch mean / pooled σ
    "std_var_over_sigma2",  # std of the biased batch variance / pooled σ²
    "mean_ratio_iid",  # measured / σ/√(B·H·W), as if the B·H·W values were independent
    "var_ratio_iid",  # measured / the exact formula for B·H·W independent values
    "mean_ratio_images",  # measured / std(image mean)/√B: exact for independent images
    "var_ratio_images",  # measured / std(image mean of (x − μ)²)/√B: first order in 1/B
)


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    batch_sizes : tuple of int ≥ 2
        B on the x-axis (a batch of 1 has no variance).
    seeds : tuple of int
        Independent repetitions of the whole measurement; the band shows their range.
    num_batches : int
        Batches drawn per (population, B, seed); the spread is the std over them.
    populations : tuple of str
        Any of ``"gaussian"``, ``"digits_relu"``.
    gaussian_mean, gaussian_std : float
        μ and σ of the Gaussian features.
    num_gaussian_features : int
        How many independent Gaussian features (the result is averaged over them).
    hidden_width : int
        Width of the random Linear + ReLU applied to the digits.
    image_channels : int
        Channels of the random Conv2d whose feature map gives the image positions.
    network_seed : int
        Seeds that Linear layer and that Conv2d (fixed across runs: they define the
        populations).
    """

    batch_sizes: tuple[int, ...] = integers(
        (2, 4, 8, 16, 32, 64, 128, 256), minimum=2, why="a batch of one has no variance"
    )
    seeds: tuple[int, ...] = seeds(5)
    num_batches: int = integer(1000, minimum=10, why="to measure a spread")
    populations: tuple[str, ...] = choices(POPULATIONS, POPULATIONS)
    gaussian_mean: float = number(3.0)
    gaussian_std: float = number(2.0, above=0)
    num_gaussian_features: int = integer(16, minimum=1)
    hidden_width: int = integer(32, minimum=1)
    image_channels: int = integer(8, minimum=1)
    network_seed: int = integer(0, minimum=0)

    @classmethod
    def quick(cls) -> Config:
        return cls(batch_sizes=(2, 8, 32, 128), seeds=(0, 1, 2), num_batches=400)


# ---------------------------------------------------------------------------
# Theory
# ---------------------------------------------------------------------------


def std_of_mean(sigma, batch_size: int):
    """Standard deviation of the mean of ``batch_size`` independent samples: σ/√B."""
    return sigma / np.sqrt(batch_size)


def std_of_biased_variance(sigma, kurtosis, batch_size: int):
    """Exact std of v = (1/B) Σ (xᵢ − x̄)² for independent samples of variance σ², kurtosis κ.

    ``σ² (B−1)/B · √(κ/B − (B−3)/(B(B−1)))``; for κ = 3 (Gaussian) this is σ² √(2(B−1))/B.
    """
    b = batch_size
    return sigma**2 * (b - 1) / b * np.sqrt(kurtosis / b - (b - 3) / (b * (b - 1)))


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def population_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """σ and kurtosis κ of each column of ``values`` (the exact population, ddof=0)."""
    deviation = values - values.mean(axis=0)  # (n, D)
    variance = np.mean(deviation**2, axis=0)  # (D,)
    kurtosis = np.mean(deviation**4, axis=0) / variance**2  # (D,)
    return np.sqrt(variance), kurtosis


def draw_batches(run: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num_batches`` batches of the run's population: (K, B, D), with the population σ and κ."""
    shape = (run["num_batches"], run["batch_size"])
    if run["population"] == "gaussian":
        num_features = run["num_gaussian_features"]
        batches = run["gaussian_mean"] + run["gaussian_std"] * rng.standard_normal(
            (*shape, num_features)
        )
        sigma = np.full(num_features, float(run["gaussian_std"]))
        return batches, sigma, np.full(num_features, 3.0)
    activations = data.digits_hidden_features(run["hidden_width"], run["network_seed"], relu=True)
    rows = rng.integers(0, activations.shape[0], size=shape)  # with replacement: independent
    sigma, kurtosis = population_moments(activations)
    return activations[rows], sigma, kurtosis  # (K, B, D)


def measure_one(run: dict) -> dict:
    """Spread of the batch mean and variance for one (population, B, seed), over the features.

    The population :data:`IMAGE_POPULATION` is the CNN feature map (:func:`measure_positions`).
    """
    if run["population"] == IMAGE_POPULATION:
        return measure_positions(run)
    population_index = POPULATIONS.index(run["population"])
    rng = np.random.default_rng((run["seed"], run["batch_size"], population_index))
    batches, sigma, kurtosis = draw_batches(run, rng)  # (K, B, D), (D,), (D,)
    batch_size = run["batch_size"]
    mean, var, _ = F.moments(batches, reduce_axes=(1,))  # (K, 1, D) each, var biased
    measured_std_mean = np.std(mean[:, 0], axis=0, ddof=1)  # (D,)
    measured_std_var = np.std(var[:, 0], axis=0, ddof=1)  # (D,)
    return {
        "std_mean_over_sigma": float(np.mean(measured_std_mean / sigma)),
        "std_var_over_sigma2": float(np.mean(measured_std_var / sigma**2)),
        "mean_ratio": float(np.mean(measured_std_mean / std_of_mean(sigma, batch_size))),
        "var_ratio": float(
            np.mean(measured_std_var / std_of_biased_variance(sigma, kurtosis, batch_size))
        ),
        "var_ratio_gaussian_theory": float(
            np.mean(measured_std_var / std_of_biased_variance(sigma, 3.0, batch_size))
        ),
    }


def image_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's channel means and biased variances over its H·W positions: (n, C) each."""
    mean, var, _ = F.moments(features, reduce_axes=(1, 2))  # (n, 1, 1, C) each
    return mean[:, 0, 0], var[:, 0, 0]


def batch_moments_from_images(image_mean: np.ndarray, image_var: np.ndarray, rows: np.ndarray):
    """Mean and biased variance over the B·H·W values of each batch of images ``rows`` (K, B).

    Exactly what :func:`normlab.functional.moments` gives over the (B, H, W) axes, from
    each image's own statistics, in two passes: the batch mean is the mean of the image
    means; the sum of squared deviations from it is, per image, the image's own sum
    ``H·W·var`` plus ``H·W·(image mean − batch mean)²``. Returns (K, C) each.
    """
    means = image_mean[rows]  # (K, B, C)
    batch_mean = means.mean(axis=1)  # (K, C)
    spread = np.mean((means - batch_mean[:, None]) ** 2, axis=1)  # (K, C)
    return batch_mean, image_var[rows].mean(axis=1) + spread


def position_population(channels: int, network_seed: int) -> dict:
    """The pooled σ and κ of each channel and the per-image spreads the theory needs."""
    features = data.digits_conv_features(channels, network_seed)  # (n, H, W, C)
    pooled = features.reshape(-1, features.shape[-1])  # (n·H·W, C)
    sigma, kurtosis = population_moments(pooled)
    centered_square = (features - pooled.mean(axis=0)) ** 2  # (n, H, W, C)
    return {
        "sigma": sigma,
        "kurtosis": kurtosis,
        "std_image_mean": features.mean(axis=(1, 2)).std(axis=0),  # (C,)
        "std_image_centered_square": centered_square.mean(axis=(1, 2)).std(axis=0),  # (C,)
        "positions": features.shape[1] * features.shape[2],
    }


def measure_positions(run: dict) -> dict:
    """Spread of the channel statistics of batches of B images over their H·W positions."""
    features = data.digits_conv_features(run["image_channels"], run["network_seed"])
    population = position_population(run["image_channels"], run["network_seed"])
    rng = np.random.default_rng((run["seed"], run["batch_size"], len(POPULATIONS)))
    rows = rng.integers(0, features.shape[0], size=(run["num_batches"], run["batch_size"]))
    mean, var = batch_moments_from_images(*image_moments(features), rows)  # (K, C) each
    measured_std_mean = np.std(mean, axis=0, ddof=1)  # (C,)
    measured_std_var = np.std(var, axis=0, ddof=1)  # (C,)
    batch_size, sigma = run["batch_size"], population["sigma"]
    values = batch_size * population["positions"]  # B·H·W values per statistic
    iid_var = std_of_biased_variance(sigma, population["kurtosis"], values)
    root_batch = np.sqrt(batch_size)
    return {
        "std_mean_over_sigma": float(np.mean(measured_std_mean / sigma)),
        "std_var_over_sigma2": float(np.mean(measured_std_var / sigma**2)),
        "mean_ratio_iid": float(np.mean(measured_std_mean / std_of_mean(sigma, values))),
        "var_ratio_iid": float(np.mean(measured_std_var / iid_var)),
        "mean_ratio_images": float(
            np.mean(measured_std_mean / (population["std_image_mean"] / root_batch))
        ),
        "var_ratio_images": float(
            np.mean(measured_std_var / (population["std_image_centered_square"] / root_batch))
        ),
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Measure every (population, batch size, seed); return the spreads and the theory.

    Returns
    -------
    dict with
        ``config``; ``batch_sizes``;
        ``measured[population][quantity]``: list over batch sizes of lists over
        seeds, for each of :data:`QUANTITIES`;
        ``theory[population]``: ``std_mean_over_sigma`` (1/√B) and
        ``std_var_over_sigma2`` (the exact formula with the population's
        kurtosis, averaged over features) per batch size, and
        ``std_var_over_sigma2_gaussian`` (κ = 3);
        ``kurtosis[population]``: mean, min and max over the features;
        ``num_features[population]``;
        ``positions``: the CNN feature map: ``measured[quantity]`` (lists over batch
        sizes of lists over seeds, :data:`POSITION_QUANTITIES`), ``theory`` (per batch
        size, in units of σ: ``iid_std_mean``, ``images_std_mean``), ``num_channels``,
        ``values_per_image`` (H·W), ``kurtosis`` (mean, min, max);
        ``headline``.
    """
    runs = config.runs(population="populations", batch_size="batch_sizes", seed="seeds")
    image_runs = config.runs(population=(IMAGE_POPULATION,), batch_size="batch_sizes", seed="seeds")
    measured_runs, measured_images = measure_together(
        NAME, measure_one, [runs, image_runs], options
    )
    # (populations, batch sizes, seeds) per quantity
    measured = {quantity: measured_runs.table(quantity) for quantity in QUANTITIES}
    batch_sizes = np.asarray(config.batch_sizes)
    results: dict = {
        "config": config.to_dict(),
        "batch_sizes": list(config.batch_sizes),
        "measured": {},
        "theory": {},
        "kurtosis": {},
        "num_features": {},
    }
    for index, population in enumerate(config.populations):
        kurtosis = _population_kurtosis(population, config)  # (D,)
        results["measured"][population] = {
            quantity: table[index].tolist() for quantity, table in measured.items()
        }
        results["theory"][population] = {
            "std_mean_over_sigma": std_of_mean(1.0, batch_sizes).tolist(),
            "std_var_over_sigma2": [
                float(np.mean(std_of_biased_variance(1.0, kurtosis, b))) for b in batch_sizes
            ],
            "std_var_over_sigma2_gaussian": [
                float(std_of_biased_variance(1.0, 3.0, b)) for b in batch_sizes
            ],
        }
        results["kurtosis"][population] = {
            "mean": float(kurtosis.mean()),
            "min": float(kurtosis.min()),
            "max": float(kurtosis.max()),
        }
        results["num_features"][population] = int(kurtosis.size)
    population = position_population(config.image_channels, config.network_seed)
    sigma = population["sigma"]
    results["positions"] = {
        "measured": {
            quantity: measured_images.table(quantity)[0].tolist()  # (batch sizes, seeds)
            for quantity in POSITION_QUANTITIES
        },
        "theory": {
            "iid_std_mean_over_sigma": [
                float(np.mean(std_of_mean(1.0, size * population["positions"])))
                for size in batch_sizes
            ],
            "images_std_mean_over_sigma": [
                float(np.mean(population["std_image_mean"] / sigma / np.sqrt(size)))
                for size in batch_sizes
            ],
        },
        "num_channels": int(sigma.size),
        "values_per_image": population["positions"],
        "kurtosis": {
            "mean": float(population["kurtosis"].mean()),
            "min": float(population["kurtosis"].min()),
            "max": float(population["kurtosis"].max()),
        },
    }
    results["headline"] = _headline(results, config)
    return results


def _population_kurtosis(population: str, config: Config) -> np.ndarray:
    if population == "gaussian":
        return np.full(config.num_gaussian_features, 3.0)
    activations = data.digits_hidden_features(config.hidden_width, config.network_seed, relu=True)
    _, kurtosis = population_moments(activations)
    return kurtosis


def _headline(results: dict, config: Config) -> dict:
    headline = {}
    for population, measured in results["measured"].items():
        spread_mean = np.mean(measured["std_mean_over_sigma"], axis=1)  # (batch sizes,)
        spread_var = np.mean(measured["std_var_over_sigma2"], axis=1)
        headline[population] = {
            f"std_mean_over_sigma_at_B{config.batch_sizes[0]}": float(spread_mean[0]),
            f"std_mean_over_sigma_at_B{config.batch_sizes[-1]}": float(spread_mean[-1]),
            f"std_var_over_sigma2_at_B{config.batch_sizes[0]}": float(spread_var[0]),
            f"std_var_over_sigma2_at_B{config.batch_sizes[-1]}": float(spread_var[-1]),
            "mean_ratio_to_theory_average": float(np.mean(measured["mean_ratio"])),
            "var_ratio_to_theory_average": float(np.mean(measured["var_ratio"])),
            "var_ratio_to_gaussian_theory_at_largest_B": float(
                np.mean(measured["var_ratio_gaussian_theory"][-1])
            ),
            "mean_kurtosis": results["kurtosis"][population]["mean"],
        }
    positions = results["positions"]
    measured = {key: np.asarray(values) for key, values in positions["measured"].items()}
    per_image = positions["values_per_image"]
    mean_iid, var_iid = np.mean(measured["mean_ratio_iid"]), np.mean(measured["var_ratio_iid"])
    headline["positions"] = {
        "values_per_image": per_image,
        "mean_ratio_to_iid_formula_average": float(mean_iid),
        "var_ratio_to_iid_formula_average": float(var_iid),
        "mean_ratio_to_image_formula_average": float(np.mean(measured["mean_ratio_images"])),
        "var_ratio_to_image_formula_at_largest_B": float(np.mean(measured["var_ratio_images"][-1])),
        "mean_worth_values_per_image": float(per_image / mean_iid**2),
        "var_worth_values_per_image": float(per_image / var_iid**2),
        "mean_kurtosis": positions["kurtosis"]["mean"],
    }
    return headline


def summary(results: dict) -> str:
    """The spreads against the theory as text, per population, then the feature map."""
    sizes = results["batch_sizes"]
    config = results["config"]
    lines = [
        f"batch sizes {sizes}, {config['num_batches']} batches each, "
        f"{len(config['seeds'])} seed(s); spreads in units of σ (mean) and σ² (variance)"
    ]

    def row(name: str, values) -> str:
        return f"  {name:20s}" + "".join(f"{value:8.3f}" for value in values)

    for population, measured in results["measured"].items():
        theory = results["theory"][population]
        kurtosis = results["kurtosis"][population]["mean"]
        lines += [
            f"\n{population} (mean kurtosis κ = {kurtosis:.1f}):",
            f"  {'B':20s}" + "".join(f"{size:>8d}" for size in sizes),
            row("std(mean)/σ", np.mean(measured["std_mean_over_sigma"], axis=1)),
            row("theory 1/√B", theory["std_mean_over_sigma"]),
            row("std(var)/σ²", np.mean(measured["std_var_over_sigma2"], axis=1)),
            row("theory with κ", theory["std_var_over_sigma2"]),
            row("Gaussian formula", theory["std_var_over_sigma2_gaussian"]),
        ]
    positions = results["positions"]
    measured = positions["measured"]
    lines += [
        f"\nCNN feature map: {positions['num_channels']} channels, "
        f"H·W = {positions['values_per_image']} positions per image, "
        f"mean kurtosis κ = {positions['kurtosis']['mean']:.1f}",
        f"  {'B (images)':20s}" + "".join(f"{size:>8d}" for size in sizes),
        row("std(mean)/σ", np.mean(measured["std_mean_over_sigma"], axis=1)),
        row("i.i.d. 1/√(B·H·W)", positions["theory"]["iid_std_mean_over_sigma"]),
        row("per image", positions["theory"]["images_std_mean_over_sigma"]),
        row("mean / i.i.d.", np.mean(measured["mean_ratio_iid"], axis=1)),
        row("variance / i.i.d.", np.mean(measured["var_ratio_iid"], axis=1)),
        row("mean / per image", np.mean(measured["mean_ratio_images"], axis=1)),
        row("variance / per image", np.mean(measured["var_ratio_images"], axis=1)),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: One look per population: both are BatchNorm statistics, so both in BatchNorm's hue.
_LOOKS = {
    "gaussian": {
        "label": "Gaussian features",
        "color": plotting.METHODS["batch"].color,
        "marker": "o",
        "linestyle": "-",
    },
    "digits_relu": {
        "label": "digits → random Linear+ReLU",
        "color": plotting.COLORS["sky_blue"],
        "marker": "D",
        "linestyle": "--",
    },
}


#: Legend entries of the variance ratio panel.
_RATIO_LABELS = {
    "gaussian": "Gaussian: measured / exact (κ = 3)",
    "digits_relu": "digits: measured / exact with κ (mean κ = {kurtosis:.1f})",
}


def _spread(ax, batch_sizes, samples, population: str, label: str | None = None) -> None:
    look = dict(_LOOKS[population])
    default_label = look.pop("label")
    plotting.plot_spread(
        ax,
        batch_sizes,
        samples,
        center="mean",
        label=default_label if label is None else label,
        **look,
    )


#: The look of the image-position measurements (BatchNorm2d's statistics).
_POSITION_LOOKS = {
    "mean": {"color": plotting.METHODS["batch"].color, "marker": "o"},
    "var": {"color": plotting.COLORS["vermillion"], "marker": "s"},
}


def _plot_positions(ax_spread, ax_ratio, results: dict, batch_sizes) -> None:
    """The third column: a CNN feature map's channel mean over B·H·W positions."""
    positions = results["positions"]
    measured, theory = positions["measured"], positions["theory"]
    per_image = positions["values_per_image"]
    plotting.plot_spread(
        ax_spread,
        batch_sizes,
        measured["std_mean_over_sigma"],
        center="mean",
        label="measured: std of the channel mean / σ",
        **_POSITION_LOOKS["mean"],
    )
    plotting.reference_line(
        ax_spread,
        batch_sizes,
        theory["iid_std_mean_over_sigma"],
        label=f"as if B·H·W independent values: 1/√(B·{per_image})",
    )
    plotting.reference_line(
        ax_spread,
        batch_sizes,
        theory["images_std_mean_over_sigma"],
        linestyle=":",
        label="B independent images: std(image mean)/(σ√B)",
    )
    for statistic, key, label in (
        ("mean", "mean_ratio_iid", "mean / i.i.d. B·H·W formula"),
        ("var", "var_ratio_iid", "variance / i.i.d. B·H·W formula (pooled κ)"),
    ):
        plotting.plot_spread(
            ax_ratio,
            batch_sizes,
            measured[key],
            center="mean",
            label=label,
            **_POSITION_LOOKS[statistic],
        )
    for statistic, key, label in (
        ("mean", "mean_ratio_images", "mean / per-image formula (exact)"),
        ("var", "var_ratio_images", "variance / per-image formula (first order)"),
    ):
        plotting.plot_spread(
            ax_ratio,
            batch_sizes,
            measured[key],
            center="mean",
            label=label,
            linestyle="--",
            markerfacecolor="white",
            **_POSITION_LOOKS[statistic],
        )
    ax_ratio.axhline(1.0, color=plotting.REFERENCE_COLOR, linestyle="--", linewidth=1.6)
    ax_spread.set_title(f"CNN feature map: B images × {per_image} positions")
    ax_ratio.set_title("feature map: measured / theory")
    ax_spread.set_ylabel("std of batch mean / σ")
    ax_ratio.set_ylabel("measured / theory")
    ax_spread.set_yscale("log")
    plotting.plain_log_labels(ax_spread.yaxis)
    ax_spread.legend(loc="lower left", fontsize=12)
    ax_ratio.legend(loc="upper right", fontsize=11)


@plotting.styled
def plot(results: dict) -> Figure:
    """2×3: spread of the mean and the variance (top), measured/theory (bottom), images (right)."""
    config = results["config"]
    batch_sizes = np.asarray(results["batch_sizes"])
    populations = list(results["measured"])
    figure, axes = plotting.subplots(2, 3, width=22.0, height=11.0)
    (ax_mean, ax_var, ax_image), (ax_mean_ratio, ax_var_ratio, ax_image_ratio) = axes
    _plot_positions(ax_image, ax_image_ratio, results, batch_sizes)

    for population in populations:
        measured = results["measured"][population]
        _spread(ax_mean, batch_sizes, measured["std_mean_over_sigma"], population)
        _spread(ax_var, batch_sizes, measured["std_var_over_sigma2"], population)
        _spread(ax_mean_ratio, batch_sizes, measured["mean_ratio"], population)
        kurtosis = results["kurtosis"][population]["mean"]
        _spread(
            ax_var_ratio,
            batch_sizes,
            measured["var_ratio"],
            population,
            label=_RATIO_LABELS[population].format(kurtosis=kurtosis),
        )
    if "digits_relu" in populations:
        plotting.plot_spread(
            ax_var_ratio,
            batch_sizes,
            results["measured"]["digits_relu"]["var_ratio_gaussian_theory"],
            color=_LOOKS["digits_relu"]["color"],
            marker="d",
            linestyle=":",
            markerfacecolor="white",
            center="mean",
            label="digits: measured / Gaussian formula (κ = 3)",
        )

    first = populations[0]
    plotting.reference_line(
        ax_mean,
        batch_sizes,
        results["theory"][first]["std_mean_over_sigma"],
        label="theory 1/√B (any distribution)",
    )
    plotting.reference_line(
        ax_var,
        batch_sizes,
        results["theory"][first]["std_var_over_sigma2_gaussian"],
        label="Gaussian theory √(2(B−1))/B",
    )
    if "digits_relu" in results["theory"]:
        plotting.reference_line(
            ax_var,
            batch_sizes,
            results["theory"]["digits_relu"]["std_var_over_sigma2"],
            linestyle=":",
            label="exact with the digits' kurtosis κ",
        )
    for ax in (ax_mean_ratio, ax_var_ratio):
        ax.axhline(1.0, color=plotting.REFERENCE_COLOR, linestyle="--", linewidth=1.6)

    ax_mean.set_ylabel("std of batch mean / σ")
    ax_var.set_ylabel("std of batch variance / σ²")
    ax_mean_ratio.set_ylabel("measured / theory σ/√B")
    ax_var_ratio.set_ylabel("measured / theory")
    ax_mean.set_title("batch mean")
    ax_var.set_title("biased batch variance (what BatchNorm uses)")
    ax_mean_ratio.set_title("batch mean: measured / theory")
    ax_var_ratio.set_title("batch variance: measured / theory")
    for ax in axes.flat:
        plotting.log2_axis(ax, batch_sizes, label="batch size B")
    for ax in axes[:, 2]:
        ax.set_xlabel("batch size B (images)")
    for ax in (ax_mean, ax_var):
        ax.set_yscale("log")
        ax.legend(loc="lower left")
    ax_mean_ratio.set_ylim(0.8, 1.2)
    ax_mean_ratio.legend(loc="upper right")
    ax_var_ratio.set_yscale("log")
    for ax in (ax_mean, ax_var, ax_var_ratio):
        plotting.plain_log_labels(ax.yaxis)
        ax.tick_params(axis="y", which="minor", labelsize=11)
    ax_var_ratio.legend(loc="center right", fontsize=12)
    plotting.set_title(
        figure,
        "How noisy are BatchNorm's batch statistics? The spread falls as 1/√B",
        f"std over {config['num_batches']} batches per batch size, divided by the population σ "
        "(or σ²) and averaged over features; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="count_last")
        + f". Gaussian: {config['num_gaussian_features']} features "
        f"N({config['gaussian_mean']:g}, {config['gaussian_std']:g}²). Digits: "
        f"{results['num_features'].get('digits_relu', 0)} live features of a fixed random "
        f"Linear(64, {config['hidden_width']}) + ReLU, batches drawn with replacement. "
        f"Feature map: the digits through a fixed random Conv2d(1, "
        f"{config['image_channels']}, 3×3), before the ReLU, "
        f"{results['positions']['num_channels']} live channels, what the CNN's first "
        "BatchNorm2d normalizes.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The populations in plain words, for the slides' legends.
_SLIDE_LABELS = {
    "gaussian": "Gaussian features",
    "digits_relu": "digit features (heavy tails)",
}

#: A measured spread within this share of its formula "follows" it (the sampling error of
#: a few hundred batches is a few percent).
_FOLLOWS = 0.1


def _mean_over(values) -> np.ndarray:
    """The mean over seeds of a (batch sizes, seeds) list: one number per batch size."""
    return np.mean(np.asarray(values, dtype=float), axis=1)


def _in_order(measured: dict) -> list[str]:
    """The populations measured, in the order of :data:`POPULATIONS` (saved JSON sorts keys)."""
    return [population for population in POPULATIONS if population in measured]


def _noise_axes(ax, batch_sizes, ylabel: str) -> None:
    plotting.log2_axis(ax, batch_sizes, label="batch size")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower left")


def _mean_slide(results: dict) -> Figure:
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    measured = results["measured"]
    follows = all(
        abs(np.mean(measured[population]["mean_ratio"]) - 1) < _FOLLOWS for population in measured
    )
    shown = "gaussian" if "gaussian" in measured else next(iter(measured))
    first = _mean_over(measured[shown]["std_mean_over_sigma"])
    noise = (
        f"{first[0]:.2f} of the spread at batch size {batch_sizes[0]}, "
        f"{first[-1]:.2f} at {batch_sizes[-1]}"
    )
    if follows:
        title = f"The batch mean's noise falls as 1/√(batch size), for any data: {noise}"
    else:
        title = f"The batch mean's noise against batch size: {noise}"
    figure, ax = plotting.slide_figure(
        title,
        f"{config['num_batches']:,} batches per batch size; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
    )
    for population in _in_order(measured):
        values = measured[population]
        _spread(
            ax, batch_sizes, values["std_mean_over_sigma"], population, _SLIDE_LABELS[population]
        )
    plotting.reference_line(
        ax,
        batch_sizes,
        results["theory"][shown]["std_mean_over_sigma"],
        label="1/√(batch size)",
        linewidth=2.5,
    )
    _noise_axes(ax, batch_sizes, "noise of the batch mean\n(std ÷ the data's spread)")
    return figure


def _variance_slide(results: dict) -> Figure:
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    measured = results["measured"]
    digits = measured["digits_relu"]
    times = float(np.mean(digits["var_ratio_gaussian_theory"][-1]))
    fits = abs(np.mean(digits["var_ratio"]) - 1) < _FOLLOWS
    if times > 1 + _FOLLOWS:
        title = (
            f"On heavy-tailed features the batch variance is {times:.1f}× noisier than the "
            "Gaussian formula says" + ("; the formula with their tails fits" if fits else "")
        )
    else:
        title = "The batch variance's noise on heavy-tailed features, against the Gaussian formula"
    figure, ax = plotting.slide_figure(
        title,
        f"{config['num_batches']:,} batches per batch size; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
    )
    for population in _in_order(measured):
        values = measured[population]
        _spread(
            ax, batch_sizes, values["std_var_over_sigma2"], population, _SLIDE_LABELS[population]
        )
    theory = results["theory"]["digits_relu"]
    plotting.reference_line(
        ax,
        batch_sizes,
        theory["std_var_over_sigma2_gaussian"],
        label="Gaussian formula",
        linewidth=2.5,
    )
    plotting.reference_line(
        ax,
        batch_sizes,
        theory["std_var_over_sigma2"],
        linestyle=":",
        linewidth=3,
        label="formula with the digits' tails",
    )
    _noise_axes(ax, batch_sizes, "noise of the batch variance\n(std ÷ the data's variance)")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """The batch mean's noise against 1/√B; with the digits, the variance's heavy tails."""
    named = [("mean", _mean_slide(results))]
    if "digits_relu" in results["measured"]:
        named.append(("variance", _variance_slide(results)))
    return named
