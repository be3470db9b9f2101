"""RMSNorm vs LayerNorm: the invariance table checked numerically, when they agree, counted work.

The questions: RMSNorm (Zhang & Sennrich, 2019) drops LayerNorm's mean
subtraction. Which invariances does that cost (their Table 1, which extends
Ba et al. 2016, Table 1)? When are the two layers the same? And what does
dropping the mean save?

(a) Invariance table. A pre-activation ``a = x W`` (x: (N, d) inputs, W: (d, H),
one column per neuron, as in normlab's features-last ``x @ W``) is normalized:
``y = norm(a)``, with random γ (and β where the layer has one). Each
transformation is applied and the output compared, ``max |y' − y| / max |y|``:

* weight-matrix re-scaling: ``W → δW``;
* weight-matrix re-centering: ``W → W + γ_w 1ᵀ`` with γ_w ∈ R^d, i.e. the same
  vector added to every neuron's weight vector (every column here; Ba et al.
  write ``W + 1γᵀ`` for their (H, d) matrix, every row). Each pre-activation of a
  sample then shifts by the same amount ``x·γ_w``;
* weight-vector re-scaling: one neuron's weights ``W[:, 0] → δ W[:, 0]``;
* dataset re-scaling: ``x → δx`` for every sample;
* dataset re-centering: ``x → x + b`` for every sample (b ∈ R^d), so each
  neuron shifts by its own ``(bW)_k``, the same for all samples;
* single-case re-scaling: one sample ``x_0 → δ x_0``.

with δ = ``scale_factor`` > 0. BatchNorm is in training mode (batch statistics).
What is measured is the OUTPUT, as in the paper. Precisely:

* the scale invariances are exact only for eps = 0: with eps,
  ``δa/√(δ²σ² + eps) ≠ a/√(σ² + eps)``, a relative change of about
  ``eps(1 − 1/δ²)/(2σ²)``. Each cell shows both numbers: with the layer's default
  eps and with eps = 1e-30 (negligible); the verdict uses the latter;
* the norm's own affine γ, β never matter (they act after the normalization);
* a bias in the linear layer (``a = xW + b_lin``) does: it is not re-scaled with
  W or x, so LayerNorm and RMSNorm lose the re-scaling invariances, while
  BatchNorm's centering removes ``b_lin`` (a per-neuron constant). The lower
  half of the table measures this case;
* weight-vector re-scaling by δ < 0 flips that neuron's BatchNorm output: δ > 0.

Computed in float64 so that "invariant" means equal to ~1e-15.

(b) When RMSNorm equals LayerNorm: for rows with zero mean, mean(x²) is the
variance, so RMSNorm(x) = LayerNorm(x) when both use the same eps (their
defaults differ: 1e-5 for LayerNorm, the dtype's machine epsilon for RMSNorm,
which alone makes a difference of ~eps/2). Rows ``x = r + z`` with z exactly
standardized (float64, then stored as float32) and r = mean/std: LayerNorm
gives z, RMSNorm ``(r + z)/√(1 + r²)``, so the relative difference grows like
r/max|z| for small r and saturates for large r, where RMSNorm's output tends
to a constant.

(c) Cost, counted rather than timed (timings differ between machines and runs;
the figures must not). One forward and backward of each layer on float32
(N, D) input, no mask, through ``layer(x)`` and ``layer.backward(dy)``, with
two instruments: :func:`normlab.instruments.count_reductions` counts the calls of
the core's reductions (``functional.reduce_sum`` and ``reduce_sum_product``, each of
which reads one or two whole arrays once), and the input and upstream gradient are
an ndarray subclass that counts every ufunc result and copy of full size (a pass
over all N·D elements), split into new arrays (temporaries) and in-place updates;
the layers take such an array as it is. Each layer is
counted with and without its affine γ (and β), so the difference is the work
of the parameters and their gradients dγ, dβ. The mathematics asks LayerNorm
for 2 statistics reductions forward (mean, variance) and 2 backward (sums of
ĝ and ĝ·x̂), plus one each for dγ and dβ; RMSNorm for 1 forward (mean
square), 1 backward (Σ ĝ·x̂), plus one for dγ. BatchNorm's backward can reuse
dγ and dβ for its two statistics sums (they run over the same axes), which
the core does. Measured times are in the README's benchmark table
(``make bench``, ``benchmarks/bench_layers.py``).

What would refute the claims: a measured invariance table that differs from the
paper's (a cell invariant to ~1e-15 where the paper says no, or the reverse), RMSNorm
and LayerNorm differing on zero-mean rows by more than float32 rounding, or RMSNorm
counting as many reductions as LayerNorm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import normlab as nl
from normlab import plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    number,
    numbers,
    seeds,
)
from normlab.instruments import count_reductions

NAME = "rms_vs_layernorm"

#: The layers compared (plotting.METHODS keys).
METHODS = ("batch", "layer", "rms")

#: The columns of the invariance table, in the paper's order.
TRANSFORMATIONS = (
    "weight_matrix_rescaling",
    "weight_matrix_recentering",
    "weight_vector_rescaling",
    "dataset_rescaling",
    "dataset_recentering",
    "single_case_rescaling",
)

#: Zhang & Sennrich (2019), Table 1 (True = invariant), in TRANSFORMATIONS order.
PAPER_TABLE = {
    "batch": (True, False, True, True, True, False),
    "layer": (True, True, False, True, False, True),
    "rms": (True, False, False, True, False, True),
}

#: Below this relative change (float64, negligible eps) a cell counts as invariant.
INVARIANCE_TOLERANCE = 1e-9

#: The eps standing for "eps = 0" (the layers require eps > 0).
NEGLIGIBLE_EPS = 1e-30

#: One eps for both layers in part (b): LayerNorm's default.
SHARED_EPS = 1e-5

#: mean/std from 1e-4 to 10 in half decades.
HALF_DECADES = tuple(10.0 ** (exponent / 2) for exponent in range(-8, 3))

#: Relative differences are drawn no lower than this on log axes.
ERROR_FLOOR = 1e-12

# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    batch_size, input_dim, num_neurons : int
        N, d and H of the pre-activation ``x W`` in part (a).
    scale_factor : float > 0
        δ of the re-scaling transformations.
    mean_to_std_ratios : tuple of float > 0
        r = mean/std of the rows in part (b) (r = 0 is always measured too).
    num_rows, row_dim : int
        Rows per batch and features per row in part (b).
    cost_shape : (int, int)
        (N, D) of the one forward+backward whose work is counted in part (c).
    seeds : tuple of int
        Random draws for parts (a) and (b); the table shows the largest change.
    """

    batch_size: int = integer(64, minimum=2)
    input_dim: int = integer(32, minimum=2)
    num_neurons: int = integer(16, minimum=2)
    scale_factor: float = number(3.0, above=0)
    mean_to_std_ratios: tuple[float, ...] = numbers(HALF_DECADES, above=0)
    num_rows: int = integer(64, minimum=2)
    row_dim: int = integer(256, minimum=2)
    cost_shape: tuple[int, int] = integers((32, 64), minimum=2, length=2, sort=False)
    seeds: tuple[int, ...] = seeds(5)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            batch_size=16,
            mean_to_std_ratios=HALF_DECADES[::2],
            num_rows=16,
            row_dim=64,
            seeds=(0, 1),
        )

    def validate(self) -> None:
        if self.scale_factor == 1:
            raise ValueError("scale_factor must be ≠ 1 (δ = 1 transforms nothing), got 1")


# ---------------------------------------------------------------------------
# (a) The invariance table
# ---------------------------------------------------------------------------


def random_affine_norm(method: str, num_features: int, eps: float | None, rng: np.random.Generator):
    """A float64 layer with random γ (and β); ``eps=None`` keeps the layer's default."""
    options = {} if eps is None else {"eps": eps}
    layer = nl.make_norm(method, num_features, dtype=np.float64, **options)
    for name, value in layer.params.items():
        value[...] = (
            rng.uniform(0.5, 2.0, value.shape) if name == "weight" else rng.normal(size=value.shape)
        )
    return layer


def transformations(
    delta: float, weight_shift: np.ndarray, data_shift: np.ndarray
) -> dict[str, Callable]:
    """Each transformation as a function (x, W) -> (x', W').

    ``weight_shift`` (d,) is γ_w of the weight-matrix re-centering, added to
    every column (neuron) of W; ``data_shift`` (d,) is b of the dataset
    re-centering, added to every sample.
    """

    def rescale_first_column(weights: np.ndarray) -> np.ndarray:
        rescaled = weights.copy()
        rescaled[:, 0] *= delta
        return rescaled

    def rescale_first_sample(inputs: np.ndarray) -> np.ndarray:
        rescaled = inputs.copy()
        rescaled[0] *= delta
        return rescaled

    return {
        "weight_matrix_rescaling": lambda x, w: (x, delta * w),
        "weight_matrix_recentering": lambda x, w: (x, w + weight_shift[:, None]),
        "weight_vector_rescaling": lambda x, w: (x, rescale_first_column(w)),
        "dataset_rescaling": lambda x, w: (delta * x, w),
        "dataset_recentering": lambda x, w: (x + data_shift[None, :], w),
        "single_case_rescaling": lambda x, w: (rescale_first_sample(x), w),
    }


def measure_invariance(run: dict) -> dict:
    """Relative output change for every (linear bias, method, transformation, eps) of one seed."""
    rng = np.random.default_rng(run["seed"])
    n, d, h = run["batch_size"], run["input_dim"], run["num_neurons"]
    x = rng.standard_normal((n, d))  # (N, d)
    weights = rng.normal(0.0, 1.0 / math.sqrt(d), size=(d, h))  # (d, H), a ~ N(0, 1)
    linear_bias = rng.normal(size=h)  # (H,)
    weight_shift, data_shift = rng.normal(size=(2, d))  # γ_w and b, each (d,)
    transforms = transformations(run["scale_factor"], weight_shift, data_shift)
    layer_rng_seed = int(rng.integers(2**31))

    result = {}
    for with_bias in (False, True):
        bias = linear_bias if with_bias else 0.0
        for method in METHODS:
            for eps_name, eps in (("default_eps", None), ("negligible_eps", NEGLIGIBLE_EPS)):
                layer = random_affine_norm(method, h, eps, np.random.default_rng(layer_rng_seed))
                reference = layer(x @ weights + bias)  # (N, H)
                for name, transform in transforms.items():
                    x_new, weights_new = transform(x, weights)
                    changed = layer(x_new @ weights_new + bias)
                    relative = np.abs(changed - reference).max() / np.abs(reference).max()
                    key = f"{'bias' if with_bias else 'no_bias'}/{method}/{name}/{eps_name}"
                    result[key] = float(relative)
    return result


# ---------------------------------------------------------------------------
# (b) RMSNorm = LayerNorm on zero-mean rows
# ---------------------------------------------------------------------------


def standardized_rows(num_rows: int, row_dim: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, D) float64 rows with mean 0 and (biased) std 1, up to rounding."""
    gaussian = rng.standard_normal((num_rows, row_dim))
    centred = gaussian - gaussian.mean(axis=1, keepdims=True)
    return centred / centred.std(axis=1, keepdims=True)


def measure_rms_vs_layer(run: dict) -> dict:
    """Relative difference of RMSNorm and LayerNorm on rows with mean/std = ratio."""
    rng = np.random.default_rng(run["seed"])
    z = standardized_rows(run["num_rows"], run["row_dim"], rng)  # (rows, D), float64
    ratio = run["ratio"]
    x = (ratio + z).astype(np.float32)  # mean = ratio, std = 1
    dim = run["row_dim"]
    layer_out = nl.LayerNorm(dim, eps=SHARED_EPS, elementwise_affine=False)(x)
    rms_out = nl.RMSNorm(dim, eps=SHARED_EPS, elementwise_affine=False)(x)
    measured = np.abs(rms_out - layer_out).max() / np.abs(layer_out).max()
    # eps → 0: LayerNorm gives z, RMSNorm (r + z)/√(1 + r²)
    formula = np.abs((ratio + z) / math.sqrt(1 + ratio**2) - z).max() / np.abs(z).max()
    result = {"measured": float(measured), "formula": float(formula)}
    if ratio == 0:  # with each layer's own default eps (1e-5 and float32 epsilon)
        default_rms = nl.RMSNorm(dim, elementwise_affine=False)(x)
        default_layer = nl.LayerNorm(dim, elementwise_affine=False)(x)
        gap = np.abs(default_rms - default_layer).max() / np.abs(default_layer).max()
        result["default_eps"] = float(gap)
    return result


# ---------------------------------------------------------------------------
# (c) Counted work of one forward + backward
# ---------------------------------------------------------------------------

#: What is counted in each phase (forward, backward).
WORK_KINDS = ("reductions", "new_arrays", "in_place")


def count_work(method: str, shape: tuple[int, int], affine: bool) -> dict:
    """Reductions and full-size elementwise passes of one forward and backward of a layer.

    Returns ``{"forward": {kind: count}, "backward": {kind: count}}`` for kind in
    :data:`WORK_KINDS`: calls of the core's reductions (``functional.reduce_sum``
    and ``functional.reduce_sum_product``, which sums a product without forming
    it), and ufunc results or copies of the input's size, as new arrays or in
    place (``out=``, ``*=``).
    """
    full_size = int(np.prod(shape))
    counts = {phase: dict.fromkeys(WORK_KINDS, 0) for phase in ("forward", "backward")}
    phase = ["forward"]  # which phase the instruments currently count for

    class Counted(np.ndarray):
        """An ndarray that counts each full-size ufunc result and copy it takes part in."""

        def __array_ufunc__(self, ufunc, method_name, *inputs, out=None, **kwargs):
            plain = [v.view(np.ndarray) if isinstance(v, Counted) else v for v in inputs]
            if out is not None:
                kwargs["out"] = tuple(
                    v.view(np.ndarray) if isinstance(v, Counted) else v for v in out
                )
            result = getattr(ufunc, method_name)(*plain, **kwargs)
            elementwise = method_name == "__call__" and ufunc is not np.matmul  # matmul: reduce_sum
            if elementwise and np.size(result) == full_size:
                counts[phase[0]]["in_place" if out is not None else "new_arrays"] += 1
            if out is not None:
                return out[0]
            return result.view(Counted) if isinstance(result, np.ndarray) else result

        def copy(self, order="C"):
            if self.size == full_size:
                counts[phase[0]]["new_arrays"] += 1
            return super().copy(order)

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32).view(Counted)  # (N, D)
    dy = rng.standard_normal(shape).astype(np.float32).view(Counted)  # (N, D)
    num_features = shape[1]
    # each kind takes its own name for the switch (affine / elementwise_affine)
    layer = nl.make_norm(method, num_features, affine=affine, elementwise_affine=affine)

    with count_reductions() as forward:
        layer(x)
    phase[0] = "backward"
    with count_reductions() as backward:
        layer.backward(dy)
    counts["forward"]["reductions"] = forward.total()
    counts["backward"]["reductions"] = backward.total()
    return counts


def measure_cost(run: dict) -> dict:
    """Counted work of every method, with and without the affine γ (and β)."""
    shape = tuple(run["cost_shape"])
    return {
        method: {
            "affine": count_work(method, shape, affine=True),
            "no_affine": count_work(method, shape, affine=False),
        }
        for method in METHODS
    }


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Parts (a), (b) and (c); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``;
        ``invariance[bias][method][transformation]``: ``{"default_eps": max over
        seeds, "negligible_eps": max over seeds, "invariant": bool, "paper": bool
        or None}``, bias in ``"no_bias"``, ``"bias"`` (a linear-layer bias);
        ``rms_vs_layer``: ``ratios`` and ``measured``/``formula`` (ratios × seeds),
        ``zero_mean`` (over seeds), ``zero_mean_default_eps`` (over seeds);
        ``work[method][variant][phase][kind]``: counts from part (c), variant
        ``"affine"`` or ``"no_affine"``, kind in :data:`WORK_KINDS`; ``headline``.
    """
    invariance_measured = config.runs(seed="seeds").measure(NAME, measure_invariance, options)
    # rows of mean/std = 0 (RMSNorm = LayerNorm), then the configured ratios
    zero_mean = config.runs(ratio=(0.0,), seed="seeds").measure(NAME, measure_rms_vs_layer, options)
    ratio_measured = config.runs(ratio="mean_to_std_ratios", seed="seeds").measure(
        NAME, measure_rms_vs_layer, options
    )
    (work,) = config.runs().measure(NAME, measure_cost, options).results

    results = {
        "config": config.to_dict(),
        "invariance": _invariance_table(invariance_measured.results),
        "rms_vs_layer": _ratio_table(config.mean_to_std_ratios, zero_mean, ratio_measured),
        "work": work,
        "invariance_tolerance": INVARIANCE_TOLERANCE,
    }
    results["headline"] = _headline(results)
    return results


def _invariance_table(measured: list[dict]) -> dict:
    table = {}
    for bias in ("no_bias", "bias"):
        table[bias] = {}
        for method in METHODS:
            row = {}
            for column, transformation in enumerate(TRANSFORMATIONS):
                prefix = f"{bias}/{method}/{transformation}"
                default = max(one[f"{prefix}/default_eps"] for one in measured)
                negligible = max(one[f"{prefix}/negligible_eps"] for one in measured)
                row[transformation] = {
                    "default_eps": default,
                    "negligible_eps": negligible,
                    "invariant": negligible < INVARIANCE_TOLERANCE,
                    "paper": PAPER_TABLE[method][column] if bias == "no_bias" else None,
                }
            table[bias][method] = row
    return table


def _ratio_table(ratios, zero_mean, measured) -> dict:
    return {
        "ratios": list(ratios),
        "measured": measured.table("measured").tolist(),  # (ratios, seeds)
        "formula": measured.table("formula").tolist(),
        "zero_mean": zero_mean.table("measured")[0].tolist(),  # (seeds,)
        "zero_mean_default_eps": zero_mean.table("default_eps")[0].tolist(),
    }


def _totals(work: dict, method: str, variant: str = "affine") -> dict:
    """Counts of one forward + backward, summed over both phases."""
    counts = work[method][variant]
    return {
        kind: sum(counts[phase][kind] for phase in ("forward", "backward")) for kind in WORK_KINDS
    }


def _headline(results: dict) -> dict:
    table = results["invariance"]["no_bias"]
    agree = [cell["invariant"] == cell["paper"] for row in table.values() for cell in row.values()]
    invariant_cells = [
        cell
        for bias in results["invariance"].values()
        for row in bias.values()
        for cell in row.values()
        if cell["invariant"]
    ]
    comparison = results["rms_vs_layer"]
    ratios = np.asarray(comparison["ratios"])
    measured = np.median(comparison["measured"], axis=1)
    at_one = float(measured[np.argmin(np.abs(ratios - 1.0))])
    totals = {method: _totals(results["work"], method) for method in METHODS}
    headline = {
        "cells_matching_paper": f"{sum(agree)}/{len(agree)}",
        "invariant_cells_largest_change_negligible_eps": max(
            c["negligible_eps"] for c in invariant_cells
        ),
        "invariant_cells_largest_change_default_eps": max(
            c["default_eps"] for c in invariant_cells
        ),
        "non_invariant_cells_smallest_change": min(
            cell["negligible_eps"]
            for bias in results["invariance"].values()
            for row in bias.values()
            for cell in row.values()
            if not cell["invariant"]
        ),
        "rms_vs_layer_zero_mean_worst": float(np.max(comparison["zero_mean"])),
        "rms_vs_layer_zero_mean_default_eps_worst": float(
            np.max(comparison["zero_mean_default_eps"])
        ),
        "rms_vs_layer_at_ratio_1_median": at_one,
        "rms_vs_layer_at_largest_ratio_median": float(measured[-1]),
    }
    for method in METHODS:
        headline[f"{method}_reductions"] = totals[method]["reductions"]
        headline[f"{method}_reductions_without_affine"] = _totals(
            results["work"], method, "no_affine"
        )["reductions"]
        headline[f"{method}_elementwise_passes"] = (
            totals[method]["new_arrays"] + totals[method]["in_place"]
        )
        headline[f"{method}_new_full_size_arrays"] = totals[method]["new_arrays"]
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

_COLUMN_LABELS = {
    "weight_matrix_rescaling": "weight matrix\nre-scaling\nW → δW",
    "weight_matrix_recentering": "weight matrix\nre-centering\nW → W + γ_w 1ᵀ",
    "weight_vector_rescaling": "weight vector\nre-scaling\nW[:, 0] → δ W[:, 0]",
    "dataset_rescaling": "dataset\nre-scaling\nx → δx",
    "dataset_recentering": "dataset\nre-centering\nx → x + b",
    "single_case_rescaling": "single case\nre-scaling\nx₀ → δx₀",
}

_ROW_LABELS = {"batch": "BatchNorm (train)", "layer": "LayerNorm", "rms": "RMSNorm"}

#: Cell colours: light tints of Okabe–Ito blue (invariant) and orange (not).
_CELL_COLORS = {True: "#cfe3f1", False: "#f8dcb0"}


@plotting.styled
def plot(results: dict) -> Figure:
    """(a) the invariance table, (b) RMSNorm − LayerNorm against mean/std, (c) counted work."""
    config = results["config"]
    figure = Figure(figsize=(20.0, 15.0), layout="constrained")
    axes = figure.subplot_mosaic([["table", "table"], ["ratio", "work"]], height_ratios=[1.25, 1])
    _draw_table(axes["table"], results["invariance"], config)
    _draw_ratio(axes["ratio"], results["rms_vs_layer"], config)
    _draw_work(axes["work"], results["work"], config)
    plotting.set_title(
        figure,
        "RMSNorm against LayerNorm: what dropping the mean costs in invariance, and saves in work",
        f"(a) y = norm(x W [+ b_lin]) in float64, N = {config['batch_size']}, "
        f"d = {config['input_dim']}, H = {config['num_neurons']}, δ = {config['scale_factor']:g}, "
        f"random γ, β; each cell: max |y' − y| / max |y|, {_over_seeds(len(config['seeds']))}, "
        f"with eps ≈ 0 (verdict: invariant below {INVARIANCE_TOLERANCE:.0e}) and with the "
        "default eps; paper = Zhang & Sennrich 2019, Table 1. (c) counted, not timed: measured "
        "times are in the README's benchmark table (make bench).",
    )
    return figure


def _over_seeds(num_seeds: int) -> str:
    """``"largest of 5 seeds"``, or ``"1 seed"``."""
    return "1 seed" if num_seeds == 1 else f"largest of {num_seeds} seeds"


def _draw_table(ax, invariance: dict, config: dict) -> None:
    rows = [("no_bias", method) for method in METHODS] + [("bias", method) for method in METHODS]
    num_rows, num_columns = len(rows), len(TRANSFORMATIONS)
    for row_index, (bias, method) in enumerate(rows):
        for column, transformation in enumerate(TRANSFORMATIONS):
            cell = invariance[bias][method][transformation]
            ax.add_patch(
                Rectangle(
                    (column, row_index),
                    1,
                    1,
                    facecolor=_CELL_COLORS[cell["invariant"]],
                    edgecolor="white",
                    linewidth=3,
                )
            )
            verdict = "✓ invariant" if cell["invariant"] else "✗ not invariant"
            lines = [
                verdict,
                f"eps≈0: {cell['negligible_eps']:.1e}",
                f"default eps: {cell['default_eps']:.1e}",
            ]
            if cell["paper"] is not None:
                agrees = cell["paper"] == cell["invariant"]
                lines.append(
                    ("paper ✓" if cell["paper"] else "paper ✗") + ("" if agrees else "  ≠!")
                )
            ax.text(
                column + 0.5,
                row_index + 0.5,
                "\n".join(lines),
                ha="center",
                va="center",
                fontsize=11.5,
                linespacing=1.3,
            )
    ax.axhline(3, color="black", linewidth=2)
    ax.set_xlim(0, num_columns)
    ax.set_ylim(num_rows, 0)
    ax.set_xticks(np.arange(num_columns) + 0.5, [_COLUMN_LABELS[t] for t in TRANSFORMATIONS])
    ax.xaxis.tick_top()
    ax.tick_params(axis="x", labelsize=12.5, length=0)
    row_labels = [_ROW_LABELS[m] + "\ny = norm(x W)" for m in METHODS]
    row_labels += [_ROW_LABELS[m] + "\ny = norm(x W + b_lin)" for m in METHODS]
    ax.set_yticks(np.arange(num_rows) + 0.5, row_labels)
    ax.tick_params(axis="y", labelsize=12.5, length=0)
    for label, (_, method) in zip(ax.get_yticklabels(), rows, strict=True):
        label.set_color(plotting.METHODS[method].color)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(
        "(a) invariance of the output (blue: invariant, orange: not); the lower three rows add "
        "a bias b_lin to the linear layer (not in the paper's table)",
        loc="left",
        fontsize=15,
    )


def _draw_ratio(ax, comparison: dict, config: dict) -> None:
    ratios = np.asarray(comparison["ratios"])
    measured = np.maximum(np.asarray(comparison["measured"]), ERROR_FLOOR)
    look = plotting.method_style("rms")
    plotting.plot_spread(
        ax, ratios, measured, color=look["color"], marker=look["marker"], label="measured, float32"
    )
    formula = np.median(comparison["formula"], axis=1)
    plotting.reference_line(
        ax,
        ratios,
        formula,
        label="formula max|(r + z)/√(1 + r²) − z| / max|z| (eps → 0)",
        color="black",
        linewidth=1.2,
        zorder=3,
    )
    zero_mean = float(np.max(comparison["zero_mean"]))
    default_gap = float(np.max(comparison["zero_mean_default_eps"]))
    ax.axhline(zero_mean, color=look["color"], linestyle=":", linewidth=1.6)
    plotting.annotate(
        ax,
        f"zero-mean rows (r = 0), same eps: {zero_mean:.1e}",
        (ratios[-1], zero_mean),
        ha="right",
        color=look["color"],
    )
    ax.axhline(default_gap, color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=1.6)
    plotting.annotate(
        ax,
        f"r = 0 with each layer's default eps: {default_gap:.1e}",
        (ratios[-1], default_gap),
        ha="right",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-9, 10)
    ax.set_xlabel("mean / std of each row, r")
    ax.set_ylabel("max |RMSNorm − LayerNorm| / max |LayerNorm|")
    ax.legend(loc="upper left", fontsize=12)
    ax.set_title(
        f"(b) when RMSNorm = LayerNorm: rows of D = {config['row_dim']}, "
        f"both eps = {SHARED_EPS:g}, "
        f"{plotting.plural(len(config['seeds']), 'seed')}",
        loc="left",
        fontsize=14,
    )


def _draw_work(ax, work: dict, config: dict) -> None:
    groups = (
        ("reductions\n(functional.reduce_* calls)", ("reductions",)),
        ("full-size elementwise passes\n(new arrays + in place)", ("new_arrays", "in_place")),
    )
    bar_width = 0.26
    for method_index, method in enumerate(METHODS):
        color = plotting.METHODS[method].color
        for group_index, (_, kinds) in enumerate(groups):
            position = group_index + (method_index - 1) * bar_width
            bottom = 0
            for phase, hatch in (("forward", None), ("backward", "//")):
                plain = sum(work[method]["no_affine"][phase][kind] for kind in kinds)
                with_affine = sum(work[method]["affine"][phase][kind] for kind in kinds)
                for count, alpha in ((plain, 1.0), (with_affine - plain, 0.45)):
                    ax.bar(
                        position,
                        count,
                        bar_width * 0.92,
                        bottom=bottom,
                        color=color,
                        alpha=alpha,
                        hatch=hatch,
                        edgecolor="white",
                        linewidth=0.8,
                    )
                    bottom += count
            ax.text(position, bottom + 0.2, f"{bottom}", ha="center", va="bottom", fontsize=13)
    ax.set_xticks(range(len(groups)), [label for label, _ in groups])
    for method in METHODS:
        ax.bar(0, 0, color=plotting.METHODS[method].color, label=plotting.METHODS[method].label)
    ax.bar(0, 0, color="#bbbbbb", alpha=0.45, label="extra for affine γ, β (light)")
    ax.bar(0, 0, color="#bbbbbb", hatch="//", edgecolor="white", label="backward (hatched)")
    ax.legend(loc="upper left", fontsize=12)
    ax.set_ylabel("count per forward + backward")
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])
    ax.grid(axis="x", visible=False)
    n, d = config["cost_shape"]
    ax.set_title(
        f"(c) counted work of one forward + backward, ({n}, {d}) float32, no mask",
        loc="left",
        fontsize=14,
    )


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: Each transformation in plain words: a two-line column heading, and a phrase for a title.
_PLAIN_TRANSFORMATIONS = {
    "weight_matrix_rescaling": ("scale\nall weights", "when all weights are scaled"),
    "weight_matrix_recentering": ("shift\nall weights", "when all weights shift together"),
    "weight_vector_rescaling": ("scale one\nneuron", "when one neuron's weights are scaled"),
    "dataset_rescaling": ("scale\nthe data", "when the data are scaled"),
    "dataset_recentering": ("shift\nthe data", "when the data shift"),
    "single_case_rescaling": ("scale one\nsample", "when one sample is scaled"),
}


def invariances_lost(results: dict) -> list[str]:
    """The transformations (no linear bias) LayerNorm's output ignores and RMSNorm's does not."""
    table = results["invariance"]["no_bias"]
    return [
        transformation
        for transformation in TRANSFORMATIONS
        if table["layer"][transformation]["invariant"]
        and not table["rms"][transformation]["invariant"]
    ]


def _invariance_slide(results: dict) -> Figure:
    lost = invariances_lost(results)
    if len(lost) == 1:
        title = (
            "Dropping the mean costs RMSNorm one of LayerNorm's invariances: its output "
            f"changes {_PLAIN_TRANSFORMATIONS[lost[0]][1]}"
        )
    else:
        title = (
            f"Dropping the mean costs RMSNorm {len(lost)} of LayerNorm's invariances"
            if lost
            else "RMSNorm keeps every invariance of LayerNorm"
        )
    matching = results["headline"]["cells_matching_paper"]
    figure, ax = plotting.slide_figure(
        title,
        f"✓: the output stays the same (float64); {matching} cells as in Zhang & Sennrich 2019",
    )
    table = results["invariance"]["no_bias"]
    for row, method in enumerate(METHODS):
        for column, transformation in enumerate(TRANSFORMATIONS):
            invariant = table[method][transformation]["invariant"]
            ax.add_patch(
                Rectangle(
                    (column, row),
                    1,
                    1,
                    facecolor=_CELL_COLORS[invariant],
                    edgecolor="white",
                    linewidth=4,
                )
            )
            ax.text(
                column + 0.5,
                row + 0.5,
                "✓" if invariant else "✗",
                ha="center",
                va="center",
                fontsize=40,
                color=plotting.COLORS["blue"] if invariant else plotting.COLORS["vermillion"],
            )
    for column in (TRANSFORMATIONS.index(name) for name in lost):  # the cost, outlined
        ax.add_patch(
            Rectangle((column, 1), 1, 2, fill=False, edgecolor="black", linewidth=4, zorder=3)
        )
    ax.set_xlim(0, len(TRANSFORMATIONS))
    ax.set_ylim(len(METHODS), 0)
    ax.set_xticks(
        np.arange(len(TRANSFORMATIONS)) + 0.5,
        [_PLAIN_TRANSFORMATIONS[name][0] for name in TRANSFORMATIONS],
    )
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(len(METHODS)) + 0.5, [plotting.method_label(m) for m in METHODS])
    for label, method in zip(ax.get_yticklabels(), METHODS, strict=True):
        label.set_color(plotting.METHODS[method].color)
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return figure


def _equality_slide(results: dict) -> Figure:
    comparison = results["rms_vs_layer"]
    config = results["config"]
    ratios = np.asarray(comparison["ratios"])
    closest = float(ratios[np.argmin(np.abs(np.log(ratios)))])  # the ratio nearest to 1
    at_closest = results["headline"]["rms_vs_layer_at_ratio_1_median"]
    where = "equals the spread" if closest == 1 else f"is {closest:g}× the spread"
    figure, ax = plotting.slide_figure(
        "RMSNorm equals LayerNorm when the mean is zero, "
        f"and is {100 * at_closest:.0f} % off when the mean {where}",
        f"rows of {config['row_dim']} float32 values, the same ε for both; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    look = plotting.method_style("rms")
    plotting.plot_spread(
        ax,
        ratios,
        np.maximum(np.asarray(comparison["measured"]), ERROR_FLOOR),
        color=look["color"],
        marker=look["marker"],
    )
    zero_mean = float(np.max(comparison["zero_mean"]))
    ax.axhline(zero_mean, color=plotting.REFERENCE_COLOR, linestyle="--", linewidth=2)
    plotting.annotate(
        ax,
        f"mean exactly zero: float32 rounding only, ~$10^{{{math.floor(math.log10(zero_mean))}}}$",
        (ratios[-1], zero_mean),
        ha="right",
        above=10,
        fontsize=plotting.SLIDE_MIN_FONT_SIZE,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.xaxis, minor=False)
    ax.set_ylim(zero_mean / 10, 10)
    ax.set_xlabel("mean of each row ÷ its spread (standard deviation)")
    ax.set_ylabel("RMSNorm's difference\nfrom LayerNorm (relative)")
    return figure


def _work_slide(results: dict) -> Figure:
    headline = results["headline"]
    compared = ("layer", "rms")
    groups = (
        ("sums over the data", "reductions"),
        ("other passes over the data", "elementwise_passes"),
    )
    counts = {method: [headline[f"{method}_{key}"] for _, key in groups] for method in compared}
    n, d = results["config"]["cost_shape"]
    figure, ax = plotting.slide_figure(
        f"Without the mean, RMSNorm needs {counts['rms'][0]} sums and {counts['rms'][1]} other "
        f"passes over the data per step; LayerNorm {counts['layer'][0]} and {counts['layer'][1]}",
        f"counted, not timed: a forward and backward pass on {n} × {d} values, with γ and β",
    )
    bar_width = 0.36
    for offset, method in zip((-0.5, 0.5), compared, strict=True):
        positions = np.arange(len(groups)) + offset * bar_width
        style = plotting.METHODS[method]
        bars = ax.bar(positions, counts[method], bar_width * 0.94, color=style.color)
        bars.set_label(style.label)
        for position, count in zip(positions, counts[method], strict=True):
            ax.text(position, count, f"{count}", ha="center", va="bottom", fontsize=26)
    ax.set_xticks(np.arange(len(groups)), [label for label, _ in groups])
    ax.set_ylabel("count per forward + backward")
    ax.set_ylim(0, 1.25 * max(max(values) for values in counts.values()))
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """The invariance lost, when the two layers are equal, and the work saved."""
    return [
        ("invariances", _invariance_slide(results)),
        ("equal", _equality_slide(results)),
        ("work", _work_slide(results)),
    ]
