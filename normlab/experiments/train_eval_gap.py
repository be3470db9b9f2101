"""BatchNorm accuracy in train mode vs eval mode against batch size; precise BN; a batch of one.

The question: a BatchNorm network computes a different function in training
mode (each batch normalized by its own mean and variance) and in eval mode
(every sample normalized by the running averages). How far apart are the two
at test time, how much of the eval-mode accuracy is lost because the running
averages are poor estimates, and what happens to a batch of one?

Setup. The digits MLP of ``accuracy_vs_batch_size`` with BatchNorm (same
training setup and seeds, so its eval-mode curve is that figure's BatchNorm
curve), trained at each batch size B. For each trained network:

* eval mode: the running averages (momentum 0.1, so mostly the last ~10
  training batches) normalize every test sample;
* train mode: the test set is cut at random into batches of B, each
  normalized with its own statistics, as during training (running averages
  saved and restored);
* precise BN (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"): after
  training, reset the running averages, set ``momentum=None`` (a cumulative
  average over the batches passed) and run the whole training set through the
  network in train mode, as ONE batch of 1347 images, without any weight
  update. The running mean and variance are then exactly the training-set mean
  and (unbiased) variance of each BatchNorm input, computed with the layers
  below already normalized by their own training-set statistics; then eval mode;
* for the networks trained at ``probe_batch_size``: train-mode accuracy
  against the size of the test batches, from 1 to the whole test set;
* a batch of one: in eval mode each test image alone gives the same logits
  (up to float32 rounding) and the same prediction as in the full test batch,
  because eval-mode BatchNorm is a fixed affine map; in train mode, and with
  ``track_running_stats=False`` in either mode, a single sample has no batch
  variance and normlab raises ``ValueError`` (the messages are in the results).

Theory. With B = 2 on (N, D) vectors, BatchNorm maps every feature of the two
samples to exactly −1 and +1 (x − mean = ±d/2, std = d/2): during training
the first layer passes on only which sample of the pair is larger, feature by
feature. Train mode at test time reproduces that coarse function; eval mode
feeds the network continuous values it never saw in training. As B grows,
batch statistics approach population statistics, the two modes converge, and
the running averages (of noisier batch statistics at small B) become better
estimates.

Scope. The result is this model's: a digits MLP whose BatchNorm statistics average B
values per feature, tested with test batches of the training size. It is not a general
rule that eval mode wins. Wu & Johnson (2021) observe that when the normalization batch
is small, evaluating with mini-batch statistics can *reduce* the train/test
inconsistency, since the network then meets at test time the statistics it was trained
with; which mode wins depends on the model and on what the statistics average over (a
CNN averages B·H·W values per channel), so the figure's caption says which mode was ahead
at which B in the run it shows, and the other experiments of this lesson
(``precise_bn``, ``test_time_shift``, ``frozen_batchnorm``, ``batch_renorm``) show the
cases where the choice of inference statistics matters more.

Each point is the median over seeds, the band the min–max range.

What would refute the claim that batch statistics at small B hurt at test time here: train
mode no worse than eval mode at the smallest batch size; precise BN far better than the
running averages (then the running estimates, not the trained network, are the loss);
or a batch of one in eval mode that changes a prediction (eval-mode BatchNorm would not
be a per-sample affine map). The README gives the numbers of the default run.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import layers, plotting, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    seeds,
    setup,
)
from normlab.training import TrainingSetup

NAME = "train_eval_gap"

#: The three ways of normalizing at test time (keys of the results).
MODES = ("eval", "train_mode", "precise_bn")

#: Test-set size of the digits split: the largest test batch.
TEST_SET_SIZE = 450


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train and test. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    batch_sizes : tuple of int ≥ 2
        Training batch sizes (and the test-batch size of the train-mode curve).
    seeds : tuple of int
        One BatchNorm network per (batch size, seed).
    test_batch_sizes : tuple of int
        Test-batch sizes of the right panel (1 = a batch of one), ≤ 450.
    probe_batch_size : int or None
        The training batch size whose networks the right panel tests; one of
        ``batch_sizes``. None (default): the one closest to the learning-rate
        rule's reference batch size (32), see :meth:`probe`.
    training : TrainingSetup
        As in ``accuracy_vs_batch_size`` (same defaults: same networks).
    """

    batch_sizes: tuple[int, ...] = integers(
        (2, 4, 8, 16, 32, 64, 128), minimum=2, why="BatchNorm cannot train on one sample"
    )
    seeds: tuple[int, ...] = seeds(3)
    test_batch_sizes: tuple[int, ...] = integers(
        (1, 2, 4, 8, 16, 32, 64, 128, TEST_SET_SIZE), minimum=1, maximum=TEST_SET_SIZE
    )
    probe_batch_size: int | None = integer(None, minimum=2, allow_none=True)
    training: TrainingSetup = setup(TrainingSetup)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            batch_sizes=(2, 32),
            seeds=(0, 1),
            test_batch_sizes=(1, 2, 32, TEST_SET_SIZE),
            training=TrainingSetup(epochs=1),
        )

    def validate(self) -> None:
        training.check_training_batch_sizes(self.batch_sizes, trains_batchnorm=True)
        if self.probe_batch_size is not None and self.probe_batch_size not in self.batch_sizes:
            raise ValueError(
                f"probe_batch_size must be one of batch_sizes {self.batch_sizes}, "
                f"got {self.probe_batch_size}"
            )

    def concerns(self) -> list[str]:
        return self.training.few_steps(self.batch_sizes)

    def probe(self) -> int:
        """The probe batch size: as given, or the one nearest (in log) to the reference."""
        if self.probe_batch_size is not None:
            return self.probe_batch_size
        reference = np.log2(self.training.reference_batch_size)
        return min(self.batch_sizes, key=lambda size: (abs(np.log2(size) - reference), size))


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def batch_of_one_error(model, x_one: np.ndarray) -> str:
    """The ValueError message of a train-mode forward of one sample ('' if none is raised)."""
    model.train()
    try:
        model(x_one)
    except ValueError as error:
        return str(error)
    finally:
        model.eval()
    return ""


def untracked_batch_of_one_error(num_features: int, dtype) -> str:
    """The ValueError message of ``BatchNorm(track_running_stats=False)``, eval mode, one sample."""
    layer = layers.BatchNorm(num_features, track_running_stats=False, dtype=dtype).eval()
    try:
        layer(np.zeros((1, num_features), dtype=dtype))
    except ValueError as error:
        return str(error)
    return ""


def measure_one(run: dict) -> dict:
    """Train one BatchNorm network and test it in every way the figure shows.

    All randomness comes from ``run["seed"]``: training inside
    :func:`~normlab.training.train_mlp`, the random test batches
    here from a generator seeded with ``(seed, 1)``.
    """
    numbers, model = training.train_mlp(
        norm="batch",
        batch_size=run["batch_size"],
        seed=run["seed"],
        **run["training"],
        return_model=True,
    )
    split = training.digits()
    x_test, y_test = split.x_test, split.y_test
    rng = np.random.default_rng([run["seed"], 1])

    def accuracy(predictions: np.ndarray) -> float:
        return float(np.mean(predictions == y_test))

    # Train mode against the size of the test batches (None where it cannot run).
    by_test_batch = [
        accuracy(training.train_mode_predictions(model, x_test, size, rng)) if size > 1 else None
        for size in run["test_batch_sizes"]
    ]

    # A batch of one: eval mode, each test image alone, against the full batch.
    model.eval()
    full_logits = model(x_test)  # (450, 10)
    single_logits = np.concatenate([model(x_test[i : i + 1]) for i in range(len(x_test))])

    # Precise BN; keep the running averages it replaces to measure how far off they were.
    norms = training.batchnorm_layers(model)
    first_norm = norms[0]
    old_stats = [(layer.running_mean.copy(), layer.running_var.copy()) for layer in norms]
    training.recompute_batchnorm_statistics(model, split.x_train)
    # The first BatchNorm's input is x @ W of the first Linear: its training-set statistics,
    # in float64, against the float32 running averages (relative to the feature's spread).
    first_input = split.x_train.astype(np.float64) @ model[0].params["weight"].astype(np.float64)
    population_mean, population_var = first_input.mean(axis=0), first_input.var(axis=0, ddof=1)
    mean_error = np.max(np.abs(first_norm.running_mean - population_mean) / np.sqrt(population_var))
    var_error = np.max(np.abs(first_norm.running_var / population_var - 1))
    running_var_error = [
        float(np.median(np.abs(old_var - layer.running_var) / layer.running_var))
        for (_, old_var), layer in zip(old_stats, norms, strict=True)
    ]

    return {
        "eval_accuracy": numbers["test_accuracy_eval"],
        "train_mode_accuracy": numbers["test_accuracy_train_mode"],
        "precise_bn_accuracy": accuracy(training.predict(model, x_test)),
        "train_accuracy_eval": numbers["train_accuracy_eval"],
        "train_mode_accuracy_by_test_batch_size": by_test_batch,
        "batch_of_one_eval_accuracy": accuracy(np.argmax(single_logits, axis=1)),
        "batch_of_one_changed_predictions": int(
            np.sum(np.argmax(single_logits, axis=1) != np.argmax(full_logits, axis=1))
        ),
        "batch_of_one_max_logit_difference": float(np.abs(single_logits - full_logits).max()),
        "batch_of_one_train_mode_error": batch_of_one_error(model, x_test[:1]),
        "precise_bn_first_layer_mean_error": float(mean_error),
        "precise_bn_first_layer_var_error": float(var_error),
        "running_var_relative_error_before_precise_bn": running_var_error,
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train and test every (batch size, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``batch_sizes``; ``test_batch_sizes``;
        ``accuracy[mode]`` for mode in :data:`MODES`: lists over batch sizes of
        lists over seeds (fractions);
        ``probe_train_mode_accuracy``: list over test batch sizes (None at 1) of
        lists over seeds, for the networks trained at ``config.probe()``;
        ``probe_eval_accuracy``, ``probe_precise_bn_accuracy``,
        ``probe_batch_of_one_eval_accuracy``: lists over seeds;
        ``running_var_relative_error``: per batch size, the median over seeds of
        each BatchNorm layer's median relative error of the running variance;
        ``messages``: the ValueError texts of a batch of one;
        ``training_description``; ``headline``.
    """
    runs = config.runs(batch_size="batch_sizes", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)
    table = measured.table  # (batch sizes, seeds)

    accuracy = {
        "eval": table("eval_accuracy"),
        "train_mode": table("train_mode_accuracy"),
        "precise_bn": table("precise_bn_accuracy"),
    }
    probe = config.probe()
    # (test batch sizes, seeds); None at test batch size 1
    probe_train_mode = table("train_mode_accuracy_by_test_batch_size", batch_size=probe).T.tolist()
    running_var_error = np.median(
        table("running_var_relative_error_before_precise_bn"), axis=1
    )  # (batch sizes, BatchNorm layers)
    messages = {
        "train_mode": measured.results[0]["batch_of_one_train_mode_error"],
        "track_running_stats_false": untracked_batch_of_one_error(
            config.training.hidden, np.float32
        ),
    }
    return {
        "config": config.to_dict(),
        "batch_sizes": list(config.batch_sizes),
        "test_batch_sizes": list(config.test_batch_sizes),
        "accuracy": {mode: values.tolist() for mode, values in accuracy.items()},
        "train_accuracy_eval": table("train_accuracy_eval").tolist(),
        "probe_batch_size": config.probe(),
        "probe_train_mode_accuracy": [
            None if size == 1 else values
            for size, values in zip(config.test_batch_sizes, probe_train_mode, strict=True)
        ],
        "probe_eval_accuracy": table("eval_accuracy", batch_size=probe).tolist(),
        "probe_precise_bn_accuracy": table("precise_bn_accuracy", batch_size=probe).tolist(),
        "probe_batch_of_one_eval_accuracy": table(
            "batch_of_one_eval_accuracy", batch_size=probe
        ).tolist(),
        "running_var_relative_error": running_var_error.tolist(),
        "messages": messages,
        "training_description": config.training.describe(config.batch_sizes),
        "headline": _headline(config, accuracy, measured.results, messages),
    }


def _headline(config: Config, accuracy: dict, measured: list[dict], messages: dict) -> dict:
    batch_sizes = list(config.batch_sizes)
    median = {mode: 100 * np.median(values, axis=1) for mode, values in accuracy.items()}
    eval_minus_train = median["eval"] - median["train_mode"]
    precise_minus_eval = median["precise_bn"] - median["eval"]
    largest_gap = int(np.argmax(np.abs(eval_minus_train)))

    def by_batch_size(values: np.ndarray) -> dict:
        return {str(size): float(value) for size, value in zip(batch_sizes, values, strict=True)}

    return {
        "median_accuracy_percent": {mode: by_batch_size(median[mode]) for mode in MODES},
        "eval_minus_train_mode_points": by_batch_size(eval_minus_train),
        "largest_eval_train_gap_points": float(eval_minus_train[largest_gap]),
        "largest_eval_train_gap_at_batch_size": batch_sizes[largest_gap],
        "precise_bn_minus_eval_points": by_batch_size(precise_minus_eval),
        "batch_of_one_changed_predictions_total": sum(
            one["batch_of_one_changed_predictions"] for one in measured
        ),
        "batch_of_one_max_logit_difference": max(
            one["batch_of_one_max_logit_difference"] for one in measured
        ),
        "batch_of_one_eval_accuracy_equals_full_batch": all(
            one["batch_of_one_eval_accuracy"] == one["eval_accuracy"] for one in measured
        ),
        "precise_bn_first_layer_max_relative_stat_error": max(
            max(one["precise_bn_first_layer_mean_error"], one["precise_bn_first_layer_var_error"])
            for one in measured
        ),
        "batch_of_one_train_mode_message": messages["train_mode"],
        "batch_of_one_track_running_stats_false_message": messages["track_running_stats_false"],
    }


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: How each test-time mode looks. Eval mode takes BatchNorm's own colour and marker.
_LOOKS = {
    "eval": ("eval mode (running averages)", plotting.METHODS["batch"].color, "o"),
    "train_mode": ("train mode (batch statistics)", plotting.COLORS["vermillion"], "s"),
    "precise_bn": ("precise BN (recomputed averages)", plotting.COLORS["bluish_green"], "^"),
}


@plotting.styled
def plot(results: dict) -> Figure:
    """Left: the three modes against training batch size. Right: train mode against test batch."""
    config = results["config"]
    batch_sizes = np.asarray(results["batch_sizes"])
    figure, (ax_left, ax_right) = plotting.subplots(1, 2, width=14.0, height=6.6, sharey=True)

    for mode in MODES:
        label, color, marker = _LOOKS[mode]
        plotting.plot_spread(
            ax_left,
            batch_sizes,
            100 * np.asarray(results["accuracy"][mode]),
            color=color,
            marker=marker,
            label=label,
        )
    plotting.log2_axis(
        ax_left, batch_sizes, label="batch size B (training; train mode: test batches of B)"
    )
    ax_left.set_ylabel("test accuracy (%)")
    ax_left.set_title("BatchNorm networks trained at batch size B")
    # one batch size: the points sit mid-panel, so let the legend find free space
    ax_left.legend(loc="lower right" if len(batch_sizes) > 1 else "best")

    _plot_probe(ax_right, results)

    lowest = min(
        100 * np.min(values) for values in [*results["accuracy"].values(), *_probe_values(results)]
    )
    bottom = max(0.0, 5 * np.floor(lowest / 5) - 2)
    if 1 in results["test_batch_sizes"]:  # keep the note on a batch of one below the probe data
        probe_lowest = min(100 * np.min(values) for values in _probe_values(results))
        if (probe_lowest - bottom) / (_TOP - bottom) < NOTE_ROOM:
            bottom = max(0.0, 5 * np.floor((probe_lowest - NOTE_ROOM * _TOP) / (1 - NOTE_ROOM) / 5))
    ax_left.set_ylim(bottom, _TOP)
    headline = results["headline"]
    spread = plotting.spread_caption(len(config["seeds"]), form="center_of")
    plotting.set_title(
        figure,
        "BatchNorm at test time: batch statistics, running averages, or recomputed ones?",
        f"{results['training_description']}. {spread[0].upper()}{spread[1:]}. "
        "Precise BN: running averages reset and recomputed with momentum=None "
        "from one train-mode pass of the 1347 training images. A batch of one in eval mode "
        f"changed {headline['batch_of_one_changed_predictions_total']} predictions "
        f"(max logit difference {headline['batch_of_one_max_logit_difference']:.1e}). "
        f"{scope_sentence(results)}",
    )
    return figure


def scope_sentence(results: dict) -> str:
    """Which mode was ahead at which B in this run, and that this is the model's, not a rule.

    Computed from the medians, so it holds for the batch sizes and seeds of the run.
    """
    gaps = results["headline"]["eval_minus_train_mode_points"]  # keys: str(B)
    sizes = results["batch_sizes"]
    train_ahead = [size for size in sizes if gaps[str(size)] < 0]
    tied = [size for size in sizes if gaps[str(size)] == 0]
    if not train_ahead and not tied:
        where = "eval mode was ahead of train mode at every B"
    elif not train_ahead:
        where = f"eval mode was ahead of train mode or tied (at B = {_listed(tied)})"
    else:
        where = f"train mode was ahead at B = {_listed(train_ahead)}"
    return (
        f"In this run (this MLP, statistics over B values per feature) {where}; not a rule: "
        "Wu & Johnson (2021) find that with small normalization batches evaluating with "
        "mini-batch statistics can reduce the train/test inconsistency."
    )


def _listed(sizes: list[int]) -> str:
    return ", ".join(str(size) for size in sizes)


#: The top of the accuracy axes (%), and the share of the right panel's height at its bottom
#: that the note on a batch of one takes: the probe data are kept above it.
_TOP = 101
NOTE_ROOM = 0.3


def _probe_values(results: dict) -> list:
    values = [results["probe_eval_accuracy"], results["probe_precise_bn_accuracy"]]
    return values + [row for row in results["probe_train_mode_accuracy"] if row is not None]


def _plot_probe(ax, results: dict) -> None:
    """Train-mode accuracy against test batch size for the probe networks; eval as flat lines."""
    sizes = np.asarray(results["test_batch_sizes"])
    rows = results["probe_train_mode_accuracy"]
    runnable = [index for index, row in enumerate(rows) if row is not None]
    _, color, marker = _LOOKS["train_mode"]
    plotting.plot_spread(
        ax,
        sizes[runnable],
        100 * np.asarray([rows[index] for index in runnable]),
        color=color,
        marker=marker,
        label="train mode: statistics of each test batch",
    )
    flat_lines = (
        ("eval", "probe_eval_accuracy", "-", "eval mode (median)"),
        ("precise_bn", "probe_precise_bn_accuracy", "--", "precise BN (median)"),
    )
    for mode, key, linestyle, label in flat_lines:
        _, color, _ = _LOOKS[mode]
        level = 100 * np.median(results[key])
        ax.axhline(level, color=color, linewidth=2.2, linestyle=linestyle, label=label)
    if 1 in results["test_batch_sizes"]:
        _, eval_color, eval_marker = _LOOKS["eval"]
        ax.plot(
            [1],
            [100 * np.median(results["probe_batch_of_one_eval_accuracy"])],
            marker=eval_marker,
            color=eval_color,
            markersize=12,
            linestyle="none",
            label="eval mode, one image alone\n(same predictions as in a full batch)",
        )
        ax.text(
            0.03,
            0.04,
            "one image alone in train mode,\nor with track_running_stats=False:\n"
            + _first_sentence(results["messages"]["train_mode"]),
            transform=ax.transAxes,
            fontsize=11,
            color=plotting.REFERENCE_COLOR,
        )
    ax.legend(loc="center right", bbox_to_anchor=(1.0, 0.42), fontsize=12)
    plotting.log2_axis(ax, sizes, label="test batch size (1 = one image alone)")
    ax.set_title(f"networks trained at B = {results['probe_batch_size']}: test batch size")


def _first_sentence(message: str, width: int = 40) -> str:
    """'ValueError: ' and the message up to its shape detail, wrapped to ``width`` characters."""
    sentence = "ValueError: " + message.split(" (input shape")[0]
    return textwrap.fill(sentence, width)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The test-time modes in plain words, for the slide's legend.
_SLIDE_LABELS = {
    "eval": "running averages (eval mode)",
    "train_mode": "each test batch's own statistics",
    "precise_bn": "averages recomputed after training",
}


def mode_gaps(results: dict) -> np.ndarray:
    """Median accuracy with the running averages minus with batch statistics, per batch size."""
    median = {mode: 100 * np.median(results["accuracy"][mode], axis=1) for mode in MODES}
    return median["eval"] - median["train_mode"]


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: test accuracy against batch size with running, batch and recomputed statistics."""
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    gaps = mode_gaps(results)
    if len(gaps) > 1 and gaps[0] > 0 and gaps[0] > gaps[-1]:
        title = (
            f"Normalized by their own statistics, test batches score {gaps[0]:.0f} points below "
            f"the running averages at batch size {batch_sizes[0]}, {gaps[-1]:.0f} at "
            f"{batch_sizes[-1]}"
        )
    else:
        title = "Test accuracy with the running averages and with each test batch's statistics"
    figure, ax = plotting.slide_figure(
        title,
        "digits MLP; test batches of the training size; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    for mode in MODES:
        _, color, marker = _LOOKS[mode]
        plotting.plot_spread(
            ax,
            batch_sizes,
            100 * np.asarray(results["accuracy"][mode]),
            color=color,
            marker=marker,
            label=_SLIDE_LABELS[mode],
        )
    plotting.log2_axis(ax, batch_sizes, label="batch size")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    return [("modes", figure)]
