"""Wu & He's Figure 1 on a digits CNN: error against images per device for five normalizations.

The question: Wu & He (2018, "Group Normalization", Figure 1) trained ResNet-50 on
ImageNet on 8 GPUs with N images each, BatchNorm normalizing each GPU's N images, at the
rule ``lr = 0.1 · N/32``: BatchNorm's error rose from 23.6 % at N = 32 to 34.7 % at N = 2,
while GroupNorm stayed near 24.1 %. Does a small CNN on the digits show that shape, for
BatchNorm against GroupNorm, LayerNorm, InstanceNorm and no normalization?

Setup. The digits CNN (``Conv2d(3×3) → norm → ReLU → MaxPool2d(2)`` per block, a global
average pool, a linear head; :class:`normlab.nn.CNN`) on the 8×8 images (1347 training,
450 test), trained with SGD (momentum 0.9) on ``devices`` simulated devices with N
images each: the SGD batch is ``devices · N``, and BatchNorm normalizes each device's
N images (per-device BatchNorm, PyTorch DDP's default), computed as ghost batches of N
on one device, which is exactly what :func:`normlab.parallel.data_parallel_step` with
per-device BatchNorm computes (tests/test_parallel.py); the running averages are the
mean over the devices of their running averages. Not 8 devices as in the paper: with
1347 training images, 8 devices of 32 would leave 5 steps per epoch. Every N trains
for the same number of epochs (equal samples seen; N = 2 takes 16 times the steps of
N = 32). The methods, as Wu & He define them on (N, H, W, C) feature maps:

* BatchNorm: per channel, over the device's N images and all H·W positions;
* GroupNorm: per image, over H·W and a group of C/G channels
  (G = :func:`normlab.layers.default_num_groups`, groups of ≥ 4 channels; the paper's
  G = 32 needs wider layers);
* LayerNorm: per image, over all of H, W and C (``GroupNorm`` with one group, as in the
  paper; normlab's ``norm="layer"`` on images normalizes each position's channels, which
  is a different layer);
* InstanceNorm: per image and channel, over H·W (with γ and β, as the others);
* no normalization.

Learning rates: the paper's rule ``lr = base · N/32``, with ``base`` chosen per method
on a validation split carved from the training images, at N = 32, from
``base_learning_rates``, as the best mean validation accuracy over ``tuning_seeds``.
The test images take no part in any choice.

The published numbers are drawn beside ours for the shape (:data:`PAPER_ERROR_PERCENT`:
data typed from the paper, not results of this code). Error is in percent on a log axis,
as in the paper, with images per device decreasing to the right.

Theory. BatchNorm's statistic for one channel averages N·H·W values, which are
correlated within an image (``batch_stat_noise`` measures how much less than N·H·W they
are worth), so at N = 2 the CNN's statistics are far less noisy than the MLP's two
values per feature, and the loss may be small at this scale. The batch-free norms see no
N in their forward pass: only the learning rate and the number of steps change with N.

What would refute the paper's shape here: BatchNorm's error at the smallest N no higher
than at N = 32 (the paired interval of the difference reaching 0 or below), or GroupNorm's
error rising from N = 32 to the smallest N as much as BatchNorm's (then the rise is the
learning-rate rule's or the budget's, not BatchNorm's). The README gives the numbers of
the default run.
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
)

NAME = "group_norm_curve"

#: The methods, in legend order (keys of ``plotting.METHODS``).
METHODS = ("batch", "group", "layer", "instance", "none")

#: How each method is built in the CNN: the kind of :func:`normlab.make_norm` and its
#: options. LayerNorm is Wu & He's: over (H, W, C) of each image, GroupNorm with G = 1.
NORMS = {
    "batch": ("batch", {}),
    "group": ("group", {}),
    "layer": ("group", {"num_groups": 1}),
    "instance": ("instance", {"affine": True}),
    "none": ("none", {}),
}

#: The rule's reference: ``lr = base · N / REFERENCE_IMAGES_PER_DEVICE`` (Wu & He: 32).
REFERENCE_IMAGES_PER_DEVICE = 32

#: Wu & He (2018), "Group Normalization", ECCV, Figure 1: ResNet-50 on ImageNet, top-1
#: validation error (%) of BatchNorm at 32, 16, 8, 4 and 2 images per GPU (8 GPUs). Data
#: from the paper, typed here for the shape; no code of ours computed them.
PAPER_BATCH_NORM_ERROR_PERCENT = {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7}

#: The same figure: GroupNorm's error stays at about this (%) at every batch size.
PAPER_GROUP_NORM_ERROR_PERCENT = 24.1

#: The equivalence margin (points) of the "as good as" verdicts.
MARGIN_POINTS = 1.0


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    methods : tuple of str
        Keys of :data:`NORMS`.
    images_per_device : tuple of int ≥ 2
        N, the images each device normalizes (BatchNorm's statistics batch).
    devices : int
        k simulated devices; the SGD batch is k·N.
    epochs : int
        Passes over the training images, the same at every N.
    base_learning_rates : tuple of float
        The grid of ``base`` in ``lr = base · N/32``, chosen per method on validation.
    tuning_seeds : tuple of int
        Seeds of the validation runs (at N = 32).
    seeds : tuple of int
        One network per (method, N, seed); the same seeds for every method.
    widths : tuple of int
        Channels of the CNN's blocks.
    """

    methods: tuple[str, ...] = choices(METHODS, METHODS)
    images_per_device: tuple[int, ...] = integers(
        (2, 4, 8, 16, 32), minimum=2, why="BatchNorm needs two images per device"
    )
    devices: int = integer(4, minimum=1)
    epochs: int = integer(6, minimum=1)
    base_learning_rates: tuple[float, ...] = numbers((0.0125, 0.025, 0.05, 0.1, 0.2), above=0)
    tuning_seeds: tuple[int, ...] = integers((0, 1), minimum=0)
    seeds: tuple[int, ...] = seeds(5)
    widths: tuple[int, ...] = integers((16, 32), minimum=1, sort=False)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            methods=("batch", "group"),
            images_per_device=(2, 32),
            devices=2,
            epochs=1,
            base_learning_rates=(0.05, 0.1),
            tuning_seeds=(0,),
            seeds=(0, 1),
            widths=(8, 16),
        )

    def validate(self) -> None:
        largest = self.devices * max(max(self.images_per_device), REFERENCE_IMAGES_PER_DEVICE)
        training.check_training_batch_sizes((largest,), trains_batchnorm=False)

    def concerns(self) -> list[str]:
        images = len(training.digits().x_train)
        largest = max(self.images_per_device)
        steps = self.epochs * (images // (self.devices * largest))
        if steps < training.MIN_TRAINING_STEPS:
            return [
                f"{largest} images on each of {self.devices} devices for {self.epochs} "
                f"epoch(s) take only {steps} steps: use more epochs or fewer devices"
            ]
        return []


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_one(run: dict) -> dict:
    """One CNN: ``method`` with N = ``images`` per device on ``devices`` devices.

    The learning rate is ``base_lr · N/32``; ``evaluation="validation"`` measures on the
    validation images.
    """
    kind, options = NORMS[run["method"]]
    images, devices = run["images"], run["devices"]
    if kind == "batch" and devices > 1:
        options = {**options, "ghost_batch_size": images}  # per-device BatchNorm
    trained = training.train_cnn(
        norm=kind,
        batch_size=devices * images,
        seed=run["seed"],
        epochs=run["epochs"],
        widths=tuple(run["widths"]),
        norm_kwargs=options,
        base_lr=run["base_lr"],
        lr_rule="linear",  # base · (k·N)/(k·32) = base · N/32
        reference_batch_size=devices * REFERENCE_IMAGES_PER_DEVICE,
        evaluation=run["evaluation"],
    )
    keep = ("test_accuracy_eval", "test_correct", "steps", "learning_rate", "diverged")
    return {key: trained[key] for key in keep}


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose each method's base on validation, then train every (method, N, seed).

    Returns
    -------
    dict with
        ``config``; ``methods``; ``images_per_device``;
        ``base_learning_rate[method]``: the chosen base;
        ``validation_accuracy[method]``: per grid value, mean over tuning seeds;
        ``test_error_percent[method]``: lists over N of lists over seeds;
        ``steps``, ``sgd_batch_size``: per N;
        ``rise_from_largest[method][N]``: paired error difference to the largest N
        (points, ``mean``/``interval``/``verdict``);
        ``minus_batch[method][N]``: the method's error minus BatchNorm's, paired;
        ``diverged_runs``; ``paper_error_percent``; ``headline``.
    """
    tuning = config.runs(
        evaluation=("validation",),
        images=(REFERENCE_IMAGES_PER_DEVICE,),
        method="methods",
        base_lr="base_learning_rates",
        seed="tuning_seeds",
    )
    (tuned,) = measure_together(NAME, measure_one, [tuning], options)
    # (1, 1, methods, bases, tuning seeds) -> mean over the tuning seeds
    validation = tuned.table("test_accuracy_eval")[0, 0].mean(axis=2)
    chosen = {
        method: config.base_learning_rates[int(np.argmax(row))]
        for method, row in zip(config.methods, validation, strict=True)
    }
    parts = [
        config.runs(
            evaluation=("test",),
            method=(method,),
            base_lr=(chosen[method],),
            images="images_per_device",
            seed="seeds",
        )
        for method in config.methods
    ]
    measured = measure_together(NAME, measure_one, parts, options)

    def per_method(key: str) -> dict[str, np.ndarray]:
        return {  # (N, seeds, ...)
            method: part.table(key)[0, 0, 0]
            for method, part in zip(config.methods, measured, strict=True)
        }

    correct = per_method("test_correct")  # (N, seeds, test images) per method
    error = {
        method: 100 * (1 - values) for method, values in per_method("test_accuracy_eval").items()
    }
    first = measured[0]
    sizes = list(config.images_per_device)
    results = {
        "config": config.to_dict(),
        "methods": list(config.methods),
        "images_per_device": sizes,
        "base_learning_rate": chosen,
        "validation_accuracy": {
            method: row.tolist() for method, row in zip(config.methods, validation, strict=True)
        },
        "test_error_percent": {method: values.tolist() for method, values in error.items()},
        "steps": first.table("steps")[0, 0, 0][:, 0].tolist(),
        "sgd_batch_size": [config.devices * size for size in sizes],
        "rise_from_largest": {
            method: {
                str(size): _error_difference(values[index], values[-1])
                for index, size in enumerate(sizes[:-1])
            }
            for method, values in correct.items()
        },
        "minus_batch": {
            method: {
                str(size): _error_difference(values[index], correct["batch"][index])
                for index, size in enumerate(sizes)
            }
            for method, values in correct.items()
            if method != "batch" and "batch" in correct
        },
        "diverged_runs": int(sum(part.table("diverged").sum() for part in measured)),
        "paper_error_percent": {
            "batch": {str(size): value for size, value in PAPER_BATCH_NORM_ERROR_PERCENT.items()},
            "group_at_every_size": PAPER_GROUP_NORM_ERROR_PERCENT,
        },
    }
    results["headline"] = _headline(results)
    return results


def _error_difference(correct: np.ndarray, reference: np.ndarray) -> dict:
    """Error of ``correct`` minus error of ``reference`` ((seeds, images) of 1/0), in points."""
    # error difference = -(accuracy difference): compare the reference with the values
    result = stats.paired_comparison(reference, correct, margin=MARGIN_POINTS / 100)
    verdict = {"better": "higher error", "worse": "lower error"}.get(result.verdict, result.verdict)
    return {
        "mean": 100 * result.mean_difference,
        "interval": [100 * bound for bound in result.interval],
        "verdict": verdict,
    }


def _headline(results: dict) -> dict:
    sizes = results["images_per_device"]
    smallest, largest = str(sizes[0]), sizes[-1]
    headline: dict = {
        "smallest_images_per_device": sizes[0],
        "largest_images_per_device": largest,
        "diverged_runs": results["diverged_runs"],
        "steps": {str(size): steps for size, steps in zip(sizes, results["steps"], strict=True)},
    }
    for method in results["methods"]:
        mean_error = np.mean(results["test_error_percent"][method], axis=1)  # (N,)
        rise = results["rise_from_largest"][method].get(smallest)
        headline[method] = {
            "base_learning_rate": results["base_learning_rate"][method],
            "mean_test_error_percent": {
                str(size): float(value) for size, value in zip(sizes, mean_error, strict=True)
            },
            "rise_from_largest_to_smallest_points": None if rise is None else rise["mean"],
            "rise_interval_points": None if rise is None else rise["interval"],
            "rise_verdict": None if rise is None else rise["verdict"],
        }
    return headline


def summary(results: dict) -> str:
    """The curve of each method as text: mean error per N, the base, the paired rise."""
    sizes = results["images_per_device"]
    lines = [
        "mean test error (%) over seeds, eval mode; images per device N, SGD batch "
        f"{results['config']['devices']}·N",
        f"{'N':24s}" + "".join(f"{size:>7d}" for size in sizes) + "   base lr",
    ]
    for method in results["methods"]:
        one = results["headline"][method]
        errors = one["mean_test_error_percent"]
        lines.append(
            f"{plotting.method_label(method):24s}"
            + "".join(f"{errors[str(size)]:7.2f}" for size in sizes)
            + f"   {one['base_learning_rate']:g}"
        )
    lines.append(f"{'steps':24s}" + "".join(f"{steps:>7d}" for steps in results["steps"]))
    lines.append(
        f"\nerror at N = {sizes[0]} minus error at N = {sizes[-1]} (paired 95 % interval):"
    )
    for method in results["methods"]:
        one = results["headline"][method]
        if one["rise_interval_points"] is None:
            continue
        low, high = one["rise_interval_points"]
        rise = one["rise_from_largest_to_smallest_points"]
        lines.append(
            f"  {plotting.method_label(method):22s}{rise:+6.2f} "
            f"[{low:+.2f}, {high:+.2f}]  {one['rise_verdict']}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: The label of each method in this figure (LayerNorm is over H, W and C here).
_LABELS = {
    "batch": "BatchNorm (per device)",
    "group": "GroupNorm",
    "layer": "LayerNorm (over H, W, C)",
    "instance": "InstanceNorm",
    "none": "no normalization",
}


def _error_axis(ax, sizes) -> None:
    plotting.log2_axis(ax, sizes, label="images per device N")
    ax.invert_xaxis()  # as in the paper: the batch shrinks to the right
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_ylabel("error (%), log scale")


@plotting.styled
def plot(results: dict) -> Figure:
    """Left: our error against N per method. Right: the paper's published curve."""
    config = results["config"]
    sizes = np.asarray(results["images_per_device"])
    figure, (ax_ours, ax_paper) = plotting.subplots(1, 2, width=15.0, height=6.8)
    for method in results["methods"]:
        looks = plotting.method_style(method)
        plotting.plot_spread(
            ax_ours,
            sizes,
            results["test_error_percent"][method],
            color=looks["color"],
            marker=looks["marker"],
            center="mean",
            label=f"{_LABELS[method]}, base {results['base_learning_rate'][method]:g}",
        )
    _error_axis(ax_ours, sizes)
    ax_ours.set_title(f"digits CNN, {config['devices']} devices of N images (ours)")
    ax_ours.legend(loc="upper left", fontsize=12)

    paper = results["paper_error_percent"]
    paper_sizes = sorted(int(size) for size in paper["batch"])
    looks = plotting.method_style("batch")
    ax_paper.plot(
        paper_sizes,
        [paper["batch"][str(size)] for size in paper_sizes],
        color=looks["color"],
        marker=looks["marker"],
        label=looks["label"],
    )
    ax_paper.axhline(
        paper["group_at_every_size"],
        color=plotting.METHODS["group"].color,
        linestyle="--",
        label=f"GroupNorm: about {paper['group_at_every_size']:g} % at every N",
    )
    _error_axis(ax_paper, paper_sizes)
    ax_paper.set_title("published: Wu & He 2018, ResNet-50 on ImageNet")
    ax_paper.legend(loc="upper left")
    spread = plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of")
    steps = results["steps"]
    plotting.set_title(
        figure,
        "Does BatchNorm's error grow as the images per device shrink? (cf. Wu & He 2018, Fig. 1)",
        f"Ours: CNN widths {tuple(config['widths'])} on the 8×8 digits, SGD momentum 0.9, "
        f"SGD batch {config['devices']}·N, lr = base·N/32 with base chosen per method on a "
        f"validation split, {config['epochs']} epochs at every N ({steps[0]:,} steps at "
        f"N = {sizes[0]}, {steps[-1]:,} at N = {sizes[-1]}); test error on 450 images in "
        f"eval mode. {spread[0].upper()}{spread[1:]}. Right: the paper's numbers, typed from it.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def _curve_title(results: dict) -> str:
    """BatchNorm's change in error from the most to the fewest images per device, by its verdict."""
    sizes = results["images_per_device"]
    smallest, largest = sizes[0], sizes[-1]
    paper = results["paper_error_percent"]["batch"]
    on_imagenet = ""
    if str(smallest) in paper and str(largest) in paper:
        before, after = paper[str(largest)], paper[str(smallest)]
        moved = "rose" if after > before else "fell"
        on_imagenet = f"; on ImageNet it {moved} from {before:g} to {after:g} %"
    rise = results["rise_from_largest"].get("batch", {}).get(str(smallest))
    span = f"from {largest} to {smallest} images per device"
    if rise is None:
        return f"The digits CNN's test error {span}, per normalization"
    if rise["verdict"] == "higher error":
        change = f"rises by {rise['mean']:.1f} points"
    elif rise["verdict"] == "lower error":
        change = f"falls by {-rise['mean']:.1f} points"
    else:
        change = "does not clearly change"
    return f"On the digits CNN, BatchNorm's error {change} {span}{on_imagenet}"


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: test error against images per device, each normalization, and the verdict."""
    config = results["config"]
    sizes = np.asarray(results["images_per_device"])
    figure, ax = plotting.slide_figure(
        _curve_title(results),
        f"{config['devices']} devices, learning rate tuned for each; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
    )
    for method in results["methods"]:
        looks = plotting.method_style(method)
        plotting.plot_spread(
            ax, sizes, results["test_error_percent"][method], center="mean", **looks
        )
    plotting.log2_axis(ax, sizes, label="images per device")
    ax.invert_xaxis()  # as in the paper: the batch shrinks to the right
    ax.set_yscale("log")
    plotting.plain_log_labels(ax.yaxis)
    ax.set_ylabel("test error (%)")
    highest = max(np.max(results["test_error_percent"][method]) for method in results["methods"])
    ax.set_ylim(top=min(3 * highest, 100))  # room for the legend above the bands (log scale)
    ax.legend(loc="upper center", ncols=3)
    return [("error", figure)]
