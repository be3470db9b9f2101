"""Fine-tuning on a small subset at small batches: BatchNorm in train mode against frozen.

The question: a network pretrained with BatchNorm is fine-tuned on a few images of a new
task, with small batches (as when a detector is fine-tuned with one or two images per
device). Left in train mode, each BatchNorm normalizes every fine-tuning batch by that
batch's own statistics and moves its running averages towards them; *frozen*, it keeps
the pretrained running statistics and is a fixed affine map per feature (γ and β still
learn), the same function in training and at test time. Which fine-tunes better, and
does it depend on the batch size?

Setup. Source task: the digits MLP with BatchNorm (64 → 64 × 2 → 10) pretrained on the
training images of digits 0–4 only. Target task: digits 5–9, from ``subset_size``
training images of those classes (a random subset per seed); the other training images
of digits 5–9 are the validation images, the test images of digits 5–9 the test set.
The pretrained network (all its weights, the head included) is fine-tuned for
``epochs`` passes over the subset with SGD (momentum 0.9) at each batch size B, three
ways (:func:`normlab.training.fit`):

* ``train``: BatchNorm in train mode, as during pretraining;
* ``frozen``: ``frozen_batchnorm=True``, every BatchNorm in eval mode with the
  statistics of the pretraining images;
* ``frozen_recomputed``: first the statistics recomputed on the fine-tuning subset
  (:func:`normlab.training.recompute_batchnorm_statistics`, AdaBN on 5–9), then frozen.

The learning rate follows the linear rule ``base · B / 32`` (the same expected change
of the weights per epoch at every B), and the base of every (way, B) is chosen from
``base_learning_rates`` by its median accuracy on the validation images
(:func:`normlab.training.best_learning_rate`), never on the test images: frozen BatchNorm
no longer normalizes the batch, and may want another rate. Test accuracy is measured in
eval mode. Each point is the median over seeds, the band the min–max range; the right
panel gives the paired difference (same seeds, same test images;
:func:`normlab.stats.paired_comparison`) with its 95 % interval.

Theory. At B = 2 train-mode BatchNorm on (N, D) vectors maps every feature of the two
samples to ±1 (see ``train_eval_gap``): fine-tuning in train mode then trains a function
that eval mode does not compute, and moves the running averages towards the statistics
of pairs. Frozen BatchNorm trains the function it is tested with; its statistics are those
of digits 0–4, which the recomputed variant replaces by those of the subset. At larger B
batch statistics become good estimates and train mode should catch up.

What would refute the claim that frozen BatchNorm fine-tunes better at small batches:
train mode as good as frozen at the smallest batch size (the paired interval of frozen −
train includes 0 or lies below it). The README gives the numbers of the default run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import data, nn, plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    number,
    numbers,
    seeds,
)

NAME = "frozen_batchnorm"

#: The ways of fine-tuning, in legend order.
MODES = ("train", "frozen", "frozen_recomputed")

#: The digits of the source (pretraining) task; the target task is the others.
SOURCE_CLASSES = (0, 1, 2, 3, 4)

#: The equivalence margin of the paired comparisons (a fraction: one point).
MARGIN = 0.01


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to pretrain and fine-tune. The defaults are the full figure; ``quick()`` a small one.

    Attributes
    ----------
    batch_sizes : tuple of int ≥ 2
        Fine-tuning batch sizes, each ≤ ``subset_size``.
    subset_size : int
        Training images of digits 5–9 to fine-tune on.
    epochs : int
        Passes over the subset (equal samples seen at every batch size).
    base_learning_rates : tuple of float
        Candidates at batch size 32, scaled linearly (``lr = base · B / 32``); each (way,
        batch size) fine-tunes with the best on the validation images.
    pretrain_epochs, pretrain_learning_rate : int, float
        Pretraining on digits 0–4 (batch size 32, SGD with momentum 0.9).
    seeds : tuple of int
        One pretrained network and one subset per seed.
    """

    batch_sizes: tuple[int, ...] = integers((2, 4, 8, 16), minimum=2)
    subset_size: int = integer(50, minimum=4, maximum=500)
    epochs: int = integer(20, minimum=1)
    base_learning_rates: tuple[float, ...] = numbers((0.05, 0.1, 0.2, 0.4), above=0)
    pretrain_epochs: int = integer(10, minimum=1)
    pretrain_learning_rate: float = number(0.1, above=0)
    seeds: tuple[int, ...] = seeds(5)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            batch_sizes=(2, 8),
            subset_size=32,
            epochs=10,
            base_learning_rates=(0.1, 0.2),
            pretrain_epochs=3,
            seeds=(0, 1, 2),
        )

    def validate(self) -> None:
        if max(self.batch_sizes) > self.subset_size:
            raise ValueError(
                f"batch_sizes must be ≤ subset_size={self.subset_size} (a batch is drawn from "
                f"the subset), got {max(self.batch_sizes)}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def pretrained(run: dict):
    """The network pretrained on digits 0–4 from ``run["seed"]``, in eval mode."""
    split = training.digits()
    source = np.isin(split.y_train, SOURCE_CLASSES)
    source_test = np.isin(split.y_test, SOURCE_CLASSES)
    source_split = data.DigitsSplit(
        split.x_train[source],
        split.y_train[source],
        split.x_test[source_test],
        split.y_test[source_test],
    )
    rng = np.random.default_rng(run["seed"])
    model = nn.MLP(split.num_features, 64, split.num_classes, norm="batch", rng=rng)
    training.fit(
        model,
        source_split,
        rng,
        batch_size=32,
        epochs=run["pretrain_epochs"],
        base_lr=run["pretrain_learning_rate"],
        lr_rule="constant",
    )
    return model


def target_splits(run: dict) -> tuple[data.DigitsSplit, data.DigitsSplit]:
    """(fine-tuning subset with its validation images, the same subset with the test images).

    The subset: ``subset_size`` training images of digits 5–9 drawn with ``(seed, 1)``;
    validation: the other training images of digits 5–9; test: the test images of 5–9.
    """
    split = training.digits()
    target = np.flatnonzero(~np.isin(split.y_train, SOURCE_CLASSES))
    rng = np.random.default_rng([run["seed"], 1])
    subset = rng.choice(target, run["subset_size"], replace=False)
    validation = np.setdiff1d(target, subset)
    test = ~np.isin(split.y_test, SOURCE_CLASSES)
    x_subset, y_subset = split.x_train[subset], split.y_train[subset]
    return (
        data.DigitsSplit(x_subset, y_subset, split.x_train[validation], split.y_train[validation]),
        data.DigitsSplit(x_subset, y_subset, split.x_test[test], split.y_test[test]),
    )


def fine_tune(model, mode: str, batch_size: int, base_lr: float, split, run: dict) -> dict:
    """Fine-tune a copy of ``model`` one way; :func:`normlab.training.fit`'s numbers.

    The learning rate is ``base_lr · B / 32`` (the linear rule): every batch size moves the
    weights by the same expected amount per epoch of the subset.
    """
    model = copy.deepcopy(model)
    if mode == "frozen_recomputed":
        training.recompute_batchnorm_statistics(model, split.x_train)
    rng = np.random.default_rng([run["seed"], 2, batch_size])  # the same batches every way
    return training.fit(
        model,
        split,
        rng,
        batch_size=batch_size,
        epochs=run["epochs"],
        base_lr=base_lr,
        lr_rule="linear",
        reference_batch_size=32,
        frozen_batchnorm=mode != "train",
    )


def measure_validation(run: dict) -> dict:
    """Validation accuracy of every (way, batch size) at one base learning rate and seed."""
    model = pretrained(run)
    validation, _ = target_splits(run)
    accuracy = [
        [
            fine_tune(model, mode, size, run["base_lr"], validation, run)["test_accuracy_eval"]
            for size in run["batch_sizes"]
        ]
        for mode in MODES
    ]
    return {"validation_accuracy": accuracy}  # (ways, batch sizes)


def measure_one(run: dict) -> dict:
    """Fine-tune every (way, batch size) at its chosen base learning rate; test accuracy."""
    model = pretrained(run)
    _, test = target_splits(run)
    results = {}
    for mode in MODES:
        results[mode] = []
        for size in run["batch_sizes"]:
            rate = run["chosen_learning_rates"][mode][str(size)]
            numbers = fine_tune(model, mode, size, rate, test, run)
            results[mode].append(
                {
                    "test_accuracy": numbers["test_accuracy_eval"],
                    "test_correct": numbers["test_correct"],
                    "diverged": numbers["diverged"],
                }
            )
    return results


def chosen_learning_rates(config: Config, options: SweepOptions | None) -> dict:
    """``{way: {str(batch size): base learning rate}}``, each best on the validation images."""
    validation = config.runs(base_lr="base_learning_rates", seed="seeds").measure(
        NAME, measure_validation, options
    )
    accuracy = validation.table("validation_accuracy")  # (rates, seeds, ways, batch sizes)
    return {
        mode: {
            str(size): training.best_learning_rate(config.base_learning_rates, accuracy[:, :, i, j])
            for j, size in enumerate(config.batch_sizes)
        }
        for i, mode in enumerate(MODES)
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose the learning rates, then fine-tune every (way, batch size, seed).

    Returns
    -------
    dict with
        ``config``; ``batch_sizes``; ``modes``;
        ``test_accuracy[way]``: list over batch sizes of lists over seeds (fractions);
        ``base_learning_rates[way][str(B)]``: the chosen ones (at B = 32, scaled by B/32);
        ``frozen_minus_train[way]``: for ``frozen`` and ``frozen_recomputed``, per batch
        size the paired difference against train mode (points) and its interval;
        ``diverged_runs``; ``headline``.
    """
    rates = chosen_learning_rates(config, options)
    measured = config.runs(seed="seeds", chosen_learning_rates=(rates,)).measure(
        NAME, measure_one, options
    )
    results = measured.table(None)[:, 0]  # (seeds,) of dicts

    def per_seed(mode: str, key: str) -> np.ndarray:  # (seeds, batch sizes, ...)
        return np.asarray([[one[key] for one in result[mode]] for result in results])

    accuracy = {mode: per_seed(mode, "test_accuracy").T.tolist() for mode in MODES}
    differences = {}
    for mode in MODES[1:]:
        differences[mode] = []
        for index in range(len(config.batch_sizes)):
            comparison = stats.paired_comparison(
                per_seed(mode, "test_correct")[:, index],
                per_seed("train", "test_correct")[:, index],
                margin=MARGIN,
            )
            differences[mode].append(
                {
                    "points": 100 * comparison.mean_difference,
                    "interval_points": [100 * end for end in comparison.interval],
                    "verdict": comparison.verdict,
                }
            )
    diverged = int(sum(per_seed(mode, "diverged").sum() for mode in MODES))
    return {
        "config": config.to_dict(),
        "batch_sizes": list(config.batch_sizes),
        "modes": list(MODES),
        "test_accuracy": accuracy,
        "base_learning_rates": rates,
        "frozen_minus_train": differences,
        "diverged_runs": diverged,
        "headline": _headline(config, accuracy, differences),
    }


def _headline(config: Config, accuracy: dict, differences: dict) -> dict:
    sizes = [str(size) for size in config.batch_sizes]
    median = {
        mode: dict(zip(sizes, (100 * np.median(accuracy[mode], axis=1)).tolist(), strict=True))
        for mode in MODES
    }
    smallest, largest = sizes[0], sizes[-1]
    return {
        "median_test_accuracy_percent": median,
        "smallest_batch_size": config.batch_sizes[0],
        "largest_batch_size": config.batch_sizes[-1],
        "frozen_minus_train_points_at_smallest": differences["frozen"][0]["points"],
        "frozen_minus_train_interval_at_smallest": differences["frozen"][0]["interval_points"],
        "frozen_minus_train_verdict_at_smallest": differences["frozen"][0]["verdict"],
        "frozen_minus_train_points_at_largest": differences["frozen"][-1]["points"],
        "frozen_minus_train_interval_at_largest": differences["frozen"][-1]["interval_points"],
        "frozen_minus_train_verdict_at_largest": differences["frozen"][-1]["verdict"],
        "recomputed_minus_frozen_median_points": {
            size: median["frozen_recomputed"][size] - median["frozen"][size] for size in sizes
        },
        "train_at_smallest_over_largest_points": median["train"][smallest]
        - median["train"][largest],
    }


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: The ways' looks: train mode as in ``train_eval_gap``, frozen in BatchNorm's eval colour,
#: frozen at recomputed statistics as precise BN (recomputed averages).
_LOOKS = {
    "train": ("train mode (batch statistics)", plotting.COLORS["vermillion"], "s"),
    "frozen": ("frozen (statistics of digits 0–4)", plotting.METHODS["batch"].color, "o"),
    "frozen_recomputed": (
        "frozen, statistics recomputed on the subset",
        plotting.COLORS["bluish_green"],
        "^",
    ),
}


@plotting.styled
def plot(results: dict) -> Figure:
    """Left: test accuracy against the fine-tuning batch size. Right: paired differences."""
    config = results["config"]
    sizes = np.asarray(results["batch_sizes"])
    figure, (ax_accuracy, ax_difference) = plotting.subplots(1, 2, width=15.0, height=6.4)
    for mode in results["modes"]:
        label, color, marker = _LOOKS[mode]
        plotting.plot_spread(
            ax_accuracy,
            sizes,
            100 * np.asarray(results["test_accuracy"][mode]),
            color=color,
            marker=marker,
            label=label,
        )
    plotting.log2_axis(ax_accuracy, sizes, label="fine-tuning batch size B")
    ax_accuracy.set_ylabel("test accuracy on digits 5–9 (%)")
    ax_accuracy.set_title(f"fine-tuned on {config['subset_size']} images of digits 5–9")
    ax_accuracy.legend(loc="lower right", fontsize=12)

    offsets = {"frozen": 0.96, "frozen_recomputed": 1.04}  # side by side on the log axis
    for mode, shift in offsets.items():
        label, color, marker = _LOOKS[mode]
        rows = results["frozen_minus_train"][mode]
        points = np.asarray([row["points"] for row in rows])
        low, high = np.asarray([row["interval_points"] for row in rows]).T
        ax_difference.errorbar(
            sizes * shift,
            points,
            yerr=[points - low, high - points],
            color=color,
            marker=marker,
            linestyle="none",
            capsize=4,
            label=f"{label} − train mode",
        )
    ax_difference.axhline(0, color=plotting.REFERENCE_COLOR, linewidth=1.4)
    plotting.log2_axis(ax_difference, sizes, label="fine-tuning batch size B")
    ax_difference.set_ylabel("difference in test accuracy (points)")
    ax_difference.set_title("paired against train mode (95 % interval)")
    ax_difference.legend(loc="upper right", fontsize=12)

    spread = plotting.spread_caption(len(config["seeds"]), form="center_of")
    plotting.set_title(
        figure,
        "Fine-tuning with small batches: BatchNorm in train mode or frozen?",
        f"Digits MLP with BatchNorm pretrained on digits 0–4 ({config['pretrain_epochs']} "
        f"epochs), then fine-tuned on {config['subset_size']} images of digits 5–9 for "
        f"{config['epochs']} epochs (SGD with momentum 0.9, lr = base·B/32 with the base "
        "chosen per way and B on the other training images of 5–9), tested on the test images "
        "of 5–9 in "
        f"eval mode. {spread[0].upper()}{spread[1:]}; one subset per seed.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """Accuracy of each way at each batch size, the paired verdicts, in words from the numbers."""
    headline = results["headline"]
    sizes = [str(size) for size in results["batch_sizes"]]
    median = headline["median_test_accuracy_percent"]
    lines = [
        "test accuracy on digits 5–9 (%), median over seeds, by fine-tuning batch size",
        f"  {'':46s}" + "".join(f"{'B = ' + size:>9s}" for size in sizes),
    ]
    for mode in results["modes"]:
        label = _LOOKS[mode][0]
        lines.append(f"  {label:46s}" + "".join(f"{median[mode][size]:9.1f}" for size in sizes))
    for mode in results["modes"][1:]:
        lines.append(f"{_LOOKS[mode][0]} − train mode, paired (95 % interval):")
        for size, row in zip(sizes, results["frozen_minus_train"][mode], strict=True):
            low, high = row["interval_points"]
            phrase = stats.verdict_phrase(row["verdict"], "train mode")
            lines.append(
                f"  B = {size:>3s}: {row['points']:+6.1f} points ({low:+.1f} to {high:+.1f}): "
                f"{phrase}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

_SLIDE_LABELS = {
    "train": "BatchNorm in train mode",
    "frozen": "frozen: the pretraining statistics",
    "frozen_recomputed": "frozen after recomputing on the new images",
}

#: Who is ahead by a paired verdict of frozen minus train mode.
_AHEAD = {"better": "frozen BatchNorm", "worse": "train mode"}


def _frozen_title(results: dict) -> str:
    """Frozen against train mode at the smallest and the largest batch size, by the verdicts."""
    comparisons = results["frozen_minus_train"]["frozen"]  # the verdicts, paired
    sizes = results["batch_sizes"]
    median = {mode: 100 * np.median(results["test_accuracy"][mode], axis=1) for mode in MODES}
    phrases = []
    for index in dict.fromkeys((0, len(sizes) - 1)):  # once when there is one batch size
        verdict = comparisons[index]["verdict"]
        points = median["frozen"][index] - median["train"][index]  # as drawn
        where = f"at batch size {sizes[index]}" if not phrases else f"at {sizes[index]}"
        if verdict in _AHEAD:
            ahead = "is ahead by" if not phrases else "by"
            phrases.append(f"{where}, {_AHEAD[verdict]} {ahead} {abs(points):.0f} points")
        else:
            phrases.append(f"{where}, neither is clearly ahead")
    return "Fine-tuning " + "; ".join(phrases)


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: test accuracy after fine-tuning against batch size, train mode and frozen."""
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    figure, ax = plotting.slide_figure(
        _frozen_title(results),
        f"trained on digits 0–4, then on {config['subset_size']} images of 5–9; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    for mode in results["modes"]:
        _, color, marker = _LOOKS[mode]
        plotting.plot_spread(
            ax,
            batch_sizes,
            100 * np.asarray(results["test_accuracy"][mode]),
            color=color,
            marker=marker,
            label=_SLIDE_LABELS[mode],
        )
    plotting.log2_axis(ax, batch_sizes, label="fine-tuning batch size")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left", frameon=True, edgecolor="none")
    return [("fine_tuning", figure)]
