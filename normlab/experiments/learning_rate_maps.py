"""Learning rate × initialization scale: where each normalization trains, and how fast.

The question: what does normalization buy during training? Two popular answers are
"it allows higher learning rates" (Ioffe & Szegedy 2015; measured by Bjorck et al. 2018,
"Understanding Batch Normalization") and "it speeds up training". The second is often
judged at one shared learning rate, which confounds it: a learning rate that suits one
network may be too large for another. So this experiment first maps, for every method,
where training works at all, and then compares the methods each at its own best learning
rate, chosen on validation images.

Setup. Three digits networks, each with every normalization in ``norms``: the shallow
MLP ``64 → 64 → 64 → 10`` (two ``Linear → norm → ReLU`` blocks), a deep MLP with
``deep_depth`` such blocks, and the small CNN (``Conv2d → norm → ReLU → MaxPool2d`` with
``cnn_widths`` channels, :class:`normlab.nn.CNN`). All trained by :func:`normlab.training.fit`
with SGD (momentum ``momentum``), batch size ``batch_size``, a constant learning rate and
a budget of ``steps`` optimizer steps.

1. **The map**: for every learning rate in ``learning_rates`` and every initialization
   scale in ``init_scales`` (every Linear/Conv2d weight multiplied by it after the He or
   Glorot initialization, :func:`normlab.training.scale_initial_weights`), train on 1077
   training images and measure on the 270 validation images carved from the training
   images (``map_seeds`` seeds). The test set is not touched.
2. **Stable learning rates**, defined before measuring: a cell of the map *trains* when,
   in every map seed, the loss stays finite and the validation accuracy is at most
   ``tolerance_points`` below the best median validation accuracy of any cell of that
   network's map (any method). At the default initialization (scale 1), a method's
   *stable range* is the unbroken run of grid learning rates that train around its best
   one; its width is ``log10(largest / smallest)`` in decades (0 for a single learning
   rate, None when not even the best trains). A rate below the range is too slow for the
   budget, one above it blows up or stalls; the range's top is what "allows higher
   learning rates" is about.
3. **The chosen points**, each with ``seeds`` seeds on the full training set and measured
   on the 450 test images (the only use of the test set): every method at its own best
   learning rate (the highest median validation accuracy at scale 1; ties to the lower
   validation loss), recording the training loss at every step; and every method at the
   top of BatchNorm's stable range. "Trains faster" is then read at each method's own
   best learning rate: the training loss against steps, summarized by its mean over the
   budget (the area under the curve).

Theory. With a normalization after a layer, scaling that layer's weights by c changes
nothing downstream, so the initialization scale only sets the *effective* learning rate:
the gradient with respect to the weights scales like 1/c and the relative step like 1/c²
(``effective_learning_rate`` measures this). A BatchNorm network should therefore train
across the scale axis and tolerate large learning rates (the weights grow, which shrinks
the effective step), while an unnormalized network needs the scale that keeps activations
in range (He's) and a learning rate small enough for its sharpest direction. ε in the
denominator breaks the invariance when the pre-normalization variance becomes comparable
to it (tiny scales), and the layers that are not followed by a normalization (the head)
are not invariant at all.

What would refute the claims: a stable range of BatchNorm whose top is not above that of
no normalization (then BatchNorm does not allow higher learning rates here), or, at each
method's own best learning rate, a normalized network whose training loss falls no faster
than the unnormalized one's (then "normalization speeds up training" holds only at a
shared learning rate). The README gives the numbers of the default run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator

from normlab import nn, plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    integers,
    number,
    numbers,
    seeds,
)
from normlab.layers import NORM_KINDS

NAME = "learning_rate_maps"

#: The normalizations compared, in legend order (keys of ``plotting.METHODS``).
METHODS = ("none", "batch", "layer", "rms")

#: The networks, in the order of the figure's rows.
MODELS = ("shallow_mlp", "deep_mlp", "cnn")

MODEL_TITLES = {"shallow_mlp": "shallow MLP", "deep_mlp": "deep MLP", "cnn": "CNN"}

#: The default initialization (He/Glorot as built): the stable ranges are read here.
DEFAULT_INIT_SCALE = 1.0

#: "As good as" in the comparisons of the results: test accuracies within this many points.
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
        Networks, from :data:`MODELS`.
    norms : tuple of str
        Normalizations (see :func:`normlab.make_norm`).
    learning_rates, init_scales : tuple of float
        The map's axes; ``init_scales`` must contain 1 (the default initialization).
    map_seeds : tuple of int
        Seeds of every map cell (validation split).
    seeds : tuple of int
        Seeds of every chosen point (test set); at least 3 for a spread.
    steps, batch_size, momentum : the training budget and the SGD update.
    deep_depth : int, hidden blocks of the deep MLP; cnn_widths : channels of the CNN.
    tolerance_points : float, how far below the best validation accuracy a cell may be
        and still count as training.
    curve_window : int, the loss curve is kept as means over windows of this many steps.
    """

    models: tuple[str, ...] = choices(MODELS, MODELS)
    norms: tuple[str, ...] = choices(METHODS, NORM_KINDS)
    learning_rates: tuple[float, ...] = numbers((0.003, 0.01, 0.03, 0.1, 0.3, 1.0), above=0)
    init_scales: tuple[float, ...] = numbers((0.001, 0.01, 0.1, 1.0), above=0)
    map_seeds: tuple[int, ...] = integers((0, 1), minimum=0)
    seeds: tuple[int, ...] = seeds(3)
    steps: int = integer(200, minimum=1)
    batch_size: int = integer(32, minimum=2, why="BatchNorm needs two samples per batch")
    momentum: float = number(0.9, minimum=0, below=1)
    deep_depth: int = integer(8, minimum=1)
    cnn_widths: tuple[int, ...] = integers((8, 16), minimum=1, sort=False)
    tolerance_points: float = number(5.0, above=0, maximum=100)
    curve_window: int = integer(10, minimum=1)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            models=("shallow_mlp",),
            norms=("none", "batch"),
            learning_rates=(0.03, 0.3, 1.0),
            init_scales=(0.01, 1.0),
            map_seeds=(0,),
            steps=60,
            seeds=(0, 1, 2),
        )

    def validate(self) -> None:
        if DEFAULT_INIT_SCALE not in self.init_scales:
            raise ValueError(
                f"init_scales must contain {DEFAULT_INIT_SCALE:g} (the default initialization, "
                f"where the stable ranges and best learning rates are read), got {self.init_scales}"
            )
        if self.batch_size > len(training.digits("validation").x_train):
            raise ValueError(
                f"batch_size must be ≤ the {len(training.digits('validation').x_train)} "
                f"training images of the validation split, got {self.batch_size}"
            )

    def concerns(self) -> list[str]:
        if self.steps < training.MIN_TRAINING_STEPS:
            return [
                f"only {self.steps} steps per run (fewer than {training.MIN_TRAINING_STEPS}): "
                "the map says little about training"
            ]
        return []


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def train(run: dict, *, evaluation: str, on_step=None):
    """Train the run's network once; returns ``(numbers of fit, model, split)``."""
    fitting = {
        "batch_size": run["batch_size"],
        "seed": run["seed"],
        "epochs": 1,
        "steps": run["steps"],
        "base_lr": run["lr"],
        "lr_rule": "constant",
        "momentum": run["momentum"],
        "init_scale": run.get("init_scale", DEFAULT_INIT_SCALE),
        "evaluation": evaluation,
        "on_step": on_step,
        "return_model": True,
    }
    with np.errstate(over="ignore", invalid="ignore"):  # a run that blows up is a result
        if run["model"] == "cnn":
            numbers, model = training.train_cnn(
                norm=run["norm"], widths=tuple(run["cnn_widths"]), **fitting
            )
        else:
            depth = 2 if run["model"] == "shallow_mlp" else run["deep_depth"]
            numbers, model = training.train_mlp(norm=run["norm"], depth=depth, **fitting)
    return numbers, model, training.digits(evaluation)


def held_out_loss(model, split, images: bool) -> float | None:
    """Mean cross-entropy on the split's held-out images in eval mode (None if not finite)."""
    x = split.x_test_images if images else split.x_test
    model.eval()
    with np.errstate(all="ignore"):
        loss, _ = nn.softmax_cross_entropy(model(x), split.y_test)
    return float(loss) if math.isfinite(loss) else None


def measure_cell(run: dict) -> dict:
    """One cell of the map: (network, norm, init scale, learning rate, seed) on validation."""
    numbers, model, split = train(run, evaluation="validation")
    return {
        "validation_accuracy": numbers["test_accuracy_eval"],
        "validation_loss": held_out_loss(model, split, images=run["model"] == "cnn"),
        "diverged": numbers["diverged"],
    }


def measure_point(run: dict) -> dict:
    """One chosen point on the full training set: test results and the training-loss curve."""
    run = {**run, **run["point"]}  # the point's model, norm and learning rate
    losses: list[float] = []
    numbers, model, split = train(
        run, evaluation="test", on_step=lambda step, model, loss, x, y: losses.append(loss)
    )
    window = run["curve_window"]
    curve = [
        float(np.mean(losses[start : start + window])) if start + window <= len(losses) else None
        for start in range(0, run["steps"], window)
    ]
    diverged = numbers["diverged"]
    return {
        "test_accuracy": numbers["test_accuracy_eval"],
        "test_correct": numbers["test_correct"],
        "test_loss": held_out_loss(model, split, images=run["model"] == "cnn"),
        "mean_train_loss": None if diverged else float(np.mean(losses)),
        "loss_curve": curve,
        "diverged": diverged,
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """The map on validation, then the chosen points on the test set.

    Returns
    -------
    dict with
        ``config``; ``models``, ``norms``, ``learning_rates``, ``init_scales``;
        ``map[model][norm]``: ``validation_accuracy`` and ``validation_loss`` (init scales ×
        learning rates × map seeds; the loss None where it is not finite), ``trains`` (init
        scales × learning rates, booleans);
        ``threshold_percent[model]``: the validation accuracy a cell must reach;
        ``best_lr[model][norm]``, ``stable_range[model][norm]`` (``low``, ``high``,
        ``decades``, or None); ``high_lr[model]``: the top of BatchNorm's range;
        ``points``: one entry per chosen (model, norm, lr), with its ``roles`` ("best",
        "high"), and per seed ``test_accuracy``, ``test_correct``, ``mean_train_loss``,
        ``loss_curve``; ``comparisons``: paired comparisons against no normalization;
        ``headline``.
    """
    cells = config.runs(
        model="models",
        norm="norms",
        init_scale="init_scales",
        lr="learning_rates",
        seed="map_seeds",
    ).measure(NAME, measure_cell, options)
    accuracy = cells.table("validation_accuracy")  # (models, norms, scales, lrs, map seeds)
    loss = cells.table(
        lambda one: math.inf if one["validation_loss"] is None else one["validation_loss"]
    )
    diverged = cells.table("diverged")

    maps, threshold, best_lr, stable_range, high_lr = {}, {}, {}, {}, {}
    default = config.init_scales.index(DEFAULT_INIT_SCALE)
    for m, model in enumerate(config.models):
        median = 100 * np.median(accuracy[m], axis=-1)  # (norms, scales, lrs)
        threshold[model] = float(median.max() - config.tolerance_points)
        trains = np.all(100 * accuracy[m] >= threshold[model], axis=-1) & ~np.any(
            diverged[m], axis=-1
        )  # (norms, scales, lrs)
        maps[model], best_lr[model], stable_range[model] = {}, {}, {}
        for n, norm in enumerate(config.norms):
            maps[model][norm] = {
                "validation_accuracy": accuracy[m, n].tolist(),
                "validation_loss": np.where(np.isfinite(loss[m, n]), loss[m, n], None).tolist(),
                "trains": trains[n].tolist(),
            }
            best = _best_index(median[n, default], np.median(loss[m, n, default], axis=-1))
            best_lr[model][norm] = config.learning_rates[best]
            stable_range[model][norm] = _stable_range(
                config.learning_rates, trains[n, default], best
            )
        batch_range = stable_range[model].get("batch")
        high_lr[model] = batch_range["high"] if batch_range else None

    points = _chosen_points(config, best_lr, high_lr)
    measured = config.runs(
        point=[{key: point[key] for key in ("model", "norm", "lr")} for point in points],
        seed="seeds",
    ).measure(NAME, measure_point, options)
    for p, point in enumerate(points):
        for key in ("test_accuracy", "test_correct", "mean_train_loss", "loss_curve", "diverged"):
            point[key] = [
                measured.results[p * len(config.seeds) + s][key] for s in range(len(config.seeds))
            ]

    results = {
        "config": config.to_dict(),
        "models": list(config.models),
        "norms": list(config.norms),
        "learning_rates": list(config.learning_rates),
        "init_scales": list(config.init_scales),
        "map": maps,
        "threshold_percent": threshold,
        "best_lr": best_lr,
        "stable_range": stable_range,
        "high_lr": high_lr,
        "points": points,
    }
    results["comparisons"] = _comparisons(results)
    results["headline"] = _headline(results)
    return results


def _best_index(median_accuracy: np.ndarray, median_loss: np.ndarray) -> int:
    """The learning rate of highest accuracy; ties go to the lower loss, then the smaller rate."""
    order = sorted(
        range(len(median_accuracy)), key=lambda i: (-median_accuracy[i], median_loss[i], i)
    )
    return order[0]


def _stable_range(learning_rates, trains: np.ndarray, best: int) -> dict | None:
    """The unbroken run of training learning rates around ``best`` (None if ``best`` fails)."""
    if not trains[best]:
        return None
    low = high = best
    while low > 0 and trains[low - 1]:
        low -= 1
    while high < len(trains) - 1 and trains[high + 1]:
        high += 1
    return {
        "low": learning_rates[low],
        "high": learning_rates[high],
        "decades": float(np.log10(learning_rates[high] / learning_rates[low])),
    }


def _chosen_points(config: Config, best_lr: dict, high_lr: dict) -> list[dict]:
    """Every (model, norm) at its best learning rate and at BatchNorm's top one, no repeats."""
    points: dict[tuple, dict] = {}
    for model in config.models:
        for norm in config.norms:
            for role, lr in (("best", best_lr[model][norm]), ("high", high_lr[model])):
                if lr is None:
                    continue
                entry = points.setdefault(
                    (model, norm, lr), {"model": model, "norm": norm, "lr": lr, "roles": []}
                )
                entry["roles"].append(role)
    return list(points.values())


def point_at(results: dict, model: str, norm: str, role: str) -> dict | None:
    """The chosen point of ``norm`` on ``model`` with ``role`` ("best" or "high"), or None."""
    for point in results["points"]:
        if point["model"] == model and point["norm"] == norm and role in point["roles"]:
            return point
    return None


def _comparisons(results: dict) -> dict:
    """Each normalization against none, paired by seed (and test image), per network.

    ``test_accuracy_at_best_lr``: each at its own best learning rate, margin ±1 point;
    ``test_accuracy_at_high_lr``: both at the top of BatchNorm's range;
    ``mean_train_loss_at_best_lr``: none's mean training loss minus the method's (so
    "better" means the method's loss is lower, i.e. it trains faster), margin
    :data:`LOSS_MARGIN`; None when a run diverged (it has no mean loss).
    """
    comparisons: dict = {}
    for model in results["models"]:
        none_best = point_at(results, model, "none", "best")
        none_high = point_at(results, model, "none", "high")
        comparisons[model] = {}
        for norm in results["norms"]:
            if norm == "none" or none_best is None:
                continue
            own_best = point_at(results, model, norm, "best")
            own_high = point_at(results, model, norm, "high")
            entry = {
                "test_accuracy_at_best_lr": _compare(
                    own_best, none_best, "test_correct", MARGIN_POINTS / 100
                ),
                "test_accuracy_at_high_lr": (
                    _compare(own_high, none_high, "test_correct", MARGIN_POINTS / 100)
                    if own_high and none_high
                    else None
                ),
                "mean_train_loss_at_best_lr": _compare(
                    none_best, own_best, "mean_train_loss", LOSS_MARGIN
                ),
            }
            comparisons[model][norm] = entry
    return comparisons


#: "As fast as": mean training losses over the budget within this many nats.
LOSS_MARGIN = 0.02


def _compare(a: dict, b: dict, key: str, margin: float) -> dict | None:
    """``stats.paired_comparison`` of ``a[key]`` with ``b[key]``; None where a value is missing.

    A diverged run has no mean training loss (None), but it has test predictions (those of
    the broken network), so accuracies are compared whatever happened in training.
    """
    if None in a[key] or None in b[key]:
        return None
    return stats.paired_comparison(a[key], b[key], margin=margin).to_dict()


def compared(results: dict, key: str) -> list[tuple[str, dict]]:
    """``(label, comparison)`` for every network and method of ``results["comparisons"]``.

    ``key`` is one of the comparisons of :func:`_comparisons`; the label names the network,
    the method and the learning rates (``"shallow_mlp, batch vs none, lr 0.1 vs 0.03"``).
    Comparisons that could not be made (None: a diverged run) are left out.
    """
    pairs = []
    for model in results["models"]:
        for norm, entry in results["comparisons"][model].items():
            if entry[key] is None:
                continue
            if key.endswith("best_lr"):
                best = results["best_lr"][model]
                rates = f"lr {best[norm]:g} vs {best['none']:g}"
            else:
                rates = f"lr {results['high_lr'][model]:g}"
            pairs.append((f"{model}, {norm} vs none, {rates}", entry[key]))
    return pairs


def _headline(results: dict) -> dict:
    headline: dict = {}
    for model in results["models"]:
        per_norm = {}
        for norm in results["norms"]:
            stable = results["stable_range"][model][norm]
            best = point_at(results, model, norm, "best")
            high = point_at(results, model, norm, "high")
            trains = np.asarray(results["map"][model][norm]["trains"])  # (scales, lrs)
            scales_that_train = [
                scale
                for scale, row in zip(results["init_scales"], trains, strict=True)
                if row.any()
            ]
            per_norm[norm] = {
                "best_lr": results["best_lr"][model][norm],
                "stable_lr_low": stable["low"] if stable else None,
                "stable_lr_high": stable["high"] if stable else None,
                "stable_decades": stable["decades"] if stable else None,
                "share_of_map_that_trains": float(trains.mean()),
                "smallest_init_scale_that_trains": min(scales_that_train, default=None),
                "test_accuracy_percent_at_best_lr": 100 * float(np.mean(best["test_accuracy"])),
                "mean_train_loss_at_best_lr": (
                    None
                    if None in best["mean_train_loss"]
                    else float(np.mean(best["mean_train_loss"]))
                ),
                "test_accuracy_percent_at_high_lr": (
                    100 * float(np.mean(high["test_accuracy"])) if high else None
                ),
            }
        headline[model] = {"high_lr": results["high_lr"][model], "per_norm": per_norm}
    return headline


def summary(results: dict) -> str:
    """The headline as a table: one row per network and method (for notebooks and the CLI)."""
    lines = [
        f"{'network':>12} {'method':>6} {'best lr':>8} {'stable lr range':>17} {'decades':>8} "
        f"{'map trains':>10} {'smallest init':>13} {'test acc. at best lr':>21}"
    ]
    for model in results["models"]:
        for norm in results["norms"]:
            row = results["headline"][model]["per_norm"][norm]
            if row["stable_lr_low"] is None:
                stable, decades = "none trains", "–"
            else:
                stable = f"{row['stable_lr_low']:g}–{row['stable_lr_high']:g}"
                decades = f"{row['stable_decades']:.2f}"
            smallest = row["smallest_init_scale_that_trains"]
            lines.append(
                f"{model:>12} {norm:>6} {row['best_lr']:>8g} {stable:>17} {decades:>8} "
                f"{row['share_of_map_that_trains']:>10.0%} "
                f"{'never' if smallest is None else f'{smallest:g}':>13} "
                f"{row['test_accuracy_percent_at_best_lr']:>19.1f} %"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """One row per network: a validation-accuracy map per method, then the loss curves."""
    config = results["config"]
    models, norms = results["models"], results["norms"]
    learning_rates, init_scales = results["learning_rates"], results["init_scales"]
    figure, axes = plotting.subplots(
        len(models),
        len(norms) + 1,
        width=4.2 * len(norms) + 6.0,
        height=3.9 * len(models) + 1.6,
        gridspec_kw={"width_ratios": [1.0] * len(norms) + [1.45]},
    )
    axes = np.asarray(axes).reshape(len(models), len(norms) + 1)
    colormap = colormaps["viridis"]
    for row, model in enumerate(models):
        for column, norm in enumerate(norms):
            ax = axes[row, column]
            median = 100 * np.median(results["map"][model][norm]["validation_accuracy"], axis=-1)
            ax.imshow(median, cmap=colormap, vmin=0, vmax=100, origin="lower", aspect="auto")
            trains = np.asarray(results["map"][model][norm]["trains"])
            for (i, j), value in np.ndenumerate(median):
                ax.text(
                    j,
                    i,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="black" if value > 60 else "white",
                )
                if trains[i, j]:
                    ax.add_patch(
                        Rectangle(
                            (j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=2.2
                        )
                    )
            ax.set_xticks(
                range(len(learning_rates)), [f"{lr:g}" for lr in learning_rates], fontsize=11
            )
            ax.set_yticks(
                range(len(init_scales)), [f"{scale:g}" for scale in init_scales], fontsize=11
            )
            ax.grid(False)
            best = learning_rates.index(results["best_lr"][model][norm])
            default_row = init_scales.index(DEFAULT_INIT_SCALE)
            ax.plot(
                best + 0.33,
                default_row + 0.3,
                marker="*",
                color="white",
                markersize=13,
                markeredgecolor="black",
            )  # in the cell's corner, beside its number
            ax.set_title(f"{MODEL_TITLES[model]}, {plotting.method_label(norm)}", fontsize=14)
            if row == len(models) - 1:
                ax.set_xlabel("learning rate")
            if column == 0:
                ax.set_ylabel("init scale")
        _plot_curves(axes[row, -1], results, model)
    plotting.set_title(
        figure,
        "Where does each method train, and how fast at its own best learning rate?",
        f"SGD (momentum {config['momentum']:g}), B = {config['batch_size']}, "
        f"{config['steps']} steps, constant learning rate; maps: validation accuracy (%) on 270 "
        "images carved from the training set, median of "
        f"{plotting.plural(len(config['map_seeds']), 'seed')}; framed: trains (every seed "
        f"within {config['tolerance_points']:g} points of the network's best cell); star: best "
        "learning rate at init scale 1. Right: training loss at each method's own best "
        f"learning rate, full training set, {plotting.spread_caption(len(config['seeds']))}.",
    )
    return figure


def _plot_curves(ax, results: dict, model: str) -> None:
    config = results["config"]
    window = config["curve_window"]
    for norm in results["norms"]:
        point = point_at(results, model, norm, "best")
        curves = np.array(
            [
                [np.nan if value is None else value for value in curve]
                for curve in point["loss_curve"]
            ]
        )  # (seeds, windows)
        steps = window * (np.arange(curves.shape[1]) + 1)
        looks = plotting.method_style(norm)
        plotting.plot_spread(
            ax,
            steps,
            curves.T,
            color=looks["color"],
            marker=looks["marker"],
            markevery=max(1, len(steps) // 6),
            label=f"{looks['label']} (lr {point['lr']:g})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean of {window} steps)")
    ax.set_title(f"{MODEL_TITLES[model]}: each at its best lr", fontsize=14)
    ax.legend(fontsize=11, loc="upper right")


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def higher_rate_networks(results: dict) -> list[str]:
    """The networks where BatchNorm's stable range reaches a higher rate than none's.

    A network where no normalization trains at no rate at all counts too; one where
    BatchNorm trains at none does not.
    """
    higher = []
    for model in results["models"]:
        batch, none = (results["stable_range"][model].get(norm) for norm in ("batch", "none"))
        if batch is not None and (none is None or batch["high"] > none["high"]):
            higher.append(model)
    return higher


def slide_title(results: dict) -> str:
    """Where BatchNorm's stable learning rates reach higher than no normalization's."""
    models = results["models"]
    if not {"batch", "none"} <= set(results["norms"]):
        return "The learning rates at which each normalization trains"
    higher = higher_rate_networks(results)
    if not higher:
        return (
            "Here BatchNorm does not train at higher learning rates than no normalization, "
            f"in any of the {len(models)} networks"
        )
    if len(models) == 1:
        where = "this network"
    elif len(higher) == len(models):
        where = "every network"
    else:
        where = f"{len(higher)} of the {len(models)} networks"
    return f"BatchNorm trains at higher learning rates than no normalization in {where}"


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: each method's range of learning rates that train, one panel per network."""
    config = results["config"]
    models, norms = results["models"], results["norms"]
    rates = np.asarray(results["learning_rates"])
    figure, axes = plotting.slide_figure(
        slide_title(results),
        f"digits, SGD, {config['steps']} steps, default initialization; bar: the rates that train",
        ncols=len(models),
        sharey=True,
    )
    axes = np.atleast_1d(axes)
    # each grid rate owns the stretch halfway (in log) to its neighbours
    half_step = np.sqrt(rates[1] / rates[0]) if len(rates) > 1 else 2.0
    rows = np.arange(len(norms))[::-1]  # the first method on top
    for ax, model in zip(axes, models, strict=True):
        for row, norm in zip(rows, norms, strict=True):
            look = plotting.method_style(norm)
            stable = results["stable_range"][model][norm]
            if stable is None:
                ax.annotate(
                    "no rate trains",
                    (rates[0] / half_step, row),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    color=look["color"],
                    fontsize=plotting.SLIDE_MIN_FONT_SIZE,
                )
                continue
            low, high = stable["low"] / half_step, stable["high"] * half_step
            ax.barh(row, high - low, left=low, height=0.6, color=look["color"])
        ax.set_xscale("log")
        ax.set_xlim(rates[0] / half_step, rates[-1] * half_step)
        decades = [rate for rate in rates if np.isclose(np.log10(rate), np.round(np.log10(rate)))]
        ax.set_xticks(decades if len(decades) >= 2 else rates[:: max(1, len(rates) // 3)])
        ax.xaxis.set_minor_locator(NullLocator())
        plotting.plain_log_labels(ax.xaxis, minor=False)
        ax.grid(axis="y", visible=False)
        ax.set_title(MODEL_TITLES[model])
        ax.set_xlabel("learning rate")
    axes[0].set_yticks(rows, [plotting.method_label(norm) for norm in norms])
    axes[0].set_ylim(-0.6, len(norms) - 0.4)
    return [("learning_rates", figure)]
