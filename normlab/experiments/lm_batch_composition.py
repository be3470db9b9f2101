"""BatchNorm in a language model on padded batches: random or bucketed, masked or not.

The question: when sequences of very different lengths are padded together into one batch,
what happens to BatchNorm's statistics, and to the language model that trains through
them? Two choices decide it:

* **masked or not**: BatchNorm over the real tokens only (``batch_masked``: the padding
  mask reaches every norm), or over every position of the padded batch (``batch``:
  ``mask_norm=False``, the padding zeros count as data, a mistake easily made);
* **random or bucketed batching** (:func:`normlab.data.length_batches`): windows of
  lengths drawn uniformly from ``min_length`` to ``context_length`` batched in the order
  drawn (each batch mixes short and long windows and is padded to its longest: much
  padding), or sorted by length first (each batch holds windows of about one length:
  little padding), from the same windows.

LayerNorm runs beside them as the reference whose statistics cannot see the batch.

Setup: the character-level :class:`normlab.nn.TransformerLM` (Pre-LN, sinusoidal
positions) trained with Adam at one learning rate for every method (the default of
:class:`normlab.training.LMTrainingSetup`, so that only the batches differ), on padded
batches; validation loss in eval mode on fixed windows of ``context_length`` (no padding,
the same for every run). During training, at every step and BatchNorm layer: how far the
batch's statistics are from the running averages (the mean over features of
|μ_B − μ_run| / σ_run and of |σ²_B / σ²_run − 1|, as in ``lm_norms``), and the share of
padding in the batches.

What to expect, and why. Unmasked BatchNorm under random batching mixes a different amount
of padding into every batch (the statistics move with it: a fraction f of real tokens pulls
the mean to f·m, ``padding_stats``), so its batch statistics fluctuate more than the masked
ones, and its running averages describe a mixture of tokens and zeros; the unpadded
validation windows then meet statistics made for padded batches. Bucketing removes most
of the padding, so masked and unmasked BatchNorm should nearly agree there; but a bucket
of short windows holds only early positions, whose activations differ from late ones (the
first token attends to itself alone), so the batch statistics should move from bucket to
bucket even when masked.

What would refute this: under random batching, unmasked BatchNorm's statistics
fluctuating no more than masked BatchNorm's; or under bucketing, masked BatchNorm's
fluctuating no more than under random batching. The effect on the loss is reported as
measured (median over seeds, with the spread). The README gives the numbers of the
default run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from normlab import data, plotting, training
from normlab.experiments.framework import (
    SweepOptions,
    choices,
    integer,
    number,
    seeds,
)
from normlab.experiments.language_model import (
    BatchStatisticsRecorder,
    LanguageModelConfig,
    fluctuation,
    median_of_finite,
    model_config,
    training_setup,
)

NAME = "lm_batch_composition"

#: The methods: key of plotting.METHODS -> (norm kind, give the mask to the norms?).
METHOD_SETUPS = {
    "batch_masked": ("batch", True),
    "batch": ("batch", False),
    "layer": ("layer", True),
}

#: The batchings: key -> ``bucketed`` of :func:`normlab.data.length_batches`.
BATCHINGS = {"random": False, "bucketed": True}

_BATCHING_LINES = {"random": "-", "bucketed": "--"}

#: The random stream (after the model's and the batches') of the padding-fraction count.
_PADDING_STREAM = 2


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(LanguageModelConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    methods : tuple of str
        Keys of :data:`METHOD_SETUPS`.
    batchings : tuple of str
        Keys of :data:`BATCHINGS`.
    min_length : int
        The shortest training window; the longest is ``context_length``.
    pool_batches : int
        Batches drawn together, then batched at random or by length.
    learning_rate : float
        Adam's rate for every method.
    seeds : tuple of int
        One initialization and stream of windows per seed (shared by every method and
        batching: only their grouping differs).
    context_length, steps, ... : see :class:`LanguageModelConfig`.
    """

    methods: tuple[str, ...] = choices(("batch_masked", "batch", "layer"), METHOD_SETUPS)
    batchings: tuple[str, ...] = choices(("random", "bucketed"), BATCHINGS)
    context_length: int = integer(48, minimum=2, why="a window needs a next character")
    min_length: int = integer(4, minimum=1)
    pool_batches: int = integer(16, minimum=1)
    learning_rate: float = number(training.LMTrainingSetup().lr, above=0)
    steps: int = integer(300, minimum=1)
    warmup_steps: int = integer(30, minimum=0)
    eval_every: int = integer(50, minimum=1)
    seeds: tuple[int, ...] = seeds(2)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            methods=("batch_masked", "batch"),
            d_model=16,
            dim_feedforward=32,
            context_length=24,
            batch_size=8,
            pool_batches=4,
            steps=40,
            warmup_steps=5,
            eval_every=20,
            eval_windows=32,
        )

    def validate(self) -> None:
        super().validate()
        if self.min_length > self.context_length:
            raise ValueError(
                f"min_length must be ≤ context_length={self.context_length}, got {self.min_length}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def padding_fraction_of_batches(setup: training.LMTrainingSetup, seed: int, steps: int) -> float:
    """The mean share of padding in ``steps`` batches drawn as ``setup`` draws them.

    A property of the batching, not of particular batches: drawn from a stream of its own.
    """
    batches = setup.training_batches(
        data.load_char_corpus().train, np.random.default_rng([seed, _PADDING_STREAM])
    )
    return float(np.mean([1.0 - next(batches)[2].mean() for _ in range(steps)]))


def measure_one(run: dict) -> dict:
    """Train one (method, batching, seed) on padded batches; its curve and BatchNorm's noise."""
    norm, mask_norm = METHOD_SETUPS[run["method"]]
    architecture = model_config(run, norm=norm, mask_norm=mask_norm)
    setup = training_setup(
        run,
        lr=run["learning_rate"],
        min_length=run["min_length"],
        bucketed=BATCHINGS[run["batching"]],
        pool_batches=run["pool_batches"],
    )
    recorder = BatchStatisticsRecorder() if norm == "batch" else None
    result = training.train_language_model(
        architecture,
        setup,
        seed=run["seed"],
        on_step=None if recorder is None else recorder.on_step,
    )
    if recorder is not None:
        recorder.close()
    kept = (
        "eval_steps",
        "validation_loss",
        "final_validation_loss",
        "unigram_baseline",
        "diverged",
        "corpus",
    )
    measured = {key: result[key] for key in kept}
    measured["padding_fraction"] = padding_fraction_of_batches(setup, run["seed"], run["steps"])
    if recorder is not None and recorder.records:
        measured["fluctuation"] = fluctuation(recorder.records)
    return measured


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train every (method, batching, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``methods``; ``batchings``; ``eval_steps``;
        ``validation_loss[method][batching]``: lists over seeds of curves;
        ``final_validation_loss[method][batching]``: per seed (None: diverged);
        ``padding_fraction[batching]``: per seed; ``fluctuation[method][batching]``: per
        seed, BatchNorm methods only (see :func:`~normlab.experiments.language_model.fluctuation`);
        ``unigram_baseline``; ``corpus``; ``headline``.
    """
    runs = config.runs(method="methods", batching="batchings", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)
    curves, finals, noise = {}, {}, {}
    for method in config.methods:
        curves[method], finals[method] = {}, {}
        for batching in config.batchings:
            results = measured.table(None, method=method, batching=batching).tolist()
            curves[method][batching] = [r["validation_loss"] for r in results]
            finals[method][batching] = [r["final_validation_loss"] for r in results]
            if METHOD_SETUPS[method][0] == "batch":
                noise.setdefault(method, {})[batching] = [r.get("fluctuation") for r in results]
    padding = {
        batching: measured.table(
            "padding_fraction", method=config.methods[0], batching=batching
        ).tolist()
        for batching in config.batchings
    }
    first = measured.results[0]
    results = {
        "config": config.to_dict(),
        "methods": list(config.methods),
        "batchings": list(config.batchings),
        "eval_steps": max((r["eval_steps"] for r in measured.results), key=len),
        "validation_loss": curves,
        "final_validation_loss": finals,
        "padding_fraction": padding,
        "fluctuation": noise,
        "unigram_baseline": first["unigram_baseline"],
        "corpus": first["corpus"],
    }
    results["headline"] = _headline(results)
    return results


def _headline(results: dict) -> dict:
    headline = {
        "padding_fraction": {
            batching: float(np.mean(values))
            for batching, values in results["padding_fraction"].items()
        }
    }
    for method in results["methods"]:
        for batching in results["batchings"]:
            entry = {
                "median_final_validation_loss": median_of_finite(
                    results["final_validation_loss"][method][batching]
                )
            }
            noise = results["fluctuation"].get(method, {}).get(batching)
            if noise and all(one is not None for one in noise):
                for key in ("mean", "var"):
                    entry[f"fluctuation_{key}"] = float(
                        np.median([np.median(one[key]) for one in noise])
                    )
            headline[f"{method}_{batching}"] = entry
    config = results["config"]
    headline["window_lengths"] = [config["min_length"], config["context_length"]]
    ratios = {
        "masked_bucketed_over_random_fluctuation": ("batch_masked_bucketed", "batch_masked_random"),
        "unmasked_over_masked_random_fluctuation": ("batch_random", "batch_masked_random"),
    }
    for name, (first, second) in ratios.items():
        if "fluctuation_mean" in headline.get(first, {}) and "fluctuation_mean" in headline.get(
            second, {}
        ):
            headline[name] = (
                headline[first]["fluctuation_mean"] / headline[second]["fluctuation_mean"]
            )
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """(a) validation curves; per method and batching, every seed and the median: (b)
    BatchNorm's batch-statistics fluctuation, (c) the final loss."""
    config = results["config"]
    figure, axes = plotting.subplots(1, 3, width=20.0, height=6.6)
    ax = axes[0]
    steps = results["eval_steps"]
    for method in results["methods"]:
        look = plotting.method_style(method)
        for batching in results["batchings"]:
            curves = results["validation_loss"][method][batching]
            length = min(len(curve) for curve in curves)
            table = np.asarray([curve[:length] for curve in curves]).T  # (points, seeds)
            plotting.plot_spread(
                ax,
                steps[:length],
                table,
                color=look["color"],
                marker=look["marker"],
                linestyle=_BATCHING_LINES[batching],
                markevery=max(1, length // 6),
                markerfacecolor=look["color"] if batching == "random" else "white",
                label=f"{look['label']}, {batching}",
            )
    plotting.reference_line(ax, steps, [results["unigram_baseline"]] * len(steps))
    plotting.annotate(ax, "unigram baseline", (steps[-1], results["unigram_baseline"]), ha="right")
    ax.set_ylim(None, results["unigram_baseline"] + 0.5)
    ax.set_xlabel("update step")
    ax.set_ylabel("validation loss (nats per character), eval mode")
    ax.set_title("(a) validation loss", loc="left")
    ax.legend(loc="upper right", fontsize=11)

    def settled_fluctuation(method: str, batching: str) -> list:
        noise = results["fluctuation"].get(method, {}).get(batching) or []
        return [float(np.median(one["mean"])) for one in noise if one is not None]

    _per_batching_panel(
        axes[1],
        results,
        [m for m in results["methods"] if m in results["fluctuation"]],
        settled_fluctuation,
        "|μ_B − μ_run| / σ_run (second half of training)",
        "(b) BatchNorm: batch vs running mean",
    )

    def final_losses(method: str, batching: str) -> list:
        return [v for v in results["final_validation_loss"][method][batching] if v is not None]

    _per_batching_panel(
        axes[2],
        results,
        results["methods"],
        final_losses,
        "final validation loss (nats per character)",
        "(c) final loss",
    )
    plotting.set_title(
        figure,
        "Padded batches: does BatchNorm need the mask, and does bucketing by length help?",
        f"Character-level transformer, Pre-LN, {config['num_layers']} blocks, d_model = "
        f"{config['d_model']}; windows of {config['min_length']}–{config['context_length']} "
        f"characters, batches of {config['batch_size']} padded to their longest (random or "
        f"sorted by length within {config['pool_batches']} batches); Adam, lr "
        f"{config['learning_rate']:g} for every method, {config['steps']} updates; validation on "
        f"unpadded windows of {config['context_length']}; "
        f"{plotting.spread_caption(len(config['seeds']))}; (b, c) every seed, bar: median. "
        "Unmasked BatchNorm counts the padding as data.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """Padding, BatchNorm's fluctuation and the final losses, from ``results``."""
    headline = results["headline"]
    lines = [
        "padding in the training batches: "
        + ", ".join(
            f"{b} {100 * headline['padding_fraction'][b]:.0f} %" for b in results["batchings"]
        )
    ]
    lines.append("final validation loss (median over seeds); |μ_B − μ_run|/σ_run in training:")
    for method in results["methods"]:
        for batching in results["batchings"]:
            entry = headline[f"{method}_{batching}"]
            loss = entry["median_final_validation_loss"]
            noise = entry.get("fluctuation_mean")
            noise_text = "" if noise is None else f"   fluctuation {noise:.3f}"
            lines.append(
                f"  {plotting.method_label(method):20s} {batching:9s} "
                f"{'diverged' if loss is None else f'{loss:.3f}'}{noise_text}"
            )
    pairs = (
        ("masked_bucketed_over_random_fluctuation", "masked BatchNorm, bucketed vs random"),
        ("unmasked_over_masked_random_fluctuation", "random batches, unmasked vs masked BatchNorm"),
    )
    for key, what in pairs:
        if key in headline:
            lines.append(f"{what}: the batch statistics fluctuate {headline[key]:.2f}× as much")
    return "\n".join(lines)


def _per_batching_panel(ax, results, methods, values_of, ylabel: str, title: str) -> None:
    """One column per batching, a point per seed and a bar at the median for each method."""
    positions = np.arange(len(results["batchings"]))
    width = 0.8 / max(len(methods), 1)
    for index, method in enumerate(methods):
        look = plotting.method_style(method)
        for position, batching in zip(positions, results["batchings"], strict=True):
            values = values_of(method, batching)
            x = position + (index - (len(methods) - 1) / 2) * width
            ax.plot(
                [x] * len(values),
                values,
                linestyle="none",
                color=look["color"],
                marker=look["marker"],
                label=look["label"] if position == 0 else None,
            )
            if values:
                ax.hlines(np.median(values), x - width / 2.5, x + width / 2.5, color=look["color"])
    padding = results["headline"]["padding_fraction"]
    ax.set_xticks(
        positions, [f"{b}\n({100 * padding[b]:.0f} % padding)" for b in results["batchings"]]
    )
    ax.set_xlim(-0.6, len(positions) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=14)
    ax.legend(loc="best", fontsize=11)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

_SLIDE_BATCHINGS = {"random": "in random order", "bucketed": "sorted by length"}


def slide_title(results: dict) -> str:
    """What the fluctuation ratios of the headline say, in words."""
    headline = results["headline"]
    bucketed = headline.get("masked_bucketed_over_random_fluctuation")
    unmasked = headline.get("unmasked_over_masked_random_fluctuation")
    parts = []
    if bucketed is not None:
        parts.append(
            f"Sorting by length makes masked BatchNorm's batch means stray {bucketed:.1f}× as far"
            if bucketed > 1
            else f"Sorting by length does not make masked BatchNorm's batch means stray "
            f"further ({bucketed:.2f}×)"
        )
    if unmasked is not None:
        parts.append(f"in random batches, counting the padding: {unmasked:.2f}× as far")
    if not parts:
        return "How far BatchNorm's batch means stray from their running averages"
    return "; ".join(parts)


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: how far BatchNorm's batch means stray, per batching, masked and unmasked."""
    config = results["config"]
    methods = [m for m in results["methods"] if m in results["fluctuation"]]
    figure, ax = plotting.slide_figure(
        slide_title(results),
        f"language model, windows of {config['min_length']}–{config['context_length']} "
        f"characters; {plotting.plural(len(config['seeds']), 'seed')}, bar: median",
    )
    positions = np.arange(len(results["batchings"]))
    width = 0.8 / max(len(methods), 1)
    for index, method in enumerate(methods):
        look = plotting.method_style(method)
        for position, batching in zip(positions, results["batchings"], strict=True):
            noise = results["fluctuation"][method][batching]
            values = [float(np.median(one["mean"])) for one in noise if one is not None]
            x = position + (index - (len(methods) - 1) / 2) * width
            ax.plot(
                [x] * len(values),
                values,
                linestyle="none",
                color=look["color"],
                marker=look["marker"],
                label=look["label"] if position == 0 else None,
            )
            if values:
                ax.hlines(
                    np.median(values), x - width / 2.5, x + width / 2.5, color=look["color"], lw=4
                )
    padding = results["headline"]["padding_fraction"]
    ax.set_xticks(
        positions,
        [
            f"batches {_SLIDE_BATCHINGS[b]}\n({100 * padding[b]:.0f} % padding)"
            for b in results["batchings"]
        ],
    )
    ax.set_xlim(-0.6, len(positions) - 0.4)
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])  # room for the legend above the points
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("distance of the batch mean from\nthe running mean (in std)")
    ax.legend(loc="upper left")
    return [("fluctuation", figure)]
