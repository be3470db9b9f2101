"""LayerNorm, RMSNorm, BatchNorm or none in a transformer LM: loss, longer contexts, BN noise.

The questions, on the character-level :class:`normlab.nn.TransformerLM` (Pre-LN blocks,
the same norm in every block and before the head):

1. **Which normalization trains best?** Validation loss against updates for LayerNorm,
   RMSNorm, BatchNorm (statistics over the tokens of the batch) and no normalization, each
   at its own learning rate. The rate is chosen per method from ``learning_rates`` by
   training on the training split without its tuning blocks and measuring on those
   (:func:`normlab.data.load_tuning_corpus`), with the first seed; the reported curves are
   then trained on the whole training split and measured on the validation split, which
   played no part in the choice.
2. **Train mode against eval mode.** BatchNorm's validation loss with running statistics
   (eval mode, as deployed) and with each batch of ``batch_size`` validation windows
   normalized by its own statistics (train mode, as in training).
3. **How much do BatchNorm's batch statistics fluctuate, text against images?** Shen et
   al. (2020, "PowerNorm: Rethinking Batch Normalization in Transformers", Fig. 1) found
   the batch statistics of a transformer on text far more variable around their running
   averages than those of a CNN on images, and traced BatchNorm's poor results in NLP to
   it. Measured at every training step of every BatchNorm layer, before the running
   averages take their step: the mean over features of |μ_B − μ_run| / σ_run and of
   |σ²_B / σ²_run − 1| (scale-free, so a transformer and a CNN compare), the median over the
   second half of training (when the running averages have settled) and over layers. The
   images: the digits CNN of :func:`normlab.training.train_cnn` (two BatchNorm layers, SGD
   as in the digits experiments). The values per statistic differ (B·T tokens against B·H·W
   pixels), so each fluctuation is also given in units of what independent Gaussian values
   would give with that many values: √(2/(π n)) for the mean, √(2/π)·√(2/(n − 1)) for the
   variance.
4. **Longer contexts than in training** (the length test of lesson 3). Every model is
   trained on windows of ``context_length`` characters and evaluated, in eval mode, on
   validation windows of ``test_context_length``; the model is causal and every norm acts
   on each token alone in eval mode, so the loss at position t is the loss after t
   characters of context, and positions beyond the training length are contexts longer
   than any seen in training. The loss is averaged over positions in doubling bins:
   [0, T), [T, 2T), [2T, 4T), ... Positions: ``"none"`` by default (no position signal:
   causal attention alone tells positions apart, and there is nothing to extrapolate
   but the attention itself), or ``"sinusoidal"``.

The popular claim to test: "LayerNorm is better than BatchNorm for long sequences, because
it normalizes each time step on its own". In eval mode BatchNorm is a fixed affine map
per feature, set by the statistics of training contexts; LayerNorm and RMSNorm recompute
their statistics for every token. If the activations change with the context length
(attention averages over more tokens, so its output varies less), LayerNorm follows and
BatchNorm does not. What would refute the claim here: BatchNorm's loss rising from the
trained positions to the longest bin by no more than LayerNorm's and RMSNorm's (within the
spread over seeds). What would refute Shen et al.'s finding at this scale: a text-to-image
ratio of the mean fluctuation of at most 1. The README gives the numbers of the default run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import data, nn, plotting, stats, training
from normlab.experiments.framework import (
    Measured,
    SweepOptions,
    choices,
    integer,
    numbers,
    seeds,
    sweep,
)
from normlab.experiments.language_model import (
    BatchStatisticsRecorder,
    LanguageModelConfig,
    fluctuation,
    median_of_finite,
    model_config,
    training_setup,
)
from normlab.instruments import record_batch_statistics

NAME = "lm_norms"

#: The methods compared (keys of plotting.METHODS and kinds of make_norm), in legend order.
METHODS = ("layer", "rms", "batch", "none")

#: Position schemes that run beyond the training length.
POSITION_SCHEMES = ("none", "sinusoidal")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(LanguageModelConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    norms : tuple of str
        Keys of :data:`METHODS`.
    learning_rates : tuple of float
        The candidates each method's Adam learning rate is chosen from, on the tuning text.
    positions : tuple of str
        Position schemes (:data:`POSITION_SCHEMES`), each a full set of runs.
    test_context_length : int
        Length of the windows of the length test (≥ ``context_length``).
    test_windows : int
        Validation windows of the length test.
    cnn_steps, cnn_batch_size : int
        The digits CNN the batch-statistics fluctuation is compared with: SGD updates and
        images per batch.
    seeds : tuple of int
        One initialization and batch order per seed; the learning rate is chosen with the
        first one.
    d_model, num_layers, ... : see :class:`LanguageModelConfig`.
    """

    norms: tuple[str, ...] = choices(METHODS, METHODS)
    learning_rates: tuple[float, ...] = numbers((3e-3, 1e-2, 3e-2), above=0)
    positions: tuple[str, ...] = choices(("none",), POSITION_SCHEMES)
    test_context_length: int = integer(256, minimum=2)
    test_windows: int = integer(32, minimum=1)
    cnn_steps: int = integer(200, minimum=1)
    steps: int = integer(500, minimum=1)
    cnn_batch_size: int = integer(32, minimum=2, why="BatchNorm trains on batch statistics")
    seeds: tuple[int, ...] = seeds(2)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            norms=("layer", "batch"),
            learning_rates=(3e-3, 1e-2),
            d_model=16,
            dim_feedforward=32,
            context_length=16,
            batch_size=8,
            steps=40,
            warmup_steps=10,
            eval_every=20,
            eval_windows=32,
            test_context_length=64,
            test_windows=8,
            cnn_steps=10,
        )

    def validate(self) -> None:
        super().validate()
        if self.test_context_length < self.context_length:
            raise ValueError(
                f"test_context_length must be ≥ context_length={self.context_length}, "
                f"got {self.test_context_length}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def loss_by_position(model: nn.TransformerLM, ids: np.ndarray, length: int, windows: int) -> list:
    """Mean loss (nats) at each position of ``windows`` windows of ``length``, in eval mode."""
    inputs, targets = data.evaluation_windows(ids, length, windows)  # (K, T) each
    model.eval()
    logits = model(inputs).astype(np.float64)  # (K, T, V)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probabilities, targets[..., None], axis=-1)[..., 0]  # (K, T)
    return (-picked.mean(axis=0)).tolist()


def measure_language_model(run: dict) -> dict:
    """Train one (position scheme, norm, learning rate, seed) on ``run["held_out"]``'s split.

    On the tuning split: the curve only. On the validation split also the loss by position
    on long windows and, for BatchNorm, the train-mode loss and the fluctuation records.
    """
    architecture = model_config(run, norm=run["norm"], positions=run["position"])
    setup = training_setup(run, lr=run["lr"])
    is_batchnorm = run["norm"] == "batch"
    record_now = is_batchnorm and run["held_out"] == "validation"
    if record_now:
        recorder = BatchStatisticsRecorder()
        result, model = training.train_language_model(
            architecture,
            setup,
            seed=run["seed"],
            held_out=run["held_out"],
            on_step=recorder.on_step,
            return_model=True,
        )
        recorder.close()
    else:
        result, model = training.train_language_model(
            architecture, setup, seed=run["seed"], held_out=run["held_out"], return_model=True
        )
    kept = (
        "eval_steps",
        "validation_loss",
        "final_validation_loss",
        "unigram_baseline",
        "diverged",
        "corpus",
    )
    measured = {key: result[key] for key in kept}
    if run["held_out"] == "tuning" or result["diverged"]:
        return measured
    validation = data.load_char_corpus().validation
    measured["loss_by_position"] = loss_by_position(
        model, validation, run["test_context_length"], run["test_windows"]
    )
    if is_batchnorm:
        measured["train_mode_validation_loss"] = training.evaluate_language_model(
            model,
            validation,
            run["context_length"],
            run["eval_windows"],
            batch_statistics_of=run["batch_size"],
        )
        measured["fluctuation"] = fluctuation(recorder.records)
    return measured


def measure_cnn(run: dict) -> dict:
    """The digits CNN with BatchNorm, trained as in the digits experiments: its fluctuation."""
    split = training.digits()
    rng = np.random.default_rng(run["seed"])
    model = nn.CNN(1, split.num_classes, norm="batch", rng=rng)
    with record_batch_statistics(model) as records:
        result = training.fit(
            model,
            split,
            rng,
            batch_size=run["cnn_batch_size"],
            epochs=1,
            steps=run["cnn_steps"],
            images=True,
        )
    return {
        "test_accuracy": result["test_accuracy_eval"],
        "steps": result["steps"],
        "fluctuation": fluctuation(records),
    }


def measure_one(run: dict) -> dict:
    """One run of either part: the language model or the digits CNN (``run["part"]``)."""
    if run["part"] == "cnn":
        return measure_cnn(run)
    return measure_language_model(run)


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose each learning rate, train every (positions, norm, seed), train the CNN.

    Two sweeps: the tuning runs (first seed, every candidate rate) with the CNN runs, then
    the reported runs, each norm at the rate it chose.

    Returns
    -------
    dict with
        ``config``; ``norms``; ``positions``; ``position_bins``: [start, stop) pairs;
        ``by_positions[scheme]``: ``tuning_loss[norm]`` (final loss on the tuning text per
        candidate rate, None: diverged), ``chosen_lr[norm]``, ``eval_steps``,
        ``validation_loss[norm]`` (lists over seeds of curves),
        ``final_validation_loss[norm]`` (per seed), ``loss_by_bin[norm]`` (bins × seeds),
        ``batchnorm`` (eval and train-mode losses per seed, fluctuation per seed);
        ``cnn``: its fluctuation and test accuracy per seed; ``unigram_baseline`` (of the
        validation split); ``corpus``; ``headline``.
    """
    tuning = config.runs(
        part=("language_model",),
        position="positions",
        norm="norms",
        lr="learning_rates",
        seed=config.seeds[:1],
        held_out=("tuning",),
    )
    cnn = config.runs(part=("cnn",), seed="seeds")
    first_sweep = sweep(NAME, measure_one, [*tuning, *cnn], options)
    tuned = Measured(tuning, first_sweep[: len(tuning)])
    chosen = {
        scheme: {norm: _chosen_rate(config, tuned, scheme, norm) for norm in config.norms}
        for scheme in config.positions
    }
    reported = [
        one
        for scheme in config.positions
        for norm in config.norms
        for one in config.runs(
            part=("language_model",),
            position=(scheme,),
            norm=(norm,),
            lr=(chosen[scheme][norm],),
            seed="seeds",
            held_out=("validation",),
        )
    ]
    trained = sweep(NAME, measure_one, reported, options)
    bins = data.position_bins(config.context_length, config.test_context_length)
    by_positions = {}
    for scheme in config.positions:
        per_norm = {
            norm: [
                result
                for one, result in zip(reported, trained, strict=True)
                if (one["position"], one["norm"]) == (scheme, norm)
            ]
            for norm in config.norms
        }  # norm -> results over seeds
        by_positions[scheme] = {
            "tuning_loss": {norm: _tuning_losses(tuned, scheme, norm) for norm in config.norms},
            "chosen_lr": chosen[scheme],
            **_summarize(per_norm, bins),
        }
    cnn_results = first_sweep[len(tuning) :]
    reference = trained[0]
    results = {
        "config": config.to_dict(),
        "norms": list(config.norms),
        "positions": list(config.positions),
        "position_bins": [list(b) for b in bins],
        "by_positions": by_positions,
        "cnn": {
            "test_accuracy": [one["test_accuracy"] for one in cnn_results],
            "steps": cnn_results[0]["steps"],
            "fluctuation": [one["fluctuation"] for one in cnn_results],
        },
        "unigram_baseline": reference["unigram_baseline"],
        "corpus": reference["corpus"],
    }
    results["headline"] = _headline(results)
    return results


def _tuning_losses(tuned: Measured, scheme: str, norm: str) -> list:
    """Final loss on the tuning text at each candidate rate (None: diverged)."""
    finals = tuned.table("final_validation_loss", position=scheme, norm=norm)
    return finals.reshape(-1).tolist()  # (rates,): the other axes have one value each


def _chosen_rate(config: Config, tuned: Measured, scheme: str, norm: str) -> float:
    scores = [np.inf if value is None else value for value in _tuning_losses(tuned, scheme, norm)]
    return config.learning_rates[int(np.argmin(scores))]


def _summarize(per_norm: dict, bins) -> dict:
    """Curves, final losses, the loss per position bin and BatchNorm's extras, per norm."""
    curves, finals, binned, batchnorm = {}, {}, {}, None
    eval_steps: list = []
    for norm, results in per_norm.items():
        curves[norm] = [r["validation_loss"] for r in results]
        finals[norm] = [r["final_validation_loss"] for r in results]
        eval_steps = max([eval_steps, *(r["eval_steps"] for r in results)], key=len)
        binned[norm] = [
            [
                None
                if "loss_by_position" not in r
                else float(np.mean(r["loss_by_position"][start:stop]))
                for r in results
            ]
            for start, stop in bins
        ]
        if norm == "batch":
            batchnorm = {
                "eval_mode_loss": finals[norm],
                "train_mode_loss": [r.get("train_mode_validation_loss") for r in results],
                "fluctuation": [r.get("fluctuation") for r in results],
            }
    return {
        "eval_steps": eval_steps,
        "validation_loss": curves,
        "final_validation_loss": finals,
        "loss_by_bin": binned,
        "batchnorm": batchnorm,
    }


def _headline(results: dict) -> dict:
    config = results["config"]
    headline = {
        "unigram_baseline": results["unigram_baseline"],
        "test_length_over_training_length": config["test_context_length"]
        / config["context_length"],
    }
    for scheme, measured in results["by_positions"].items():
        entry = {"chosen_lr": measured["chosen_lr"]}
        for norm in results["norms"]:
            binned = measured["loss_by_bin"][norm]
            trained, longest = median_of_finite(binned[0]), median_of_finite(binned[-1])
            entry[norm] = {
                "median_final_validation_loss": median_of_finite(
                    measured["final_validation_loss"][norm]
                ),
                "loss_in_trained_positions": trained,
                "loss_in_longest_bin": longest,
                "rise_to_longest_bin": None if None in (trained, longest) else longest - trained,
            }
        finals = [entry[norm]["median_final_validation_loss"] for norm in results["norms"]]
        finals = [value for value in finals if value is not None]
        entry["final_loss_range_over_methods"] = max(finals) - min(finals) if finals else None
        batchnorm = measured["batchnorm"]
        if batchnorm is not None:
            gaps = [
                train - evaluated
                for train, evaluated in zip(
                    batchnorm["train_mode_loss"], batchnorm["eval_mode_loss"], strict=True
                )
                if None not in (train, evaluated)
            ]
            entry["batch_train_minus_eval_mode_loss"] = median_of_finite(gaps)
            text = [f for f in batchnorm["fluctuation"] if f is not None]
            images = results["cnn"]["fluctuation"]
            if text:
                for key in ("mean", "var", "mean_over_iid", "var_over_iid"):
                    text_value = float(np.median([np.median(f[key]) for f in text]))
                    image_value = float(np.median([np.median(f[key]) for f in images]))
                    entry[f"fluctuation_{key}_text"] = text_value
                    entry[f"fluctuation_{key}_images"] = image_value
                    entry[f"fluctuation_{key}_text_over_images"] = text_value / image_value
        headline[scheme] = entry
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """(a) validation curves, (b) the learning-rate choice, (c) the length test, (d, e) the
    fluctuation of BatchNorm's statistics, text against images, (f) train vs eval mode."""
    config = results["config"]
    scheme = results["positions"][0]
    numbers = results["by_positions"][scheme]
    figure, axes = plotting.subplots(2, 3, width=20.0, height=12.0)
    _curves_panel(axes[0, 0], results, numbers)
    _tuning_panel(axes[0, 1], results, numbers)
    _length_panel(axes[0, 2], results, numbers, scheme)
    batchnorm = numbers["batchnorm"]
    if batchnorm is not None and any(f is not None for f in batchnorm["fluctuation"]):
        for ax, statistic in ((axes[1, 0], "mean"), (axes[1, 1], "var")):
            _fluctuation_panel(ax, results, batchnorm, statistic)
        _modes_panel(axes[1, 2], batchnorm)
    else:
        for ax in axes[1]:
            ax.text(0.5, 0.5, "no BatchNorm run", ha="center", transform=ax.transAxes)
    plotting.set_title(
        figure,
        "LayerNorm, RMSNorm, BatchNorm or none in a transformer language model",
        f"Character-level transformer, Pre-LN, {config['num_layers']} blocks, d_model = "
        f"{config['d_model']}, {config['num_heads']} heads, positions: {scheme}; "
        f"{config['steps']} Adam updates (warm-up {config['warmup_steps']}), batch "
        f"{config['batch_size']} windows of {config['context_length']} characters; each "
        "method's learning rate chosen on text held out of the training split; "
        f"{plotting.spread_caption(len(config['seeds']))}. Digits CNN: 2 BatchNorm layers, "
        f"batch {config['cnn_batch_size']}, SGD, {results['cnn']['steps']} steps.",
    )
    return figure


def _curves_panel(ax, results, numbers) -> None:
    steps = numbers["eval_steps"]
    for norm in results["norms"]:
        curves = numbers["validation_loss"][norm]
        length = min(len(curve) for curve in curves)
        table = np.asarray([curve[:length] for curve in curves]).T  # (points, seeds)
        look = plotting.method_style(norm)
        look["label"] += f" (lr {numbers['chosen_lr'][norm]:g})"
        plotting.plot_spread(ax, steps[:length], table, markevery=max(1, length // 8), **look)
    plotting.reference_line(ax, steps, [results["unigram_baseline"]] * len(steps))
    plotting.annotate(ax, "unigram baseline", (steps[-1], results["unigram_baseline"]), ha="right")
    ax.set_ylim(None, results["unigram_baseline"] + 0.5)
    ax.set_xlabel("update step")
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_title("(a) validation loss, eval mode", loc="left")
    ax.legend(loc="upper right", fontsize=11)


def _tuning_panel(ax, results, numbers) -> None:
    rates = np.asarray(results["config"]["learning_rates"])
    top = results["unigram_baseline"] + 0.3  # a loss above is drawn at the top edge, open
    for norm in results["norms"]:
        losses = np.asarray(
            [np.inf if value is None else value for value in numbers["tuning_loss"][norm]]
        )
        look = plotting.method_style(norm)
        shown = np.minimum(losses, top)
        ax.plot(rates, shown, **look)
        above = losses > top
        ax.plot(
            rates[above],
            shown[above],
            linestyle="none",
            marker=look["marker"],
            markersize=11,
            markerfacecolor="white",
            markeredgecolor=look["color"],
        )
        chosen = numbers["chosen_lr"][norm]
        index = list(rates).index(chosen)
        ax.plot(
            [chosen],
            [shown[index]],
            marker="o",
            markersize=18,
            markerfacecolor="none",
            markeredgecolor=look["color"],
            linestyle="none",
        )
    ax.set_xscale("log")
    ax.set_ylim(None, top + 0.05)
    plotting.plain_log_labels(ax.xaxis)
    ax.set_xlabel("Adam learning rate")
    ax.set_ylabel("final loss on the tuning text")
    ax.set_title("(b) choosing the learning rate (circled)", loc="left")
    plotting.annotate(ax, "open at the top: higher, or diverged", (rates[0], top), above=-16)


def _length_panel(ax, results, numbers, scheme) -> None:
    bins = results["position_bins"]
    centers = np.asarray([np.sqrt(max(start, 1) * stop) for start, stop in bins])
    for norm in results["norms"]:
        table = np.asarray(numbers["loss_by_bin"][norm], dtype=float)  # (bins, seeds)
        plotting.plot_spread(ax, centers, table, **plotting.method_style(norm))
    trained = bins[0][1]
    ax.axvspan(centers[0] / 2, trained, color="#dddddd", alpha=0.6, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(centers, [f"{start}–{stop - 1}" for start, stop in bins], fontsize=11)
    ax.minorticks_off()
    ax.set_xlabel("position in a window (characters of context)")
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_title("(c) contexts longer than in training (grey)", loc="left")


def _fluctuation_panel(ax, results, batchnorm, statistic) -> None:
    look = plotting.method_style("batch")
    sources = (
        ("transformer on text", [f for f in batchnorm["fluctuation"] if f is not None], "-", "o"),
        ("CNN on digit images", results["cnn"]["fluctuation"], "--", "^"),
    )
    for label, fluctuations, linestyle, marker in sources:
        fraction = fluctuations[0]["curve_fraction"]
        table = np.asarray([f[f"curve_{statistic}"] for f in fluctuations]).T  # (points, seeds)
        counts = sorted({count for f in fluctuations for count in f["count"]})
        values = f"{counts[0]}–{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
        plotting.plot_spread(
            ax,
            fraction,
            table,
            color=look["color"],
            marker=marker,
            linestyle=linestyle,
            markevery=6,
            markerfacecolor="white" if linestyle == "--" else look["color"],
            label=f"{label} (n = {values} per statistic)",
        )
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.axvspan(0.5, 1.0, color="#eeeeee", lw=0, zorder=0)
    ax.set_xlabel("fraction of training")
    if statistic == "mean":
        ax.set_ylabel("mean over features of |μ_B − μ_run| / σ_run")
        ax.set_title("(d) batch mean against running mean", loc="left")
    else:
        ax.set_ylabel("mean over features of |σ²_B / σ²_run − 1|")
        ax.set_title("(e) batch variance against running variance", loc="left")
    ax.legend(loc="upper right", fontsize=11)


def _modes_panel(ax, batchnorm) -> None:
    look = plotting.method_style("batch")
    seeds = np.arange(len(batchnorm["eval_mode_loss"]))
    for offset, key, label, fill in (
        (-0.18, "eval_mode_loss", "eval mode (running statistics)", look["color"]),
        (0.18, "train_mode_loss", "train mode (each batch's statistics)", "white"),
    ):
        values = [np.nan if v is None else v for v in batchnorm[key]]
        ax.bar(seeds + offset, values, width=0.34, color=fill, edgecolor=look["color"], label=label)
    finite = [
        v for key in ("eval_mode_loss", "train_mode_loss") for v in batchnorm[key] if v is not None
    ]
    if finite:
        ax.set_ylim(min(finite) - 0.1, max(finite) + 0.1)
    ax.set_xticks(seeds, [f"seed {seed}" for seed in seeds])
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_title("(f) BatchNorm: eval mode vs train mode", loc="left")
    ax.legend(loc="upper right", fontsize=11)


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def rises(results: dict, scheme: str, norm: str) -> np.ndarray:
    """Per seed, the loss in the longest bin minus that in the trained positions."""
    binned = np.asarray(results["by_positions"][scheme]["loss_by_bin"][norm], dtype=float)
    return binned[-1] - binned[0]  # (seeds,)


def compare_rises(one, other) -> str:
    """``"less"``, ``"more"`` or ``"about as much"``: seed by seed, do the ranges separate?

    :func:`normlab.stats.range_order` in words.
    """
    order = stats.range_order(one, other)
    return {"below": "less", "above": "more"}.get(order, "about as much")


def summary(results: dict) -> str:
    """Training, the length test, BatchNorm's modes and fluctuation, from ``results``."""
    lines = []
    bins = results["position_bins"]
    for scheme, measured in results["by_positions"].items():
        entry = results["headline"][scheme]
        lines.append(f"positions: {scheme}; final validation loss (median, min–max over seeds):")
        for norm in results["norms"]:
            finals = [v for v in measured["final_validation_loss"][norm] if v is not None]
            spread = f"{min(finals):.3f}–{max(finals):.3f}" if finals else "diverged"
            lines.append(
                f"  {plotting.method_label(norm):20s} lr {measured['chosen_lr'][norm]:<7g}"
                f"{entry[norm]['median_final_validation_loss'] or float('nan'):.3f}  ({spread})"
            )
        lines.append(
            "loss by position (median over seeds): "
            + ", ".join(f"[{start}, {stop})" for start, stop in bins)
        )
        for norm in results["norms"]:
            medians = [np.median(b) for b in measured["loss_by_bin"][norm]]
            lines.append(
                f"  {plotting.method_label(norm):20s} "
                + " ".join(f"{value:.3f}" for value in medians)
                + f"   rise {entry[norm]['rise_to_longest_bin']:+.3f}"
            )
        if "batch" in results["norms"]:
            for other in ("layer", "rms"):
                if other in results["norms"]:
                    verdict = compare_rises(
                        rises(results, scheme, "batch"), rises(results, scheme, other)
                    )
                    wording = {"about as much": "about as much as"}.get(verdict, f"{verdict} than")
                    lines.append(
                        f"BatchNorm's loss rises {wording} {plotting.method_label(other)}'s "
                        "beyond the training length (seed by seed)"
                    )
        if "batch_train_minus_eval_mode_loss" in entry:
            lines.append(
                "BatchNorm, train mode minus eval mode validation loss: "
                f"{entry['batch_train_minus_eval_mode_loss']:+.4f} nats"
            )
        if "fluctuation_mean_text_over_images" in entry:
            ratio = entry["fluctuation_mean_text_over_images"]
            lines.append(
                "batch mean vs running mean, |μ_B − μ_run|/σ_run: text "
                f"{entry['fluctuation_mean_text']:.3f}, images "
                f"{entry['fluctuation_mean_images']:.3f} ({ratio:.2f}×); in units of "
                "independent values: text "
                f"{entry['fluctuation_mean_over_iid_text']:.2f}, images "
                f"{entry['fluctuation_mean_over_iid_images']:.2f}"
            )
            holds = "holds" if ratio > 2 else "does not hold"
            lines.append(
                f"Shen et al.'s finding (text batches fluctuate much more) {holds} here "
                f"(ratio {ratio:.2f})"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: Shen et al.'s finding counts as reproduced when text fluctuates more than this many times
#: as much as images (the verdict of :func:`summary`).
FLUCTUATION_GAP = 2


def _training_slide(results: dict) -> Figure:
    config = results["config"]
    scheme = results["positions"][0]
    numbers = results["by_positions"][scheme]
    entry = results["headline"][scheme]
    finals = {
        norm: entry[norm]["median_final_validation_loss"]
        for norm in results["norms"]
        if entry[norm]["median_final_validation_loss"] is not None
    }
    best = min(finals, key=finals.get)
    spread = entry["final_loss_range_over_methods"]
    title = (
        f"Each at its own learning rate, {'both' if len(finals) == 2 else f'all {len(finals)}'}"
        " end within "
        f"{plotting.rounded(spread)} nats per character of each other; "
        f"{plotting.method_label(best)} lowest"
    )
    figure, ax = plotting.slide_figure(
        title,
        f"character-level transformer, {config['num_layers']} blocks; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    steps = numbers["eval_steps"]
    for norm in results["norms"]:
        curves = numbers["validation_loss"][norm]
        length = min(len(curve) for curve in curves)
        table = np.asarray([curve[:length] for curve in curves]).T  # (points, seeds)
        plotting.plot_spread(
            ax, steps[:length], table, markevery=max(1, length // 5), **plotting.method_style(norm)
        )
    baseline = results["unigram_baseline"]
    plotting.reference_line(ax, steps, [baseline] * len(steps), linewidth=3)
    plotting.annotate(
        ax,
        "guessing from letter frequencies",
        (steps[-1], baseline),
        above=8,
        ha="right",
        fontsize=plotting.SLIDE_MIN_FONT_SIZE,
    )
    ax.set_ylim(None, baseline + 0.4)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss\n(nats per character)")
    ax.legend(loc="best")
    return figure


def fluctuation_title(results: dict) -> str:
    """Text against images, in words: does Shen et al.'s gap appear in this run?"""
    scheme = results["positions"][0]
    ratio = results["headline"][scheme]["fluctuation_mean_text_over_images"]
    times = f"{ratio:.2f}×" if ratio < 1 else f"{ratio:.1f}×"
    if ratio > FLUCTUATION_GAP:
        return (
            f"BatchNorm's batch means stray {times} as far from their running averages on "
            "text as on images, as Shen et al. found"
        )
    if ratio > 1:
        return (
            f"On text BatchNorm's batch means stray only {times} as far from their running "
            "averages as on images: not the large gap Shen et al. found"
        )
    return (
        f"At this scale BatchNorm's batch means stray no further on text than on images "
        f"({times}): Shen et al.'s gap does not appear"
    )


def _fluctuation_slide(results: dict) -> Figure:
    config = results["config"]
    scheme = results["positions"][0]
    figure, ax = plotting.slide_figure(
        fluctuation_title(results),
        "text: a small transformer; images: a digits CNN; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    look = plotting.method_style("batch")
    sources = (
        ("transformer on text", results["by_positions"][scheme]["batchnorm"]["fluctuation"], "-"),
        ("CNN on digit images", results["cnn"]["fluctuation"], "--"),
    )
    for label, fluctuations, linestyle in sources:
        fluctuations = [f for f in fluctuations if f is not None]
        table = np.asarray([f["curve_mean"] for f in fluctuations]).T  # (points, seeds)
        plotting.plot_spread(
            ax,
            fluctuations[0]["curve_fraction"],
            table,
            color=look["color"],
            marker=look["marker"],
            linestyle=linestyle,
            markevery=max(1, len(table) // 6),
            markerfacecolor="white" if linestyle == "--" else look["color"],
            label=label,
        )
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_xlabel("share of training done")
    ax.set_ylabel("distance of the batch mean from\nthe running mean (in std)")
    ax.legend(loc="upper right")
    return figure


def _length_slide(results: dict) -> Figure:
    config = results["config"]
    scheme = results["positions"][0]
    numbers = results["by_positions"][scheme]
    bins = results["position_bins"]
    start = f"Past the {config['context_length']} characters seen in training,"
    per_token = [norm for norm in ("layer", "rms") if norm in results["norms"]]
    if "batch" in results["norms"] and per_token:
        verdicts = {
            norm: compare_rises(rises(results, scheme, "batch"), rises(results, scheme, norm))
            for norm in per_token
        }
        if len(set(verdicts.values())) == 1:
            verdict = next(iter(verdicts.values()))
            wording = {"about as much": "about as much as"}.get(verdict, f"{verdict} than")
            others = " and ".join(f"{plotting.method_label(norm)}'s" for norm in per_token)
            title = f"{start} BatchNorm's loss rises {wording} {others}"
        else:
            title = f"{start} the loss of each normalization"
    else:
        title = f"{start} the loss of each normalization"
    figure, ax = plotting.slide_figure(
        title,
        "grey: the trained positions; " + plotting.spread_caption(len(config["seeds"])),
    )
    positions = np.arange(len(bins))  # one step per doubling bin
    for norm in results["norms"]:
        table = np.asarray(numbers["loss_by_bin"][norm], dtype=float)  # (bins, seeds)
        plotting.plot_spread(ax, positions, table, **plotting.method_style(norm))
    ax.axvspan(-0.5, 0.5, color="#dddddd", alpha=0.6, lw=0)  # the trained positions
    ax.set_xticks(positions, [f"{low}–{high - 1}" for low, high in bins])
    ax.set_xlim(-0.5, len(bins) - 0.6)
    ax.set_xlabel("position in the window (characters of context)")
    ax.set_ylabel("validation loss\n(nats per character)")
    ax.legend(loc="upper left")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """Training curves; BatchNorm's fluctuation, text against images; contexts beyond training."""
    named = [("training", _training_slide(results))]
    scheme = results["positions"][0]
    if "fluctuation_mean_text_over_images" in results["headline"][scheme]:
        named.append(("fluctuation", _fluctuation_slide(results)))
    named.append(("length", _length_slide(results)))
    return named
