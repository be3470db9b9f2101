"""Digits MLP test accuracy against batch size: no norm, BatchNorm, LayerNorm, RMSNorm, GroupNorm.

The question: does BatchNorm lose accuracy when the batch gets small while the
batch-free normalizations (LayerNorm, RMSNorm, GroupNorm) do not? This is the
small-scale analogue of Wu & He (2018, "Group Normalization", Figure 1): on
ImageNet, ResNet-50's BatchNorm error grows from 23.6 % to 34.7 % as the batch
per GPU shrinks from 32 to 2 images, while GroupNorm stays near 24 %.

Theory. BatchNorm normalizes each feature by the mean and variance of the
current batch. With B samples these are noisy estimates (their relative error
falls like 1/√B, see ``batch_stat_noise``), so at small B each sample's output
is jittered by its batch-mates, training sees a noisier function, and the
running averages used at test time estimate statistics that training never
used exactly. LayerNorm, RMSNorm and GroupNorm take their statistics within
one sample, so nothing in their forward pass depends on B; only the optimizer
sees the batch size.

Setup. An MLP ``64 → 64 → 64 → 10`` (``Linear → norm → ReLU`` twice, then a
linear head; :class:`normlab.nn.MLP`) on scikit-learn's digits (1347 training,
450 test images; :func:`normlab.data.load_digits_split`), trained with SGD with
momentum 0.9 and cross-entropy. Two budgets: the same number of epochs at every
batch size (the default: EQUAL SAMPLES SEEN, so B = 2 takes 64 times as many steps
as B = 128), or, with ``budget_steps``, the same number of optimizer steps at every
batch size (EQUAL STEPS, so a large batch sees more samples). Test accuracy is
measured in eval mode (BatchNorm uses its running averages).

Learning rates are chosen per method AND per batch size on a validation split carved
from the training images (:func:`normlab.training.digits`; the test images take no
part): at each (method, B) the candidates are ``factor · lr_rule(B)`` for each of
``lr_factors``, where the rule is the training setup's (the linear scaling rule
``lr = 0.1 · B/32`` by default, which for SGD keeps the expected displacement per
epoch fixed, and which Wu & He used), and the candidate with the best mean
validation accuracy over ``tuning_seeds`` is trained on the full training split.
So no method is judged at a learning rate that suits another: the unnormalized
network, which tolerates a narrower range of rates, gets its own. The same seed gives
every method the same initial Linear weights and the same order of the samples.

Each comparison is paired: the same seeds and the same 450 test images for both
methods, with a hierarchical bootstrap interval over seeds and test images
(:func:`normlab.stats.paired_comparison`), so the test set's own noise (one run's
binomial standard error is about 0.8 points at 97 %) is inside the interval. The
headline gives, for each method, its best batch size and the drop in test accuracy
from there to the smallest batch size; each method's difference to LayerNorm at
every B with its interval; and the smallest batch size from which on BatchNorm is
"as good as" LayerNorm, two-sided: the whole interval of the difference inside
±1 point at that B and at every larger one.

Why the smallest batches may behave differently for vectors than for images: with two
samples per batch, every BatchNorm feature of an (N, D) input is exactly −1 for one
sample and +1 for the other (x − mean = ±d/2 and std = d/2), so the network trains on
"which of the two is larger", feature by feature, and is tested on continuous values
(``train_eval_gap`` measures whether recomputing the running averages repairs this).
In a CNN each statistic averages B·H·W values (``group_norm_curve`` trains one). The
README gives the numbers of the default run.

What would refute the claim: BatchNorm at the smallest batch size not worse than
LayerNorm there (the paired interval of the difference reaching 0), or a batch-free
normalization losing as much as BatchNorm from its best batch size to the smallest
(then the loss is not BatchNorm's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    integers,
    measure_together,
    numbers,
    seeds,
    setup,
)
from normlab.layers import NORM_KINDS
from normlab.training import TrainingSetup

NAME = "accuracy_vs_batch_size"

#: The methods compared, in legend order (keys of ``plotting.METHODS``).
METHODS = ("none", "batch", "layer", "rms", "group")

#: The equivalence margin (points) of "as good as": the whole paired interval of the
#: difference lies within ± this.
MARGIN_POINTS = 1.0


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    norms : tuple of str
        The normalizations compared (see :func:`normlab.make_norm`).
    batch_sizes : tuple of int
        Training batch sizes; BatchNorm needs ≥ 2.
    seeds : tuple of int
        One training run per (norm, batch size, seed).
    training : TrainingSetup
        Epochs (the samples budget, equal for every batch size), width, depth,
        optimizer and the learning-rate rule the candidates are scaled from.
    lr_factors : tuple of float
        The learning rates tried at each (norm, batch size), as multiples of the rule's.
    tuning_seeds : tuple of int
        Seeds of the validation runs that choose the learning rate.
    budget_steps : int or None
        None: equal epochs (``training.epochs``) at every batch size; an integer: that
        many optimizer steps at every batch size instead (equal steps).
    """

    norms: tuple[str, ...] = choices(METHODS, NORM_KINDS)
    batch_sizes: tuple[int, ...] = integers((2, 4, 8, 16, 32, 64, 128), minimum=1)
    seeds: tuple[int, ...] = seeds(5)
    training: TrainingSetup = setup(TrainingSetup)
    lr_factors: tuple[float, ...] = numbers((0.25, 1.0, 4.0), above=0)
    tuning_seeds: tuple[int, ...] = integers((0,), minimum=0)
    budget_steps: int | None = integer(None, minimum=1, allow_none=True)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            norms=("batch", "layer"),
            batch_sizes=(2, 32),
            seeds=(0, 1),
            training=TrainingSetup(epochs=1),
            lr_factors=(1.0, 4.0),
        )

    def validate(self) -> None:
        training.check_training_batch_sizes(
            self.batch_sizes, trains_batchnorm="batch" in self.norms
        )

    def concerns(self) -> list[str]:
        if self.budget_steps is None:
            return self.training.few_steps(self.batch_sizes)
        if self.budget_steps < training.MIN_TRAINING_STEPS:
            return [
                f"budget_steps={self.budget_steps} is fewer than "
                f"{training.MIN_TRAINING_STEPS} steps: the accuracies say little"
            ]
        return []

    def budget(self) -> str:
        """The budget in words, for captions: equal epochs or equal steps."""
        if self.budget_steps is None:
            epochs = self.training.epochs
            samples = sorted({self.training.samples_seen(size) for size in self.batch_sizes})
            seen = f"{samples[0]:,}" if len(samples) == 1 else f"{samples[0]:,}–{samples[-1]:,}"
            return (
                f"equal samples seen: {epochs} epoch{'s' * (epochs != 1)} at every B "
                f"({seen} samples seen)"
            )
        return f"equal steps ({self.budget_steps:,} at every B)"


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_one(run: dict) -> dict:
    """One training run: the norm, batch size, seed and learning-rate factor of ``run``.

    The learning rate is ``lr_factor`` times the training setup's rule at the batch size;
    ``evaluation="validation"`` trains on the smaller split and measures on its validation
    images; ``budget_steps`` (if not None) replaces the epochs.
    """
    options = dict(run["training"])
    options["base_lr"] = run["lr_factor"] * options["base_lr"]
    trained = training.train_mlp(
        norm=run["norm"],
        batch_size=run["batch_size"],
        seed=run["seed"],
        steps=run["budget_steps"],
        evaluation=run["evaluation"],
        **options,
    )
    keep = (
        "test_accuracy_eval",
        "test_correct",
        "train_accuracy_eval",
        "steps",
        "samples_seen",
        "learning_rate",
        "diverged",
    )
    return {key: trained[key] for key in keep}


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose each (norm, B)'s learning rate on validation, then train every seed.

    Returns
    -------
    dict with
        ``config``; ``batch_sizes``; ``norms``;
        ``test_accuracy[norm]``, ``train_accuracy[norm]``: lists over batch
        sizes of lists over seeds (eval mode, fractions);
        ``lr_factor[norm]``, ``chosen_learning_rate[norm]``: the chosen ones, per batch size;
        ``learning_rate``: the rule's rate per batch size (factor 1), as the candidates'
        reference;
        ``validation_accuracy[norm]``: per batch size, per factor (mean over tuning seeds);
        ``steps``, ``samples_seen``: lists over batch sizes;
        ``minus_layer[norm][B]``: the paired difference to LayerNorm in points
        (``mean``, ``interval``, ``verdict``);
        ``diverged_runs``: how many runs hit a non-finite loss;
        ``budget``, ``training_description``: the setup in words;
        ``headline``: the numbers quoted in the README.
    """
    tuning = config.runs(
        evaluation=("validation",),
        norm="norms",
        batch_size="batch_sizes",
        lr_factor="lr_factors",
        seed="tuning_seeds",
    )
    (tuned,) = measure_together(NAME, measure_one, [tuning], options)
    # (1, norms, batch sizes, factors, tuning seeds) -> mean over the tuning seeds
    validation = tuned.table("test_accuracy_eval")[0].mean(axis=3)
    chosen = np.asarray(config.lr_factors)[np.argmax(validation, axis=2)]  # (norms, B)
    parts = [
        config.runs(
            evaluation=("test",),
            norm=(norm,),
            batch_size=(size,),
            lr_factor=(float(chosen[i, j]),),
            seed="seeds",
        )
        for i, norm in enumerate(config.norms)
        for j, size in enumerate(config.batch_sizes)
    ]
    measured = measure_together(NAME, measure_one, parts, options)

    def table(key: str) -> np.ndarray:
        """(norms, batch sizes, seeds, ...) of one measured key."""
        rows = [part.table(key)[0, 0, 0, 0] for part in measured]  # (seeds, ...) each
        array = np.asarray(rows)
        return array.reshape(len(config.norms), len(config.batch_sizes), *array.shape[1:])

    test_accuracy, correct = table("test_accuracy_eval"), table("test_correct")
    learning_rate = table("learning_rate")[:, :, 0]  # (norms, B)
    results = {
        "config": config.to_dict(),
        "norms": list(config.norms),
        "batch_sizes": list(config.batch_sizes),
        "test_accuracy": dict(zip(config.norms, test_accuracy.tolist(), strict=True)),
        "train_accuracy": dict(
            zip(config.norms, table("train_accuracy_eval").tolist(), strict=True)
        ),
        "lr_factor": dict(zip(config.norms, chosen.tolist(), strict=True)),
        "chosen_learning_rate": dict(zip(config.norms, learning_rate.tolist(), strict=True)),
        "learning_rate": [
            training.learning_rate(
                config.training.lr_rule,
                config.training.base_lr,
                size,
                config.training.reference_batch_size,
            )
            for size in config.batch_sizes
        ],
        "validation_accuracy": dict(zip(config.norms, validation.tolist(), strict=True)),
        "steps": table("steps")[0, :, 0].tolist(),
        "samples_seen": table("samples_seen")[0, :, 0].tolist(),
        "minus_layer": _minus_layer(config, correct),
        "diverged_runs": int(table("diverged").sum()),
        "budget": config.budget(),
        "training_description": _describe(config),
    }
    results["headline"] = _headline(config, test_accuracy, results)
    return results


def _describe(config: Config) -> str:
    setup = config.training
    optimizer = f"SGD, momentum {setup.momentum:g}" if setup.optimizer == "sgd" else "Adam"
    factors = ", ".join(f"{factor:g}" for factor in config.lr_factors)
    return (
        f"MLP 64→{setup.hidden}×{setup.depth}→10 on digits; {optimizer}; lr per method and B "
        f"chosen on a validation split from ({factors}) × {setup.lr_formula()}; "
        f"{config.budget()}"
    )


def _minus_layer(config: Config, correct: np.ndarray) -> dict:
    """Each method minus LayerNorm at every batch size, paired, in points."""
    if "layer" not in config.norms:
        return {}
    layer = correct[config.norms.index("layer")]  # (B, seeds, test images)
    return {
        norm: {
            str(size): _compare(correct[i, j], layer[j])
            for j, size in enumerate(config.batch_sizes)
        }
        for i, norm in enumerate(config.norms)
        if norm != "layer"
    }


def _compare(values: np.ndarray, reference: np.ndarray) -> dict:
    result = stats.paired_comparison(values, reference, margin=MARGIN_POINTS / 100)
    return {
        "mean": 100 * result.mean_difference,
        "interval": [100 * bound for bound in result.interval],
        "verdict": result.verdict,
    }


def _headline(config: Config, test_accuracy: np.ndarray, results: dict) -> dict:
    batch_sizes = list(config.batch_sizes)
    smallest = min(batch_sizes)
    median_percent = 100 * np.median(test_accuracy, axis=2)  # (norms, batch sizes)
    per_method = {}
    for norm, medians, accuracies in zip(config.norms, median_percent, test_accuracy, strict=True):
        best = int(np.argmax(medians))
        at_smallest = float(medians[batch_sizes.index(smallest)])
        worst_seed = 100 * float(np.min(accuracies[batch_sizes.index(smallest)]))
        per_method[norm] = {
            "best_batch_size": batch_sizes[best],
            "best_median_test_accuracy_percent": float(medians[best]),
            "median_test_accuracy_percent_at_smallest_batch": at_smallest,
            "drop_from_best_to_smallest_batch_points": float(medians[best]) - at_smallest,
            "worst_seed_test_accuracy_percent_at_smallest_batch": worst_seed,
            "learning_rate_at_smallest_batch": results["chosen_learning_rate"][norm][
                batch_sizes.index(smallest)
            ],
        }
    headline = {
        "smallest_batch_size": smallest,
        "per_method": per_method,
        "diverged_runs": results["diverged_runs"],
        "minus_layer_verdict": {
            norm: {size: one["verdict"] for size, one in per_size.items()}
            for norm, per_size in results["minus_layer"].items()
        },
    }
    if "batch" in config.norms and "layer" in config.norms:
        versus = results["minus_layer"]["batch"]
        headline["layer_minus_batch_points"] = {size: -one["mean"] for size, one in versus.items()}
        headline["batch_minus_layer_interval_points"] = {
            size: one["interval"] for size, one in versus.items()
        }
        headline["batch_minus_layer_verdict"] = {
            size: one["verdict"] for size, one in versus.items()
        }
        headline["batch_as_good_as_layer_from_batch_size"] = _first_from_which_on(
            batch_sizes,
            np.array([versus[str(size)]["verdict"] == "as good as" for size in batch_sizes]),
        )
        headline["batch_worse_than_layer_at"] = [
            size for size in batch_sizes if versus[str(size)]["verdict"] == "worse"
        ]
    return headline


def _first_from_which_on(batch_sizes: list[int], condition: np.ndarray) -> int | None:
    """The smallest batch size such that ``condition`` holds there and at every larger one."""
    order = np.argsort(batch_sizes)
    answer = None
    for index in order[::-1]:
        if not condition[index]:
            break
        answer = batch_sizes[index]
    return answer


def summary(results: dict) -> str:
    """The numbers of the figure as text: accuracy, chosen learning rate, the difference to LN."""
    sizes = results["batch_sizes"]
    lines = [
        results["training_description"],
        f"\nmean test accuracy (%) over seeds {results['config']['seeds']}, eval mode",
        f"{'B':20s}" + "".join(f"{size:>8d}" for size in sizes),
    ]
    for norm in results["norms"]:
        means = 100 * np.mean(results["test_accuracy"][norm], axis=1)
        lines.append(
            f"{plotting.method_label(norm):20s}" + "".join(f"{value:8.1f}" for value in means)
        )
    lines.append(f"{'steps':20s}" + "".join(f"{steps:>8d}" for steps in results["steps"]))
    lines.append("\nlearning rate chosen on validation")
    for norm in results["norms"]:
        rates = results["chosen_learning_rate"][norm]
        lines.append(
            f"{plotting.method_label(norm):20s}" + "".join(f"{rate:8.3g}" for rate in rates)
        )
    if results["minus_layer"]:
        lines.append("\nminus LayerNorm (points), paired 95 % interval [low, high]")
        for norm, per_size in results["minus_layer"].items():
            cells = []
            for size in sizes:
                one = per_size[str(size)]
                low, high = one["interval"]
                cells.append(f"B={size}: {one['mean']:+.1f} [{low:+.1f}, {high:+.1f}]")
            lines.append(f"{plotting.method_label(norm):20s}" + "; ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Test accuracy, the paired difference to LayerNorm, and the chosen learning rate."""
    batch_sizes = np.asarray(results["batch_sizes"])
    config = results["config"]
    figure, (ax_test, ax_difference, ax_lr) = plotting.subplots(
        1, 3, width=21.0, height=6.8, gridspec_kw={"width_ratios": [1.15, 1.15, 0.8]}
    )
    for norm in results["norms"]:
        looks = plotting.method_style(norm)
        plotting.plot_spread(
            ax_test,
            batch_sizes,
            100 * np.asarray(results["test_accuracy"][norm]),
            color=looks["color"],
            marker=looks["marker"],
            label=looks["label"],
            center="mean",
        )
        ax_lr.plot(
            batch_sizes,
            results["chosen_learning_rate"][norm],
            color=looks["color"],
            marker=looks["marker"],
            label=looks["label"],
        )
    for offset, (norm, per_size) in enumerate(results["minus_layer"].items()):
        looks = plotting.method_style(norm)
        means = np.array([per_size[str(size)]["mean"] for size in batch_sizes])
        intervals = np.array([per_size[str(size)]["interval"] for size in batch_sizes])
        nudge = 1.04 ** (offset - (len(results["minus_layer"]) - 1) / 2)  # side by side
        ax_difference.errorbar(
            batch_sizes * nudge,
            means,
            yerr=[means - intervals[:, 0], intervals[:, 1] - means],
            color=looks["color"],
            marker=looks["marker"],
            capsize=4,
            label=looks["label"],
        )
    ax_difference.axhline(0.0, color=plotting.REFERENCE_COLOR, linewidth=1.4)
    for bound in (-MARGIN_POINTS, MARGIN_POINTS):
        ax_difference.axhline(bound, color=plotting.REFERENCE_COLOR, linestyle=":", lw=1.2)
    ax_difference.set_yscale("symlog", linthresh=2.0)
    plotting.plain_log_labels(ax_difference.yaxis)
    for ax in (ax_test, ax_difference, ax_lr):
        plotting.log2_axis(ax, batch_sizes, label="batch size B (training)")
    ax_test.set_ylabel("test accuracy (%), eval mode")
    ax_test.set_title("accuracy on the 450 test images")
    ax_difference.set_ylabel("minus LayerNorm (points, symlog)")
    ax_difference.set_title("difference to LayerNorm, paired 95 % interval")
    ax_lr.set_yscale("log")
    plotting.plain_log_labels(ax_lr.yaxis)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate chosen on validation")
    lowest = min(100 * np.min(results["test_accuracy"][norm]) for norm in results["norms"])
    ax_test.set_ylim(max(0.0, 5 * np.floor(lowest / 5) - 2), 100.5)
    # one batch size: the points sit mid-panel, so let the legend find free space
    ax_test.legend(loc="lower right" if len(batch_sizes) > 1 else "best")
    diverged = results["diverged_runs"]
    steps = results["steps"]
    budget = f"{steps[0]:,} step{'s' * (steps[0] != 1)} at B = {batch_sizes[0]}"
    if len(batch_sizes) > 1:
        budget += f", {steps[-1]:,} at B = {batch_sizes[-1]}"
    spread = plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of")
    plotting.set_title(
        figure,
        "Does accuracy fall at small batch sizes? (digits MLP; cf. Wu & He 2018, Fig. 1)",
        f"{results['training_description']} ({budget}). {spread[0].upper()}{spread[1:]}. "
        "Intervals: hierarchical bootstrap over seeds and test images; dotted: "
        f"±{MARGIN_POINTS:g} point." + (f" {diverged} run(s) diverged." if diverged else ""),
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The normalizations that take no statistic over the batch.
_BATCH_FREE = ("layer", "rms", "group")


def accuracy_drops(results: dict) -> dict[str, float]:
    """Each method's drop in median test accuracy (points) from its best batch size to the smallest.

    The slide's title quotes these; they equal the headline's ``drop_from_best_to_smallest``.
    """
    drops = {}
    for norm in results["norms"]:
        median = 100 * np.median(results["test_accuracy"][norm], axis=1)  # (batch sizes,)
        drops[norm] = float(np.max(median) - median[0])
    return drops


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: test accuracy against batch size, BatchNorm against the batch-free norms."""
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    smallest = batch_sizes[0]
    drops = accuracy_drops(results)
    batch_free = [norm for norm in results["norms"] if norm in _BATCH_FREE]
    verdict = results["minus_layer"].get("batch", {}).get(str(smallest), {}).get("verdict")
    if "batch" in drops and batch_free and verdict == "worse":
        others = max(drops[norm] for norm in batch_free)
        names = plotting.word_list([plotting.method_label(norm) for norm in batch_free])
        lose = "loses" if len(batch_free) == 1 else "lose"
        if drops["batch"] > others:
            title = (
                f"At batch size {smallest}, BatchNorm loses {drops['batch']:.0f} points of test "
                f"accuracy; {names} {lose} at most {others:.1f}"
            )
        else:
            title = f"At batch size {smallest}, BatchNorm is worse than LayerNorm"
    else:
        title = "Test accuracy against batch size, each method at its own learning rate"
    figure, ax = plotting.slide_figure(
        title,
        "digits MLP, learning rate tuned for each; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    for norm in results["norms"]:
        look = plotting.method_style(norm)
        plotting.plot_spread(
            ax, batch_sizes, 100 * np.asarray(results["test_accuracy"][norm]), **look
        )
    plotting.log2_axis(ax, batch_sizes, label="batch size")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    return [("accuracy", figure)]
