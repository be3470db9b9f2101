"""∂y_t/∂x_s over time: in train mode BatchNorm lets future tokens change earlier outputs.

The question: a causal sequence model may let output t depend on inputs
s ≤ t only. Which normalization layers respect that? BatchNorm in training
mode averages over every token of the batch, so the output at time t depends
on tokens that come later; LayerNorm and RMSNorm normalize each token with its
own features.

Setup: a batch x of shape (N, T, D), float64, x ~ N(0, 1); layers with their
default γ = 1, β = 0 and eps. For the first sequence of the batch, the Jacobian
∂y_t/∂x_s is a T×T grid of D×D blocks; the figure shows each block's Frobenius
norm. It is computed with normlab's own backward: one forward, then one
``layer.backward(dy)`` per output entry (t, i) with a one-hot ``dy``, which
returns row (t, i) of the Jacobian. Entries with s > t (the upper triangle)
are the "future leak". BatchNorm is measured in training mode and, after that
step, in eval mode (running statistics: a fixed affine map).

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

The line plots need BatchNorm's full Jacobian at every T and N (T·D backward
calls each). For LayerNorm, RMSNorm and eval-mode BatchNorm the sweeps only
check that nothing leaks, with one backward per output position t (a random
upstream gradient over its D features): every entry off position t is then
exactly 0 iff, almost surely, every off-diagonal block is. The heat maps use
the full Jacobian of every layer.
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
from normlab.experiments.framework import ExperimentConfig, SweepOptions, grid, sweep
from normlab.gradcheck import jacobian

NAME = "causal_leak"

#: The layers compared (plotting.METHODS keys, with "batch_eval" drawn in BatchNorm's style).
METHODS = ("batch", "batch_eval", "layer", "rms")

_TITLES = {
    "batch": "(a) BatchNorm, train mode",
    "batch_eval": "BatchNorm, eval mode",
    "layer": "LayerNorm",
    "rms": "RMSNorm",
}

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

    seq_lens: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    batch_size: int = 8
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seq_len: int = 32
    heatmap_batch_size: int = 4
    heatmap_seq_len: int = 16
    num_features: int = 8
    seeds: tuple[int, ...] = tuple(range(5))

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

    def validate(self) -> None:
        super().validate()  # seq_lens, batch_sizes ≥ 1; seeds ≥ 0
        for name in ("batch_size", "seq_len", "heatmap_batch_size", "heatmap_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
        if not isinstance(self.num_features, int) or self.num_features < 1:
            raise ValueError(f"num_features must be an integer ≥ 1, got {self.num_features!r}")
        shapes = [(self.batch_size, t) for t in self.seq_lens]
        shapes += [(n, self.seq_len) for n in self.batch_sizes]
        shapes.append((self.heatmap_batch_size, self.heatmap_seq_len))
        for n, t in shapes:
            if n * t < 2:
                raise ValueError(
                    f"BatchNorm in training mode needs N·T ≥ 2 tokens, got N = {n}, T = {t}"
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


def measure_one(run: dict) -> dict:
    """Leak summaries of every method, and the block-norm matrices if ``run["keep_matrix"]``.

    BatchNorm in training mode always gets its full block norms; the other methods
    get them for the heat map and the cheaper :func:`dependence_probe` in the sweeps.
    """
    rng = np.random.default_rng(run["seed"])
    shape = (run["batch_size"], run["seq_len"], run["num_features"])
    x = rng.standard_normal(shape)  # (N, T, D), float64
    result = {}
    for method in METHODS:
        layer = make_layer(method, run["num_features"], x)
        if run["keep_matrix"] or method == "batch":
            norms = block_norms(layer, x)
        else:
            norms = dependence_probe(layer, x, rng)
        result[method] = leak_summary(norms)
        if run["keep_matrix"]:
            result[method]["block_norms"] = norms.tolist()
    return result


def _sweep_runs(config: Config) -> dict[str, list[dict]]:
    common = {"num_features": config.num_features, "keep_matrix": False}
    by_length = grid(seq_len=config.seq_lens, seed=config.seeds)
    by_batch = grid(batch_size=config.batch_sizes, seed=config.seeds)
    for one_run in by_length:
        one_run.update(batch_size=config.batch_size, **common)
    for one_run in by_batch:
        one_run.update(seq_len=config.seq_len, **common)
    heatmap = {
        "batch_size": config.heatmap_batch_size,
        "seq_len": config.heatmap_seq_len,
        "seed": 0,
        "num_features": config.num_features,
        "keep_matrix": True,
    }
    return {"seq_len": by_length, "batch_size": by_batch, "heatmap": [heatmap]}


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
    runs = _sweep_runs(config)
    everything = runs["seq_len"] + runs["batch_size"] + runs["heatmap"]
    measured = sweep(NAME, measure_one, everything, options)
    by_length = measured[: len(runs["seq_len"])]
    by_batch = measured[len(runs["seq_len"]) : len(runs["seq_len"]) + len(runs["batch_size"])]
    keys = ("future_total", "future_per_pair", "future_max", "past_total", "diagonal_mean")

    def table(rows: list[dict], num_values: int) -> dict:
        shape = (num_values, len(config.seeds))  # grid order: T (or N), seed
        return {
            method: {
                key: np.reshape([one[method][key] for one in rows], shape).tolist() for key in keys
            }
            for method in METHODS
        }

    results = {
        "config": config.to_dict(),
        "heatmap": measured[-1],
        "against_seq_len": table(by_length, len(config.seq_lens)),
        "against_batch_size": table(by_batch, len(config.batch_sizes)),
        "theory": {"sqrt_2d": float(np.sqrt(2 * config.num_features))},
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

    def slope(x, y) -> float:  # log-log slope from the first to the last point
        return float(np.log(y[-1] / y[0]) / np.log(x[-1] / x[0])) if len(x) > 1 else float("nan")

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
            float(r) for r in total_t / np.where(theory_total_t > 0, theory_total_t, np.nan)
        ],
        "batchnorm_future_total_over_theory_vs_batch_size": [
            float(r) for r in total_n / theory_total_n
        ],
    }


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Four heat maps of ‖∂y_t/∂x_s‖_F, then the BatchNorm leak against T and against N."""
    config = results["config"]
    figure = Figure(figsize=(20.0, 11.5), layout="constrained")
    mosaic = [list(METHODS), ["by_t", "by_t", "by_n", "by_n"]]
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
        results["against_seq_len"]["batch"],
        theory_total=sqrt_2d * (seq_lens - 1) / (2 * config["batch_size"]),
        theory_pair=sqrt_2d / (config["batch_size"] * seq_lens),
        xlabel="sequence length T",
        title=f"(b) leak against T, batch size N = {config['batch_size']}",
    )
    _leak_panel(
        axes["by_n"],
        batch_sizes,
        results["against_batch_size"]["batch"],
        theory_total=sqrt_2d * (config["seq_len"] - 1) / (2 * batch_sizes),
        theory_pair=sqrt_2d / (batch_sizes * config["seq_len"]),
        xlabel="batch size N",
        title=f"(c) leak against N, sequence length T = {config['seq_len']}",
    )
    axes["by_t"].set_ylabel("BatchNorm (train) leak")

    heat_n, heat_t = config["heatmap_batch_size"], config["heatmap_seq_len"]
    plotting.set_title(
        figure,
        "Does a future token change an earlier output? ‖∂y_t/∂x_s‖_F within one sequence",
        f"(a) N = {heat_n}, T = {heat_t}, D = {config['num_features']}, x ~ N(0, 1) float64, "
        "γ = 1, β = 0; above the diagonal (s > t, outlined) = future inputs. Jacobian rows from "
        "normlab's backward with one-hot upstream gradients. (b, c) BatchNorm in train mode, "
        f"{len(config['seeds'])} seeds (line: median, band: min–max); theory "
        "√(2D)/(N·T) per pair. LayerNorm, RMSNorm and BatchNorm in eval mode: every "
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


def _leak_panel(ax, x_values, table, *, theory_total, theory_pair, xlabel, title) -> None:
    look = plotting.method_style("batch")
    total = np.asarray(table["future_total"])
    pair = np.asarray(table["future_per_pair"])
    keep = total.max(axis=1) > 0  # T = 1 has no future pair
    plotting.plot_spread(
        ax,
        x_values[keep],
        total[keep],
        color=look["color"],
        marker=look["marker"],
        label="total future leak: Σ over s > t of ‖∂y_t/∂x_s‖_F",
    )
    plotting.plot_spread(
        ax,
        x_values[keep],
        pair[keep],
        color=look["color"],
        marker=look["marker"],
        linestyle="--",
        markerfacecolor="white",
        label="per future pair (mean)",
    )
    plotting.reference_line(ax, x_values[keep], theory_total[keep], label="theory √(2D)(T−1)/(2N)")
    plotting.reference_line(
        ax, x_values[keep], theory_pair[keep], linestyle=":", label="theory √(2D)/(N·T)"
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(x_values[keep], [f"{value:g}" for value in x_values[keep]])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=15, loc="left")
    ax.legend(loc="best", fontsize=12)
