"""Pre-LN vs Post-LN at initialization: the gradient norm of each layer against depth.

The question: where the LayerNorm sits in a transformer block decides how large the
gradients are at initialization, layer by layer. Xiong et al. (2020, "On Layer
Normalization in the Transformer Architecture", Theorem 1 and Fig. 3) show that in a
Post-LN transformer (a norm after each residual addition, the original design) the
gradient of the last layer's parameters does not shrink as the network gets deeper and is
larger near the output than near the input, while in a Pre-LN transformer (a norm at the
start of each branch, GPT-2's) the gradients are about the same at every layer and shrink
like 1/√L with the depth L. Their explanation: in Pre-LN the residual stream is a sum of
L + 1 roughly independent terms, so its size grows like √L, and the final norm divides the
gradient of everything above it by that size; in Post-LN every block ends with a norm, the
stream never grows, and nothing scales the gradient near the output down. Large gradients
near the output, together with Adam's large first steps, are why Post-LN needs a warm-up
(``placement_warmup``).

Setup: the character-level :class:`normlab.nn.TransformerLM` (LayerNorm, causal, GELU,
sinusoidal positions, torch's initialization) at depths L = 2 … 12, Pre-LN (with the final
norm before the head) and Post-LN (whose last block already ends with a norm). For each
depth, placement and seed: a freshly initialized model, one batch of random training
windows of the corpus, the cross-entropy, one backward. Measured: the Frobenius norm of the
gradient of each block's feed-forward output weight W₂ (``blocks.l.linear2.weight``, the
quantity of Xiong et al.'s Fig. 3), and of all the block's parameters together. The same
seed gives both placements the same batch.

What would refute the prediction at this size: a Pre-LN last-layer gradient that does not
fall with depth (log-log slope against L above −0.25, where theory says −0.5); a Post-LN
last-layer gradient that falls as fast as Pre-LN's (slopes within 0.25 of each other); or,
at the largest depth, a Post-LN gradient at the last layer no larger than at the first.
The README gives the numbers of the default run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from normlab import data, nn, plotting
from normlab.experiments.framework import (
    SweepOptions,
    choices,
    integer,
    integers,
    number,
    seeds,
)
from normlab.experiments.language_model import LanguageModelConfig, model_config
from normlab.nn.models import sinusoidal_positions

NAME = "placement_gradients"

#: The placements: key -> ``norm_first`` of the blocks (keys of plotting.METHODS: "pre_ln", ...).
PLACEMENTS = {"post_ln": False, "pre_ln": True}

#: The parameters measured in each block: the feed-forward output weight (Xiong et al.'s
#: Fig. 3) and the whole block.
QUANTITIES = ("feedforward_output_weight", "block")

#: The random streams of a seed: the model, the batch.
_MODEL_STREAM, _BATCH_STREAM = 0, 1


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(LanguageModelConfig):
    """What to measure. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    depths : tuple of int
        The numbers of blocks L.
    placements : tuple of str
        Keys of :data:`PLACEMENTS`.
    batch_size, context_length : int
        The one batch of training windows each gradient is taken on.
    seeds : tuple of int
        One initialization and batch per seed (median and min–max over seeds).
    d_model, num_heads, dim_feedforward : int
        The blocks. (``num_layers``, ``steps`` and the other training fields of
        :class:`LanguageModelConfig` are not used: nothing is trained.)
    embedding_std : float
        The standard deviation of the token embeddings at initialization: 1 is torch's
        ``nn.Embedding`` (the default here); GPT-2 uses 0.02. The embeddings start the
        residual stream, so this sets how large the stream is against what the blocks add.
    """

    depths: tuple[int, ...] = integers((2, 4, 6, 8, 10, 12), minimum=1)
    placements: tuple[str, ...] = choices(("post_ln", "pre_ln"), PLACEMENTS)
    d_model: int = integer(64, minimum=1)
    dim_feedforward: int = integer(256, minimum=1)
    context_length: int = integer(64, minimum=2, why="a window needs a next character")
    batch_size: int = integer(16, minimum=1)
    embedding_std: float = number(1.0, above=0)
    seeds: tuple[int, ...] = seeds(3)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            depths=(2, 4, 8),
            d_model=32,
            dim_feedforward=64,
            context_length=16,
            batch_size=8,
            seeds=(0, 1),
        )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def gradient_norms(model: nn.TransformerLM) -> dict[str, list[float]]:
    """Per block, the Frobenius norm of the gradient: of W₂, and of all its parameters."""
    grads = model.grads
    per_block: dict[str, list[float]] = {quantity: [] for quantity in QUANTITIES}
    for index in range(len(model.blocks)):
        prefix = f"blocks.{index}."
        weight = grads[prefix + "linear2.weight"]
        block = [grad for name, grad in grads.items() if name.startswith(prefix)]
        per_block["feedforward_output_weight"].append(float(np.linalg.norm(weight)))
        per_block["block"].append(
            float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in block)))
        )
    return per_block


def residual_stream_rms(model: nn.TransformerLM, inputs: np.ndarray) -> list[float]:
    """RMS of the residual stream: the block inputs, the embeddings first, then each output.

    In a Pre-LN model this is what the final norm divides by; in a Post-LN model every
    block output is a norm's output (RMS about 1 with γ = 1, β = 0).
    """
    h = model.token_embedding(inputs)  # (B, T, D)
    h = h + sinusoidal_positions(inputs.shape[1], h.shape[-1], h.dtype)
    sizes = [float(np.sqrt(np.mean(h.astype(np.float64) ** 2)))]
    for block in model.blocks:
        h = block(h)  # (B, T, D)
        sizes.append(float(np.sqrt(np.mean(h.astype(np.float64) ** 2))))
    return sizes


def measure_one(run: dict) -> dict:
    """One freshly initialized model of ``run["depth"]`` blocks: its gradient norms per block."""
    architecture = model_config(
        run, num_layers=run["depth"], norm_first=PLACEMENTS[run["placement"]]
    )
    model = nn.TransformerLM.from_config(
        architecture, rng=np.random.default_rng([run["seed"], _MODEL_STREAM])
    )
    model.token_embedding.params["weight"] *= np.float32(run["embedding_std"])
    inputs, targets = data.sample_windows(
        data.load_char_corpus().train,
        run["batch_size"],
        run["context_length"],
        np.random.default_rng([run["seed"], _BATCH_STREAM]),
    )  # (B, T) each
    stream = residual_stream_rms(model, inputs)
    loss, dlogits = model.loss(inputs, targets)
    model.backward(dlogits)
    return {"loss": loss, "stream_rms": stream, **gradient_norms(model)}


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Measure every (placement, depth, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``depths``; ``placements``;
        ``per_layer[placement][quantity][depth]``: list over layers of lists over seeds;
        ``last_layer[placement][quantity]``, ``first_layer[...]``: lists over depths of
        lists over seeds; ``initial_loss``: nats per character at initialization,
        (placements, depths, seeds); ``corpus``: the corpus fingerprint; ``headline``.
    """
    runs = config.runs(placement="placements", depth="depths", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)
    per_layer, last_layer, first_layer = {}, {}, {}
    for placement in config.placements:
        per_layer[placement], last_layer[placement], first_layer[placement] = {}, {}, {}
        for quantity in QUANTITIES:
            by_depth = {}
            for depth in config.depths:
                norms = measured.table(quantity, placement=placement, depth=depth)  # (seeds, L)
                by_depth[str(depth)] = norms.T.tolist()  # (L, seeds)
            per_layer[placement][quantity] = by_depth
            last_layer[placement][quantity] = [by_depth[str(d)][-1] for d in config.depths]
            first_layer[placement][quantity] = [by_depth[str(d)][0] for d in config.depths]
    stream_growth = {  # RMS of the last block's output over that of the embeddings
        placement: [
            [sizes[-1] / sizes[0] for sizes in measured.table("stream_rms", placement=p, depth=d)]
            for d in config.depths
        ]
        for placement in config.placements
        for p in (placement,)
    }
    results = {
        "config": config.to_dict(),
        "depths": list(config.depths),
        "placements": list(config.placements),
        "per_layer": per_layer,
        "last_layer": last_layer,
        "first_layer": first_layer,
        "stream_growth": stream_growth,
        "initial_loss": measured.table("loss").tolist(),
        "corpus": data.corpus_fingerprint(),
    }
    results["headline"] = _headline(results)
    return results


def log_log_slope(x, y) -> float | None:
    """The least-squares slope of log y against log x (None for a single point)."""
    if len(x) < 2:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _headline(results: dict) -> dict:
    depths = np.asarray(results["depths"], dtype=float)
    headline = {"largest_depth": int(depths[-1]), "smallest_depth": int(depths[0])}
    for placement in results["placements"]:
        quantity = QUANTITIES[0]
        last = np.median(results["last_layer"][placement][quantity], axis=1)  # (depths,)
        first = np.median(results["first_layer"][placement][quantity], axis=1)
        growth = np.median(results["stream_growth"][placement], axis=1)  # (depths,)
        headline[placement] = {
            "last_layer_gradient_norm": dict(
                zip(map(str, results["depths"]), map(float, last), strict=True)
            ),
            "last_layer_slope_vs_depth": log_log_slope(depths, last),
            "last_over_first_layer_at_largest_depth": float(last[-1] / first[-1]),
            "stream_growth_at_largest_depth": float(growth[-1]),
        }
    headline["sqrt_of_blocks_plus_one_at_largest_depth"] = float(np.sqrt(depths[-1] + 1))
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Gradient norm per layer (one panel per placement, a line per depth), the last layer's
    against depth with the 1/√L guide, and how much the residual stream grows."""
    config = results["config"]
    placements = results["placements"]
    depths = np.asarray(results["depths"])
    quantity = QUANTITIES[0]
    panels = len(placements) + 2
    figure, axes = plotting.subplots(1, panels, width=5.6 * panels, height=6.0)
    shades = colormaps["viridis"](np.linspace(0.0, 0.85, len(depths)))
    tables = [results["per_layer"][p][quantity][str(d)] for p in placements for d in depths]
    lowest, highest = min(map(np.min, tables)), max(map(np.max, tables))
    for ax, placement in zip(axes, placements, strict=False):
        for depth, shade in zip(depths, shades, strict=True):
            norms = np.asarray(results["per_layer"][placement][quantity][str(depth)])  # (L, seeds)
            layers = np.arange(1, depth + 1)
            plotting.plot_spread(ax, layers, norms, color=shade, marker="o", label=f"L = {depth}")
        ax.set_yscale("log")
        ax.set_ylim(lowest / 1.5, highest * 1.5)
        plotting.plain_log_labels(ax.yaxis)
        ax.set_xlabel("layer index l (1 = next to the input)")
        ax.set_title(f"{plotting.method_label(placement)}: every layer", loc="left")
    axes[0].set_ylabel("‖∂loss/∂W₂‖_F of block l (feed-forward output)")
    axes[0].legend(loc="best", fontsize=11, ncol=2)

    ax = axes[-2]
    for placement in placements:
        plotting.plot_spread(
            ax,
            depths,
            results["last_layer"][placement][quantity],
            **plotting.method_style(placement),
        )
    if "pre_ln" in placements:
        start = float(np.median(results["last_layer"]["pre_ln"][quantity][0]))
        plotting.reference_line(
            ax, depths, start * np.sqrt(depths[0] / depths), label="∝ 1/√L (Xiong et al.)"
        )
    plotting.log2_axis(ax, depths, label="number of blocks L")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_ylabel("‖∂loss/∂W₂‖_F of the last block")
    ax.set_title("the last block against depth", loc="left")
    ax.legend(loc="best", fontsize=11)

    ax = axes[-1]
    for placement in placements:
        plotting.plot_spread(
            ax, depths, results["stream_growth"][placement], **plotting.method_style(placement)
        )
    plotting.reference_line(
        ax, depths, np.sqrt(depths + 1.0), label="√(L + 1): every block adds as much as the input"
    )
    plotting.log2_axis(ax, depths, label="number of blocks L")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_ylabel("RMS of the last block's output / of its input")
    ax.set_title("how much the residual stream grows", loc="left")
    ax.legend(loc="upper left", fontsize=11)
    plotting.set_title(
        figure,
        "At initialization, does the gradient near the output shrink with depth? "
        "Pre-LN vs Post-LN (cf. Xiong et al. 2020, Fig. 3)",
        f"Character-level transformer, LayerNorm, d_model = {config['d_model']}, "
        f"{config['num_heads']} heads, feed-forward {config['dim_feedforward']}, torch's "
        f"initialization, token embeddings of std {config['embedding_std']:g}, sinusoidal "
        f"positions; one batch of {config['batch_size']} training windows of "
        f"{config['context_length']} characters per seed, no training; "
        f"{plotting.spread_caption(len(config['seeds']))}.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """The measured answer in a few lines, every number and verdict computed from ``results``."""
    headline = results["headline"]
    depths = results["depths"]
    lines = [
        "gradient norm of the last block's W₂ at initialization (median over seeds):",
        "  L          " + "".join(f"{depth:>8d}" for depth in depths),
    ]
    for placement in results["placements"]:
        values = headline[placement]["last_layer_gradient_norm"]
        lines.append(
            f"  {plotting.method_label(placement):10s} "
            + "".join(f"{values[str(depth)]:8.3f}" for depth in depths)
        )
    for placement in results["placements"]:
        entry = headline[placement]
        slope = entry["last_layer_slope_vs_depth"]
        shape = "no fit (one depth)" if slope is None else f"log-log slope {slope:+.2f}"
        lines.append(
            f"{plotting.method_label(placement)}: last layer against L, {shape}; at L = "
            f"{headline['largest_depth']} the last block's gradient is "
            f"{entry['last_over_first_layer_at_largest_depth']:.2f}× the first block's; the "
            f"residual stream grows {entry['stream_growth_at_largest_depth']:.2f}× from input "
            "to output"
        )
    if "pre_ln" in headline and headline["pre_ln"]["last_layer_slope_vs_depth"] is not None:
        slope = headline["pre_ln"]["last_layer_slope_vs_depth"]
        verdict = "follows" if slope <= -0.25 else "does not follow"
        root = headline["sqrt_of_blocks_plus_one_at_largest_depth"]
        lines.append(
            f"Pre-LN {verdict} the predicted 1/√L (slope −0.5) here; a stream to which every "
            f"block added as much as its input would grow √(L + 1) = {root:.2f}×."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The slope of log gradient against log depth below which Pre-LN counts as shrinking like
#: 1/√L (theory: −0.5), as in the module docstring's refutation criterion.
SHRINKING_SLOPE = -0.25


def slide_title(results: dict) -> str:
    """Does the Pre-LN gradient near the output shrink with depth here, and Post-LN's size."""
    headline = results["headline"]
    largest = headline["largest_depth"]
    if (
        "pre_ln" not in results["placements"]
        or headline["pre_ln"]["last_layer_slope_vs_depth"] is None
    ):
        return "At initialization, the gradient near the output, against the number of blocks"
    slope = headline["pre_ln"]["last_layer_slope_vs_depth"]
    if slope <= SHRINKING_SLOPE:
        first = "Pre-LN's gradient near the output shrinks with depth, as 1/√depth predicts"
    else:
        first = "At this size Pre-LN's gradient near the output does not shrink with depth"
    if "post_ln" not in results["placements"]:
        return first
    post = headline["post_ln"]["last_layer_gradient_norm"][str(largest)]
    pre = headline["pre_ln"]["last_layer_gradient_norm"][str(largest)]
    return f"{first}; Post-LN's is {post / pre:.1f}× as large at {largest} blocks"


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: the last block's gradient against depth, Pre-LN and Post-LN, with 1/√L."""
    config = results["config"]
    depths = np.asarray(results["depths"])
    quantity = QUANTITIES[0]
    figure, ax = plotting.slide_figure(
        slide_title(results),
        "character-level transformer at initialization; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    for placement in results["placements"]:
        plotting.plot_spread(
            ax,
            depths,
            results["last_layer"][placement][quantity],
            **plotting.method_style(placement),
        )
    if "pre_ln" in results["placements"]:
        start = float(np.median(results["last_layer"]["pre_ln"][quantity][0]))
        plotting.reference_line(
            ax,
            depths,
            start * np.sqrt(depths[0] / depths),
            label="predicted for Pre-LN: 1/√depth",
            linewidth=3,
        )
    plotting.log2_axis(ax, depths, label="number of blocks")
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_ylabel("gradient size of the last\nblock's output weights")
    ax.legend(loc="lower left")
    return [("depth", figure)]
