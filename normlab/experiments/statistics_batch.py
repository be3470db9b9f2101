"""The statistics batch apart from the SGD batch: BatchNorm over g samples inside a fixed batch B.

The question a lecturer is asked about Wu & He (2018, Figure 1): when BatchNorm loses
accuracy at small batches, is it the batch its *statistics* come from, or the small
*SGD* batch (fewer samples per gradient, more and noisier steps)? On ImageNet the two
shrank together: each GPU normalized its own N images while SGD averaged over all
8·N. Here they are pulled apart.

Setup. BatchNorm networks on the digits, the MLP (``64 → 64 → 64 → 10``) and the CNN
(``Conv2d(3×3) → BatchNorm2d → ReLU → MaxPool2d(2)`` twice, then a global average pool and
a linear head, on the 8×8 images), trained with SGD (momentum 0.9) at a FIXED SGD batch
B, learning rate and number of steps, while every BatchNorm takes its statistics over
ghost batches of g samples inside each batch (``BatchNorm(ghost_batch_size=g)``, Hoffer
et al. 2017). This is exactly what k = B/g devices with per-device BatchNorm compute
(:mod:`normlab.parallel`; tests/test_parallel.py checks it): the statistics batch is g,
the SGD batch is B. Running statistics: each training forward moves the running
averages once, towards the mean over the ghost batches of their statistics (what
``data_parallel_step`` keeps by default, ``running_stats="average"``; PyTorch DDP keeps
device 0's instead). Test accuracy in eval mode, on the 450 test images.

The learning rate is chosen per model, at g = B, on a validation split carved from the
training images (:func:`normlab.training.digits`), from ``learning_rates``, as the best
mean validation accuracy over ``tuning_seeds``; the test set takes no part. Every g of a
model then trains at that rate, the same seeds, the same steps.

Beside it, the ordinary small batch: SGD batch B = g (statistics batch g too), for the
same number of epochs (so B/g times the steps) at the learning rate of the linear
scaling rule, ``lr_B · g/B`` (the rule Wu & He used). The difference between the two
curves at one g is what the small SGD batch adds to (or takes from) the damage of the
small statistics batch.

Each comparison is paired (same seeds, same test images) with a hierarchical bootstrap
interval over seeds and test images (:func:`normlab.stats.paired_comparison`), so the
450-image test set's own noise is in the interval. "Share from the statistics" at g is
``(acc(g = B) − acc(g inside B)) / (acc(g = B) − acc(B = g))``, given only where the
ordinary small batch is worse than g = B (its interval excludes 0); elsewhere there is
no damage to share out and the headline says so.

Theory. With g = 2 on (N, D) vectors every BatchNorm feature is exactly ±1 (see
``train_eval_gap``), whatever B is, so the MLP should lose as much inside a large SGD
batch as with B = 2. In a CNN each statistic averages g·H·W values per channel (8·8 in
the first block), which are correlated within an image (``batch_stat_noise``) but far
from the two-value case, so the CNN should lose much less.

What would refute the claim that the statistics batch alone carries the damage: an MLP
at g = 2 inside B whose accuracy is as good as at g = B (the interval inside the margin),
or an ordinary small batch B = g far worse than g inside B (then the small SGD batch, not
the statistics, does the damage). The README gives the numbers of the default run.
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

NAME = "statistics_batch"

#: The models trained: the digits MLP and the digits CNN.
MODELS = ("mlp", "cnn")

#: How each model is named in figures and summaries.
MODEL_LABELS = {"mlp": "MLP 64→64→64→10", "cnn": "CNN, 8×8 images"}

#: The two settings at a statistics batch g: ghost batches of g inside the fixed SGD
#: batch, or the ordinary small batch (SGD batch = g).
SETTINGS = ("inside_fixed_batch", "small_sgd_batch")

#: The equivalence margin (points) of the "as good as" verdict of every comparison.
MARGIN_POINTS = 1.0


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    models : tuple of str
        Any of ``"mlp"``, ``"cnn"``.
    sgd_batch_size : int
        The fixed SGD batch B.
    statistics_batch_sizes : tuple of int
        The statistics batches g; each divides B, and the largest is B (the reference).
    seeds : tuple of int
        One network per (model, g, setting, seed).
    epochs : int
        Passes over the 1347 training images (at B: ``epochs · ⌊1347/B⌋`` steps).
    learning_rates : tuple of float
        The grid the learning rate at g = B is chosen from, per model, on validation.
    tuning_seeds : tuple of int
        Seeds of the validation runs.
    cnn_widths : tuple of int
        Channels of the CNN's blocks.
    """

    models: tuple[str, ...] = choices(MODELS, MODELS)
    sgd_batch_size: int = integer(32, minimum=2, why="BatchNorm needs two samples")
    statistics_batch_sizes: tuple[int, ...] = integers(
        (2, 4, 8, 16, 32), minimum=2, why="a statistic over one sample has no variance"
    )
    seeds: tuple[int, ...] = seeds(5)
    epochs: int = integer(5, minimum=1)
    learning_rates: tuple[float, ...] = numbers((0.025, 0.05, 0.1, 0.2), above=0)
    tuning_seeds: tuple[int, ...] = integers((0, 1), minimum=0)
    cnn_widths: tuple[int, ...] = integers((16, 32), minimum=1, sort=False)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            sgd_batch_size=16,
            statistics_batch_sizes=(2, 16),
            seeds=(0, 1),
            epochs=1,
            learning_rates=(0.05, 0.1),
            tuning_seeds=(0,),
            cnn_widths=(8, 16),
        )

    def validate(self) -> None:
        batch = self.sgd_batch_size
        training.check_training_batch_sizes((batch,), trains_batchnorm=True)
        if max(self.statistics_batch_sizes) != batch:
            raise ValueError(
                f"statistics_batch_sizes must end at sgd_batch_size={batch} (the reference "
                f"g = B), got {self.statistics_batch_sizes}"
            )
        misfits = [size for size in self.statistics_batch_sizes if batch % size]
        if misfits:
            raise ValueError(
                f"statistics_batch_sizes must divide sgd_batch_size={batch}, got {misfits}"
            )

    def concerns(self) -> list[str]:
        steps = self.epochs * (len(training.digits().x_train) // self.sgd_batch_size)
        if steps < training.MIN_TRAINING_STEPS:
            return [
                f"sgd_batch_size {self.sgd_batch_size} for {self.epochs} epoch(s) takes only "
                f"{steps} steps: use more epochs or a smaller sgd_batch_size"
            ]
        return []


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_one(run: dict) -> dict:
    """One BatchNorm network: statistics over ghost batches of ``statistics_batch``.

    ``setting`` ``"inside_fixed_batch"``: SGD batch ``sgd_batch_size``;
    ``"small_sgd_batch"``: SGD batch = the statistics batch, the learning rate scaled by
    the linear rule. ``evaluation`` ``"validation"`` measures on the validation images.
    """
    statistics_batch, reference = run["statistics_batch"], run["sgd_batch_size"]
    sgd_batch = reference if run["setting"] == "inside_fixed_batch" else statistics_batch
    model = {"widths": tuple(run["cnn_widths"])} if run["model"] == "cnn" else {}
    train = training.train_cnn if run["model"] == "cnn" else training.train_mlp
    trained = train(
        norm="batch",
        batch_size=sgd_batch,
        seed=run["seed"],
        epochs=run["epochs"],
        norm_kwargs={"ghost_batch_size": statistics_batch},
        base_lr=run["learning_rate"],
        lr_rule="linear",  # lr = learning_rate · sgd_batch / B: the chosen rate at B
        reference_batch_size=reference,
        evaluation=run["evaluation"],
        **model,
    )
    keep = ("test_accuracy_eval", "test_correct", "steps", "learning_rate", "diverged")
    return {key: trained[key] for key in keep}


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose each model's learning rate on validation, then train every (g, setting, seed).

    Returns
    -------
    dict with
        ``config``; ``statistics_batch_sizes``; ``sgd_batch_size``;
        ``models[model]``: ``learning_rate`` (chosen), ``validation_accuracy`` (per
        grid value, mean over tuning seeds), ``test_accuracy[setting]`` (lists over g
        of lists over seeds; the small SGD batch only for g < B), ``steps[setting]``,
        ``learning_rate_at[setting]`` (per g), ``comparison[setting][g]`` (paired
        difference to g = B, in points: ``mean``, ``interval``, ``verdict``),
        ``statistics_share[g]``, ``diverged_runs``;
        ``headline``.
    """
    batch = config.sgd_batch_size
    tuning = config.runs(
        evaluation=("validation",),
        setting=("inside_fixed_batch",),
        statistics_batch=(batch,),
        model="models",
        learning_rate="learning_rates",
        seed="tuning_seeds",
    )
    (tuned,) = measure_together(NAME, measure_one, [tuning], options)
    # (1, 1, 1, models, learning rates, tuning seeds) -> mean over the tuning seeds
    validation = tuned.table("test_accuracy_eval")[0, 0, 0].mean(axis=2)
    chosen = {
        model: config.learning_rates[int(np.argmax(row))]
        for model, row in zip(config.models, validation, strict=True)
    }

    smaller = tuple(size for size in config.statistics_batch_sizes if size < batch)
    parts = []
    for model in config.models:
        for setting, sizes in (
            ("inside_fixed_batch", "statistics_batch_sizes"),
            ("small_sgd_batch", smaller),
        ):
            if not sizes:
                continue
            parts.append(
                config.runs(
                    model=(model,),
                    learning_rate=(chosen[model],),
                    evaluation=("test",),
                    setting=(setting,),
                    statistics_batch=sizes,
                    seed="seeds",
                )
            )
    measured = iter(measure_together(NAME, measure_one, parts, options))

    results: dict = {
        "config": config.to_dict(),
        "statistics_batch_sizes": list(config.statistics_batch_sizes),
        "sgd_batch_size": batch,
        "models": {},
    }
    for model, accuracies in zip(config.models, validation, strict=True):
        tables = {"inside_fixed_batch": next(measured)}
        if smaller:
            tables["small_sgd_batch"] = next(measured)
        results["models"][model] = _summary(config, chosen[model], accuracies, tables, smaller)
    results["headline"] = _headline(results)
    return results


def _summary(config: Config, chosen: float, validation, tables: dict, smaller) -> dict:
    """The numbers of one model; ``tables[setting]`` indexed (statistics batches, seeds)."""
    sizes = list(config.statistics_batch_sizes)

    def squeeze(setting: str, key: str) -> np.ndarray:
        table = tables[setting].table(key)  # (1, 1, 1, 1, g, seeds, ...)
        return table.reshape(table.shape[4:])

    correct = {setting: squeeze(setting, "test_correct") for setting in tables}  # (g, S, E)
    reference = correct["inside_fixed_batch"][sizes.index(config.sgd_batch_size)]  # (S, E)
    comparison: dict = {}
    for setting, per_size in correct.items():
        setting_sizes = sizes if setting == "inside_fixed_batch" else list(smaller)
        comparison[setting] = {
            str(size): _compare(per_size[index], reference)
            for index, size in enumerate(setting_sizes)
            if size != config.sgd_batch_size
        }
    share = {}
    for size in smaller:
        total = comparison["small_sgd_batch"][str(size)]
        statistics_part = comparison["inside_fixed_batch"][str(size)]
        if total["verdict"] == "worse":
            share[str(size)] = statistics_part["mean"] / total["mean"]
        else:
            share[str(size)] = None  # the ordinary small batch loses nothing to share out
    return {
        "learning_rate": chosen,
        "validation_accuracy": [float(value) for value in validation],
        "test_accuracy": {
            setting: squeeze(setting, "test_accuracy_eval").tolist() for setting in tables
        },
        "steps": {setting: squeeze(setting, "steps")[:, 0].tolist() for setting in tables},
        "learning_rate_at": {
            setting: squeeze(setting, "learning_rate")[:, 0].tolist() for setting in tables
        },
        "comparison": comparison,
        "statistics_share": share,
        "diverged_runs": int(sum(squeeze(setting, "diverged").sum() for setting in tables)),
    }


def _compare(values: np.ndarray, reference: np.ndarray) -> dict:
    """``values − reference`` (per seed and test image, 1/0), paired, in points."""
    result = stats.paired_comparison(values, reference, margin=MARGIN_POINTS / 100)
    return {
        "mean": 100 * result.mean_difference,
        "interval": [100 * bound for bound in result.interval],
        "verdict": result.verdict,
    }


def _headline(results: dict) -> dict:
    headline: dict = {"sgd_batch_size": results["sgd_batch_size"]}
    for model, one_model in results["models"].items():
        accuracy = {
            setting: {
                str(size): 100 * float(np.mean(values))
                for size, values in zip(_sizes(results, setting), table, strict=True)
            }
            for setting, table in one_model["test_accuracy"].items()
        }
        headline[model] = {
            "learning_rate": one_model["learning_rate"],
            "mean_test_accuracy_percent": accuracy,
            "difference_to_reference_points": {
                setting: {size: one["mean"] for size, one in per_size.items()}
                for setting, per_size in one_model["comparison"].items()
            },
            "interval_points": {
                setting: {size: one["interval"] for size, one in per_size.items()}
                for setting, per_size in one_model["comparison"].items()
            },
            "verdict": {
                setting: {size: one["verdict"] for size, one in per_size.items()}
                for setting, per_size in one_model["comparison"].items()
            },
            "statistics_share": one_model["statistics_share"],
        }
    return headline


def _sizes(results: dict, setting: str) -> list[int]:
    sizes = results["statistics_batch_sizes"]
    if setting == "small_sgd_batch":
        return [size for size in sizes if size < results["sgd_batch_size"]]
    return sizes


def summary(results: dict) -> str:
    """The numbers of the figure as text: accuracy per g and each paired difference."""
    batch = results["sgd_batch_size"]
    lines = []
    for model, one_model in results["models"].items():
        lines.append(
            f"{MODEL_LABELS[model]}: lr {one_model['learning_rate']:g} at B = {batch} "
            f"(chosen on validation from {results['config']['learning_rates']})"
        )
        for setting, label in (
            ("inside_fixed_batch", f"g inside B = {batch}"),
            ("small_sgd_batch", "ordinary B = g"),
        ):
            if setting not in one_model["test_accuracy"]:
                continue
            for size, values in zip(
                _sizes(results, setting), one_model["test_accuracy"][setting], strict=True
            ):
                line = f"  {label:18s} g = {size:>3d}: {100 * np.mean(values):5.1f} %"
                one = one_model["comparison"][setting].get(str(size))
                if one is not None:
                    low, high = one["interval"]
                    line += (
                        f"   vs g = B: {one['mean']:+5.1f} points "
                        f"[{low:+.1f}, {high:+.1f}] {one['verdict']}"
                    )
                lines.append(line)
        for size in sorted(one_model["statistics_share"], key=int):
            share = one_model["statistics_share"][size]
            if share is None:
                lines.append(
                    f"  g = {size}: the ordinary small batch is not worse than g = B, "
                    "so there is no damage to share out"
                )
            else:
                lines.append(f"  g = {size}: share of the damage from the statistics {share:.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: The look of the two settings: both BatchNorm, so both in BatchNorm's hues.
_LOOKS = {
    "inside_fixed_batch": {
        "color": plotting.METHODS["batch"].color,
        "marker": "o",
        "linestyle": "-",
    },
    "small_sgd_batch": {
        "color": plotting.COLORS["sky_blue"],
        "marker": "D",
        "linestyle": "--",
    },
}


#: The two settings' intervals are drawn a little apart on the log axis.
_NUDGE = {"inside_fixed_batch": 0.95, "small_sgd_batch": 1.05}


def _label(setting: str, batch: int) -> str:
    if setting == "inside_fixed_batch":
        return f"statistics of g inside SGD batch B = {batch}"
    return "ordinary small batch: SGD batch B = g"


@plotting.styled
def plot(results: dict) -> Figure:
    """Per model: accuracy against g (top) and the paired difference to g = B (bottom)."""
    config = results["config"]
    batch = results["sgd_batch_size"]
    models = list(results["models"])
    figure, axes = plotting.subplots(2, len(models), width=7.2 * len(models), height=10.5)
    axes = np.asarray(axes).reshape(2, len(models))
    for column, model in enumerate(models):
        one_model = results["models"][model]
        ax_accuracy, ax_difference = axes[0, column], axes[1, column]
        for setting, table in one_model["test_accuracy"].items():
            sizes = _sizes(results, setting)
            plotting.plot_spread(
                ax_accuracy,
                sizes,
                100 * np.asarray(table),
                center="mean",
                label=_label(setting, batch),
                **_LOOKS[setting],
            )
            compared = [size for size in sizes if str(size) in one_model["comparison"][setting]]
            means = [one_model["comparison"][setting][str(size)]["mean"] for size in compared]
            intervals = np.asarray(
                [one_model["comparison"][setting][str(size)]["interval"] for size in compared]
            ).reshape(-1, 2)
            look = _LOOKS[setting]
            ax_difference.errorbar(
                np.asarray(compared) * _NUDGE[setting],  # side by side, not on top
                means,
                yerr=[np.subtract(means, intervals[:, 0]), np.subtract(intervals[:, 1], means)],
                color=look["color"],
                marker=look["marker"],
                linestyle=look["linestyle"],
                capsize=5,
                label=_label(setting, batch),
            )
        ax_difference.axhline(0.0, color=plotting.REFERENCE_COLOR, linewidth=1.4)
        for bound in (-MARGIN_POINTS, MARGIN_POINTS):
            ax_difference.axhline(bound, color=plotting.REFERENCE_COLOR, linestyle=":", lw=1.2)
        ax_accuracy.set_title(f"{MODEL_LABELS[model]} (lr {one_model['learning_rate']:g} at B)")
        ax_difference.set_title("difference to g = B, paired 95 % interval")
        plotting.log2_axis(
            ax_difference, results["statistics_batch_sizes"], label="statistics batch g"
        )
        plotting.log2_axis(ax_accuracy, results["statistics_batch_sizes"])
    axes[0, 0].set_ylabel("test accuracy (%), eval mode")
    axes[1, 0].set_ylabel("points")
    axes[0, 0].legend(loc="lower right")
    spread = plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of")
    plotting.set_title(
        figure,
        "Is it the statistics batch or the SGD batch? BatchNorm over g samples",
        f"Fixed SGD batch B = {batch}, {config['epochs']} epochs, SGD momentum 0.9, lr chosen "
        "per model at g = B on a validation split; ghost batches of g = per-device "
        f"BatchNorm on B/g devices. Ordinary small batch: same epochs, lr·g/B. {spread[0].upper()}"
        f"{spread[1:]}; intervals: hierarchical bootstrap over seeds and the 450 test images; "
        f"dotted: ±{MARGIN_POINTS:g} point.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

_SLIDE_MODELS = {"mlp": "digits MLP", "cnn": "digits CNN"}


def _slide_label(setting: str, batch: int) -> str:
    if setting == "inside_fixed_batch":
        return f"SGD batch stays {batch}"
    return "SGD batch as small as the statistics"


def _statistics_title(results: dict) -> str:
    """What the first model shows at the smallest statistics batch, from its paired verdicts."""
    batch = results["sgd_batch_size"]
    smallest = results["statistics_batch_sizes"][0]
    model = next(iter(m for m in ("mlp", "cnn") if m in results["models"]))
    comparison = results["models"][model]["comparison"]
    inside = comparison["inside_fixed_batch"].get(str(smallest))
    small = comparison.get("small_sgd_batch", {}).get(str(smallest))
    if inside is None or small is None:
        return "BatchNorm's statistics over fewer samples than the SGD batch"
    name = _SLIDE_MODELS[model].split()[-1]
    if inside["verdict"] == "worse":
        return (
            f"Statistics over {smallest} samples cost the {name} {-inside['mean']:.0f} points "
            f"even inside an SGD batch of {batch}; an SGD batch of {smallest} costs "
            f"{-small['mean']:.0f}"
        )
    return (
        f"Statistics over {smallest} samples inside an SGD batch of {batch} cost the {name} "
        "no clear accuracy"
    )


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: accuracy against the statistics batch, per model, the two settings."""
    config = results["config"]
    batch = results["sgd_batch_size"]
    models = list(results["models"])
    models.sort(key=lambda model: ("mlp", "cnn").index(model))
    figure, axes = plotting.slide_figure(
        _statistics_title(results),
        "BatchNorm throughout; "
        + plotting.spread_caption(len(config["seeds"]), center="mean", form="center_of"),
        ncols=len(models),
        sharey=True,
    )
    axes = np.atleast_1d(axes)
    for ax, model in zip(axes, models, strict=True):
        for setting in SETTINGS:
            table = results["models"][model]["test_accuracy"].get(setting)
            if table is None:
                continue
            plotting.plot_spread(
                ax,
                _sizes(results, setting),
                100 * np.asarray(table),
                center="mean",
                label=_slide_label(setting, batch),
                **_LOOKS[setting],
            )
        plotting.log2_axis(ax, results["statistics_batch_sizes"], label="samples per statistic")
        ax.set_title(_SLIDE_MODELS[model])
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(loc="lower right")  # the CNN's panel has room below its lines
    return [("statistics", figure)]
