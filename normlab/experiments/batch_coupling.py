"""One sample's BatchNorm output depends on its batch-mates; LayerNorm/RMSNorm outputs do not.

The question: in training mode BatchNorm normalizes each sample with the
statistics of its batch, so a sample's output changes with the company it is
batched with. How much, at which batch size, and which other normalizations
are free of it?

Setup, part (a): the BatchNorm input is what the first hidden layer of a digits
MLP sees at initialization: scikit-learn's digits (train split, standardized)
through a fixed random ``Linear(64, D)``. One fixed sample x₀ is put into
``num_draws`` batches of size B, each time with B−1 other samples drawn at
random (without replacement) from the rest of the train split. Two choices of
x₀ by one rule: rank the train rows by how far they lie from the average row,
the mean over features of |z| with z = (x − μ)/σ, and take the row at the 50th
percentile (a typical sample) and at the 99th (an outlying one). (The first
version of this figure used train row 0, which happens to be that 99th
percentile row; its spread hardly fell with B, which is why the typical row
was added next to it rather than in its place.) Each layer (fresh, training
mode) normalizes each batch; the spread is the standard deviation over the
draws of x₀'s output, per feature, averaged over features.
It is computed around the first draw (std is shift-invariant), so outputs that
are identical in every draw give exactly 0. LayerNorm, RMSNorm and GroupNorm
are computed the same way, not assumed to be 0.

Part (b): the cross-sample Jacobian ∂yᵢ/∂xⱼ of one batch (B = 8 by default) of
the same inputs, from normlab's own backward: one backward pass per output entry
(i, k) with a one-hot upstream gradient gives the row ∂y_{ik}/∂x. The heat
map shows the Frobenius norm of each D×D block (i, j). For BatchNorm in
training mode the off-diagonal blocks are
``∂y_{ik}/∂x_{jk} = γ_k · rstd_k · (−1 − x̂_{ik} x̂_{jk}) / B`` (i ≠ j): non-zero,
shrinking as 1/B. In eval mode BatchNorm uses its running statistics (here
those of the whole train split) and is a fixed affine map per sample, and
LayerNorm never mixes samples: their off-diagonal blocks are exactly 0.

Theory for (a): x₀'s output is (x₀ − μ_B)/σ_B. For large B, expanding to first
order in the fluctuations of the batch mean and variance (which come from the
B − 1 random batch-mates), per feature

    std ≈ √((B − 1) · (1 + γ z₀ + (κ − 1) z₀² / 4)) / B,

with z₀ = (x₀ − μ)/σ, γ the skewness and κ the kurtosis of the feature over
the train rows. For a typical sample (z₀ ≈ 0) this is ≈ 1/√B. A sample far
from the mean (large |z₀|) is hit by the noise of the batch *variance*, which
for heavy-tailed features (rarely-inked pixels, which standardization blows up, give
large κ) is large: its spread is larger at every large B. At small B the formula does
not hold: the output of a batch of two is ±1 per feature, and an outlying x₀ dominates
its own small batch's statistics, so its output hardly depends on the others; and it
needs B large compared with κ. The formula is drawn for B ≥ 16 only.

What would refute the claim: any change at all of a LayerNorm, RMSNorm or GroupNorm
output of x₀ between draws (they must be exactly 0), a typical x₀ whose BatchNorm
spread does not fall as B grows, or non-zero off-diagonal Jacobian blocks for
BatchNorm in eval mode or LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from normlab import data, plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    numbers,
    seeds,
)
from normlab.gradcheck import jacobian
from normlab.layers import make_norm

NAME = "batch_coupling"

#: Methods of part (a), keys of plotting.METHODS.
METHODS = ("batch", "layer", "rms", "group")

#: Panels of part (b): (key in the results, method key for the colour, title).
JACOBIAN_PANELS = (
    ("batch_train", "batch", "BatchNorm (train)"),
    ("batch_eval", "batch", "BatchNorm (eval)"),
    ("layer", "layer", "LayerNorm"),
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
        B of part (a) (BatchNorm cannot train on a batch of one).
    seeds : tuple of int
        Each seed draws its own batch-mates; the band shows the range over seeds.
    num_draws : int
        Random sets of batch-mates per (B, seed).
    num_features : int
        D, the width of the random Linear layer (the normalized features).
    sample_percentiles : tuple of float in [0, 100]
        x₀ is the train row at each of these percentiles of the mean |z| over
        features (50: typical, 99: outlying); the first (smallest) one is also
        the row 0 of part (b).
    network_seed : int
        Seeds the fixed random Linear(64, D).
    jacobian_batch_size : int ≥ 2
        B of part (b).
    """

    batch_sizes: tuple[int, ...] = integers(
        (2, 4, 8, 16, 32, 64, 128, 256), minimum=2, why="BatchNorm cannot train on one sample"
    )
    seeds: tuple[int, ...] = seeds(5)
    num_draws: int = integer(200, minimum=2, why="to measure a spread")
    num_features: int = integer(16, minimum=4)
    sample_percentiles: tuple[float, ...] = numbers((50.0, 99.0), minimum=0, maximum=100)
    network_seed: int = integer(0, minimum=0)
    jacobian_batch_size: int = integer(8, minimum=2, why="BatchNorm cannot train on one sample")

    @classmethod
    def quick(cls) -> Config:
        return cls(batch_sizes=(2, 8, 32, 128), seeds=(0, 1, 2), num_draws=40)

    def validate(self) -> None:
        if self.num_features % 4:
            raise ValueError(
                "num_features must be a multiple of 4 (GroupNorm uses groups of ≥ 4 channels), "
                f"got {self.num_features}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def standardized(inputs: np.ndarray) -> np.ndarray:
    """z = (x − μ)/σ of every row, with μ, σ per feature over the rows: (n, D)."""
    return (inputs - inputs.mean(axis=0)) / inputs.std(axis=0)


def sample_at_percentile(inputs: np.ndarray, percentile: float) -> int:
    """The row at ``percentile`` of the mean |z| over features (0: most average row)."""
    distance = np.mean(np.abs(standardized(inputs)), axis=1)  # (n,)
    order = np.argsort(distance, kind="stable")
    position = round(percentile / 100 * (len(order) - 1))
    return int(order[position])


def first_order_spread(inputs: np.ndarray, sample: int, batch_size: int) -> float:
    """Large-B theory of x₀'s BatchNorm output spread, averaged over features.

    Per feature ``√((B − 1)(1 + γ z₀ + (κ − 1) z₀²/4)) / B`` (see the module docstring).
    """
    z = standardized(inputs)  # (n, D)
    skewness = np.mean(z**3, axis=0)  # (D,)
    kurtosis = np.mean(z**4, axis=0)  # (D,)
    z0 = z[sample]  # (D,)
    variance_times_b = 1 + skewness * z0 + (kurtosis - 1) * z0**2 / 4  # (D,), ≥ 0
    return float(np.mean(np.sqrt((batch_size - 1) * variance_times_b) / batch_size))


def make_layer(method: str, num_features: int):
    """A fresh float64 normalization layer (training mode) for a method key."""
    return make_norm(method, num_features, dtype=np.float64)


def draw_batch(inputs: np.ndarray, sample: int, batch_size: int, rng) -> np.ndarray:
    """x₀ (row ``sample``) first, then B − 1 other rows drawn without replacement: (B, D)."""
    num_rows = inputs.shape[0]
    if batch_size > num_rows:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_rows} rows")
    mates = rng.choice(num_rows - 1, size=batch_size - 1, replace=False)
    mates += mates >= sample  # skip x₀ itself
    return inputs[np.concatenate(([sample], mates))]


def measure_coupling(run: dict) -> dict:
    """x₀'s output under every method over ``num_draws`` random batches of size B.

    Returns per method the spread (std over draws, averaged over features) and
    the largest change of any output entry of x₀ relative to the first draw.
    """
    inputs = data.digits_hidden_features(run["num_features"], run["network_seed"])  # (n, D)
    sample = sample_at_percentile(inputs, run["percentile"])
    rng = np.random.default_rng((run["seed"], run["batch_size"]))
    layers = {method: make_layer(method, run["num_features"]) for method in METHODS}
    outputs = {method: [] for method in METHODS}  # x₀'s output in each draw
    for _ in range(run["num_draws"]):
        batch = draw_batch(inputs, sample, run["batch_size"], rng)  # (B, D), x₀ first
        for method, layer in layers.items():
            outputs[method].append(layer(batch)[0])  # (D,)
    result = {}
    for method, rows in outputs.items():
        change = np.asarray(rows) - rows[0]  # (draws, D): relative to the first draw
        spread = np.sqrt(np.mean(change**2, axis=0) - np.mean(change, axis=0) ** 2)  # (D,)
        result[method] = {
            "spread": float(np.mean(spread)),
            "max_abs_change": float(np.max(np.abs(change))),
        }
    return result


def block_norms(full_jacobian: np.ndarray) -> np.ndarray:
    """Frobenius norm of each D×D block (i, j) of a (B, D, B, D) Jacobian: (B, B)."""
    return np.sqrt(np.sum(full_jacobian**2, axis=(1, 3)))


def measure_jacobian(run: dict) -> dict:
    """The (B, B) block norms of ∂y/∂x for BatchNorm (train, eval) and LayerNorm.

    B is ``run["jacobian_batch_size"]``; x₀ is the row at ``run["percentile"]``.
    """
    inputs = data.digits_hidden_features(run["num_features"], run["network_seed"])  # (n, D)
    sample = sample_at_percentile(inputs, run["percentile"])
    batch_size = run["jacobian_batch_size"]
    rng = np.random.default_rng((run["seed"], batch_size))
    batch = draw_batch(inputs, sample, batch_size, rng)  # (B, D)

    batch_norm_eval = make_layer("batch", run["num_features"])
    batch_norm_eval.momentum = None  # one training step on the whole split: its exact stats
    batch_norm_eval(inputs)
    batch_norm_eval.eval()
    layers = {
        "batch_train": make_layer("batch", run["num_features"]),
        "batch_eval": batch_norm_eval,
        "layer": make_layer("layer", run["num_features"]),
    }
    result = {}
    off_diagonal = ~np.eye(batch_size, dtype=bool)
    for name, layer in layers.items():
        norms = block_norms(jacobian(layer, batch))  # (B, B)
        result[name] = {
            "block_norms": norms.tolist(),
            "max_off_diagonal": float(norms[off_diagonal].max()),
            "mean_off_diagonal": float(norms[off_diagonal].mean()),
            "mean_diagonal": float(np.diag(norms).mean()),
        }
    return result


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Part (a) for every (x₀, B, seed), part (b) once; plain numbers for the plot and JSON.

    Returns
    -------
    dict with
        ``config``; ``batch_sizes``; ``samples``: for each x₀ (in the order of
        ``sample_percentiles``) its ``percentile``, train ``row``, ``mean_abs_z``
        and ``first_order_spread`` (the theory, per batch size), and
        ``coupling[method]``: ``spread`` and ``max_abs_change``, each a list
        over batch sizes of lists over seeds;
        ``jacobian[panel]``: ``block_norms`` (B×B), ``max_off_diagonal``,
        ``mean_off_diagonal``, ``mean_diagonal``;
        ``headline``.
    """
    coupling_runs = config.runs(
        percentile="sample_percentiles", batch_size="batch_sizes", seed="seeds"
    )
    measured = coupling_runs.measure(NAME, measure_coupling, options)
    jacobian_runs = config.runs(percentile=config.sample_percentiles[:1], seed=config.seeds[:1])
    (jacobians,) = jacobian_runs.measure(NAME, measure_jacobian, options).results

    inputs = data.digits_hidden_features(config.num_features, config.network_seed)
    samples = []
    for percentile in config.sample_percentiles:
        row = sample_at_percentile(inputs, percentile)
        coupling = {  # lists over batch sizes of lists over seeds
            method: {
                quantity: measured.table(
                    lambda one, method=method, quantity=quantity: one[method][quantity],
                    percentile=percentile,
                ).tolist()
                for quantity in ("spread", "max_abs_change")
            }
            for method in METHODS
        }
        samples.append(
            {
                "percentile": percentile,
                "row": row,
                "mean_abs_z": float(np.mean(np.abs(standardized(inputs)[row]))),
                "first_order_spread": [
                    first_order_spread(inputs, row, b) for b in config.batch_sizes
                ],
                "coupling": coupling,
            }
        )
    return {
        "config": config.to_dict(),
        "batch_sizes": list(config.batch_sizes),
        "samples": samples,
        "jacobian": jacobians,
        "headline": _headline(config, samples, jacobians),
    }


def _headline(config: Config, samples: list[dict], jacobians: dict) -> dict:
    headline = {}
    for sample in samples:
        name = f"x0_at_percentile_{sample['percentile']:g}"
        batch_spread = np.mean(sample["coupling"]["batch"]["spread"], axis=1)  # (batch sizes,)
        headline[name] = {
            f"batch_norm_spread_at_B{config.batch_sizes[0]}": float(batch_spread[0]),
            f"batch_norm_spread_at_B{config.batch_sizes[-1]}": float(batch_spread[-1]),
            "measured_over_first_order_theory_at_largest_B": float(
                batch_spread[-1] / sample["first_order_spread"][-1]
            ),
        }
    for method in METHODS[1:]:
        headline[f"{method}_max_abs_change_over_all_draws"] = float(
            max(np.max(sample["coupling"][method]["max_abs_change"]) for sample in samples)
        )
    for panel, _, _ in JACOBIAN_PANELS:
        headline[f"jacobian_{panel}_max_off_diagonal_block_norm"] = jacobians[panel][
            "max_off_diagonal"
        ]
    headline["jacobian_batch_train_mean_diagonal_block_norm"] = jacobians["batch_train"][
        "mean_diagonal"
    ]
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: The first-order theory is drawn from this batch size on (it is a large-B formula).
THEORY_MIN_BATCH = 16

#: Colour of exact zeros in the heat maps (no logarithm).
_ZERO_COLOR = "#DDDDDD"

#: Line style and marker fill of each x₀ (in the order of ``sample_percentiles``).
_SAMPLE_LOOKS = (
    {"linestyle": "-", "markerfacecolor": None},
    {"linestyle": "--", "markerfacecolor": "white"},
    {"linestyle": ":", "markerfacecolor": "white"},
)


def _plot_coupling(ax, results: dict) -> None:
    batch_sizes = np.asarray(results["batch_sizes"])
    for index, sample in enumerate(results["samples"]):
        look = _SAMPLE_LOOKS[index % len(_SAMPLE_LOOKS)]
        which = f"{sample['percentile']:g}th-percentile x₀"
        style = plotting.method_style("batch")
        style["label"] = f"BatchNorm, {which} (mean |z| = {sample['mean_abs_z']:.2f})"
        if look["markerfacecolor"] is not None:
            style["markerfacecolor"] = look["markerfacecolor"]
        plotting.plot_spread(
            ax,
            batch_sizes,
            sample["coupling"]["batch"]["spread"],
            center="mean",
            linestyle=look["linestyle"],
            **style,
        )
        large = batch_sizes >= THEORY_MIN_BATCH
        plotting.reference_line(
            ax,
            batch_sizes[large],
            np.asarray(sample["first_order_spread"])[large],
            linestyle=look["linestyle"],
            label=f"first-order theory, {which}",
        )
    for method in METHODS[1:]:
        style = plotting.method_style(method)
        spread = np.array([sample["coupling"][method]["spread"] for sample in results["samples"]])
        largest = max(
            np.max(sample["coupling"][method]["max_abs_change"]) for sample in results["samples"]
        )
        style["label"] += f", every x₀ (max |Δy| = {largest:g})"
        ax.plot(batch_sizes, spread.mean(axis=(0, 2)), linestyle="none", markersize=10, **style)
    plotting.log2_axis(ax, batch_sizes, label="batch size B (x₀ and B − 1 random batch-mates)")
    ax.set_ylabel("std of x₀'s output over draws")
    ax.set_ylim(bottom=-0.03)
    # an opaque legend: with few batch sizes a theory line may run behind it
    legend = ax.legend(loc="upper right", fontsize=12, frameon=True, framealpha=0.92)
    legend.get_frame().set_edgecolor("none")
    ax.set_title("(a) x₀'s normalized output as its batch-mates change (training mode)")


def _plot_jacobians(axes, figure: Figure, jacobians: dict) -> None:
    all_norms = np.concatenate(
        [np.ravel(jacobians[panel]["block_norms"]) for panel, _, _ in JACOBIAN_PANELS]
    )
    color_scale = LogNorm(vmin=all_norms[all_norms > 0].min(), vmax=all_norms.max())
    colormap = colormaps["viridis"].with_extremes(bad=_ZERO_COLOR)  # exact zeros: grey
    image = None
    for ax, (panel, method, title) in zip(axes, JACOBIAN_PANELS, strict=True):
        norms = np.asarray(jacobians[panel]["block_norms"])
        masked = np.ma.masked_less_equal(norms, 0.0)
        image = ax.imshow(masked, cmap=colormap, norm=color_scale, interpolation="nearest")
        batch_size = norms.shape[0]
        ax.set_xticks(range(batch_size))
        ax.set_yticks(range(batch_size))
        ax.grid(False)
        ax.set_xlabel("input sample j")
        ax.set_ylabel("output sample i")
        largest = jacobians[panel]["max_off_diagonal"]
        summary = "exactly 0" if largest == 0 else f"up to {largest:.2g}"
        ax.set_title(
            f"{title}\noff-diagonal: {summary}",
            color=plotting.METHODS[method].color,
            fontsize=15,
        )
    colorbar = figure.colorbar(image, ax=list(axes), shrink=0.9)
    colorbar.set_label("‖∂yᵢ/∂xⱼ‖ (Frobenius)")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    colorbar.ax.yaxis.set_major_formatter(plain)
    colorbar.ax.yaxis.set_minor_formatter(plain)


@plotting.styled
def plot(results: dict) -> Figure:
    """Top: x₀'s output spread against B. Bottom: the three Jacobian block-norm heat maps."""
    config = results["config"]
    figure = Figure(figsize=(17.0, 13.0), layout="constrained")
    panels = figure.subplot_mosaic(
        [["coupling"] * 3, [panel for panel, _, _ in JACOBIAN_PANELS]],
        height_ratios=[1.0, 1.0],
    )
    _plot_coupling(panels["coupling"], results)
    _plot_jacobians([panels[panel] for panel, _, _ in JACOBIAN_PANELS], figure, results["jacobian"])
    jacobian_batch = len(results["jacobian"]["layer"]["block_norms"])
    plotting.set_title(
        figure,
        "BatchNorm couples the samples of a batch; LayerNorm and RMSNorm do not",
        f"Inputs: digits through a fixed random Linear(64, {config['num_features']}); "
        "distance of a row = mean |z| over features. "
        f"(a) {config['num_draws']} random sets of batch-mates per B; std over the draws, "
        "averaged over the features; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="count_last")
        + f". (b) B = {jacobian_batch}, first x₀ in row 0: one backward pass per output "
        "entry with a one-hot upstream gradient; eval mode uses the running statistics of the "
        "whole train split; grey: exactly 0.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The batch-free methods, in plain words, for titles.
_BATCH_FREE = " and ".join(
    [", ".join(plotting.method_label(m) for m in METHODS[1:-1]), plotting.method_label(METHODS[-1])]
)


def batch_free_change(results: dict) -> float:
    """The largest change of any LayerNorm, RMSNorm or GroupNorm output entry over all draws."""
    return max(
        float(np.max(sample["coupling"][method]["max_abs_change"]))
        for sample in results["samples"]
        for method in METHODS[1:]
    )


def _spread_line(ax, results: dict, sample: dict, look: dict, label: str) -> np.ndarray:
    """x₀'s BatchNorm spread against B (mean over seeds, band: min–max); returns the means."""
    style = plotting.method_style("batch")
    style.update(look)
    style["label"] = label
    spread = np.asarray(sample["coupling"]["batch"]["spread"])  # (batch sizes, seeds)
    plotting.plot_spread(ax, results["batch_sizes"], spread, center="mean", **style)
    return spread.mean(axis=1)


def _coupling_slide(results: dict) -> Figure:
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    typical = results["samples"][0]
    change = batch_free_change(results)
    others = (
        f"{_BATCH_FREE} outputs do not"
        if change == 0
        else f"{_BATCH_FREE} outputs by {change:.1g} at most"
    )
    figure, ax = plotting.slide_figure(
        f"In training, one sample's BatchNorm output changes with its batch-mates; {others}",
        f"a typical digit, {config['num_draws']} random draws of batch-mates; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
    )
    means = _spread_line(ax, results, typical, {}, "BatchNorm")
    for index in (0, -1):
        plotting.annotate(
            ax,
            f"{means[index]:.2f}",
            (batch_sizes[index], means[index]),
            above=14,
            ha="center",
            color=plotting.METHODS["batch"].color,
            fontsize=22,
        )
    # side by side around each batch size (a factor 2^±0.15), so that equal values stay visible
    shifts = 2.0 ** (0.15 * (np.arange(len(METHODS) - 1) - (len(METHODS) - 2) / 2))
    for method, shift in zip(METHODS[1:], shifts, strict=True):
        style = plotting.method_style(method)
        style["label"] += ": no change" if change == 0 else ""
        spread = np.mean(typical["coupling"][method]["spread"], axis=1)
        ax.plot(np.asarray(batch_sizes) * shift, spread, linestyle="none", **style)
    plotting.log2_axis(ax, batch_sizes, label="batch size")
    ax.set_ylabel("how much its output varies\n(std over the draws)")
    ax.set_ylim(-0.05, 1.25 * float(np.max(typical["coupling"]["batch"]["spread"])))
    ax.legend(loc="upper right")
    return figure


def _outlier_slide(results: dict) -> Figure:
    config = results["config"]
    typical, unusual = results["samples"][0], results["samples"][-1]
    figure_title = "How much a typical and an unusual sample's BatchNorm output varies with B"
    typical_last = np.mean(typical["coupling"]["batch"]["spread"][-1])
    unusual_last = np.mean(unusual["coupling"]["batch"]["spread"][-1])
    if unusual_last > typical_last:
        figure_title = (
            f"An unusual sample stays coupled: at batch size {results['batch_sizes'][-1]} its "
            f"output varies {unusual_last / typical_last:.1f}× as much as a typical sample's"
        )
    figure, ax = plotting.slide_figure(
        figure_title,
        "ranked by distance from the average digit; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
    )
    _spread_line(ax, results, typical, {}, f"typical: {typical['percentile']:g}th percentile")
    _spread_line(
        ax,
        results,
        unusual,
        {"linestyle": "--", "markerfacecolor": "white"},
        f"unusual: {unusual['percentile']:g}th percentile",
    )
    plotting.log2_axis(ax, results["batch_sizes"], label="batch size")
    ax.set_ylabel("how much its BatchNorm output\nvaries (std over the draws)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")
    return figure


def _dependence_slide(results: dict) -> Figure:
    jacobians = results["jacobian"]
    batch_size = len(jacobians["layer"]["block_norms"])
    train_norms = np.asarray(jacobians["batch_train"]["block_norms"])
    mixing = bool(np.all(train_norms[~np.eye(batch_size, dtype=bool)] > 0))  # every pair
    separate = all(jacobians[panel]["max_off_diagonal"] == 0 for panel in ("batch_eval", "layer"))
    if mixing and separate:
        title = (
            "In training, each BatchNorm output depends on every sample of the batch; "
            "at inference, and in LayerNorm, only on its own"
        )
    else:
        title = "Which inputs of a batch each output depends on"
    figure, axes = plotting.slide_figure(
        title, f"a batch of {batch_size} digits; grey: exactly zero", ncols=len(JACOBIAN_PANELS)
    )
    all_norms = np.concatenate(
        [np.ravel(jacobians[p]["block_norms"]) for p, _, _ in JACOBIAN_PANELS]
    )
    color_scale = LogNorm(vmin=all_norms[all_norms > 0].min(), vmax=all_norms.max())
    colormap = colormaps["viridis"].with_extremes(bad=_ZERO_COLOR)
    ticks = np.arange(0, batch_size, max(1, batch_size // 4))
    panel_titles = {
        "batch_train": "BatchNorm, training",
        "batch_eval": "BatchNorm, inference",
        "layer": "LayerNorm",
    }
    image = None
    for ax, (panel, method, _) in zip(axes, JACOBIAN_PANELS, strict=True):
        norms = np.ma.masked_less_equal(np.asarray(jacobians[panel]["block_norms"]), 0.0)
        image = ax.imshow(norms, cmap=colormap, norm=color_scale, interpolation="nearest")
        ax.set_xticks(ticks, [str(tick + 1) for tick in ticks])
        ax.set_yticks(ticks, [str(tick + 1) for tick in ticks])
        ax.grid(False)
        ax.set_xlabel("input sample")
        ax.set_title(panel_titles[panel], color=plotting.METHODS[method].color)
    axes[0].set_ylabel("output sample")
    figure.get_layout_engine().set(wspace=0.06)  # room between the panels' titles
    colorbar = figure.colorbar(image, ax=list(axes), shrink=0.85)
    colorbar.set_label("how much the input\nmoves the output")
    # round values (one significant digit) spread evenly over the log scale, inside its range
    spread_out = np.geomspace(color_scale.vmin, color_scale.vmax, 5)
    ticks = sorted({float(f"{value:.1g}") for value in spread_out})
    colorbar.set_ticks([tick for tick in ticks if color_scale.vmin <= tick <= color_scale.vmax])
    colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """Coupling against batch size, the unusual sample, and who depends on whom in a batch."""
    named = [("coupling", _coupling_slide(results))]
    if len(results["samples"]) > 1:
        named.append(("unusual_sample", _outlier_slide(results)))
    named.append(("dependence", _dependence_slide(results)))
    return named
