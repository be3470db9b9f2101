"""Running mean/var of BatchNorm over training steps against the true population values.

The question: at inference BatchNorm normalizes with ``running_mean`` and
``running_var``, averages of the batch statistics seen in training. How fast
do they reach the population values, how noisy are they once there, and why is
``running_var`` updated with the *unbiased* batch variance?

Setup: a stationary population, ``num_features`` independent features, each
N(μ, σ²) with known μ and σ. For each momentum and seed, a fresh
``nl.BatchNorm(momentum=...)`` in training mode sees ``num_steps`` batches of
``batch_size`` samples; its own ``running_mean`` / ``running_var`` are recorded
after every step. Every momentum sees the same batches for a given seed.

Theory (PyTorch's convention, as in normlab):
``running = (1 − m)·running + m·batch_statistic``, starting from
running_mean = 0, running_var = 1; momentum=None is the cumulative average
(m = 1/step).

* Speed: the start value is forgotten as (1 − m)^step: after ~1/m steps.
* Noise: the batch mean has variance σ²/B; an exponential average of
  independent values keeps m/(2 − m) of their variance, so once converged
  std(running_mean) = σ/√B · √(m/(2 − m)). The cumulative average after S
  steps has std σ/√(B·S), which keeps shrinking. For the variance, with the
  unbiased batch variance s² (std σ²·√(2/(B−1)) for Gaussian data),
  std(running_var) = σ²·√(2/(B−1))·√(m/(2 − m)), and σ²·√(2/((B−1)·S)) for the
  cumulative average. Larger momentum: faster, but noisier.
* Bias: the forward pass normalizes with the biased batch variance
  v = (1/B)Σ(xᵢ − x̄)², whose expectation is (B−1)/B·σ², 25 % too small at B = 4.
  ``running_var`` is updated with v·B/(B−1) (Bessel's correction), whose
  expectation is σ², so it converges to the population variance; an average of
  the biased v would converge to (B−1)/B·σ². The figure computes that biased
  alternative next to the layer's own running_var (cumulative average, same
  batches) with :func:`normlab.functional.moments`.

What would refute the theory: final spreads over seeds far from the exponential-average
formula (beyond the sampling error of the seeds), noise that does not grow with the
momentum, or a cumulative running_var that does not converge to σ² while the average
of the biased variance converges to (B−1)/B·σ².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

import normlab as nl
from normlab import functional as F
from normlab import plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    number,
    numbers,
    seeds,
)

NAME = "running_stats"

#: How many log-spaced steps of each trajectory are kept for the figure.
NUM_RECORDED_STEPS = 60


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    momenta : tuple of float in (0, 1] or None
        BatchNorm momenta to compare; None is the cumulative average.
    batch_size : int ≥ 2
        B: small, so that the (B−1)/B bias of the plain batch variance is visible.
    num_steps : int
        Training steps (batches) per run.
    seeds : tuple of int
        Independent runs; the bands show their range.
    num_features : int
        Independent features per run, all N(μ, σ²); the final spread is pooled over them.
    population_mean, population_std : float
        μ and σ of the population.
    """

    momenta: tuple[float | None, ...] = numbers(
        (0.01, 0.1, 0.5, None), above=0, maximum=1, allow_none=True
    )
    batch_size: int = integer(4, minimum=2, why="BatchNorm cannot train on one sample")
    num_steps: int = integer(1000, minimum=2)
    seeds: tuple[int, ...] = seeds(10)
    num_features: int = integer(8, minimum=1)
    population_mean: float = number(3.0)
    population_std: float = number(2.0, above=0)

    @classmethod
    def quick(cls) -> Config:
        return cls(num_steps=300, seeds=(0, 1, 2, 3))


# ---------------------------------------------------------------------------
# Theory
# ---------------------------------------------------------------------------


def kept_fraction(momentum: float | None, step) -> np.ndarray:
    """Var(running average after ``step`` updates) / Var(one batch statistic).

    Exponential average: m/(2 − m)·(1 − (1 − m)^(2·step)); cumulative: 1/step.
    """
    step = np.asarray(step, dtype=float)
    if momentum is None:
        return 1.0 / step
    return momentum / (2 - momentum) * (1 - (1 - momentum) ** (2 * step))


def start_weight(momentum: float | None, step) -> np.ndarray:
    """How much of the start value is left after ``step`` updates: (1 − m)^step (None: 0)."""
    step = np.asarray(step, dtype=float)
    if momentum is None:
        return np.zeros_like(step)  # the first update has weight 1/1
    return (1 - momentum) ** step


def theory_rms_error(
    momentum: float | None, step, batch_size: int, mean: float, std: float
) -> dict[str, np.ndarray]:
    """Root-mean-square error of running_mean (in σ) and running_var (in σ²) after ``step``.

    √(bias² + variance): the bias is what is left of the start value (0 for
    the mean, 1 for the variance), the variance is :func:`kept_fraction` of a
    batch statistic's (σ²/B for the mean, 2σ⁴/(B − 1) for the unbiased
    variance of Gaussian data).
    """
    kept = kept_fraction(momentum, step)
    left = start_weight(momentum, step)
    mean_bias = left * (0.0 - mean) / std
    var_bias = left * (1.0 - std**2) / std**2
    return {
        "mean": np.sqrt(mean_bias**2 + kept / batch_size),
        "var": np.sqrt(var_bias**2 + kept * 2 / (batch_size - 1)),
    }


def recorded_steps(num_steps: int) -> list[int]:
    """About :data:`NUM_RECORDED_STEPS` log-spaced steps from 1 to ``num_steps``."""
    steps = np.geomspace(1, num_steps, NUM_RECORDED_STEPS).round().astype(int)
    return np.unique(steps).tolist()


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_one(run: dict) -> dict:
    """Train one BatchNorm on ``num_steps`` batches; its running stats along the way.

    The batches depend only on the seed, so every momentum sees the same data.
    Alongside, the cumulative average of the *biased* batch variance (what
    running_var would be without Bessel's correction) is computed from the
    same batches.
    """
    rng = np.random.default_rng(run["seed"])
    num_steps, batch_size, num_features = run["num_steps"], run["batch_size"], run["num_features"]
    mean, std = run["population_mean"], run["population_std"]
    batches = mean + std * rng.standard_normal((num_steps, batch_size, num_features))  # (S, B, D)
    layer = nl.BatchNorm(num_features, momentum=run["momentum"], dtype=np.float64)
    running_mean = np.empty((num_steps, num_features))
    running_var = np.empty((num_steps, num_features))
    for step in range(num_steps):
        layer(batches[step])
        running_mean[step] = layer.running_mean
        running_var[step] = layer.running_var

    _, biased_var, _ = F.moments(batches, reduce_axes=(1,))  # (S, 1, D)
    biased_cumulative = np.cumsum(biased_var[:, 0], axis=0) / np.arange(1, num_steps + 1)[:, None]

    keep = np.asarray(recorded_steps(num_steps)) - 1  # 0-based rows after those steps
    mean_error = (running_mean[keep] - mean) / std  # (steps kept, D), in σ
    var_error = (running_var[keep] - std**2) / std**2  # in σ²
    return {
        "feature0_running_mean": running_mean[keep, 0],
        "feature0_running_var": running_var[keep, 0],
        "rms_error_mean": np.sqrt(np.mean(mean_error**2, axis=1)),
        "rms_error_var": np.sqrt(np.mean(var_error**2, axis=1)),
        "feature_mean_running_var": running_var[keep].mean(axis=1) / std**2,
        "feature_mean_biased_cumulative_var": biased_cumulative[keep].mean(axis=1) / std**2,
        "final_running_mean": running_mean[-1],
        "final_running_var": running_var[-1],
        "final_biased_cumulative_var": biased_cumulative[-1],
    }


#: Per-step quantities of :func:`measure_one` that the figure draws.
TRAJECTORY_KEYS = (
    "feature0_running_mean",
    "feature0_running_var",
    "rms_error_mean",
    "rms_error_var",
    "feature_mean_running_var",
    "feature_mean_biased_cumulative_var",
)


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Every (momentum, seed); trajectories, final spreads and the theory.

    Returns
    -------
    dict with
        ``config``; ``steps`` (the recorded steps); ``momenta`` (None = cumulative);
        ``trajectories[i]`` for momentum i: each of :data:`TRAJECTORY_KEYS`, a
        list over recorded steps of lists over seeds (running values of feature 0;
        rms error over features in σ / σ² units; feature-averaged running_var
        and biased alternative in σ² units), and ``theory_rms_error_mean`` /
        ``theory_rms_error_var`` per recorded step;
        ``final[i]``: ``std_mean`` / ``std_var`` (std over seeds of the final
        estimate, averaged over features, in σ / σ²), ``theory_std_mean`` /
        ``theory_std_var``, ``bias_mean`` / ``bias_var`` (mean over seeds and
        features minus the truth), ``mean_biased_var`` (the uncorrected
        alternative, in σ²);
        ``headline``.
    """
    measured = config.runs(momentum="momenta", seed="seeds").measure(NAME, measure_one, options)
    mu, sigma = config.population_mean, config.population_std
    steps = recorded_steps(config.num_steps)

    trajectories, final = [], []
    for momentum in config.momenta:
        trajectory = {  # (steps, seeds)
            key: measured.table(key, momentum=momentum).T.tolist() for key in TRAJECTORY_KEYS
        }
        theory_curve = theory_rms_error(momentum, steps, config.batch_size, mu, sigma)
        trajectory["theory_rms_error_mean"] = theory_curve["mean"].tolist()
        trajectory["theory_rms_error_var"] = theory_curve["var"].tolist()
        trajectories.append(trajectory)

        final_mean = measured.table("final_running_mean", momentum=momentum)  # (seeds, D)
        final_var = measured.table("final_running_var", momentum=momentum)
        final_biased = measured.table("final_biased_cumulative_var", momentum=momentum)
        kept = float(kept_fraction(momentum, config.num_steps))
        final.append(
            {
                "std_mean": float(np.mean(np.std(final_mean, axis=0, ddof=1)) / sigma),
                "std_var": float(np.mean(np.std(final_var, axis=0, ddof=1)) / sigma**2),
                "theory_std_mean": float(np.sqrt(kept / config.batch_size)),
                "theory_std_var": float(np.sqrt(kept * 2 / (config.batch_size - 1))),
                "bias_mean": float((final_mean.mean() - mu) / sigma),
                "bias_var": float(final_var.mean() / sigma**2 - 1),
                "mean_biased_var": float(final_biased.mean() / sigma**2),
            }
        )
    return {
        "config": config.to_dict(),
        "steps": steps,
        "momenta": list(config.momenta),
        "trajectories": trajectories,
        "final": final,
        "headline": _headline(config, final),
    }


def momentum_name(momentum: float | None) -> str:
    """``"0.1"``, or ``"None"`` for the cumulative average."""
    return "None" if momentum is None else f"{momentum:g}"


def _headline(config: Config, final: list[dict]) -> dict:
    headline = {}
    for momentum, one in zip(config.momenta, final, strict=True):
        headline[f"momentum_{momentum_name(momentum)}"] = {
            "final_std_of_running_mean_in_sigma": one["std_mean"],
            "theory_std_of_running_mean_in_sigma": one["theory_std_mean"],
            "final_std_of_running_var_in_sigma2": one["std_var"],
            "theory_std_of_running_var_in_sigma2": one["theory_std_var"],
            "final_bias_of_running_mean_in_sigma": one["bias_mean"],
            "final_running_var_over_true_var": 1 + one["bias_var"],
        }
    if None in config.momenta:
        cumulative = final[config.momenta.index(None)]
        headline["cumulative_unbiased_running_var_over_true_var"] = 1 + cumulative["bias_var"]
        headline["cumulative_biased_alternative_over_true_var"] = cumulative["mean_biased_var"]
        headline["biased_alternative_expected"] = (config.batch_size - 1) / config.batch_size
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: The biased alternative: brown, a colour no method uses.
_BIASED_COLOR = "#8C510A"


def _looks(momenta: list) -> list[dict]:
    """Viridis from dark (small momentum) to light (large); the cumulative average in black.

    Momenta are not methods, so they take no method colour.
    """
    numeric = sorted(m for m in momenta if m is not None)
    looks = []
    for momentum in momenta:
        if momentum is None:
            looks.append(
                {"color": "black", "marker": "s", "linestyle": "--", "label": "momentum=None"}
            )
            continue
        shade = 0.1 + 0.65 * numeric.index(momentum) / max(len(numeric) - 1, 1)
        looks.append(
            {
                "color": colormaps["viridis"](shade),
                "marker": "o",
                "linestyle": "-",
                "label": f"momentum={momentum:g}",
            }
        )
    return looks


@plotting.styled
def plot(results: dict) -> Figure:
    """2×3: one run's trajectories and the Bessel panel on top; errors and final noise below."""
    config = results["config"]
    steps = np.asarray(results["steps"])
    looks = _looks(results["momenta"])
    mu, sigma = config["population_mean"], config["population_std"]
    batch_size = config["batch_size"]
    figure, axes = plotting.subplots(2, 3, width=21.0, height=12.0)
    (ax_mean, ax_var, ax_bias), (ax_mean_error, ax_var_error, ax_noise) = axes

    first_seed = config["seeds"][0]
    for look, trajectory in zip(looks, results["trajectories"], strict=True):
        for ax, key in ((ax_mean, "feature0_running_mean"), (ax_var, "feature0_running_var")):
            values = np.asarray(trajectory[key])[:, 0]  # the first seed
            ax.plot(steps, values, markevery=6, markersize=6, **look)
        for ax, key in ((ax_mean_error, "rms_error_mean"), (ax_var_error, "rms_error_var")):
            plotting.plot_spread(ax, steps, trajectory[key], markevery=6, markersize=6, **look)
            plotting.reference_line(
                ax, steps, trajectory[f"theory_{key}"], color=look["color"], linestyle=":"
            )
    for ax, value, text in (
        (ax_mean, mu, f"true mean μ = {mu:g}"),
        (ax_var, sigma**2, f"true variance σ² = {sigma**2:g}"),
    ):
        truth = ax.axhline(value, color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=2)
        truth.set_label(text)
        ax.set_xscale("log")
        ax.set_xlabel("training step")
    ax_mean.legend(loc="lower right", fontsize=12)
    ax_var.legend(handles=[ax_var.get_lines()[-1]], loc="upper left", fontsize=12)
    ax_mean.set_ylabel("running_mean")
    ax_var.set_ylabel("running_var")
    ax_mean.set_title(f"running_mean (starts at 0), seed {first_seed}, feature 0", fontsize=15)
    ax_var.set_title(f"running_var (starts at 1), seed {first_seed}, feature 0", fontsize=15)

    for ax, what, unit in (
        (ax_mean_error, "running_mean", "σ"),
        (ax_var_error, "running_var", "σ²"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        plotting.plain_log_labels(ax.yaxis)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"rms error of {what} / {unit}")
        ax.set_title(f"{what}: error over features (dotted: theory)", fontsize=15)
    plotting.reference_line(ax_mean_error, [], [], linestyle=":", label="theory √(bias² + var)")
    ax_mean_error.legend(loc="lower left", fontsize=12)

    _plot_bias(ax_bias, results)
    _plot_final_noise(ax_noise, results, looks)

    plotting.set_title(
        figure,
        "BatchNorm's running statistics: larger momentum converges faster but stays noisier",
        f"Population: {config['num_features']} independent features N({mu:g}, {sigma:g}²); "
        f"batch size B = {batch_size}; {config['num_steps']} steps of nl.BatchNorm in training "
        "mode, the same batches for every momentum. Bottom row and top right: "
        + plotting.spread_caption(
            len(config["seeds"]), center="median (bias panel: mean)", form="count_last", sep=" = "
        )
        + ".",
    )
    return figure


def _plot_final_noise(ax, results: dict, looks: list[dict]) -> None:
    config = results["config"]
    positions = np.arange(len(results["momenta"]))
    for quantity, filled, unit, offset in (("mean", True, "σ", -0.12), ("var", False, "σ²", 0.12)):
        for position, look, final in zip(positions, looks, results["final"], strict=True):
            ax.plot(
                position + offset,
                final[f"std_{quantity}"],
                marker=look["marker"],
                color=look["color"],
                markerfacecolor=look["color"] if filled else "white",
                markersize=11,
                linestyle="none",
            )
            ax.plot(
                position + offset,
                final[f"theory_std_{quantity}"],
                marker="_",
                color=plotting.REFERENCE_COLOR,
                markersize=24,
                markeredgewidth=2.5,
                linestyle="none",
            )
        ax.plot(
            [],
            [],
            marker="o",
            color="#444444",
            markerfacecolor="#444444" if filled else "white",
            linestyle="none",
            label=f"running_{quantity} / {unit}",
        )
    ax.plot(
        [],
        [],
        marker="_",
        color=plotting.REFERENCE_COLOR,
        markersize=20,
        markeredgewidth=2.5,
        linestyle="none",
        label="theory (Gaussian)",
    )
    ax.set_xticks(positions, [momentum_name(m) for m in results["momenta"]])
    ax.set_xlim(-0.5, len(positions) - 0.5)
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_xlabel("momentum")
    ax.set_ylabel("std over seeds of the final value")
    ax.set_title(f"noise after {config['num_steps']} steps", fontsize=15)
    ax.legend(loc="upper left", fontsize=12)


def _plot_bias(ax, results: dict) -> None:
    config = results["config"]
    steps = np.asarray(results["steps"])
    batch_size = config["batch_size"]
    if None not in results["momenta"]:
        ax.set_axis_off()
        return
    trajectory = results["trajectories"][results["momenta"].index(None)]
    plotting.plot_spread(
        ax,
        steps,
        trajectory["feature_mean_running_var"],
        center="mean",
        color="black",
        marker="s",
        markevery=6,
        label="nl.BatchNorm running_var\n(unbiased: v·B/(B−1))",
    )
    plotting.plot_spread(
        ax,
        steps,
        trajectory["feature_mean_biased_cumulative_var"],
        center="mean",
        color=_BIASED_COLOR,
        marker="x",
        linestyle=":",
        markevery=6,
        label="same average of the biased v",
    )
    expected_biased = (batch_size - 1) / batch_size
    for value, text, shift in (
        (1.0, "σ²", 6),
        (expected_biased, f"(B−1)/B·σ² = {expected_biased:g}·σ²", -18),
    ):
        ax.axhline(value, color=plotting.REFERENCE_COLOR, linestyle="--", linewidth=1.6)
        ax.annotate(
            text,
            (steps[-1], value),
            xytext=(0, shift),
            textcoords="offset points",
            ha="right",
            color=plotting.REFERENCE_COLOR,
        )
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("running variance / σ² (mean over features)")
    ax.set_title(f"momentum=None, B = {batch_size}: why Bessel's correction", fontsize=15)
    ax.legend(loc="upper right", fontsize=12)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def momentum_trade_off(results: dict) -> dict:
    """What the trade-off slide states, from the median errors of the numeric momenta.

    ``forgets_sooner``: after the first step, the running mean's error falls as the momentum
    grows (a larger momentum keeps less of the start value); ``stays_noisier``: after the last
    step, it rises with the momentum. Both need two or more numeric momenta.
    """
    numeric = sorted(
        (momentum, index) for index, momentum in enumerate(results["momenta"]) if momentum
    )
    first, last = [], []
    for _, index in numeric:
        errors = np.median(results["trajectories"][index]["rms_error_mean"], axis=1)  # (steps,)
        first.append(errors[0])
        last.append(errors[-1])
    several = len(numeric) >= 2
    return {
        "forgets_sooner": several and bool(np.all(np.diff(first) < 0)),
        "stays_noisier": several and bool(np.all(np.diff(last) > 0)),
    }


def _trade_off_slide(results: dict) -> Figure:
    config = results["config"]
    steps = np.asarray(results["steps"])
    claims = momentum_trade_off(results)
    if claims["forgets_sooner"] and claims["stays_noisier"]:
        title = "A larger momentum forgets the running mean's start value sooner but stays noisier"
    else:
        title = "How fast the running mean reaches the true mean, and how noisy it stays"
    figure, ax = plotting.slide_figure(
        title,
        f"batch size {config['batch_size']}, {config['num_features']} normal features; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    for look, momentum, trajectory in zip(
        _looks(results["momenta"]), results["momenta"], results["trajectories"], strict=True
    ):
        if momentum is None:  # the average of all batches: on the next slide
            continue
        look["label"] = f"momentum {momentum:g}"
        plotting.plot_spread(ax, steps, trajectory["rms_error_mean"], markevery=8, **look)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.xaxis, minor=False)
    plotting.plain_log_labels(ax.yaxis)
    ax.set_xlabel("training step")
    ax.set_ylabel("error of the running mean\n(in standard deviations)")
    ax.legend(loc="lower left")
    return figure


def _bessel_slide(results: dict) -> Figure:
    config = results["config"]
    steps = np.asarray(results["steps"])
    batch_size = config["batch_size"]
    trajectory = results["trajectories"][results["momenta"].index(None)]
    uncorrected = results["final"][results["momenta"].index(None)]["mean_biased_var"]
    figure, ax = plotting.slide_figure(
        f"Each batch variance is scaled by B/(B − 1): uncorrected, the running variance "
        f"would settle {100 * (1 - uncorrected):.0f} % too low at batch size {batch_size}",
        f"average of all batches, batch size {batch_size}, {config['num_features']} features; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
    )
    plotting.plot_spread(
        ax,
        steps,
        trajectory["feature_mean_running_var"],
        center="mean",
        color="black",
        marker="s",
        markevery=8,
        label="BatchNorm's running variance (scaled by B/(B − 1))",
    )
    plotting.plot_spread(
        ax,
        steps,
        trajectory["feature_mean_biased_cumulative_var"],
        center="mean",
        color=_BIASED_COLOR,
        marker="X",
        linestyle=":",
        markevery=8,
        label="the same average, uncorrected",
    )
    expected = (batch_size - 1) / batch_size
    for value, text, above in (
        (1.0, "true variance", 8),
        (expected, f"(B − 1)/B = {expected:g} of it", -26),
    ):
        ax.axhline(value, color=plotting.REFERENCE_COLOR, linestyle="--", linewidth=2)
        plotting.annotate(
            ax,
            text,
            (steps[-1], value),
            above=above,
            ha="right",
            color=plotting.REFERENCE_COLOR,
            fontsize=plotting.SLIDE_MIN_FONT_SIZE,
        )
    ax.set_xscale("log")
    plotting.plain_log_labels(ax.xaxis, minor=False)
    ax.set_xlabel("training step")
    ax.set_ylabel("running variance ÷ true variance")
    ax.legend(loc="upper right")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """The momentum trade-off; with the average of all batches (momentum None), Bessel's factor."""
    named = [("momentum", _trade_off_slide(results))]
    if None in results["momenta"]:
        named.append(("bessel", _bessel_slide(results)))
    return named
