"""∂y_t/∂x_s over time: BatchNorm (train mode), GroupNorm and InstanceNorm let the future in.

The question: a causal sequence model may let output t depend on inputs
s ≤ t only. Which normalization layers respect that? BatchNorm in training
mode averages over every token of the batch, so the output at time t depends
on tokens that come later; GroupNorm and InstanceNorm need no batch, but on
(N, T, D) they average over the time axis of each sequence, so they see its
future too, in training and at inference alike; LayerNorm and RMSNorm normalize
each token with its own features.

Setup: a batch x of shape (N, T, D), float64, x ~ N(0, 1); layers with their
default γ = 1, β = 0 and eps. For the first sequence of the batch, the Jacobian
∂y_t/∂x_s is a T×T grid of D×D blocks; the figure shows each block's Frobenius
norm. It is computed with normlab's own backward: one forward, then one
``layer.backward(dy)`` per output entry (t, i) with a one-hot ``dy``, which
returns row (t, i) of the Jacobian. Entries with s > t (the upper triangle)
are the "future leak". BatchNorm is measured in training mode and, after that
step, in eval mode (running statistics: a fixed affine map). GroupNorm has
:func:`normlab.layers.default_num_groups` groups of the D features; InstanceNorm
normalizes each feature of each sequence over its T tokens.

Theory for BatchNorm in training mode, with M = N·T tokens per feature and
x̂ the normalized input: ∂y_{t,j}/∂x_{s,k} = δ_jk·rstd_j·(δ_ts − (1 + x̂_{t,j} x̂_{s,j})/M).
For s ≠ t the block is diagonal with entries of size ~1/M, so its Frobenius
norm is about √(2D)/(N·T) for standard normal data (E[(1 + ab)²] = 2), against
√D on the diagonal. Per token pair the leak shrinks like 1/(N·T), but there are
T(T − 1)/2 future pairs, so the total future leak of a sequence,
Σ_{t<s} ‖∂y_t/∂x_s‖_F ≈ √(2D)·(T − 1)/(2N), *grows* linearly with the sequence
length and falls only like 1/N with the batch size. LayerNorm and RMSNorm have
off-diagonal blocks that are exactly 0 (the upstream gradient at t never
reaches another token), as does BatchNorm in eval mode.

InstanceNorm is the same computation as BatchNorm with one sequence in the batch
(M = T values per statistic), so its total future leak is about √(2D)·(T − 1)/2:
it grows with T like BatchNorm's, but is not divided by N. GroupNorm with G groups
takes each statistic over the T·D/G values of a group, so a block couples every
pair of features of a group: its norm is about √(2G)/T, and the total √(2G)·(T − 1)/2,
also independent of N.

The line plots need BatchNorm's full Jacobian at every T and N (T·D backward
calls each). For LayerNorm, RMSNorm and eval-mode BatchNorm the sweeps only
check that nothing leaks, with one backward per output position t (a random
upstream gradient over its D features): every entry off position t is then
exactly 0 iff, almost surely, every off-diagonal block is. The heat maps use
the full Jacobian of every layer.

What would refute the claim: any non-zero block above the diagonal for LayerNorm,
RMSNorm or eval-mode BatchNorm, a train-mode BatchNorm leak that does not follow
√(2D)·(T − 1)/(2N) in its growth with T and its fall with N, or a GroupNorm or
InstanceNorm leak that is zero or falls with N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import normlab as nl
from normlab import plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    seeds,
)
from normlab.gradcheck import jacobian
from normlab.layers import default_num_groups

NAME = "causal_leak"

#: The layers compared (plotting.METHODS keys, with "batch_eval" drawn in BatchNorm's style).
METHODS = ("batch", "batch_eval", "layer", "rms", "group", "instance")

#: The layers whose off-diagonal blocks are not zero: their full block norms are measured.
LEAKY_METHODS = ("batch", "group", "instance")

#: The batch-free layers that see the whole sequence (their leak does not depend on N).
SEQUENCE_METHODS = ("group", "instance")

_TITLES = {
    "batch": "(a) BatchNorm, train",
    "batch_eval": "BatchNorm, eval",
    "layer": "LayerNorm",
    "rms": "RMSNorm",
    "group": "GroupNorm",
    "instance": "InstanceNorm",
}

#: Why every sequence length is ≥ 2 (with 2 tokens, BatchNorm also has N·T ≥ 2 to train on).
NO_FUTURE = "a sequence of one token has no future token to leak"

#: Heat-map colour range of the block norms; exact zeros get their own colour.
COLOR_RANGE = (1e-3, 10.0)
ZERO_COLOR = "#d9d9d9"

# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    seq_lens : tuple of int
        Sequence lengths T of the "leak against T" panel (at ``batch_size``).
    batch_size : int
        N of the "leak against T" panel.
    batch_sizes : tuple of int
        Batch sizes N of the "leak against N" panel (at ``seq_len``).
    seq_len : int
        T of the "leak against N" panel.
    heatmap_batch_size, heatmap_seq_len : int
        N and T of the heat maps (one batch, seed 0).
    num_features : int
        D.
    seeds : tuple of int
        One random batch per seed for the line plots (median and min–max band).
    """

    seq_lens: tuple[int, ...] = integers((4, 8, 16, 32, 64, 128), minimum=2, why=NO_FUTURE)
    batch_size: int = integer(8, minimum=1)
    batch_sizes: tuple[int, ...] = integers((1, 2, 4, 8, 16, 32, 64), minimum=1)
    seq_len: int = integer(32, minimum=2, why=NO_FUTURE)
    heatmap_batch_size: int = integer(4, minimum=1)
    heatmap_seq_len: int = integer(16, minimum=2, why=NO_FUTURE)
    num_features: int = integer(8, minimum=1)
    seeds: tuple[int, ...] = seeds(5)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            seq_lens=(4, 8, 16),
            batch_sizes=(1, 4, 16),
            seq_len=8,
            heatmap_seq_len=8,
            num_features=4,
            seeds=(0, 1),
        )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def make_layer(method: str, num_features: int, x: np.ndarray):
    """The layer of ``method`` in float64, after the forward on ``x`` its Jacobian is taken at."""
    kind = "batch" if method == "batch_eval" else method
    layer = nl.make_norm(kind, num_features, dtype=np.float64)
    if method == "batch_eval":
        layer(x)  # one training step: the running statistics come from this batch
        layer.eval()
    layer(x)
    return layer


def block_norms(layer, x: np.ndarray) -> np.ndarray:
    """(T, T) Frobenius norms of ∂y[0, t]/∂x[0, s], from one backward per output entry of y[0]."""
    _, seq_len, num_features = x.shape
    rows = jacobian(layer, x, outputs=0)  # (T, D, N, T, D): rows[t, i] = ∂y[0, t, i]/∂x
    squared = np.zeros((seq_len, seq_len))  # [t, s]
    for t in range(seq_len):
        for i in range(num_features):
            own_sequence = rows[t, i, 0]  # (T, D) = ∂y[0, t, i]/∂x[0]
            squared[t] += np.einsum("sj,sj->s", own_sequence, own_sequence)  # sum over j
    return np.sqrt(squared)


def leak_summary(norms: np.ndarray) -> dict:
    """Future leak (s > t), past leak (s < t) and the diagonal of a (T, T) block-norm matrix."""
    seq_len = norms.shape[0]
    future = norms[np.triu_indices(seq_len, k=1)]
    past = norms[np.tril_indices(seq_len, k=-1)]
    return {
        "future_total": float(future.sum()),
        "future_per_pair": float(future.mean()) if future.size else 0.0,
        "future_max": float(future.max()) if future.size else 0.0,
        "past_total": float(past.sum()),
        "diagonal_mean": float(np.diag(norms).mean()),
    }


def dependence_probe(layer, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, T) norms ‖∂(u_t·y[0, t])/∂x[0, s]‖ for a random direction u_t over the D features.

    One backward per output position instead of D: an entry is exactly 0 iff
    (for a random u_t, almost surely) the whole block ∂y[0, t]/∂x[0, s] is 0.
    A cheap check of "exactly zero off the diagonal", not a block norm.
    """
    _, seq_len, num_features = x.shape
    probe = np.zeros((seq_len, seq_len))  # [t, s]
    upstream = np.zeros_like(x)  # (N, T, D), nonzero only at (0, t, :)
    for t in range(seq_len):
        upstream[0, t] = rng.standard_normal(num_features)
        row = layer.backward(upstream)  # (N, T, D)
        upstream[0, t] = 0.0
        probe[t] = np.sqrt(np.einsum("sj,sj->s", row[0], row[0]))
    return probe


def measure(seed: int, shape: tuple[int, int, int], keep_matrix: bool) -> dict:
    """Leak summaries of every method for one random (N, T, D) batch; matrices if asked.

    The leaky layers (BatchNorm in training mode, GroupNorm, InstanceNorm) always get
    their full block norms; the others get them for the heat map and the cheaper
    :func:`dependence_probe` in the sweeps.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)  # (N, T, D), float64
    result = {}
    for method in METHODS:
        layer = make_layer(method, shape[-1], x)
        if keep_matrix or method in LEAKY_METHODS:
            norms = block_norms(layer, x)
        else:
            norms = dependence_probe(layer, x, rng)
        result[method] = leak_summary(norms)
        if keep_matrix:
            result[method]["block_norms"] = norms.tolist()
    return result


def measure_against_length(run: dict) -> dict:
    """Panel (b): N = ``batch_size``, T = the run's ``length``."""
    shape = (run["batch_size"], run["length"], run["num_features"])
    return measure(run["seed"], shape, keep_matrix=False)


def measure_against_batch_size(run: dict) -> dict:
    """Panel (c): N = the run's ``sequences``, T = ``seq_len``."""
    shape = (run["sequences"], run["seq_len"], run["num_features"])
    return measure(run["seed"], shape, keep_matrix=False)


def measure_heatmap(run: dict) -> dict:
    """Panel (a): one batch of ``heatmap_batch_size`` × ``heatmap_seq_len``, every matrix."""
    shape = (run["heatmap_batch_size"], run["heatmap_seq_len"], run["num_features"])
    return measure(run["seed"], shape, keep_matrix=True)


#: The summaries of :func:`leak_summary` that the results keep per run.
SUMMARY_KEYS = ("future_total", "future_per_pair", "future_max", "past_total", "diagonal_mean")


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Jacobian block norms for the heat maps and the leak against T and N.

    Returns
    -------
    dict with
        ``config``; ``heatmap[method]``: summary and ``block_norms`` (T×T, rows t,
        columns s); ``against_seq_len[method][key]`` and
        ``against_batch_size[method][key]``: lists over T (or N) of lists over
        seeds, for key in future_total, future_per_pair, future_max, past_total,
        diagonal_mean; ``theory``: √(2D) for the estimates; ``headline``.
    """
    by_length = config.runs(length="seq_lens", seed="seeds")
    by_batch = config.runs(sequences="batch_sizes", seed="seeds")
    heatmap = config.runs(seed=(0,))  # one batch, seed 0, whatever the seeds of (b, c)

    def table(runs, function) -> dict:  # lists over T (or N) of lists over seeds
        measured = runs.measure(NAME, function, options)
        return {
            method: {
                key: measured.table(lambda one, m=method, k=key: one[m][k]).tolist()
                for key in SUMMARY_KEYS
            }
            for method in METHODS
        }

    results = {
        "config": config.to_dict(),
        "heatmap": heatmap.measure(NAME, measure_heatmap, options).results[0],
        "against_seq_len": table(by_length, measure_against_length),
        "against_batch_size": table(by_batch, measure_against_batch_size),
        "theory": {
            "sqrt_2d": float(np.sqrt(2 * config.num_features)),
            "sqrt_2g": float(np.sqrt(2 * default_num_groups(config.num_features))),
        },
    }
    results["headline"] = _headline(config, results)
    return results


def _headline(config: Config, results: dict) -> dict:
    by_length = results["against_seq_len"]["batch"]
    by_batch = results["against_batch_size"]["batch"]
    sqrt_2d = results["theory"]["sqrt_2d"]
    seq_lens = np.asarray(config.seq_lens, dtype=float)
    batch_sizes = np.asarray(config.batch_sizes, dtype=float)
    total_t = np.median(by_length["future_total"], axis=1)  # (len(seq_lens),)
    pair_t = np.median(by_length["future_per_pair"], axis=1)
    total_n = np.median(by_batch["future_total"], axis=1)  # (len(batch_sizes),)
    theory_total_t = sqrt_2d * (seq_lens - 1) / (2 * config.batch_size)
    theory_total_n = sqrt_2d * (config.seq_len - 1) / (2 * batch_sizes)

    def slope(x, y) -> float | None:  # log-log slope from the first to the last point
        return float(np.log(y[-1] / y[0]) / np.log(x[-1] / x[0])) if len(x) > 1 else None

    zero_methods = ("batch_eval", "layer", "rms")
    exact_zero_max = max(
        float(np.max(results[panel][method][key]))
        for panel in ("against_seq_len", "against_batch_size")
        for method in zero_methods
        for key in ("future_max", "past_total")
    )
    heatmap = results["heatmap"]
    return {
        "heatmap_batchnorm_future_max_block_norm": heatmap["batch"]["future_max"],
        "heatmap_batchnorm_diagonal_mean_block_norm": heatmap["batch"]["diagonal_mean"],
        "heatmap_layer_rms_batch_eval_off_diagonal_max": max(
            heatmap[method]["future_max"] for method in zero_methods
        ),
        "off_diagonal_max_layer_rms_batch_eval_all_runs": exact_zero_max,
        "batchnorm_future_total_at_longest_seq_len": float(total_t[-1]),
        "batchnorm_future_total_slope_vs_seq_len": slope(seq_lens, total_t),
        "batchnorm_future_per_pair_slope_vs_seq_len": slope(seq_lens, pair_t),
        "batchnorm_future_total_slope_vs_batch_size": slope(batch_sizes, total_n),
        "batchnorm_future_total_over_theory_vs_seq_len": [
            float(r) for r in total_t / theory_total_t
        ],
        "batchnorm_future_total_over_theory_vs_batch_size": [
            float(r) for r in total_n / theory_total_n
        ],
        **_sequence_norm_headline(config, results, slope),
    }


def sequence_norm_theory(results: dict, method: str, seq_lens) -> np.ndarray:
    """Total future leak of GroupNorm or InstanceNorm: √(2G)(T − 1)/2 or √(2D)(T − 1)/2."""
    root = results["theory"]["sqrt_2g" if method == "group" else "sqrt_2d"]
    return root * (np.asarray(seq_lens, dtype=float) - 1) / 2


def _sequence_norm_headline(config: Config, results: dict, slope) -> dict:
    seq_lens = np.asarray(config.seq_lens, dtype=float)
    batch_sizes = np.asarray(config.batch_sizes, dtype=float)
    headline = {}
    for method in SEQUENCE_METHODS:
        total_t = np.median(results["against_seq_len"][method]["future_total"], axis=1)
        total_n = np.median(results["against_batch_size"][method]["future_total"], axis=1)
        theory_t = sequence_norm_theory(results, method, seq_lens)
        headline[f"{method}_future_total_at_longest_seq_len"] = float(total_t[-1])
        headline[f"{method}_future_total_slope_vs_seq_len"] = slope(seq_lens, total_t)
        headline[f"{method}_future_total_slope_vs_batch_size"] = slope(batch_sizes, total_n)
        headline[f"{method}_future_total_over_theory_vs_seq_len"] = [
            float(r) for r in total_t / theory_t
        ]
        headline[f"{method}_over_batchnorm_future_total_at_longest_seq_len"] = float(
            total_t[-1] / np.median(results["against_seq_len"]["batch"]["future_total"][-1])
        )
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Six heat maps of ‖∂y_t/∂x_s‖_F, then the leaks against T and against N."""
    config = results["config"]
    figure = Figure(figsize=(22.0, 11.5), layout="constrained")
    mosaic = [list(METHODS), ["by_t"] * 3 + ["by_n"] * 3]
    axes = figure.subplot_mosaic(mosaic, height_ratios=[1.0, 1.0])

    colormap = plotting_colormap()
    image = None
    for method in METHODS:
        image = _heatmap(axes[method], results["heatmap"][method], colormap)
        axes[method].set_title(_TITLES[method], fontsize=15)
    axes[METHODS[0]].set_ylabel("output position t")
    colorbar = figure.colorbar(image, ax=[axes[m] for m in METHODS], shrink=0.9, pad=0.01)
    colorbar.set_label("‖∂y_t/∂x_s‖_F  (grey: exactly 0)")

    sqrt_2d = results["theory"]["sqrt_2d"]
    seq_lens = np.asarray(config["seq_lens"], dtype=float)
    batch_sizes = np.asarray(config["batch_sizes"], dtype=float)
    _leak_panel(
        axes["by_t"],
        seq_lens,
        results["against_seq_len"],
        theory_total=sqrt_2d * (seq_lens - 1) / (2 * config["batch_size"]),
        theory_pair=sqrt_2d / (config["batch_size"] * seq_lens),
        xlabel="sequence length T",
        title=f"(b) leak against T, batch size N = {config['batch_size']}",
    )
    _leak_panel(
        axes["by_n"],
        batch_sizes,
        results["against_batch_size"],
        theory_total=sqrt_2d * (config["seq_len"] - 1) / (2 * batch_sizes),
        theory_pair=sqrt_2d / (batch_sizes * config["seq_len"]),
        xlabel="batch size N",
        title=f"(c) leak against N, sequence length T = {config['seq_len']}",
    )
    axes["by_t"].set_ylabel("future leak of one sequence")

    heat_n, heat_t = config["heatmap_batch_size"], config["heatmap_seq_len"]
    plotting.set_title(
        figure,
        "Does a future token change an earlier output? ‖∂y_t/∂x_s‖_F within one sequence",
        f"(a) N = {heat_n}, T = {heat_t}, D = {config['num_features']}, x ~ N(0, 1) float64, "
        "γ = 1, β = 0; above the diagonal (s > t, outlined) = future inputs. Jacobian rows from "
        "normlab's backward with one-hot upstream gradients. (b, c) "
        f"{plotting.spread_caption(len(config['seeds']))}; BatchNorm in train mode with its "
        "theory; GroupNorm (√(2G)(T−1)/2 for G groups) and InstanceNorm (√(2D)(T−1)/2) see "
        "the future of their own sequence whatever N is. LayerNorm, RMSNorm and BatchNorm in "
        "eval mode: every "
        "off-diagonal block exactly 0 in every run (no point on log axes; checked in the sweeps "
        "with one random-direction backward per position).",
    )
    return figure


def plotting_colormap():
    """A perceptually uniform colormap whose 'bad' colour (exact zeros) is light grey."""
    return colormaps["viridis"].with_extremes(bad=ZERO_COLOR)


def _heatmap(ax, entry: dict, colormap):
    norms = np.asarray(entry["block_norms"])
    seq_len = norms.shape[0]
    shown = np.ma.masked_equal(norms, 0.0)  # exact zeros in ZERO_COLOR
    image = ax.imshow(
        shown,
        cmap=colormap,
        norm=LogNorm(*COLOR_RANGE),
        interpolation="nearest",
        extent=(-0.5, seq_len - 0.5, seq_len - 0.5, -0.5),
    )
    # The future (s > t): the upper triangle, outlined.
    edge = [-0.5, seq_len - 0.5]
    ax.plot(
        [edge[0] + 1, edge[1], edge[1], edge[0] + 1],
        [edge[0], edge[0], edge[1] - 1, edge[0]],
        color="white",
        linewidth=2.5,
        linestyle="--",
    )
    ax.text(
        seq_len * 0.72,
        seq_len * 0.22,
        f"future\nmax {entry['future_max']:.2g}",
        ha="center",
        va="center",
        fontsize=12,
        color="black",
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
    )
    ax.set_xlabel("input position s")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(False)
    return image


def _leak_panel(ax, x_values, tables, *, theory_total, theory_pair, xlabel, title) -> None:
    """BatchNorm's total and per-pair leak with their theory; GroupNorm's and InstanceNorm's
    totals (``tables``: the summaries of every method against the x values)."""
    for method in SEQUENCE_METHODS:
        look = plotting.method_style(method)
        plotting.plot_spread(
            ax,
            x_values,
            np.asarray(tables[method]["future_total"]),
            color=look["color"],
            marker=look["marker"],
            label=f"{look['label']}: total",
        )
    table = tables["batch"]
    look = plotting.method_style("batch")
    total = np.asarray(table["future_total"])
    pair = np.asarray(table["future_per_pair"])
    plotting.plot_spread(
        ax,
        x_values,
        total,
        color=look["color"],
        marker=look["marker"],
        label="BatchNorm (train): total, Σ over s > t of ‖∂y_t/∂x_s‖_F",
    )
    plotting.plot_spread(
        ax,
        x_values,
        pair,
        color=look["color"],
        marker=look["marker"],
        linestyle="--",
        markerfacecolor="white",
        label="BatchNorm (train): per future pair (mean)",
    )
    plotting.reference_line(ax, x_values, theory_total, label="theory √(2D)(T−1)/(2N)")
    plotting.reference_line(ax, x_values, theory_pair, linestyle=":", label="theory √(2D)/(N·T)")
    plotting.log2_axis(ax, x_values)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=15, loc="left")
    ax.legend(loc="best", fontsize=11)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The layers on the slides, in the order of their bars (eval-mode BatchNorm after the rest).
_SLIDE_METHODS = ("batch", "group", "instance", "layer", "rms", "batch_eval")
_SLIDE_WORDS = {
    "batch": "BatchNorm in training",
    "group": "GroupNorm",
    "instance": "InstanceNorm",
    "layer": "LayerNorm",
    "rms": "RMSNorm",
    "batch_eval": "BatchNorm at inference",
}


def _words(labels: list[str]) -> str:
    """``"A"``, ``"A and B"``, ``"A, B and C"``."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _which_slide(results: dict) -> Figure:
    config = results["config"]
    longest = config["seq_lens"][-1]
    leaks = {
        method: float(np.median(results["against_seq_len"][method]["future_total"][-1]))
        for method in _SLIDE_METHODS
    }
    leaky = [m for m in _SLIDE_METHODS if leaks[m] > 0]
    sealed = [m for m in _SLIDE_METHODS if leaks[m] == 0]
    names = _SLIDE_WORDS
    if leaky and sealed:
        title = (
            f"{_words([names[m] for m in leaky])} let the future in; "
            f"{_words([names[m] for m in sealed])} do not"
        )
    elif leaky:
        title = "Later tokens change earlier outputs in every layer measured"
    else:
        title = "No layer measured lets later tokens change earlier outputs"
    figure, ax = plotting.slide_figure(
        title,
        f"one sequence of {longest} tokens in a batch of {config['batch_size']}; "
        f"median of {plotting.plural(len(config['seeds']), 'seed')}",
    )
    positions = np.arange(len(_SLIDE_METHODS))[::-1]  # the first method on top
    for position, method in zip(positions, _SLIDE_METHODS, strict=True):
        look = plotting.method_style("batch" if method == "batch_eval" else method)
        hatch = "//" if method == "batch_eval" else None
        ax.barh(position, leaks[method], color=look["color"], hatch=hatch, edgecolor="white")
        ax.annotate(
            f"{leaks[method]:.0f}",
            (leaks[method], position),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=22,
        )
    ax.set_yticks(positions, [_SLIDE_WORDS[m] for m in _SLIDE_METHODS])
    ax.set_xlim(0, 1.15 * max(max(leaks.values()), 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("how much the later tokens move the earlier outputs")
    return figure


def _growth_slide(results: dict) -> Figure:
    config = results["config"]
    seq_lens = np.asarray(config["seq_lens"])
    totals = {
        method: np.asarray(results["against_seq_len"][method]["future_total"])
        for method in LEAKY_METHODS
    }  # (lengths, seeds)
    growth = {
        method: float(np.median(total[-1]) / np.median(total[0]))
        for method, total in totals.items()
    }
    if all(value > 1 for value in growth.values()):
        title = (
            f"The longer the sequence, the more the future leaks in: from {seq_lens[0]} to "
            f"{seq_lens[-1]} tokens, BatchNorm's leak grows {plotting.rounded(growth['batch'], 2)}×"
        )
    else:
        title = "How the future leak changes with the length of the sequence"
    figure, ax = plotting.slide_figure(
        title,
        f"batch of {config['batch_size']} sequences in training; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    for method in LEAKY_METHODS:
        look = plotting.method_style(method)
        look["label"] = _SLIDE_WORDS[method]
        plotting.plot_spread(ax, seq_lens, totals[method], **look)
    plotting.log2_axis(ax, seq_lens, label="sequence length (tokens)")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis, minor=False)
    ax.set_ylabel("how much the later tokens\nmove the earlier outputs")
    ax.legend(loc="upper left")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """Which layers let the future in, and how the leak grows with the sequence length."""
    named = [("which", _which_slide(results))]
    if len(results["config"]["seq_lens"]) > 1:
        named.append(("growth", _growth_slide(results)))
    return named
