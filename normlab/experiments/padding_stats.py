"""Error of BatchNorm batch statistics against the padding fraction, with and without the mask.

The question: a batch of variable-length sequences is right-padded with zeros
to a common length T. How wrong are BatchNorm's batch mean and variance if the
padding is counted as data, and does the padding mask repair them? And are
LayerNorm and RMSNorm, whose statistics belong to one token, affected at all?

Setup: N sequences of D features, padded to length T. For each padding
fraction p, the sequence lengths are drawn around (1 − p)·T and adjusted so
that exactly round((1 − p)·N·T) tokens are real. Real tokens are
``x = μ_d + σ_d·z`` in float32 with per-feature means μ_d ~ N(0, 1) and standard
deviations σ_d log-uniform in [0.5, 2] (pre-activations are rarely centred);
pads are 0. The "true" statistics are the mean and biased variance of the real
tokens only, in float64. Within a seed the values are the same for every p and
only the lengths change, so the x-axis varies the padding alone.

How the layer's statistics are read: an ``nl.BatchNorm(D, momentum=1.0,
affine=False)`` takes one training step on the batch (with or without
``mask``). With momentum 1 its ``running_mean`` *is* the batch mean it
normalized with (bit for bit), and ``running_var`` is that batch variance times
n/(n − 1) (Bessel), so the biased variance is recovered as
``running_var·(n − 1)/n``, which adds at most two float32 roundings. As a check,
the results also hold the largest difference between this reading and
``functional.moments`` called with the axes and mask the layer uses.

Theory. With a fraction f = 1 − p of real tokens, counting pads as zeros gives
exactly

    mean_unmasked = f·m,     var_unmasked = f·v + f(1 − f)·m²

for the real-token mean m and variance v. In units of the feature's standard
deviation the mean error is p·|m|/√v (zero for a centred feature); the relative
variance error is |f(1 + p·m²/v) − 1|, which is −p for a centred feature but
changes sign for features with |m| > √v: the zeros shrink the variance by f and
widen it by the gap between them and the real values. So the variance error is
not monotone in p for every feature; the mean error is. The masked statistics
leave the pads out and differ from the float64 truth by float32 rounding only:
each of the n ≈ N·T·(1 − p) additions of a sum may round (by up to ε = 1.2e-7
relative), so the relative errors are a few ε up to √n·ε; the mean error in units
of the std is that times |m|/√v.

LayerNorm and RMSNorm normalize each token with its own D features, so a real
token's output cannot depend on the pads. Measured three ways: (1) the same
padded batch with pads 0 or random junk: the real-token outputs are identical
bit for bit; (2) padded batch against each sequence run alone without padding;
(3) as a control without any padding, each sequence alone against all real
tokens in one (R, D) call. Where (2) and (3) are not exactly 0 they differ by a
few float32 ulps, and not because of padding: ``functional.reduce_sum`` sums
each token's features with a BLAS matrix-vector product, and OpenBLAS sums a
row in an order that depends on the number of rows in the call (rows are
handled in blocks of four, the last ones by another kernel). The mathematics
is padding-free; the last bit of a float32 sum can depend on the batch shape.
(With the current core, LayerNorm's mean goes through that product and shows
it; RMSNorm's mean square is an ``einsum`` per row and does not.)

What would refute the claims: masked BatchNorm statistics off the real-token truth by
more than float32 rounding, unmasked errors that do not follow the exact formula above,
or any difference at all in a LayerNorm or RMSNorm output when the pad values change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

import normlab as nl
from normlab import functional as F
from normlab import plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    numbers,
    seeds,
)

NAME = "padding_stats"

#: Padding fractions 0, 0.1, ..., 0.8.
TENTHS = tuple(round(0.1 * tenth, 1) for tenth in range(9))

#: Real tokens: feature means ~ N(0, FEATURE_MEAN_SPREAD²), stds log-uniform in FEATURE_STD_RANGE.
FEATURE_MEAN_SPREAD = 1.0
FEATURE_STD_RANGE = (0.5, 2.0)

#: The two ways BatchNorm can treat the pads (keys of the results, and plotting.METHODS keys).
BATCH_METHODS = ("batch", "batch_masked")

#: LayerNorm and RMSNorm, compared padded against unpadded.
TOKEN_METHODS = ("layer", "rms")

#: The three LayerNorm/RMSNorm comparisons (see the module docstring).
COMPARISONS = ("pad_values", "padded_vs_unpadded", "arrangement")

#: Errors are drawn no lower than this on the log axes (an exact 0 has no logarithm).
ERROR_FLOOR = 1e-10

# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    padding_fractions : tuple of float in [0, 1)
        Share of the N·T positions that are padding (the x-axis).
    batch_size : int
        N, the sequences per batch.
    seq_len : int
        T, the padded length.
    num_features : int
        D.
    seeds : tuple of int
        One batch (lengths and values) per seed and padding fraction.
    """

    padding_fractions: tuple[float, ...] = numbers(TENTHS, minimum=0, below=1)
    batch_size: int = integer(32, minimum=1)
    seq_len: int = integer(64, minimum=1)
    num_features: int = integer(16, minimum=1)
    seeds: tuple[int, ...] = seeds(5)

    @classmethod
    def quick(cls) -> Config:
        return cls(padding_fractions=(0.0, 0.2, 0.4, 0.8), batch_size=16, seq_len=32, seeds=(0, 1))

    def validate(self) -> None:
        for fraction in self.padding_fractions:
            real_tokens = _real_token_count(self.batch_size, self.seq_len, fraction)
            if real_tokens < max(self.batch_size, 2):
                raise ValueError(
                    f"padding fraction {fraction} leaves {real_tokens} real tokens for "
                    f"{self.batch_size} sequences; each needs ≥ 1 and BatchNorm ≥ 2 in all"
                )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def _real_token_count(batch_size: int, seq_len: int, padding_fraction: float) -> int:
    return round((1.0 - padding_fraction) * batch_size * seq_len)


def draw_lengths(
    batch_size: int, seq_len: int, padding_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Lengths in [1, T] that vary around (1 − p)·T and sum to exactly round((1 − p)·N·T)."""
    real_tokens = _real_token_count(batch_size, seq_len, padding_fraction)
    mean_length = real_tokens / batch_size
    half_width = min(mean_length - 1, seq_len - mean_length)  # stay inside [1, T]
    spread = rng.uniform(-1.0, 1.0, size=batch_size)  # (N,)
    lengths = np.clip(np.rint(mean_length + half_width * spread), 1, seq_len).astype(np.int64)
    missing = real_tokens - int(lengths.sum())
    while missing:  # move single tokens until the total is exact (|missing| ≤ N)
        step = 1 if missing > 0 else -1
        has_room = np.flatnonzero(lengths < seq_len if step > 0 else lengths > 1)
        lengths[rng.choice(has_room)] += step
        missing -= step
    return lengths


def make_padded_batch(run: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` (N, T, D) float32 with zeros at the pads, ``mask`` (N, T), ``lengths`` (N,)."""
    n, t, d = run["batch_size"], run["seq_len"], run["num_features"]
    # The lengths depend on (seed, p); the values on the seed only, so that along the
    # x-axis only the padding changes.
    length_rng = np.random.default_rng((run["seed"], round(run["padding_fraction"] * 1e6)))
    lengths = draw_lengths(n, t, run["padding_fraction"], length_rng)
    rng = np.random.default_rng(run["seed"])
    feature_means = rng.normal(0.0, FEATURE_MEAN_SPREAD, size=d)  # (D,)
    low, high = np.log(FEATURE_STD_RANGE)
    feature_stds = np.exp(rng.uniform(low, high, size=d))  # (D,)
    values = feature_means + feature_stds * rng.standard_normal((n, t, d))  # (N, T, D)
    mask = np.arange(t) < lengths[:, None]  # (N, T), real tokens first
    x = np.where(mask[..., None], values, 0.0).astype(np.float32)
    return x, mask, lengths


def batchnorm_statistics(x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The per-feature mean and biased variance BatchNorm normalizes ``x`` with.

    Read from one training step with momentum 1: running_mean is the batch mean,
    running_var the batch variance times n/(n − 1).
    """
    layer = nl.BatchNorm(x.shape[-1], momentum=1.0, affine=False)
    layer(x, mask)
    values_per_feature = x.shape[0] * x.shape[1] if mask is None else int(mask.sum())
    unbias = np.float32((values_per_feature - 1) / values_per_feature)
    return layer.running_mean.copy(), layer.running_var * unbias


def statistic_errors(mean, var, true_mean, true_var) -> tuple[float, float]:
    """Worst feature's mean error in units of its std, and relative variance error."""
    mean_error = np.abs(mean.astype(np.float64) - true_mean) / np.sqrt(true_var)  # (D,)
    var_error = np.abs(var.astype(np.float64) / true_var - 1.0)  # (D,)
    return float(mean_error.max()), float(var_error.max())


def token_norm_differences(kind: str, x: np.ndarray, mask: np.ndarray, lengths) -> dict:
    """Max |Δy| over real tokens for the three LayerNorm/RMSNorm comparisons."""
    layer = nl.LayerNorm(x.shape[-1]) if kind == "layer" else nl.RMSNorm(x.shape[-1])
    padded = layer(x)  # (N, T, D), no mask: the pads are simply further tokens
    junk = np.random.default_rng(len(lengths)).normal(0.0, 100.0, size=x.shape)
    padded_with_junk = layer(np.where(mask[..., None], x, junk).astype(np.float32))
    alone = [layer(x[n : n + 1, :length])[0] for n, length in enumerate(lengths)]  # (L_n, D)
    all_real_tokens = layer(x[mask])  # (R, D), in the order of x[mask]
    real = mask  # (N, T)
    return {
        "pad_values": float(np.abs(padded[real] - padded_with_junk[real]).max()),
        "padded_vs_unpadded": float(np.abs(padded[real] - np.concatenate(alone)).max()),
        "arrangement": float(np.abs(all_real_tokens - np.concatenate(alone)).max()),
        "output_scale": float(np.abs(padded[real]).max()),
    }


def measure_one(run: dict) -> dict:
    """BatchNorm statistic errors (masked, unmasked) and LayerNorm/RMSNorm differences."""
    x, mask, lengths = make_padded_batch(run)
    real = x[mask].astype(np.float64)  # (R, D): the real tokens only
    true_mean, true_var = real.mean(axis=0), real.var(axis=0)  # (D,)
    real_fraction = float(mask.mean())

    errors = {}
    moments_gap = 0.0  # layer reading against functional.moments, same axes and mask
    for variant, variant_mask in (("batch", None), ("batch_masked", mask)):
        mean, var = batchnorm_statistics(x, variant_mask)
        errors[variant] = statistic_errors(mean, var, true_mean, true_var)
        core_mask = None if variant_mask is None else variant_mask[..., None]
        core_mean, core_var, _ = F.moments(x, (0, 1), mask=core_mask)
        moments_gap = max(
            moments_gap,
            float(np.abs(core_mean.reshape(-1) - mean).max()),
            float((np.abs(core_var.reshape(-1) - var) / core_var.reshape(-1)).max()),
        )

    # The exact consequence of counting zeros as data (see the module docstring).
    predicted_mean = real_fraction * true_mean
    predicted_var = real_fraction * true_var + real_fraction * (1 - real_fraction) * true_mean**2
    predicted = statistic_errors(predicted_mean, predicted_var, true_mean, true_var)

    return {
        "padding_fraction": 1.0 - real_fraction,
        "mean_error": {variant: errors[variant][0] for variant in BATCH_METHODS},
        "var_error": {variant: errors[variant][1] for variant in BATCH_METHODS},
        "predicted_unmasked": {"mean_error": predicted[0], "var_error": predicted[1]},
        "layer_reading_vs_moments": moments_gap,
        "token_norms": {
            kind: token_norm_differences(kind, x, mask, lengths) for kind in TOKEN_METHODS
        },
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Measure every (padding fraction, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``padding_fractions`` (the x values, as configured);
        ``mean_error[variant]``, ``var_error[variant]``: lists over fractions of
        lists over seeds, for ``"batch"`` (unmasked) and ``"batch_masked"``;
        ``predicted_unmasked[...]``: the same errors from the exact formula;
        ``token_norms[kind][comparison]``: max |Δy| over real tokens, fractions × seeds;
        ``float32_eps``; ``headline``.
    """
    runs = config.runs(padding_fraction="padding_fractions", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)

    def table(get) -> list:  # (fractions, seeds)
        return measured.table(get).tolist()

    results = {
        "config": config.to_dict(),
        "padding_fractions": list(config.padding_fractions),
        "measured_padding_fraction": table(lambda one: one["padding_fraction"]),
        "mean_error": {v: table(lambda one, v=v: one["mean_error"][v]) for v in BATCH_METHODS},
        "var_error": {v: table(lambda one, v=v: one["var_error"][v]) for v in BATCH_METHODS},
        "predicted_unmasked": {
            stat: table(lambda one, stat=stat: one["predicted_unmasked"][stat])
            for stat in ("mean_error", "var_error")
        },
        "layer_reading_vs_moments": max(
            one["layer_reading_vs_moments"] for one in measured.results
        ),
        "token_norms": {
            kind: {
                key: table(lambda one, kind=kind, key=key: one["token_norms"][kind][key])
                for key in (*COMPARISONS, "output_scale")
            }
            for kind in TOKEN_METHODS
        },
        "float32_eps": float(np.finfo(np.float32).eps),
    }
    results["headline"] = _headline(results)
    return results


def _headline(results: dict) -> dict:
    fractions = results["padding_fractions"]
    last = int(np.argmax(fractions))
    unmasked_mean = np.median(results["mean_error"]["batch"], axis=1)  # (fractions,)
    unmasked_var = np.median(results["var_error"]["batch"], axis=1)
    measured_vs_formula = max(
        float(
            np.max(np.abs(np.subtract(results[stat]["batch"], results["predicted_unmasked"][stat])))
        )
        for stat in ("mean_error", "var_error")
    )
    token = results["token_norms"]
    return {
        "largest_padding_fraction": fractions[last],
        "unmasked_mean_error_at_largest_fraction_median": float(unmasked_mean[last]),
        "unmasked_var_error_at_largest_fraction_median": float(unmasked_var[last]),
        "unmasked_var_error_largest_median": float(unmasked_var.max()),
        "unmasked_var_error_peaks_at_fraction": fractions[int(np.argmax(unmasked_var))],
        "unmasked_measured_vs_formula_max_gap": measured_vs_formula,
        "masked_mean_error_worst": float(np.max(results["mean_error"]["batch_masked"])),
        "masked_var_error_worst": float(np.max(results["var_error"]["batch_masked"])),
        "layer_reading_vs_moments_max_gap": results["layer_reading_vs_moments"],
        **{
            f"{kind}_{comparison}_max_abs_diff": float(np.max(token[kind][comparison]))
            for kind in TOKEN_METHODS
            for comparison in COMPARISONS
        },
    }


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

_COMPARISON_LOOKS = {
    "pad_values": ("pads 0 vs pads of random junk", "-"),
    "padded_vs_unpadded": ("padded vs each sequence alone", "--"),
    "arrangement": ("control without padding: alone vs all in one call", ":"),
}


@plotting.styled
def plot(results: dict) -> Figure:
    """Mean and variance errors against padding fraction; LayerNorm/RMSNorm differences."""
    config = results["config"]
    fractions = np.asarray(results["padding_fractions"])
    figure, axes = plotting.subplots(1, 3, width=19.0, height=6.8)
    eps32 = results["float32_eps"]

    panels = (
        ("mean_error", "(a) batch mean: |error| / std of the feature"),
        ("var_error", "(b) batch variance: relative |error|"),
    )
    for ax, (stat, title) in zip(axes[:2], panels, strict=True):
        for variant in BATCH_METHODS:
            errors = np.maximum(np.asarray(results[stat][variant]), ERROR_FLOOR)
            plotting.plot_spread(ax, fractions, errors, **plotting.method_style(variant))
        predicted = np.median(results["predicted_unmasked"][stat], axis=1)
        plotting.reference_line(
            ax,
            fractions[fractions > 0],
            predicted[fractions > 0],
            label="formula: f·m, f·v + f(1 − f)·m²",
            color="black",
            linewidth=1.2,
            zorder=3,
        )
        ax.axhline(eps32, color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=1.4)
        plotting.annotate(ax, "float32 ε", (fractions[-1], eps32), above=-16, ha="right")
        ax.set_yscale("log")
        ax.set_ylim(ERROR_FLOOR / 3, 30)
        ax.set_xlabel("padding fraction p")
        ax.set_title(title, fontsize=14, loc="left")
    spread = " (median, band: min–max)" if len(config["seeds"]) > 1 else ""
    axes[0].set_ylabel(f"worst feature's error{spread}")
    axes[0].legend(loc="center right")

    _token_norm_panel(axes[2], results, fractions)

    plotting.set_title(
        figure,
        "Padding corrupts BatchNorm's batch statistics unless it is masked; "
        "LayerNorm and RMSNorm never see it",
        f"N = {config['batch_size']} sequences, padded to T = {config['seq_len']}, "
        f"D = {config['num_features']}, float32, zeros at the pads, "
        f"{plotting.spread_caption(len(config['seeds']))}. "
        "Truth: float64 statistics of the real tokens. BatchNorm "
        "statistics read from one training step with momentum = 1. (c) in units of float32 "
        "rounding, ε · max |y| (0 is exactly equal): a few units come from the BLAS summation "
        "order, which depends on the number of rows in a call (the control shows them without "
        "any padding), not from the pads.",
    )
    return figure


def _token_norm_panel(ax, results: dict, fractions: np.ndarray) -> None:
    """(c) LayerNorm/RMSNorm: max |Δy| over real tokens in units of ε · max |y|, linear axis.

    On a linear axis an exact 0 is drawn at 0, and rounding differences are a few units.
    """
    eps32 = results["float32_eps"]
    largest = 0.0
    for kind in TOKEN_METHODS:
        look = plotting.method_style(kind)
        token = results["token_norms"][kind]
        rounding = eps32 * np.asarray(token["output_scale"])  # (fractions, seeds)
        for comparison in COMPARISONS:
            label, linestyle = _COMPARISON_LOOKS[comparison]
            in_units = np.asarray(token[comparison]) / rounding
            largest = max(largest, float(in_units.max()))
            plotting.plot_spread(
                ax,
                fractions,
                in_units,
                color=look["color"],
                marker=look["marker"],
                linestyle=linestyle,
                markerfacecolor=look["color"] if comparison == "pad_values" else "white",
                label=f"{look['label']}: {label}",
            )
    ax.set_ylim(-0.5, max(4.0, 1.3 * largest + 0.5))
    ax.set_xlabel("padding fraction p")
    ax.set_ylabel("max |Δy| over real tokens / (float32 ε · max |y|)")
    ax.set_title("(c) LayerNorm / RMSNorm: real-token outputs", fontsize=14, loc="left")
    ax.legend(loc="upper left", fontsize=10)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def _variance_slide(results: dict) -> Figure:
    config = results["config"]
    fractions = np.asarray(results["padding_fractions"])
    unmasked = np.median(results["var_error"]["batch"], axis=1)  # (fractions,)
    masked_worst = float(np.max(results["var_error"]["batch_masked"]))
    worst_percent = 100 * float(unmasked.max())
    if worst_percent >= 1 and masked_worst < 1e-3:
        title = (
            f"Counting the pads as data puts BatchNorm's variance up to "
            f"{plotting.rounded(worst_percent, 2)} % off; with the mask only rounding is left"
        )
    else:
        title = "How far BatchNorm's batch variance is off when the pads count as data"
    figure, ax = plotting.slide_figure(
        title,
        f"{config['batch_size']} sequences of {config['num_features']} features padded to "
        f"length {config['seq_len']}; " + plotting.spread_caption(len(config["seeds"])),
    )
    for variant in BATCH_METHODS:
        errors = np.maximum(np.asarray(results["var_error"][variant]), ERROR_FLOOR)
        plotting.plot_spread(ax, fractions, errors, **plotting.method_style(variant))
    ax.set_yscale("log")
    ax.set_ylim(ERROR_FLOOR / 3, 30)
    ax.set_yticks([1e-9, 1e-6, 1e-3, 1])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("share of the batch that is padding")
    ax.set_ylabel("relative error of the variance\n(worst feature)")
    ax.legend(loc="center right")
    return figure


def _token_norm_slide(results: dict) -> Figure:
    config = results["config"]
    fractions = np.asarray(results["padding_fractions"])
    changes = {
        kind: np.asarray(results["token_norms"][kind]["pad_values"]) for kind in TOKEN_METHODS
    }  # (fractions, seeds)
    largest = max(float(change.max()) for change in changes.values())
    if largest == 0:
        title = (
            "Whatever the pads hold, LayerNorm's and RMSNorm's outputs of the real tokens "
            "stay the same, bit for bit"
        )
    else:
        title = (
            "When the pads change, LayerNorm's and RMSNorm's outputs of the real tokens "
            f"change by at most {largest:.1g}"
        )
    figure, ax = plotting.slide_figure(
        title,
        "pads of zeros vs large random pads; " + plotting.spread_caption(len(config["seeds"])),
    )
    for offset, kind in zip((-0.006, 0.006), TOKEN_METHODS, strict=True):
        plotting.plot_spread(ax, fractions + offset, changes[kind], **plotting.method_style(kind))
    ax.set_ylim(-0.05, max(0.5, 1.3 * largest))
    ax.set_xlabel("share of the batch that is padding")
    ax.set_ylabel("largest change of a real\ntoken's output")
    ax.legend(loc="upper left")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """BatchNorm's variance with and without the mask; LayerNorm and RMSNorm ignore the pads."""
    return [("variance", _variance_slide(results)), ("token_norms", _token_norm_slide(results))]
