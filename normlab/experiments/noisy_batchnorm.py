"""Santurkar et al. 2018's noisy BatchNorm: covariate shift injected after BatchNorm, trained.

The question: Ioffe & Szegedy (2015) introduced BatchNorm to reduce *internal covariate
shift*, the change of each layer's input distribution as the layers below it learn. Is
that why BatchNorm helps? Santurkar, Tsipras, Ilyas & Mądry (2018, "How Does Batch
Normalization Help Optimization?", Section 2.1) tested it by putting the shift back: after
every BatchNorm layer they injected noise whose mean and variance change at every step,
so the next layer sees a distribution that moves far more than without any
normalization, and found that this "noisy BatchNorm" network trains about as well as
plain BatchNorm and better than the unnormalized one.

Setup. The digits MLPs of ``learning_rate_maps`` (``depths`` hidden blocks of
``Linear → norm → ReLU``), trained by :func:`normlab.training.fit` with SGD (momentum
``momentum``), batch size ``batch_size``, ``steps`` steps at the constant learning rate
``learning_rate``, which lies in the stable range of both BatchNorm and no normalization
on both MLPs in ``learning_rate_maps``; tested on the 450 test images. Three networks:

* ``none``: no normalization;
* ``batch``: BatchNorm;
* ``noisy_batch``: BatchNorm followed by :class:`ShiftNoise`: at every training step
  ``t`` each unit ``j`` of each BatchNorm output gets a new random scale and shift,
  ``y ← s_tj · y + m_tj`` with ``m_tj ~ U(−noise_shift, noise_shift)`` and
  ``log s_tj ~ U(−log noise_scale, log noise_scale)``: a non-zero mean and a non-unit
  variance that change at every step. Santurkar et al. perturbed every activation of
  every sample with i.i.d. noise from such a distribution; here each unit gets one scale
  and shift per step, the same for every sample of the batch: the shift of the
  distribution without the extra per-sample noise. In eval mode the noise is off: the
  test-time network is a BatchNorm network.

Internal covariate shift is measured where each network normalizes (or would): the input
of every ReLU, on a fixed probe batch of ``probe_size`` training images, after every step
(in train mode, with that step's noise; the running statistics are left as they were).
For each unit the probe batch's mean μ_t and standard deviation σ_t are recorded; the
*shift per step* is ``√((μ_{t+1} − μ_t)² + (σ_{t+1} − σ_t)²)`` divided by the unit's
mean σ over training, averaged over units, steps and layers: how far, in its own
standard deviations, the distribution of a layer's input moves per step.

What would refute the claim "BatchNorm works by reducing internal covariate shift" (our
reading of Santurkar et al.): noisy BatchNorm with a shift per step no larger than that of
no normalization (then the noise did not restore the shift), or noisy BatchNorm clearly
worse than BatchNorm, close to no normalization (then the shift does hurt, as the claim
says). The README gives the numbers of the default run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from normlab import nn, plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    number,
    seeds,
)
from normlab.layers import BatchNorm
from normlab.module import Identity, Module

NAME = "noisy_batchnorm"

#: The three networks, in legend order.
METHODS = ("none", "batch", "noisy_batch")

#: How each network is drawn: BatchNorm's colour for both BatchNorm networks.
_LOOKS = {
    "none": plotting.method_style("none"),
    "batch": plotting.method_style("batch"),
    "noisy_batch": {**plotting.method_style("batch"), "marker": "d", "label": "noisy BatchNorm"},
}
_DASHES = {"none": "-", "batch": "-", "noisy_batch": "--"}

#: "As good as" for test accuracies: within this many points.
MARGIN_POINTS = 1.0


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    depths : tuple of int
        Hidden blocks of the MLPs (the shallow and the deep MLP of ``learning_rate_maps``).
    seeds : tuple of int
        One training run per (depth, network, seed); the noise is drawn from the seed too.
    steps, batch_size, learning_rate, momentum : the training.
    noise_shift : float, largest |m|, in units of BatchNorm's output std (1).
    noise_scale : float ≥ 1, s lies in [1/noise_scale, noise_scale] (log-uniform).
    probe_size : int, training images in the fixed probe batch.
    curve_window : int, the loss curve is kept as means over windows of this many steps.
    """

    depths: tuple[int, ...] = integers((2, 8), minimum=1)
    seeds: tuple[int, ...] = seeds(5)
    steps: int = integer(300, minimum=2, why="a shift per step needs two steps")
    batch_size: int = integer(32, minimum=2, why="BatchNorm needs two samples per batch")
    learning_rate: float = number(0.03, above=0)
    momentum: float = number(0.9, minimum=0, below=1)
    noise_shift: float = number(1.0, minimum=0)
    noise_scale: float = number(2.0, minimum=1)
    probe_size: int = integer(128, minimum=2, maximum=1347)
    curve_window: int = integer(10, minimum=1)

    @classmethod
    def quick(cls) -> Config:
        return cls(depths=(2,), seeds=(0, 1, 2), steps=80)


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


class ShiftNoise(Module):
    """In training mode ``y = scale * x + shift``, with per-unit ``scale`` and ``shift``
    redrawn by :meth:`resample`; in eval mode ``y = x``.

    The backward is ``dx = scale * dy`` (the noise is a constant of the step). Features
    last: ``scale`` and ``shift`` have shape (D,).
    """

    def __init__(self, num_features: int, max_shift: float, max_scale: float, rng) -> None:
        super().__init__()
        self.max_shift, self.max_log_scale = float(max_shift), math.log(max_scale)
        self.rng = rng
        self.scale = np.ones(num_features, dtype=np.float32)
        self.shift = np.zeros(num_features, dtype=np.float32)
        self.resample()

    def resample(self) -> None:
        """New scale and shift for every unit: the noise of the next training step."""
        size = self.scale.shape
        self.scale[...] = np.exp(self.rng.uniform(-self.max_log_scale, self.max_log_scale, size))
        self.shift[...] = self.rng.uniform(-self.max_shift, self.max_shift, size)

    def forward(self, x, mask=None) -> np.ndarray:
        self._cache = self.training
        return x * self.scale + self.shift if self.training else x

    def backward(self, dy) -> np.ndarray:
        return dy * self.scale if self.require_cache() else dy


def build(run: dict, rng: np.random.Generator) -> tuple[nn.Sequential, list, list]:
    """The run's network, its ReLU inputs (the layers whose outputs are probed), its noises.

    The weights come from ``rng`` (so the three networks of a seed start from the same
    Linear weights); the noise has a stream of its own, so that drawing it leaves the
    order of the minibatches, drawn from ``rng`` next, the same for all three.
    """
    noise_rng = np.random.default_rng((run["seed"], 2))
    norm = "none" if run["method"] == "none" else "batch"
    split = training.digits()
    mlp = nn.MLP(split.num_features, 64, split.num_classes, norm=norm, rng=rng, depth=run["depth"])
    layers, noises = [], []
    for layer in mlp:
        layers.append(layer)
        if isinstance(layer, BatchNorm) and run["method"] == "noisy_batch":
            noise = ShiftNoise(
                layer.num_features, run["noise_shift"], run["noise_scale"], noise_rng
            )
            layers.append(noise)
            noises.append(noise)
    model = nn.Sequential(*layers)
    slots = [
        index
        for index, layer in enumerate(layers[:-1])
        if isinstance(layers[index + 1], nn.ReLU)
        and isinstance(layer, (Identity, BatchNorm, ShiftNoise))
    ]
    return model, slots, noises


def probe_moments(model: nn.Sequential, slots: list[int], x: np.ndarray) -> np.ndarray:
    """(slots, 2, D): mean and std over ``x`` of each ReLU input, in train mode, model unchanged."""
    moments = []
    with training.running_statistics_kept(model):
        model.train()
        for index, layer in enumerate(model):
            x = layer(x)
            if index in slots:
                moments.append(np.stack([x.mean(axis=0), x.std(axis=0)]))
            if index == slots[-1]:
                break
    return np.asarray(moments)


def shift_per_step(moments: np.ndarray) -> np.ndarray:
    """Per slot: the mean over units and steps of √(Δμ² + Δσ²) / (unit's mean σ).

    ``moments``: (steps, slots, 2, D) from :func:`probe_moments` after every step.
    """
    change = np.sqrt(np.sum(np.diff(moments, axis=0) ** 2, axis=2))  # (steps - 1, slots, D)
    typical_std = moments[:, :, 1, :].mean(axis=0)  # (slots, D)
    return (change / np.maximum(typical_std, 1e-12)).mean(axis=(0, 2))  # (slots,)


def measure_one(run: dict) -> dict:
    """One network trained; its test results, loss curve and the shift of its ReLU inputs."""
    rng = np.random.default_rng(run["seed"])
    model, slots, noises = build(run, rng)
    split = training.digits()
    chosen = np.random.default_rng((run["seed"], 1)).permutation(len(split.x_train))
    probe = split.x_train[chosen[: run["probe_size"]]]  # the same images after every step
    moments = [probe_moments(model, slots, probe)]  # before the first step
    losses: list[float] = []

    def on_step(step, model, loss, x, y):
        losses.append(loss)
        for noise in noises:
            noise.resample()  # the noise of the next step, which the probe sees too
        moments.append(probe_moments(model, slots, probe))

    numbers = training.fit(
        model,
        split,
        rng,
        batch_size=run["batch_size"],
        epochs=1,
        steps=run["steps"],
        base_lr=run["learning_rate"],
        lr_rule="constant",
        momentum=run["momentum"],
        on_step=on_step,
    )
    moments = np.asarray(moments)  # (steps + 1, slots, 2, D)
    tracked_unit = moments[:, -1, :, 0]  # (steps + 1, 2): unit 0 of the last ReLU input
    window = run["curve_window"]
    return {
        "test_accuracy": numbers["test_accuracy_eval"],
        "test_correct": numbers["test_correct"],
        "train_accuracy": numbers["train_accuracy_eval"],
        "diverged": numbers["diverged"],
        "loss_curve": [
            float(np.mean(losses[start : start + window]))
            if start + window <= len(losses)
            else None
            for start in range(0, run["steps"], window)
        ],
        "shift_per_step_by_layer": shift_per_step(moments).tolist(),
        "tracked_unit_mean": tracked_unit[:, 0].tolist(),
        "tracked_unit_std": tracked_unit[:, 1].tolist(),
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train every (depth, network, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``depths``; ``methods``;
        ``by_depth[str(depth)][method]``: per seed ``test_accuracy``, ``test_correct``,
        ``train_accuracy`` (the 1347 training images in eval mode, without noise),
        ``loss_curve``, ``shift_per_step`` (mean over layers), ``diverged``, and seed 0's
        ``tracked_unit_mean``/``tracked_unit_std`` (the last ReLU input's unit 0 against
        step); ``comparisons[str(depth)]``: paired test-accuracy comparisons (noisy BatchNorm
        against BatchNorm and against none, BatchNorm against none, margin ±1 point);
        ``headline``.
    """
    measured = config.runs(depth="depths", method=METHODS, seed="seeds").measure(
        NAME, measure_one, options
    )
    by_depth, comparisons = {}, {}
    for depth in config.depths:
        entry = {}
        for method in METHODS:

            def picked(key, method=method, depth=depth):
                return measured.table(key, depth=depth, method=method).tolist()

            entry[method] = {
                "test_accuracy": picked("test_accuracy"),
                "test_correct": picked("test_correct"),
                "train_accuracy": picked("train_accuracy"),
                "diverged": picked("diverged"),
                "loss_curve": picked("loss_curve"),
                "shift_per_step": [
                    float(np.mean(layers)) for layers in picked("shift_per_step_by_layer")
                ],
                "tracked_unit_mean": picked("tracked_unit_mean")[0],
                "tracked_unit_std": picked("tracked_unit_std")[0],
            }
        by_depth[str(depth)] = entry
        comparisons[str(depth)] = {
            f"{a}_vs_{b}": stats.paired_comparison(
                entry[a]["test_correct"], entry[b]["test_correct"], margin=MARGIN_POINTS / 100
            ).to_dict()
            for a, b in (("noisy_batch", "batch"), ("noisy_batch", "none"), ("batch", "none"))
        }
    results = {
        "config": config.to_dict(),
        "depths": list(config.depths),
        "methods": list(METHODS),
        "by_depth": by_depth,
        "comparisons": comparisons,
    }
    results["headline"] = _headline(results)
    return results


def _headline(results: dict) -> dict:
    headline = {}
    for depth, entry in results["by_depth"].items():
        compared = results["comparisons"][depth]
        shift = {method: float(np.median(entry[method]["shift_per_step"])) for method in METHODS}
        headline[f"depth_{depth}"] = {
            "mean_test_accuracy_percent": {
                method: 100 * float(np.mean(entry[method]["test_accuracy"])) for method in METHODS
            },
            "mean_train_accuracy_percent": {
                method: 100 * float(np.mean(entry[method]["train_accuracy"])) for method in METHODS
            },
            "median_shift_per_step": shift,
            "noisy_over_none_shift": shift["noisy_batch"] / shift["none"],
            "noisy_vs_batch_points": 100 * compared["noisy_batch_vs_batch"]["mean_difference"],
            "noisy_vs_batch_interval_points": [
                100 * value for value in compared["noisy_batch_vs_batch"]["interval"]
            ],
            "noisy_vs_batch_verdict": compared["noisy_batch_vs_batch"]["verdict"],
            "noisy_vs_none_verdict": compared["noisy_batch_vs_none"]["verdict"],
            "batch_vs_none_verdict": compared["batch_vs_none"]["verdict"],
            "diverged_runs": sum(sum(entry[method]["diverged"]) for method in METHODS),
        }
    return headline


def summary(results: dict) -> str:
    """Per depth: each network's accuracies and shift per step, then the paired comparisons."""
    lines = []
    for depth, entry in results["by_depth"].items():
        lines.append(f"{depth} hidden blocks:")
        for method in METHODS:
            test = 100 * np.asarray(entry[method]["test_accuracy"])
            train = 100 * np.mean(entry[method]["train_accuracy"])
            lines.append(
                f"  {_LOOKS[method]['label']:>17}: test {np.mean(test):5.1f} % "
                f"[{test.min():.1f}–{test.max():.1f}], training set {train:5.1f} %, "
                f"shift per step {np.median(entry[method]['shift_per_step']):.4f}"
            )
        for name, compared in results["comparisons"][depth].items():
            low, high = (100 * value for value in compared["interval"])
            lines.append(
                f"  {name.replace('_vs_', ' − ')}: {100 * compared['mean_difference']:+.2f} points "
                f"[{low:+.2f}, {high:+.2f}] → {compared['verdict']}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Per depth: training loss against step, test accuracy, shift per step; one unit's input."""
    config = results["config"]
    depths = results["depths"]
    figure, axes = plotting.subplots(len(depths), 4, width=24.0, height=5.4 * len(depths) + 1.2)
    axes = np.asarray(axes).reshape(len(depths), 4)
    window = config["curve_window"]
    for row, depth in enumerate(depths):
        entry = results["by_depth"][str(depth)]
        ax_loss, ax_accuracy, ax_shift, ax_unit = axes[row]
        for position, method in enumerate(METHODS):
            looks = _LOOKS[method]
            curves = np.array(
                [
                    [np.nan if v is None else v for v in curve]
                    for curve in entry[method]["loss_curve"]
                ]
            )
            steps = window * (np.arange(curves.shape[1]) + 1)
            plotting.plot_spread(
                ax_loss,
                steps,
                curves.T,
                color=looks["color"],
                marker=looks["marker"],
                label=looks["label"],
                linestyle=_DASHES[method],
                markevery=max(1, len(steps) // 6),
            )
            for ax, values in (
                (ax_accuracy, 100 * np.asarray(entry[method]["test_accuracy"])),
                (ax_shift, np.asarray(entry[method]["shift_per_step"])),
            ):
                ax.plot(
                    np.full(len(values), position),
                    values,
                    linestyle="none",
                    alpha=0.6,
                    color=looks["color"],
                    marker=looks["marker"],
                )
                ax.plot(
                    [position - 0.25, position + 0.25],
                    [np.median(values)] * 2,
                    color=looks["color"],
                    linewidth=3,
                )
            mean = np.asarray(entry[method]["tracked_unit_mean"])
            std = np.asarray(entry[method]["tracked_unit_std"])
            step_axis = np.arange(len(mean))
            ax_unit.plot(
                step_axis,
                mean,
                color=looks["color"],
                linestyle=_DASHES[method],
                label=looks["label"],
                linewidth=1.6,
            )
            ax_unit.fill_between(
                step_axis, mean - std, mean + std, color=looks["color"], alpha=0.15, lw=0
            )
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel(f"training loss (mean of {window} steps)")
        ax_loss.set_title(f"{depth} hidden blocks: training loss", fontsize=15)
        ax_loss.legend(fontsize=12)
        for ax, label, title in (
            (ax_accuracy, "test accuracy (%)", "test accuracy, eval mode (no noise)"),
            (ax_shift, "shift per step (unit stds)", "shift of the ReLU inputs per step"),
        ):
            ax.set_xticks(range(len(METHODS)), [_LOOKS[m]["label"] for m in METHODS], fontsize=12)
            ax.set_ylabel(label)
            ax.set_title(title, fontsize=15)
        ax_shift.set_yscale("log")
        ax_unit.set_xlabel("step")
        ax_unit.set_ylabel("input of the last ReLU, unit 0")
        ax_unit.set_title("its mean ± std over the probe batch (seed 0)", fontsize=15)
    plotting.set_title(
        figure,
        "Injected covariate shift after BatchNorm: does it undo BatchNorm's benefit? "
        "(cf. Santurkar et al. 2018, Fig. 2)",
        f"Digits MLPs, SGD (momentum {config['momentum']:g}), lr {config['learning_rate']:g}, "
        f"B = {config['batch_size']}, {config['steps']} steps; noise after each BatchNorm: "
        f"y ← s·y + m per unit, new every step, m ~ U(±{config['noise_shift']:g}), "
        f"s log-uniform in [1/{config['noise_scale']:g}, {config['noise_scale']:g}]. "
        f"Shift: probe batch of {config['probe_size']} training images after every step. "
        f"{plotting.spread_caption(len(config['seeds']))[0].upper()}"
        f"{plotting.spread_caption(len(config['seeds']))[1:]}; dots: seeds, bar: median.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

_SLIDE_NAMES = {
    "none": "no\nnormalization",
    "batch": "BatchNorm",
    "noisy_batch": "noisy\nBatchNorm",
}


def _dots_slide(results: dict, title: str, caption: str, values_of, ylabel: str) -> Figure:
    """One panel per depth: a dot per seed and a bar at the median for each network."""
    depths = results["depths"]
    figure, axes = plotting.slide_figure(title, caption, ncols=len(depths), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, depth in zip(axes, depths, strict=True):
        entry = results["by_depth"][str(depth)]
        for position, method in enumerate(METHODS):
            looks = _LOOKS[method]
            values = values_of(entry[method])
            ax.plot(
                np.full(len(values), position),
                values,
                linestyle="none",
                alpha=0.6,
                color=looks["color"],
                marker=looks["marker"],
            )
            ax.plot([position - 0.3, position + 0.3], [np.median(values)] * 2, color=looks["color"])
        ax.set_xticks(range(len(METHODS)), [_SLIDE_NAMES[m] for m in METHODS])
        ax.set_xlim(-0.6, len(METHODS) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{depth} hidden {'block' if depth == 1 else 'blocks'}")
    axes[0].set_ylabel(ylabel)
    return figure


def _shift_slide(results: dict) -> Figure:
    config = results["config"]
    ratios = [
        results["headline"][f"depth_{depth}"]["noisy_over_none_shift"]
        for depth in results["depths"]
    ]
    if min(ratios) > 1:
        title = (
            "The noise puts the shift back: each layer's input moves at least "
            f"{plotting.rounded(min(ratios), 2)}× as far per step as without any normalization"
        )
    else:
        title = "The noise does not move each layer's input further than no normalization does"
    figure = _dots_slide(
        results,
        title,
        "noisy: a new random shift and scale after BatchNorm at every step; "
        f"{plotting.plural(len(config['seeds']), 'seed')}, bar: median",
        lambda numbers: np.asarray(numbers["shift_per_step"]),
        "how far a layer's input moves\nper step (in its std)",
    )
    for ax in figure.axes:
        ax.set_yscale("log")
        plotting.plain_log_labels(ax.yaxis, minor=False)
    return figure


def _accuracy_slide(results: dict) -> Figure:
    config = results["config"]
    verdicts = {
        depth: results["headline"][f"depth_{depth}"]["noisy_vs_batch_verdict"]
        for depth in results["depths"]
    }
    phrases = [
        f"{stats.verdict_phrase(verdict, 'BatchNorm')} with {depth} blocks"
        for depth, verdict in verdicts.items()
    ]
    title = "On the test set, noisy BatchNorm is " + "; ".join(phrases)
    figure = _dots_slide(
        results,
        title,
        "digits MLPs, tested without the noise; "
        f"{plotting.plural(len(config['seeds']), 'seed')}, bar: median",
        lambda numbers: 100 * np.asarray(numbers["test_accuracy"]),
        "test accuracy (%)",
    )
    figure.axes[0].yaxis.set_major_locator(MaxNLocator(5, integer=True))
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """How much shift the noise injects, and what it costs in test accuracy."""
    return [("shift", _shift_slide(results)), ("accuracy", _accuracy_slide(results))]
