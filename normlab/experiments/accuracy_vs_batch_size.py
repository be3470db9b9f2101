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
momentum 0.9 and cross-entropy, for the same number of epochs at every batch
size: EQUAL SAMPLES SEEN, so B = 2 takes 64 times as many steps as B = 128.
Test accuracy is measured in eval mode (BatchNorm uses its running averages).

The learning-rate rule is the linear scaling rule ``lr = base_lr · B / B_ref``
(``base_lr = 0.1``, ``B_ref = 32``), kept constant during training. Why this
rule: for SGD, one epoch moves the weights by ``-(lr / B)`` times the sum of
the per-sample gradients, so a fixed ``lr / B`` gives the same expected change
per epoch at every batch size, which is what "equal samples seen" compares;
it is also the rule Wu & He used (after Goyal et al. 2017), so the comparison
with their figure is like for like. The same seed gives every method the same
initial Linear weights and the same order of the training samples.

Each point is the median over seeds and the band the min–max range. The
headline gives, for each method, its best batch size and the drop in test
accuracy from there to the smallest batch size, and the smallest batch size
from which on BatchNorm is within one point of LayerNorm.

Why the smallest batches may behave differently for vectors than for images: with two
samples per batch, every BatchNorm feature of an (N, D) input is exactly −1 for one
sample and +1 for the other (x − mean = ±d/2 and std = d/2), so the network trains on
"which of the two is larger", feature by feature, and is tested on continuous values
(``train_eval_gap`` measures whether recomputing the running averages repairs this).
In a CNN each statistic averages B·H·W values, so two images per GPU are far from this
degenerate case. The unnormalized MLP runs at the learning rates chosen for the
normalized networks, which it may not tolerate at every batch size; its bands show it.
The README gives the numbers of the default run.

What would refute the claim: BatchNorm's median accuracy at the smallest batch size no
lower than LayerNorm's by more than the spread over seeds (then BatchNorm does not lose
at small batches here), or a batch-free normalization losing as much as BatchNorm from
its best batch size to the smallest (then the loss is not BatchNorm's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import plotting, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integers,
    seeds,
    setup,
)
from normlab.layers import NORM_KINDS
from normlab.training import TrainingSetup

NAME = "accuracy_vs_batch_size"

#: The methods compared, in legend order (keys of ``plotting.METHODS``).
METHODS = ("none", "batch", "layer", "rms", "group")

#: "Within one point": BatchNorm's median test accuracy at most this many
#: percentage points below LayerNorm's.
WITHIN_POINTS = 1.0


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
        optimizer and learning-rate rule.
    """

    norms: tuple[str, ...] = choices(METHODS, NORM_KINDS)
    batch_sizes: tuple[int, ...] = integers((2, 4, 8, 16, 32, 64, 128), minimum=1)
    seeds: tuple[int, ...] = seeds(3)
    training: TrainingSetup = setup(TrainingSetup)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            norms=("batch", "layer"),
            batch_sizes=(2, 32),
            seeds=(0, 1),
            training=TrainingSetup(epochs=1),
        )

    def validate(self) -> None:
        training.check_training_batch_sizes(
            self.batch_sizes, trains_batchnorm="batch" in self.norms
        )

    def concerns(self) -> list[str]:
        return self.training.few_steps(self.batch_sizes)


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_one(run: dict) -> dict:
    """One training run: the norm, batch size and seed of ``run``, trained by its setup."""
    return training.train_mlp(
        norm=run["norm"], batch_size=run["batch_size"], seed=run["seed"], **run["training"]
    )


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train every (norm, batch size, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``batch_sizes``; ``norms``;
        ``test_accuracy[norm]``, ``train_accuracy[norm]``: lists over batch
        sizes of lists over seeds (eval mode, fractions);
        ``steps``, ``samples_seen``, ``learning_rate``: lists over batch sizes;
        ``diverged_runs``: how many runs hit a non-finite loss;
        ``training_description``: the setup in one line;
        ``headline``: the numbers quoted in the README.
    """
    runs = config.runs(norm="norms", batch_size="batch_sizes", seed="seeds")
    table = runs.measure(NAME, measure_one, options).table  # (norms, batch sizes, seeds)

    test_accuracy, train_accuracy = table("test_accuracy_eval"), table("train_accuracy_eval")
    first_norm_first_seed = table("steps")[0, :, 0], table("samples_seen")[0, :, 0]
    return {
        "config": config.to_dict(),
        "norms": list(config.norms),
        "batch_sizes": list(config.batch_sizes),
        "test_accuracy": dict(zip(config.norms, test_accuracy.tolist(), strict=True)),
        "train_accuracy": dict(zip(config.norms, train_accuracy.tolist(), strict=True)),
        "steps": first_norm_first_seed[0].tolist(),
        "samples_seen": first_norm_first_seed[1].tolist(),
        "learning_rate": table("learning_rate")[0, :, 0].tolist(),
        "diverged_runs": int(table("diverged").sum()),
        "training_description": config.training.describe(config.batch_sizes),
        "headline": _headline(config, test_accuracy, table("diverged")),
    }


def _headline(config: Config, test_accuracy: np.ndarray, diverged: np.ndarray) -> dict:
    batch_sizes = list(config.batch_sizes)
    smallest = min(batch_sizes)
    median_percent = 100 * np.median(test_accuracy, axis=2)  # (norms, batch sizes)
    per_method = {}
    for norm, medians in zip(config.norms, median_percent, strict=True):
        best = int(np.argmax(medians))
        at_smallest = float(medians[batch_sizes.index(smallest)])
        per_method[norm] = {
            "best_batch_size": batch_sizes[best],
            "best_median_test_accuracy_percent": float(medians[best]),
            "median_test_accuracy_percent_at_smallest_batch": at_smallest,
            "drop_from_best_to_smallest_batch_points": float(medians[best]) - at_smallest,
        }
    headline = {
        "smallest_batch_size": smallest,
        "per_method": per_method,
        "diverged_runs": int(diverged.sum()),
    }
    if "batch" in config.norms and "layer" in config.norms:
        gap = (
            median_percent[config.norms.index("layer")]
            - median_percent[config.norms.index("batch")]
        )
        headline["layer_minus_batch_points"] = {
            str(size): float(points) for size, points in zip(batch_sizes, gap, strict=True)
        }
        headline["batch_within_1_point_of_layer_from_batch_size"] = _first_from_which_on(
            batch_sizes, gap <= WITHIN_POINTS
        )
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


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Test and training accuracy against batch size, one line per method, log₂ x-axis."""
    batch_sizes = np.asarray(results["batch_sizes"])
    config = results["config"]
    figure, (ax_test, ax_train) = plotting.subplots(1, 2, width=14.0, height=6.4, sharey=True)
    for ax, key, title in (
        (ax_test, "test_accuracy", "test set (450 images)"),
        (ax_train, "train_accuracy", "training set (1347 images)"),
    ):
        for norm in results["norms"]:
            looks = plotting.method_style(norm)
            plotting.plot_spread(
                ax,
                batch_sizes,
                100 * np.asarray(results[key][norm]),
                color=looks["color"],
                marker=looks["marker"],
                label=looks["label"],
            )
        plotting.log2_axis(ax, batch_sizes, label="batch size B (training)")
        ax.set_title(f"accuracy on the {title}, eval mode")
    ax_test.set_ylabel("accuracy (%)")
    lowest = min(
        100 * np.min(results[key][norm])
        for key in ("test_accuracy", "train_accuracy")
        for norm in results["norms"]
    )
    ax_test.set_ylim(max(0.0, 5 * np.floor(lowest / 5) - 2), 101)
    # one batch size: the points sit mid-panel, so let the legend find free space
    ax_test.legend(loc="lower right" if len(batch_sizes) > 1 else "best")
    diverged = results["diverged_runs"]
    first_steps = results["steps"][0]
    steps = f"{first_steps:,} step{'s' * (first_steps != 1)} at B = {batch_sizes[0]}"
    if len(batch_sizes) > 1:
        budget = "equal samples seen, so small B takes more steps"
        steps += f", {results['steps'][-1]:,} at B = {batch_sizes[-1]}"
    else:
        budget = "one batch size"
    spread = plotting.spread_caption(len(config["seeds"]), form="center_of")
    plotting.set_title(
        figure,
        "Does accuracy fall at small batch sizes? (digits MLP; cf. Wu & He 2018, Fig. 1)",
        f"{results['training_description']}: {budget} ({steps}). "
        f"{spread[0].upper()}{spread[1:]}." + (f" {diverged} run(s) diverged." if diverged else ""),
    )
    return figure
